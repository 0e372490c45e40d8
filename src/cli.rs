//! Every command and flag, defined once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// vigil: an observability pipeline for LLM applications and the GPUs they run on.
#[derive(Parser)]
#[command(name = "vigil", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the collector: OTLP in (gRPC :4317, HTTP :4318), SQL out (:9470).
    Serve(ServeArgs),
    /// Run one SQL query against a running collector and print the result.
    Query(QueryArgs),
    /// Send synthetic OpenLLMetry-shaped traffic to a collector at a target rate.
    Loadgen(LoadgenArgs),
    /// Export GPU (NVML) and NCCL telemetry: OTLP to the collector and a dcgm-exporter-compatible
    /// /metrics page (:9400). `--simulate` runs a simulated fleet instead, with injected faults.
    GpuExporter(GpuExporterArgs),
    /// The terminal dashboard: LLM traffic, models, GPUs, traces and alerts, over Flight SQL.
    Tui(TuiArgs),
    /// List the alerts firing now and the recent alert changes.
    Alerts(AlertsArgs),
    /// Run the detectors over labelled data (simulated GPU faults, drift scenarios) and report
    /// precision, recall and detection delay; or score a timestamp,value CSV.
    Eval(EvalArgs),
    /// Show what vigil is for: a collector, a simulated GPU fleet with a fault, LLM traffic with a
    /// drift, and the analyzer, printing each alert as it fires.
    Demo(DemoArgs),
}

#[derive(Args)]
pub struct AlertsArgs {
    /// The collector's query address.
    #[arg(long, env = "VIGIL_QUERY_URL", default_value = "http://127.0.0.1:9470")]
    pub url: String,
    /// A query token, when the collector requires one ([auth] query_tokens).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// collector, besides the system's roots.
    #[arg(long, env = "VIGIL_CA_CERT", value_name = "PEM_FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// How many recent changes to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// The view `vigil tui` opens on.
#[derive(Clone, Copy, ValueEnum, Default)]
pub enum TuiView {
    #[default]
    Overview,
    Models,
    Gpus,
    Traces,
    Alerts,
}

#[derive(Args)]
pub struct TuiArgs {
    /// The collector's Flight SQL address.
    #[arg(
        long,
        env = "VIGIL_FLIGHT_SQL_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub url: String,
    /// A query token, when the collector requires one ([auth] query_tokens).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// collector, besides the system's roots.
    #[arg(long, env = "VIGIL_CA_CERT", value_name = "PEM_FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// How often to refresh (r cycles 1s, 2s, 5s, 10s, 30s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub refresh: std::time::Duration,
    /// The view to open on.
    #[arg(long, value_enum, default_value_t)]
    pub view: TuiView,
    /// Benchmark: run each view's full refresh this many times (after one to find what to
    /// open) over the last --bench-range and print latency percentiles, instead of drawing.
    #[arg(long, value_name = "RUNS")]
    pub bench: Option<usize>,
    /// With --bench: the time range the views cover.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub bench_range: std::time::Duration,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Run headless, printing each alert as it fires, instead of opening the terminal dashboard.
    /// Implied when stdout is not a terminal.
    #[arg(long)]
    pub no_tui: bool,
    /// Exit once the GPU and drift alerts have fired (or fail after --timeout); for scripts and CI.
    #[arg(long)]
    pub exit_when_done: bool,
    /// With --exit-when-done: how long to wait for both alerts.
    #[arg(long, default_value = "150s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Data directory [default: a fresh directory under the system temp dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// When the GPU fault (a silent straggler) and the drift start.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub fault_after: std::time::Duration,
}

/// Log output format.
#[derive(Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file (see vigil.example.toml). Values in it are overridden by VIGIL_*
    /// variables (nested keys joined by "__", e.g. VIGIL_STORAGE__DATA_DIR), then by flags.
    #[arg(long, short, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (WAL and Parquet files) [default: ./vigil-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Query listen address: SQL over HTTP, /healthz, /readyz, /metrics [default: 127.0.0.1:9470].
    #[arg(long)]
    pub query_addr: Option<SocketAddr>,
    /// Arrow Flight SQL listen address (ADBC, pyarrow, Grafana) [default: 127.0.0.1:50051].
    #[arg(long)]
    pub flight_sql_addr: Option<SocketAddr>,
    /// Memory limit for buffered data, in bytes; past it, receivers push back [default: 1 GiB].
    #[arg(long)]
    pub memory_limit_bytes: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t, env = "VIGIL_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How query results are printed.
#[derive(Clone, Copy, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL to run (read-only: SELECT, EXPLAIN, SHOW, DESCRIBE).
    pub sql: String,
    /// The collector's query address.
    #[arg(long, env = "VIGIL_QUERY_URL", default_value = "http://127.0.0.1:9470")]
    pub url: String,
    /// A query token, when the collector requires one ([auth] query_tokens).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// collector, besides the system's roots.
    #[arg(long, env = "VIGIL_CA_CERT", value_name = "PEM_FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// Benchmark: run the query this many times (after one warm-up) and print latency
    /// percentiles as measured by the client, instead of the result.
    #[arg(long, value_name = "RUNS")]
    pub bench: Option<usize>,
}

