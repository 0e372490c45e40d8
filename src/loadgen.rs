//! `vigil loadgen`: synthetic OpenLLMetry-shaped traffic at a target rate.
//!
//! Each trace is a workflow span with one to three LLM calls under it (and sometimes a tool call),
//! across several providers and models, half named by the current GenAI conventions and half by
//! the older OpenLLMetry ones. Token counts and latencies are log-normal (heavy-tailed); about 2%
//! of calls fail.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram as OtlpHistogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use tokio::sync::{Mutex, Semaphore};

use crate::cli::{LoadgenArgs, Protocol};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}
fn f(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

struct Model {
    provider_current: &'static str,
    provider_legacy: &'static str,
    name: &'static str,
    /// Seconds per output token.
    token_seconds: f64,
    weight: u32,
}

const MODELS: &[Model] = &[
    Model {
        provider_current: "openai",
        provider_legacy: "OpenAI",
        name: "gpt-4o",
        token_seconds: 0.012,
        weight: 30,
    },
    Model {
        provider_current: "openai",
        provider_legacy: "OpenAI",
        name: "gpt-4o-mini",
        token_seconds: 0.006,
        weight: 25,
    },
    Model {
        provider_current: "anthropic",
        provider_legacy: "Anthropic",
        name: "claude-3-5-sonnet-20241022",
        token_seconds: 0.014,
        weight: 15,
    },
    Model {
        provider_current: "anthropic",
        provider_legacy: "Anthropic",
        name: "claude-3-5-haiku-20241022",
        token_seconds: 0.007,
        weight: 10,
    },
    Model {
        provider_current: "azure.ai.openai",
        provider_legacy: "az.ai.openai",
        name: "gpt-4o",
        token_seconds: 0.013,
        weight: 10,
    },
    Model {
        provider_current: "aws.bedrock",
        provider_legacy: "AWS Bedrock",
        name: "anthropic.claude-3-haiku-20240307-v1:0",
        token_seconds: 0.008,
        weight: 5,
    },
    Model {
        provider_current: "vllm",
        provider_legacy: "vllm",
        name: "llama-3.1-70b-instruct",
        token_seconds: 0.020,
        weight: 5,
    },
];

const SERVICES: &[&str] = &["chat-api", "support-bot", "rag-search", "summarizer"];
const ERRORS: &[&str] = &[
    "rate_limit_exceeded",
    "timeout",
    "500",
    "context_length_exceeded",
];
const FINISH: &[&str] = &["stop", "stop", "stop", "stop", "length", "tool_calls"];

/// Random traffic, reproducible from the seed.
pub(crate) struct Generator {
    rng: StdRng,
    input_tokens: LogNormal<f64>,
    output_tokens: LogNormal<f64>,
    ttft: LogNormal<f64>,
    noise: LogNormal<f64>,
    total_weight: u32,
    content: bool,
    /// The shift applied while `drifting`.
    pub(crate) drift: Drift,
    pub(crate) drifting: bool,
}

/// A known shift for drift experiments (1.0 and `None` change nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drift {
    pub(crate) input_tokens: f64,
    pub(crate) output_tokens: f64,
    pub(crate) latency: f64,
    pub(crate) error_rate: Option<f64>,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            input_tokens: 1.0,
            output_tokens: 1.0,
            latency: 1.0,
            error_rate: None,
        }
    }
}

/// One LLM call, for the optional metrics and logs.
pub(crate) struct Call {
    model: &'static str,
    provider: &'static str,
    input: i64,
    output: i64,
    seconds: f64,
    error: bool,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    end_ns: u64,
}

