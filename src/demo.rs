//! `vigil demo`: everything in one process on loopback ports: the collector on a fresh data
//! directory, a simulated GPU fleet with a silent straggler scheduled, synthetic LLM traffic with a
//! drift scheduled, the analyzer, and a webhook receiver, printing each alert as it fires and
//! where to look next.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use vigil_analyzer::alert::{Alert, AlertStatus};
use vigil_analyzer::detectors::drift::ReferenceMode;
use vigil_analyzer::notify::{WebhookConfig, verify};
use vigil_analyzer::{AlertingConfig, AnalyzerConfig};
use vigil_collector::CollectorConfig;
use vigil_gpu_exporter::exporter::{self, ExporterConfig, Source};
use vigil_gpu_exporter::sim::{FaultKind, FaultSpec, FleetConfig};

use crate::cli::{DemoArgs, LoadgenArgs, Protocol};

const DEMO_SECRET: &str = "whsec_dmlnaWwtZGVtby1zZWNyZXQtMDEyMzQ1Njc4OQ==";

/// Detector settings scaled down so that the demo shows its alerts within a couple of minutes.
fn demo_analyzer() -> AnalyzerConfig {
    let mut config = AnalyzerConfig {
        interval: Duration::from_secs(2),
        ..AnalyzerConfig::default()
    };
    config.gpu.window = Duration::from_secs(10);
    config.gpu.baseline_window = Duration::from_secs(40);
    config.gpu.resolve_after = Duration::from_secs(20);
    config.drift.window = Duration::from_secs(10);
    // The demo's traffic is on loopback and its spans end as they are sent.
    config.drift.settle = Duration::from_secs(5);
    config.drift.evaluate_every = Duration::from_secs(2);
    config.drift.reference = ReferenceMode::Trailing;
    // Three windows: enough to show how much the traffic moves between windows, and covered
    // before the drift starts at +45 s even on a busy machine.
    config.drift.reference_length = Duration::from_secs(30);
    config.drift.min_samples = 100;
    config.drift.for_duration = Duration::from_secs(4);
    config.drift.resolve_after = Duration::from_secs(60);
    // The golden-signal detector learns for 15 minutes before it can alert: in a two-minute demo
    // it would only add work to every round.
    config.anomaly.enabled = false;
    config
}

struct Received {
    payloads: Vec<(serde_json::Value, bool)>,
}

async fn receive(
    State(state): State<(Arc<Mutex<Received>>, mpsc::UnboundedSender<()>)>,
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
    let text = String::from_utf8_lossy(&body).to_string();
    let verified = verify(
        &[DEMO_SECRET.to_string()],
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &text,
        &header("webhook-signature"),
    );
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return StatusCode::BAD_REQUEST;
    };
    state.0.lock().payloads.push((json, verified));
    let _ = state.1.send(());
    StatusCode::OK
}

fn is_gpu(alert: &Alert) -> bool {
    alert
        .labels
        .get("detector")
        .is_some_and(|d| d.starts_with("gpu_") || d.starts_with("nccl_"))
}

/// `vigil query`, with `--url` only when the demo is not on the default port.
fn query_command(query_url: &str) -> String {
    let default = format!("http://{}", CollectorConfig::default().query_addr);
    if query_url == default {
        "vigil query".to_string()
    } else {
        format!("vigil query --url {query_url}")
    }
}

