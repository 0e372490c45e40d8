//! Prometheus' HTTP API on the query port, GET and form-encoded POST alike: `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`,
//! `/api/v1/metadata`, `/api/v1/query_exemplars` and `/api/v1/status/buildinfo`, with
//! Prometheus' JSON envelope and error types, so that Grafana's Prometheus datasource and
//! Prometheus' own tools read vigil as they read Prometheus.
//!
//! Where Prometheus defaults `start` to the beginning of time (series, labels, label values),
//! vigil takes the 24 hours before `end`: a full-history scan is never what a dashboard wants.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::names::NAME_LABEL;
use super::{DEFAULT_LOOKBACK_MS, Evaluation, MAX_POINTS_PER_SERIES, PromError, StepSeries, Value};
use crate::query::sql_http::QueryHttpState;

/// The Prometheus version whose HTTP API and PromQL vigil answers as (`buildinfo`): Grafana picks
/// the features it uses from it.
pub const PROMETHEUS_API_VERSION: &str = "2.42.0";

/// What a `series`/`labels` request without `start` looks back over.
const DEFAULT_METADATA_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The routes, for the query port's router.
pub fn routes() -> Router<QueryHttpState> {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/status/buildinfo", get(buildinfo))
}

/// A request's parameters: the URL's query string, then a form-encoded body.
struct Params(Vec<(String, String)>);

impl Params {
    fn read(query: Option<String>, headers: &HeaderMap, body: &Bytes) -> Result<Params, PromError> {
        let mut pairs: Vec<(String, String)> = match query {
            Some(q) => serde_urlencoded::from_str(&q)
                .map_err(|e| PromError::BadData(format!("invalid query string: {e}")))?,
            None => Vec::new(),
        };
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form && !body.is_empty() {
            let body = std::str::from_utf8(body)
                .map_err(|_| PromError::BadData("the form body is not UTF-8".into()))?;
            let more: Vec<(String, String)> = serde_urlencoded::from_str(body)
                .map_err(|e| PromError::BadData(format!("invalid form body: {e}")))?;
            pairs.extend(more);
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, PromError> {
        self.get(name)
            .map(|v| {
                parse_time(v)
                    .map_err(|e| PromError::BadData(format!("invalid parameter \"{name}\": {e}")))
            })
            .transpose()
    }

    fn duration(&self, name: &str) -> Result<Option<i64>, PromError> {
        self.get(name)
            .map(|v| {
                parse_duration(v)
                    .map_err(|e| PromError::BadData(format!("invalid parameter \"{name}\": {e}")))
            })
            .transpose()
    }

    fn limit(&self) -> Result<Option<usize>, PromError> {
        match self.get("limit") {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                Ok(_) => Ok(None),
                Err(_) => Err(PromError::BadData(format!(
                    "invalid parameter \"limit\": cannot parse {v:?} to a valid limit"
                ))),
            },
        }
    }
}

/// A Prometheus time: RFC 3339, or Unix seconds with a fraction.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(format!("cannot parse {text:?} to a valid timestamp"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}

/// A Prometheus duration: seconds with a fraction, or `1h30m`, `15s`, `100ms`, `2d`, `1w`, `1y`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > 9.2e15 {
            return Err(format!("cannot parse {text:?} to a valid duration"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    let invalid = || format!("cannot parse {text:?} to a valid duration");
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: i64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
    }
    Ok(total)
}

/// A sample value as Prometheus writes it.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A timestamp as Prometheus writes it: seconds, with a fraction only when there is one.
fn seconds(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn metric(labels: &[(String, String)]) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

fn success(data: Json) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({ "status": "success", "data": data })),
    )
        .into_response()
}

