//! A Jaeger-compatible trace API on the query port, for Grafana's built-in Jaeger datasource
//! (and Jaeger's own UI): services, operations, trace search and trace by id, dependencies. It is
//! a client of the one SQL engine like every other door; spans come back in Jaeger's JSON, with
//! the GenAI columns as `gen_ai.*` tags, so that a search for `gen_ai.request.model=gpt-4o` finds
//! LLM calls and each span shows its tokens, cost, time to first token and (as stored) messages.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::QueryError;
use super::sql_http::QueryHttpState;

/// GenAI columns and the tags they come back as: (column, tag, type).
const GENAI_TAGS: [(&str, &str, TagType); 17] = [
    ("gen_ai_system", "gen_ai.system", TagType::String),
    ("gen_ai_operation", "gen_ai.operation.name", TagType::String),
    ("request_model", "gen_ai.request.model", TagType::String),
    ("response_model", "gen_ai.response.model", TagType::String),
    ("input_tokens", "gen_ai.usage.input_tokens", TagType::Int),
    ("output_tokens", "gen_ai.usage.output_tokens", TagType::Int),
    ("total_tokens", "gen_ai.usage.total_tokens", TagType::Int),
    (
        "cache_read_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        TagType::Int,
    ),
    (
        "cache_creation_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        TagType::Int,
    ),
    (
        "reasoning_tokens",
        "gen_ai.usage.reasoning_tokens",
        TagType::Int,
    ),
    (
        "request_temperature",
        "gen_ai.request.temperature",
        TagType::Float,
    ),
    (
        "request_max_tokens",
        "gen_ai.request.max_tokens",
        TagType::Int,
    ),
    ("error_type", "error.type", TagType::String),
    ("cost_usd", "vigil.cost_usd", TagType::Float),
    ("ttft_ms", "vigil.ttft_ms", TagType::Float),
    ("input_messages", "gen_ai.input.messages", TagType::String),
    ("output_messages", "gen_ai.output.messages", TagType::String),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagType {
    String,
    Int,
    Float,
}

/// The columns a span is read with.
const SPAN_COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, status_code, \
     status_message, service_name, resource_attributes, attributes, events, links, flags, \
     arrow_cast(time, 'Int64') / 1000 AS start_us, duration_ns / 1000 AS duration_us, \
     gen_ai_system, gen_ai_operation, request_model, response_model, input_tokens, output_tokens, \
     total_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens, \
     request_temperature, request_max_tokens, error_type, cost_usd, ttft_ns / 1e6 AS ttft_ms, \
     array_to_string(finish_reasons, ',') AS finish_reasons, input_messages, output_messages";

/// Traces returned by a search when the request names no limit (Jaeger's UI default).
const DEFAULT_LIMIT: usize = 20;
/// Traces returned by one search at most.
const MAX_LIMIT: usize = 1500;

pub fn routes() -> Router<QueryHttpState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/dependencies", get(dependencies))
}

/// Jaeger's envelope.
fn data(value: Value) -> Response {
    let total = value.as_array().map_or(0, Vec::len);
    axum::Json(json!({
        "data": value, "total": total, "limit": 0, "offset": 0, "errors": null
    }))
    .into_response()
}

/// Jaeger's error envelope.
fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        axum::Json(json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": message}]
        })),
    )
        .into_response()
}

