//! Prometheus remote-write 1.0 at `POST /api/v1/write` on the OTLP/HTTP listener: a
//! snappy-compressed `WriteRequest`, stored as the rows the same OTLP gauge points would make,
//! through the same ingest path as OTLP (WAL, memory bound, pushback with 503 and `Retry-After`).
//!
//! `job` and `instance` become the resource's `service.name` and `service.instance.id`, the other
//! labels the points' attributes, so that PromQL shows the series under exactly the labels they
//! were written with. A series that cannot be stored (no `__name__`, a label named twice, a sample
//! timed too far ahead) is reported in a 400 answer naming it; the rest of the request is kept.
//! Prometheus does not retry a 4xx, so nothing is written twice.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use vigil_schemas::Table;
use vigil_schemas::convert::{GaugeResource, GaugeSeries};

use super::{Ingest, IngestError};
use crate::auth::{Sender, mark_resource};
use crate::telemetry::add;

/// `prometheus.WriteRequest` (remote-write 1.0).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at a time in milliseconds.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A write request's series as rows to store, and what could not be taken from it.
pub struct Prepared<'a> {
    pub resources: Vec<GaugeResource<'a>>,
    pub samples: u64,
    pub rejected_samples: u64,
    pub errors: Vec<String>,
}

/// Takes a write request's series as gauges, one resource per `job`/`instance` (marked with who
/// sent them), their other labels as attributes.
pub fn prepare(write: &WriteRequest, sender: Sender) -> Prepared<'_> {
    let help: HashMap<&str, &str> = write
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m.help.as_str()))
        .collect();
    let mut resources: HashMap<(&str, &str), Vec<GaugeSeries<'_>>> = HashMap::new();
    let (mut samples, mut rejected_samples) = (0u64, 0u64);
    let mut errors = Vec::new();
    for (n, series) in write.timeseries.iter().enumerate() {
        let mut name = None;
        let (mut job, mut instance) = ("", "");
        let mut attributes = Vec::with_capacity(series.labels.len());
        let mut seen: Vec<&str> = Vec::with_capacity(series.labels.len());
        let mut problem = None;
        for label in &series.labels {
            if seen.contains(&label.name.as_str()) {
                problem = Some(format!("label {:?} appears twice", label.name));
                break;
            }
            seen.push(&label.name);
            if label.name.is_empty() {
                problem = Some("a label has an empty name".to_string());
                break;
            }
            match label.name.as_str() {
                "__name__" => name = Some(label.value.as_str()),
                "job" => job = label.value.as_str(),
                "instance" => instance = label.value.as_str(),
                _ if label.value.is_empty() => {}
                _ => attributes.push(string_attribute(&label.name, &label.value)),
            }
        }
        let name = match (problem, name) {
            (None, Some(name)) if !name.is_empty() => name,
            (problem, _) => {
                rejected_samples += series.samples.len() as u64;
                if errors.len() < 10 {
                    errors.push(format!(
                        "series {n} ({}): {}",
                        describe(&series.labels),
                        problem.unwrap_or_else(|| "no __name__ label".to_string())
                    ));
                }
                continue;
            }
        };
        samples += series.samples.len() as u64;
        resources
            .entry((job, instance))
            .or_default()
            .push(GaugeSeries {
                name,
                description: help.get(name).copied().unwrap_or_default(),
                attributes,
                samples: series
                    .samples
                    .iter()
                    .map(|s| {
                        (
                            (s.timestamp.max(0) as u64).saturating_mul(1_000_000),
                            s.value,
                        )
                    })
                    .collect(),
            });
    }
    let resources = resources
        .into_iter()
        .map(|((job, instance), series)| {
            let mut attributes = Vec::new();
            if !job.is_empty() {
                attributes.push(string_attribute("service.name", job));
            }
            if !instance.is_empty() {
                attributes.push(string_attribute("service.instance.id", instance));
            }
            mark_resource(&mut attributes, sender);
            GaugeResource { attributes, series }
        })
        .collect();
    Prepared {
        resources,
        samples,
        rejected_samples,
        errors,
    }
}

fn describe(labels: &[Label]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .take(8)
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into() + "\n").into_response()
}

