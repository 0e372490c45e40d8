//! OTLP export requests → Arrow record batches, one per table.
//!
//! A request's bad items (a span with a malformed id, a timestamp past 2262) are rejected one by
//! one and counted; the good items around them are kept, as OTLP's partial success asks.

mod cost;
mod logs;
mod metrics;
mod traces;

pub use cost::{
    RequestCost, gauge_series_cost, logs_request_cost, metrics_request_cost, trace_request_cost,
};
pub use logs::logs_to_batch;
pub use metrics::{GaugeResource, GaugeSeries, gauge_series_to_batch, metrics_to_batch};
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

#[cfg(test)]
mod content_policy_tests {
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::{logs_to_batch, spans_to_batch};
    use crate::genai::{NormalizeConfig, Normalizer};
    use crate::redact::ContentPolicy;

    const SECRET: &str = "mail bob@example.com the launch codes";

    use crate::test_util::kv;

    fn event(name: &str, attributes: Vec<KeyValue>) -> Event {
        Event {
            time_unix_nano: 1_000,
            name: name.into(),
            attributes,
            ..Default::default()
        }
    }

    fn normalizer(content: ContentPolicy) -> Normalizer {
        Normalizer::new(&NormalizeConfig {
            content,
            ..NormalizeConfig::default()
        })
    }

    /// (events, links, input_messages, output_messages) of one span, as stored.
    fn stored_span(events: Vec<Event>, content: ContentPolicy) -> [Option<String>; 4] {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "chat gpt-4o".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2_000,
            attributes: vec![kv("gen_ai.request.model", "gpt-4o")],
            events,
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                attributes: vec![kv("gen_ai.prompt", SECRET), kv("link.kind", "retry")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = spans_to_batch(&request, &normalizer(content)).batch;
        ["events", "links", "input_messages", "output_messages"].map(|name| {
            let column = batch.column_by_name(name).unwrap().as_string::<i32>();
            (!column.is_null(0)).then(|| column.value(0).to_string())
        })
    }

    #[test]
    fn prompts_in_openllmetry_content_events_and_links_follow_the_policy() {
        let events = || {
            vec![
                event("gen_ai.content.prompt", vec![kv("gen_ai.prompt", SECRET)]),
                event(
                    "gen_ai.content.completion",
                    vec![kv("gen_ai.completion", "call 555-123-4567")],
                ),
            ]
        };
        let [events_json, links, input, output] = stored_span(events(), ContentPolicy::Keep);
        assert!(events_json.unwrap().contains(SECRET));
        assert!(links.unwrap().contains(SECRET));
        assert!(input.unwrap().contains(SECRET), "promoted from the event");
        assert!(output.unwrap().contains("555-123-4567"));

        let [events_json, links, input, output] = stored_span(events(), ContentPolicy::Drop);
        let (events_json, links) = (events_json.unwrap(), links.unwrap());
        assert!(
            !events_json.contains("launch codes") && !events_json.contains("555"),
            "{events_json}"
        );
        assert!(
            events_json.contains("gen_ai.content.prompt"),
            "the event itself stays"
        );
        assert!(
            !links.contains("launch codes") && links.contains("retry"),
            "{links}"
        );
        assert_eq!((input, output), (None, None));

        let [events_json, links, input, _] = stored_span(events(), ContentPolicy::Redact);
        for text in [events_json.unwrap(), links.unwrap(), input.unwrap()] {
            assert!(!text.contains("bob@example.com"), "{text}");
            assert!(text.contains("launch codes"), "{text}");
        }
    }

    #[test]
    fn event_based_genai_messages_are_promoted_and_follow_the_policy() {
        let events = || {
            vec![
                event("gen_ai.system.message", vec![kv("content", "be brief")]),
                event("gen_ai.user.message", vec![kv("content", SECRET)]),
                event(
                    "gen_ai.choice",
                    vec![kv("message", "done"), kv("finish_reason", "stop")],
                ),
            ]
        };
        let [_, _, input, output] = stored_span(events(), ContentPolicy::Keep);
        let input: serde_json::Value = serde_json::from_str(&input.unwrap()).unwrap();
        assert_eq!(input[0]["role"], "system");
        assert_eq!(input[1]["role"], "user");
        assert_eq!(input[1]["content"], SECRET);
        assert!(output.unwrap().contains("done"));
        let [events_json, _, input, output] = stored_span(events(), ContentPolicy::Drop);
        let events_json = events_json.unwrap();
        assert!(!events_json.contains("launch codes") && !events_json.contains("be brief"));
        assert!(
            events_json.contains("\"finish_reason\":\"stop\""),
            "{events_json}"
        );
        assert_eq!((input, output), (None, None));
    }

    #[test]
    fn genai_log_events_follow_the_policy_and_other_logs_do_not() {
        let record = |event_name: &str, body: &str| LogRecord {
            time_unix_nano: 1,
            event_name: event_name.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.into())),
            }),
            attributes: vec![kv("content", SECRET), kv("gen_ai.system", "openai")],
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        record("gen_ai.user.message", SECRET),
                        record("", "disk almost full"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let stored = |content| {
            let batch = logs_to_batch(&request, &normalizer(content)).batch;
            let body = batch
                .column_by_name("body")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let attributes = arrow::util::pretty::pretty_format_columns(
                "attributes",
                &[batch.column_by_name("attributes").unwrap().clone()],
            )
            .unwrap()
            .to_string();
            (body, attributes)
        };
        let (body, attributes) = stored(ContentPolicy::Keep);
        assert_eq!(body.value(0), SECRET);
        assert!(attributes.contains("launch codes"));
        let (body, attributes) = stored(ContentPolicy::Drop);
        assert!(body.is_null(0), "a GenAI event's body is message text");
        assert_eq!(
            body.value(1),
            "disk almost full",
            "other logs are not touched"
        );
        let first_row = attributes.lines().nth(3).unwrap_or("");
        assert!(
            !first_row.contains("launch codes") && first_row.contains("openai"),
            "{attributes}"
        );
    }
}
