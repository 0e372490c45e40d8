//! Tokens on every door: with `[auth]` configured, OTLP/gRPC, OTLP/HTTP, the query port and
//! Flight SQL refuse requests without the right token and serve those with it (real clients:
//! loadgen, the ADBC driver, pyarrow, arrow-flight's Rust client, `vigil query`); a token file is
//! re-read when it is rotated; and with `trusted_senders_only`, a made-up GPU sent with a plain
//! ingest token raises nothing while the GPU exporter's fault (sent with its token) fires.

use std::process::Command;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tonic::transport::Channel;
use vigil_tests::{Collector, GpuExporter, python, repo_root, run_vigil, vigil_bin};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An XID counter for a GPU nobody has, climbing with `step`, claiming to come from an exporter.
fn forged_xid(step: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "vigil-gpu-exporter"),
                    text("vigil.sender", "gpu-exporter"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "vigil_gpu_xid_errors_total".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![
                                text("Hostname", "forged-node"),
                                text("gpu", "0"),
                                text("UUID", "GPU-forged-0"),
                                text("modelName", "H100"),
                                text("xid", "79"),
                            ],
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsDouble((step * 10) as f64)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn post(url: &str, token: Option<&str>, body: Vec<u8>) -> u16 {
    let mut request = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap().status().as_u16()
}

fn sql(c: &Collector, token: Option<&str>, sql: &str) -> (u16, serde_json::Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/sql", c.query_url()))
        .json(&serde_json::json!({ "sql": sql }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn loadgen(c: &Collector, headers: Option<&str>) -> std::process::Output {
    let mut command = Command::new(vigil_bin());
    command
        .args(["loadgen", "--quiet", "--endpoint", &c.grpc_url()])
        .args(["--run-id", "auth", "--spans", "500", "--rate", "0"])
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS");
    if let Some(headers) = headers {
        command.env("OTEL_EXPORTER_OTLP_HEADERS", headers);
    }
    command.output().unwrap()
}

fn flight_clients(c: &Collector, token: Option<&str>) -> std::process::Output {
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("tests/python/flight_sql_clients.py"))
        .args(["--uri", &c.flight_sql_url(), "--run-id", "auth"]);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command.output().unwrap()
}

#[test]
fn every_door_takes_only_its_tokens_and_rotated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let query_tokens = dir.path().join("query-tokens");
    std::fs::write(&query_tokens, "# the dashboards' token\nq-one\n").unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\ningest_tokens = [\"in-one\"]\ngpu_exporter_tokens = [\"gpu-one\"]\nquery_tokens_file = {:?}\n\n\
             [analyzer]\ninterval = \"1s\"\n\n[analyzer.gpu]\nwindow = \"6s\"\ntrusted_senders_only = true\n\n\
             [analyzer.drift]\nenabled = false\n",
            query_tokens
        ),
    )
    .unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    assert!(
        c.log().contains("every door needs a bearer token"),
        "{}",
        c.log()
    );

    // OTLP/HTTP.
    let traces = format!("{}/v1/metrics", c.http_url());
    assert_eq!(post(&traces, None, forged_xid(0)), 401);
    assert_eq!(post(&traces, Some("q-one"), forged_xid(0)), 401);
    assert_eq!(post(&traces, Some("in-one"), forged_xid(0)), 200);

    // OTLP/gRPC, with the token the way OTel SDKs take it.
    let refused = loadgen(&c, None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let sent = loadgen(&c, Some("authorization=Bearer%20in-one"));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // The query port: probes stay open, everything else needs a query token.
    let health = reqwest::blocking::get(format!("{}/healthz", c.query_url())).unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let (status, body) = sql(&c, None, "SELECT 1");
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bearer token"));
    assert_eq!(sql(&c, Some("in-one"), "SELECT 1").0, 401);
    let (status, body) = sql(
        &c,
        Some("q-one"),
        "SELECT count(*) AS n FROM spans WHERE resource_attributes['loadgen.run'] = 'auth'",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["rows"][0]["n"].as_u64().unwrap() >= 500);
    let metrics = reqwest::blocking::get(format!("{}/metrics", c.query_url())).unwrap();
    assert_eq!(metrics.status().as_u16(), 401);
    let (status, _, err) = run_vigil(&["query", "--url", &c.query_url(), "SELECT 1"]).unwrap();
    assert!(!status.success());
    assert!(err.contains("401") || err.contains("token"), "{err}");
    let (status, out, err) = run_vigil(&[
        "query",
        "--url",
        &c.query_url(),
        "--token",
        "q-one",
        "SELECT 41 + 1 AS answer",
    ])
    .unwrap();
    assert!(status.success(), "{err}");
    assert!(out.contains("42"), "{out}");

    // Flight SQL: ADBC and pyarrow with the token, refused without it.
    let without = flight_clients(&c, None);
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr)
            .to_lowercase()
            .contains("unauthenticated"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let with = flight_clients(&c, Some("q-one"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    // A handshake with Basic credentials (the token as password) gives a bearer token back.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://{}", c.flight_sql))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(client.handshake("grafana", "wrong").await.is_err());
        let token = client.handshake("grafana", "q-one").await.unwrap();
        assert_eq!(token, "q-one");
        assert!(client.execute("SELECT 1".into(), None).await.is_ok());
    });

    // Rotation: the file is rewritten with a new token; the old one stops working.
    std::fs::write(&query_tokens, "q-two\n").unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&query_tokens)
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(2))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(&c, Some("q-two"), "SELECT 1").0 != 200 {
        assert!(Instant::now() < deadline, "the rotated token never worked");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sql(&c, Some("q-one"), "SELECT 1").0, 401);

    // Trusted senders: the real exporter's fault fires; the forged GPU (sent with an ingest
    // token, claiming to be an exporter) raises nothing and loses its claim.
    let grpc = c.grpc_url();
    let _exporter = GpuExporter::start_with_env(
        &[
            &vigil_tests::SMALL_FLEET[..],
            &["--otlp-endpoint", &grpc, "--fault", "xid79:0/1:2s"],
        ]
        .concat(),
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20gpu-one",
        )],
        &dir.path().join("exporter.log"),
    )
    .unwrap();
    for step in 1..=12 {
        assert_eq!(post(&traces, Some("in-one"), forged_xid(step)), 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    let alerts = |c: &Collector| -> Vec<String> {
        sql(
            c,
            Some("q-two"),
            "SELECT DISTINCT labels['UUID'] AS uuid FROM alerts WHERE state = 'firing'",
        )
        .1["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["uuid"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !alerts(&c)
        .iter()
        .any(|u| u.starts_with("GPU-") && u != "GPU-forged-0")
    {
        assert!(
            Instant::now() < deadline,
            "the exporter's XID never fired: {:?}\n{}",
            alerts(&c),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !alerts(&c).contains(&"GPU-forged-0".to_string()),
        "a made-up GPU raised an alert"
    );
    let (_, claims) = sql(
        &c,
        Some("q-two"),
        "SELECT count(*) AS forged, count(resource_attributes['vigil.sender']) AS marked \
         FROM metrics WHERE attributes['UUID'] = 'GPU-forged-0'",
    );
    assert!(claims["rows"][0]["forged"].as_u64().unwrap() >= 12);
    assert_eq!(claims["rows"][0]["marked"], 0, "the forged claim was kept");
}

#[test]
fn trusted_senders_only_without_gpu_tokens_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[analyzer.gpu]\ntrusted_senders_only = true\n").unwrap();
    let started = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let error = format!("{:#}", started.err().expect("it must not start"));
    assert!(error.contains("gpu_exporter_tokens"), "{error}");
}