/// `POST /api/v1/write`.
pub async fn write(
    State(ingest): State<Arc<Ingest>>,
    sender: Option<axum::Extension<Sender>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let telemetry = ingest.telemetry();
    let bad = |status: StatusCode, message: String| {
        add(&telemetry.signal(Table::Metrics).bad_requests, 1);
        tracing::debug!(%status, %message, "remote-write request refused");
        refuse(status, message)
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/x-protobuf" {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {content_type:?}; remote-write takes application/x-protobuf (snappy-compressed prometheus.WriteRequest)"
            ),
        );
    }
    if content_type.contains("io.prometheus.write.v2") {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "remote-write 2.0 is not supported; send remote-write 1.0 (protobuf_message: prometheus.WriteRequest)".to_string(),
        );
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("snappy");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Encoding {encoding:?}; remote-write bodies are snappy-compressed"
            ),
        );
    }
    let limit = ingest.limits().max_request_bytes;
    let compressed = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body could not be read within the limit of {limit} bytes: {e}"),
            );
        }
    };
    match snap::raw::decompress_len(&compressed) {
        Ok(len) if len > limit => {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "decompressed body would be {len} bytes, over the limit of {limit} (limits.max_request_bytes)"
                ),
            );
        }
        Ok(_) => {}
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("body is not snappy-compressed (block format): {e}"),
            );
        }
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(&compressed) {
        Ok(raw) => raw,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("body is not valid snappy: {e}"),
            );
        }
    };
    let write = match WriteRequest::decode(raw.as_slice()) {
        Ok(write) => write,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("body is not a valid prometheus.WriteRequest: {e}"),
            );
        }
    };
    let converted = prepare(&write, sender.map_or(Sender::Anyone, |s| s.0));
    let stored = if converted.samples > 0 {
        ingest.gauge_series(&converted.resources).await
    } else {
        Ok(Default::default())
    };
    match stored {
        Ok(accepted) => {
            let rejected = converted.rejected_samples + accepted.rejected;
            if rejected == 0 {
                return StatusCode::NO_CONTENT.into_response();
            }
            let mut errors = converted.errors;
            if let Some(message) = accepted.message {
                errors.push(message);
            }
            add(&telemetry.signal(Table::Metrics).bad_requests, 1);
            refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{rejected} of {} samples were not stored (the others were): {}",
                    converted.samples + converted.rejected_samples,
                    errors.join("; ")
                ),
            )
        }
        // Pushback is a 503, not OTLP's 429: the remote-write spec says senders MUST retry a
        // 5xx and only MAY retry a 429, and Prometheus 2 drops a batch answered 429 unless
        // `retry_on_http_429` is set.
        Err(IngestError::Overloaded {
            message,
            retry_after,
        }) => {
            let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, message);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
        Err(IngestError::TooLarge(message)) => bad(StatusCode::PAYLOAD_TOO_LARGE, message),
        Err(IngestError::Storage(message)) => refuse(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|(t, v)| Sample {
                    value: *v,
                    timestamp: *t,
                })
                .collect(),
        }
    }

    #[test]
    fn job_and_instance_go_to_the_resource_and_bad_series_are_named() {
        let write = WriteRequest {
            timeseries: vec![
                series(
                    &[
                        ("__name__", "up"),
                        ("job", "node"),
                        ("instance", "h:9100"),
                        ("zone", "a"),
                    ],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                series(&[("job", "node")], &[(1000, 1.0)]),
                series(&[("__name__", "x"), ("a", "1"), ("a", "2")], &[(1000, 1.0)]),
            ],
            metadata: vec![],
        };
        let converted = prepare(&write, Sender::Anyone);
        assert_eq!(converted.samples, 2);
        assert_eq!(converted.rejected_samples, 2);
        assert!(
            converted.errors[0].contains("no __name__"),
            "{:?}",
            converted.errors
        );
        assert!(
            converted.errors[1].contains("appears twice"),
            "{:?}",
            converted.errors
        );
        let resources = &converted.resources;
        assert_eq!(resources.len(), 1);
        let keys: Vec<&str> = resources[0]
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["service.name", "service.instance.id"]);
        let series = &resources[0].series[0];
        assert_eq!(series.name, "up");
        assert_eq!(series.samples, [(1_000_000_000, 1.0), (2_000_000_000, 0.0)]);
        assert_eq!(series.attributes.len(), 1);
        // A GPU exporter's token marks the resource as its.
        let marked = prepare(&write, Sender::GpuExporter);
        assert!(
            marked.resources[0]
                .attributes
                .iter()
                .any(|a| a.key == crate::auth::SENDER_ATTRIBUTE)
        );
    }
}
