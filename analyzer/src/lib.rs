//! vigil's analyzer: detectors that read the collector's tables through SQL (a DataFusion
//! `SessionContext` in `vigil serve`, Flight SQL when it runs apart) and raise alerts for model
//! drift and silent GPU degradation, delivered to webhooks and Alertmanager. Depends on
//! vigil-schemas, DataFusion and linfa; never on the collector's internals.

pub mod alert;
pub mod detectors;
pub mod findings;
pub mod health;
pub mod notify;
pub mod replay;
pub mod runner;
pub mod served;
pub mod source;
pub mod state;
pub mod stats;

pub use detectors::AnalyzerConfig;
pub use notify::AlertingConfig;
pub use runner::{AlertSink, Analyzer, ServedModels};

/// Makes ring the process' TLS crypto provider, once: reqwest's `https://` clients (webhooks,
/// Alertmanagers) find their provider there, and building one without it panics.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What can go wrong while analysing.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    #[error("query failed: {message}\n  SQL: {sql}")]
    Query { sql: String, message: String },
    #[error("unexpected query result: {0}")]
    Shape(String),
    #[error("{0}")]
    Config(String),
    #[error("alert delivery: {0}")]
    Delivery(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
