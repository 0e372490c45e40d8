//! The analyzer end to end: `vigil demo`, every simulated GPU fault and an injected drift raising
//! alerts that reach a signed webhook and a real Alertmanager and resolve when the fault ends, and
//! the outbox surviving a SIGKILL while the webhook receiver is down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use vigil_tests::{Collector, GpuExporter, free_port, required_tool, vigil_bin};

const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1zdGlsbC1hY2NlcHRlZA==";
const NEW_SECRET: &str = "new-secret-after-rotation";

/// What a receiver checks: a Standard Webhooks signature by any secret it holds.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    header.split(' ').any(|s| s == expected)
}

#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    payload: Value,
    verified_old: bool,
    verified_new: bool,
}

type Deliveries = Arc<Mutex<Vec<Delivery>>>;

async fn receive(
    State(deliveries): State<Deliveries>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    deliveries.lock().unwrap().push(Delivery {
        verified_old: verify(OLD_SECRET, &id, &timestamp, &body, &signature),
        verified_new: verify(NEW_SECRET, &id, &timestamp, &body, &signature),
        id,
        payload,
    });
    StatusCode::OK
}

/// A webhook receiver on `addr`, running on its own runtime thread.
fn webhook_receiver(addr: SocketAddr) -> Deliveries {
    let deliveries: Deliveries = Arc::default();
    let state = deliveries.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            ready_tx.send(()).unwrap();
            let app = Router::new()
                .route("/hook", post(receive))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("receiver started");
    deliveries
}

fn write_config(path: &Path, webhook_port: u16, alertmanager: Option<&str>) {
    let alertmanagers = alertmanager
        .map(|url| {
            format!("\n[[alerting.alertmanagers]]\nurl = \"{url}\"\nresend_interval = \"2s\"\n")
        })
        .unwrap_or_default();
    std::fs::write(
        path,
        format!(
            r#"[analyzer]
interval = "1s"

[analyzer.gpu]
window = "6s"
baseline_window = "30s"
resolve_after = "6s"

[analyzer.drift]
window = "10s"
evaluate_every = "1s"
reference_length = "25s"
min_samples = 100
for_duration = "2s"
resolve_after = "10s"

[[alerting.webhooks]]
name = "oncall"
url = "http://127.0.0.1:{webhook_port}/hook"
secrets = ["{NEW_SECRET}", "{OLD_SECRET}"]
group_by = ["alertname", "UUID", "model"]
group_wait = "1s"
group_interval = "2s"
max_attempts = 1000
{alertmanagers}"#
        ),
    )
    .unwrap();
}

struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_alertmanager() -> Alertmanager {
    let binary = required_tool("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port().unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{url}/-/ready"))
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Alertmanager {
        child,
        url,
        _dir: dir,
    }
}

/// (alertname, status, labels) of every alert in every delivery.
/// The names of the alerts Alertmanager's API lists now (active ones only).
fn alertmanager_alert_names(url: &str) -> BTreeSet<String> {
    let Ok(response) = reqwest::blocking::get(format!("{url}/api/v2/alerts")) else {
        return BTreeSet::new();
    };
    let alerts: Vec<Value> = response.json().unwrap_or_default();
    alerts
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

fn alerts_in(deliveries: &Deliveries) -> Vec<(String, String, BTreeMap<String, String>)> {
    deliveries
        .lock()
        .unwrap()
        .iter()
        .flat_map(|d| d.payload["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (
                labels.get("alertname").cloned().unwrap_or_default(),
                a["status"].as_str().unwrap_or("").to_string(),
                labels,
            )
        })
        .collect()
}

