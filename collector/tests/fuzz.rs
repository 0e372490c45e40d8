//! Fuzzing on stable, bounded in time: bytes from outside (OTLP protobuf and JSON for all three
//! signals, WAL records) and SQL text go through the same decode → price → convert → store and
//! parse → plan paths the receivers use, and must come back as values or errors, never a panic.
//! Inputs are mutations of valid requests (so the decoders get past the first byte) and raw
//! noise. `PROPTEST_CASES` raises the case count for a longer run; a crash found becomes a
//! regression case below.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;
use vigil_schemas::convert::{
    logs_request_cost, logs_to_batch, metrics_request_cost, metrics_to_batch, spans_to_batch,
    trace_request_cost,
};
use vigil_schemas::genai::{NormalizeConfig, Normalizer};
use vigil_schemas::redact::ContentPolicy;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", "fuzz")],
        ..Default::default()
    })
}

fn traces() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "chat gpt-4o".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_500_000_000,
                    attributes: vec![
                        text("gen_ai.request.model", "gpt-4o"),
                        text("gen_ai.prompt.0.content", "hi bob@example.com"),
                        text("gen_ai.usage.input_tokens", "12"),
                    ],
                    events: vec![Event {
                        name: "gen_ai.content.prompt".into(),
                        attributes: vec![text("gen_ai.prompt", "[{\"role\":\"user\"}]")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics() -> Vec<u8> {
    let point = NumberDataPoint {
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(1.5)),
        attributes: vec![text("gpu", "0")],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "DCGM_FI_DEV_GPU_TEMP".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![point],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000,
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    event_name: "gen_ai.user.message".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("hello".into())),
                    }),
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn normalizer() -> Normalizer {
    Normalizer::new(&NormalizeConfig {
        content: ContentPolicy::Redact,
        ..NormalizeConfig::default()
    })
}

/// What a receiver does with a body it decoded: price it, then convert it (bounded: a body the
/// price says is too large is refused before conversion, as the receivers do).
fn ingest(signal: usize, body: &[u8], json: bool) {
    const BUDGET: u64 = 64 << 20;
    let normalizer = normalizer();
    match signal {
        0 => {
            let request = if json {
                serde_json::from_slice::<ExportTraceServiceRequest>(body).ok()
            } else {
                ExportTraceServiceRequest::decode(body).ok()
            };
            if let Some(request) = request
                && trace_request_cost(&request).bytes < BUDGET
            {
                spans_to_batch(&request, &normalizer);
            }
        }
        1 => {
            let request = if json {
                serde_json::from_slice::<ExportMetricsServiceRequest>(body).ok()
            } else {
                ExportMetricsServiceRequest::decode(body).ok()
            };
            if let Some(request) = request
                && metrics_request_cost(&request).bytes < BUDGET
            {
                metrics_to_batch(&request);
            }
        }
        _ => {
            let request = if json {
                serde_json::from_slice::<ExportLogsServiceRequest>(body).ok()
            } else {
                ExportLogsServiceRequest::decode(body).ok()
            };
            if let Some(request) = request
                && logs_request_cost(&request).bytes < BUDGET
            {
                logs_to_batch(&request, &normalizer);
            }
        }
    }
}

fn valid(signal: usize, json: bool) -> Vec<u8> {
    let bytes = [traces, metrics, logs][signal]();
    if !json {
        return bytes;
    }
    match signal {
        0 => serde_json::to_vec(&ExportTraceServiceRequest::decode(&bytes[..]).unwrap()),
        1 => serde_json::to_vec(&ExportMetricsServiceRequest::decode(&bytes[..]).unwrap()),
        _ => serde_json::to_vec(&ExportLogsServiceRequest::decode(&bytes[..]).unwrap()),
    }
    .unwrap()
}

/// Byte edits applied to a valid body: overwrite, insert, delete, truncate.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, at, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_otlp_protobuf_and_json_never_panic(
        signal in 0usize..3,
        json in any::<bool>(),
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..12),
    ) {
        ingest(signal, &mutate(valid(signal, json), &edits), json);
    }

    #[test]
    fn noise_as_otlp_never_panics(
        signal in 0usize..3,
        json in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        ingest(signal, &body, json);
    }

    #[test]
    fn mutated_wal_payloads_never_panic(
        edits in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8),
    ) {
        let request = ExportTraceServiceRequest::decode(&traces()[..]).unwrap();
        let batch = spans_to_batch(&request, &normalizer()).batch;
        let payload = vigil_collector::wal::encode_batch(&batch).unwrap();
        let _ = vigil_collector::wal::decode_batch(&mutate(payload, &edits));
    }
}

/// SQL text from outside: parsed and planned by the engine, answered or refused, never a panic.
#[test]
fn arbitrary_sql_is_answered_or_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = vigil_collector::storage::Store::open(
            vigil_collector::storage::StorageConfig {
                data_dir: dir.path().to_path_buf(),
                ..Default::default()
            },
            Arc::new(vigil_collector::telemetry::Telemetry::default()),
        )
        .unwrap();
        let engine = vigil_collector::query::QueryEngine::new(
            store,
            vigil_collector::query::QueryConfig::default(),
        )
        .unwrap();
        let seeds = [
            "SELECT count(*) FROM spans WHERE time > now() - interval '1 hour'",
            "SELECT attributes['gpu'], max(value) FROM metrics GROUP BY 1",
            "SELECT * FROM logs ORDER BY time DESC LIMIT 5",
            "SELECT approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) FROM spans",
        ];
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 200,
            ..ProptestConfig::default()
        });
        let strategy = (
            0usize..seeds.len(),
            proptest::collection::vec((any::<u8>(), any::<usize>(), 32u8..127), 1..6),
        );
        let mut answered = 0;
        for _ in 0..200 {
            let (seed, edits) = strategy.new_tree(&mut runner).unwrap().current();
            let sql = String::from_utf8_lossy(&mutate(seeds[seed].as_bytes().to_vec(), &edits))
                .into_owned();
            // Ok or Err, both fine; a panic fails the test with the SQL in the message.
            let outcome = tokio::spawn({
                let engine = engine.clone();
                let sql = sql.clone();
                async move { engine.query(&sql).await.map(|_| ()) }
            })
            .await;
            match outcome {
                Ok(result) => answered += usize::from(result.is_ok()),
                Err(_) => panic!("the query engine panicked on {sql:?}"),
            }
        }
        // Mutations both keep queries valid and break them: the engine saw both kinds.
        assert!((1..200).contains(&answered), "{answered} of 200 answered");
    });
}
