//! `llm_minutes`: the golden signals of LLM calls per minute, service, model and host, derived
//! from `spans` as they are stored, so that a dashboard over an hour of ten million calls reads
//! thousands of rows instead of millions.
//!
//! Distributions are kept as log-scale histograms: bucket `b` of a `*_buckets` map counts the
//! values in `[2^(b/8), 2^((b+1)/8))` (eight buckets per doubling), so a quantile read back from
//! them is within 4.5% of the exact one. Values below 2^-10 (zero included) count in bucket
//! [`MIN_BUCKET`]. Histograms of different rows merge by adding counts per bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Builder, Int64Array, Int64Builder, MapArray,
    MapBuilder, StringArray, StringBuilder, StringDictionaryBuilder, TimestampNanosecondArray,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::tables::{dict_type, timestamp_type};
use crate::{col, span_col};

/// Columns of `llm_minutes`.
pub mod minute_col {
    pub const HOST_NAME: &str = "host_name";
    pub const CALLS: &str = "calls";
    pub const ERRORS: &str = "errors";
    pub const FIRST_TIME: &str = "first_time";
    pub const DURATION_MS_BUCKETS: &str = "duration_ms_buckets";
    pub const TTFT_MS_BUCKETS: &str = "ttft_ms_buckets";
    pub const OUTPUT_TOKENS_BUCKETS: &str = "output_tokens_buckets";
    pub const FINISH_REASONS: &str = "finish_reasons";
    pub const ERROR_TYPES: &str = "error_types";
}

/// Buckets per doubling of the value.
pub const BUCKETS_PER_OCTAVE: i32 = 8;
/// The bucket of values below 2^-10, zero and negatives included.
pub const MIN_BUCKET: i32 = -10 * BUCKETS_PER_OCTAVE;

const MINUTE_NS: i64 = 60_000_000_000;

/// The bucket a value counts in.
pub fn bucket_of(value: f64) -> i32 {
    if value.is_nan() || value < 2f64.powi(-10) {
        return MIN_BUCKET;
    }
    // Values past 2^1000 are not durations or token counts; cap them rather than overflow.
    ((value.log2() * BUCKETS_PER_OCTAVE as f64).floor() as i32).min(1000 * BUCKETS_PER_OCTAVE)
}

/// The lower and upper bound of a bucket.
pub fn bucket_bounds(bucket: i32) -> (f64, f64) {
    let per = BUCKETS_PER_OCTAVE as f64;
    (
        2f64.powf(bucket as f64 / per),
        2f64.powf((bucket + 1) as f64 / per),
    )
}

/// The `q` quantile (0..=1) of a histogram, as the geometric middle of the bucket it falls in
/// (0 for [`MIN_BUCKET`]); `None` when the histogram is empty.
pub fn quantile(histogram: &BTreeMap<i32, u64>, q: f64) -> Option<f64> {
    let total: u64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based, as nearest-rank percentiles take it.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (&bucket, &count) in histogram {
        seen += count;
        if seen >= rank {
            if bucket == MIN_BUCKET {
                return Some(0.0);
            }
            let (lo, hi) = bucket_bounds(bucket);
            return Some((lo * hi).sqrt());
        }
    }
    None
}

fn bucket_map_builder() -> MapBuilder<Int32Builder, Int64Builder> {
    MapBuilder::new(None, Int32Builder::new(), Int64Builder::new())
}

fn count_map_builder() -> MapBuilder<StringBuilder, Int64Builder> {
    MapBuilder::new(None, StringBuilder::new(), Int64Builder::new())
}

/// `Map<Int32, Int64>`: bucket → count.
pub fn bucket_map_type() -> DataType {
    static TYPE: LazyLock<DataType> =
        LazyLock::new(|| bucket_map_builder().finish().data_type().clone());
    TYPE.clone()
}

/// `Map<Utf8, Int64>`: label → count.
pub fn count_map_type() -> DataType {
    static TYPE: LazyLock<DataType> =
        LazyLock::new(|| count_map_builder().finish().data_type().clone());
    TYPE.clone()
}

