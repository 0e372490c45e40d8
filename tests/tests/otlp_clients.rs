//! Real OTLP clients — the official Python SDK (gRPC and HTTP/protobuf) and the Rust
//! `opentelemetry-otlp` exporter — send to `vigil serve`; SQL reads the rows back.

use std::process::Command;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use serde_json::Value;
use vigil_tests::{Collector, one, python, repo_root};

fn run_python_sdk(protocol: &str, endpoint: &str, run_id: &str) -> Value {
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/send_otel.py"))
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--run-id",
            run_id,
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "send_otel.py --protocol {protocol} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a JSON summary line");
    serde_json::from_str(last).expect("summary is JSON")
}

fn map_get(map: &Value, key: &str) -> Option<String> {
    // Arrow's JSON writer renders a Map<Utf8, Utf8> as an object (or a list of key/value pairs).
    match map {
        Value::Object(o) => o.get(key).and_then(|v| v.as_str()).map(str::to_string),
        Value::Array(entries) => entries.iter().find_map(|e| {
            (e.get("keys").and_then(|k| k.as_str()) == Some(key))
                .then(|| e.get("values")?.as_str().map(str::to_string))?
        }),
        _ => None,
    }
}

async fn check_python_run(c: &Collector, protocol: &str, trace_id: &str) {
    let service = format!("pysdk-{protocol}");
    let spans = c
        .sql(&format!(
            "SELECT name, kind, status_code, status_message, parent_span_id, gen_ai_system, gen_ai_operation, request_model, \
             response_model, input_tokens, output_tokens, total_tokens, ttft_ns, finish_reasons, request_temperature, \
             request_max_tokens, error_type, cost_usd, input_messages, output_messages, attributes, events, \
             resource_attributes['vigil.test.run'] AS run \
             FROM spans WHERE service_name = '{service}' ORDER BY name"
        ))
        .await
        .unwrap();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:#?}"))
    };

    let current = by_name("chat gpt-4o");
    assert_eq!(current["kind"], "client");
    assert_eq!(current["gen_ai_system"], "openai");
    assert_eq!(current["gen_ai_operation"], "chat");
    assert_eq!(current["request_model"], "gpt-4o");
    assert_eq!(current["response_model"], "gpt-4o-2024-08-06");
    assert_eq!(current["input_tokens"], 1200);
    assert_eq!(current["output_tokens"], 300);
    assert_eq!(current["total_tokens"], 1500);
    assert_eq!(current["ttft_ns"], 250_000_000);
    assert_eq!(current["finish_reasons"], serde_json::json!(["stop"]));
    assert_eq!(current["request_temperature"], 0.2);
    assert_eq!(current["request_max_tokens"], 512);
    let cost = current["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (1200.0 * 2.5 + 300.0 * 10.0) / 1e6).abs() < 1e-9,
        "{cost}"
    );
    assert!(
        current["input_messages"]
            .as_str()
            .unwrap()
            .contains("\"content\":\"hi\"")
    );
    assert_eq!(
        map_get(&current["attributes"], "app.feature").as_deref(),
        Some("summarize")
    );
    assert!(!current["parent_span_id"].is_null());

    let legacy = by_name("anthropic.completion");
    assert_eq!(legacy["gen_ai_system"], "anthropic");
    assert_eq!(legacy["gen_ai_operation"], "text_completion");
    assert_eq!(legacy["request_model"], "claude-3-5-sonnet-20241022");
    assert_eq!(legacy["input_tokens"], 40);
    assert_eq!(legacy["output_tokens"], 10);
    assert_eq!(legacy["total_tokens"], 50);
    assert_eq!(legacy["finish_reasons"], serde_json::json!(["end_turn"]));
    assert!(legacy["cost_usd"].as_f64().unwrap() > 0.0);
    let input = legacy["input_messages"].as_str().unwrap();
    assert!(
        input.contains("alice@example.com") && input.contains("\"role\":\"user\""),
        "{input}"
    );
    assert_eq!(
        map_get(&legacy["attributes"], "traceloop.workflow.name").as_deref(),
        Some("support")
    );

    let failed = by_name("azure chat");
    assert_eq!(failed["gen_ai_system"], "azure.ai.openai");
    assert_eq!(failed["status_code"], "error");
    assert_eq!(failed["status_message"], "429 from upstream");
    assert_eq!(failed["error_type"], "rate_limit_exceeded");
    assert!(
        failed["cost_usd"].is_null(),
        "an unknown model must get a null cost, not zero"
    );
    assert!(failed["events"].as_str().unwrap().contains("RuntimeError"));

    let root = by_name("workflow");
    assert!(root["parent_span_id"].is_null());
    assert_eq!(root["kind"], "internal");
    assert!(root["gen_ai_system"].is_null());

    let metrics = c
        .sql(&format!(
            "SELECT metric_name, metric_type, unit, temporality, is_monotonic, value, count, sum, min, max, bucket_bounds, \
             bucket_counts, exp_scale, exp_positive_counts, attributes \
             FROM metrics WHERE service_name = '{service}' ORDER BY metric_name"
        ))
        .await
        .unwrap();
    let metric = |n: &str| {
        metrics
            .iter()
            .find(|m| m["metric_name"] == n)
            .unwrap_or_else(|| panic!("no metric {n}: {metrics:#?}"))
    };
    assert_eq!(metrics.len(), 5, "{metrics:#?}");
    let requests = metric("vigil_test_requests");
    assert_eq!(
        (requests["metric_type"].as_str(), requests["value"].as_f64()),
        (Some("sum"), Some(5.0))
    );
    assert_eq!(requests["is_monotonic"], true);
    assert_eq!(requests["temporality"], "cumulative");
    assert_eq!(
        map_get(&requests["attributes"], "route").as_deref(),
        Some("/chat")
    );
    let inflight = metric("vigil_test_inflight");
    assert_eq!(
        (
            inflight["is_monotonic"].as_bool(),
            inflight["value"].as_f64()
        ),
        (Some(false), Some(2.0))
    );
    let gauge = metric("vigil_test_temperature");
    assert_eq!(
        (
            gauge["metric_type"].as_str(),
            gauge["value"].as_f64(),
            gauge["unit"].as_str()
        ),
        (Some("gauge"), Some(71.5), Some("Cel"))
    );
    let latency = metric("vigil_test_latency");
    assert_eq!(latency["metric_type"], "histogram");
    assert_eq!(latency["count"], 3);
    assert!((latency["sum"].as_f64().unwrap() - 0.7).abs() < 1e-9);
    assert_eq!(
        (latency["min"].as_f64(), latency["max"].as_f64()),
        (Some(0.1), Some(0.4))
    );
    assert_eq!(
        latency["bucket_bounds"],
        serde_json::json!([0.05, 0.15, 0.3, 1.0])
    );
    assert_eq!(latency["bucket_counts"], serde_json::json!([0, 1, 1, 1, 0]));
    check_exemplar(c, &service, trace_id).await;
    let tokens = metric("vigil_test_tokens");
    assert_eq!(tokens["metric_type"], "exponential_histogram");
    assert_eq!(
        (tokens["count"].as_u64(), tokens["sum"].as_f64()),
        (Some(3), Some(1110.0))
    );
    assert!(tokens["exp_scale"].is_i64());
    let positive: u64 = tokens["exp_positive_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(positive, 3);

    let logs = c
        .sql(&format!(
            "SELECT severity_number, severity_text, body, trace_id, span_id, attributes FROM logs \
             WHERE service_name = '{service}' ORDER BY severity_number"
        ))
        .await
        .unwrap();
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(logs[0]["severity_number"], 13);
    assert_eq!(logs[0]["body"], "token budget exceeded for alice");
    assert_eq!(
        map_get(&logs[0]["attributes"], "tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(logs[1]["severity_text"], "ERROR");
    assert_eq!(logs[0]["trace_id"].as_str().unwrap().len(), 32);
    // The logs were emitted inside the workflow span: they join to it.
    let joined = c
        .sql(&format!(
            "SELECT count(*) AS n FROM logs l JOIN spans s ON l.trace_id = s.trace_id AND l.span_id = s.span_id \
             WHERE s.name = 'workflow' AND s.service_name = '{service}'"
        ))
        .await
        .unwrap();
    assert_eq!(one(&joined, "n"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let grpc = run_python_sdk("grpc", &c.grpc_url(), "py-run");
    assert_eq!(grpc["spans"], 4);
    let http = run_python_sdk("http", &c.http_url(), "py-run");
    assert_eq!(http["spans"], 4);
    // Queryable at once, before any flush.
    check_python_run(&c, "grpc", grpc["trace_id"].as_str().unwrap()).await;
    check_python_run(&c, "http", http["trace_id"].as_str().unwrap()).await;
}

/// The latency histogram's one exemplar (0.4 s, recorded inside the workflow span), as Grafana
/// asks for it: on the bucket series that holds it, with the span's trace id.
async fn check_exemplar(c: &Collector, service: &str, trace_id: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query_exemplars", c.query_url()))
        .query(&[
            (
                "query",
                format!(
                    "histogram_quantile(0.9, sum by (le) (rate(vigil_test_latency_bucket{{job=\"{service}\"}}[5m])))"
                ),
            ),
            ("start", (now - 600).to_string()),
            ("end", (now + 60).to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "success", "{answer}");
    let series = answer["data"].as_array().unwrap();
    assert_eq!(series.len(), 1, "one bucket holds an exemplar: {answer}");
    let labels = &series[0]["seriesLabels"];
    assert_eq!(labels["__name__"], "vigil_test_latency_bucket", "{answer}");
    assert_eq!(labels["le"], "1", "0.4 falls in (0.3, 1]: {answer}");
    assert_eq!(labels["job"], service, "{answer}");
    let exemplars = series[0]["exemplars"].as_array().unwrap();
    assert_eq!(exemplars.len(), 1, "{answer}");
    assert_eq!(exemplars[0]["value"], "0.4");
    assert_eq!(exemplars[0]["labels"]["trace_id"], trace_id, "{answer}");
    assert_eq!(
        exemplars[0]["labels"]["span_id"].as_str().map(str::len),
        Some(16),
        "{answer}"
    );
    let at = exemplars[0]["timestamp"].as_f64().unwrap();
    assert!((at - now as f64).abs() < 120.0, "{at} vs {now}");
}

fn rust_resource(service: &str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build()
}

/// Sends spans, metrics and logs with the Rust SDK over one OTLP transport.
fn send_with_rust_sdk(service: &str, grpc: Option<String>, http: Option<String>) {
    use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
    let (spans, metrics, logs) = match (&grpc, &http) {
        (Some(endpoint), _) => (
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .unwrap(),
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .unwrap(),
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .unwrap(),
        ),
        (None, Some(base)) => (
            SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .unwrap(),
            MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/metrics"))
                .build()
                .unwrap(),
            LogExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/logs"))
                .build()
                .unwrap(),
        ),
        _ => unreachable!(),
    };
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(spans)
        .with_resource(rust_resource(service))
        .build();
    let tracer = tracer_provider.tracer("vigil-rust-test");
    let mut span = tracer
        .span_builder("chat gpt-4o-mini")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("gen_ai.usage.input_tokens", 1000i64),
            KeyValue::new("gen_ai.usage.output_tokens", 100i64),
            KeyValue::new("gen_ai.usage.cache_read.input_tokens", 500i64),
        ])
        .start(&tracer);
    span.set_status(Status::Ok);
    span.end();
    let mut legacy = tracer
        .span_builder("openai.chat")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![
            KeyValue::new("gen_ai.system", "OpenAI"),
            KeyValue::new("llm.request.type", "chat"),
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("gen_ai.usage.prompt_tokens", 7i64),
            KeyValue::new("gen_ai.usage.completion_tokens", 3i64),
        ])
        .start(&tracer);
    legacy.end();
    tracer_provider.force_flush().unwrap();
    tracer_provider.shutdown().unwrap();

    let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(rust_resource(service))
        .build();
    let meter = meter_provider.meter("vigil-rust-test");
    let counter = meter.u64_counter("rust_requests").build();
    counter.add(3, &[KeyValue::new("route", "/x")]);
    let histogram = meter.f64_histogram("rust_latency").with_unit("s").build();
    histogram.record(0.5, &[]);
    histogram.record(1.5, &[]);
    let _gauge = meter
        .f64_observable_gauge("rust_temperature")
        .with_callback(|o| o.observe(40.0, &[]))
        .build();
    meter_provider.force_flush().unwrap();
    meter_provider.shutdown().unwrap();

    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_simple_exporter(logs)
        .with_resource(rust_resource(service))
        .build();
    let logger = logger_provider.logger("vigil-rust-test");
    let mut record = logger.create_log_record();
    record.set_severity_number(Severity::Warn);
    record.set_severity_text("WARN");
    record.set_body("rust says hello".into());
    record.add_attribute("tenant", "acme");
    logger.emit(record);
    logger_provider.force_flush().unwrap();
    logger_provider.shutdown().unwrap();
}

async fn check_rust_run(c: &Collector, service: &str) {
    let spans = c
        .sql(&format!(
            "SELECT name, gen_ai_system, gen_ai_operation, input_tokens, output_tokens, total_tokens, cache_read_tokens, cost_usd, status_code \
             FROM spans WHERE service_name = '{service}' ORDER BY name"
        ))
        .await
        .unwrap();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let current = &spans[0];
    assert_eq!(current["name"], "chat gpt-4o-mini");
    assert_eq!(current["status_code"], "ok");
    assert_eq!(current["cache_read_tokens"], 500);
    // 500 uncached input at 0.15, 500 cached at 0.075, 100 output at 0.60 per million.
    let expected = (500.0 * 0.15 + 500.0 * 0.075 + 100.0 * 0.60) / 1e6;
    assert!(
        (current["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{current}"
    );
    let legacy = &spans[1];
    assert_eq!(legacy["gen_ai_system"], "openai");
    assert_eq!(
        (
            legacy["input_tokens"].as_i64(),
            legacy["output_tokens"].as_i64(),
            legacy["total_tokens"].as_i64()
        ),
        (Some(7), Some(3), Some(10))
    );

    let metrics = c
        .sql(&format!("SELECT metric_name, metric_type, value, count, sum FROM metrics WHERE service_name = '{service}' ORDER BY metric_name"))
        .await
        .unwrap();
    let names: Vec<&str> = metrics
        .iter()
        .map(|m| m["metric_name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"rust_requests")
            && names.contains(&"rust_latency")
            && names.contains(&"rust_temperature"),
        "{metrics:#?}"
    );
    let latency = metrics
        .iter()
        .find(|m| m["metric_name"] == "rust_latency")
        .unwrap();
    assert_eq!(
        (
            latency["metric_type"].as_str(),
            latency["count"].as_u64(),
            latency["sum"].as_f64()
        ),
        (Some("histogram"), Some(2), Some(2.0))
    );

    let logs = c
        .sql(&format!(
            "SELECT body, severity_number FROM logs WHERE service_name = '{service}'"
        ))
        .await
        .unwrap();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0]["body"], "rust says hello");
    assert_eq!(logs[0]["severity_number"], 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_otlp_exporter_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let grpc = c.grpc_url();
    // The SDK's flush blocks, so it runs off the async workers.
    tokio::task::spawn_blocking(move || send_with_rust_sdk("rust-grpc", Some(grpc), None))
        .await
        .unwrap();
    let http = c.http_url();
    tokio::task::spawn_blocking(move || send_with_rust_sdk("rust-http", None, Some(http)))
        .await
        .unwrap();
    check_rust_run(&c, "rust-grpc").await;
    check_rust_run(&c, "rust-http").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// No SDK emits summaries any more, but older instrumentation (and Prometheus receivers) do:
/// a summary, and logs, sent as OTLP JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_metrics_and_logs_as_otlp_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    // A whole second a minute ago: recent enough to be kept, exact to compare.
    let at_ns = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60)
        * 1_000_000_000;
    let at = at_ns.to_string();
    let resource = serde_json::json!({"attributes": [{"key": "service.name", "value": {"stringValue": "json-sender"}}]});
    let metrics = serde_json::json!({"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"scope": {"name": "legacy"},
        "metrics": [{"name": "rpc_latency", "unit": "ms", "summary": {"dataPoints": [{
            "timeUnixNano": at, "count": "10", "sum": 123.5,
            "quantileValues": [{"quantile": 0.5, "value": 11.0}, {"quantile": 0.99, "value": 40.0}],
            "attributes": [{"key": "method", "value": {"stringValue": "Get"}}]}]}}]}]}]});
    let logs = serde_json::json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [{
        "timeUnixNano": at, "severityNumber": 17, "severityText": "ERROR",
        "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "boom"}}]}},
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "attributes": [{"key": "attempt", "value": {"intValue": "3"}}]}]}]}]});
    let client = reqwest::Client::new();
    for (path, body) in [("/v1/metrics", metrics), ("/v1/logs", logs)] {
        let response = client
            .post(format!("{}{path}", c.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "{path}: {}",
            response.text().await.unwrap()
        );
    }
    let rows = c
        .sql("SELECT metric_type, unit, count, sum, quantiles, quantile_values, attributes['method'] AS method FROM metrics WHERE metric_name = 'rpc_latency'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["metric_type"], "summary");
    assert_eq!(
        (rows[0]["count"].as_u64(), rows[0]["sum"].as_f64()),
        (Some(10), Some(123.5))
    );
    assert_eq!(rows[0]["quantiles"], serde_json::json!([0.5, 0.99]));
    assert_eq!(rows[0]["quantile_values"], serde_json::json!([11.0, 40.0]));
    assert_eq!(rows[0]["method"], "Get");
    let rows = c
        .sql("SELECT severity_text, body, trace_id, span_id, attributes['attempt'] AS attempt, time FROM logs WHERE service_name = 'json-sender'")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["body"], "{\"msg\":\"boom\"}");
    assert_eq!(rows[0]["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(rows[0]["span_id"], "eee19b7ec3c1b174");
    assert_eq!(rows[0]["attempt"], "3");
    let times = c
        .sql("SELECT arrow_cast(time, 'Int64') AS t FROM logs")
        .await
        .unwrap();
    assert_eq!(times[0]["t"], at_ns, "{times:?}");
}
