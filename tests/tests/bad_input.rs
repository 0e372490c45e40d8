//! Malformed, oversize and mistyped requests get clear errors, and the requests around them are
//! still served.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use vigil_tests::{Collector, one};

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("span-{n}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        ..Default::default()
    }
}

async fn post(
    c: &Collector,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut builder = reqwest::Client::new()
        .post(format!("{}{path}", c.http_url()))
        .header("content-type", content_type);
    if gzip {
        builder = builder.header("content-encoding", "gzip");
    }
    let response = builder.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.unwrap_or_default(), headers)
}

async fn good(c: &Collector, n: u8) {
    let body = request("good", vec![span(n)]).encode_to_vec();
    let (status, text, _) = post(c, "/v1/traces", "application/x-protobuf", body, false).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_clearly_and_good_ones_around_them_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A small request limit keeps the oversize cases fast; it is set the way an operator would.
    let c = Collector::start_with(
        &dir.path().join("data"),
        vec![],
        &[("VIGIL_LIMITS__MAX_REQUEST_BYTES", "65536")],
    )
    .unwrap();

    good(&c, 1).await;

    // Malformed protobuf.
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff, 0x01, 0x02],
        false,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    good(&c, 2).await;

    // Malformed JSON.
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/json",
        b"{\"resourceSpans\": [".to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("not valid OTLP JSON"), "{text}");
    good(&c, 3).await;

    // Wrong content type.
    let (status, text, _) = post(&c, "/v1/traces", "text/plain", b"hello".to_vec(), false).await;
    assert_eq!(status, 415);
    assert!(text.contains("application/x-protobuf"), "{text}");
    good(&c, 4).await;

    // Oversize body, plain and as a gzip bomb.
    let big = request(
        "big",
        (0..2000u32).map(|i| span((i % 250) as u8 + 1)).collect(),
    )
    .encode_to_vec();
    assert!(big.len() > 65536);
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        big.clone(),
        false,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 10 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    let (status, text, _) = post(&c, "/v1/traces", "application/x-protobuf", bomb, true).await;
    assert_eq!(status, 413, "{text}");
    good(&c, 5).await;

    // Broken gzip.
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        b"not gzip".to_vec(),
        true,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("gzip"));

    // A valid gzip'd protobuf and a valid OTLP JSON request are taken.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&request("good", vec![span(6)]).encode_to_vec())
        .unwrap();
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/x-protobuf",
        gz.finish().unwrap(),
        true,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let json = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "good"}}]},
        "scopeSpans": [{"spans": [{"traceId": "07070707070707070707070707070707", "spanId": "0707070707070707", "name": "span-7",
        "kind": 3, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}]}]}]}]});
    let (status, text, _) = post(
        &c,
        "/v1/traces",
        "application/json",
        serde_json::to_vec(&json).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // Partial success: one span with a bad id is rejected, its neighbour is kept.
    let mut bad = span(8);
    bad.span_id = vec![1, 2, 3];
    let body = request("good", vec![bad, span(9)]).encode_to_vec();
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let response = client
        .export(ExportTraceServiceRequest::decode(body.as_slice()).unwrap())
        .await
        .unwrap();
    let partial = response
        .into_inner()
        .partial_success
        .expect("partial success reported");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("span_id must be 8 bytes"),
        "{}",
        partial.error_message
    );

    let rows = c.sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans WHERE service_name = 'good'").await.unwrap();
    assert_eq!(one(&rows, "n"), 8, "spans 1-7 and 9");
    assert_eq!(one(&rows, "d"), 8);
    let rows = c
        .sql("SELECT input_tokens, kind FROM spans WHERE name = 'span-7'")
        .await
        .unwrap();
    assert_eq!(one(&rows, "input_tokens"), 12);
    assert_eq!(one(&rows, "kind"), "client");

    // Every refusal is counted on /metrics.
    let metrics = c.own_metrics().await.unwrap();
    let bad_line = metrics
        .lines()
        .find(|l| l.starts_with("vigil_ingest_bad_requests_total{signal=\"spans\"}"))
        .unwrap();
    assert!(bad_line.ends_with(" 6"), "{bad_line}");
    assert!(metrics.contains("vigil_ingest_rejected_items_total{signal=\"spans\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_errors_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start_with(
        &dir.path().join("data"),
        vec![],
        &[("VIGIL_QUERY__MAX_RESULT_ROWS", "5")],
    )
    .unwrap();
    let (status, body) = c
        .sql_raw("SELECT * FROM (VALUES (1), (2), (3), (4), (5), (6), (7)) AS t(x)")
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("max_result_rows"),
        "{body}"
    );
    assert_eq!(
        c.sql("SELECT * FROM (VALUES (1), (2)) AS t(x)")
            .await
            .unwrap()
            .len(),
        2
    );
    for (sql, expect) in [
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "DDL",
        ),
        ("INSERT INTO spans SELECT * FROM spans", "DML"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ("DROP TABLE spans", "DDL"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
    ] {
        let (status, body) = c.sql_raw(sql).await.unwrap();
        assert_eq!(status, 400, "{sql}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains(expect) && message.contains("read-only"),
            "{sql}: {message}"
        );
    }
    let (status, body) = c.sql_raw("SELECT nope FROM spans").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = c.sql_raw("SELEC 1").await.unwrap();
    assert_eq!(status, 400, "{body}");
    let rows = c.sql("SELECT count(*) AS n FROM spans").await.unwrap();
    assert_eq!(one(&rows, "n"), 0);
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", c.query_url()))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("{\\\"sql\\\""));
}