fn look_next(alert: &Alert, query_url: &str) -> String {
    let sql = if let Some(uuid) = alert.labels.get("UUID") {
        format!(
            "SELECT time, metric_name, value FROM metrics WHERE attributes['UUID'] = '{uuid}' AND metric_name IN ('vigil_nccl_coll_busbw_gbs', 'vigil_nccl_straggler_score', 'DCGM_FI_DEV_SM_CLOCK') ORDER BY time DESC LIMIT 12"
        )
    } else if let Some(model) = alert.labels.get("model") {
        // `*` is a scope across all models or services (`all LLM traffic`): no filter on it.
        let mut scope = vec!["request_model IS NOT NULL".to_string()];
        if model != "*" {
            scope.push(format!("request_model = '{model}'"));
        }
        if let Some(service) = alert.labels.get("service").filter(|s| *s != "*") {
            scope.push(format!("service_name = '{service}'"));
        }
        format!(
            "SELECT date_trunc('minute', time) AS minute, count(*) AS calls, avg(duration_ns) / 1e6 AS avg_latency_ms, avg(output_tokens) AS avg_output, avg(input_tokens) AS avg_input FROM spans WHERE {} GROUP BY 1 ORDER BY 1",
            scope.join(" AND ")
        )
    } else {
        format!(
            "SELECT message FROM alerts WHERE fingerprint = '{}'",
            alert.fingerprint
        )
    };
    format!("{} \"{sql}\"", query_command(query_url))
}

