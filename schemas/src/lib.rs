//! vigil-schemas: the Arrow schemas of vigil's tables, GenAI semantic-convention normalization,
//! and the conversion of OTLP export requests into Arrow record batches.
//! Depends on arrow and opentelemetry-proto only; it must never do I/O.
//!
//! ```
//! use vigil_schemas::{Table, genai::Normalizer, convert::spans_to_batch};
//! use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
//!
//! let converted = spans_to_batch(&ExportTraceServiceRequest::default(), &Normalizer::default());
//! assert_eq!(converted.batch.schema(), Table::Spans.schema());
//! assert_eq!(converted.accepted(), 0);
//! ```

pub mod attrs;
pub mod convert;
pub mod genai;
pub mod gpu_rollup;
pub mod pricing;
pub mod redact;
pub mod rollup;
pub mod tables;

#[cfg(test)]
pub(crate) mod test_util;

pub use tables::{Table, alert_col, col, log_col, metric_col, span_col};
