use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

type Dict = arrow::array::StringDictionaryBuilder<Int32Type>;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Metric, exemplar, metric::Data, number_data_point,
};
use serde_json::json;

use twox_hash::XxHash3_128;

use super::{Converted, Rejections, append_pairs, opt_str, to_ns};
use crate::attrs::{attribute_pairs, attributes_to_json, service_name, value_to_cow};
use crate::tables::{Table, new_string_map_builder};

/// One row's fields that only some metric types have.
#[derive(Default)]
struct Point<'a> {
    time: u64,
    start_time: u64,
    attributes: &'a [KeyValue],
    temporality: Option<&'static str>,
    is_monotonic: Option<bool>,
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_bounds: Option<&'a [f64]>,
    bucket_counts: Option<&'a [u64]>,
    exp: Option<ExpBuckets<'a>>,
    quantiles: Option<(Vec<f64>, Vec<f64>)>,
    exemplars: &'a [Exemplar],
    flags: u32,
}

struct ExpBuckets<'a> {
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive: Option<(i32, &'a [u64])>,
    negative: Option<(i32, &'a [u64])>,
}

struct Builders {
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    metric_name: Dict,
    metric_type: Dict,
    unit: Dict,
    description: Dict,
    service: Dict,
    scope_name: Dict,
    scope_version: Dict,
    resource_attributes: MapBuilder<StringBuilder, StringBuilder>,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    temporality: Dict,
    is_monotonic: BooleanBuilder,
    value: Float64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_bounds: ListBuilder<Float64Builder>,
    bucket_counts: ListBuilder<UInt64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_zero_threshold: Float64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<UInt64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
    exemplars: StringBuilder,
    flags: UInt32Builder,
    series_id: UInt64Builder,
    series_check: UInt64Builder,
    /// The text a row's series id is hashed from, kept between rows.
    series_text: Vec<u8>,
}

fn append_f64_list(b: &mut ListBuilder<Float64Builder>, values: Option<&[f64]>) {
    match values {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

fn append_u64_list(b: &mut ListBuilder<UInt64Builder>, values: Option<&[u64]>) {
    match values {
        Some(v) => {
            b.values().append_slice(v);
            b.append(true);
        }
        None => b.append(false),
    }
}

fn temporality_name(t: i32) -> Option<&'static str> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => Some("delta"),
        Ok(AggregationTemporality::Cumulative) => Some("cumulative"),
        _ => None,
    }
}

fn exemplars_json(exemplars: &[Exemplar]) -> Option<String> {
    if exemplars.is_empty() {
        return None;
    }
    let list: Vec<_> = exemplars
        .iter()
        .map(|e| {
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => json!(d),
                Some(exemplar::Value::AsInt(i)) => json!(i),
                None => serde_json::Value::Null,
            };
            let mut o = json!({"time_unix_nano": e.time_unix_nano, "value": value});
            if !e.trace_id.is_empty() {
                o["trace_id"] = hex::encode(&e.trace_id).into();
                o["span_id"] = hex::encode(&e.span_id).into();
            }
            if !e.filtered_attributes.is_empty() {
                o["filtered_attributes"] =
                    serde_json::Value::Object(attributes_to_json(&e.filtered_attributes));
            }
            o
        })
        .collect();
    Some(serde_json::Value::Array(list).to_string())
}

struct Context<'a> {
    metric: &'a Metric,
    metric_type: &'static str,
    service_name: &'a str,
    scope: Option<&'a InstrumentationScope>,
    resource: &'a [(&'a str, Cow<'a, str>)],
    /// `resource` as it enters its rows' series ids ([`series_text`]).
    resource_text: &'a [u8],
}