#[test]
fn demo_fires_its_gpu_and_drift_alerts_within_two_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let started = Instant::now();
    let output = Command::new(vigil_bin())
        .args([
            "demo",
            "--no-tui",
            "--exit-when-done",
            "--timeout",
            "120s",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed after {:?}:\n{stdout}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("FIRING   ModelDrift"), "{stdout}");
    assert!(
        stdout.contains("FIRING   Nccl") || stdout.contains("FIRING   Gpu"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook received (signature verified)"),
        "{stdout}"
    );
    assert!(stdout.contains("look next: vigil query"), "{stdout}");
    // The GPU alert names the services and models served from its host (the demo's traffic
    // runs on the simulated nodes).
    assert!(
        stdout.lines().any(|l| l.contains("served from its host: ")
            && ["chat-api/", "support-bot/", "rag-search/", "summarizer/"]
                .iter()
                .any(|s| l.contains(s))),
        "{stdout}"
    );
    // The default ports when they are free, so that `vigil query` needs no --url; else it says.
    assert!(
        stdout.contains("SQL              http://127.0.0.1:9470   try: vigil query \"")
            || stdout.contains("query port 127.0.0.1:9470 is not free"),
        "{stdout}"
    );

    // The alerts are in the alerts table of the demo's data directory.
    let collector = Collector::start(&data, &[]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime
        .block_on(collector.sql("SELECT labels['alertname'] AS name, detector, state FROM alerts WHERE state = 'firing'"))
        .unwrap();
    let names: BTreeSet<String> = rows
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(names.contains("ModelDrift"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("Nccl") || n.starts_with("Gpu")),
        "{names:?}"
    );
    // What the drift alert says to look at next shows the calls it judged (the demo's drift
    // alert is on a scope across models, whose SQL must not filter on a model named `*`).
    let drift_sql = stdout
        .lines()
        .skip_while(|l| !l.contains("FIRING   ModelDrift"))
        .find_map(|l| l.split("look next: ").nth(1))
        .and_then(|command| command.split('"').nth(1))
        .unwrap_or_else(|| panic!("no SQL to look at after the drift alert:\n{stdout}"))
        .to_string();
    let calls = runtime.block_on(collector.sql(&drift_sql)).unwrap();
    assert!(!calls.is_empty(), "{drift_sql} found no calls");
}

#[test]
fn every_gpu_fault_and_a_drift_alert_reach_a_signed_webhook_and_alertmanager_then_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let webhook_port = free_port().unwrap();
    let deliveries = webhook_receiver(SocketAddr::from(([127, 0, 0, 1], webhook_port)));
    let alertmanager = start_alertmanager();
    let config = dir.path().join("vigil.toml");
    write_config(&config, webhook_port, Some(&alertmanager.url));
    let collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();

    // One fault of every kind on its own GPU, from 20 s to 45 s; node 4 stays healthy.
    let faults = [
        ("thermal", "0/0"),
        ("power-cap", "0/1"),
        ("clock-drop", "0/2"),
        ("ecc-storm", "0/3"),
        ("xid79", "1/0"),
        ("xid48", "1/1"),
        ("xid94", "1/2"),
        ("xid31", "1/3"),
        ("pcie-downtrain", "2/0"),
        ("nvlink-crc", "2/1"),
        ("straggler", "2/2"),
        ("nccl-sag", "3"),
    ];
    let mut args: Vec<String> = [
        "--simulate",
        "--nodes",
        "5",
        "--gpus-per-node",
        "4",
        "--interval",
        "1s",
        "--otlp-endpoint",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(collector.grpc_url());
    args.push("--ground-truth".into());
    args.push(dir.path().join("truth.csv").display().to_string());
    for (kind, place) in faults {
        args.push("--fault".into());
        args.push(format!("{kind}:{place}:20s:25s"));
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = GpuExporter::start(&arg_refs, &dir.path().join("exporter.log")).unwrap();
    let mut loadgen = Command::new(vigil_bin())
        .args([
            "loadgen",
            "--quiet",
            "--rate",
            "300",
            "--duration",
            "80",
            "--endpoint",
            &collector.grpc_url(),
        ])
        .args(["--drift-after", "25s", "--drift-output-tokens", "1.6"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Ground truth: which GPU each fault hit.
    let truth = std::fs::read_to_string(dir.path().join("truth.csv")).unwrap();
    let mut fault_uuid: BTreeMap<String, String> = BTreeMap::new();
    for line in truth.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        fault_uuid.insert(
            cols[0].to_string(),
            if cols[3].is_empty() {
                cols[1].to_string()
            } else {
                cols[3].to_string()
            },
        );
    }
    let expected: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "thermal",
            &[
                "GpuThrottled",
                "GpuHotterThanPeers",
                "GpuClockBelowPeers",
                "GpuClockBelowBaseline",
            ][..],
        ),
        (
            "power-cap",
            &[
                "GpuThrottled",
                "GpuClockBelowPeers",
                "GpuClockBelowBaseline",
            ][..],
        ),
        (
            "clock-drop",
            &["GpuClockBelowPeers", "GpuClockBelowBaseline"][..],
        ),
        (
            "ecc-storm",
            &[
                "GpuEccSingleBitStorm",
                "GpuEccDoubleBitErrors",
                "GpuXidError",
            ][..],
        ),
        ("xid79", &["GpuXidError", "GpuLost"][..]),
        ("xid48", &["GpuXidError", "GpuEccDoubleBitErrors"][..]),
        ("xid94", &["GpuXidError", "GpuRowsRemapped"][..]),
        ("xid31", &["GpuXidError"][..]),
        (
            "pcie-downtrain",
            &[
                "GpuPcieLinkDowntrained",
                "GpuPcieReplays",
                "NcclBusBandwidthDrop",
            ][..],
        ),
        ("nvlink-crc", &["GpuNvlinkErrors"][..]),
        ("straggler", &["NcclStraggler", "NcclBusBandwidthDrop"][..]),
        ("nccl-sag", &["NcclBusBandwidthDrop", "NcclStraggler"][..]),
    ]);
    let caught = |fault: &str| -> bool {
        let target = &fault_uuid[fault];
        alerts_in(&deliveries).iter().any(|(name, status, labels)| {
            status == "firing"
                && expected[fault].contains(&name.as_str())
                && (labels.get("UUID") == Some(target) || labels.get("Hostname") == Some(target))
        })
    };

    // Every fault raises its alert, and the drift its own. Alertmanager's API lists only alerts
    // still active, and short ones (an XID) resolve within seconds, so note what it shows as we go.
    let mut am_names: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        am_names.extend(alertmanager_alert_names(&alertmanager.url));
        let missing: Vec<&str> = expected.keys().copied().filter(|f| !caught(f)).collect();
        let drift = alerts_in(&deliveries)
            .iter()
            .any(|(n, s, _)| n == "ModelDrift" && s == "firing");
        if missing.is_empty() && drift && am_names.contains("GpuXidError") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught: {missing:?}, drift: {drift}, Alertmanager showed {am_names:?}\nalerts: {:#?}",
            alerts_in(&deliveries)
                .iter()
                .map(|(n, s, l)| (n, s, l.get("UUID"), l.get("Hostname")))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Nothing fired on the healthy node.
    let healthy: Vec<_> = alerts_in(&deliveries)
        .into_iter()
        .filter(|(_, _, l)| l.get("Hostname").map(String::as_str) == Some("sim-node-04"))
        .collect();
    assert!(
        healthy.is_empty(),
        "false alarms on the healthy node: {healthy:?}"
    );
    // Every payload is Alertmanager's webhook format, signed with both secrets.
    for delivery in deliveries.lock().unwrap().iter() {
        assert!(
            delivery.verified_old && delivery.verified_new,
            "bad signature on {}",
            delivery.id
        );
        assert_eq!(delivery.payload["version"], "4");
        for key in [
            "receiver",
            "status",
            "groupKey",
            "groupLabels",
            "commonLabels",
            "externalURL",
        ] {
            assert!(delivery.payload.get(key).is_some(), "{key} missing");
        }
        for alert in delivery.payload["alerts"].as_array().unwrap() {
            for key in [
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "fingerprint",
                "x_evidence",
            ] {
                assert!(alert.get(key).is_some(), "{key} missing in {alert}");
            }
        }
    }
    // Alertmanager had them.
    assert!(
        am_names.contains("GpuXidError") && am_names.len() >= 5,
        "Alertmanager showed {am_names:?}"
    );

    // After the faults end (45 s), every GPU alert that fired resolves.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = alerts_in(&deliveries);
        let fired: BTreeSet<(String, String)> = all
            .iter()
            .filter(|(n, s, _)| s == "firing" && n != "ModelDrift")
            .map(|(n, _, l)| (n.clone(), format!("{:?}", l)))
            .collect();
        let resolved: BTreeSet<(String, String)> = all
            .iter()
            .filter(|(_, s, _)| s == "resolved")
            .map(|(n, _, l)| (n.clone(), format!("{:?}", l)))
            .collect();
        let open: Vec<_> = fired.difference(&resolved).collect();
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still firing after the faults ended: {open:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The collector's own page counts the deliveries, and promtool finds nothing to lint on it.
    let page = reqwest::blocking::get(format!("{}/metrics", collector.query_url()))
        .unwrap()
        .text()
        .unwrap();
    let delivered: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("vigil_alert_notifications_total{outcome=\"delivered\"} "))
        .unwrap_or_else(|| panic!("no delivery counter on /metrics:\n{page}"))
        .parse()
        .unwrap();
    assert!(delivered >= 1.0, "{page}");
    let (code, report) = vigil_tests::promtool_check_metrics(&page);
    assert_eq!(code, Some(0), "promtool check metrics: {report}\n{page}");
    let _ = loadgen.kill();
    let _ = loadgen.wait();
    drop(exporter);
}

#[test]
fn the_outbox_delivers_every_alert_after_a_sigkill_while_the_receiver_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let webhook_port = free_port().unwrap();
    let config = dir.path().join("vigil.toml");
    write_config(&config, webhook_port, None);
    let data = dir.path().join("data");
    let mut collector = Collector::start(&data, &["--config", config.to_str().unwrap()]).unwrap();
    let _exporter = GpuExporter::start(
        &[
            "--simulate",
            "--nodes",
            "2",
            "--gpus-per-node",
            "2",
            "--interval",
            "1s",
            "--otlp-endpoint",
            &collector.grpc_url(),
            "--fault",
            "xid48:0/1:2s",
            "--fault",
            "pcie-downtrain:1/0:2s",
        ],
        &dir.path().join("exporter.log"),
    )
    .unwrap();

    // The receiver is down: notifications pile up in the outbox and are retried.
    let pending_dir = data.join("outbox/pending");
    let pending_ids = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending_ids(&pending_dir).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no notifications queued: {:?}\n{}",
            pending_ids(&pending_dir),
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let queued = pending_ids(&pending_dir);
    collector.kill();

    // Receiver up, collector back: everything queued before the crash is delivered.
    let deliveries = webhook_receiver(SocketAddr::from(([127, 0, 0, 1], webhook_port)));
    collector.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: BTreeSet<String> = deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.id.clone())
            .collect();
        let missing: Vec<&String> = queued.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after restart: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        deliveries
            .lock()
            .unwrap()
            .iter()
            .all(|d| d.verified_new && d.verified_old)
    );
}

