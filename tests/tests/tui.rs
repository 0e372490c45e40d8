//! The terminal dashboard in a real terminal: `vigil tui` and `vigil demo` run inside tmux, keys
//! are sent as a user types them, and the captured screens are checked against what SQL says
//! is in the collector.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::{Collector, GpuExporter, python, repo_root, required_tool, vigil_bin};

const TOKEN: &str = "tui-test-token-0123456789";

/// A tmux server of its own (a private socket), with one session running `command`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        Tmux::start_in(name, width, height, command, &[])
    }

    /// Starts `command` with `env` set in its session.
    fn start_in(name: &str, width: u16, height: u16, command: &str, env: &[(&str, &str)]) -> Tmux {
        let tmux = required_tool("tmux", "tmux");
        let socket = format!("vigil-{name}-{}", std::process::id());
        // The shell says how the program ended and keeps the pane open to read it.
        let command = format!("{command}; echo \"[exit status $?]\"; sleep 600");
        let status = Command::new(&tmux)
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "main",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(
                env.iter()
                    .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")]),
            )
            .arg(&command)
            .env("TERM", "xterm-256color")
            .status()
            .unwrap();
        assert!(status.success(), "tmux could not start {command}");
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(required_tool("tmux", "tmux"))
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", "main", key]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
        std::thread::sleep(Duration::from_millis(150));
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// The screen with what scrolled off it.
    fn history(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main", "-S", "-"])
    }

    /// Waits until the screen satisfies `check`, and returns it; fails with the last screen.
    fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen did not show {what} within {timeout:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn sql(collector: &Collector, sql: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", collector.query_url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{sql}: {status} {body}");
    body["rows"].as_array().cloned().unwrap_or_default()
}

fn text(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn write_config(path: &Path) {
    std::fs::write(
        path,
        format!(
            r#"[auth]
query_tokens = ["{TOKEN}"]

[analyzer]
interval = "1s"

[analyzer.gpu]
window = "6s"
baseline_window = "30s"
resolve_after = "10m"
"#
        ),
    )
    .unwrap();
}

/// A collector loaded by the Python OTel SDK (an LLM app on the simulated hosts) and a
/// simulated fleet with faults, once a GPU alert fires.
async fn loaded(dir: &Path) -> (Collector, GpuExporter) {
    let config = dir.join("vigil.toml");
    write_config(&config);
    let collector =
        Collector::start(&dir.join("data"), &["--config", config.to_str().unwrap()]).unwrap();
    let app = Command::new(python())
        .arg(repo_root().join("tests/python/llm_app.py"))
        .args(["--endpoint", &collector.http_url(), "--calls", "300"])
        .args(["--minutes", "10"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("llm_app.log")).unwrap(),
        ))
        .status()
        .unwrap();
    assert!(
        app.success(),
        "llm_app.py failed: {}",
        std::fs::read_to_string(dir.join("llm_app.log")).unwrap_or_default()
    );
    let exporter = GpuExporter::start(
        &[
            "--simulate",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--interval",
            "1s",
            "--otlp-endpoint",
            &collector.grpc_url(),
            "--fault",
            "ecc-storm:1/2:0s:10m",
        ],
        &dir.join("exporter.log"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while sql(
        &collector,
        "SELECT fingerprint FROM alerts WHERE state = 'firing' AND labels['UUID'] IS NOT NULL",
    )
    .await
    .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no GPU alert within 120 s\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (collector, exporter)
}

/// The table rows of a captured screen: lines inside a box, below the title.
fn rows_with<'a>(screen: &'a str, needle: &str) -> Vec<&'a str> {
    screen
        .lines()
        .filter(|l| l.starts_with('│') && l.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn vigil_tui_shows_what_sql_says_in_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, _exporter) = loaded(dir.path()).await;
    let command = format!(
        "{} tui --url {} --token {} --refresh 1s",
        shell_quote(vigil_bin().to_str().unwrap()),
        collector.flight_sql_url(),
        TOKEN
    );
    let tmux = Tmux::start("tui", 200, 60, &command);

    // Overview: every (service, model) pair with the number of calls SQL counts.
    let pairs = sql(
        &collector,
        "SELECT service_name AS service, request_model AS model, count(*) AS calls FROM spans \
         WHERE request_model IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await;
    assert!(pairs.len() >= 4, "the app sent too few pairs: {pairs:?}");
    let screen = tmux.wait_for("the model table", Duration::from_secs(30), |s| {
        pairs
            .iter()
            .all(|p| !rows_with(s, &text(p, "model")).is_empty())
    });
    for pair in &pairs {
        let (service, model, calls) = (
            text(pair, "service"),
            text(pair, "model"),
            text(pair, "calls"),
        );
        let row = rows_with(&screen, &model)
            .into_iter()
            .find(|l| l.contains(&service))
            .unwrap_or_else(|| panic!("no row for {service} / {model}:\n{screen}"));
        assert!(
            row.split_whitespace().any(|cell| cell == calls),
            "the row of {service} / {model} does not show SQL's {calls} calls: {row}\n{screen}"
        );
    }
    assert!(screen.contains("Firing alerts"), "{screen}");

    // GPUs: the GPU with a firing alert is marked degraded, first.
    let alerting = sql(
        &collector,
        "SELECT DISTINCT labels['Hostname'] AS host, labels['gpu'] AS gpu, labels['alertname'] AS alert \
         FROM alerts WHERE state = 'firing' AND labels['UUID'] IS NOT NULL",
    )
    .await;
    tmux.keys(&["3"]);
    let screen = tmux.wait_for("the GPU list", Duration::from_secs(15), |s| {
        s.contains("GPUs (8)") && s.contains("DEGRADED")
    });
    for gpu in &alerting {
        let marked = rows_with(&screen, &format!("▲ {}", text(gpu, "host")));
        assert!(
            marked.iter().any(|l| l.contains(&text(gpu, "alert"))),
            "GPU {} on {} ({}) is not marked degraded:\n{screen}",
            text(gpu, "gpu"),
            text(gpu, "host"),
            text(gpu, "alert")
        );
    }
    // The list reads gpu_minutes, the per-minute rollup of the GPU series: it holds every
    // point of every series that `metrics` holds, with the same extremes.
    let mismatched = sql(
        &collector,
        "WITH raw AS (SELECT attributes['UUID'] AS uuid, metric_name, count(*) AS n, max(value) AS hi, \
         min(value) AS lo FROM metrics WHERE attributes['UUID'] IS NOT NULL AND value IS NOT NULL GROUP BY 1, 2), \
         rolled AS (SELECT uuid, metric_name, sum(count) AS n, max(max) AS hi, min(min) AS lo \
         FROM gpu_minutes GROUP BY 1, 2) \
         SELECT raw.uuid, raw.metric_name, raw.n, rolled.n AS rolled_n FROM raw LEFT JOIN rolled \
         ON raw.uuid = rolled.uuid AND raw.metric_name = rolled.metric_name \
         WHERE rolled.n IS NULL OR raw.n <> rolled.n OR raw.hi <> rolled.hi OR raw.lo <> rolled.lo",
    )
    .await;
    assert!(
        mismatched.is_empty(),
        "gpu_minutes differs from metrics: {mismatched:?}"
    );
    // The detail's NCCL rows read every rank's bandwidth from the minutes too, a rank a series.
    let mismatched = sql(
        &collector,
        "WITH raw AS (SELECT attributes['UUID'] AS uuid, attributes['comm'] AS comm, attributes['rank'] AS rank, \
         count(*) AS n, sum(value) AS total FROM metrics WHERE metric_name = 'vigil_nccl_coll_busbw_gbs' \
         GROUP BY 1, 2, 3), \
         rolled AS (SELECT uuid, comm, rank, sum(count) AS n, sum(sum) AS total FROM gpu_minutes \
         WHERE metric_name = 'vigil_nccl_coll_busbw_gbs' GROUP BY 1, 2, 3) \
         SELECT raw.uuid, raw.comm, raw.rank, raw.n, rolled.n AS rolled_n FROM raw LEFT JOIN rolled \
         ON raw.uuid = rolled.uuid AND raw.comm = rolled.comm AND raw.rank = rolled.rank \
         WHERE rolled.n IS NULL OR raw.n <> rolled.n OR abs(raw.total - rolled.total) > 1e-6 * abs(raw.total)",
    )
    .await;
    assert!(
        mismatched.is_empty(),
        "gpu_minutes' NCCL ranks differ from metrics: {mismatched:?}"
    );
    let ranks = sql(
        &collector,
        "SELECT count(DISTINCT rank) AS ranks FROM gpu_minutes WHERE metric_name = 'vigil_nccl_coll_busbw_gbs'",
    )
    .await;
    assert!(
        ranks[0]["ranks"].as_i64().unwrap_or(0) >= 2,
        "the fleet's NCCL ranks are not in gpu_minutes: {ranks:?}"
    );
    // Its detail opens on Enter (the degraded GPU is the first row).
    tmux.keys(&["Enter"]);
    tmux.wait_for("a GPU's detail", Duration::from_secs(15), |s| {
        s.contains("NCCL bus bandwidth vs peers") && s.contains("Models served from")
    });

    // Models: the selected model's detail.
    tmux.keys(&["2"]);
    tmux.wait_for("a model's detail", Duration::from_secs(15), |s| {
        s.contains("latency") && s.contains("finish  ") && s.contains("drift   ")
    });

    // Traces: filtered to one service, then a trace opened.
    tmux.keys(&["4"]);
    tmux.wait_for("the calls", Duration::from_secs(15), |s| {
        s.contains("Recent LLM calls") && s.contains("chat-api") && s.contains("rag-worker")
    });
    tmux.keys(&["/"]);
    tmux.type_text("rag-worker");
    tmux.keys(&["Enter"]);
    let screen = tmux.screen();
    let calls: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with('│') && l.contains(':') && !l.contains("time "))
        .collect();
    assert!(!calls.is_empty(), "the filter left no calls:\n{screen}");
    assert!(
        calls.iter().all(|l| l.contains("rag-worker")),
        "the filter let other services through:\n{screen}"
    );
    assert!(screen.contains("filter: rag-worker"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("a trace's waterfall", Duration::from_secs(15), |s| {
        s.contains("┌ trace ") && s.contains("┌ span ")
    });
    let trace_id = screen
        .split("┌ trace ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let spans = sql(
        &collector,
        &format!("SELECT DISTINCT name FROM spans WHERE trace_id = '{trace_id}'"),
    )
    .await;
    assert!(!spans.is_empty(), "SQL has no spans for trace {trace_id}");
    for span in &spans {
        assert!(
            screen.contains(&text(span, "name")),
            "span {} of trace {trace_id} is not in the waterfall:\n{screen}",
            text(span, "name")
        );
    }
    tmux.keys(&["Escape"]);

    // Alerts: every firing alert by name.
    let firing = sql(
        &collector,
        "SELECT DISTINCT labels['alertname'] AS alert FROM (SELECT *, row_number() OVER \
         (PARTITION BY fingerprint ORDER BY time DESC) AS n FROM alerts) WHERE n = 1 AND state = 'firing'",
    )
    .await;
    tmux.keys(&["5"]);
    let screen = tmux.wait_for("the alerts", Duration::from_secs(15), |s| {
        s.contains(" firing, ")
    });
    for alert in &firing {
        assert!(
            !rows_with(&screen, &text(alert, "alert")).is_empty(),
            "firing alert {} is not listed:\n{screen}",
            text(alert, "alert")
        );
    }

    // Help, then quit: the program exits 0 and gives the terminal back.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", Duration::from_secs(5), |s| {
        s.contains("keys (any key closes)")
    });
    tmux.keys(&["Escape", "q"]);
    let screen = tmux.wait_for("vigil tui ending on q", Duration::from_secs(10), |s| {
        s.contains("[exit status ")
    });
    assert!(screen.contains("[exit status 0]"), "{screen}");
    assert!(
        !screen.contains("1 Overview"),
        "the dashboard was left on screen after quitting:\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vigil_tui_says_when_the_collector_is_down() {
    let port = vigil_tests::free_port().unwrap();
    let command = format!(
        "{} tui --url http://127.0.0.1:{port} --refresh 1s",
        shell_quote(vigil_bin().to_str().unwrap())
    );
    let tmux = Tmux::start("tui-down", 80, 24, &command);
    tmux.wait_for("the banner", Duration::from_secs(15), |s| {
        s.contains("cannot read the collector") && s.contains("retrying")
    });
    // Keys still work while it retries.
    tmux.keys(&["3"]);
    tmux.wait_for("the GPU view", Duration::from_secs(5), |s| {
        s.contains("GPUs (0)")
    });
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("vigil tui ending on Ctrl-C", Duration::from_secs(10), |s| {
        s.contains("[exit status ")
    });
    assert!(screen.contains("[exit status 0]"), "{screen}");
    assert!(
        !screen.contains("GPUs (0)"),
        "the dashboard was left on screen:\n{screen}"
    );
}

#[test]
fn vigil_demo_shows_both_alerts_on_screen_within_two_minutes() {
    // The README's first command, verbatim but for the binary; its data directory goes to the
    // system temp dir, here a fresh one.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains("\ncargo run --release -- demo\n"),
        "the README's first command changed"
    );
    let dir = tempfile::tempdir().unwrap();
    let command = format!("{} demo", shell_quote(vigil_bin().to_str().unwrap()));
    let started = Instant::now();
    let tmux = Tmux::start_in(
        "demo",
        120,
        40,
        &command,
        &[("TMPDIR", dir.path().to_str().unwrap())],
    );
    let screen = tmux.wait_for(
        "a GPU alert and a drift alert firing",
        Duration::from_secs(150),
        |s| {
            let firing: Vec<&str> = s
                .lines()
                .skip_while(|l| !l.contains("Firing alerts"))
                .collect();
            let gpu = firing
                .iter()
                .any(|l| l.contains(" Gpu") || l.contains(" Nccl"));
            let drift = firing.iter().any(|l| l.contains("ModelDrift"));
            gpu && drift
        },
    );
    eprintln!(
        "both alerts on screen after {:.0} s:\n{screen}",
        started.elapsed().as_secs_f64()
    );
    assert!(screen.contains("degraded 1"), "{screen}");
    // A model's drift status is the detector's latest verdict on it (or on the narrowest scope
    // that holds it and was judged), with its tests, how far each moved, and the reference.
    tmux.keys(&["2"]);
    let screen = tmux.wait_for(
        "the drift verdict on the first model",
        Duration::from_secs(30),
        |s| s.contains("judged") && s.contains("against the reference"),
    );
    assert!(
        screen.contains("tests   ") && screen.contains(" p "),
        "{screen}"
    );
    // Quitting the dashboard ends the demo, which then prints what happened.
    tmux.keys(&["q"]);
    tmux.wait_for("vigil demo ending on q", Duration::from_secs(30), |s| {
        s.contains("[exit status ")
    });
    let after = tmux.history();
    assert!(after.contains("[exit status 0]"), "{after}");
    assert!(
        after.contains("FIRING") && after.contains("webhook payloads received"),
        "the demo's summary is missing after the dashboard closed:\n{after}"
    );
}