impl Builders {
    fn new(n: usize) -> Builders {
        Builders {
            time: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            start_time: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            metric_name: Dict::with_capacity(n, 16, 256),
            metric_type: Dict::with_capacity(n, 16, 256),
            unit: Dict::with_capacity(n, 16, 256),
            description: Dict::with_capacity(n, 16, 256),
            service: Dict::with_capacity(n, 16, 256),
            scope_name: Dict::with_capacity(n, 16, 256),
            scope_version: Dict::with_capacity(n, 16, 256),
            resource_attributes: new_string_map_builder(n),
            attributes: new_string_map_builder(n),
            temporality: Dict::with_capacity(n, 16, 256),
            is_monotonic: BooleanBuilder::with_capacity(n),
            value: Float64Builder::with_capacity(n),
            count: UInt64Builder::with_capacity(n),
            sum: Float64Builder::with_capacity(n),
            min: Float64Builder::with_capacity(n),
            max: Float64Builder::with_capacity(n),
            bucket_bounds: ListBuilder::with_capacity(Float64Builder::with_capacity(0), n),
            bucket_counts: ListBuilder::with_capacity(UInt64Builder::with_capacity(0), n),
            exp_scale: Int32Builder::with_capacity(n),
            exp_zero_count: UInt64Builder::with_capacity(n),
            exp_zero_threshold: Float64Builder::with_capacity(n),
            exp_positive_offset: Int32Builder::with_capacity(n),
            exp_positive_counts: ListBuilder::with_capacity(UInt64Builder::with_capacity(0), n),
            exp_negative_offset: Int32Builder::with_capacity(n),
            exp_negative_counts: ListBuilder::with_capacity(UInt64Builder::with_capacity(0), n),
            quantiles: ListBuilder::with_capacity(Float64Builder::with_capacity(0), n),
            quantile_values: ListBuilder::with_capacity(Float64Builder::with_capacity(0), n),
            exemplars: StringBuilder::with_capacity(n, 0),
            flags: UInt32Builder::with_capacity(n),
            series_id: UInt64Builder::with_capacity(n),
            series_check: UInt64Builder::with_capacity(n),
            series_text: Vec::new(),
        }
    }

    fn append(&mut self, cx: &Context<'_>, p: Point<'_>, rejections: &mut Rejections) {
        let Some(time) = accepted_time(cx, p.time, rejections) else {
            return;
        };
        self.append_head(cx, time, p.start_time);
        // The attributes as stored, and on the way into the series id.
        let text = &mut self.series_text;
        text.clear();
        text.extend_from_slice(cx.metric.name.as_bytes());
        text.push(PART_END);
        for kv in p.attributes {
            if let Some(v) = kv.value.as_ref().and_then(value_to_cow) {
                self.attributes.keys().append_value(&kv.key);
                self.attributes.values().append_value(&v);
                push_pair(text, &kv.key, &v);
            }
        }
        // The map builder only fails when keys and values differ in length, which the loop
        // prevents.
        let _ = self.attributes.append(true);
        text.push(PART_END);
        text.extend_from_slice(cx.resource_text);
        let hash = XxHash3_128::oneshot(text);
        self.series_id.append_value(hash as u64);
        self.series_check.append_value((hash >> 64) as u64);
        self.append_tail(&p);
    }

    /// The rows of one series' samples, each what [`Builders::append`] makes of it as a point
    /// of a gauge, with the attributes and ids `key` worked out once for all of them.
    fn append_samples(
        &mut self,
        cx: &Context<'_>,
        key: &SeriesKey<'_>,
        samples: &[(u64, f64)],
        rejections: &mut Rejections,
    ) {
        for (time, value) in samples {
            let Some(time) = accepted_time(cx, *time, rejections) else {
                continue;
            };
            self.append_head(cx, time, 0);
            for (k, v) in &key.attributes {
                self.attributes.keys().append_value(k);
                self.attributes.values().append_value(v);
            }
            let _ = self.attributes.append(true);
            self.series_id.append_value(key.id);
            self.series_check.append_value(key.check);
            self.append_tail(&Point {
                time: 0,
                attributes: &[],
                value: Some(*value),
                ..Default::default()
            });
        }
    }

    /// A row's columns before its attributes: time, metric, service, scope and resource.
    fn append_head(&mut self, cx: &Context<'_>, time: i64, start_time: u64) {
        self.time.append_value(time);
        self.start_time.append_option(if start_time == 0 {
            None
        } else {
            to_ns(start_time)
        });
        self.metric_name.append_value(&cx.metric.name);
        self.metric_type.append_value(cx.metric_type);
        self.unit.append_option(opt_str(&cx.metric.unit));
        self.description
            .append_option(opt_str(&cx.metric.description));
        self.service.append_value(cx.service_name);
        self.scope_name
            .append_option(cx.scope.and_then(|s| opt_str(&s.name)));
        self.scope_version
            .append_option(cx.scope.and_then(|s| opt_str(&s.version)));
        append_pairs(&mut self.resource_attributes, cx.resource);
    }