/// OTLP transport for loadgen.
#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq, Debug)]
pub enum Protocol {
    #[default]
    Grpc,
    Http,
}

#[derive(Args, Clone)]
pub struct LoadgenArgs {
    /// Collector endpoint [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub endpoint: Option<String>,
    /// OTLP transport.
    #[arg(long, value_enum, default_value_t)]
    pub protocol: Protocol,
    /// Target spans per second; 0 sends as fast as the collector takes them.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many spans (whichever comes first).
    #[arg(long)]
    pub spans: Option<u64>,
    /// Spans per export request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also send GenAI client metrics (token usage and duration histograms) with every batch.
    #[arg(long)]
    pub metrics: bool,
    /// Also send one log record per LLM call.
    #[arg(long)]
    pub logs: bool,
    /// Random seed, for repeatable traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run id, stored on every span as `loadgen.run` [default: random].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Append "<batch> <spans>" for every acknowledged trace request to this file, and
    /// "metrics <batch> <points>" / "logs <batch> <records>" for metrics and logs (for
    /// durability tests).
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    /// Keep message content (prompts and completions) on the spans.
    #[arg(long)]
    pub content: bool,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Inject a drift this long after the start (e.g. 60s): from then on, the --drift-* factors apply.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drift_after: Option<std::time::Duration>,
    /// Multiply input token counts by this factor once drifting (1.1 = a 10% shift).
    #[arg(long, default_value_t = 1.0)]
    pub drift_input_tokens: f64,
    /// Multiply output token counts by this factor once drifting.
    #[arg(long, default_value_t = 1.0)]
    pub drift_output_tokens: f64,
    /// Multiply latency (and time to first token) by this factor once drifting.
    #[arg(long, default_value_t = 1.0)]
    pub drift_latency: f64,
    /// The error rate once drifting [default: unchanged, 0.02].
    #[arg(long)]
    pub drift_error_rate: Option<f64>,
    /// Hosts the services run on (resource attribute host.name), taking turns: e.g.
    /// sim-node-00,sim-node-01 puts the traffic on the simulated fleet, so that GPU alerts name
    /// the models served from their host. Default: no host.name.
    #[arg(long = "host-name", value_delimiter = ',')]
    pub host_names: Vec<String>,
}

