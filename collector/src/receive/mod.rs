//! Where signals enter: OTLP/gRPC and OTLP/HTTP receivers over one ingest path
//! (normalize → WAL → buffers), which answers with OTLP partial success or pushback.

pub mod otlp_grpc;
pub mod otlp_http;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;
use vigil_schemas::convert::{Converted, logs_to_batch, metrics_to_batch, spans_to_batch};
use vigil_schemas::genai::Normalizer;

use crate::storage::{Store, StoreError};
use crate::telemetry::{Telemetry, add};

/// Limits on what one request may carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverLimits {
    /// Largest request body, after decompression, in bytes.
    pub max_request_bytes: usize,
    /// How long clients are told to wait when memory is full.
    pub retry_after_secs: u64,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            max_request_bytes: 32 << 20,
            retry_after_secs: 1,
        }
    }
}

/// A request that was taken; `rejected` items were malformed and are reported back.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: u64,
    pub message: Option<String>,
}

/// A request that was not taken at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Memory is full: the client should retry after `retry_after`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    /// The request can never fit in memory; retrying it will not help.
    #[error("{0}")]
    TooLarge(String),
    /// Storage failed; nothing of the request was acknowledged.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// The ingest path shared by every receiver.
pub struct Ingest {
    store: Arc<Store>,
    normalizer: Normalizer,
    telemetry: Arc<Telemetry>,
    limits: ReceiverLimits,
}

impl Ingest {
    /// An ingest path writing to `store`.
    pub fn new(
        store: Arc<Store>,
        normalizer: Normalizer,
        telemetry: Arc<Telemetry>,
        limits: ReceiverLimits,
    ) -> Ingest {
        Ingest {
            store,
            normalizer,
            telemetry,
            limits,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> &ReceiverLimits {
        &self.limits
    }

    /// The counters.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Stores the spans of a trace export request.
    pub async fn traces(
        &self,
        request: &ExportTraceServiceRequest,
    ) -> Result<Accepted, IngestError> {
        self.check_memory(Table::Spans)?;
        let converted = spans_to_batch(request, &self.normalizer);
        add(&self.telemetry.unpriced_spans, converted.unpriced);
        self.store_converted(Table::Spans, converted).await
    }

    /// Stores the data points of a metrics export request.
    pub async fn metrics(
        &self,
        request: &ExportMetricsServiceRequest,
    ) -> Result<Accepted, IngestError> {
        self.check_memory(Table::Metrics)?;
        self.store_converted(Table::Metrics, metrics_to_batch(request))
            .await
    }

    /// Stores the records of a logs export request.
    pub async fn logs(&self, request: &ExportLogsServiceRequest) -> Result<Accepted, IngestError> {
        self.check_memory(Table::Logs)?;
        self.store_converted(Table::Logs, logs_to_batch(request))
            .await
    }

    /// Refuses early, before decoding work is spent, when memory is already full.
    fn check_memory(&self, table: Table) -> Result<(), IngestError> {
        let memory = self.store.memory();
        if memory.used() >= memory.limit() {
            add(&self.telemetry.signal(table).throttled_requests, 1);
            return Err(self.overloaded(format!(
                "memory limit reached ({} of {} bytes buffered); retry after the next flush",
                memory.used(),
                memory.limit()
            )));
        }
        Ok(())
    }

    fn overloaded(&self, message: String) -> IngestError {
        IngestError::Overloaded {
            message,
            retry_after: Duration::from_secs(self.limits.retry_after_secs),
        }
    }

    async fn store_converted(
        &self,
        table: Table,
        converted: Converted,
    ) -> Result<Accepted, IngestError> {
        let counters = self.telemetry.signal(table);
        let accepted = converted.accepted();
        match self.store.append(table, converted.batch).await {
            Ok(()) => {
                add(&counters.requests, 1);
                add(&counters.accepted, accepted);
                add(&counters.rejected, converted.rejected);
                Ok(Accepted {
                    rejected: converted.rejected,
                    message: converted.first_error,
                })
            }
            Err(StoreError::Overloaded { used, limit }) => {
                add(&counters.throttled_requests, 1);
                Err(self.overloaded(format!(
                    "memory limit reached ({used} of {limit} bytes buffered); retry after the next flush"
                )))
            }
            Err(e @ StoreError::TooLarge { .. }) => {
                add(&counters.bad_requests, 1);
                Err(IngestError::TooLarge(e.to_string()))
            }
            Err(e) => Err(IngestError::Storage(e.to_string())),
        }
    }
}