fn failure(error: PromError) -> Response {
    let (status, kind) = match &error {
        PromError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
        PromError::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        PromError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        PromError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        PromError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    (
        status,
        axum::Json(json!({ "status": "error", "errorType": kind, "error": error.to_string() })),
    )
        .into_response()
}

fn respond(result: Result<Json, PromError>) -> Response {
    match result {
        Ok(data) => success(data),
        Err(e) => failure(e),
    }
}

/// Names or values sorted, once each, cut at the request's `limit`.
fn sorted_unique(mut values: Vec<String>, params: &Params) -> Result<Json, PromError> {
    values.sort();
    values.dedup();
    if let Some(limit) = params.limit()? {
        values.truncate(limit);
    }
    Ok(json!(values))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn max_samples(state: &QueryHttpState) -> u64 {
    state.engine.limits().max_samples
}

async fn query(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(run_instant(&state, raw, &headers, &body).await)
}

fn lookback(params: &Params) -> Result<i64, PromError> {
    Ok(params
        .duration("lookback_delta")?
        .filter(|d| *d > 0)
        .unwrap_or(DEFAULT_LOOKBACK_MS))
}

async fn run_instant(
    state: &QueryHttpState,
    raw: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Json, PromError> {
    let params = Params::read(raw, headers, body)?;
    let text = params
        .get("query")
        .ok_or_else(|| PromError::BadData("invalid parameter \"query\": missing".into()))?;
    let expr = super::parse(text)?;
    let time = params.time("time")?.unwrap_or_else(now_ms);
    let evaluation = Evaluation {
        expr,
        times: vec![time],
        lookback_ms: lookback(&params)?,
        default_subquery_step_ms: 60_000,
    };
    let value = super::evaluate(&state.engine, evaluation, max_samples(state)).await?;
    let t = seconds(time);
    Ok(match value {
        Value::Scalar(v) => json!({
            "resultType": "scalar",
            "result": [t, format_value(v[0])],
        }),
        Value::String(s) => json!({ "resultType": "string", "result": [t, s] }),
        Value::Vector(series) => json!({
            "resultType": "vector",
            "result": series
                .iter()
                .filter_map(|s| s.values[0].map(|v| json!({
                    "metric": metric(&s.labels),
                    "value": [t, format_value(v)],
                })))
                .collect::<Vec<_>>(),
        }),
        Value::Range(range) => {
            let mut result: Vec<(String, Json)> = Vec::new();
            for (n, s) in range.series.iter().enumerate() {
                let window = range.window(n, 0);
                if window.is_empty() {
                    continue;
                }
                result.push((
                    super::eval::format_labels(&s.labels),
                    json!({
                        "metric": metric(&s.labels),
                        "values": window
                            .iter()
                            .map(|(t, v)| json!([seconds(*t), format_value(*v)]))
                            .collect::<Vec<_>>(),
                    }),
                ));
            }
            result.sort_by(|a, b| a.0.cmp(&b.0));
            json!({
                "resultType": "matrix",
                "result": result.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            })
        }
    })
}

async fn query_range(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run_range(&state, raw, &headers, &body).await {
        Ok(data) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"status\":\"success\",\"data\":{data}}}"),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

async fn run_range(
    state: &QueryHttpState,
    raw: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, PromError> {
    let params = Params::read(raw, headers, body)?;
    let text = params
        .get("query")
        .ok_or_else(|| PromError::BadData("invalid parameter \"query\": missing".into()))?;
    let start = params
        .time("start")?
        .ok_or_else(|| PromError::BadData("invalid parameter \"start\": missing".into()))?;
    let end = params
        .time("end")?
        .ok_or_else(|| PromError::BadData("invalid parameter \"end\": missing".into()))?;
    if end < start {
        return Err(PromError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    let step = params
        .duration("step")?
        .ok_or_else(|| PromError::BadData("invalid parameter \"step\": missing".into()))?;
    if step <= 0 {
        return Err(PromError::BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(PromError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let expr = super::parse(text)?;
    let kind = expr.value_type();
    if !matches!(
        kind,
        promql_parser::parser::value::ValueType::Scalar
            | promql_parser::parser::value::ValueType::Vector
    ) {
        return Err(PromError::BadData(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            match kind {
                promql_parser::parser::value::ValueType::Matrix => "range vector",
                _ => "string",
            }
        )));
    }
    let times: Vec<i64> = (0..)
        .map(|k| start + k * step)
        .take_while(|t| *t <= end)
        .collect();
    let evaluation = Evaluation {
        expr,
        times: times.clone(),
        lookback_ms: lookback(&params)?,
        // Prometheus steps a subquery without a step at its evaluation interval (1m), not
        // at the query's step.
        default_subquery_step_ms: 60_000,
    };
    let value = super::evaluate(&state.engine, evaluation, max_samples(state)).await?;
    let series: Vec<StepSeries> = match value {
        Value::Vector(v) => v,
        Value::Scalar(values) => vec![StepSeries {
            labels: super::eval::labels_from(Vec::new()),
            values: values.into_iter().map(Some).collect(),
            sample_times: None,
        }],
        _ => Vec::new(),
    };
    let mut result: Vec<&StepSeries> = series
        .iter()
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    result.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(matrix_json(&result, &times))
}

/// A range query's `data`, written straight into one string: a day at 15 s over a thousand
/// series is millions of points, and a JSON tree of them would cost more than evaluating them.
fn matrix_json(series: &[&StepSeries], times: &[i64]) -> String {
    use std::fmt::Write as _;
    let points: usize = series.iter().map(|s| s.values.len()).sum();
    let mut out = String::with_capacity(64 + points * 28);
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    for (n, s) in series.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        out.push_str(&metric(&s.labels).to_string());
        out.push_str(",\"values\":[");
        let mut first = true;
        for (t, v) in times.iter().zip(&s.values) {
            let Some(v) = v else { continue };
            if !first {
                out.push(',');
            }
            first = false;
            out.push('[');
            if t % 1000 == 0 {
                let _ = write!(out, "{}", t / 1000);
            } else {
                let _ = write!(out, "{}", *t as f64 / 1000.0);
            }
            out.push_str(",\"");
            out.push_str(&format_value(*v));
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// `start` and `end` of a metadata request.
fn window(params: &Params) -> Result<(i64, i64), PromError> {
    let end = params.time("end")?.unwrap_or_else(now_ms);
    let start = params
        .time("start")?
        .unwrap_or(end - DEFAULT_METADATA_WINDOW_MS);
    if end < start {
        return Err(PromError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    Ok((start, end))
}

async fn series(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = Params::read(raw, &headers, &body)?;
        let selectors = params.all("match[]");
        if selectors.is_empty() {
            return Err(PromError::BadData("no match[] parameter provided".into()));
        }
        let (start, end) = window(&params)?;
        let mut found = super::series(&state.engine, &selectors, start, end).await?;
        if let Some(limit) = params.limit()? {
            found.truncate(limit);
        }
        Ok(Json::Array(found.iter().map(|l| metric(l)).collect()))
    }
    .await;
    respond(result)
}

async fn labels(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = Params::read(raw, &headers, &body)?;
        let (start, end) = window(&params)?;
        let mut selectors = params.all("match[]");
        if selectors.is_empty() {
            selectors.push(format!("{{{NAME_LABEL}=~\".+\"}}"));
        }
        let found = super::series(&state.engine, &selectors, start, end).await?;
        let names: Vec<String> = found
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.clone()))
            .collect();
        sorted_unique(names, &params)
    }
    .await;
    respond(result)
}

async fn label_values(
    State(state): State<QueryHttpState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::read(raw, &headers, &Bytes::new())?;
        let (start, end) = window(&params)?;
        let selectors = params.all("match[]");
        let values: Vec<String> = if name == NAME_LABEL && selectors.is_empty() {
            super::metric_names(&state.engine, start, end).await?
        } else {
            let selectors = if selectors.is_empty() {
                vec![format!("{{{NAME_LABEL}=~\".+\"}}")]
            } else {
                selectors
            };
            let found = super::series(&state.engine, &selectors, start, end).await?;
            found
                .iter()
                .map(|l| super::select::label(l, &name).to_string())
                .filter(|v| !v.is_empty())
                .collect()
        };
        sorted_unique(values, &params)
    }
    .await;
    respond(result)
}

async fn metadata(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::read(raw, &headers, &Bytes::new())?;
        let end = now_ms();
        let found = super::metadata(&state.engine, end - DEFAULT_METADATA_WINDOW_MS, end).await?;
        let wanted = params.get("metric").filter(|m| !m.is_empty());
        let mut out = serde_json::Map::new();
        for m in found {
            if wanted.is_some_and(|w| w != m.name) {
                continue;
            }
            if params.limit()?.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            let entry = out.entry(m.name.clone()).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(json!({ "type": m.kind, "help": m.help, "unit": m.unit }));
            }
        }
        Ok(Json::Object(out))
    }
    .await;
    respond(result)
}

/// The exemplars of the series the query's selectors select, timed between `start` and `end`
/// (see [`super::exemplars`]).
async fn query_exemplars(
    State(state): State<QueryHttpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = Params::read(raw, &headers, &body)?;
        let text = params
            .get("query")
            .ok_or_else(|| PromError::BadData("invalid parameter \"query\": missing".into()))?;
        let expr = super::parse(text)?;
        let (start, end) = window(&params)?;
        let mut groups = Vec::new();
        super::exemplars::selectors(&expr, &mut groups);
        let found =
            super::exemplars::read(&state.engine, &groups, start, end, max_samples(&state)).await?;
        Ok(Json::Array(
            found
                .iter()
                .map(|(series, exemplars)| {
                    let labels: serde_json::Map<String, Json> = series
                        .iter()
                        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                        .collect();
                    let exemplars: Vec<Json> = exemplars
                        .iter()
                        .map(|e| {
                            let labels: serde_json::Map<String, Json> = e
                                .labels
                                .iter()
                                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                                .collect();
                            json!({
                                "labels": labels,
                                "value": format_value(e.value),
                                "timestamp": e.time_ms as f64 / 1000.0,
                            })
                        })
                        .collect();
                    json!({ "seriesLabels": labels, "exemplars": exemplars })
                })
                .collect(),
        ))
    }
    .await;
    respond(result)
}

async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_API_VERSION,
        "revision": format!("vigil {}", env!("CARGO_PKG_VERSION")),
        "branch": "vigil",
        "buildUser": "vigil",
        "buildDate": "",
        "goVersion": "",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_as_prometheus_parses_them() {
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn range_results_are_valid_json_in_prometheus_shape() {
        let series = StepSeries {
            labels: super::super::eval::labels_from(vec![("a\"b".into(), "x\ny".into())]),
            values: vec![Some(1.5), None, Some(f64::NAN)],
            sample_times: None,
        };
        let text = matrix_json(&[&series], &[1000, 2000, 3500]);
        let parsed: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!({"resultType": "matrix", "result": [{"metric": {"a\"b": "x\ny"}, "values": [[1, "1.5"], [3.5, "NaN"]]}]})
        );
    }

    #[test]
    fn values_print_as_prometheus_prints_them() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }
}
