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
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Accepted, Ingest, IngestError};

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
        let accepted = self
            .ingest
            .metrics(request.get_ref())
            .await
            .map_err(to_status)?;
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

/// Requests handled at once per connection; further requests wait, undecoded.
const MAX_IN_FLIGHT: usize = 32;

/// Serves the three OTLP services on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = ingest.limits().max_request_bytes;
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
    tonic::transport::Server::builder()
        // Bounds the requests decoded at once per connection, whatever the client's concurrency.
        .concurrency_limit_per_connection(MAX_IN_FLIGHT)
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