fn query_failure(error: QueryError) -> Response {
    let status = match error {
        QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
        QueryError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure(status, error.to_string())
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Runs `sql` and returns its rows as JSON objects.
async fn rows(state: &QueryHttpState, sql: &str) -> Result<Vec<Map<String, Value>>, Response> {
    let (_, batches) = state.engine.query(sql).await.map_err(query_failure)?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut out);
        for batch in &batches {
            writer
                .write(batch)
                .map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
        writer
            .finish()
            .map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out)
        .map_err(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn strings(rows: &[Map<String, Value>], column: &str) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get(column).and_then(Value::as_str).map(str::to_string))
        .collect()
}

async fn services(State(state): State<QueryHttpState>) -> Response {
    match rows(
        &state,
        "SELECT DISTINCT service_name FROM spans ORDER BY service_name",
    )
    .await
    {
        Ok(rows) => data(json!(strings(&rows, "service_name"))),
        Err(response) => response,
    }
}

async fn service_operations(
    State(state): State<QueryHttpState>,
    Path(service): Path<String>,
) -> Response {
    let sql = format!(
        "SELECT DISTINCT name FROM spans WHERE service_name = {} ORDER BY name",
        quote(&service)
    );
    match rows(&state, &sql).await {
        Ok(rows) => data(json!(strings(&rows, "name"))),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct OperationsQuery {
    service: Option<String>,
    #[serde(rename = "spanKind")]
    span_kind: Option<String>,
}

async fn operations(
    State(state): State<QueryHttpState>,
    Query(query): Query<OperationsQuery>,
) -> Response {
    let Some(service) = query.service.filter(|s| !s.is_empty()) else {
        return failure(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let mut sql = format!(
        "SELECT DISTINCT name, kind FROM spans WHERE service_name = {}",
        quote(&service)
    );
    if let Some(kind) = query.span_kind.filter(|k| !k.is_empty()) {
        sql.push_str(&format!(
            " AND kind = {}",
            quote(&kind.to_ascii_lowercase())
        ));
    }
    sql.push_str(" ORDER BY name");
    match rows(&state, &sql).await {
        Ok(rows) => data(Value::Array(
            rows.iter()
                .map(|r| json!({"name": r.get("name"), "spanKind": r.get("kind")}))
                .collect(),
        )),
        Err(response) => response,
    }
}

/// A Go-style duration (`1.2s`, `150ms`, `500us`, `2m`) as nanoseconds.
fn duration_ns(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .ok_or_else(|| format!("duration {text:?} has no unit (e.g. 1.2s, 150ms)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} is not a number and a unit"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("duration {text:?}: unknown unit {unit:?}")),
    };
    Ok((number * scale) as i64)
}

/// The SQL condition for one searched tag: a GenAI column where the tag is one, the span's
/// status for `error`, else the span's or its resource's attribute.
fn tag_condition(key: &str, value: &str) -> String {
    if let Some((column, _, kind)) = GENAI_TAGS.iter().find(|(_, tag, _)| *tag == key) {
        let column = if *column == "ttft_ms" {
            "ttft_ns / 1e6"
        } else {
            column
        };
        return match kind {
            TagType::String => format!("{column} = {}", quote(value)),
            TagType::Int | TagType::Float => match value.parse::<f64>() {
                Ok(number) => format!("{column} = {number}"),
                Err(_) => "FALSE".to_string(),
            },
        };
    }
    match key {
        "error" => match value {
            "true" => "status_code = 'error'".to_string(),
            _ => "status_code <> 'error'".to_string(),
        },
        "span.kind" => format!("kind = {}", quote(&value.to_ascii_lowercase())),
        "otel.status_code" => format!("status_code = {}", quote(&value.to_ascii_lowercase())),
        "gen_ai.response.finish_reasons" => {
            format!("array_has(finish_reasons, {})", quote(value))
        }
        _ => format!(
            "(attributes[{k}] = {v} OR resource_attributes[{k}] = {v})",
            k = quote(key),
            v = quote(value)
        ),
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    service: Option<String>,
    operation: Option<String>,
    tags: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    limit: Option<usize>,
}

async fn search(State(state): State<QueryHttpState>, Query(query): Query<SearchQuery>) -> Response {
    let mut conditions = Vec::new();
    if let Some(service) = query.service.as_deref().filter(|s| !s.is_empty()) {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    if let Some(operation) = query.operation.as_deref().filter(|s| !s.is_empty()) {
        conditions.push(format!("name = {}", quote(operation)));
    }
    let ts = |us: i64| {
        format!(
            "arrow_cast({}, 'Timestamp(Nanosecond, Some(\"UTC\"))')",
            us.saturating_mul(1000)
        )
    };
    if let Some(start) = query.start {
        conditions.push(format!("time >= {}", ts(start)));
    }
    if let Some(end) = query.end {
        conditions.push(format!("time <= {}", ts(end)));
    }
    for (bound, op) in [(&query.min_duration, ">="), (&query.max_duration, "<=")] {
        if let Some(text) = bound.as_deref().filter(|s| !s.is_empty()) {
            match duration_ns(text) {
                Ok(ns) => conditions.push(format!("duration_ns {op} {ns}")),
                Err(e) => return failure(StatusCode::BAD_REQUEST, e),
            }
        }
    }
    if let Some(tags) = query.tags.as_deref().filter(|s| !s.is_empty()) {
        let parsed: BTreeMap<String, Value> = match serde_json::from_str(tags) {
            Ok(parsed) => parsed,
            Err(e) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    format!("parameter 'tags' must be a JSON object of tag values: {e}"),
                );
            }
        };
        for (key, value) in parsed {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            conditions.push(tag_condition(&key, &value));
        }
    }
    let filter = if conditions.is_empty() {
        "TRUE".to_string()
    } else {
        conditions.join(" AND ")
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    // The newest matching traces first; then every span of each.
    let ids = match rows(
        &state,
        &format!(
            "SELECT trace_id, max(time) AS latest FROM spans WHERE {filter} \
             GROUP BY trace_id ORDER BY latest DESC LIMIT {limit}"
        ),
    )
    .await
    {
        Ok(rows) => strings(&rows, "trace_id"),
        Err(response) => return response,
    };
    if ids.is_empty() {
        return data(json!([]));
    }
    let list: Vec<String> = ids.iter().map(|id| quote(id)).collect();
    let spans = match rows(
        &state,
        &format!(
            "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id IN ({}) ORDER BY start_us",
            list.join(", ")
        ),
    )
    .await
    {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    let mut by_trace: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
    for span in spans {
        let id = span
            .get("trace_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        by_trace.entry(id).or_default().push(span);
    }
    let traces: Vec<Value> = ids
        .iter()
        .filter_map(|id| by_trace.remove(id).map(|spans| jaeger_trace(id, spans)))
        .collect();
    data(Value::Array(traces))
}

async fn trace(State(state): State<QueryHttpState>, Path(trace_id): Path<String>) -> Response {
    let id = trace_id.to_ascii_lowercase();
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("{trace_id:?} is not a trace id (up to 32 hex digits)"),
        );
    }
    // Jaeger drops leading zeros; vigil keeps 32 digits.
    let id = format!("{id:0>32}");
    let spans = match rows(
        &state,
        &format!(
            "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = {} ORDER BY start_us",
            quote(&id)
        ),
    )
    .await
    {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    if spans.is_empty() {
        return failure(StatusCode::NOT_FOUND, format!("trace {id} not found"));
    }
    data(json!([jaeger_trace(&id, spans)]))
}

#[derive(Deserialize)]
struct DependenciesQuery {
    #[serde(rename = "endTs")]
    end_ts: Option<i64>,
    lookback: Option<i64>,
}

async fn dependencies(
    State(state): State<QueryHttpState>,
    Query(query): Query<DependenciesQuery>,
) -> Response {
    let end_ms = query
        .end_ts
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let lookback_ms = query.lookback.unwrap_or(24 * 3600 * 1000);
    let ts = |ms: i64| {
        format!(
            "arrow_cast({}, 'Timestamp(Nanosecond, Some(\"UTC\"))')",
            ms.saturating_mul(1_000_000)
        )
    };
    let sql = format!(
        "SELECT parent.service_name AS parent, child.service_name AS child, count(*) AS calls \
         FROM spans child JOIN spans parent \
           ON child.trace_id = parent.trace_id AND child.parent_span_id = parent.span_id \
         WHERE child.time >= {from} AND child.time <= {to} \
           AND parent.time >= {from_wide} AND parent.time <= {to} \
           AND child.service_name <> parent.service_name \
         GROUP BY 1, 2 ORDER BY 1, 2",
        from = ts(end_ms - lookback_ms),
        // A parent starts before its child, possibly before the window.
        from_wide = ts(end_ms - lookback_ms - 3_600_000),
        to = ts(end_ms),
    );
    match rows(&state, &sql).await {
        Ok(rows) => data(Value::Array(
            rows.iter()
                .map(|r| {
                    json!({
                        "parent": r.get("parent"),
                        "child": r.get("child"),
                        "callCount": r.get("calls"),
                    })
                })
                .collect(),
        )),
        Err(response) => response,
    }
}

fn tag(key: &str, value: Value) -> Value {
    let kind = match &value {
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        _ => "string",
    };
    json!({"key": key, "type": kind, "value": value})
}

fn string_tags(map: Option<&Value>) -> Vec<Value> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| tag(k, json!(s))))
                .collect()
        })
        .unwrap_or_default()
}

/// One trace in Jaeger's JSON: spans with references to their parents, tags, logs from events,
/// and one process per (service, resource).
fn jaeger_trace(trace_id: &str, spans: Vec<Map<String, Value>>) -> Value {
    let mut processes: Vec<(String, Value)> = Vec::new();
    let mut out = Vec::new();
    for span in spans {
        let get = |k: &str| span.get(k).cloned().unwrap_or(Value::Null);
        let service = get("service_name").as_str().unwrap_or("").to_string();
        let process = json!({
            "serviceName": service,
            "tags": string_tags(span.get("resource_attributes")),
        });
        let process_id = match processes.iter().position(|(_, p)| *p == process) {
            Some(i) => format!("p{}", i + 1),
            None => {
                processes.push((format!("p{}", processes.len() + 1), process));
                format!("p{}", processes.len())
            }
        };
        let mut tags = string_tags(span.get("attributes"));
        if let Some(kind) = get("kind").as_str() {
            tags.push(tag("span.kind", json!(kind)));
        }
        match get("status_code").as_str() {
            Some("error") => {
                tags.push(tag("error", json!(true)));
                tags.push(tag("otel.status_code", json!("ERROR")));
            }
            Some("ok") => tags.push(tag("otel.status_code", json!("OK"))),
            _ => {}
        }
        if let Some(message) = get("status_message").as_str() {
            tags.push(tag("otel.status_description", json!(message)));
        }
        for (column, name, kind) in GENAI_TAGS {
            let value = get(column);
            if value.is_null() {
                continue;
            }
            let value = match kind {
                TagType::Int => value.as_i64().map(|v| json!(v)).unwrap_or(value),
                TagType::Float => value.as_f64().map(|v| json!(v)).unwrap_or(value),
                TagType::String => value,
            };
            tags.push(tag(name, value));
        }
        if let Some(reasons) = get("finish_reasons").as_str().filter(|r| !r.is_empty()) {
            tags.push(tag("gen_ai.response.finish_reasons", json!(reasons)));
        }
        let logs: Vec<Value> = get("events")
            .as_str()
            .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|event| {
                let mut fields = vec![tag("event", event["name"].clone())];
                if let Some(attributes) = event["attributes"].as_object() {
                    for (k, v) in attributes {
                        let v = match v {
                            Value::String(_) | Value::Bool(_) | Value::Number(_) => v.clone(),
                            other => json!(other.to_string()),
                        };
                        fields.push(tag(k, v));
                    }
                }
                json!({
                    "timestamp": event["time_unix_nano"].as_u64().unwrap_or(0) / 1000,
                    "fields": fields,
                })
            })
            .collect();
        let mut references = Vec::new();
        if let Some(parent) = get("parent_span_id").as_str().filter(|p| !p.is_empty()) {
            references.push(json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}));
        }
        for link in get("links")
            .as_str()
            .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
            .unwrap_or_default()
        {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": link["trace_id"],
                "spanID": link["span_id"],
            }));
        }
        out.push(json!({
            "traceID": trace_id,
            "spanID": get("span_id"),
            "operationName": get("name"),
            "references": references,
            "startTime": get("start_us"),
            "duration": get("duration_us"),
            "tags": tags,
            "logs": logs,
            "processID": process_id,
            "warnings": null,
            "flags": get("flags"),
        }));
    }
    let processes: Map<String, Value> = processes.into_iter().collect();
    json!({"traceID": trace_id, "spans": out, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(duration_ns("150ms"), Ok(150_000_000));
        assert_eq!(duration_ns("20us"), Ok(20_000));
        assert_eq!(duration_ns("2m"), Ok(120_000_000_000));
        assert!(duration_ns("fast").is_err());
        assert!(duration_ns("10").unwrap_err().contains("unit"));
        assert!(duration_ns("3d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn searched_tags_become_column_conditions_and_quotes_stay_literal() {
        assert_eq!(
            tag_condition("gen_ai.request.model", "gpt-4o"),
            "request_model = 'gpt-4o'"
        );
        assert_eq!(
            tag_condition("gen_ai.usage.input_tokens", "12"),
            "input_tokens = 12"
        );
        assert_eq!(tag_condition("error", "true"), "status_code = 'error'");
        assert_eq!(
            tag_condition("user.id", "o'brien"),
            "(attributes['user.id'] = 'o''brien' OR resource_attributes['user.id'] = 'o''brien')"
        );
        assert_eq!(tag_condition("gen_ai.usage.input_tokens", "x"), "FALSE");
    }
}
