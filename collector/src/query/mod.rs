//! The query engine and its doors: one DataFusion `SessionContext` over every table, served
//! read-only by SQL over HTTP (`sql_http`), Arrow Flight SQL (`flight_sql`) and the Jaeger trace
//! API (`jaeger`) and Prometheus' HTTP API over PromQL (`promql`), with function-level size bounds
//! (`bounded`).

mod bounded;
pub mod catalog;
pub mod flight_sql;
pub mod jaeger;
pub mod promql;
pub mod sql_http;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
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
    /// A query whose result holds more than this many bytes (as Arrow, before it is encoded) is
    /// refused: results are gathered outside DataFusion's memory pool, so rows alone do not bound
    /// them (one row can hold a 60 MB string).
    pub max_result_bytes: u64,
    /// Queries from outside (HTTP SQL and the doors to come) that run at once; the next ones wait.
    pub max_concurrent: usize,
    /// Queries that may wait for a turn; past this, a query is refused at once (HTTP 429).
    pub max_queued: usize,
    /// A query running longer than this is cancelled (waiting for a turn counts).
    pub timeout_secs: u64,
    /// Samples one PromQL query may read, and points (series × steps) one of its steps may
    /// hold; past either it fails with Prometheus' "too many samples" error.
    pub max_samples: u64,
    /// Host names the query port answers to, besides IP addresses and `localhost`: a browser
    /// page (or a DNS-rebinding attack) names a host of its own. While the port listens on a
    /// loopback address only these pass; on another address any host passes unless this list is
    /// set. `["*"]` lets every host through.
    pub allowed_hosts: Vec<String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit_bytes: 512 << 20,
            max_result_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            max_concurrent: 8,
            max_queued: 64,
            timeout_secs: 60,
            max_samples: 20_000_000,
            allowed_hosts: Vec::new(),
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
    /// Too many queries are running or waiting; retry shortly.
    #[error("{0}")]
    Busy(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(msg) if msg.contains("(query.") => {
                QueryError::TooLarge(e.strip_backtrace())
            }
            DataFusionError::ResourcesExhausted(_) => QueryError::TooLarge(format!(
                "{} (query.memory_limit_bytes)",
                e.strip_backtrace()
            )),
            _ => QueryError::Execution(e.strip_backtrace()),
        }
    }
}

/// The one query engine every door (HTTP SQL, Flight SQL, PromQL, the analyzer) goes through.
#[derive(Clone)]
pub struct QueryEngine {
    /// The doors' session: Parquet filters evaluated while decoding.
    ctx: SessionContext,
    /// The analyzer's: the same catalog, memory pool and caches, without filter pushdown.
    analysis: SessionContext,
    limits: QueryConfig,
    turns: Arc<Turns>,
    store: Arc<Store>,
    /// The labels of the series PromQL has read, by series id.
    series_labels: Arc<promql::SeriesLabels>,
}