pub(crate) static LLM_MINUTES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use minute_col::*;
    let i = DataType::Int64;
    Arc::new(Schema::new(vec![
        Field::new(col::TIME, timestamp_type(), false),
        Field::new(col::SERVICE_NAME, dict_type(), false),
        Field::new(span_col::REQUEST_MODEL, dict_type(), false),
        Field::new(HOST_NAME, dict_type(), true),
        Field::new(CALLS, i.clone(), false),
        Field::new(ERRORS, i.clone(), false),
        Field::new(span_col::INPUT_TOKENS, i.clone(), false),
        Field::new(span_col::OUTPUT_TOKENS, i, false),
        Field::new(span_col::COST_USD, DataType::Float64, false),
        Field::new(FIRST_TIME, timestamp_type(), false),
        Field::new(DURATION_MS_BUCKETS, bucket_map_type(), false),
        Field::new(TTFT_MS_BUCKETS, bucket_map_type(), false),
        Field::new(OUTPUT_TOKENS_BUCKETS, bucket_map_type(), false),
        Field::new(FINISH_REASONS, count_map_type(), false),
        Field::new(ERROR_TYPES, count_map_type(), false),
    ]))
});

/// What a row of `llm_minutes` is for; borrowed from the batch's arrays while a batch is
/// rolled up, so that a call costs no allocation.
#[derive(Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Key<S> {
    minute: i64,
    service: S,
    model: S,
    host: Option<S>,
}

#[derive(Default)]
struct Minute {
    calls: i64,
    errors: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    first_time: i64,
    duration_ms: BTreeMap<i32, i64>,
    ttft_ms: BTreeMap<i32, i64>,
    output_tokens_hist: BTreeMap<i32, i64>,
    finish_reasons: BTreeMap<String, i64>,
    error_types: BTreeMap<String, i64>,
}

pub(crate) fn missing(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("batch has no usable `{name}` column"))
}

pub(crate) fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray, ArrowError> {
    let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    Ok(arrow::compute::cast(column, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

pub(crate) fn times<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a TimestampNanosecondArray, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| missing(name))
}

pub(crate) fn floats<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a Float64Array, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| missing(name))
}

fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| missing(name))
}

/// The `host.name` resource attribute of each row.
fn hosts(batch: &RecordBatch) -> Result<Vec<Option<&str>>, ArrowError> {
    let name = col::RESOURCE_ATTRIBUTES;
    let map = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<MapArray>())
        .ok_or_else(|| missing(name))?;
    let keys = map.keys().as_string::<i32>();
    let values = map.values().as_string::<i32>();
    let offsets = map.value_offsets();
    let mut out = Vec::with_capacity(map.len());
    for row in 0..map.len() {
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let host = (start..end)
            .find(|&i| keys.value(i) == "host.name")
            .filter(|&i| values.is_valid(i))
            .map(|i| values.value(i));
        out.push(host);
    }
    Ok(out)
}