/// Silence is not health: when a node's exporter stops, its GPUs get `GpuStoppedReporting`, and
/// the alert a fault raised on one of them stays firing through the silence instead of resolving
/// as if the GPU had recovered. When the exporter is back (without the fault), both resolve.
#[test]
fn a_gpu_that_stops_reporting_keeps_its_alerts_and_gets_one_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        "[analyzer]\ninterval = \"1s\"\n\n[analyzer.gpu]\nwindow = \"4s\"\nresolve_after = \"4s\"\nsilent_after = \"8s\"\n\n[analyzer.drift]\nenabled = false\n",
    )
    .unwrap();
    let collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let latest = |alertname: &str| -> Vec<(String, String)> {
        let sql = format!(
            "SELECT subject, state FROM (SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY time DESC) AS n FROM alerts) \
             WHERE n = 1 AND labels['alertname'] = '{alertname}' ORDER BY subject"
        );
        runtime
            .block_on(collector.sql(&sql))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["subject"].as_str().unwrap_or("").to_string(),
                    r["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let wait_for = |what: &str, timeout: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what} within {timeout:?}; log:\n{}",
                collector.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let fleet = |fault: Option<&str>, log: &str| {
        GpuExporter::small_fleet(&collector.grpc_url(), fault, &dir.path().join(log))
    };

    let mut exporter = fleet(Some("pcie-downtrain:0/1:1s"), "exporter-1.log");
    wait_for(
        "the downtrained link fires",
        Duration::from_secs(30),
        &|| {
            latest("GpuPcieLinkDowntrained")
                .iter()
                .any(|(_, state)| state == "firing")
        },
    );
    exporter.stop().unwrap();
    // Past silent_after, both GPUs are reported silent…
    wait_for(
        "both GPUs are reported silent",
        Duration::from_secs(30),
        &|| {
            let silent = latest("GpuStoppedReporting");
            silent.len() == 2 && silent.iter().all(|(_, state)| state == "firing")
        },
    );
    // …and the downtrained link is still firing, long past window + resolve_after.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        latest("GpuPcieLinkDowntrained")
            .iter()
            .map(|(_, state)| state.as_str())
            .collect::<Vec<_>>(),
        vec!["firing"],
        "a silent GPU's alert must not resolve"
    );

    // Back, and healthy: the silence and the fault both resolve.
    let _exporter = fleet(None, "exporter-2.log");
    wait_for(
        "silence and fault resolve",
        Duration::from_secs(30),
        &|| {
            latest("GpuStoppedReporting")
                .iter()
                .chain(latest("GpuPcieLinkDowntrained").iter())
                .all(|(_, state)| state == "resolved")
        },
    );
}