    /// A row's columns after its attributes and ids: the point's kind and values.
    fn append_tail(&mut self, p: &Point<'_>) {
        self.temporality.append_option(p.temporality);
        self.is_monotonic.append_option(p.is_monotonic);
        self.value.append_option(p.value);
        self.count.append_option(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        append_f64_list(&mut self.bucket_bounds, p.bucket_bounds);
        append_u64_list(&mut self.bucket_counts, p.bucket_counts);
        match &p.exp {
            Some(e) => {
                self.exp_scale.append_value(e.scale);
                self.exp_zero_count.append_value(e.zero_count);
                self.exp_zero_threshold.append_value(e.zero_threshold);
                self.exp_positive_offset
                    .append_option(e.positive.map(|b| b.0));
                append_u64_list(&mut self.exp_positive_counts, e.positive.map(|b| b.1));
                self.exp_negative_offset
                    .append_option(e.negative.map(|b| b.0));
                append_u64_list(&mut self.exp_negative_counts, e.negative.map(|b| b.1));
            }
            None => {
                self.exp_scale.append_null();
                self.exp_zero_count.append_null();
                self.exp_zero_threshold.append_null();
                self.exp_positive_offset.append_null();
                self.exp_positive_counts.append(false);
                self.exp_negative_offset.append_null();
                self.exp_negative_counts.append(false);
            }
        }
        append_f64_list(
            &mut self.quantiles,
            p.quantiles.as_ref().map(|q| q.0.as_slice()),
        );
        append_f64_list(
            &mut self.quantile_values,
            p.quantiles.as_ref().map(|q| q.1.as_slice()),
        );
        self.exemplars.append_option(exemplars_json(p.exemplars));
        self.flags.append_value(p.flags);
    }
}

/// A point's time in nanoseconds, or `None` (counted as refused) past what a row can hold.
fn accepted_time(
    cx: &Context<'_>,
    time_unix_nano: u64,
    rejections: &mut Rejections,
) -> Option<i64> {
    let time = to_ns(time_unix_nano);
    if time.is_none() {
        rejections.reject(|| {
            format!(
                "metric {:?}: time_unix_nano is past the year 2262",
                cx.metric.name
            )
        });
    }
    time
}

/// What every point of one series shares: its attributes as stored, and its series id and check.
struct SeriesKey<'a> {
    attributes: Vec<(&'a str, Cow<'a, str>)>,
    id: u64,
    check: u64,
}

