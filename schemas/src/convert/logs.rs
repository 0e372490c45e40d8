use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

type Dict = arrow::array::StringDictionaryBuilder<Int32Type>;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::{Converted, Rejections, append_attributes, append_pairs, opt_str, to_ns};
use crate::attrs::{attribute_pairs, service_name, value_to_cow, value_to_string};
use crate::genai::{Normalizer, is_content_attribute, is_message_event};
use crate::redact::ContentPolicy;
use crate::tables::{Table, new_string_map_builder};

fn optional_id(bytes: &[u8], len: usize, what: &str) -> Result<Option<String>, String> {
    if bytes.is_empty() || bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if bytes.len() != len {
        return Err(format!(
            "{what} must be {len} bytes or empty, got {}",
            bytes.len()
        ));
    }
    Ok(Some(hex::encode(bytes)))
}

/// Converts an OTLP logs export request into rows of `logs`.
///
/// `time` is the record's time, or its observed time when the source did not know the time.
/// The content policy covers the bodies and message attributes of GenAI log events (the
/// event-based GenAI conventions send prompts and completions as log records).
pub fn logs_to_batch(request: &ExportLogsServiceRequest, normalizer: &Normalizer) -> Converted {
    let n: usize = request
        .resource_logs
        .iter()
        .flat_map(|rl| rl.scope_logs.iter())
        .map(|sl| sl.log_records.len())
        .sum();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut observed = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut severity_number = Int32Builder::with_capacity(n);
    let mut severity_text = Dict::with_capacity(n, 16, 256);
    let mut body = StringBuilder::with_capacity(n, 0);
    let mut event_name = Dict::with_capacity(n, 16, 256);
    let mut trace_id = StringBuilder::with_capacity(n, 0);
    let mut span_id = StringBuilder::with_capacity(n, 0);
    let mut flags = UInt32Builder::with_capacity(n);
    let mut service = Dict::with_capacity(n, 16, 256);
    let mut scope_name = Dict::with_capacity(n, 16, 256);
    let mut scope_version = Dict::with_capacity(n, 16, 256);
    let mut resource_attributes = new_string_map_builder(n);
    let mut attributes = new_string_map_builder(n);
    let mut dropped = UInt32Builder::with_capacity(n);
    let mut rejections = Rejections::default();

    for rl in &request.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service_name = service_name(resource);
        // Resource attributes repeat on every row: render them once per resource.
        let resource_pairs = attribute_pairs(resource);
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref();
            for record in &sl.log_records {
                let ids = optional_id(&record.trace_id, 16, "trace_id")
                    .and_then(|t| Ok((t, optional_id(&record.span_id, 8, "span_id")?)));
                let (tid, sid) = match ids {
                    Ok(ids) => ids,
                    Err(e) => {
                        rejections
                            .reject(|| format!("log record of service {service_name:?}: {e}"));
                        continue;
                    }
                };
                let t = if record.time_unix_nano != 0 {
                    record.time_unix_nano
                } else {
                    record.observed_time_unix_nano
                };
                let (Some(t), Some(o)) = (to_ns(t), to_ns(record.observed_time_unix_nano)) else {
                    rejections.reject(|| {
                        format!(
                            "log record of service {service_name:?}: timestamp past the year 2262"
                        )
                    });
                    continue;
                };
                time.append_value(t);
                observed.append_option(if o == 0 { None } else { Some(o) });
                severity_number.append_value(record.severity_number);
                severity_text.append_option(opt_str(&record.severity_text));
                let event = if record.event_name.is_empty() {
                    record
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "event.name")
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(value_to_string)
                        .unwrap_or_default()
                } else {
                    record.event_name.clone()
                };
                let text = record.body.as_ref().and_then(|b| match &b.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => value_to_string(b),
                });
                let genai_event = is_message_event(&event) || event.starts_with("gen_ai.");
                body.append_option(if genai_event {
                    text.and_then(|t| normalizer.content.apply(t))
                } else {
                    text
                });
                event_name.append_option(opt_str(&record.event_name));
                trace_id.append_option(tid);
                span_id.append_option(sid);
                flags.append_value(record.flags);
                service.append_value(&service_name);
                scope_name.append_option(scope.and_then(|s| opt_str(&s.name)));
                scope_version.append_option(scope.and_then(|s| opt_str(&s.version)));
                append_pairs(&mut resource_attributes, &resource_pairs);
                if genai_event && normalizer.content != ContentPolicy::Keep {
                    let pairs: Vec<(&str, Cow<'_, str>)> = record
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            let value = kv.value.as_ref().and_then(value_to_cow)?;
                            if is_content_attribute(&event, &kv.key) {
                                let kept = normalizer.content.apply(value.into_owned())?;
                                Some((kv.key.as_str(), Cow::Owned(kept)))
                            } else {
                                Some((kv.key.as_str(), value))
                            }
                        })
                        .collect();
                    append_pairs(&mut attributes, &pairs);
                } else {
                    append_attributes(&mut attributes, &record.attributes);
                }
                dropped.append_value(record.dropped_attributes_count);
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(observed.finish()),
        Arc::new(severity_number.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(body.finish()),
        Arc::new(event_name.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(flags.finish()),
        Arc::new(service.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
        Arc::new(resource_attributes.finish()),
        Arc::new(attributes.finish()),
        Arc::new(dropped.finish()),
    ];
    let batch = RecordBatch::try_new(Table::Logs.schema(), columns)
        .expect("log columns are built in schema order with schema types");
    Converted {
        batch,
        rejected: rejections.count,
        first_error: rejections.first,
        unpriced: 0,
    }
}
