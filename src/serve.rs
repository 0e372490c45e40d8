//! `vigil serve`: configuration from file, environment and flags, then the collector until Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use crate::analyze::{self, ServeConfig};
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
    let config: ServeConfig = figment.extract().context("invalid configuration")?;
    validate(&config)?;
    Ok(config)
}

/// Refuses values that parse but that vigil cannot run with (a zero interval would spin a
/// loop, a zero memory limit refuse every request), naming each key and what it must be.
pub fn validate(config: &ServeConfig) -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    let (c, a) = (&config.collector, &config.analyzer);
    let (storage, query, anomaly) = (&c.storage, &c.query, &a.anomaly);
    let mut wrong = Vec::new();
    // (key, value, least allowed)
    let counts: [(&str, u64, u64); 12] = [
        (
            "storage.memory_limit_bytes",
            storage.memory_limit_bytes,
            MIB,
        ),
        ("storage.flush_rows", storage.flush_rows as u64, 1),
        (
            "storage.flush_interval_secs",
            storage.flush_interval_secs,
            1,
        ),
        ("storage.wal.segment_bytes", storage.wal.segment_bytes, MIB),
        (
            "storage.wal.sync_interval_ms",
            storage.wal.sync_interval_ms,
            1,
        ),
        (
            "storage.retention.check_interval_secs",
            storage.retention.check_interval_secs,
            1,
        ),
        (
            "storage.compaction.check_interval_secs",
            storage.compaction.check_interval_secs,
            1,
        ),
        ("query.memory_limit_bytes", query.memory_limit_bytes, MIB),
        ("query.max_concurrent", query.max_concurrent as u64, 1),
        ("query.timeout_secs", query.timeout_secs, 1),
        ("query.max_result_rows", query.max_result_rows as u64, 1),
        (
            "limits.max_request_bytes",
            c.limits.max_request_bytes as u64,
            1024,
        ),
    ];
    for (key, value, least) in counts {
        if value < least {
            wrong.push(format!("{key} = {value}: it must be at least {least}"));
        }
    }
    let ms = Duration::from_millis;
    let durations: [(&str, Duration, Duration); 6] = [
        ("analyzer.interval", a.interval, ms(100)),
        ("analyzer.gpu.window", a.gpu.window, ms(1)),
        ("analyzer.drift.window", a.drift.window, ms(1)),
        (
            "analyzer.drift.evaluate_every",
            a.drift.evaluate_every,
            ms(1),
        ),
        ("analyzer.anomaly.resolution", anomaly.resolution, ms(1000)),
        (
            "analyzer.anomaly.max_call_duration",
            anomaly.max_call_duration,
            ms(1),
        ),
    ];
    for (key, value, least) in durations {
        if value < least {
            wrong.push(format!(
                "{key} = {}: it must be at least {}",
                humantime::format_duration(value),
                humantime::format_duration(least)
            ));
        }
    }
    if anomaly.threshold.is_nan() || anomaly.threshold <= 0.0 || anomaly.threshold > 1.0 {
        wrong.push(format!(
            "analyzer.anomaly.threshold = {}: it must be above 0 and at most 1 (a score in [0, 1])",
            anomaly.threshold
        ));
    }
    let looks_in_order = anomaly
        .early_looks
        .iter()
        .zip(anomaly.early_looks.iter().skip(1))
        .all(|(a, b)| a < b);
    if !looks_in_order
        || anomaly
            .early_looks
            .iter()
            .any(|look| look.is_zero() || *look >= anomaly.settle)
    {
        wrong.push(format!(
            "analyzer.anomaly.early_looks = [{}]: each look must be above 0 s and below settle ({}), each later than the one before",
            anomaly
                .early_looks
                .iter()
                .map(|look| format!("{:?}", humantime::format_duration(*look).to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(anomaly.settle)
        ));
    }
    if anomaly.error_evidence_nats.is_nan() || anomaly.error_evidence_nats <= 0.0 {
        wrong.push(format!(
            "analyzer.anomaly.error_evidence_nats = {}: it must be above 0",
            anomaly.error_evidence_nats
        ));
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "invalid configuration:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_is_named() {
        validate(&ServeConfig::default()).unwrap();
        let mut config = ServeConfig::default();
        config.analyzer.interval = Duration::ZERO;
        config.collector.storage.memory_limit_bytes = 0;
        config.analyzer.anomaly.threshold = 5.0;
        let error = validate(&config).unwrap_err().to_string();
        assert!(
            error.contains("analyzer.interval = 0s: it must be at least 100ms"),
            "{error}"
        );
        assert!(
            error.contains("storage.memory_limit_bytes = 0: it must be at least 1048576"),
            "{error}"
        );
        assert!(error.contains("analyzer.anomaly.threshold = 5"), "{error}");
        assert_eq!(error.lines().count(), 4, "{error}");
        // Early looks: none is fine; one at the settle or out of order is named.
        let mut config = ServeConfig::default();
        config.analyzer.anomaly.early_looks = Vec::new();
        validate(&config).unwrap();
        for looks in [vec![2, 10], vec![5, 2], vec![0]] {
            config.analyzer.anomaly.early_looks =
                looks.into_iter().map(Duration::from_secs).collect();
            let error = validate(&config).unwrap_err().to_string();
            assert!(
                error.contains("analyzer.anomaly.early_looks = [")
                    && error.contains("below settle (10s)"),
                "{error}"
            );
        }
    }
}
