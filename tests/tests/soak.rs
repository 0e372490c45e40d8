//! The soak run: not in CI (`#[ignore]`); `scripts/soak.sh` runs it against a release build with
//! the data directory on a file system of its own, which it fills once.
//!
//! For `VIGIL_SOAK_SECS` (1,800): OTLP traces, metrics and logs from `vigil loadgen` at half the
//! ingest ceiling measured first on the same binary and disk, malformed and hostile requests at 1%
//! of the request rate, a simulated GPU fleet with faults (the analyzer on), a webhook receiver
//! that fails one delivery in five, a SIGKILL and restart every `VIGIL_SOAK_KILL_EVERY_SECS`
//! (300), and the file system filled once for a minute. At the end: every acknowledged span,
//! metric point and log record stored exactly once, every alert that fired delivered (or still in
//! the outbox), RSS never above the memory limits plus the stated margin, no panic in any log.
//! The figures go to stdout and to `VIGIL_SOAK_REPORT` as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};
use vigil_tests::{Collector, GpuExporter, free_port, vigil_bin};

/// Ingest memory limit (the default) and the query engine's (the default): RSS may exceed their
/// sum by at most the margin (runtime, code, allocator slack, Parquet writers).
const INGEST_LIMIT: u64 = 1 << 30;
const QUERY_LIMIT: u64 = 512 << 20;
const MARGIN: u64 = 256 << 20;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the webhook receiver saw: every alert of every accepted delivery, by fingerprint, and
/// the deliveries it failed on purpose.
#[derive(Default)]
struct Receiver {
    requests: AtomicU64,
    refused: AtomicU64,
    alerts: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    // One in five fails, before looking at it: the sender must retry.
    if receiver.requests.fetch_add(1, Ordering::Relaxed) % 5 == 4 {
        receiver.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut alerts = receiver.alerts.lock().unwrap();
    for alert in payload["alerts"].as_array().into_iter().flatten() {
        alerts
            .entry(alert["fingerprint"].as_str().unwrap_or("").to_string())
            .or_default()
            .insert(alert["status"].as_str().unwrap_or("").to_string());
    }
    StatusCode::OK
}

fn start_receiver(port: u16) -> Arc<Receiver> {
    let receiver = Arc::new(Receiver::default());
    let state = receiver.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            ready_tx.send(()).unwrap();
            let app = Router::new()
                .route("/hook", post(receive))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    receiver
}

/// The collector's ports stay the same across restarts, so that senders find it again.
struct Ports {
    grpc: u16,
    http: u16,
    query: u16,
    flight_sql: u16,
}

fn start_collector(data: &Path, config: &Path, ports: &Ports, log: &Path) -> Collector {
    let mut command = Command::new(vigil_bin());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args([
            "--otlp-grpc-addr",
            &format!("127.0.0.1:{}", ports.grpc),
            "--otlp-http-addr",
            &format!("127.0.0.1:{}", ports.http),
            "--query-addr",
            &format!("127.0.0.1:{}", ports.query),
            "--flight-sql-addr",
            &format!("127.0.0.1:{}", ports.flight_sql),
        ])
        .env_remove("VIGIL_CONFIG");
    // A restart right after a SIGKILL can find a port still held for a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut retry = Command::new(command.get_program());
        retry.args(command.get_args()).env_remove("VIGIL_CONFIG");
        match Collector::spawn(retry, log) {
            Ok(collector) => return collector,
            Err(e) if Instant::now() < deadline => {
                eprintln!("soak: restart failed, retrying: {e:#}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("the collector does not start again: {e:#}"),
        }
    }
}

fn loadgen(endpoint: &str, run: &str, extra: &[&str], ack_log: Option<&Path>) -> Command {
    let mut command = Command::new(vigil_bin());
    command
        .args([
            "loadgen",
            "--quiet",
            "--endpoint",
            endpoint,
            "--run-id",
            run,
            "--metrics",
            "--logs",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = ack_log {
        command.arg("--ack-log").arg(path);
    }
    command
}

fn summary(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_else(|_| {
        panic!(
            "loadgen printed no summary: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Acknowledged rows per (signal, batch) from loadgen's ack log.
fn acknowledged(path: &Path) -> BTreeMap<(&'static str, u64), u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut acked = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (signal, batch, rows) = match parts.as_slice() {
            [batch, rows] => ("spans", batch, rows),
            ["metrics", batch, rows] => ("metrics", batch, rows),
            ["logs", batch, rows] => ("logs", batch, rows),
            _ => continue,
        };
        if let (Ok(batch), Ok(rows)) = (batch.parse(), rows.parse()) {
            acked.insert((signal, batch), rows);
        }
    }
    acked
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One hostile or malformed OTLP/HTTP request of kind `n`: (path, content type, gzip, body).
fn hostile(n: u64) -> (&'static str, &'static str, bool, Vec<u8>) {
    let spans = |resource: Vec<KeyValue>, count: usize, start: u64| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..count)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "hostile".into(),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let protobuf = "application/x-protobuf";
    match n % 8 {
        // Noise as protobuf.
        0 => ("/v1/traces", protobuf, false, vec![0xff; 4096]),
        // A valid request cut short.
        1 => {
            let mut body = spans(vec![text("service.name", "hostile")], 50, 1).encode_to_vec();
            body.truncate(body.len() / 2);
            ("/v1/logs", protobuf, false, body)
        }
        // JSON that is not OTLP.
        2 => (
            "/v1/metrics",
            "application/json",
            false,
            br#"{"resourceMetrics": [{"resource": 5, "scopeMetrics": "x"}]}"#.to_vec(),
        ),
        // Amplification: a 1 MiB resource attribute over 2,000 spans, gzipped to a few KB.
        3 => {
            let big = "x".repeat(1 << 20);
            let request = spans(
                vec![text("service.name", "hostile"), text("blob", &big)],
                2000,
                now_ns(),
            );
            ("/v1/traces", protobuf, true, gzip(&request.encode_to_vec()))
        }
        // Timestamps at 0 and in the year 2200.
        4 => {
            let mut request = spans(vec![text("service.name", "hostile")], 100, 1);
            request.resource_spans[0].scope_spans[0].spans[50..]
                .iter_mut()
                .for_each(|s| s.start_time_unix_nano = 7_258_118_400_000_000_000);
            ("/v1/traces", protobuf, false, request.encode_to_vec())
        }
        // Forged alerts: an XID counter for 500 made-up GPUs.
        5 => {
            let points = (0..500)
                .map(|i| NumberDataPoint {
                    attributes: vec![
                        text("UUID", &format!("GPU-forged-{i}")),
                        text("gpu", "0"),
                        text("Hostname", "forged"),
                        text("xid", "79"),
                    ],
                    time_unix_nano: now_ns(),
                    value: Some(number_data_point::Value::AsDouble((n % 1000) as f64)),
                    ..Default::default()
                })
                .collect();
            let request = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![text("service.name", "hostile")],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            name: "DCGM_FI_DEV_XID_ERRORS".into(),
                            data: Some(Data::Sum(Sum {
                                data_points: points,
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            ("/v1/metrics", protobuf, false, request.encode_to_vec())
        }
        // An attribute value nested 5,000 deep.
        6 => {
            let mut value = AnyValue {
                value: Some(any_value::Value::StringValue("deep".into())),
            };
            for _ in 0..5000 {
                value = AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![KeyValue {
                            key: "k".into(),
                            value: Some(value),
                            ..Default::default()
                        }],
                    })),
                };
            }
            let mut attribute = text("nested", "");
            attribute.value = Some(value);
            let request = spans(vec![attribute], 1, now_ns());
            ("/v1/traces", protobuf, false, request.encode_to_vec())
        }
        // A body past the request limit, declared as what it is not.
        _ => ("/v1/traces", "text/plain", false, vec![b'a'; 40 << 20]),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Space left on the file system holding `path`, in bytes.
fn available_bytes(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
#[ignore = "30 minutes; run by scripts/soak.sh"]
fn soak() {
    let seconds = env_secs("VIGIL_SOAK_SECS", 1800);
    let kill_every = env_secs("VIGIL_SOAK_KILL_EVERY_SECS", 300);
    let scratch = tempfile::tempdir().unwrap();
    let root = std::env::var("VIGIL_SOAK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| scratch.path().to_path_buf());
    let fill = std::env::var("VIGIL_SOAK_FILL").is_ok_and(|v| v == "1");
    let data = root.join("data");
    let logs = scratch.path();
    let ports = Ports {
        grpc: free_port().unwrap(),
        http: free_port().unwrap(),
        query: free_port().unwrap(),
        flight_sql: free_port().unwrap(),
    };
    let hook_port = free_port().unwrap();
    let receiver = start_receiver(hook_port);
    let config = scratch.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[alerting.webhooks]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n\
             group_wait = \"10s\"\ngroup_interval = \"30s\"\nmax_attempts = 1000\n"
        ),
    )
    .unwrap();
    let collector_log = logs.join("collector.log");
    let collector = Arc::new(Mutex::new(start_collector(
        &data,
        &config,
        &ports,
        &collector_log,
    )));
    let grpc = format!("http://127.0.0.1:{}", ports.grpc);
    let query = format!("http://127.0.0.1:{}", ports.query);

    // The ceiling, on this binary and disk: as fast as it takes them, for 30 s.
    let output = loadgen(
        &grpc,
        "ceiling",
        &[
            "--rate",
            "0",
            "--duration",
            "30",
            "--batch",
            "500",
            "--concurrency",
            "8",
        ],
        None,
    )
    .output()
    .unwrap();
    let ceiling = summary(&output)["accepted_spans_per_second"]
        .as_f64()
        .unwrap();
    let rate = (ceiling / 2.0).round() as u64;
    eprintln!("soak: ceiling {ceiling:.0} spans/s (with metrics and logs); running at {rate}");

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let pid = Arc::new(AtomicU32::new(collector.lock().unwrap().pid()));

    // RSS, every 100 ms, of whichever collector process is running: the peak, when it was, and
    // the largest of every 10 seconds (to set beside the kills, the full disk and the alerts).
    let sampler = {
        let (done, pid) = (done.clone(), pid.clone());
        std::thread::spawn(move || {
            let (mut peak, mut peak_at) = (0u64, 0.0f64);
            let mut per_10s: Vec<u64> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let rss = vigil_tests::rss_bytes(pid.load(Ordering::Relaxed)).unwrap_or(0);
                let at = started.elapsed().as_secs_f64();
                if rss > peak {
                    (peak, peak_at) = (rss, at);
                }
                let slot = (at / 10.0) as usize;
                if per_10s.len() <= slot {
                    per_10s.resize(slot + 1, 0);
                }
                per_10s[slot] = per_10s[slot].max(rss >> 20);
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, peak_at, per_10s)
        })
    };

    let fleet_log = logs.join("fleet.log");
    let minute = |m: u64| format!("{}s", (m * 60).min(seconds * 9 / 10));
    let faults = [
        format!("thermal:0/1:{}:4m", minute(2)),
        format!("xid79:1/2:{}", minute(8)),
        format!("pcie-downtrain:0/3:{}:5m", minute(13)),
        format!("ecc-storm:1/0:{}:3m", minute(21)),
    ];
    let truth = logs.join("ground-truth.csv");
    let truth_arg = truth.to_string_lossy().into_owned();
    let mut fleet_args = vec![
        "--ground-truth",
        &truth_arg,
        "--simulate",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--interval",
        "5s",
        "--otlp-endpoint",
        &grpc,
    ];
    for fault in &faults {
        fleet_args.extend(["--fault", fault]);
    }
    let mut fleet = GpuExporter::start(&fleet_args, &fleet_log).unwrap();

    let ack_log = logs.join("acks.log");
    let duration = seconds.to_string();
    let rate_arg = rate.to_string();
    let main_load = loadgen(
        &grpc,
        "soak",
        &[
            "--rate",
            &rate_arg,
            "--duration",
            &duration,
            "--batch",
            "500",
            "--concurrency",
            "8",
        ],
        Some(&ack_log),
    )
    .spawn()
    .unwrap();

    // Hostile requests at 1% of the request rate (loadgen sends three per batch of 500).
    let hostile_statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let hostile_thread = {
        let (done, statuses) = (done.clone(), hostile_statuses.clone());
        let base = format!("http://127.0.0.1:{}", ports.http);
        let every = Duration::from_secs_f64(1.0 / (rate as f64 * 3.0 / 500.0 * 0.01).max(0.01));
        // Encoding (and dropping) a value nested 5,000 deep recurses as deep.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let (path, content_type, gzipped, body) = hostile(n);
                    let mut request = client
                        .post(format!("{base}{path}"))
                        .header("content-type", content_type)
                        .body(body);
                    if gzipped {
                        request = request.header("content-encoding", "gzip");
                    }
                    let outcome = match request.send() {
                        Ok(response) => format!("kind {} -> {}", n % 8, response.status().as_u16()),
                        Err(_) => format!("kind {} -> no answer", n % 8),
                    };
                    *statuses.lock().unwrap().entry(outcome).or_default() += 1;
                    n += 1;
                    std::thread::sleep(every);
                }
            })
            .unwrap()
    };

    // The schedule: a SIGKILL and restart every `kill_every`; the disk filled once, at 45%.
    let mut kills = 0;
    let mut next_kill = started + Duration::from_secs(kill_every);
    let fill_at = started + Duration::from_secs(seconds * 45 / 100);
    let mut filled = !fill;
    let mut disk_full_seen = false;
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        if Instant::now() >= next_kill && Instant::now() + Duration::from_secs(30) < end {
            let mut c = collector.lock().unwrap();
            c.kill();
            *c = start_collector(&data, &config, &ports, &collector_log);
            pid.store(c.pid(), Ordering::Relaxed);
            kills += 1;
            next_kill += Duration::from_secs(kill_every);
            eprintln!("soak: SIGKILL #{kills} at {:?}", started.elapsed());
        }
        if !filled && Instant::now() >= fill_at {
            filled = true;
            let ballast = root.join("ballast");
            // The collector writes on meanwhile: what was free a moment ago may not be now, so
            // measure again, leave a little more room and retry.
            let mut size = 0;
            for attempt in 0..10 {
                size = available_bytes(&root).saturating_sub(1 << (20 + attempt));
                let status = Command::new("fallocate")
                    .args(["-l", &size.to_string()])
                    .arg(&ballast)
                    .status()
                    .unwrap();
                if status.success() {
                    break;
                }
                let _ = std::fs::remove_file(&ballast);
                size = 0;
            }
            assert!(size > 0, "could not fill the disk with fallocate");
            eprintln!(
                "soak: filled the disk ({} MiB) at {:?}",
                size >> 20,
                started.elapsed()
            );
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if let Ok(r) = reqwest::blocking::get(format!("{query}/readyz"))
                    && r.status().as_u16() == 503
                {
                    disk_full_seen = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            std::fs::remove_file(&ballast).unwrap();
            eprintln!("soak: freed the disk at {:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let output = main_load.wait_with_output().unwrap();
    let load = summary(&output);
    done.store(true, Ordering::Relaxed);
    hostile_thread.join().unwrap();
    let (peak_rss, peak_rss_at, rss_per_10s) = sampler.join().unwrap();
    fleet.stop().unwrap();

    // Let alerts that fired last reach the receiver (group_wait 10 s, retries after failures).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = collector.lock().unwrap();
    let fired: BTreeSet<String> = runtime
        .block_on(c.sql("SELECT DISTINCT fingerprint FROM alerts WHERE state = 'firing'"))
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap().to_string())
        .collect();
    let outbox_text = || {
        let mut files = Vec::new();
        files_under(&data.join("outbox"), &mut files);
        files
            .iter()
            .filter(|p| !p.components().any(|c| c.as_os_str() == "dead"))
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<String>()
    };
    let undelivered = || -> Vec<String> {
        let delivered = receiver.alerts.lock().unwrap();
        let outbox = outbox_text();
        fired
            .iter()
            .filter(|f| !delivered.contains_key(*f) && !outbox.contains(f.as_str()))
            .cloned()
            .collect()
    };
    let not_yet_delivered = || {
        let delivered = receiver.alerts.lock().unwrap();
        fired.iter().filter(|f| !delivered.contains_key(*f)).count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while not_yet_delivered() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    let still_in_outbox = not_yet_delivered();
    let missing_alerts = undelivered();
    let delivered = receiver.alerts.lock().unwrap().len();
    let mut dead = Vec::new();
    files_under(&data.join("outbox/dead"), &mut dead);

    // Exactly once: every acknowledged batch of every signal stored whole, and nothing twice.
    let acked = acknowledged(&ack_log);
    let mut stored: BTreeMap<(&'static str, u64), u64> = BTreeMap::new();
    for signal in ["spans", "metrics", "logs"] {
        let rows = runtime
            .block_on(c.sql(&format!(
                "SELECT CAST(resource_attributes['loadgen.batch'] AS BIGINT) AS batch, count(*) AS n \
                 FROM {signal} WHERE resource_attributes['loadgen.run'] = 'soak' GROUP BY 1"
            )))
            .unwrap();
        for row in rows {
            stored.insert(
                (signal, row["batch"].as_u64().unwrap()),
                row["n"].as_u64().unwrap(),
            );
        }
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|(key, rows)| stored.get(*key) != Some(*rows))
        .map(|(key, rows)| (key.0, key.1, *rows, stored.get(key).copied()))
        .collect();
    // Duplicates among all the run's spans (acknowledged or not), a minute of span start times at
    // a time: a distinct count over tens of millions of ids does not fit the query memory.
    let minutes = runtime
        .block_on(c.sql(
            "SELECT DISTINCT date_bin(interval '1 minute', time) AS minute FROM spans \
             WHERE resource_attributes['loadgen.run'] = 'soak' ORDER BY 1",
        ))
        .unwrap();
    let mut duplicate_spans = 0i64;
    for minute in &minutes {
        let start = minute["minute"].as_str().unwrap();
        let rows = runtime
            .block_on(c.sql(&format!(
                "SELECT count(*) - count(DISTINCT span_id) AS d FROM spans \
                 WHERE resource_attributes['loadgen.run'] = 'soak' \
                 AND time >= '{start}' AND time < CAST('{start}' AS TIMESTAMP) + interval '1 minute'"
            )))
            .unwrap();
        duplicate_spans += rows[0]["d"].as_i64().unwrap();
    }
    let acked_rows = |signal: &str| -> u64 {
        acked
            .iter()
            .filter(|((s, _), _)| *s == signal)
            .map(|(_, n)| n)
            .sum()
    };

    drop(c);
    let mut panics = 0;
    for log in [&collector_log, &fleet_log] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panics += text.matches("panicked").count();
    }
    let report = json!({
        "seconds": seconds,
        "ceiling_spans_per_second": ceiling.round(),
        "rate_spans_per_second": rate,
        "loadgen": load,
        "acknowledged": {
            "spans": acked_rows("spans"),
            "metric_points": acked_rows("metrics"),
            "log_records": acked_rows("logs"),
        },
        "acknowledged_batches_not_stored_exactly_once": lost.len(),
        "duplicate_spans": duplicate_spans,
        "sigkills": kills,
        "disk_filled": fill,
        "readyz_said_disk_full": disk_full_seen,
        "hostile_requests": *hostile_statuses.lock().unwrap(),
        "alerts_fired": fired.len(),
        "alerts_delivered": delivered,
        "alerts_still_in_outbox_after_2_minutes": still_in_outbox,
        "alerts_neither_delivered_nor_in_outbox": missing_alerts,
        "dead_letters": dead.len(),
        "webhook_requests": receiver.requests.load(Ordering::Relaxed),
        "webhook_refused_on_purpose": receiver.refused.load(Ordering::Relaxed),
        "peak_rss_mib": peak_rss >> 20,
        "peak_rss_at_seconds": peak_rss_at.round(),
        "rss_mib_max_per_10_seconds": rss_per_10s,
        "rss_bound_mib": (INGEST_LIMIT + QUERY_LIMIT + MARGIN) >> 20,
        "panics": panics,
    });
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    println!("{pretty}");
    if let Ok(path) = std::env::var("VIGIL_SOAK_REPORT") {
        std::fs::write(path, &pretty).unwrap();
    }
    assert!(
        lost.is_empty(),
        "acknowledged batches not stored exactly once (signal, batch, sent, stored): {:?}",
        &lost[..lost.len().min(20)]
    );
    assert_eq!(duplicate_spans, 0);
    assert!(kills >= seconds / kill_every - 1, "{kills} kills");
    assert!(
        !fill || disk_full_seen,
        "/readyz never said the disk was full"
    );
    assert!(
        report["alerts_neither_delivered_nor_in_outbox"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    assert!(
        peak_rss < INGEST_LIMIT + QUERY_LIMIT + MARGIN,
        "peak RSS {} MiB",
        peak_rss >> 20
    );
    assert_eq!(panics, 0, "a log says a thread panicked");
    assert!(
        !hostile_statuses
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.ends_with("-> 500")),
        "a hostile request got a 500"
    );
}