impl Generator {
    pub(crate) fn new(seed: u64, content: bool) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            input_tokens: LogNormal::new(800f64.ln(), 1.0).expect("valid log-normal"),
            output_tokens: LogNormal::new(200f64.ln(), 0.8).expect("valid log-normal"),
            ttft: LogNormal::new(0.35f64.ln(), 0.5).expect("valid log-normal"),
            noise: LogNormal::new(0.0, 0.2).expect("valid log-normal"),
            total_weight: MODELS.iter().map(|m| m.weight).sum(),
            content,
            drift: Drift::default(),
            drifting: false,
        }
    }

    fn pick_model(&mut self) -> &'static Model {
        let mut x = self.rng.gen_range(0..self.total_weight);
        for m in MODELS {
            if x < m.weight {
                return m;
            }
            x -= m.weight;
        }
        &MODELS[0]
    }

    fn id(&mut self, len: usize) -> Vec<u8> {
        let mut id = vec![0u8; len];
        self.rng.fill(&mut id[..]);
        id[0] |= 1; // never the all-zero invalid id
        id
    }

    /// A trace of `workflow` + LLM calls (+ a tool call), appended to `spans`.
    fn trace(&mut self, now_ns: u64, spans: &mut Vec<Span>, calls: &mut Vec<Call>) {
        let trace_id = self.id(16);
        let root_id = self.id(8);
        let calls_in_trace = self.rng.gen_range(1..=3);
        let mut t = now_ns.saturating_sub(self.rng.gen_range(5_000_000_000..30_000_000_000u64));
        let root_start = t;
        let mut children = Vec::with_capacity(4);
        for _ in 0..calls_in_trace {
            let (span, call) = self.llm_span(&trace_id, &root_id, t);
            t = span.end_time_unix_nano + self.rng.gen_range(1_000_000..20_000_000);
            calls.push(call);
            children.push(span);
        }
        if self.rng.gen_bool(0.3) {
            let start = t;
            let end = start + self.rng.gen_range(5_000_000..300_000_000);
            children.push(Span {
                trace_id: trace_id.clone(),
                span_id: self.id(8),
                parent_span_id: root_id.clone(),
                name: "execute_tool search".into(),
                kind: span::SpanKind::Internal as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: vec![
                    s("gen_ai.operation.name", "execute_tool"),
                    s("gen_ai.tool.name", "search"),
                ],
                ..Default::default()
            });
            t = end;
        }
        spans.push(Span {
            trace_id,
            span_id: root_id,
            name: "workflow".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: root_start,
            end_time_unix_nano: t + 1_000_000,
            attributes: vec![
                s("traceloop.span.kind", "workflow"),
                s("http.route", "/v1/chat"),
            ],
            ..Default::default()
        });
        spans.extend(children);
    }

    fn llm_span(&mut self, trace_id: &[u8], parent: &[u8], start: u64) -> (Span, Call) {
        let model = self.pick_model();
        let drift = if self.drifting {
            self.drift
        } else {
            Drift::default()
        };
        let input = ((self.input_tokens.sample(&mut self.rng) * drift.input_tokens) as i64)
            .clamp(1, 128_000);
        let error = self
            .rng
            .gen_bool(drift.error_rate.unwrap_or(0.02).clamp(0.0, 1.0));
        let output = if error {
            0
        } else {
            ((self.output_tokens.sample(&mut self.rng) * drift.output_tokens) as i64)
                .clamp(1, 16_000)
        };
        let ttft =
            self.ttft.sample(&mut self.rng) * (1.0 + input as f64 / 20_000.0) * drift.latency;
        let seconds = if error {
            ttft
        } else {
            ttft + output as f64
                * model.token_seconds
                * self.noise.sample(&mut self.rng)
                * drift.latency
        };
        let end = start + (seconds * 1e9) as u64;
        let current = self.rng.gen_bool(0.5);
        let temperature = [0.0, 0.2, 0.7, 1.0][self.rng.gen_range(0..4)];
        let finish = FINISH[self.rng.gen_range(0..FINISH.len())];
        let mut attributes = Vec::with_capacity(16);
        if current {
            attributes.extend([
                s("gen_ai.provider.name", model.provider_current),
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", model.name),
                s("gen_ai.response.model", model.name),
                i("gen_ai.usage.input_tokens", input),
                i("gen_ai.usage.output_tokens", output),
                f("gen_ai.request.temperature", temperature),
                i("gen_ai.request.max_tokens", 4096),
                f("gen_ai.response.time_to_first_chunk", ttft),
            ]);
            if !error {
                attributes.push(kv(
                    "gen_ai.response.finish_reasons",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::StringValue(finish.into())),
                        }],
                    }),
                ));
            }
            if self.content {
                attributes.push(s("gen_ai.input.messages", r#"[{"role":"user","parts":[{"type":"text","content":"Summarize the ticket for bob@example.com"}]}]"#));
                attributes.push(s("gen_ai.output.messages", r#"[{"role":"assistant","parts":[{"type":"text","content":"The customer cannot log in."}]}]"#));
            }
        } else {
            attributes.extend([
                s("gen_ai.system", model.provider_legacy),
                s("llm.request.type", "chat"),
                s("gen_ai.request.model", model.name),
                s("gen_ai.response.model", model.name),
                i("gen_ai.usage.prompt_tokens", input),
                i("gen_ai.usage.completion_tokens", output),
                i("llm.usage.total_tokens", input + output),
                f("gen_ai.request.temperature", temperature),
                i("gen_ai.request.max_tokens", 4096),
                s("traceloop.workflow.name", "support"),
            ]);
            if !error {
                attributes.push(s("gen_ai.completion.0.finish_reason", finish));
            }
            if self.content {
                attributes.push(s("gen_ai.prompt.0.role", "user"));
                attributes.push(s(
                    "gen_ai.prompt.0.content",
                    "Summarize the ticket for bob@example.com",
                ));
                attributes.push(s("gen_ai.completion.0.role", "assistant"));
                attributes.push(s(
                    "gen_ai.completion.0.content",
                    "The customer cannot log in.",
                ));
            }
        }
        let mut status = None;
        if error {
            attributes.push(s("error.type", ERRORS[self.rng.gen_range(0..ERRORS.len())]));
            status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: "upstream call failed".into(),
            });
        }
        let span_id = self.id(8);
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.clone(),
            parent_span_id: parent.to_vec(),
            name: format!("chat {}", model.name),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status,
            ..Default::default()
        };
        let call = Call {
            model: model.name,
            provider: model.provider_current,
            input,
            output,
            seconds,
            error,
            trace_id: trace_id.to_vec(),
            span_id,
            end_ns: end,
        };
        (span, call)
    }

    /// One export request of at least `spans` spans (whole traces), for `batch_id`.
    fn request(
        &mut self,
        spans: usize,
        batch_id: u64,
        run_id: &str,
    ) -> (ExportTraceServiceRequest, Vec<Call>) {
        self.request_at(now_ns(), spans, batch_id, run_id)
    }

    /// A request of about `spans` spans of traces ending around `now` (ns since the epoch).
    pub(crate) fn request_at(
        &mut self,
        now: u64,
        spans: usize,
        batch_id: u64,
        run_id: &str,
    ) -> (ExportTraceServiceRequest, Vec<Call>) {
        let service = SERVICES[self.rng.gen_range(0..SERVICES.len())];
        let mut list = Vec::with_capacity(spans + 8);
        let mut calls = Vec::new();
        while list.len() < spans {
            self.trace(now, &mut list, &mut calls);
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(service, run_id, batch_id)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai.v1".into(),
                        version: "0.40.0".into(),
                        ..Default::default()
                    }),
                    spans: list,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        (request, calls)
    }
}

