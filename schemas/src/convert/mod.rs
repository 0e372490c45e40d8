//! OTLP export requests → Arrow record batches, one per table.
//!
//! A request's bad items (a span with a malformed id, a timestamp past 2262) are rejected one by
//! one and counted; the good items around them are kept, as OTLP's partial success asks.

mod cost;
mod logs;
mod metrics;
mod traces;

pub use cost::{RequestCost, logs_request_cost, metrics_request_cost, trace_request_cost};
pub use logs::logs_to_batch;
pub use metrics::metrics_to_batch;
pub use traces::spans_to_batch;

use arrow::array::{MapBuilder, StringBuilder};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use std::borrow::Cow;

use crate::attrs::value_to_cow;

/// The outcome of converting one export request.
#[derive(Debug)]
pub struct Converted {
    /// The accepted items, in the table's schema.
    pub batch: RecordBatch,
    /// Items rejected as malformed.
    pub rejected: u64,
    /// What was wrong with the first rejected item, for the partial-success message.
    pub first_error: Option<String>,
    /// Spans whose model has no price (their `cost_usd` is null).
    pub unpriced: u64,
}

impl Converted {
    /// Items accepted.
    pub fn accepted(&self) -> u64 {
        self.batch.num_rows() as u64
    }
}

/// Collects rejections while a request is converted.
#[derive(Default)]
struct Rejections {
    count: u64,
    first: Option<String>,
}

impl Rejections {
    fn reject(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// A `u64` OTLP timestamp as Arrow's `i64` nanoseconds; `None` past the year 2262.
fn to_ns(t: u64) -> Option<i64> {
    i64::try_from(t).ok()
}

/// Appends attributes as one map entry; values that are unset are skipped.
fn append_attributes(
    builder: &mut MapBuilder<StringBuilder, StringBuilder>,
    attributes: &[KeyValue],
) {
    for kv in attributes {
        if let Some(v) = kv.value.as_ref().and_then(value_to_cow) {
            builder.keys().append_value(&kv.key);
            builder.values().append_value(v);
        }
    }
    // The map builder only fails when keys and values differ in length, which the loop prevents.
    let _ = builder.append(true);
}

/// Appends (key, value) pairs as one map entry.
fn append_pairs(
    builder: &mut MapBuilder<StringBuilder, StringBuilder>,
    pairs: &[(&str, Cow<'_, str>)],
) {
    for (k, v) in pairs {
        builder.keys().append_value(k);
        builder.values().append_value(v);
    }
    let _ = builder.append(true);
}

/// A trace or span id as lowercase hex, checked for length and for the all-zero invalid id.
fn hex_id(bytes: &[u8], len: usize, what: &str) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!("{what} must be {len} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!(
            "{what} is all zeros, which OTLP defines as invalid"
        ));
    }
    Ok(hex::encode(bytes))
}

fn opt_str(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}