impl<'a> SeriesKey<'a> {
    /// The key of the series `name` with `attributes` under a resource whose series text is
    /// `resource_text`, as [`Builders::append`] works it out for each point.
    fn new(name: &str, attributes: &'a [KeyValue], resource_text: &[u8]) -> SeriesKey<'a> {
        let attributes: Vec<(&str, Cow<str>)> = attributes
            .iter()
            .filter_map(|kv| {
                let value = kv.value.as_ref().and_then(value_to_cow)?;
                Some((kv.key.as_str(), value))
            })
            .collect();
        let mut text = Vec::with_capacity(name.len() + resource_text.len() + 64);
        text.extend_from_slice(name.as_bytes());
        text.push(PART_END);
        for (k, v) in &attributes {
            push_pair(&mut text, k, v);
        }
        text.push(PART_END);
        text.extend_from_slice(resource_text);
        let hash = XxHash3_128::oneshot(&text);
        SeriesKey {
            attributes,
            id: hash as u64,
            check: (hash >> 64) as u64,
        }
    }

    /// The bytes of its attributes' keys and values.
    fn text_bytes(&self) -> (usize, usize) {
        self.attributes.iter().fold((0, 0), |(k, v), (key, value)| {
            (k + key.len(), v + value.len())
        })
    }
}

/// End each key and value, and each part (name, attributes), of a series id's text; no UTF-8
/// text holds either byte.
const TEXT_END: u8 = 0xff;
const PART_END: u8 = 0xfe;

fn push_pair(text: &mut Vec<u8>, key: &str, value: &str) {
    text.extend_from_slice(key.as_bytes());
    text.push(TEXT_END);
    text.extend_from_slice(value.as_bytes());
    text.push(TEXT_END);
}

/// The resource's part of its rows' series text: its attributes as stored. The ids are stored,
/// so the text and the hash (XXH3, specified) must stay the same across versions.
fn series_text(resource: &[(&str, Cow<'_, str>)]) -> Vec<u8> {
    let mut text = Vec::new();
    for (k, v) in resource {
        push_pair(&mut text, k, v);
    }
    text
}

impl Builders {
    /// The rows built, with what was refused on the way.
    fn converted(self, rejections: Rejections) -> Converted {
        Converted {
            batch: self.finish(),
            rejected: rejections.count,
            first_error: rejections.first,
            unpriced: 0,
        }
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_bounds.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_zero_threshold.finish()),
            Arc::new(self.exp_positive_offset.finish()),
            Arc::new(self.exp_positive_counts.finish()),
            Arc::new(self.exp_negative_offset.finish()),
            Arc::new(self.exp_negative_counts.finish()),
            Arc::new(self.quantiles.finish()),
            Arc::new(self.quantile_values.finish()),
            Arc::new(self.exemplars.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.series_id.finish()),
            Arc::new(self.series_check.finish()),
        ];
        RecordBatch::try_new(Table::Metrics.schema(), columns)
            .expect("metric columns are built in schema order with schema types")
    }
}

/// Converts an OTLP metrics export request into rows of `metrics`, one per data point.
pub fn metrics_to_batch(request: &ExportMetricsServiceRequest) -> Converted {
    let mut rejections = Rejections::default();
    let points: usize = request
        .resource_metrics
        .iter()
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum();
    let mut b = Builders::new(points);
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service_name = service_name(resource);
        // Resource attributes repeat on every row: render them once per resource.
        let resource_pairs = attribute_pairs(resource);
        let resource_text = series_text(&resource_pairs);
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let Some(data) = &metric.data else {
                    rejections.reject(|| {
                        format!(
                            "metric {:?} has no data (gauge, sum, histogram, …)",
                            metric.name
                        )
                    });
                    continue;
                };
                let metric_type = match data {
                    Data::Gauge(_) => "gauge",
                    Data::Sum(_) => "sum",
                    Data::Histogram(_) => "histogram",
                    Data::ExponentialHistogram(_) => "exponential_histogram",
                    Data::Summary(_) => "summary",
                };
                let cx = Context {
                    metric,
                    metric_type,
                    service_name: &service_name,
                    scope: sm.scope.as_ref(),
                    resource: &resource_pairs,
                    resource_text: &resource_text,
                };
                match data {
                    Data::Gauge(g) => {
                        for dp in &g.data_points {
                            let p = Point {
                                time: dp.time_unix_nano,
                                start_time: dp.start_time_unix_nano,
                                attributes: &dp.attributes,
                                value: number_value(dp.value),
                                exemplars: &dp.exemplars,
                                flags: dp.flags,
                                ..Default::default()
                            };
                            b.append(&cx, p, &mut rejections);
                        }
                    }
                    Data::Sum(s) => {
                        for dp in &s.data_points {
                            let p = Point {
                                time: dp.time_unix_nano,
                                start_time: dp.start_time_unix_nano,
                                attributes: &dp.attributes,
                                temporality: temporality_name(s.aggregation_temporality),
                                is_monotonic: Some(s.is_monotonic),
                                value: number_value(dp.value),
                                exemplars: &dp.exemplars,
                                flags: dp.flags,
                                ..Default::default()
                            };
                            b.append(&cx, p, &mut rejections);
                        }
                    }
                    Data::Histogram(h) => {
                        for dp in &h.data_points {
                            let p = Point {
                                time: dp.time_unix_nano,
                                start_time: dp.start_time_unix_nano,
                                attributes: &dp.attributes,
                                temporality: temporality_name(h.aggregation_temporality),
                                count: Some(dp.count),
                                sum: dp.sum,
                                min: dp.min,
                                max: dp.max,
                                bucket_bounds: Some(&dp.explicit_bounds),
                                bucket_counts: Some(&dp.bucket_counts),
                                exemplars: &dp.exemplars,
                                flags: dp.flags,
                                ..Default::default()
                            };
                            b.append(&cx, p, &mut rejections);
                        }
                    }
                    Data::ExponentialHistogram(h) => {
                        for dp in &h.data_points {
                            let p = Point {
                                time: dp.time_unix_nano,
                                start_time: dp.start_time_unix_nano,
                                attributes: &dp.attributes,
                                temporality: temporality_name(h.aggregation_temporality),
                                count: Some(dp.count),
                                sum: dp.sum,
                                min: dp.min,
                                max: dp.max,
                                exp: Some(ExpBuckets {
                                    scale: dp.scale,
                                    zero_count: dp.zero_count,
                                    zero_threshold: dp.zero_threshold,
                                    positive: dp
                                        .positive
                                        .as_ref()
                                        .map(|b| (b.offset, b.bucket_counts.as_slice())),
                                    negative: dp
                                        .negative
                                        .as_ref()
                                        .map(|b| (b.offset, b.bucket_counts.as_slice())),
                                }),
                                exemplars: &dp.exemplars,
                                flags: dp.flags,
                                ..Default::default()
                            };
                            b.append(&cx, p, &mut rejections);
                        }
                    }
                    Data::Summary(s) => {
                        for dp in &s.data_points {
                            let p = Point {
                                time: dp.time_unix_nano,
                                start_time: dp.start_time_unix_nano,
                                attributes: &dp.attributes,
                                count: Some(dp.count),
                                sum: Some(dp.sum),
                                quantiles: Some((
                                    dp.quantile_values.iter().map(|q| q.quantile).collect(),
                                    dp.quantile_values.iter().map(|q| q.value).collect(),
                                )),
                                flags: dp.flags,
                                ..Default::default()
                            };
                            b.append(&cx, p, &mut rejections);
                        }
                    }
                }
            }
        }
    }
    b.converted(rejections)
}

