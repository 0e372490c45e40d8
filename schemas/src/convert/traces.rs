use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

type Dict = arrow::array::StringDictionaryBuilder<Int32Type>;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use serde_json::json;

use super::{Converted, Rejections, append_pairs, hex_id, opt_str, to_ns};
use crate::attrs::{attribute_pairs, service_name, value_to_string};
use crate::genai::{Normalizer, extract};
use crate::tables::{Table, new_string_map_builder};

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "ok",
        Ok(StatusCode::Error) => "error",
        _ => "unset",
    }
}

struct Ids {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    start: i64,
    end: i64,
}

fn validate(span: &Span) -> Result<Ids, String> {
    let trace_id = hex_id(&span.trace_id, 16, "trace_id")?;
    let span_id = hex_id(&span.span_id, 8, "span_id")?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(hex_id(&span.parent_span_id, 8, "parent_span_id")?)
    };
    let start =
        to_ns(span.start_time_unix_nano).ok_or("start_time_unix_nano is past the year 2262")?;
    let end = to_ns(span.end_time_unix_nano).ok_or("end_time_unix_nano is past the year 2262")?;
    Ok(Ids {
        trace_id,
        span_id,
        parent_span_id,
        start,
        end,
    })
}

/// Converts an OTLP trace export request into rows of `spans`.
pub fn spans_to_batch(request: &ExportTraceServiceRequest, normalizer: &Normalizer) -> Converted {
    let n: usize = request
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter())
        .map(|ss| ss.spans.len())
        .sum();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end_time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut duration = Int64Builder::with_capacity(n);
    let mut trace_id = StringBuilder::with_capacity(n, n * 32);
    let mut span_id = StringBuilder::with_capacity(n, n * 16);
    let mut parent_span_id = StringBuilder::with_capacity(n, n * 16);
    let mut trace_state = StringBuilder::with_capacity(n, 0);
    let mut name = Dict::with_capacity(n, 16, 256);
    let mut kind = Dict::with_capacity(n, 16, 256);
    let mut status_code = Dict::with_capacity(n, 16, 256);
    let mut status_message = StringBuilder::with_capacity(n, 0);
    let mut service = Dict::with_capacity(n, 16, 256);
    let mut scope_name = Dict::with_capacity(n, 16, 256);
    let mut scope_version = Dict::with_capacity(n, 16, 256);
    let mut resource_attributes = new_string_map_builder(n);
    let mut attributes = new_string_map_builder(n);
    let mut events = StringBuilder::with_capacity(n, 0);
    let mut links = StringBuilder::with_capacity(n, 0);
    let mut flags = UInt32Builder::with_capacity(n);
    let mut dropped_attributes = UInt32Builder::with_capacity(n);
    let mut dropped_events = UInt32Builder::with_capacity(n);
    let mut dropped_links = UInt32Builder::with_capacity(n);
    let mut gen_ai_system = Dict::with_capacity(n, 16, 256);
    let mut gen_ai_operation = Dict::with_capacity(n, 16, 256);
    let mut request_model = Dict::with_capacity(n, 16, 256);
    let mut response_model = Dict::with_capacity(n, 16, 256);
    let mut input_tokens = Int64Builder::with_capacity(n);
    let mut output_tokens = Int64Builder::with_capacity(n);
    let mut total_tokens = Int64Builder::with_capacity(n);
    let mut cache_read_tokens = Int64Builder::with_capacity(n);
    let mut cache_creation_tokens = Int64Builder::with_capacity(n);
    let mut reasoning_tokens = Int64Builder::with_capacity(n);
    let mut ttft = Int64Builder::with_capacity(n);
    let mut finish_reasons = ListBuilder::with_capacity(StringBuilder::with_capacity(n, 0), n);
    let mut temperature = Float64Builder::with_capacity(n);
    let mut max_tokens = Int64Builder::with_capacity(n);
    let mut error_type = Dict::with_capacity(n, 16, 256);
    let mut cost = Float64Builder::with_capacity(n);
    let mut input_messages = StringBuilder::with_capacity(n, 0);
    let mut output_messages = StringBuilder::with_capacity(n, 0);

    let mut rejections = Rejections::default();
    let mut unpriced = 0u64;

    for rs in &request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service_name = service_name(resource);
        // Resource attributes repeat on every row: render them once per resource.
        let resource_pairs = attribute_pairs(resource);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref();
            for span in &ss.spans {
                let ids = match validate(span) {
                    Ok(ids) => ids,
                    Err(e) => {
                        rejections.reject(|| {
                            format!("span {:?} of service {service_name:?}: {e}", span.name)
                        });
                        continue;
                    }
                };
                let (g, rest) = extract(
                    &span.attributes,
                    &span.events,
                    span.start_time_unix_nano,
                    normalizer,
                );
                time.append_value(ids.start);
                end_time.append_value(ids.end);
                duration.append_value(ids.end.saturating_sub(ids.start));
                trace_id.append_value(&ids.trace_id);
                span_id.append_value(&ids.span_id);
                parent_span_id.append_option(ids.parent_span_id.as_deref());
                trace_state.append_option(opt_str(&span.trace_state));
                name.append_value(&span.name);
                kind.append_value(kind_name(span.kind));
                let code = span.status.as_ref().map(|s| s.code).unwrap_or(0);
                status_code.append_value(status_name(code));
                status_message
                    .append_option(span.status.as_ref().and_then(|s| opt_str(&s.message)));
                service.append_value(&service_name);
                scope_name.append_option(scope.and_then(|s| opt_str(&s.name)));
                scope_version.append_option(scope.and_then(|s| opt_str(&s.version)));
                append_pairs(&mut resource_attributes, &resource_pairs);
                append_pairs(&mut attributes, &rest);
                events.append_option(events_json(span, normalizer));
                links.append_option(links_json(span, normalizer));
                flags.append_value(span.flags);
                dropped_attributes.append_value(span.dropped_attributes_count);
                dropped_events.append_value(span.dropped_events_count);
                dropped_links.append_value(span.dropped_links_count);
                gen_ai_system.append_option(g.system.as_deref());
                gen_ai_operation.append_option(g.operation.as_deref());
                request_model.append_option(g.request_model.as_deref());
                response_model.append_option(g.response_model.as_deref());
                input_tokens.append_option(g.input_tokens);
                output_tokens.append_option(g.output_tokens);
                total_tokens.append_option(g.total_tokens);
                cache_read_tokens.append_option(g.cache_read_tokens);
                cache_creation_tokens.append_option(g.cache_creation_tokens);
                reasoning_tokens.append_option(g.reasoning_tokens);
                ttft.append_option(g.ttft_ns);
                match &g.finish_reasons {
                    Some(list) => {
                        for r in list {
                            finish_reasons.values().append_value(r);
                        }
                        finish_reasons.append(true);
                    }
                    None => finish_reasons.append(false),
                }
                temperature.append_option(g.request_temperature);
                max_tokens.append_option(g.request_max_tokens);
                let error = g.error_type.clone().or_else(|| {
                    (status_name(code) == "error")
                        .then(|| exception_type(span))
                        .flatten()
                });
                error_type.append_option(error.as_deref());
                cost.append_option(g.cost_usd);
                input_messages.append_option(g.input_messages.as_deref());
                output_messages.append_option(g.output_messages.as_deref());
                if g.unpriced_model {
                    unpriced += 1;
                }
            }
        }
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(end_time.finish()),
        Arc::new(duration.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent_span_id.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(service.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
        Arc::new(resource_attributes.finish()),
        Arc::new(attributes.finish()),
        Arc::new(events.finish()),
        Arc::new(links.finish()),
        Arc::new(flags.finish()),
        Arc::new(dropped_attributes.finish()),
        Arc::new(dropped_events.finish()),
        Arc::new(dropped_links.finish()),
        Arc::new(gen_ai_system.finish()),
        Arc::new(gen_ai_operation.finish()),
        Arc::new(request_model.finish()),
        Arc::new(response_model.finish()),
        Arc::new(input_tokens.finish()),
        Arc::new(output_tokens.finish()),
        Arc::new(total_tokens.finish()),
        Arc::new(cache_read_tokens.finish()),
        Arc::new(cache_creation_tokens.finish()),
        Arc::new(reasoning_tokens.finish()),
        Arc::new(ttft.finish()),
        Arc::new(finish_reasons.finish()),
        Arc::new(temperature.finish()),
        Arc::new(max_tokens.finish()),
        Arc::new(error_type.finish()),
        Arc::new(cost.finish()),
        Arc::new(input_messages.finish()),
        Arc::new(output_messages.finish()),
    ];
    let batch = RecordBatch::try_new(Table::Spans.schema(), columns)
        .expect("span columns are built in schema order with schema types");
    Converted {
        batch,
        rejected: rejections.count,
        first_error: rejections.first,
        unpriced,
    }
}

