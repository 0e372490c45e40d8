//! vigil-collector: OTLP and Prometheus remote-write receivers, scraping, the write-ahead log,
//! Arrow buffers, Parquet storage, and the DataFusion query engine with its doors (HTTP SQL,
//! Flight SQL, PromQL over Prometheus' HTTP API, the Jaeger trace API).
//! Depends on vigil-schemas for every table and conversion; it must never acknowledge data that is
//! not in the WAL, nor grow memory past its configured limit.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let collector = vigil_collector::server::start(Default::default()).await?;
//! let (_schema, batches) = collector.engine.query("SELECT count(*) FROM spans").await?;
//! collector.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod query;
pub mod receive;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod wal;

pub use server::{CollectorConfig, RunningCollector, start};
