//! PromQL over `metrics`: expressions parsed by `promql-parser`, each selector read through the one
//! query engine (metric names, label matchers and the time range pushed into the scan, buffers and
//! Parquet alike), and evaluated with Prometheus 2's semantics (5-minute lookback, staleness
//! markers, closed range windows, extrapolated `rate`). `api` serves it as Prometheus' HTTP API.
//!
//! OTLP metrics appear under the names the OpenTelemetry-to-Prometheus specification gives them
//! (see `names`); anything already named for Prometheus keeps its name.

pub mod api;
mod eval;
mod exemplars;
mod functions;
pub mod names;
mod select;
mod series_labels;
mod target_info;

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use promql_parser::parser::{self, Expr, Function, value::ValueType};

pub use eval::{StepSeries, Value};
pub use select::{Labels, Metadata, RawSeries};
pub use series_labels::SeriesLabels;

use super::{QueryEngine, QueryError};
use eval::{Context, Evaluator};
use select::{Catalog, SampleBudget};

/// Why a PromQL request failed, with Prometheus' error types.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The request or the expression is wrong (HTTP 400, `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// The expression is valid but cannot be evaluated on this data (HTTP 422, `execution`).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its time limit (HTTP 503, `timeout`).
    #[error("{0}")]
    Timeout(String),
    /// Too many queries at once (HTTP 503, `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside vigil (HTTP 500, `internal`).
    #[error("{0}")]
    Internal(String),
}

impl From<QueryError> for PromError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => PromError::BadData(m),
            QueryError::Execution(m) => PromError::Execution(m),
            QueryError::TooLarge(m) if m.contains("timeout_secs") => PromError::Timeout(m),
            QueryError::TooLarge(m) => PromError::Execution(m),
            QueryError::Busy(m) => PromError::Unavailable(m),
        }
    }
}

/// Prometheus' lookback: an instant selector sees a sample this old at most.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The most points a range query may return per series, as in Prometheus.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Registers the functions that Prometheus 2 has under names `promql-parser` no longer knows.
fn register_functions() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = parser::register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Parses a PromQL expression.
pub fn parse(text: &str) -> Result<Expr, PromError> {
    register_functions();
    if text.trim().is_empty() {
        return Err(PromError::BadData(
            "empty query: give a PromQL expression".into(),
        ));
    }
    parser::parse(text).map_err(|e| PromError::BadData(format!("parse error: {e}")))
}

/// One PromQL evaluation: the expression, the steps, and the limits.
pub struct Evaluation {
    pub expr: Expr,
    /// Evaluation times in milliseconds, ascending (one for an instant query).
    pub times: Vec<i64>,
    pub lookback_ms: i64,
    /// The step of a subquery that names none: the query's step, or one minute.
    pub default_subquery_step_ms: i64,
}

/// Evaluates `evaluation` against the engine's `metrics`, within `max_samples` samples and the
/// engine's time limit.
pub async fn evaluate(
    engine: &QueryEngine,
    evaluation: Evaluation,
    max_samples: u64,
) -> Result<Value, PromError> {
    let timeout = Duration::from_secs(engine.limits().timeout_secs.max(1));
    match tokio::time::timeout(timeout, evaluate_unbounded(engine, evaluation, max_samples)).await {
        Ok(result) => result,
        Err(_) => Err(PromError::Timeout(format!(
            "query timed out in expression evaluation after {} s (query.timeout_secs)",
            timeout.as_secs()
        ))),
    }
}

async fn evaluate_unbounded(
    engine: &QueryEngine,
    evaluation: Evaluation,
    max_samples: u64,
) -> Result<Value, PromError> {
    let Evaluation {
        expr,
        times,
        lookback_ms,
        default_subquery_step_ms,
    } = evaluation;
    let (Some(&start), Some(&end)) = (times.first(), times.last()) else {
        return Err(PromError::BadData("no evaluation time".into()));
    };
    let context = Context {
        start,
        end,
        lookback_ms,
        default_subquery_step_ms,
    };
    let mut plan = HashMap::new();
    context.plan(&expr, start, end, &mut plan);
    let mut data: HashMap<String, Vec<RawSeries>> = HashMap::new();
    if !plan.is_empty() {
        let lo = plan.values().map(|p| p.1).min().unwrap_or(start);
        let hi = plan.values().map(|p| p.2).max().unwrap_or(end);
        let catalog = Catalog::load(engine, lo, hi).await?;
        let mut budget = SampleBudget {
            loaded: 0,
            limit: max_samples,
            keep_samples: true,
        };
        for (key, (vs, from, to)) in plan {
            let groups = eval::selector_groups(&vs);
            let series = select::select(engine, &catalog, &groups, from, to, &mut budget).await?;
            data.insert(key, series);
        }
    }
    let data = Arc::new(data);
    tokio::task::spawn_blocking(move || {
        let evaluator = Evaluator {
            context: &context,
            data: &data,
            max_points: max_samples,
        };
        evaluator.eval(&expr, &times)
    })
    .await
    .map_err(|e| PromError::Internal(format!("evaluation stopped: {e}")))?
}

/// The series the `match[]` selectors select between `start` and `end`, labels only (rows are
/// read, no sample is held).
pub async fn series(
    engine: &QueryEngine,
    selectors: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, PromError> {
    let catalog = Catalog::load(engine, start, end).await?;
    let mut budget = SampleBudget {
        loaded: 0,
        limit: u64::MAX,
        keep_samples: false,
    };
    let mut out: Vec<Labels> = Vec::new();
    for text in selectors {
        let vs = match parse(text)? {
            Expr::VectorSelector(vs) => vs,
            other => {
                return Err(PromError::BadData(format!(
                    "invalid parameter \"match[]\": {other} is not a series selector"
                )));
            }
        };
        let groups = eval::selector_groups(&vs);
        if groups.iter().all(|g| g.iter().all(|m| m.is_match(""))) {
            return Err(PromError::BadData(format!(
                "invalid parameter \"match[]\": {text}: match[] must contain at least one non-empty matcher"
            )));
        }
        for s in select::select(engine, &catalog, &groups, start, end, &mut budget).await? {
            out.push(s.labels);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every metric name with rows between `start` and `end`.
pub async fn metric_names(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<Vec<String>, PromError> {
    Ok(Catalog::load(engine, start, end).await?.prometheus_names())
}

/// The type, help and unit of every metric with rows between `start` and `end`.
pub async fn metadata(
    engine: &QueryEngine,
    start: i64,
    end: i64,
) -> Result<Vec<Metadata>, PromError> {
    Ok(Catalog::load(engine, start, end).await?.metadata())
}
