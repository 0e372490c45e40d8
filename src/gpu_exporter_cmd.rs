//! `vigil gpu-exporter`: flags to [`vigil_gpu_exporter::exporter::ExporterConfig`].

use std::net::SocketAddr;

use anyhow::{Context, bail};
use vigil_gpu_exporter::exporter::{self, ExporterConfig, Source};
use vigil_gpu_exporter::nccl::NcclConfig;
use vigil_gpu_exporter::sample::LabelConfig;
use vigil_gpu_exporter::sim::{self, FaultSpec, FleetConfig};

use crate::cli::GpuExporterArgs;
use crate::serve::{init_logging, wait_for_signal};

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn config_from(args: &GpuExporterArgs) -> anyhow::Result<ExporterConfig> {
    if args.interval.is_zero() {
        bail!("--interval must be longer than zero");
    }
    let listen = match args.listen.as_str() {
        "none" => None,
        addr => Some(addr.parse::<SocketAddr>().with_context(|| {
            format!("--listen {addr:?} is not an address like 0.0.0.0:9400 (or \"none\")")
        })?),
    };
    let source = if args.simulate {
        let mut faults: Vec<FaultSpec> = Vec::new();
        if let Some(path) = &args.fault_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the fault schedule {}", path.display()))?;
            faults.extend(sim::faults::parse_file(&text).map_err(anyhow::Error::msg)?);
        }
        for spec in &args.faults {
            faults.push(spec.parse().map_err(anyhow::Error::msg)?);
        }
        if args.nodes == 0 || args.gpus_per_node == 0 {
            bail!("--nodes and --gpus-per-node must be at least 1");
        }
        Source::Simulate {
            fleet: Box::new(FleetConfig {
                nodes: args.nodes,
                gpus_per_node: args.gpus_per_node,
                model: sim::model_by_name(&args.gpu_model).map_err(anyhow::Error::msg)?,
                seed: args.seed,
                faults,
                ..FleetConfig::default()
            }),
            ground_truth: args.ground_truth.clone(),
        }
    } else {
        Source::Nvml
    };
    Ok(ExporterConfig {
        source,
        interval: args.interval,
        listen,
        otlp_endpoint: (!args.no_otlp).then(|| args.otlp_endpoint.clone()),
        otlp_headers: otlp_headers_from_env()?,
        otlp_ca_pem: otlp_certificate_from_env()?,
        hostname: args.hostname.clone().unwrap_or_else(system_hostname),
        labels: LabelConfig {
            hostname_labels: args.hostname_labels.clone(),
        },
        nccl: NcclConfig {
            inspector_paths: args.nccl_inspector.clone(),
            probe_paths: args.nccl_tests.clone(),
            log_paths: args.nccl_log.clone(),
        },
        xid_window: args.xid_window,
    })
}

pub async fn run(args: GpuExporterArgs) -> anyhow::Result<()> {
    let config = config_from(&args)?;
    init_logging(args.log_format);
    let otlp = config
        .otlp_endpoint
        .clone()
        .unwrap_or_else(|| "off".to_string());
    let running = exporter::start(config).await?;
    // One machine-readable line on stdout, so that scripts and tests learn the bound port.
    let metrics = running
        .metrics_addr
        .map(|addr| format!("http://{addr}/metrics"))
        .unwrap_or_else(|| "off".to_string());
    println!(
        "vigil gpu-exporter: gpus={} metrics={metrics} otlp={otlp}",
        running.gpu_count
    );
    wait_for_signal().await;
    tracing::info!("stopping: exporting the last round");
    running.stop().await;
    Ok(())
}

/// `OTEL_EXPORTER_OTLP_HEADERS` (then `OTEL_EXPORTER_OTLP_METRICS_HEADERS`), as the OpenTelemetry
/// SDKs read them: how a bearer token reaches a collector that requires one.
pub fn otlp_headers_from_env() -> anyhow::Result<tonic::metadata::MetadataMap> {
    let mut headers = tonic::metadata::MetadataMap::new();
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ] {
        if let Ok(text) = std::env::var(name) {
            let parsed = vigil_gpu_exporter::export::otlp::parse_headers(&text)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            for (key, value) in parsed.iter().filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.clone(), v.clone())),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            }) {
                headers.insert(key, value);
            }
        }
    }
    Ok(headers)
}

/// `OTEL_EXPORTER_OTLP_CERTIFICATE`: a CA certificate file (PEM) to trust for an `https://`
/// endpoint, as the OpenTelemetry SDKs read it.
pub fn otlp_certificate_from_env() -> anyhow::Result<Option<Vec<u8>>> {
    match std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE") {
        Some(path) if !path.is_empty() => std::fs::read(&path).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}",
                std::path::Path::new(&path).display()
            )
        }),
        _ => Ok(None),
    }
}