/// A gauge series that arrives without OTLP around it (a Prometheus remote-write series): its
/// metric, its attributes once, and its samples.
pub struct GaugeSeries<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub attributes: Vec<KeyValue>,
    /// Time (nanoseconds since the epoch) and value.
    pub samples: Vec<(u64, f64)>,
}

/// Gauge series under one resource.
pub struct GaugeResource<'a> {
    pub attributes: Vec<KeyValue>,
    pub series: Vec<GaugeSeries<'a>>,
}

/// The rows [`metrics_to_batch`] makes of the same points as OTLP gauges (one scope without a
/// name), without building that request: there every point would carry its own copy of its
/// series' attributes, and copying them was most of a remote-write sample's cost.
pub fn gauge_series_to_batch(resources: &[GaugeResource<'_>]) -> Converted {
    let mut rejections = Rejections::default();
    let points: usize = resources
        .iter()
        .flat_map(|r| r.series.iter())
        .map(|s| s.samples.len())
        .sum();
    // Each series' attributes and ids once, and the maps' text sized from them: built by
    // doubling, the maps' buffers held up to twice what they use until the rows' flush.
    let mut map_text = [MapText::default(); 2];
    let mut prepared = Vec::with_capacity(resources.len());
    for resource in resources {
        let resource_pairs = attribute_pairs(&resource.attributes);
        let resource_text = series_text(&resource_pairs);
        let resource_bytes = resource_pairs.iter().fold((0, 0), |(k, v), (key, value)| {
            (k + key.len(), v + value.len())
        });
        let keys: Vec<SeriesKey> = resource
            .series
            .iter()
            .map(|series| {
                let key = SeriesKey::new(series.name, &series.attributes, &resource_text);
                let rows = series.samples.len();
                map_text[0].add(rows, resource_pairs.len(), resource_bytes);
                map_text[1].add(rows, key.attributes.len(), key.text_bytes());
                key
            })
            .collect();
        prepared.push((resource_pairs, resource_text, keys));
    }
    let mut b = Builders::new(points);
    b.resource_attributes = map_text[0].builder(points);
    b.attributes = map_text[1].builder(points);
    for (resource, (resource_pairs, resource_text, keys)) in resources.iter().zip(&prepared) {
        let service_name = service_name(&resource.attributes);
        for (series, key) in resource.series.iter().zip(keys) {
            let metric = Metric {
                name: series.name.to_string(),
                description: series.description.to_string(),
                ..Default::default()
            };
            let cx = Context {
                metric: &metric,
                metric_type: "gauge",
                service_name: &service_name,
                scope: None,
                resource: resource_pairs,
                resource_text,
            };
            b.append_samples(&cx, key, &series.samples, &mut rejections);
        }
    }
    b.converted(rejections)
}

/// How much text a map column of some rows holds: entries, and bytes of keys and of values.
#[derive(Clone, Copy, Default)]
struct MapText {
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
}

impl MapText {
    /// `rows` rows of `entries` entries each, of `(key, value)` bytes together.
    fn add(&mut self, rows: usize, entries: usize, (keys, values): (usize, usize)) {
        self.entries += rows * entries;
        self.key_bytes += rows * keys;
        self.value_bytes += rows * values;
    }

    fn builder(&self, rows: usize) -> MapBuilder<StringBuilder, StringBuilder> {
        MapBuilder::with_capacity(
            None,
            StringBuilder::with_capacity(self.entries, self.key_bytes),
            StringBuilder::with_capacity(self.entries, self.value_bytes),
            rows,
        )
    }
}

fn number_value(v: Option<number_data_point::Value>) -> Option<f64> {
    match v? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::kv as text;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    /// Gauge series give the very rows (series ids included) that the same points give as an
    /// OTLP request, each point with its own copy of the attributes.
    #[test]
    fn gauge_series_make_the_rows_their_otlp_points_make() {
        let resources = vec![
            GaugeResource {
                attributes: vec![
                    text("service.name", "node"),
                    text("service.instance.id", "h:9100"),
                ],
                series: vec![
                    GaugeSeries {
                        name: "up",
                        description: "",
                        attributes: vec![text("zone", "a")],
                        samples: vec![(1_000_000_000, 1.0), (2_000_000_000, 0.0)],
                    },
                    GaugeSeries {
                        name: "DCGM_FI_DEV_GPU_UTIL",
                        description: "GPU utilization (in %).",
                        attributes: vec![text("gpu", "0"), text("UUID", "GPU-1")],
                        samples: vec![(3_000_000_000, 42.0)],
                    },
                ],
            },
            GaugeResource {
                attributes: vec![],
                series: vec![GaugeSeries {
                    name: "x",
                    description: "",
                    attributes: vec![],
                    samples: vec![(u64::MAX, 1.0), (4_000_000_000, f64::NAN)],
                }],
            },
        ];
        let request = ExportMetricsServiceRequest {
            resource_metrics: resources
                .iter()
                .map(|r| ResourceMetrics {
                    resource: Some(Resource {
                        attributes: r.attributes.clone(),
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: r
                            .series
                            .iter()
                            .map(|s| Metric {
                                name: s.name.into(),
                                description: s.description.into(),
                                data: Some(metric::Data::Gauge(Gauge {
                                    data_points: s
                                        .samples
                                        .iter()
                                        .map(|(t, v)| NumberDataPoint {
                                            attributes: s.attributes.clone(),
                                            time_unix_nano: *t,
                                            value: Some(number_data_point::Value::AsDouble(*v)),
                                            ..Default::default()
                                        })
                                        .collect(),
                                })),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        let direct = gauge_series_to_batch(&resources);
        let through_otlp = metrics_to_batch(&request);
        assert_eq!(direct.batch, through_otlp.batch);
        assert_eq!(direct.rejected, 1, "the sample past the year 2262");
        assert_eq!(direct.rejected, through_otlp.rejected);
        assert_eq!(direct.first_error, through_otlp.first_error);
        assert_eq!(
            super::super::gauge_series_cost(&resources).rows,
            super::super::metrics_request_cost(&request).rows
        );
    }
}
