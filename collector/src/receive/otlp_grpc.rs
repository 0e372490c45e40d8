//! OTLP/gRPC: the trace, metrics and logs services of opentelemetry-proto's generated servers.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::codegen::http;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vigil_schemas::Table;

use super::{Accepted, Ingest, IngestError};
use crate::auth::{Auth, Sender, mark_sender};
use crate::telemetry::add;
use tonic::service::interceptor::InterceptedService;

/// The gRPC face of the ingest path.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
}

fn to_status(e: IngestError) -> Status {
    match e {
        // RetryInfo tells OTLP exporters that the refusal is temporary and when to try again.
        IngestError::Overloaded {
            message,
            retry_after,
        } => Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
        // Without RetryInfo, RESOURCE_EXHAUSTED tells exporters not to retry.
        IngestError::TooLarge(message) => Status::resource_exhausted(message),
        IngestError::Storage(message) => Status::unavailable(message),
    }
}

fn partial<T>(accepted: &Accepted, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (accepted.rejected > 0).then(|| {
        make(
            accepted.rejected as i64,
            accepted.message.clone().unwrap_or_default(),
        )
    })
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let accepted = self
            .ingest
            .traces(request.get_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(&accepted, |rejected_spans, error_message| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let sender = request
            .extensions()
            .get::<Sender>()
            .copied()
            .unwrap_or(Sender::Anyone);
        let mut request = request.into_inner();
        mark_sender(&mut request, sender);
        let accepted = self.ingest.metrics(&request).await.map_err(to_status)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&accepted, |rejected_data_points, error_message| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let accepted = self
            .ingest
            .logs(request.get_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(&accepted, |rejected_log_records, error_message| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

/// Bounds the requests decoded and handled at once across all connections. A request waits a
/// moment for a slot and is then pushed back (RESOURCE_EXHAUSTED with RetryInfo, as when memory
/// is full), its body unread. It must not wait longer: the bodies of waiting requests fill the
/// connection's HTTP/2 flow-control window, and the requests holding slots could then not read
/// the rest of theirs. (tower's `GlobalConcurrencyLimit` waits in `poll_ready` and stalled
/// ingest that way.)
#[derive(Clone)]
struct DecodeSlots<S> {
    inner: S,
    slots: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    ingest: Arc<Ingest>,
}

/// How long a request may wait for a decode slot before it is pushed back.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

impl<S, B> tower::Service<http::Request<B>> for DecodeSlots<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let slots = self.slots.clone();
        let capacity = self.capacity;
        let ingest = self.ingest.clone();
        let path = request.uri().path().to_string();
        let future = self.inner.call(request);
        Box::pin(async move {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => tokio::time::timeout(SLOT_WAIT, slots.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            let Some(_slot) = slot else {
                let table = if path.contains("MetricsService") {
                    Table::Metrics
                } else if path.contains("LogsService") {
                    Table::Logs
                } else {
                    Table::Spans
                };
                add(&ingest.telemetry().signal(table).throttled_requests, 1);
                let status = to_status(IngestError::Overloaded {
                    message: format!(
                        "{capacity} requests are being decoded across all connections, as many as the memory limit allows; retry shortly"
                    ),
                    retry_after: std::time::Duration::from_secs(
                        ingest.limits().retry_after_secs.max(1),
                    ),
                });
                return Ok(status.into_http());
            };
            future.await
        })
    }
}

#[derive(Clone)]
struct DecodeSlotsLayer {
    slots: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    ingest: Arc<Ingest>,
}

impl<S> tower::Layer<S> for DecodeSlotsLayer {
    type Service = DecodeSlots<S>;

    fn layer(&self, inner: S) -> DecodeSlots<S> {
        DecodeSlots {
            inner,
            slots: self.slots.clone(),
            capacity: self.capacity,
            ingest: self.ingest.clone(),
        }
    }
}

/// Requests handled at once per connection; further requests wait, undecoded.
const MAX_IN_FLIGHT: usize = 32;

/// Serves the three OTLP services on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    ingest: Arc<Ingest>,
    auth: Auth,
    tls: Option<tonic::transport::ServerTlsConfig>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = ingest.limits().max_request_bytes;
    let decode_slots = ingest.decode_slots();
    let slots_ingest = ingest.clone();
    let service = OtlpGrpc { ingest };
    let traces = TraceServiceServer::new(service.clone())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let metrics = MetricsServiceServer::new(service.clone())
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let logs = LogsServiceServer::new(service)
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    // The token is checked before the body is decoded; the sender rides on the request.
    let check = move |mut request: Request<()>| -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let sender = auth
            .ingest(authorization)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(sender);
        Ok(request)
    };
    let traces = InterceptedService::new(traces, check.clone());
    let metrics = InterceptedService::new(metrics, check.clone());
    let logs = InterceptedService::new(logs, check);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        // Bounds the requests decoded at once per connection, whatever the client's concurrency.
        .concurrency_limit_per_connection(MAX_IN_FLIGHT)
        // …and across connections, so that a thousand clients cannot decode a thousand bodies.
        .layer(DecodeSlotsLayer {
            slots: Arc::new(tokio::sync::Semaphore::new(decode_slots)),
            capacity: decode_slots,
            ingest: slots_ingest,
        })
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs)
        .serve_with_incoming_shutdown(crate::server::incoming(listener), shutdown)
        .await
}