fn resource(service: &str, run_id: &str, batch_id: u64) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", service),
            s("deployment.environment", "loadgen"),
            s("telemetry.sdk.name", "vigil-loadgen"),
            s("loadgen.run", run_id),
            i("loadgen.batch", batch_id as i64),
        ],
        ..Default::default()
    }
}

/// Adds `host.name` to the request's resource: each service always runs on the same one of
/// `hosts`.
fn place_on_host(request: &mut ExportTraceServiceRequest, hosts: &[String]) {
    if hosts.is_empty() {
        return;
    }
    for resource_spans in &mut request.resource_spans {
        let Some(resource) = resource_spans.resource.as_mut() else {
            continue;
        };
        let service = resource.attributes.iter().find_map(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(Value::StringValue(v)),
            }) if kv.key == "service.name" => Some(v.clone()),
            _ => None,
        });
        let index = service
            .and_then(|name| SERVICES.iter().position(|s| *s == name))
            .unwrap_or(0);
        resource
            .attributes
            .push(s("host.name", &hosts[index % hosts.len()]));
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn metrics_request(
    calls: &[Call],
    service: &str,
    run_id: &str,
    batch_id: u64,
) -> ExportMetricsServiceRequest {
    let now = now_ns();
    let token_bounds = vec![
        1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
    ];
    let duration_bounds = vec![
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ];
    let mut token_points = Vec::new();
    let mut duration_points = Vec::new();
    for call in calls {
        let attrs = |extra: Option<&str>| {
            let mut a = vec![
                s("gen_ai.provider.name", call.provider),
                s("gen_ai.request.model", call.model),
                s("gen_ai.operation.name", "chat"),
            ];
            if let Some(t) = extra {
                a.push(s("gen_ai.token.type", t));
            }
            if call.error {
                a.push(s("error.type", "upstream"));
            }
            a
        };
        for (kind, value) in [("input", call.input as f64), ("output", call.output as f64)] {
            token_points.push(point(attrs(Some(kind)), value, &token_bounds, now));
        }
        duration_points.push(point(attrs(None), call.seconds, &duration_bounds, now));
    }
    let histogram = |name: &str, unit: &str, points| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Histogram(OtlpHistogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(service, run_id, batch_id)),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    histogram("gen_ai.client.token.usage", "{token}", token_points),
                    histogram("gen_ai.client.operation.duration", "s", duration_points),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn point(attributes: Vec<KeyValue>, value: f64, bounds: &[f64], now: u64) -> HistogramDataPoint {
    let mut counts = vec![0u64; bounds.len() + 1];
    let bucket = bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len());
    counts[bucket] = 1;
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: now.saturating_sub(1_000_000_000),
        time_unix_nano: now,
        count: 1,
        sum: Some(value),
        bucket_counts: counts,
        explicit_bounds: bounds.to_vec(),
        min: Some(value),
        max: Some(value),
        ..Default::default()
    }
}