#[derive(Args)]
pub struct GpuExporterArgs {
    /// Simulate a GPU fleet instead of reading NVML (no GPU or driver needed).
    #[arg(long)]
    pub simulate: bool,
    /// Simulated nodes.
    #[arg(long, default_value_t = 2, requires = "simulate")]
    pub nodes: usize,
    /// Simulated GPUs per node.
    #[arg(long, default_value_t = 8, requires = "simulate")]
    pub gpus_per_node: usize,
    /// Simulated GPU model: h100, a100 or l40s.
    #[arg(long, default_value = "h100", requires = "simulate")]
    pub gpu_model: String,
    /// Seed of the simulation (same seed, same fleet: UUIDs, spreads, noise).
    #[arg(long, default_value_t = 1, requires = "simulate")]
    pub seed: u64,
    /// Inject a fault: KIND:NODE[/GPU]:START[:DURATION], e.g. thermal:sim-node-00/3:60s:5m.
    /// Kinds: thermal, power-cap, clock-drop, ecc-storm, xid79, xid48, xid94, xid31,
    /// pcie-downtrain, nvlink-crc, straggler, nccl-sag. Repeatable.
    #[arg(long = "fault", requires = "simulate")]
    pub faults: Vec<String>,
    /// A TOML fault schedule ([[fault]] tables with kind, node, gpu, start, duration).
    #[arg(long, requires = "simulate")]
    pub fault_file: Option<PathBuf>,
    /// Write the ground truth of the fault schedule (CSV: fault,host,gpu,uuid,start,end) here.
    #[arg(long, requires = "simulate")]
    pub ground_truth: Option<PathBuf>,
    /// Sampling interval (e.g. 1s, 5s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Address of the /metrics page; "none" to serve no page.
    #[arg(
        long,
        env = "VIGIL_GPU_EXPORTER_LISTEN",
        default_value = "0.0.0.0:9400"
    )]
    pub listen: String,
    /// The collector's OTLP/gRPC endpoint.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317"
    )]
    pub otlp_endpoint: String,
    /// Do not export OTLP (serve /metrics only, like dcgm-exporter).
    #[arg(long)]
    pub no_otlp: bool,
    /// This node's name in the labels [default: the system hostname].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Label name(s) that carry the host name; dcgm-exporter uses Hostname. Repeatable.
    #[arg(long = "hostname-label", default_value = "Hostname")]
    pub hostname_labels: Vec<String>,
    /// NCCL Inspector output: a directory (NCCL_INSPECTOR_DUMP_DIR) or file. Repeatable.
    #[arg(long = "nccl-inspector")]
    pub nccl_inspector: Vec<PathBuf>,
    /// nccl-tests output (text or -J JSON) to export as probes. Repeatable.
    #[arg(long = "nccl-tests")]
    pub nccl_tests: Vec<PathBuf>,
    /// NCCL debug log (NCCL_DEBUG=WARN or INFO, NCCL_DEBUG_FILE) to count warnings in. Repeatable.
    #[arg(long = "nccl-log")]
    pub nccl_log: Vec<PathBuf>,
    /// Window of DCGM_EXP_XID_ERRORS_COUNT.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub xid_window: std::time::Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t, env = "VIGIL_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Every GPU fault kind injected into a simulated fleet, scored against the ground truth.
    Gpu {
        /// How long each fault lasts (minutes).
        #[arg(long, default_value_t = 6)]
        minutes_per_fault: u64,
        /// Instances of each fault kind.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sampling interval of the simulated exporter.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// The golden-signal anomaly detector on simulated LLM traffic (10 calls/s with a daily and
    /// a weekly cycle): a 2x latency step, error ratio 1% to 3%, request rate halved, each on
    /// one model, and weeks of stationary traffic for the false alarms.
    Anomaly {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Runs of each change scenario (each with its own seed and change time).
        #[arg(long, default_value_t = 10)]
        repeats: u64,
        /// Weeks of stationary traffic.
        #[arg(long, default_value_t = 4)]
        weeks: u64,
        /// Judge the rates without the seasons learned from the two weeks before each run
        /// (`seasons_history = "0s"`).
        #[arg(long)]
        without_seasons: bool,
    },
    /// Drift scenarios (5/10/25% shifts at 10 requests/s) and stationary traffic.
    Drift {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hours of stationary traffic for the false-alarm rate (168: a week).
        #[arg(long, default_value_t = 168)]
        stationary_hours: u64,
        /// Split the stationary hours into this many independent runs, side by side.
        #[arg(long, default_value_t = 2)]
        stationary_runs: u64,
        /// Only the stationary traffic, not the shift scenarios.
        #[arg(long)]
        stationary_only: bool,
    },
    /// Replay a real trace of LLM requests (CSV: timestamp, input tokens, output tokens, as the
    /// Azure LLM inference traces) through the drift detector, back to back as often as it
    /// takes: false alarms per judged hour, and with --shift the delay to catch a change.
    DriftTrace(DriftTraceArgs),
    /// Score a CSV of timestamp,value with the anomaly detector `vigil serve` runs: one
    /// `timestamp,value,anomaly_score` row per input row (NAB's results format, scores in [0, 1]).
    Csv {
        file: PathBuf,
        /// Values learned from before any score [default: NAB's probationary period, 15% of the
        /// rows and at most 750].
        #[arg(long)]
        warmup: Option<usize>,
    },
}