/// Turns to run a query: `max_concurrent` at once, `max_queued` waiting.
struct Turns {
    running: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Memory for parsed Parquet metadata (see [`QueryEngine::new`]).
const METADATA_CACHE_BYTES: usize = 32 << 20;

impl QueryEngine {
    /// An engine whose `spans`, `metrics`, `logs` and `alerts` read from `store`, within `limits`.
    pub fn new(store: Arc<Store>, limits: QueryConfig) -> Result<QueryEngine, QueryError> {
        // Two sessions over one catalog and one runtime. Parquet filter pushdown (late
        // materialisation: the columns of a row are decoded only if its filters pass) made the
        // dashboard's lookups 2-4x faster, so the doors have it; the analyzer's scans keep most
        // rows of their windows, where it costs, and with it on for everyone the live latency
        // test missed its 30 s under a loaded machine (BENCHMARKS.md, "The terminal dashboard").
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public");
        // Parquet footers and page indexes, least recently used out: a few tens of KiB a file,
        // so the newest thousand or so files (what dashboards read) stay parsed, within a
        // bound the process' memory can count on.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_limit_bytes as usize, 1.0)
            .with_metadata_cache_limit(METADATA_CACHE_BYTES)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let analysis = SessionContext::new_with_state(state);
        bounded::install(&analysis, limits.max_result_bytes);
        for table in Table::ALL {
            analysis.register_table(
                table.name(),
                Arc::new(VigilTable::new(table, store.clone())),
            )?;
        }
        // A copy of the analyzer's session (its catalog shared, so a table registered in one
        // is seen by the other) with pushdown on.
        let mut doors_config = analysis
            .copied_config()
            .with_create_default_catalog_and_schema(false);
        let parquet = &mut doors_config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        let doors = SessionStateBuilder::new_from_existing(analysis.state())
            .with_config(doors_config)
            .build();
        let ctx = SessionContext::new_with_state(doors);
        let turns = Arc::new(Turns {
            running: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        Ok(QueryEngine {
            ctx,
            analysis,
            limits,
            turns,
            store,
            series_labels: Arc::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &QueryConfig {
        &self.limits
    }

    /// The store the tables read from, for what it indexes itself (see
    /// [`Store::metric_catalog`]).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The labels of the series PromQL has read before (see [`promql::SeriesLabels`]).
    pub fn series_labels(&self) -> &promql::SeriesLabels {
        &self.series_labels
    }

    /// Waits for a turn to run, up to `timeout`; refuses at once when the queue is full.
    async fn turn(
        &self,
        timeout: Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, QueryError> {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = self.turns.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.turns.waiting.fetch_add(1, Ordering::AcqRel);
        let result = if queued >= self.limits.max_queued {
            Err(QueryError::Busy(format!(
                "{} queries are running and {queued} waiting (query.max_concurrent, query.max_queued); retry shortly",
                self.limits.max_concurrent
            )))
        } else {
            match tokio::time::timeout(timeout, self.turns.running.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Ok(permit),
                Ok(Err(_)) => Err(QueryError::Execution(
                    "the query engine is shutting down".into(),
                )),
                Err(_) => Err(QueryError::Busy(format!(
                    "no turn to run within {} s: {} queries were running (query.max_concurrent); retry shortly",
                    timeout.as_secs(),
                    self.limits.max_concurrent
                ))),
            }
        };
        self.turns.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// The doors' DataFusion context (what HTTP SQL and Flight SQL plan with).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The analyzer's DataFusion context: the same tables (a table registered here is seen by
    /// the doors too), scans without filter pushdown.
    pub fn analysis_context(&self) -> &SessionContext {
        &self.analysis
    }

    /// Plans one read-only SQL statement: DDL, DML, COPY and `SET` are refused.
    async fn plan(&self, sql: &str) -> Result<DataFrame, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                DataFusionError::Plan(msg) if msg.contains("not supported") => {
                    QueryError::Invalid(format!(
                        "{msg}; vigil's SQL doors are read-only (SELECT, EXPLAIN, SHOW, DESCRIBE)"
                    ))
                }
                other => other.into(),
            })
    }

    /// Plans a statement without running it: the schema of its result and of its parameters
    /// (`$1`, `$2`, … in order; a type DataFusion cannot infer from context is `Utf8`).
    pub async fn prepare(&self, sql: &str) -> Result<Prepared, QueryError> {
        let frame = self.plan(sql).await?;
        let mut parameters: Vec<(String, Option<DataType>)> = frame
            .logical_plan()
            .get_parameter_types()?
            .into_iter()
            .collect();
        // `$10` after `$9`: by number where there is one.
        parameters.sort_by_key(|(name, _)| {
            (
                name.trim_start_matches('$')
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
                name.clone(),
            )
        });
        let parameters = Schema::new(
            parameters
                .into_iter()
                .map(|(name, data_type)| {
                    Field::new(name, data_type.unwrap_or(DataType::Utf8), true)
                })
                .collect::<Vec<_>>(),
        );
        Ok(Prepared {
            result: Arc::new(frame.schema().as_arrow().clone()),
            parameters: Arc::new(parameters),
        })
    }

    /// Runs one read-only SQL statement with `parameters` bound to `$1`, `$2`, …, and returns
    /// its result as a stream: batches are produced as the reader takes them, so a result of any
    /// size costs one batch of memory. The turn is held, and `timeout_secs` counts, until the
    /// stream ends or is dropped.
    pub async fn stream(
        &self,
        sql: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<ResultStream, QueryError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.limits.timeout_secs.max(1));
        let turn = self
            .turn(Duration::from_secs(self.limits.timeout_secs.max(1)))
            .await?;
        let mut frame = self.plan(sql).await?;
        if !parameters.is_empty() {
            frame = frame.with_param_values(parameters)?;
        }
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let timeout_secs = self.limits.timeout_secs;
        let stream = match tokio::time::timeout_at(deadline, frame.execute_stream()).await {
            Ok(stream) => stream?,
            Err(_) => return Err(timed_out(timeout_secs)),
        };
        let batches = futures::stream::unfold(Some((stream, turn)), move |state| async move {
            let (mut stream, turn) = state?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(batch))) => Some((Ok(batch), Some((stream, turn)))),
                Ok(Some(Err(e))) => Some((Err(e.into()), None)),
                Ok(None) => None,
                Err(_) => Some((Err(timed_out(timeout_secs)), None)),
            }
        });
        Ok(ResultStream {
            schema,
            batches: Box::pin(batches),
        })
    }

