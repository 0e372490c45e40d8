//! vigil-tui: the terminal dashboard (`vigil tui`, and `vigil demo`'s screen).
//! Depends on ratatui (crossterm backend) and arrow-flight's Flight SQL client; reads the collector
//! through the same SQL as every other door.
//! Must never write to the collector, and never leave the terminal in raw mode, even on a panic.
//!
//! The layout follows tokio-console: [`state`] holds what is known, [`view`] draws it (pure
//! functions of the state, snapshot-tested), [`input`] maps keys and clicks to actions, [`fetch`]
//! runs the queries, and [`app`] is the loop that ties them together.
//!
//! ```no_run
//! # async fn example() -> Result<(), vigil_tui::TuiError> {
//! let config = vigil_tui::TuiConfig::new("http://127.0.0.1:50051");
//! vigil_tui::run(config).await
//! # }
//! ```

pub mod app;
pub mod fetch;
pub mod input;
pub mod minutes;
pub mod state;
pub mod view;

pub use app::{TuiConfig, run};

/// Why the dashboard could not start or had to stop. Query failures while it runs are not
/// errors: they are shown in a banner and retried.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the collector's Flight SQL address {url:?} is not a valid URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("the terminal cannot be used: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("query failed: {0}")]
    Query(String),
}