/// A detector that fails its rounds raises nothing, so its silence must be visible: here the
/// metrics table loses a Parquet file under the collector (as a relative data directory made
/// every query fail, before it was resolved at start-up), and `/metrics`, the status endpoint and
/// `vigil alerts` say the analyzer is degraded.
#[test]
fn a_detector_that_fails_its_rounds_shows_the_analyzer_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let collector = Collector::start_with(
        &data,
        vec![],
        &[
            ("VIGIL_STORAGE__FLUSH_INTERVAL_SECS", "1"),
            ("VIGIL_ANALYZER__INTERVAL", "1s"),
        ],
    )
    .unwrap();
    let _exporter = GpuExporter::small_fleet(
        &collector.grpc_url(),
        None,
        &dir.path().join("exporter.log"),
    );
    let alerts = || {
        let (status, out, err) =
            vigil_tests::run_vigil(&["alerts", "--url", &collector.query_url()]).unwrap();
        assert!(status.success(), "{err}");
        out
    };
    let parquet = |root: &Path| -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    found.push(path);
                }
            }
        }
        found
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let files = parquet(&data.join("tables/metrics"));
        if !files.is_empty() {
            break files;
        }
        assert!(Instant::now() < deadline, "no metrics flushed within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(alerts().contains("Analyzer: ok"), "{}", alerts());
    for file in &files {
        std::fs::remove_file(file).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = alerts();
        if out.contains("Analyzer: DEGRADED") {
            assert!(out.contains("gpu_"), "names the failing detectors: {out}");
            break;
        }
        assert!(Instant::now() < deadline, "not shown degraded: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let page = runtime.block_on(collector.own_metrics()).unwrap();
    assert!(
        page.lines().any(
            |l| l.starts_with("vigil_analyzer_detector_failing{detector=\"gpu_")
                && l.ends_with(" 1")
        ),
        "{page}"
    );
    assert!(collector.log().contains("detector failed this round"));
}

/// The issue's scenario: the collector is SIGKILLed two seconds after an alert fired, inside the
/// webhook's `group_wait`. After the restart the alert still reaches the webhook (it waited in
/// the outbox's grouping area), rather than at the next `repeat_interval` hours later.
#[test]
fn an_alert_fired_just_before_a_sigkill_within_group_wait_still_reaches_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let webhook_port = free_port().unwrap();
    let deliveries = webhook_receiver(SocketAddr::from(([127, 0, 0, 1], webhook_port)));
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[analyzer]\ninterval = \"1s\"\n\n[analyzer.gpu]\nwindow = \"4s\"\n\n[analyzer.drift]\nenabled = false\n\n\
             [[alerting.webhooks]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{webhook_port}/hook\"\n\
             secrets = [\"{NEW_SECRET}\"]\ngroup_wait = \"8s\"\n"
        ),
    )
    .unwrap();
    let mut collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let _fleet = GpuExporter::small_fleet(
        &collector.grpc_url(),
        Some("pcie-downtrain:0/1:1s"),
        &dir.path().join("exporter.log"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = runtime
            .block_on(collector.sql(
                "SELECT count(*) AS n FROM alerts WHERE state = 'firing' AND labels['alertname'] = 'GpuPcieLinkDowntrained'",
            ))
            .unwrap();
        if vigil_tests::one(&rows, "n").as_i64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the alert did not fire");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(alerts_in(&deliveries).is_empty(), "still inside group_wait");
    collector.kill();
    collector.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !alerts_in(&deliveries)
        .iter()
        .any(|(name, status, _)| name == "GpuPcieLinkDowntrained" && status == "firing")
    {
        assert!(
            Instant::now() < deadline,
            "the alert never reached the webhook after the restart: {:?}",
            alerts_in(&deliveries)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A labelled live scenario through `vigil serve` with the golden-signal detector's defaults:
/// 30 minutes of history from the Python OTel SDK (10 calls/s at random times; `common` are
/// llm_app.py's flags for history and live alike), a SIGKILL and restart (the detector replays
/// the history from the store instead of learning for 15 minutes again), then live calls at
/// 10 calls/s with `change` (llm_app.py's flags) made a minute in. Returns the seconds from the
/// change to the first firing `LlmSignalAnomaly` that `wanted` accepts (None: none within
/// `wait`) and every anomaly alert that fired.
fn live_anomaly_scenario(
    common: &[&str],
    change: &[&str],
    wait: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> (Option<f64>, Vec<Value>) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path(), &[]).unwrap();
    let app = vigil_tests::repo_root().join("tests/python/llm_app.py");
    let history = Command::new(vigil_tests::python())
        .arg(&app)
        .args(["--endpoint", &collector.http_url()])
        .args(["--calls", "18000", "--minutes", "30", "--random-arrivals"])
        .args(["--no-metrics"])
        .args(common)
        .output()
        .unwrap();
    assert!(
        history.status.success(),
        "llm_app.py: {}",
        String::from_utf8_lossy(&history.stderr)
    );
    collector.restart().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(collector.wait_ready()).unwrap();

    let live_seconds = (60 + wait.as_secs() + 15).to_string();
    let mut live = Command::new(vigil_tests::python())
        .arg(&app)
        .args(["--endpoint", &collector.http_url()])
        .args([
            "--calls",
            "0",
            "--live-seconds",
            &live_seconds,
            "--live-rate",
            "10",
        ])
        .args(["--slow-after", "60", "--no-metrics"])
        .args(common)
        .args(change)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(live.stdout.take().unwrap()).lines();
    let changed_at = loop {
        let line = lines
            .next()
            .expect("llm_app.py ended before its change")
            .unwrap();
        let value: Value = serde_json::from_str(&line).unwrap();
        if let Some(at) = value["slow_from_unix"].as_f64() {
            break at;
        }
    };
    let sql = "SELECT labels['model'] AS model, labels['signal'] AS signal, \
               CAST(time AS BIGINT) / 1000000 AS at_ms, message \
               FROM alerts WHERE labels['alertname'] = 'LlmSignalAnomaly' AND state = 'firing' ORDER BY time";
    let deadline = Instant::now() + wait;
    let mut caught = None;
    let mut rows = Vec::new();
    while Instant::now() < deadline && caught.is_none() {
        std::thread::sleep(Duration::from_secs(1));
        rows = runtime.block_on(collector.sql(sql)).unwrap();
        caught = rows.iter().find(|r| wanted(r)).cloned();
    }
    let _ = live.kill();
    let _ = live.wait();
    let delay = caught.map(|c| c["at_ms"].as_f64().unwrap() / 1000.0 - changed_at);
    eprintln!(
        "change {change:?}: {}; every anomaly alert: {rows:#?}",
        delay.map_or(
            format!("not caught within {} s", wait.as_secs()),
            |d| format!("caught {d:.1} s after it")
        )
    );
    if delay.is_none() {
        eprintln!("{}", collector.log());
    }
    (delay, rows)
}

fn signal_of(row: &Value) -> &str {
    row["signal"].as_str().unwrap_or("")
}

/// The golden-signal detector as a user meets it (see [`live_anomaly_scenario`]): gpt-4o's
/// calls become twice as slow: `LlmSignalAnomaly` on gpt-4o's latency within 30 s, and on no
/// other model's latency.
#[test]
fn a_latency_step_on_one_model_raises_an_anomaly_alert_within_thirty_seconds() {
    let (delay, rows) = live_anomaly_scenario(
        &[],
        &["--slow-model", "gpt-4o", "--slow-factor", "2"],
        Duration::from_secs(45),
        |r| r["model"] == "gpt-4o" && signal_of(r).starts_with("latency"),
    );
    let delay = delay.expect("no latency anomaly on gpt-4o within 45 s of the slowdown");
    assert!(delay <= 30.0, "caught after {delay:.1} s");
    let other_latency: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["model"] != "gpt-4o"
                && r["model"] != "*"
                && ["latency", "ttft"]
                    .iter()
                    .any(|s| signal_of(r).starts_with(s))
        })
        .collect();
    assert!(
        other_latency.is_empty(),
        "models that did not change alerted: {other_latency:#?}"
    );
}

/// Live, one service at 10 calls/s failing 1% of its calls, then 3% (every model): an anomaly
/// on the error ratio. Goal (issue 15): within 5 minutes, asserted, and the delay is printed
/// for EVALUATION.md. Ignored by default: it runs for up to 8 minutes
/// (`cargo nextest run --workspace --run-ignored only -E 'test(/live_/)'`).
#[test]
#[ignore = "a live scenario of up to 8 minutes"]
fn live_error_ratio_tripling_raises_an_anomaly_alert() {
    let (delay, rows) = live_anomaly_scenario(
        &["--services", "1", "--error-ratio", "0.01"],
        &[
            "--slow-model",
            "*",
            "--slow-factor",
            "1",
            "--changed-error-ratio",
            "0.03",
        ],
        Duration::from_secs(300),
        |r| signal_of(r) == "error_ratio",
    );
    let delay = delay.expect("the error ratio tripled and no anomaly said so within 5 minutes");
    eprintln!("error ratio 1% -> 3%: caught after {delay:.0} s (goal 300 s)");
    // Nothing else changed: another signal alerting is a false alarm.
    let others: Vec<&Value> = rows
        .iter()
        .filter(|r| signal_of(r) != "error_ratio")
        .collect();
    assert!(others.is_empty(), "other signals alerted: {others:#?}");
}

/// Live, one service at 10 calls/s whose traffic halves (every model): an anomaly on its
/// request rate, or its calls' fall. Goal (issue 15): within 2 minutes; asserted within 4, the
/// delay printed.
/// Ignored by default, as above.
#[test]
#[ignore = "a live scenario of up to 6 minutes"]
fn live_request_rate_halving_raises_an_anomaly_alert() {
    let (delay, _) = live_anomaly_scenario(
        &["--services", "1"],
        &[
            "--slow-model",
            "*",
            "--slow-factor",
            "1",
            "--changed-rate",
            "0.5",
        ],
        Duration::from_secs(240),
        |r| signal_of(r).starts_with("requests_per_second") || signal_of(r) == "calls_dropped",
    );
    let delay = delay.expect("the request rate halved and no anomaly said so within 4 minutes");
    eprintln!("request rate halved: caught after {delay:.0} s (goal 120 s)");
}

/// The drift detector's defaults (10-minute window against the trailing hour) on real traffic,
/// end to end: two copies of the Azure LLM inference conversation trace (CC-BY, vendored in
/// analyzer/tests/data) replayed through the Python OTel SDK into `vigil serve`, each two hours
/// of it ending now, one unchanged and one whose last 11 minutes answer 25% longer. Real traffic
/// swings its median output twofold between windows with nothing changed: the unchanged service
/// is judged and judged fine, the shifted one drifts, on its output tokens.
#[test]
fn real_traffic_replayed_through_the_sdk_drifts_only_where_it_was_shifted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    // Only the drift detector's cadence is changed (it judges once a minute by default).
    std::fs::write(
        &config,
        "[analyzer]\ninterval = \"1s\"\n\n[analyzer.drift]\nevaluate_every = \"5s\"\n\n[analyzer.anomaly]\nenabled = false\n",
    )
    .unwrap();
    let mut collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let trace = vigil_tests::repo_root()
        .join("analyzer/tests/data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv");
    let replay = vigil_tests::repo_root().join("tests/python/replay_trace.py");
    let send = |service: &str, shift: &str| {
        Command::new(vigil_tests::python())
            .arg(&replay)
            .args(["--endpoint", &collector.http_url()])
            .args(["--trace", trace.to_str().unwrap(), "--times", "2"])
            .args([
                "--service",
                service,
                "--shift",
                shift,
                "--shift-last-seconds",
                "660",
            ])
            .spawn()
            .unwrap()
    };
    let (mut steady, mut shifted) = (send("steady", "1"), send("shifted", "1.25"));
    assert!(steady.wait().unwrap().success(), "{}", collector.log());
    assert!(shifted.wait().unwrap().success(), "{}", collector.log());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sql = "SELECT labels['service'] AS service, active, message, evidence FROM evaluations \
               WHERE detector = 'model_drift' AND labels['model'] = 'trace'";
    let deadline = Instant::now() + Duration::from_secs(90);
    // A scope is listed as soon as it is seen; "not judged" until its reference has filled.
    let verdict = |rows: &[Value], service: &str| {
        rows.iter()
            .find(|r| {
                r["service"] == service
                    && !r["message"].as_str().unwrap_or("").contains("not judged")
            })
            .cloned()
    };
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        rows = runtime.block_on(collector.sql(sql)).unwrap();
        if verdict(&rows, "steady").is_some() && verdict(&rows, "shifted").is_some() {
            break;
        }
    }
    let (Some(steady), Some(shifted)) = (verdict(&rows, "steady"), verdict(&rows, "shifted"))
    else {
        panic!(
            "no drift verdict on both services within 90 s: {rows:#?}\n{}",
            collector.log()
        );
    };
    assert_eq!(
        steady["active"], false,
        "the unchanged trace drifted: {steady:#}"
    );
    assert_eq!(
        shifted["active"], true,
        "the shift was not seen: {shifted:#}"
    );
    assert!(
        shifted["message"]
            .as_str()
            .unwrap()
            .contains("output_tokens"),
        "{shifted:#}"
    );
    collector.stop().unwrap();
}