/// `preferred` when nothing listens there, so that `vigil query`, `vigil alerts` and a Grafana
/// pointed at the defaults find the demo with no flags; else any free port, said aloud. A port
/// taken between this probe and the real bind fails the start with a message naming it.
fn default_or_any_port(what: &str, preferred: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(e) => {
            let any = SocketAddr::new(preferred.ip(), 0);
            println!(
                "vigil demo: {what} port {preferred} is not free ({e}); using a free port instead"
            );
            any
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The dashboard needs a terminal; scripts (--exit-when-done, a pipe) get the printed alerts.
    let tui = !args.no_tui
        && !args.exit_when_done
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            let stamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            std::env::temp_dir().join(format!("vigil-demo-{stamp}"))
        }
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let defaults = CollectorConfig::default();
    let mut collector_config = CollectorConfig {
        otlp_grpc_addr: default_or_any_port("OTLP/gRPC", defaults.otlp_grpc_addr),
        otlp_http_addr: default_or_any_port("OTLP/HTTP", defaults.otlp_http_addr),
        query_addr: default_or_any_port("query", defaults.query_addr),
        flight_sql_addr: default_or_any_port("Flight SQL", defaults.flight_sql_addr),
        ..defaults
    };
    let log_path = if tui {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let path = data_dir.join("vigil-demo.log");
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        crate::serve::init_logging_to(file);
        Some(path)
    } else {
        crate::serve::init_logging(crate::cli::LogFormat::Text);
        None
    };
    collector_config.storage.data_dir = data_dir;
    let collector = vigil_collector::start(collector_config)
        .await
        .context("cannot start the collector")?;
    let data_dir = collector.store.config().data_dir.clone();
    let query_url = format!("http://{}", collector.query_addr);
    let grpc_url = format!("http://{}", collector.otlp_grpc_addr);

    // A webhook receiver, as an on-call tool would run one.
    let received = Arc::new(Mutex::new(Received {
        payloads: Vec::new(),
    }));
    let (webhook_tx, mut webhook_rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind(loopback).await?;
    let webhook_url = format!("http://{}/alerts", listener.local_addr()?);
    let app = Router::new()
        .route("/alerts", post(receive))
        .with_state((received.clone(), webhook_tx));
    let webhook_server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let alerting = AlertingConfig {
        external_url: query_url.clone(),
        webhooks: vec![WebhookConfig {
            name: "demo".to_string(),
            url: webhook_url.clone(),
            secrets: vec![DEMO_SECRET.to_string()],
            group_wait: Duration::from_secs(2),
            group_interval: Duration::from_secs(10),
            ..WebhookConfig::default()
        }],
        ..AlertingConfig::default()
    };
    let mut analyzer = crate::analyze::start(&collector, &demo_analyzer(), &alerting, &data_dir)?
        .context("the analyzer is disabled")?;

    let fault = FaultSpec {
        kind: FaultKind::Straggler,
        node: 1,
        gpu: Some(2),
        start: args.fault_after,
        duration: None,
    };
    let gpus = exporter::start(ExporterConfig {
        source: Source::Simulate {
            fleet: Box::new(FleetConfig {
                nodes: 2,
                gpus_per_node: 4,
                seed: 7,
                faults: vec![fault],
                ..FleetConfig::default()
            }),
            ground_truth: Some(data_dir.join("ground_truth.csv")),
        },
        interval: Duration::from_secs(1),
        listen: Some(default_or_any_port(
            "GPU exporter page",
            SocketAddr::from(([127, 0, 0, 1], 9400)),
        )),
        otlp_endpoint: Some(grpc_url.clone()),
        hostname: "vigil-demo".to_string(),
        ..ExporterConfig::default()
    })
    .await?;

    let traffic = tokio::spawn(crate::loadgen::run(LoadgenArgs {
        endpoint: Some(grpc_url.clone()),
        protocol: Protocol::Grpc,
        rate: 150,
        duration: 7.0 * 86_400.0,
        spans: None,
        batch: 50,
        concurrency: 2,
        metrics: false,
        logs: false,
        seed: 42,
        run_id: Some("demo".to_string()),
        ack_log: None,
        content: false,
        quiet: true,
        drift_after: Some(args.fault_after),
        drift_input_tokens: 1.0,
        drift_output_tokens: 1.6,
        drift_latency: 1.0,
        drift_error_rate: None,
        // The demo's services run on the simulated nodes, so its GPU alert names them.
        host_names: vec!["sim-node-00".to_string(), "sim-node-01".to_string()],
    }));

    let metrics_page = gpus
        .metrics_addr
        .map(|a| format!("http://{a}/metrics"))
        .unwrap_or_default();
    println!("vigil demo: everything runs in this process, on loopback.");
    println!("  data directory   {}", data_dir.display());
    println!(
        "  OTLP             {grpc_url} (gRPC), http://{} (HTTP)",
        collector.otlp_http_addr
    );
    println!(
        "  SQL              {query_url}   try: {} \"SELECT count(*) FROM spans\"",
        query_command(&query_url)
    );
    println!(
        "  GPU fleet        2 nodes x 4 simulated H100s, sampled every second; dcgm-style page at {metrics_page}"
    );
    println!("  LLM traffic      ~150 spans/s of OpenLLMetry-style chat calls");
    println!("  webhook          {webhook_url} (Alertmanager JSON, HMAC-signed)");
    println!(
        "At +{}: GPU 2 on sim-node-01 becomes a silent straggler (10-20% slower collectives, no error counter moves),",
        humantime::format_duration(args.fault_after)
    );
    println!(
        "         and the models' output tokens grow 60% (a drift). Watch the analyzer find both.\n"
    );
    let flight_sql_url = format!("http://{}", collector.flight_sql_addr);
    if let Some(log_path) = &log_path {
        println!("  Flight SQL       {flight_sql_url} (the dashboard reads it)");
        println!("  log              {}", log_path.display());
    }

    let started = Instant::now();
    let dashboard = tui.then(|| {
        let config = vigil_tui::TuiConfig {
            refresh: Duration::from_secs(1),
            ..vigil_tui::TuiConfig::new(flight_sql_url.clone())
        };
        tokio::spawn(vigil_tui::run(config))
    });
    let deadline = started + args.timeout;
    let mut gpu_alert: Option<Alert> = None;
    let mut drift_alert: Option<Alert> = None;
    let mut shown_payload = false;
    // While the dashboard owns the screen, alerts are shown there, not printed; those printed
    // lines are kept for after it closes.
    let mut later: Vec<String> = Vec::new();
    let mut say = |line: String| {
        if tui {
            later.push(line);
        } else {
            println!("{line}");
        }
    };
    let mut dashboard = dashboard;
    let outcome: anyhow::Result<()> = loop {
        let wait = if args.exit_when_done {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            event = analyzer.events.recv() => {
                let Ok(alert) = event else { continue };
                let at = started.elapsed().as_secs();
                match alert.status {
                    AlertStatus::Firing => {
                        say(format!("[+{at:>3}s] FIRING   {} ({}): {}", alert.name(), alert.labels.get("detector").map(String::as_str).unwrap_or(""), alert.annotations.get("summary").map(String::as_str).unwrap_or("")));
                        if let Some(served) = alert.annotations.get("served_models") {
                            say(format!("         served from its host: {served}"));
                        }
                        say(format!("         look next: {}", look_next(&alert, &query_url)));
                        if is_gpu(&alert) && gpu_alert.is_none() {
                            gpu_alert = Some(alert.clone());
                        }
                        if alert.name() == "ModelDrift" && drift_alert.is_none() {
                            drift_alert = Some(alert.clone());
                        }
                    }
                    AlertStatus::Resolved => say(format!("[+{at:>3}s] RESOLVED {}: {}", alert.name(), alert.subject)),
                }
            }
            Some(()) = webhook_rx.recv() => {
                if !shown_payload {
                    shown_payload = true;
                    let (payload, verified) = received.lock().payloads.last().cloned().unwrap_or_default();
                    let mut text = serde_json::to_string_pretty(&payload).unwrap_or_default();
                    if text.len() > 1500 {
                        text.truncate(1500);
                        text.push_str("\n  …");
                    }
                    say(format!("[+{:>3}s] webhook received (signature {}):\n{text}", started.elapsed().as_secs(), if verified { "verified" } else { "NOT verified" }));
                }
            }
            _ = tokio::time::sleep(wait) => {
                if args.exit_when_done {
                    break Err(anyhow::anyhow!(
                        "within {}: GPU alert {}, drift alert {}",
                        humantime::format_duration(args.timeout),
                        if gpu_alert.is_some() { "fired" } else { "did not fire" },
                        if drift_alert.is_some() { "fired" } else { "did not fire" }
                    ));
                }
            }
            _ = crate::serve::wait_for_signal(), if !args.exit_when_done => break Ok(()),
            // Quitting the dashboard ends the demo.
            ended = async {
                match dashboard.as_mut() {
                    Some(running) => running.await,
                    None => std::future::pending().await,
                }
            }, if dashboard.is_some() => {
                dashboard = None;
                match ended {
                    Ok(Ok(())) => break Ok(()),
                    Ok(Err(e)) => break Err(anyhow::anyhow!("the dashboard stopped: {e}")),
                    Err(e) => break Err(anyhow::anyhow!("the dashboard stopped: {e}")),
                }
            }
        }
        if args.exit_when_done && gpu_alert.is_some() && drift_alert.is_some() && shown_payload {
            break Ok(());
        }
    };

    if let Some(dashboard) = dashboard {
        // Ended by a signal: the dashboard must give the terminal back before anything prints.
        dashboard.abort();
        let _ = dashboard.await;
    }
    for line in &later {
        println!("{line}");
    }
    if outcome.is_ok() {
        // What the alerts table holds now, as any SQL client sees it.
        match collector
            .engine
            .query("SELECT time, state, labels['alertname'] AS alertname, subject, round(score, 3) AS score FROM alerts ORDER BY time")
            .await
        {
            Ok((_, batches)) => {
                if let Ok(table) = arrow::util::pretty::pretty_format_batches(&batches) {
                    println!("\nThe alerts table:\n{table}");
                }
            }
            Err(e) => eprintln!("could not read the alerts table: {e}"),
        }
        let payloads = received.lock().payloads.len();
        println!(
            "webhook payloads received: {payloads}; all signatures verified: {}",
            received.lock().payloads.iter().all(|(_, v)| *v)
        );
        println!(
            "The data stays in {}: vigil serve --data-dir {} to look again.",
            data_dir.display(),
            data_dir.display()
        );
    }
    traffic.abort();
    gpus.stop().await;
    analyzer.stop().await;
    webhook_server.abort();
    collector.shutdown().await;
    match outcome {
        Ok(()) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}