    /// Runs one read-only SQL statement and gathers its result, within `max_result_rows` and
    /// `max_result_bytes` (for doors that answer in one piece, such as JSON over HTTP).
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let mut result = self.stream(sql, Vec::new()).await?;
        let max_rows = self.limits.max_result_rows;
        let max_bytes = self.limits.max_result_bytes;
        let mut batches = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0u64);
        while let Some(batch) = result.batches.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            bytes += result_bytes(&batch);
            if rows > max_rows {
                return Err(QueryError::TooLarge(format!(
                    "the result has more than {max_rows} rows (query.max_result_rows); aggregate, filter or add a LIMIT"
                )));
            }
            if bytes > max_bytes {
                return Err(QueryError::TooLarge(format!(
                    "the result holds more than {max_bytes} bytes (query.max_result_bytes); select fewer or shorter columns, or add a LIMIT"
                )));
            }
            batches.push(batch);
        }
        Ok((result.schema, batches))
    }
}

fn timed_out(timeout_secs: u64) -> QueryError {
    QueryError::TooLarge(format!(
        "the query ran longer than {} s (query.timeout_secs) and was cancelled",
        timeout_secs.max(1)
    ))
}

/// A planned statement: the schemas of its result and of its parameters.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub result: SchemaRef,
    pub parameters: SchemaRef,
}

/// A running query's result.
pub struct ResultStream {
    pub schema: SchemaRef,
    pub batches: futures::stream::BoxStream<'static, Result<RecordBatch, QueryError>>,
}

