//! The query port's HTTP API: `POST /api/v1/sql`, `/healthz`, `/readyz`, `/metrics`, and
//! `GET /api/v1/status` (what other parts of the process report, such as the analyzer's health).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::json::WriterBuilder;
use arrow::json::writer::JsonArray;
use arrow::record_batch::RecordBatch;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{QueryEngine, QueryError};
use crate::storage::Store;
use crate::telemetry::{Telemetry, add};

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What the query port's handlers share.
#[derive(Clone)]
pub struct QueryHttpState {
    pub engine: QueryEngine,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// Set once every listener is bound and recovery is done.
    pub ready: Arc<AtomicBool>,
    /// Where the query port listens: on loopback, only local host names are answered.
    pub listen: SocketAddr,
    /// Query tokens (`/healthz` and `/readyz` stay open, for probes).
    pub auth: crate::auth::Auth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// The router of the query port.
pub fn router(state: QueryHttpState) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .merge(super::jaeger::routes())
        .merge(super::promql::api::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Refuses requests without a query token, when tokens are configured. Health probes pass.
async fn check_token(
    State(state): State<QueryHttpState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match state.auth.query(authorization) {
        Ok(()) => next.run(request).await,
        Err(e) => unauthorized(&e),
    }
}

/// 401 with the challenge a client needs to retry with a token.
pub fn unauthorized(error: &crate::auth::AuthError) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({ "error": error.to_string() })),
    )
        .into_response()
}

/// Refuses requests that name a host this collector does not answer to: a web page the user
/// visits can send requests to a collector on their machine, and DNS rebinding makes its own
/// host name resolve to 127.0.0.1; the `Host` header still carries that name.
async fn check_host(
    State(state): State<QueryHttpState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host
        && !host_allowed(&host, state.listen, &state.engine.limits().allowed_hosts)
    {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "this collector does not answer to host {host:?}; reach it by IP address or localhost, or add the name to query.allowed_hosts"
            ),
        );
    }
    next.run(request).await
}

/// Whether a `Host` header value may reach the query port (see `query.allowed_hosts`).
fn host_allowed(host: &str, listen: SocketAddr, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.');
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
    {
        return true;
    }
    // An address cannot be rebound to another server, and localhost is this machine.
    if name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
    {
        return true;
    }
    !listen.ip().is_loopback() && allowed.is_empty()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn readyz(State(state): State<QueryHttpState>) -> Response {
    if state.telemetry.disk_full.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "disk full: the data directory {} has no space left; requests are refused until there is\n",
                state.store.config().data_dir.display()
            ),
        )
            .into_response();
    }
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn status(State(state): State<QueryHttpState>) -> Response {
    axum::Json(state.telemetry.status()).into_response()
}

async fn metrics(State(state): State<QueryHttpState>) -> Response {
    let memory = state.store.memory();
    let gauges = vec![
        (
            "vigil_buffer_used_bytes",
            "Bytes held by buffered rows and by requests waiting for the WAL.",
            memory.used() as f64,
        ),
        (
            "vigil_buffer_budget_bytes",
            "What buffered rows may hold: half of storage.memory_limit_bytes.",
            memory.limit() as f64,
        ),
    ];
    let stats = state.store.stats();
    let mut body = state.telemetry.render(&gauges);
    // One family at a time (HELP, TYPE, then every table's sample): the text format wants a
    // family's samples together.
    let families = [
        ("vigil_buffered_rows", "Rows in memory not yet in Parquet."),
        (
            "vigil_buffered_bytes",
            "Bytes in memory not yet in Parquet.",
        ),
        ("vigil_parquet_files", "Committed Parquet files."),
        ("vigil_parquet_bytes", "Bytes of committed Parquet files."),
    ];
    for (family, (name, help)) in families.iter().enumerate() {
        body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (table, rows, bytes, files, disk) in &stats {
            let value = [*rows as u64, *bytes, *files as u64, *disk][family];
            body.push_str(&format!("{name}{{table=\"{}\"}} {value}\n", table.name()));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn sql(State(state): State<QueryHttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    // Browsers send text/plain and form bodies across origins without asking first;
    // application/json they do not, so requiring it keeps web pages out.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        add(&state.telemetry.query_errors, 1);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "POST /api/v1/sql takes Content-Type: application/json with a body like {{\"sql\": \"SELECT 1\"}}; got {content_type:?}"
            ),
        );
    }
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            add(&state.telemetry.query_errors, 1);
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body must be JSON like {{\"sql\": \"SELECT 1\"}}: {e}"),
            );
        }
    };
    let (schema, batches) = match state.engine.query(&request.sql).await {
        Ok(result) => result,
        Err(e) => {
            add(&state.telemetry.query_errors, 1);
            let status = match e {
                QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
                QueryError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
                QueryError::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
                QueryError::Busy(_) => {
                    let mut response = error(StatusCode::TOO_MANY_REQUESTS, e.to_string());
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    return response;
                }
            };
            return error(status, e.to_string());
        }
    };
    add(&state.telemetry.queries, 1);
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let result = if wants_arrow {
        arrow_body(&schema, &batches)
    } else {
        json_body(&schema, &batches, started)
    };
    match result {
        Ok(response) => response,
        Err(e) => {
            add(&state.telemetry.query_errors, 1);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not encode the result: {e}"),
            )
        }
    }
}

fn arrow_body(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Response, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], out).into_response())
}

fn json_body(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    started: Instant,
) -> Result<Response, arrow::error::ArrowError> {
    let mut rows = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut rows);
        for b in batches {
            writer.write(b)?;
        }
        writer.finish()?;
    }
    if rows.is_empty() {
        rows.extend_from_slice(b"[]");
    }
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let row_count: usize = batches.iter().map(|b| b.num_rows()).sum();
    // Splice the already-encoded rows in rather than re-parsing them.
    let mut body = Vec::with_capacity(rows.len() + 256);
    body.extend_from_slice(b"{\"columns\":");
    body.extend_from_slice(
        serde_json::to_string(&columns)
            .unwrap_or_default()
            .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            ",\"row_count\":{row_count},\"elapsed_ms\":{:.3},\"rows\":",
            started.elapsed().as_secs_f64() * 1e3
        )
        .as_bytes(),
    );
    body.extend_from_slice(&rows);
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_names_reach_a_loopback_port_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:9470".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:9470".parse().unwrap();
        for host in [
            "127.0.0.1:9470",
            "localhost:9470",
            "LOCALHOST",
            "[::1]:9470",
            "app.localhost",
            "10.1.2.3:9470",
        ] {
            assert!(host_allowed(host, loopback, &[]), "{host}");
        }
        for host in ["evil.test", "evil.test:9470", "localhost.evil.test"] {
            assert!(!host_allowed(host, loopback, &[]), "{host}");
        }
        let named = vec!["vigil.internal".to_string()];
        assert!(host_allowed("vigil.internal:9470", loopback, &named));
        assert!(host_allowed("evil.test", loopback, &["*".to_string()]));
        // On a public address a name is expected (Grafana reaches http://vigil:9470)…
        assert!(host_allowed("vigil:9470", everywhere, &[]));
        // …unless the names are listed.
        assert!(!host_allowed("evil.test", everywhere, &named));
        assert!(host_allowed("VIGIL.internal.", everywhere, &named));
    }
}