/// `vigil eval drift-trace`.
#[derive(Args)]
pub struct DriftTraceArgs {
    pub file: PathBuf,
    /// The drift window.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
    /// The trailing reference [default: 1 h, or 2.5 windows if longer].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub reference: Option<std::time::Duration>,
    /// Hours of the unchanged trace judged for false alarms, after the reference has filled
    /// (0: none).
    #[arg(long, default_value_t = 6.0)]
    pub hours: f64,
    /// Multiply output tokens by this from a change point on (1 = no shift runs).
    #[arg(long, default_value_t = 1.0)]
    pub shift: f64,
    /// Shift runs, each with its change at a different point of the trace, judged for an
    /// hour after it: the delay is given per run and as the median.
    #[arg(long, default_value_t = 12)]
    pub changes: usize,
    /// Gaussian mixture components of the joint test (0 turns it off; faster).
    #[arg(long, default_value_t = 3)]
    pub mixture_components: usize,
    /// `[analyzer.drift] weather_margin`: how far beyond the traffic's own weather a move
    /// must go.
    #[arg(long, default_value_t = 1.0)]
    pub weather_margin: f64,
    /// `[analyzer.drift] weather_memory`: how long the largest moves between windows are
    /// remembered. The traffic runs this long before the judged hours and before each change,
    /// so that the memory has filled as it would have in a collector running for a day.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub weather_memory: std::time::Duration,
    /// Instead of replaying the trace back to back, stretch it with a block bootstrap
    /// seeded by this (10-minute blocks from random points, a daily cycle in the rate):
    /// traffic as bursty as the trace, no hour repeating the last.
    #[arg(long)]
    pub bootstrap: Option<u64>,
}

/// An HTTP client that sends `token` (if any) as a bearer token with every request, and trusts
/// `ca_cert` (PEM) for an https:// collector besides the system's roots.
pub fn query_client(
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder().default_headers(headers);
    if let Some(path) = ca_cert {
        for certificate in read_ca_cert(path)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

/// From here on, the process ends quietly when the reader of its output goes away
/// (`vigil query … | head`), as other command-line tools do, instead of failing on a broken
/// pipe. Called once the command's requests are done and its client dropped: a socket must
/// keep getting EPIPE as an error (a TLS handshake with a plaintext port, say), not a signal
/// that kills the process without a word.
pub fn end_quietly_when_output_closes() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL only sets this process's action for SIGPIPE back to the
    // default; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The certificates of a PEM file given as `--ca-cert`.
pub fn read_ca_cert(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "--ca-cert {}: no PEM certificate in it",
        path.display()
    );
    Ok(certificates)
}
