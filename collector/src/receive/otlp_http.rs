//! OTLP/HTTP: `/v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON, optionally gzip-compressed.
//!
//! Answers follow the OTLP/HTTP spec: 200 with the export response (partial success included) in
//! the request's encoding; 400 for a body that cannot be decoded; 413 for an oversize body; 415
//! for another content type; 429 with `Retry-After` when memory is full.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vigil_schemas::Table;

use super::{Accepted, Ingest, IngestError};
use crate::auth::{Auth, Sender, mark_sender};
use crate::telemetry::add;

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A refusal, with the status code the OTLP/HTTP spec gives it.
struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The body is a `google.rpc.Status`, in the request's encoding when it is known.
    fn into_response(self, encoding: Option<Encoding>) -> Response {
        let code = match self.status {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            StatusCode::TOO_MANY_REQUESTS => 8,
            _ => 14,
        };
        let mut response = match encoding {
            Some(Encoding::Protobuf) => {
                let status = tonic_types::pb::Status {
                    code,
                    message: self.message,
                    details: vec![],
                };
                (
                    self.status,
                    [(header::CONTENT_TYPE, Encoding::Protobuf.content_type())],
                    status.encode_to_vec(),
                )
                    .into_response()
            }
            _ => (
                self.status,
                axum::Json(serde_json::json!({ "code": code, "message": self.message })),
            )
                .into_response(),
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn media_type(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {:?}; OTLP/HTTP takes application/x-protobuf or application/json",
                if raw.is_empty() { "(none)" } else { raw }
            ),
        )),
    }
}

fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            // Read one byte past the limit so that an oversize (or a zip bomb) is detected, not truncated.
            let mut decoder = flate2::read::GzDecoder::new(body.as_ref()).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("body is not valid gzip: {e}"),
                )
            })?;
            if out.len() > limit {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds the limit of {limit} bytes"),
                ));
            }
            Ok(Bytes::from(out))
        }
        other => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {other:?}; OTLP/HTTP takes gzip or none"),
        )),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, Refusal> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("body is not a valid OTLP protobuf message: {e}; expected Content-Type application/x-protobuf with a binary Export*ServiceRequest, or application/json"),
            )
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("body is not valid OTLP JSON: {e} (OTLP JSON uses hex trace and span ids, camelCase field names, integer enums)"),
            )
        }),
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, response: &T) -> Response {
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn refusal_from(e: IngestError) -> Refusal {
    match e {
        IngestError::Overloaded {
            message,
            retry_after,
        } => Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            message,
            retry_after: Some(retry_after.as_secs().max(1)),
        },
        IngestError::TooLarge(message) => Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, message),
        IngestError::Storage(message) => Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

/// Reads and decodes a request; on a refusal, counts it against the signal.
async fn prepare<T: Message + Default + DeserializeOwned>(
    ingest: &Ingest,
    table: Table,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Encoding, T), (Option<Encoding>, Refusal)> {
    let encoding = media_type(headers).map_err(|r| (None, r))?;
    let limit = ingest.limits().max_request_bytes;
    let result = match axum::body::to_bytes(body, limit).await {
        Ok(body) => decompress(headers, body, limit).and_then(|body| decode::<T>(encoding, &body)),
        Err(e) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body could not be read within the limit of {limit} bytes: {e}"),
        )),
    };
    result.map(|request| (encoding, request)).map_err(|r| {
        add(&ingest.telemetry().signal(table).bad_requests, 1);
        (Some(encoding), r)
    })
}

fn count_refusal(
    ingest: &Ingest,
    table: Table,
    encoding: Option<Encoding>,
    refusal: Refusal,
) -> Response {
    if encoding.is_none() {
        add(&ingest.telemetry().signal(table).bad_requests, 1);
    }
    tracing::debug!(signal = %table, status = %refusal.status, message = %refusal.message, "OTLP/HTTP request refused");
    refusal.into_response(encoding)
}

async fn traces(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let (encoding, request) =
        match prepare::<ExportTraceServiceRequest>(&ingest, Table::Spans, &headers, body).await {
            Ok(ok) => ok,
            Err((encoding, refusal)) => {
                return count_refusal(&ingest, Table::Spans, encoding, refusal);
            }
        };
    match ingest.traces(&request).await {
        Ok(accepted) => encode(encoding, &trace_response(&accepted)),
        Err(e) => refusal_from(e).into_response(Some(encoding)),
    }
}

async fn metrics(
    State(ingest): State<Arc<Ingest>>,
    sender: Option<axum::Extension<Sender>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (encoding, mut request) =
        match prepare::<ExportMetricsServiceRequest>(&ingest, Table::Metrics, &headers, body).await
        {
            Ok(ok) => ok,
            Err((encoding, refusal)) => {
                return count_refusal(&ingest, Table::Metrics, encoding, refusal);
            }
        };
    mark_sender(&mut request, sender.map_or(Sender::Anyone, |s| s.0));
    match ingest.metrics(&request).await {
        Ok(accepted) => encode(
            encoding,
            &ExportMetricsServiceResponse {
                partial_success: (accepted.rejected > 0).then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: accepted.rejected as i64,
                    error_message: accepted.message.clone().unwrap_or_default(),
                }),
            },
        ),
        Err(e) => refusal_from(e).into_response(Some(encoding)),
    }
}

async fn logs(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let (encoding, request) =
        match prepare::<ExportLogsServiceRequest>(&ingest, Table::Logs, &headers, body).await {
            Ok(ok) => ok,
            Err((encoding, refusal)) => {
                return count_refusal(&ingest, Table::Logs, encoding, refusal);
            }
        };
    match ingest.logs(&request).await {
        Ok(accepted) => encode(
            encoding,
            &ExportLogsServiceResponse {
                partial_success: (accepted.rejected > 0).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: accepted.rejected as i64,
                    error_message: accepted.message.clone().unwrap_or_default(),
                }),
            },
        ),
        Err(e) => refusal_from(e).into_response(Some(encoding)),
    }
}

fn trace_response(accepted: &Accepted) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (accepted.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: accepted.rejected as i64,
            error_message: accepted.message.clone().unwrap_or_default(),
        }),
    }
}

/// The OTLP/HTTP router.
pub fn router(ingest: Arc<Ingest>, auth: Auth) -> Router {
    let decode_slots = ingest.decode_slots();
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .route("/api/v1/write", post(super::remote_write::write))
        // The handlers enforce the limit themselves, to answer with an OTLP status body.
        .layer(DefaultBodyLimit::disable())
        // Bounds the bodies read at once (as many maximal bodies as the memory limit holds);
        // further requests wait, unread.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(decode_slots))
        // Outermost: a request without a valid token is refused before it takes a slot or
        // has its body read.
        .layer(axum::middleware::from_fn_with_state(auth, check_token))
        .with_state(ingest)
}

/// Refuses requests without an ingest token (when tokens are configured), and tells the
/// handlers who sent the rest.
async fn check_token(
    State(auth): State<Auth>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match auth.ingest(authorization) {
        Ok(sender) => {
            request.extensions_mut().insert(sender);
            next.run(request).await
        }
        Err(e) => crate::query::sql_http::unauthorized(&e),
    }
}
