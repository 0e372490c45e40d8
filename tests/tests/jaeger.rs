//! The Jaeger-compatible trace API, read the way Grafana's Jaeger datasource reads it: services,
//! operations, a search by a GenAI tag, and a trace by id whose parent references rebuild the
//! tree the official Python SDK sent.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use vigil_tests::{Collector, python, repo_root};

fn get(c: &Collector, path: &str) -> (u16, Value) {
    let response = reqwest::blocking::get(format!("{}{path}", c.query_url())).unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn tags(span: &Value) -> BTreeMap<String, (String, Value)> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                (t["type"].as_str().unwrap().to_string(), t["value"].clone()),
            )
        })
        .collect()
}

#[test]
fn grafana_finds_llm_calls_by_genai_tag_and_sees_the_tree_the_sdk_sent() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/send_otel.py"))
        .args(["--protocol", "grpc", "--endpoint", &c.grpc_url()])
        .args(["--run-id", "jaeger"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let trace_id = sent["trace_id"].as_str().unwrap().to_string();

    let (status, services) = get(&c, "/api/services");
    assert_eq!(status, 200, "{services}");
    assert!(
        services["data"]
            .as_array()
            .unwrap()
            .contains(&Value::from("pysdk-grpc")),
        "{services}"
    );
    let (_, operations) = get(&c, "/api/services/pysdk-grpc/operations");
    let names = operations["data"].as_array().unwrap();
    for name in [
        "workflow",
        "chat gpt-4o",
        "anthropic.completion",
        "azure chat",
    ] {
        assert!(names.contains(&Value::from(name)), "{operations}");
    }
    let (_, kinds) = get(&c, "/api/operations?service=pysdk-grpc&spanKind=client");
    assert_eq!(kinds["data"].as_array().unwrap().len(), 3, "{kinds}");

    // Search by a GenAI tag, as Grafana sends it (tags as JSON, times in µs).
    let now_us = chrono::Utc::now().timestamp_micros();
    let tags_param = r#"{"gen_ai.request.model":"gpt-4o"}"#;
    let url = format!(
        "/api/traces?service=pysdk-grpc&tags={}&start={}&end={}&limit=20&minDuration=1us",
        urlencode(tags_param),
        now_us - 3_600_000_000,
        now_us + 60_000_000
    );
    let (status, found) = get(&c, &url);
    assert_eq!(status, 200, "{found}");
    let traces = found["data"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    assert_eq!(traces[0]["traceID"], trace_id.as_str());
    // Nothing for a model nobody called.
    let (_, none) = get(
        &c,
        &format!(
            "/api/traces?service=pysdk-grpc&tags={}",
            urlencode(r#"{"gen_ai.request.model":"gpt-9"}"#)
        ),
    );
    assert!(none["data"].as_array().unwrap().is_empty(), "{none}");
    // An error search finds the failed call's trace.
    let (_, failed) = get(
        &c,
        &format!(
            "/api/traces?service=pysdk-grpc&tags={}",
            urlencode(r#"{"error":"true"}"#)
        ),
    );
    assert_eq!(failed["data"].as_array().unwrap().len(), 1, "{failed}");

    // The trace by id: the tree, the process, and the GenAI tags on each call.
    let (status, by_id) = get(&c, &format!("/api/traces/{trace_id}"));
    assert_eq!(status, 200, "{by_id}");
    let trace = &by_id["data"][0];
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "workflow")
        .unwrap();
    assert!(root["references"].as_array().unwrap().is_empty());
    for span in spans.iter().filter(|s| s["operationName"] != "workflow") {
        let references = span["references"].as_array().unwrap();
        assert_eq!(references.len(), 1, "{span}");
        assert_eq!(references[0]["refType"], "CHILD_OF");
        assert_eq!(references[0]["spanID"], root["spanID"]);
        assert_eq!(references[0]["traceID"], trace_id.as_str());
        assert!(span["startTime"].as_i64().unwrap() >= root["startTime"].as_i64().unwrap());
        assert!(span["duration"].as_i64().is_some());
        let process = &trace["processes"][span["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], "pysdk-grpc");
    }
    let chat = spans
        .iter()
        .find(|s| s["operationName"] == "chat gpt-4o")
        .unwrap();
    let chat_tags = tags(chat);
    assert_eq!(
        chat_tags["gen_ai.request.model"],
        ("string".to_string(), Value::from("gpt-4o"))
    );
    assert_eq!(
        chat_tags["gen_ai.usage.input_tokens"],
        ("int64".to_string(), Value::from(1200))
    );
    assert_eq!(chat_tags["gen_ai.usage.output_tokens"].1, Value::from(300));
    assert_eq!(chat_tags["vigil.ttft_ms"].0, "float64");
    assert!(chat_tags.contains_key("vigil.cost_usd"), "{chat_tags:?}");
    assert!(
        chat_tags["gen_ai.input.messages"]
            .1
            .as_str()
            .unwrap()
            .contains("hi")
    );
    assert_eq!(chat_tags["span.kind"].1, "client");
    assert_eq!(chat_tags["app.feature"].1, "summarize");
    let failed = spans
        .iter()
        .find(|s| s["operationName"] == "azure chat")
        .unwrap();
    let failed_tags = tags(failed);
    assert_eq!(
        failed_tags["error"],
        ("bool".to_string(), Value::from(true))
    );
    assert_eq!(failed_tags["error.type"].1, "rate_limit_exceeded");
    // The recorded exception is a log of the span.
    let logs = failed["logs"].as_array().unwrap();
    assert!(
        logs.iter().any(|l| l["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == "event" && f["value"] == "exception")),
        "{failed}"
    );

    // Jaeger's error shapes.
    let (status, missing) = get(&c, "/api/traces/00000000000000000000000000000bad");
    assert_eq!(status, 404);
    assert_eq!(missing["errors"][0]["code"], 404);
    let (status, bad) = get(&c, "/api/traces/not-hex");
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = get(&c, "/api/traces?service=pysdk-grpc&minDuration=fast");
    assert_eq!(status, 400);
    assert!(bad["errors"][0]["msg"].as_str().unwrap().contains("fast"));
    let (status, bad) = get(&c, "/api/traces?tags=not-json");
    assert_eq!(status, 400, "{bad}");
    let (status, deps) = get(&c, "/api/dependencies?lookback=3600000");
    assert_eq!(status, 200, "{deps}");
    assert!(deps["data"].is_array());
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
