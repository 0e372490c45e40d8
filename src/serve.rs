//! `vigil serve`: configuration from file, environment and flags, then the collector until Ctrl-C.

use crate::analyze::{self, ServeConfig};
use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use crate::cli::{LogFormat, ServeArgs};

/// Top-level keys of the config that VIGIL_* variables may set.
const CONFIG_SECTIONS: [&str; 12] = [
    "otlp_grpc_addr",
    "otlp_http_addr",
    "query_addr",
    "flight_sql_addr",
    "storage",
    "normalize",
    "limits",
    "query",
    "auth",
    "tls",
    "analyzer",
    "alerting",
];

/// Defaults ← TOML file ← `VIGIL_*` variables ← flags.
pub fn load_config(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
    if let Some(path) = &args.config {
        anyhow::ensure!(
            path.exists(),
            "config file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed("VIGIL_").split("__").filter(|key| {
        let key = key.as_str().to_ascii_lowercase();
        CONFIG_SECTIONS
            .iter()
            .any(|s| key == *s || key.starts_with(&format!("{s}.")))
    }));
    if let Some(dir) = &args.data_dir {
        figment = figment.merge(Serialized::default("storage.data_dir", dir));
    }
    if let Some(addr) = args.otlp_grpc_addr {
        figment = figment.merge(Serialized::default("otlp_grpc_addr", addr));
    }
    if let Some(addr) = args.otlp_http_addr {
        figment = figment.merge(Serialized::default("otlp_http_addr", addr));
    }
    if let Some(addr) = args.query_addr {
        figment = figment.merge(Serialized::default("query_addr", addr));
    }
    if let Some(addr) = args.flight_sql_addr {
        figment = figment.merge(Serialized::default("flight_sql_addr", addr));
    }
    if let Some(limit) = args.memory_limit_bytes {
        figment = figment.merge(Serialized::default("storage.memory_limit_bytes", limit));
    }
    figment.extract().context("invalid configuration")
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Logs to a file instead of stderr: for `vigil demo` while the dashboard owns the terminal.
pub fn init_logging_to(file: std::fs::File) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("could not render the configuration")?
        );
        return Ok(());
    }
    init_logging(args.log_format);
    let auth = &config.collector.auth;
    anyhow::ensure!(
        !config.analyzer.gpu.trusted_senders_only
            || !auth.gpu_exporter_tokens.is_empty()
            || auth.gpu_exporter_tokens_file.is_some(),
        "analyzer.gpu.trusted_senders_only needs GPU-exporter tokens ([auth] gpu_exporter_tokens or gpu_exporter_tokens_file): without them no metric is trusted and no GPU alert can fire"
    );
    let collector = vigil_collector::start(config.collector).await?;
    // The store's data directory is the resolved, absolute one.
    let data_dir = collector.store.config().data_dir.clone();
    let analyzer = analyze::start(&collector, &config.analyzer, &config.alerting, &data_dir)?;
    // One machine-readable line on stdout, so that scripts and tests learn the bound ports.
    println!(
        "vigil: listening otlp_grpc={} otlp_http={} query={} flight_sql={}",
        collector.otlp_grpc_addr,
        collector.otlp_http_addr,
        collector.query_addr,
        collector.flight_sql_addr
    );
    wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in flight and flushing buffers");
    if let Some(analyzer) = analyzer {
        analyzer.stop().await;
    }
    collector.shutdown().await;
    Ok(())
}

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
