//! The query engine and its doors: one DataFusion `SessionContext` over every table, and the
//! HTTP SQL endpoint that serves it read-only.

pub mod catalog;
pub mod sql_http;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;

use crate::storage::Store;
use catalog::VigilTable;

/// Limits on what one query may cost, so that one careless `SELECT *` cannot take the collector down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Memory DataFusion may use across running queries (sorts, joins and aggregations spill or
    /// fail past it).
    pub memory_limit_bytes: u64,
    /// A query whose result has more rows than this is refused; aggregate or add a LIMIT.
    pub max_result_rows: usize,
    /// A query running longer than this is cancelled.
    pub timeout_secs: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit_bytes: 512 << 20,
            max_result_rows: 1_000_000,
            timeout_secs: 60,
        }
    }
}

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad SQL, an unknown table or column, or a statement that is not a read.
    #[error("{0}")]
    Invalid(String),
    /// The query was valid but failed while running.
    #[error("query failed: {0}")]
    Execution(String),
    /// The query would cost more than the configured limits allow.
    #[error("{0}")]
    TooLarge(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.strip_backtrace()),
            _ => QueryError::Execution(e.strip_backtrace()),
        }
    }
}

/// The one query engine every door (HTTP SQL, Flight SQL, PromQL, the analyzer) goes through.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    limits: QueryConfig,
}

impl QueryEngine {
    /// An engine whose `spans`, `metrics`, `logs` and `alerts` read from `store`, within `limits`.
    pub fn new(store: Arc<Store>, limits: QueryConfig) -> Result<QueryEngine, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public");
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_limit_bytes as usize, 1.0)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(VigilTable::new(table, store.clone())),
            )?;
        }
        Ok(QueryEngine { ctx, limits })
    }

    /// The DataFusion context, for in-process readers such as the analyzer.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only SQL statement: DDL, DML, COPY and `SET` are refused.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                DataFusionError::Plan(msg) if msg.contains("not supported") => {
                    QueryError::Invalid(format!(
                        "{msg}; vigil's SQL endpoint is read-only (SELECT, EXPLAIN, SHOW, DESCRIBE)"
                    ))
                }
                other => other.into(),
            })?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let max_rows = self.limits.max_result_rows;
        let collect = async move {
            let mut stream = frame.execute_stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(QueryError::TooLarge(format!(
                        "the result has more than {max_rows} rows (query.max_result_rows); aggregate, filter or add a LIMIT"
                    )));
                }
                batches.push(batch);
            }
            Ok(batches)
        };
        let timeout = Duration::from_secs(self.limits.timeout_secs.max(1));
        match tokio::time::timeout(timeout, collect).await {
            Ok(batches) => Ok((schema, batches?)),
            Err(_) => Err(QueryError::TooLarge(format!(
                "the query ran longer than {} s (query.timeout_secs) and was cancelled",
                timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;
    use crate::telemetry::Telemetry;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use vigil_schemas::convert::spans_to_batch;
    use vigil_schemas::genai::Normalizer;

    fn spans(n: u8) -> RecordBatch {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![i + 1; 16],
                span_id: vec![i + 1; 8],
                name: format!("s{i}"),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1,
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        spans_to_batch(&request, &Normalizer::default()).batch
    }

    /// Flushed files are read through DataFusion's object store, which has its own path rules:
    /// characters it escapes, dot segments, symlinks, non-ASCII names.
    #[tokio::test]
    async fn flushed_rows_are_queryable_whatever_the_data_directory_is_called() {
        let root = tempfile::tempdir().unwrap();
        let odd = root.path().join("dätä dir %20 #1 [x]");
        std::fs::create_dir(&odd).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&odd, &link).unwrap();
        let through_dots = odd.join("..").join("link").join(".");
        for data_dir in [odd.clone(), through_dots] {
            let config = StorageConfig {
                data_dir: data_dir.clone(),
                ..Default::default()
            };
            let store = Store::open(config, Arc::new(Telemetry::default())).unwrap();
            assert!(store.config().data_dir.is_absolute());
            store.append(Table::Spans, spans(3)).await.unwrap();
            store.flush_due_tables(true).await.unwrap();
            store.append(Table::Spans, spans(2)).await.unwrap();
            assert!(!store.snapshot(Table::Spans).files.is_empty());
            let engine = QueryEngine::new(store, QueryConfig::default()).unwrap();
            let (_, batches) = engine
                .query("SELECT count(*) AS n FROM spans")
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", data_dir.display()));
            let n = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0);
            assert!(n >= 5, "{n} rows under {}", data_dir.display());
        }
    }
}