fn logs_request(
    calls: &[Call],
    service: &str,
    run_id: &str,
    batch_id: u64,
) -> ExportLogsServiceRequest {
    let records = calls
        .iter()
        .map(|c| LogRecord {
            time_unix_nano: c.end_ns,
            observed_time_unix_nano: c.end_ns,
            severity_number: if c.error { 17 } else { 9 },
            severity_text: if c.error { "ERROR" } else { "INFO" }.into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(if c.error {
                    format!("{} call failed", c.model)
                } else {
                    format!(
                        "{} call finished: {} tokens in, {} out",
                        c.model, c.input, c.output
                    )
                })),
            }),
            trace_id: c.trace_id.clone(),
            span_id: c.span_id.clone(),
            attributes: vec![s("gen_ai.request.model", c.model)],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(service, run_id, batch_id)),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The outcome of one export attempt.
enum Outcome {
    Accepted {
        rejected: u64,
    },
    /// The collector pushed back; retry after the given delay.
    Throttled(Duration),
    Failed(String),
}

/// A gRPC codec that sends bytes already encoded as protobuf, so that a request is encoded once
/// and a retry costs no re-encoding.
#[derive(Clone)]
struct PreEncoded<U>(std::marker::PhantomData<U>);

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl<U: Message + Default + Send + 'static> tonic::codec::Codec for PreEncoded<U> {
    type Encode = bytes::Bytes;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<U, U>::raw_decoder(tonic::codec::BufferSettings::default())
    }
}

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone)]
enum Transport {
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        headers: Box<tonic::metadata::MetadataMap>,
    },
    Http {
        client: reqwest::Client,
        base: String,
    },
}

fn grpc_outcome<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
    rejected: impl Fn(&T) -> u64,
) -> Outcome {
    match result {
        Ok(response) => Outcome::Accepted {
            rejected: rejected(response.get_ref()),
        },
        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
            use tonic_types::StatusExt;
            let delay = status
                .get_details_retry_info()
                .and_then(|r| r.retry_delay)
                .unwrap_or(Duration::from_millis(200));
            Outcome::Throttled(delay)
        }
        Err(status) => Outcome::Failed(format!("{:?}: {}", status.code(), status.message())),
    }
}

