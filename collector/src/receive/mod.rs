//! Where signals enter: OTLP/gRPC, OTLP/HTTP and Prometheus remote-write receivers over one
//! ingest path (normalize → WAL → buffers), which answers with partial success or pushback.

pub mod otlp_grpc;
pub mod otlp_http;
pub mod remote_write;
pub mod scrape;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;
use vigil_schemas::convert::{
    Converted, GaugeResource, RequestCost, gauge_series_cost, gauge_series_to_batch,
    logs_request_cost, logs_to_batch, metrics_request_cost, metrics_to_batch, spans_to_batch,
    trace_request_cost,
};
use vigil_schemas::genai::Normalizer;

use crate::storage::{MemoryBudget, Store, StoreError};
use crate::telemetry::{Telemetry, add};

/// Limits on what one request may carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverLimits {
    /// Largest request body, after decompression, in bytes.
    pub max_request_bytes: usize,
    /// How long clients are told to wait when memory is full.
    pub retry_after_secs: u64,
    /// Items timed more than this far ahead of the collector's clock are refused (a skewed or
    /// hostile sender would otherwise fill partitions years ahead). Items older than retention
    /// keeps (`storage.retention.max_age_hours`; before 2000 when data is kept forever) are
    /// refused too. Both are counted and named in the partial-success message.
    pub max_future_secs: u64,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            max_request_bytes: 32 << 20,
            retry_after_secs: 1,
            max_future_secs: 3600,
        }
    }
}

/// 2000-01-01T00:00:00Z: the oldest time kept when retention keeps data forever.
const OLDEST_WHEN_KEPT_FOREVER_NS: i64 = 946_684_800_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;

/// The `time` a stored item may have, as of `now_ns`: `[oldest, newest]`.
fn accepted_times(limits: &ReceiverLimits, max_age_hours: u64, now_ns: i64) -> (i64, i64) {
    let oldest = if max_age_hours == 0 {
        OLDEST_WHEN_KEPT_FOREVER_NS
    } else {
        // Retention deletes an hour once it ended max_age_hours ago; keep what it would keep.
        let cutoff = now_ns.saturating_sub((max_age_hours as i64).saturating_mul(HOUR_NS));
        cutoff.div_euclid(HOUR_NS) * HOUR_NS
    };
    let ahead = (limits.max_future_secs as i64).saturating_mul(1_000_000_000);
    (oldest, now_ns.saturating_add(ahead))
}