/// `exception.type` of the span's exception event, the documented fallback for `error.type`.
fn exception_type(span: &Span) -> Option<String> {
    span.events
        .iter()
        .filter(|e| e.name == "exception")
        .flat_map(|e| e.attributes.iter())
        .find(|kv| kv.key == "exception.type")
        .and_then(|kv| kv.value.as_ref())
        .and_then(value_to_string)
}

/// Events as JSON; the content policy covers their message text (prompts often travel in events).
fn events_json(span: &Span, normalizer: &Normalizer) -> Option<String> {
    if span.events.is_empty() {
        return None;
    }
    let list: Vec<_> = span
        .events
        .iter()
        .map(|e| {
            let mut o = json!({"time_unix_nano": e.time_unix_nano, "name": e.name});
            if !e.attributes.is_empty() {
                o["attributes"] =
                    serde_json::Value::Object(normalizer.attributes_json(&e.name, &e.attributes));
            }
            if e.dropped_attributes_count > 0 {
                o["dropped_attributes_count"] = e.dropped_attributes_count.into();
            }
            o
        })
        .collect();
    Some(serde_json::Value::Array(list).to_string())
}

fn links_json(span: &Span, normalizer: &Normalizer) -> Option<String> {
    if span.links.is_empty() {
        return None;
    }
    let list: Vec<_> = span
        .links
        .iter()
        .map(|l| {
            let mut o =
                json!({"trace_id": hex::encode(&l.trace_id), "span_id": hex::encode(&l.span_id)});
            if !l.trace_state.is_empty() {
                o["trace_state"] = l.trace_state.clone().into();
            }
            if !l.attributes.is_empty() {
                o["attributes"] =
                    serde_json::Value::Object(normalizer.attributes_json("", &l.attributes));
            }
            if l.flags != 0 {
                o["flags"] = l.flags.into();
            }
            if l.dropped_attributes_count > 0 {
                o["dropped_attributes_count"] = l.dropped_attributes_count.into();
            }
            o
        })
        .collect();
    Some(serde_json::Value::Array(list).to_string())
}
