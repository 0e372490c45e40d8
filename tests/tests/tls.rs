//! TLS on every listener, with a test certificate made by `openssl`: the official Python SDK
//! sends OTLP over gRPC and HTTP with `OTEL_EXPORTER_OTLP_CERTIFICATE`, `vigil gpu-exporter` and
//! `vigil loadgen` send over gRPC with it, ADBC and pyarrow query Flight SQL over `grpc+tls` with
//! a bearer token, and curl queries the query port over HTTPS. Plain TCP is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
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
    // loadgen and the GPU exporter over gRPC.
    let output = Command::new(vigil_bin())
        .args(["loadgen", "--quiet", "--endpoint", &https(c.grpc)])
        .args(["--run-id", "tls", "--spans", "300", "--rate", "0"])
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