/// Drops the rows whose time is outside `[oldest, newest]`; returns the kept rows, how many were
/// dropped, and what to tell the sender about the first.
fn keep_times(
    batch: arrow::record_batch::RecordBatch,
    (oldest, newest): (i64, i64),
) -> (arrow::record_batch::RecordBatch, u64, Option<String>) {
    use arrow::array::{Array, BooleanArray, TimestampNanosecondArray};
    let Some(time) = batch
        .column_by_name(vigil_schemas::col::TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return (batch, 0, None);
    };
    let keep: BooleanArray = time
        .iter()
        .map(|t| Some(t.is_some_and(|t| (oldest..=newest).contains(&t))))
        .collect();
    let dropped = (keep.len() - keep.true_count()) as u64;
    if dropped == 0 {
        return (batch, 0, None);
    }
    let first = (0..time.len()).find(|&i| !keep.value(i)).map(|i| {
        let t = time.value(i);
        let at = chrono::DateTime::from_timestamp_nanos(t).to_rfc3339();
        if t > newest {
            format!("{dropped} item(s) timed too far in the future (first: {at}); the collector takes up to limits.max_future_secs ahead of its clock")
        } else {
            format!("{dropped} item(s) older than what is kept (first: {at}); storage.retention.max_age_hours would delete them at once")
        }
    });
    match arrow::compute::filter_record_batch(&batch, &keep) {
        Ok(kept) => (kept, dropped, first),
        // Filtering a valid batch by a mask of its own length cannot fail; keep everything if it does.
        Err(_) => (batch, 0, None),
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

/// Bytes held in a budget until dropped.
struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
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

    /// Requests that may be read and decoded at once, across all connections of a receiver:
    /// as many maximal requests as fit in the conversions' half of the memory limit (at least 4,
    /// so that group commit still has company).
    /// The rest wait, unread, so that many connections cannot multiply the decode memory.
    pub fn decode_slots(&self) -> usize {
        let per_request = self.limits.max_request_bytes.max(1) as u64;
        (self.store.conversions().limit() / per_request).clamp(4, 64) as usize
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
        let _converting = self.reserve_conversion(Table::Spans, trace_request_cost(request))?;
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
        let _converting = self.reserve_conversion(Table::Metrics, metrics_request_cost(request))?;
        self.store_converted(Table::Metrics, metrics_to_batch(request))
            .await
    }

    /// Stores gauge series that came without OTLP around them (remote-write), priced before
    /// their rows are built, as a request is.
    pub async fn gauge_series(
        &self,
        resources: &[GaugeResource<'_>],
    ) -> Result<Accepted, IngestError> {
        self.check_memory(Table::Metrics)?;
        let _converting = self.reserve_conversion(Table::Metrics, gauge_series_cost(resources))?;
        self.store_converted(Table::Metrics, gauge_series_to_batch(resources))
            .await
    }

    /// Stores the records of a logs export request.
    pub async fn logs(&self, request: &ExportLogsServiceRequest) -> Result<Accepted, IngestError> {
        self.check_memory(Table::Logs)?;
        let _converting = self.reserve_conversion(Table::Logs, logs_request_cost(request))?;
        self.store_converted(Table::Logs, logs_to_batch(request, &self.normalizer))
            .await
    }

    /// Prices a request's rows before any is built: one that could never be buffered is refused
    /// for good, one that does not fit beside the conversions in progress waits (pushback).
    /// The reservation lasts until the rows are in the store, whose own budget then holds them.
    fn reserve_conversion(
        &self,
        table: Table,
        cost: RequestCost,
    ) -> Result<Reservation<'_>, IngestError> {
        let buffers = self.store.memory().limit();
        let converting = self.store.conversions();
        // Twice, as the store counts a batch and its WAL copy.
        if cost.bytes.saturating_mul(2) > buffers.min(converting.limit()) {
            add(&self.telemetry.signal(table).bad_requests, 1);
            return Err(IngestError::TooLarge(format!(
                "{}, more than this collector holds for one request ({} bytes); send smaller batches or shorter attribute values, or raise storage.memory_limit_bytes",
                cost.describe(),
                buffers.min(converting.limit()) / 2
            )));
        }
        if converting.try_reserve(cost.bytes).is_err() {
            add(&self.telemetry.signal(table).throttled_requests, 1);
            return Err(self.overloaded(format!(
                "requests being converted hold {} of {} bytes; retry shortly",
                converting.used(),
                converting.limit()
            )));
        }
        Ok(Reservation {
            budget: converting,
            bytes: cost.bytes,
        })
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
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let window = accepted_times(
            &self.limits,
            self.store.config().retention.max_age_hours,
            now_ns,
        );
        let (batch, out_of_range, time_error) = keep_times(converted.batch, window);
        let rejected = converted.rejected + out_of_range;
        let message = match (converted.first_error, time_error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let accepted = batch.num_rows() as u64;
        match self.store.append(table, batch).await {
            Ok(()) => {
                add(&counters.requests, 1);
                add(&counters.accepted, accepted);
                add(&counters.rejected, rejected);
                add(&counters.out_of_range, out_of_range);
                Ok(Accepted { rejected, message })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn items_from_year_zero_or_far_ahead_are_refused_and_named() {
        let now = 1_780_000_000_000_000_000i64;
        let limits = ReceiverLimits::default();
        let (oldest, newest) = accepted_times(&limits, 24 * 7, now);
        assert_eq!(newest, now + 3_600_000_000_000);
        assert!(oldest <= now - 7 * 24 * HOUR_NS && oldest > now - 7 * 24 * HOUR_NS - HOUR_NS);
        assert_eq!(
            accepted_times(&limits, 0, now).0,
            OLDEST_WHEN_KEPT_FOREVER_NS
        );

        let schema = Arc::new(Schema::new(vec![Field::new(
            vigil_schemas::col::TIME,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )]));
        let year_2200 = 7_258_118_400_000_000_000i64;
        let times = TimestampNanosecondArray::from(vec![now, 0, year_2200, now - HOUR_NS])
            .with_timezone("UTC");
        let batch = RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap();
        let (kept, dropped, message) = keep_times(batch, (oldest, newest));
        assert_eq!((kept.num_rows(), dropped), (2, 2));
        let message = message.unwrap();
        assert!(
            message.contains("older than what is kept") && message.contains("1970"),
            "{message}"
        );

        let times = TimestampNanosecondArray::from(vec![year_2200]).with_timezone("UTC");
        let schema = kept.schema();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap();
        let (_, _, message) = keep_times(batch, (oldest, newest));
        assert!(message.unwrap().contains("max_future_secs"));
    }
}
