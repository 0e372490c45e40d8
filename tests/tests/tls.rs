//! TLS on every listener, with a test certificate made by `openssl`: the official Python SDK
//! sends OTLP over gRPC and HTTP with `OTEL_EXPORTER_OTLP_CERTIFICATE`, `vigil gpu-exporter` and
//! `vigil loadgen` send with it, ADBC and pyarrow query Flight SQL over `grpc+tls` with a bearer
//! token, curl, `vigil query`, `vigil alerts` and `vigil tui` query with the CA given, and a
//! second collector scrapes the first's page over https. Plain TCP is refused. An alert reaches
//! an https:// webhook whose certificate only `SSL_CERT_FILE` trusts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::{Collector, GpuExporter, python, repo_root, vigil_bin};

/// A test CA and a certificate it signed for 127.0.0.1 and localhost: (CA, certificate, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=vigil test CA"],
        ]
        .concat()
        .iter()
        .copied()
        .chain(["-keyout", "ca-key.pem", "-out", "ca.pem"])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .iter()
            .copied()
            .chain(["-keyout", "key.pem", "-out", "cert.csr"])
            .collect::<Vec<_>>(),
    );
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The rows of `sql` from a collector without TLS or tokens.
fn plain_sql(c: &Collector, sql: &str) -> Vec<serde_json::Value> {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/sql", c.query_url()))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .unwrap();
    let body: serde_json::Value = response.json().unwrap();
    body["rows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn every_listener_speaks_tls_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[auth]\nquery_tokens = [\"q-tls\"]\n"
        ),
    )
    .unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    // Clients trust the CA, not the server's certificate itself.
    let cert_text = ca.to_str().unwrap();
    let https = |addr: std::net::SocketAddr| format!("https://127.0.0.1:{}", addr.port());

    // The official Python SDK over gRPC and HTTP, trusting the test CA.
    for (protocol, addr) in [("grpc", c.grpc), ("http", c.http)] {
        let output = Command::new(python())
            .arg(repo_root().join("tests/python/send_otel.py"))
            .args(["--protocol", protocol, "--endpoint", &https(addr)])
            .args(["--run-id", &format!("tls-{protocol}")])
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)
            // requests lets these override the CA the SDK sets on its session.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{protocol}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // loadgen over gRPC and HTTP, trusting the CA as the SDKs do; the GPU exporter over gRPC.
    let loadgen = |protocol: &str, endpoint: String, run_id: &str, spans: &str| {
        let output = Command::new(vigil_bin())
            .args(["loadgen", "--quiet", "--protocol", protocol])
            .args(["--endpoint", &endpoint, "--run-id", run_id])
            .args(["--spans", spans, "--rate", "0"])
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "loadgen over {protocol} with TLS: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    loadgen("grpc", https(c.grpc), "tls", "300");
    loadgen("http", https(c.http), "tls-http", "50");
    let endpoint = https(c.grpc);
    let _exporter = GpuExporter::start_with_env(
        &[
            "--simulate",
            "--nodes",
            "1",
            "--gpus-per-node",
            "1",
            "--interval",
            "1s",
            "--otlp-endpoint",
            &endpoint,
        ],
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", cert_text)],
        &dir.path().join("exporter.log"),
    )
    .unwrap();

    // curl over HTTPS, with the token; plain HTTP gets nothing.
    let sql = |query: &str| -> (bool, String) {
        curl(&[
            "--cacert",
            cert_text,
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer q-tls",
            "-d",
            &serde_json::json!({ "sql": query }).to_string(),
            &format!("{}/api/v1/sql", https(c.query)),
        ])
    };
    let (ok, body) = sql("SELECT count(*) AS n FROM spans WHERE service_name LIKE 'pysdk-%'");
    assert!(ok, "{body}");
    assert!(body.contains("\"n\":8"), "{body}");
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", c.query.port())]);
    assert!(!ok, "plain HTTP must not be answered on a TLS port");
    let (ok, body) = curl(&[&format!("{}/healthz", https(c.query))]);
    assert!(!ok, "an unknown CA must be refused by the client: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) =
            sql("SELECT count(*) AS n FROM metrics WHERE metric_name = 'DCGM_FI_DEV_GPU_TEMP'");
        if !body.contains("\"n\":0") && body.contains("\"n\":") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter's metrics never arrived over TLS: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // ADBC and pyarrow over grpc+tls with the token.
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/flight_sql_clients.py"))
        .args([
            "--uri",
            &format!("grpc+tls://127.0.0.1:{}", c.flight_sql.port()),
            "--run-id",
            "tls",
            "--token",
            "q-tls",
            "--tls-root-certs",
            cert_text,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(seen["adbc"]["with_parameter"].as_u64().unwrap() >= 300);
    assert_eq!(seen["flight"]["count"], seen["adbc"]["with_parameter"]);

    // vigil's own clients: query and alerts over HTTPS, the dashboard over grpc+tls, trusting
    // the CA given with --ca-cert; without it, a clear refusal.
    let vigil = |args: &[&str]| {
        let output = Command::new(vigil_bin())
            .args(args)
            .env_remove("VIGIL_CA_CERT")
            .env_remove("SSL_CERT_FILE")
            .output()
            .unwrap();
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let query_url = https(c.query);
    let count = "SELECT count(*) AS n FROM spans WHERE service_name LIKE 'pysdk-%'";
    let (ok, out) = vigil(&[
        "query",
        "--url",
        &query_url,
        "--token",
        "q-tls",
        "--ca-cert",
        cert_text,
        count,
    ]);
    assert!(ok && out.contains('8'), "vigil query over https: {out}");
    let (ok, out) = vigil(&["query", "--url", &query_url, "--token", "q-tls", count]);
    assert!(
        !ok && out.to_lowercase().contains("certificate") && !out.contains("panicked"),
        "an unknown CA must be refused with a clear error: {out}"
    );
    let (ok, out) = vigil(&[
        "alerts",
        "--url",
        &query_url,
        "--token",
        "q-tls",
        "--ca-cert",
        cert_text,
    ]);
    assert!(ok, "vigil alerts over https: {out}");
    let flight_url = format!("grpc+tls://127.0.0.1:{}", c.flight_sql.port());
    let (ok, out) = vigil(&[
        "tui",
        "--url",
        &flight_url,
        "--token",
        "q-tls",
        "--ca-cert",
        cert_text,
        "--bench",
        "1",
        "--bench-range",
        "15m",
    ]);
    assert!(
        ok && out.contains("Traces"),
        "vigil tui over grpc+tls: {out}"
    );

    // A second collector scrapes the first's own /metrics page (with a query token) over
    // https: one job trusting
    // the CA by `ca_file`, one by `SSL_CERT_FILE` (as webhooks and Alertmanagers do: the
    // system's roots, or that file).
    let scraper_config = dir.path().join("scraper.toml");
    let target = format!("127.0.0.1:{}", c.query.port());
    std::fs::write(
        &scraper_config,
        format!(
            "[[scrape]]\njob_name = \"tls-ca-file\"\ntargets = [{target:?}]\ninterval = \"1s\"\n\
             scheme = \"https\"\nca_file = {ca:?}\nbearer_token = \"q-tls\"\n\n\
             [[scrape]]\njob_name = \"tls-system-roots\"\ntargets = [\"localhost:{port}\"]\n\
             interval = \"1s\"\nscheme = \"https\"\nbearer_token = \"q-tls\"\n",
            port = c.query.port()
        ),
    )
    .unwrap();
    let scraper = Collector::start_with(
        &dir.path().join("scraper-data"),
        vec!["--config".into(), scraper_config.to_str().unwrap().into()],
        &[("SSL_CERT_FILE", cert_text)],
    )
    .unwrap();
    // https:// to a plaintext port: a clear error, not a process killed by SIGPIPE in silence.
    let output = Command::new(vigil_bin())
        .args(["query", "--url"])
        .arg(format!("https://127.0.0.1:{}", scraper.query.port()))
        .arg("SELECT 1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = plain_sql(
            &scraper,
            "SELECT resource_attributes['service.name'] AS job, max(value) AS up FROM metrics \
             WHERE metric_name = 'up' GROUP BY 1 ORDER BY 1",
        );
        let up: Vec<(String, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r["job"].as_str().unwrap_or_default().to_string(),
                    r["up"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        if up
            == [
                ("tls-ca-file".to_string(), 1.0),
                ("tls-system-roots".to_string(), 1.0),
            ]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the https targets were not scraped: {up:?}\n{}",
            std::fs::read_to_string(&scraper.log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Slack, PagerDuty and most receivers are https:// URLs trusted by the system's roots: an
/// alert must reach one whose CA only `SSL_CERT_FILE` names (as an operator's own CA would be
/// added to the system's roots), with the payload intact.
#[test]
fn an_alert_reaches_an_https_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let received = dir.path().join("received.jsonl");
    let mut receiver = KillOnDrop(
        Command::new(python())
            .arg(repo_root().join("tests/python/https_receiver.py"))
            .args([&cert, &key, &received])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the Python receiver starts"),
    );
    let mut line = String::new();
    BufReader::new(receiver.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("port=")
        .unwrap_or_default()
        .to_string();
    assert!(!port.is_empty(), "the receiver printed {line:?}");

    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[analyzer]\ninterval = \"1s\"\n\n[[alerting.webhooks]]\nname = \"tls\"\n\
             url = \"https://localhost:{port}/hook\"\ngroup_wait = \"1s\"\n"
        ),
    )
    .unwrap();
    let collector = Collector::start_with(
        &dir.path().join("data"),
        vec!["--config".into(), config.to_str().unwrap().into()],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    )
    .unwrap();
    // An XID 79 (the GPU fell off the bus) is alerted at once, without a baseline to learn.
    let exporter = GpuExporter::small_fleet(
        &collector.grpc_url(),
        Some("xid79:0/1:2s:60s"),
        &dir.path().join("exporter.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        // Whole lines only: the receiver may be writing the next.
        let done = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        if done.contains("GpuXidError") {
            break done.to_string();
        }
        if Instant::now() > deadline {
            panic!(
                "no alert reached the https webhook in 60 s: {text:?}\n{}",
                std::fs::read_to_string(&collector.log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop((receiver, exporter));
    let first: serde_json::Value = serde_json::from_str(delivered.lines().next().unwrap()).unwrap();
    assert_eq!(first["path"], "/hook", "{first}");
    let payload: serde_json::Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(payload["status"], "firing", "{payload}");
    assert_eq!(
        payload["alerts"][0]["labels"]["alertname"], "GpuXidError",
        "{payload}"
    );
}

/// A child process killed when the test ends, also by a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = certificate(dir.path());
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, format!("[tls]\ncert_file = {cert:?}\n")).unwrap();
    let error = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .err()
    .expect("it must not start");
    assert!(format!("{error:#}").contains("key_file"), "{error:#}");
}
