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

/// A whole second a minute ago, in nanoseconds: recent enough to be kept.
fn recent_ns() -> u64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60)
        * 1_000_000_000
}

fn span(n: u8) -> Span {
    let start = recent_ns();
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("span-{n}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 500_000_000,
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
    let start = recent_ns();
    let json = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "good"}}]},
        "scopeSpans": [{"spans": [{"traceId": "07070707070707070707070707070707", "spanId": "0707070707070707", "name": "span-7",
        "kind": 3, "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 500_000_000).to_string(),
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
        .header("content-type", "application/json")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("{\\\"sql\\\""));
}

/// A web page the user visits can POST to a collector on their laptop, and DNS rebinding lets it
/// read the answer; and one query can ask for gigabytes. Neither may work, and ingest goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_refuses_web_pages_and_bounds_what_a_result_may_hold() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sql", c.query_url());
    let post = |host: Option<&str>, content_type: &str| {
        let mut request = client
            .post(&url)
            .header("content-type", content_type)
            .body(r#"{"sql": "SELECT 1 AS one"}"#);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    // What a cross-origin form or fetch without a preflight can send: refused.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let response = post(None, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
        assert!(response.text().await.unwrap().contains("application/json"));
    }
    // A rebound name reaches 127.0.0.1 but says who it is.
    for content_type in ["text/plain", "application/json"] {
        let response = post(Some("evil.test"), content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{content_type}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("query.allowed_hosts")
        );
    }
    let response = client
        .get(format!("{}/api/v1/status", c.query_url()))
        .header("host", "evil.test:9470")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The way tools send it still works, by address or by localhost.
    for host in [None, Some("localhost"), Some("LOCALHOST:1234")] {
        let response = post(host, "application/json; charset=utf-8").await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{host:?}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }

    // 30 rows of 60 MB each: refused by size, long before 1.8 GB of JSON is built.
    let (status, body) = c
        .sql_raw("SELECT repeat('x', 60000000) AS s FROM generate_series(1, 30)")
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("max_result_bytes"),
        "{body}"
    );
    // Ingest and queries go on.
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    client
        .export(request("after-big-query", vec![span(1)]))
        .await
        .unwrap();
    let rows = c
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'after-big-query'")
        .await
        .unwrap();
    assert_eq!(one(&rows, "n"), 1);
}

/// A request that is small on the wire but huge as rows: a 1 MiB resource attribute copied
/// into each of 2,100 spans is a ~10 KB gzipped body and 2 GB of rows. It must be refused before
/// a row is built, with a message naming the cause, without the memory or a panic, and the good
/// requests around it (over HTTP and gRPC) must be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_that_expands_to_gigabytes_is_priced_and_refused_before_it_is_built() {
    const LIMIT: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let mut hostile = request(
        "amplifier",
        (0..2_100u32).map(|i| span((i % 250) as u8)).collect(),
    );
    if let Some(resource) = hostile.resource_spans[0].resource.as_mut() {
        resource.attributes.push(KeyValue {
            key: "blob".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("x".repeat(1 << 20))),
            }),
            ..Default::default()
        });
    }
    let body = hostile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&body).unwrap();
    let compressed = gz.finish().unwrap();
    assert!(
        compressed.len() < 64 << 10,
        "{} bytes gzipped",
        compressed.len()
    );

    good(&c, 1).await;
    let pid = c.pid();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        for _ in 0..60 {
            peak = u64::max(peak, vigil_tests::rss_bytes(pid).unwrap_or(0));
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        peak
    });
    for _ in 0..3 {
        let (status, text, _) = post(
            &c,
            "/v1/traces",
            "application/x-protobuf",
            compressed.clone(),
            true,
        )
        .await;
        assert_eq!(status, 413, "{text}");
        assert!(
            text.contains("repeated on each of its 2100 items"),
            "the refusal names the cause: {text}"
        );
    }
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let status = client.export(hostile).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("memory_limit_bytes"),
        "{status:?}"
    );
    good(&c, 2).await;
    client.export(request("good", vec![span(3)])).await.unwrap();
    let peak = sampler.join().unwrap();
    assert!(
        peak < LIMIT / 4,
        "RSS peaked at {} MiB while refusing",
        peak >> 20
    );
    let rows = c
        .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(one(&rows, "service_name"), "good");
    assert_eq!(one(&rows, "n"), 3);
    assert!(!c.log().contains("panicked"), "{}", c.log());
}

/// 3,000 spans an hour apart, plus spans at time 0 and in 2200, in one request, to a collector
/// allowed only 128 file descriptors (many hosts allow 1,024; the flush used to open one Parquet
/// writer per hour at once). Out-of-range times are refused and counted, the rest flush in
/// passes of a few files, and ingest goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_spread_over_years_are_bounded_in_time_and_in_open_files() {
    const HOUR_NS: u64 = 3_600_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let prlimit = vigil_tests::required_tool("prlimit", "util-linux");
    let mut command = std::process::Command::new(prlimit);
    command
        .arg("--nofile=128")
        .arg(vigil_tests::vigil_bin())
        .args(vigil_tests::serve_args(&data_dir))
        .env("VIGIL_STORAGE__FLUSH_INTERVAL_SECS", "1");
    let c = Collector::spawn(command, &dir.path().join("serve.log")).unwrap();
    c.wait_ready().await.unwrap();

    let now = recent_ns();
    let mut spans: Vec<Span> = (0..3_000u64)
        .map(|i| {
            let mut s = span((i % 250) as u8 + 1);
            s.span_id = (i + 1).to_be_bytes().to_vec();
            s.start_time_unix_nano = now - i * HOUR_NS;
            s.end_time_unix_nano = s.start_time_unix_nano + 1_000;
            s
        })
        .collect();
    for (i, start) in [0u64, 7_258_118_400_000_000_000].into_iter().enumerate() {
        let mut s = span(1);
        s.span_id = vec![0xff, i as u8, 0, 0, 0, 0, 0, 1];
        s.start_time_unix_nano = start;
        s.end_time_unix_nano = start + 1;
        spans.push(s);
    }
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let response = client
        .export(request("spread", spans))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.unwrap();
    // Retention keeps 7 days: 168 or 169 of the hourly spans (the cutoff is an hour boundary).
    let kept = 3_002 - partial.rejected_spans;
    assert!((168..=169).contains(&kept), "{partial:?}");
    assert!(
        partial.error_message.contains("older than what is kept"),
        "{partial:?}"
    );

    // Every kept hour gets its file, written a few at a time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let page = c.own_metrics().await.unwrap();
        let files = page
            .lines()
            .find_map(|l| l.strip_prefix("vigil_parquet_files{table=\"spans\"} "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        assert!(
            page.contains("vigil_flush_failures_total 0\n"),
            "a flush failed: {}",
            c.log()
        );
        if files == kept {
            let out_of_range = page
                .lines()
                .find_map(|l| {
                    l.strip_prefix("vigil_ingest_out_of_range_items_total{signal=\"spans\"} ")
                })
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            // Every hourly span past retention, and the one in 2200 (time 0 may be refused
            // earlier, as a malformed span).
            assert!(
                (2_832..=partial.rejected_spans).contains(&out_of_range),
                "{out_of_range} out of range of {partial:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{files} of {kept} files after 60 s: {}",
            c.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    client
        .export(request("after", vec![span(9)]))
        .await
        .unwrap();
    let rows = c
        .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["n"], 1);
    assert_eq!(rows[1]["n"], kept);
}