impl Transport {
    async fn connect(protocol: Protocol, endpoint: &str) -> anyhow::Result<Transport> {
        // A bearer token, for a collector that requires one, the way OTel SDKs take it.
        let headers = crate::gpu_exporter_cmd::otlp_headers_from_env()?;
        match protocol {
            Protocol::Grpc => {
                let mut target = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .with_context(|| format!("invalid endpoint {endpoint}"))?;
                if endpoint.starts_with("https://") {
                    let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
                    if let Some(pem) = crate::gpu_exporter_cmd::otlp_certificate_from_env()? {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                    }
                    target = target.tls_config(tls)?;
                }
                let channel = target.connect().await.with_context(|| {
                    format!("could not connect to {endpoint}; is `vigil serve` running?")
                })?;
                Ok(Transport::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    headers: Box::new(headers),
                })
            }
            Protocol::Http => Ok(Transport::Http {
                client: {
                    let mut builder =
                        reqwest::Client::builder().default_headers(headers.into_headers());
                    if let Some(pem) = crate::gpu_exporter_cmd::otlp_certificate_from_env()? {
                        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                            .context("OTEL_EXPORTER_OTLP_CERTIFICATE")?
                        {
                            builder = builder.add_root_certificate(certificate);
                        }
                    }
                    builder.build().context("could not build the HTTP client")?
                },
                base: endpoint.trim_end_matches('/').to_string(),
            }),
        }
    }

    async fn send_http(client: &reqwest::Client, url: String, body: bytes::Bytes) -> Outcome {
        let response = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Outcome::Accepted { rejected: 0 },
            Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
                let secs = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                Outcome::Throttled(Duration::from_secs(secs))
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Outcome::Failed(format!("HTTP {status}: {text}"))
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Sends one pre-encoded export request of the given signal.
    async fn export(&self, signal: Signal, body: bytes::Bytes) -> Outcome {
        match self {
            Transport::Grpc { grpc, headers } => {
                let mut grpc = grpc.clone();
                if let Err(e) = grpc.ready().await {
                    return Outcome::Failed(format!("connection not ready: {e}"));
                }
                let path =
                    |p: &'static str| tonic::codegen::http::uri::PathAndQuery::from_static(p);
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = headers.as_ref().clone();
                match signal {
                    Signal::Traces => grpc_outcome(
                        grpc.unary(
                            request,
                            path(TRACE_EXPORT),
                            PreEncoded::<ExportTraceServiceResponse>(Default::default()),
                        )
                        .await,
                        |r| {
                            r.partial_success
                                .as_ref()
                                .map(|p| p.rejected_spans.max(0) as u64)
                                .unwrap_or(0)
                        },
                    ),
                    Signal::Metrics => grpc_outcome(
                        grpc.unary(
                            request,
                            path(METRICS_EXPORT),
                            PreEncoded::<ExportMetricsServiceResponse>(Default::default()),
                        )
                        .await,
                        |_| 0,
                    ),
                    Signal::Logs => grpc_outcome(
                        grpc.unary(
                            request,
                            path(LOGS_EXPORT),
                            PreEncoded::<ExportLogsServiceResponse>(Default::default()),
                        )
                        .await,
                        |_| 0,
                    ),
                }
            }
            Transport::Http { client, base } => {
                let path = match signal {
                    Signal::Traces => "/v1/traces",
                    Signal::Metrics => "/v1/metrics",
                    Signal::Logs => "/v1/logs",
                };
                Self::send_http(client, format!("{base}{path}"), body).await
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    failed_requests: AtomicU64,
    failed_spans: AtomicU64,
    request_bytes: AtomicU64,
}

/// Sends one request, retrying while the collector pushes back (as OTLP exporters do).
async fn with_retries<F, Fut>(mut attempt: F, deadline: Instant, stats: &Stats) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    loop {
        match attempt().await {
            Outcome::Throttled(delay) => {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
                if Instant::now() + delay > deadline {
                    return Outcome::Failed("still pushed back at the end of the run".into());
                }
                tokio::time::sleep(delay.min(Duration::from_secs(5))).await;
            }
            other => return other,
        }
    }
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| match args.protocol {
            Protocol::Grpc => "http://127.0.0.1:4317".into(),
            Protocol::Http => "http://127.0.0.1:4318".into(),
        });
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let transport = Transport::connect(args.protocol, &endpoint).await?;
    let ack_log: Option<Arc<Mutex<std::fs::File>>> = match &args.ack_log {
        Some(path) => Some(Arc::new(Mutex::new(open_ack_log(path)?))),
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let latencies = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new(3).context("histogram")?,
    ));
    let semaphore = Arc::new(Semaphore::new(args.concurrency));
    let max_spans = args.spans.unwrap_or(u64::MAX);
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let started = Instant::now();
    let deadline = started + duration + Duration::from_secs(30);
    let progress = (!args.quiet).then(|| progress_bar(args.spans));

    let mut generator = Generator::new(args.seed, args.content);
    generator.drift = Drift {
        input_tokens: args.drift_input_tokens,
        output_tokens: args.drift_output_tokens,
        latency: args.drift_latency,
        error_rate: args.drift_error_rate,
    };
    let mut batch_id = 0u64;
    let mut planned = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while planned < max_spans && started.elapsed() < duration {
        if args.rate > 0 {
            // Pace by the spans planned so far against the target rate.
            let due = Duration::from_secs_f64(planned as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        batch_id += 1;
        generator.drifting = args
            .drift_after
            .is_some_and(|after| started.elapsed() >= after);
        let want = args.batch.min((max_spans - planned) as usize);
        let (mut request, calls) = generator.request(want, batch_id, &run_id);
        place_on_host(&mut request, &args.host_names);
        let spans = request.resource_spans[0].scope_spans[0].spans.len() as u64;
        planned += spans;
        let service = SERVICES[batch_id as usize % SERVICES.len()];
        // With each request, the rows it should become (data points, log records), for the
        // ack log.
        let metrics = args.metrics.then(|| {
            let request = metrics_request(&calls, service, &run_id, batch_id);
            let points: usize = request.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|m| match &m.data {
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    _ => 0,
                })
                .sum();
            (bytes::Bytes::from(request.encode_to_vec()), points)
        });
        let logs = args.logs.then(|| {
            let request = logs_request(&calls, service, &run_id, batch_id);
            let records = request.resource_logs[0].scope_logs[0].log_records.len();
            (bytes::Bytes::from(request.encode_to_vec()), records)
        });
        let body = bytes::Bytes::from(request.encode_to_vec());
        drop(request);
        let transport = transport.clone();
        let stats = stats.clone();
        let latencies = latencies.clone();
        let ack_log = ack_log.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permit;
            stats
                .request_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            stats.sent.fetch_add(spans, Ordering::Relaxed);
            let t0 = Instant::now();
            let outcome = with_retries(
                || transport.export(Signal::Traces, body.clone()),
                deadline,
                &stats,
            )
            .await;
            let micros = t0.elapsed().as_micros() as u64;
            match outcome {
                Outcome::Accepted { rejected } => {
                    let _ = latencies.lock().map(|mut h| h.record(micros.max(1)));
                    stats
                        .accepted
                        .fetch_add(spans - rejected.min(spans), Ordering::Relaxed);
                    stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                    if let Some(log) = &ack_log {
                        let mut file = log.lock().await;
                        let _ = writeln!(file, "{batch_id} {spans}");
                        let _ = file.flush();
                    }
                }
                Outcome::Failed(message) => {
                    stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    stats.failed_spans.fetch_add(spans, Ordering::Relaxed);
                    tracing_free_warn(&message);
                }
                Outcome::Throttled(_) => unreachable!("with_retries resolves pushback"),
            }
            for (signal, request) in [(Signal::Metrics, metrics), (Signal::Logs, logs)] {
                let Some((body, rows)) = request else {
                    continue;
                };
                let outcome =
                    with_retries(|| transport.export(signal, body.clone()), deadline, &stats).await;
                if let (Outcome::Accepted { rejected: 0 }, Some(log)) = (outcome, &ack_log) {
                    let mut file = log.lock().await;
                    let name = match signal {
                        Signal::Metrics => "metrics",
                        _ => "logs",
                    };
                    let _ = writeln!(file, "{name} {batch_id} {rows}");
                    let _ = file.flush();
                }
            }
            if let Some(p) = progress {
                p.inc(spans);
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("a sender task panicked")?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a sender task panicked")?;
    }
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = latencies
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"));
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "run_id": run_id,
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "seconds": elapsed,
        "sent_spans": get(&stats.sent),
        "accepted_spans": get(&stats.accepted),
        "rejected_spans": get(&stats.rejected),
        "failed_spans": get(&stats.failed_spans),
        "failed_requests": get(&stats.failed_requests),
        "throttled_attempts": get(&stats.throttled),
        "request_bytes": get(&stats.request_bytes),
        "accepted_spans_per_second": get(&stats.accepted) as f64 / elapsed.max(1e-9),
        "export_latency_ms_p50": h.value_at_quantile(0.5) as f64 / 1000.0,
        "export_latency_ms_p99": h.value_at_quantile(0.99) as f64 / 1000.0,
    });
    eprintln!(
        "sent {} spans in {:.1}s: {} accepted ({:.0}/s), {} rejected, {} failed, {} pushbacks; export latency p50 {:.1} ms, p99 {:.1} ms",
        get(&stats.sent),
        elapsed,
        get(&stats.accepted),
        get(&stats.accepted) as f64 / elapsed.max(1e-9),
        get(&stats.rejected),
        get(&stats.failed_spans),
        get(&stats.throttled),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("{summary}");
    if get(&stats.accepted) == 0 && get(&stats.sent) > 0 {
        bail!("the collector accepted nothing");
    }
    Ok(())
}

/// Failures are summarized at the end; the first few are shown as they happen.
fn tracing_free_warn(message: &str) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("export failed: {message}");
    }
}

fn open_ack_log(path: &PathBuf) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("could not open the ack log {}", path.display()))
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {human_pos} spans sent ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
