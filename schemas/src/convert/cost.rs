//! What a request will cost once converted, known before any row is built.
//!
//! A request is small on the wire but its rows are not: resource and scope attributes are
//! copied into every row they cover, so a 1 MiB resource attribute over 2,000 empty spans is a
//! 10 KB gzipped request and 2 GB of rows. The receivers price a request with these functions
//! (one pass over the decoded structs, no allocation) and refuse or push back before converting.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

/// Fixed bytes of one row beyond its variable-length values: ~40 columns of offsets, keys,
/// validity and numbers. Measured from the builders (a bare span is ~300 bytes in Arrow).
const ROW_OVERHEAD: u64 = 320;
/// Fixed bytes of one converted request: every column's buffers, sized up front.
const REQUEST_OVERHEAD: u64 = 16 << 10;
/// Builders grow by doubling, so a column can hold up to twice the bytes its values need.
const GROWTH: u64 = 2;

/// What converting a request will hold in memory, and where most of it comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCost {
    /// Rows the request becomes.
    pub rows: u64,
    /// Bytes of those rows in Arrow, estimated from the protobuf sizes (an upper bound within a
    /// small factor: text is copied as is, numbers take their width).
    pub bytes: u64,
    /// The largest bytes one resource or scope copies into its rows, and into how many rows.
    pub largest_repeat: (u64, u64),
}

impl RequestCost {
    fn add_group(&mut self, shared_len: usize, rows: u64, rows_len: u64) {
        let shared = shared_len as u64;
        self.rows += rows;
        let values = shared.saturating_mul(rows).saturating_add(rows_len);
        self.bytes = self
            .bytes
            .max(REQUEST_OVERHEAD)
            .saturating_add(values.saturating_mul(GROWTH))
            .saturating_add(rows.saturating_mul(ROW_OVERHEAD));
        if shared.saturating_mul(rows) > self.largest_repeat.0.saturating_mul(self.largest_repeat.1)
        {
            self.largest_repeat = (shared, rows);
        }
    }

    /// Says where the bytes come from, for a refusal the sender can act on.
    pub fn describe(&self) -> String {
        let (shared, rows) = self.largest_repeat;
        let mut text = format!(
            "the request would become {} rows holding about {} bytes",
            self.rows, self.bytes
        );
        if shared.saturating_mul(rows).saturating_mul(GROWTH) > self.bytes / 2 {
            text.push_str(&format!(
                ", mostly one resource's or scope's attributes ({shared} bytes) repeated on each of its {rows} items"
            ));
        }
        text
    }
}

/// The cost of a trace export request's rows in `spans`.
pub fn trace_request_cost(request: &ExportTraceServiceRequest) -> RequestCost {
    let mut cost = RequestCost::default();
    for rs in &request.resource_spans {
        let resource_len = rs.resource.as_ref().map_or(0, Message::encoded_len);
        for ss in &rs.scope_spans {
            let scope_len = ss.scope.as_ref().map_or(0, Message::encoded_len);
            let spans_len: u64 = ss.spans.iter().map(|s| s.encoded_len() as u64).sum();
            cost.add_group(resource_len + scope_len, ss.spans.len() as u64, spans_len);
        }
    }
    cost
}

/// The cost of a metrics export request's rows in `metrics` (one row per data point).
pub fn metrics_request_cost(request: &ExportMetricsServiceRequest) -> RequestCost {
    let mut cost = RequestCost::default();
    for rm in &request.resource_metrics {
        let resource_len = rm.resource.as_ref().map_or(0, Message::encoded_len);
        for sm in &rm.scope_metrics {
            let scope_len = sm.scope.as_ref().map_or(0, Message::encoded_len);
            for metric in &sm.metrics {
                // Name, unit, description and metadata repeat on each of the metric's points.
                let header_len = metric.name.len() + metric.unit.len() + metric.description.len();
                let (points, points_len) = match &metric.data {
                    Some(Data::Gauge(g)) => sizes(&g.data_points),
                    Some(Data::Sum(s)) => sizes(&s.data_points),
                    Some(Data::Histogram(h)) => sizes(&h.data_points),
                    Some(Data::ExponentialHistogram(h)) => sizes(&h.data_points),
                    Some(Data::Summary(s)) => sizes(&s.data_points),
                    None => (0, 0),
                };
                cost.add_group(resource_len + scope_len + header_len, points, points_len);
            }
        }
    }
    cost
}

/// The cost of gauge series given without OTLP around them ([`super::GaugeSeries`]): priced as
/// the same points in an OTLP request, each with its series' attributes.
pub fn gauge_series_cost(resources: &[super::GaugeResource<'_>]) -> RequestCost {
    let mut cost = RequestCost::default();
    for resource in resources {
        let resource_len: usize = resource.attributes.iter().map(Message::encoded_len).sum();
        for series in &resource.series {
            let header_len = series.name.len() + series.description.len();
            let attributes_len: u64 = series
                .attributes
                .iter()
                .map(|a| a.encoded_len() as u64)
                .sum();
            let points = series.samples.len() as u64;
            // A point's time and value (two fixed64 fields with their tags) besides its attributes.
            let points_len = points.saturating_mul(attributes_len + 18);
            cost.add_group(resource_len + header_len, points, points_len);
        }
    }
    cost
}

/// The cost of a logs export request's rows in `logs`.
pub fn logs_request_cost(request: &ExportLogsServiceRequest) -> RequestCost {
    let mut cost = RequestCost::default();
    for rl in &request.resource_logs {
        let resource_len = rl.resource.as_ref().map_or(0, Message::encoded_len);
        for sl in &rl.scope_logs {
            let scope_len = sl.scope.as_ref().map_or(0, Message::encoded_len);
            let (records, records_len) = sizes(&sl.log_records);
            cost.add_group(resource_len + scope_len, records, records_len);
        }
    }
    cost
}

fn sizes<M: Message>(items: &[M]) -> (u64, u64) {
    (
        items.len() as u64,
        items.iter().map(|m| m.encoded_len() as u64).sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::spans_to_batch;
    use crate::genai::Normalizer;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(resource_value: usize, spans: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "big".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("x".repeat(resource_value))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                            name: "op".into(),
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 2,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The estimate must not fall below what conversion really holds, or the memory bound leaks;
    /// nor be so far above it that honest requests are pushed back.
    #[test]
    fn the_estimate_covers_the_rows_conversion_builds() {
        for (value, spans) in [(0, 1), (10, 500), (4096, 300), (100_000, 40)] {
            let request = request(value, spans);
            let cost = trace_request_cost(&request);
            let built = spans_to_batch(&request, &Normalizer::default())
                .batch
                .get_array_memory_size() as u64;
            assert_eq!(cost.rows, spans as u64);
            assert!(
                cost.bytes >= built && cost.bytes <= built * 4,
                "value {value} × {spans} spans: estimated {} bytes, built {built}",
                cost.bytes
            );
        }
    }

    #[test]
    fn a_resource_repeated_on_many_spans_is_named_as_the_cause() {
        let cost = trace_request_cost(&request(1 << 20, 2_100));
        assert!(cost.bytes > 2_000_000_000, "{cost:?}");
        let text = cost.describe();
        assert!(
            text.contains("repeated on each of its 2100 items"),
            "{text}"
        );
    }
}