/// The `llm_minutes` rows of a `spans` batch: one per minute, service, model and host of the
/// batch's LLM calls (spans with a `request_model`). `None` when the batch holds no LLM call.
pub fn llm_minutes(spans: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    let models = strings(spans, span_col::REQUEST_MODEL)?;
    if models.null_count() == models.len() {
        return Ok(None);
    }
    let time = spans
        .column_by_name(col::TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| missing(col::TIME))?;
    let services = strings(spans, col::SERVICE_NAME)?;
    let status = strings(spans, span_col::STATUS_CODE)?;
    let status_message = strings(spans, span_col::STATUS_MESSAGE)?;
    let error_type = strings(spans, span_col::ERROR_TYPE)?;
    let duration = int64s(spans, span_col::DURATION_NS)?;
    let ttft = int64s(spans, span_col::TTFT_NS)?;
    let input_tokens = int64s(spans, span_col::INPUT_TOKENS)?;
    let output_tokens = int64s(spans, span_col::OUTPUT_TOKENS)?;
    let cost = spans
        .column_by_name(span_col::COST_USD)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| missing(span_col::COST_USD))?;
    let finish = spans
        .column_by_name(span_col::FINISH_REASONS)
        .map(|c| c.as_list::<i32>())
        .ok_or_else(|| missing(span_col::FINISH_REASONS))?;
    let hosts = hosts(spans)?;

    let mut minutes: HashMap<Key<&str>, Minute> = HashMap::new();
    for (row, host) in hosts.into_iter().enumerate() {
        if models.is_null(row) {
            continue;
        }
        let t = time.value(row);
        let key = Key {
            minute: t.div_euclid(MINUTE_NS) * MINUTE_NS,
            service: services.value(row),
            model: models.value(row),
            host,
        };
        let m = minutes.entry(key).or_insert_with(|| Minute {
            first_time: t,
            ..Minute::default()
        });
        m.calls += 1;
        m.first_time = m.first_time.min(t);
        let failed = status.value(row).eq_ignore_ascii_case("error") || error_type.is_valid(row);
        if failed {
            m.errors += 1;
            let label = if error_type.is_valid(row) {
                error_type.value(row)
            } else if status_message.is_valid(row) {
                status_message.value(row)
            } else {
                "ERROR"
            };
            count(&mut m.error_types, label);
        }
        if input_tokens.is_valid(row) {
            m.input_tokens += input_tokens.value(row);
        }
        if output_tokens.is_valid(row) {
            m.output_tokens += output_tokens.value(row);
            *m.output_tokens_hist
                .entry(bucket_of(output_tokens.value(row) as f64))
                .or_default() += 1;
        }
        if cost.is_valid(row) {
            m.cost_usd += cost.value(row);
        }
        *m.duration_ms
            .entry(bucket_of(duration.value(row) as f64 / 1e6))
            .or_default() += 1;
        if ttft.is_valid(row) {
            *m.ttft_ms
                .entry(bucket_of(ttft.value(row) as f64 / 1e6))
                .or_default() += 1;
        }
        if finish.is_valid(row) {
            let reasons = finish.value(row);
            let reasons = reasons.as_string::<i32>();
            for reason in reasons.iter().flatten() {
                count(&mut m.finish_reasons, reason);
            }
        }
    }
    let mut rows: Vec<(Key<&str>, Minute)> = minutes.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    build(rows).map(Some)
}

/// One more of `label`, allocating only for a label not seen before.
fn count(counts: &mut BTreeMap<String, i64>, label: &str) {
    match counts.get_mut(label) {
        Some(n) => *n += 1,
        None => {
            counts.insert(label.to_string(), 1);
        }
    }
}