/// The bytes a result batch holds, counting only its rows: a `LIMIT` slice of a large buffer
/// does not count the whole buffer.
fn result_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;
    use crate::telemetry::Telemetry;

    fn spans(n: u8) -> RecordBatch {
        crate::storage::tests::spans(1, n)
    }

    /// A store in `dir` with the default settings, changed by `adjust`.
    fn store_in(dir: &std::path::Path, adjust: impl FnOnce(&mut StorageConfig)) -> Arc<Store> {
        let mut config = StorageConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        adjust(&mut config);
        Store::open(config, Arc::new(Telemetry::default())).unwrap()
    }

    #[tokio::test]
    async fn queries_past_the_running_and_waiting_bounds_are_refused_not_queued_forever() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), |_| {});
        let limits = QueryConfig {
            max_concurrent: 1,
            max_queued: 1,
            timeout_secs: 1,
            ..QueryConfig::default()
        };
        let engine = QueryEngine::new(store, limits).unwrap();
        let held = engine.turn(Duration::from_secs(1)).await.unwrap();
        // One may wait; it gets no turn within the timeout while the first holds its own.
        let waiting = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.query("SELECT 1").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = engine.query("SELECT 1").await.unwrap_err();
        assert!(matches!(refused, QueryError::Busy(_)), "{refused}");
        assert!(refused.to_string().contains("max_queued"), "{refused}");
        let timed_out = waiting.await.unwrap().unwrap_err();
        assert!(matches!(timed_out, QueryError::Busy(_)), "{timed_out}");
        drop(held);
        engine.query("SELECT 1").await.unwrap();
    }

    #[tokio::test]
    async fn results_are_bounded_in_bytes_as_well_as_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), |_| {});
        let limits = QueryConfig {
            max_result_bytes: 1 << 20,
            ..QueryConfig::default()
        };
        let engine = QueryEngine::new(store, limits).unwrap();
        let error = engine
            .query("SELECT repeat('x', 100000) FROM generate_series(1, 30)")
            .await
            .unwrap_err();
        assert!(matches!(error, QueryError::TooLarge(_)), "{error}");
        assert!(error.to_string().contains("max_result_bytes"), "{error}");
        // Functions that build a large value from a small query refuse before building it.
        for sql in [
            "SELECT repeat('x', 60000000) FROM generate_series(1, 30)",
            "SELECT repeat(s, 2000000) FROM (VALUES ('ab'), ('cd')) AS t(s)",
            "SELECT lpad('x', 100000000)",
            "SELECT rpad('x', 100000000, 'yz')",
            "SELECT array_repeat('abc', 10000000)",
            "SELECT range(1, 1000000000)",
            "SELECT generate_series(-9223372036854775807, 9223372036854775807, 3)",
            "SELECT max(length(repeat('y', 50000000))) FROM generate_series(1, 3)",
        ] {
            let error = engine.query(sql).await.unwrap_err();
            assert!(matches!(error, QueryError::TooLarge(_)), "{sql}: {error}");
            assert!(
                error.to_string().contains("max_result_bytes"),
                "{sql}: {error}"
            );
        }
        // Within the bound they still work.
        for sql in [
            "SELECT repeat('ab', 3)",
            "SELECT lpad('x', 5)",
            "SELECT array_repeat(1, 3)",
            "SELECT range(1, 10, 2)",
            "SELECT generate_series(DATE '2026-01-01', DATE '2026-01-05', INTERVAL '1 day')",
        ] {
            engine
                .query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // A LIMIT over a wide source counts the rows it returns, not the buffers they sit in.
        let (_, batches) = engine
            .query("SELECT repeat('x', 1000) AS s FROM generate_series(1, 5000) LIMIT 3")
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    }

    /// A query reads Parquet files lazily, while its stream is polled; retention that removes
    /// a file meanwhile must not make it fail with NotFound.
    #[tokio::test]
    async fn a_query_that_started_before_retention_removed_its_files_finishes() {
        let dir = tempfile::tempdir().unwrap();
        // Any file is over the size limit.
        let store = store_in(dir.path(), |c| c.retention.max_bytes = 1);
        store.append(Table::Spans, spans(7)).await.unwrap();
        store.flush_due_tables(true).await.unwrap();
        let files = store.snapshot(Table::Spans).files;
        assert_eq!(files.len(), 1);
        let engine = QueryEngine::new(store.clone(), QueryConfig::default()).unwrap();
        let stream = engine
            .context()
            .sql("SELECT count(*) AS n FROM spans")
            .await
            .unwrap()
            .execute_stream()
            .await
            .unwrap();
        let now = std::time::Instant::now();
        store.enforce_retention(now).unwrap();
        assert!(store.snapshot(Table::Spans).files.is_empty());
        let batches: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 7);
        // After the grace period the file is gone, and new queries no longer see it.
        assert!(files[0].path.exists());
        store
            .enforce_retention(now + Duration::from_secs(121))
            .unwrap();
        assert!(!files[0].path.exists());
        let (_, batches) = engine
            .query("SELECT count(*) AS n FROM spans")
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
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
            let store = store_in(&data_dir, |_| {});
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

    /// The doors decode Parquet with filter pushdown and the analyzer without; both see every
    /// table, one registered later included, and answer alike over flushed files.
    #[tokio::test]
    async fn the_doors_and_the_analyzer_share_tables_but_not_pushdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), |_| {});
        store.append(Table::Spans, spans(5)).await.unwrap();
        store.flush_due_tables(true).await.unwrap();
        let engine = QueryEngine::new(store, QueryConfig::default()).unwrap();
        let pushdown = |ctx: &SessionContext| {
            ctx.copied_config()
                .options()
                .execution
                .parquet
                .pushdown_filters
        };
        assert!(pushdown(engine.context()));
        assert!(!pushdown(engine.analysis_context()));

        let extra = datafusion::datasource::empty::EmptyTable::new(Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
        ])));
        engine
            .analysis_context()
            .register_table("registered_later", Arc::new(extra))
            .unwrap();
        engine
            .query("SELECT count(*) FROM registered_later")
            .await
            .unwrap();

        let sql = "SELECT count(*) AS n FROM spans WHERE name <> 'nothing'";
        let (_, doors) = engine.query(sql).await.unwrap();
        let analysis = engine
            .analysis_context()
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&doors)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&analysis)
                .unwrap()
                .to_string()
        );
    }
}