/// `llm_minutes` rows merged: one row per minute, service, model and host, whatever number of
/// rows (one per ingested request) held its calls. What a flush writes.
pub fn merge(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, ArrowError> {
    use minute_col::*;
    let mut minutes: HashMap<Key<String>, Minute> = HashMap::new();
    for batch in batches {
        let time = batch
            .column_by_name(col::TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or_else(|| missing(col::TIME))?;
        let first = batch
            .column_by_name(FIRST_TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or_else(|| missing(FIRST_TIME))?;
        let services = strings(batch, col::SERVICE_NAME)?;
        let models = strings(batch, span_col::REQUEST_MODEL)?;
        let hosts = strings(batch, HOST_NAME)?;
        let calls = int64s(batch, CALLS)?;
        let errors = int64s(batch, ERRORS)?;
        let input_tokens = int64s(batch, span_col::INPUT_TOKENS)?;
        let output_tokens = int64s(batch, span_col::OUTPUT_TOKENS)?;
        let cost = batch
            .column_by_name(span_col::COST_USD)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .ok_or_else(|| missing(span_col::COST_USD))?;
        let map = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<MapArray>())
                .ok_or_else(|| missing(name))
        };
        let (duration, ttft, tokens) = (
            map(DURATION_MS_BUCKETS)?,
            map(TTFT_MS_BUCKETS)?,
            map(OUTPUT_TOKENS_BUCKETS)?,
        );
        let (finish, error_types) = (map(FINISH_REASONS)?, map(ERROR_TYPES)?);
        for row in 0..batch.num_rows() {
            let key = Key {
                minute: time.value(row),
                service: services.value(row).to_string(),
                model: models.value(row).to_string(),
                host: hosts.is_valid(row).then(|| hosts.value(row).to_string()),
            };
            let m = minutes.entry(key).or_insert_with(|| Minute {
                first_time: first.value(row),
                ..Minute::default()
            });
            m.first_time = m.first_time.min(first.value(row));
            m.calls += calls.value(row);
            m.errors += errors.value(row);
            m.input_tokens += input_tokens.value(row);
            m.output_tokens += output_tokens.value(row);
            m.cost_usd += cost.value(row);
            add_buckets(&mut m.duration_ms, duration, row);
            add_buckets(&mut m.ttft_ms, ttft, row);
            add_buckets(&mut m.output_tokens_hist, tokens, row);
            add_counts(&mut m.finish_reasons, finish, row)?;
            add_counts(&mut m.error_types, error_types, row)?;
        }
    }
    if minutes.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<(Key<String>, Minute)> = minutes.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    build(rows).map(Some)
}

/// Adds row `row` of a bucket → count map column into `into`.
pub fn add_buckets(into: &mut BTreeMap<i32, i64>, map: &MapArray, row: usize) {
    if map.is_null(row) {
        return;
    }
    let entries = map.value(row);
    let (Some(keys), Some(counts)) = (
        entries.column(0).as_primitive_opt::<Int32Type>(),
        entries
            .column(1)
            .as_primitive_opt::<arrow::datatypes::Int64Type>(),
    ) else {
        return;
    };
    for (k, c) in keys.iter().zip(counts.iter()) {
        if let (Some(k), Some(c)) = (k, c) {
            *into.entry(k).or_default() += c;
        }
    }
}

/// Adds row `row` of a label → count map column into `into`.
pub fn add_counts(
    into: &mut BTreeMap<String, i64>,
    map: &MapArray,
    row: usize,
) -> Result<(), ArrowError> {
    if map.is_null(row) {
        return Ok(());
    }
    let entries = map.value(row);
    let labels = arrow::compute::cast(entries.column(0), &DataType::Utf8)?;
    let labels = labels.as_string::<i32>();
    let Some(counts) = entries
        .column(1)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
    else {
        return Ok(());
    };
    for (label, c) in labels.iter().zip(counts.iter()) {
        if let (Some(label), Some(c)) = (label, c) {
            *into.entry(label.to_string()).or_default() += c;
        }
    }
    Ok(())
}

fn build<S: AsRef<str>>(rows: Vec<(Key<S>, Minute)>) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut model = StringDictionaryBuilder::<Int32Type>::new();
    let mut host = StringDictionaryBuilder::<Int32Type>::new();
    let mut calls = Int64Builder::with_capacity(n);
    let mut errors = Int64Builder::with_capacity(n);
    let mut input_tokens = Int64Builder::with_capacity(n);
    let mut output_tokens = Int64Builder::with_capacity(n);
    let mut cost = arrow::array::Float64Builder::with_capacity(n);
    let mut first = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut duration = bucket_map_builder();
    let mut ttft = bucket_map_builder();
    let mut tokens = bucket_map_builder();
    let mut finish = count_map_builder();
    let mut error_types = count_map_builder();
    fn put_buckets(b: &mut MapBuilder<Int32Builder, Int64Builder>, h: &BTreeMap<i32, i64>) {
        for (k, v) in h {
            b.keys().append_value(*k);
            b.values().append_value(*v);
        }
    }
    fn put_counts(b: &mut MapBuilder<StringBuilder, Int64Builder>, h: &BTreeMap<String, i64>) {
        for (k, v) in h {
            b.keys().append_value(k);
            b.values().append_value(*v);
        }
    }
    for (key, m) in rows {
        time.append_value(key.minute);
        service.append_value(key.service.as_ref());
        model.append_value(key.model.as_ref());
        host.append_option(key.host.as_ref().map(|h| h.as_ref()));
        calls.append_value(m.calls);
        errors.append_value(m.errors);
        input_tokens.append_value(m.input_tokens);
        output_tokens.append_value(m.output_tokens);
        cost.append_value(m.cost_usd);
        first.append_value(m.first_time);
        put_buckets(&mut duration, &m.duration_ms);
        put_buckets(&mut ttft, &m.ttft_ms);
        put_buckets(&mut tokens, &m.output_tokens_hist);
        put_counts(&mut finish, &m.finish_reasons);
        put_counts(&mut error_types, &m.error_types);
        for b in [&mut duration, &mut ttft, &mut tokens] {
            b.append(true)?;
        }
        finish.append(true)?;
        error_types.append(true)?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(service.finish()),
        Arc::new(model.finish()),
        Arc::new(host.finish()),
        Arc::new(calls.finish()),
        Arc::new(errors.finish()),
        Arc::new(input_tokens.finish()),
        Arc::new(output_tokens.finish()),
        Arc::new(cost.finish()),
        Arc::new(first.finish()),
        Arc::new(duration.finish()),
        Arc::new(ttft.finish()),
        Arc::new(tokens.finish()),
        Arc::new(finish.finish()),
        Arc::new(error_types.finish()),
    ];
    RecordBatch::try_new(LLM_MINUTES_SCHEMA.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;
    use crate::convert::spans_to_batch;
    use crate::genai::Normalizer;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn call(start_ns: u64, millis: u64, model: Option<&str>, output: i64, error: bool) -> Span {
        let mut attributes = vec![kv("gen_ai.system", s("openai"))];
        if let Some(model) = model {
            attributes.push(kv("gen_ai.request.model", s(model)));
            attributes.push(kv(
                "gen_ai.usage.input_tokens",
                any_value::Value::IntValue(10),
            ));
            attributes.push(kv(
                "gen_ai.usage.output_tokens",
                any_value::Value::IntValue(output),
            ));
            attributes.push(kv(
                "gen_ai.response.finish_reasons",
                any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(s("stop")),
                    }],
                }),
            ));
        }
        Span {
            trace_id: vec![1; 16],
            span_id: start_ns.to_be_bytes().to_vec(),
            name: "chat".into(),
            start_time_unix_nano: start_ns,
            end_time_unix_nano: start_ns + millis * 1_000_000,
            attributes,
            status: error.then(|| Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    fn batch(host: &str, spans: Vec<Span>) -> RecordBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("api")), kv("host.name", s(host))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        spans_to_batch(&request, &Normalizer::default()).batch
    }

    #[test]
    fn buckets_cover_values_within_their_bounds() {
        for value in [0.002, 0.5, 1.0, 1.5, 7.0, 100.0, 12_345.0, 1e9] {
            let (lo, hi) = bucket_bounds(bucket_of(value));
            assert!(
                lo <= value * (1.0 + 1e-12) && value < hi,
                "{value}: [{lo}, {hi})"
            );
            assert!(hi / lo < 1.091, "eight buckets per doubling");
        }
        assert_eq!(bucket_of(0.0), MIN_BUCKET);
        assert_eq!(bucket_of(-3.0), MIN_BUCKET);
        assert_eq!(bucket_of(f64::NAN), MIN_BUCKET);
        assert!(bucket_of(f64::INFINITY) > 0);
    }

    #[test]
    fn quantiles_are_within_the_bucket_error_of_the_exact_ones() {
        let values: Vec<f64> = (1..=1000).map(|i| (i as f64).powf(1.7)).collect();
        let mut histogram = BTreeMap::new();
        for v in &values {
            *histogram.entry(bucket_of(*v)).or_insert(0u64) += 1;
        }
        for q in [0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = values[((q * 1000.0) as usize).clamp(1, 1000) - 1];
            let estimate = quantile(&histogram, q).unwrap();
            assert!(
                (estimate / exact - 1.0).abs() < 0.045,
                "q{q}: {estimate} vs {exact}"
            );
        }
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn calls_roll_up_per_minute_service_model_and_host() {
        let minute = 1_700_000_040_000_000_000u64; // a minute boundary
        let spans = vec![
            call(minute + 1_000_000_000, 100, Some("gpt-4o"), 20, false),
            call(minute + 59_000_000_000, 300, Some("gpt-4o"), 40, true),
            call(minute + 61_000_000_000, 200, Some("gpt-4o"), 0, false),
            call(minute + 2_000_000_000, 50, Some("llama"), 5, false),
            // Not an LLM call: not rolled up.
            call(minute + 3_000_000_000, 5, None, 0, false),
        ];
        let rolled = llm_minutes(&batch("node-1", spans)).unwrap().unwrap();
        assert_eq!(rolled.schema(), Table::LlmMinutes.schema());
        assert_eq!(rolled.num_rows(), 3, "two minutes of gpt-4o, one of llama");
        let calls = rolled
            .column_by_name("calls")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let errors = rolled
            .column_by_name("errors")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let output = rolled
            .column_by_name("output_tokens")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let model = strings(&rolled, "request_model").unwrap();
        let host = strings(&rolled, "host_name").unwrap();
        let first = rolled
            .column_by_name("first_time")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        // Sorted by minute, then service, model, host.
        assert_eq!(model.value(0), "gpt-4o");
        assert_eq!(
            (calls.value(0), errors.value(0), output.value(0)),
            (2, 1, 60)
        );
        assert_eq!(first.value(0), (minute + 1_000_000_000) as i64);
        assert_eq!(model.value(1), "llama");
        assert_eq!((calls.value(2), output.value(2)), (1, 0));
        assert_eq!(host.value(0), "node-1");
        let durations = rolled
            .column_by_name("duration_ms_buckets")
            .unwrap()
            .as_map()
            .value(0);
        let keys = durations.column(0).as_primitive::<Int32Type>();
        assert_eq!(
            keys.values().to_vec(),
            vec![bucket_of(100.0), bucket_of(300.0)]
        );
        let errors = rolled
            .column_by_name("error_types")
            .unwrap()
            .as_map()
            .value(0);
        assert_eq!(errors.column(0).as_string::<i32>().value(0), "boom");
        let finish = rolled
            .column_by_name("finish_reasons")
            .unwrap()
            .as_map()
            .value(0);
        assert_eq!(finish.column(0).as_string::<i32>().value(0), "stop");
        assert_eq!(
            finish
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            2
        );
    }

    #[test]
    fn merged_rows_add_up_to_the_rollup_of_all_the_calls() {
        let minute = 1_700_000_040_000_000_000u64;
        let first = vec![
            call(minute + 1_000_000_000, 100, Some("gpt-4o"), 20, false),
            call(minute + 2_000_000_000, 300, Some("gpt-4o"), 40, true),
        ];
        let second = vec![
            call(minute + 500_000_000, 100, Some("gpt-4o"), 7, false),
            call(minute + 3_000_000_000, 9_000, Some("gpt-4o"), 40, false),
        ];
        let together: Vec<Span> = first.iter().chain(&second).cloned().collect();
        let parts = [
            llm_minutes(&batch("n", first)).unwrap().unwrap(),
            llm_minutes(&batch("n", second)).unwrap().unwrap(),
        ];
        let merged = merge(&parts).unwrap().unwrap();
        let whole = llm_minutes(&batch("n", together)).unwrap().unwrap();
        assert_eq!(merged.num_rows(), 1);
        assert_eq!(merged, whole);
        assert!(merge(&[]).unwrap().is_none());
    }

    #[test]
    fn a_batch_without_llm_calls_has_no_rows() {
        let spans = vec![call(1_000, 5, None, 0, false)];
        assert!(llm_minutes(&batch("h", spans)).unwrap().is_none());
    }
}
