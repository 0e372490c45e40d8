//! The exporter's run loop: sample every GPU and NCCL source once per interval on a dedicated
//! thread (NVML calls block), publish the snapshot to the `/metrics` page and to OTLP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::device::{GpuDevice, XidEvent};
use crate::export::otlp::{OtlpError, OtlpExport};
use crate::export::prom::{self, Latest};
use crate::fields;
use crate::nccl::{NcclConfig, NcclSources};
use crate::nvml::{NvmlBackend, NvmlOpenError};
use crate::sample::{self, LabelConfig, ReadErrors, XidTracker};
use crate::sim::{Fleet, FleetConfig, faults};
use crate::snapshot::{Labels, Snapshot, labels};

/// Where GPU readings come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// This node's GPUs through NVML.
    Nvml,
    /// A simulated fleet; the ground truth of its fault schedule is written to `ground_truth`.
    Simulate {
        fleet: Box<FleetConfig>,
        ground_truth: Option<PathBuf>,
    },
}

/// Everything the exporter needs.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub source: Source,
    /// Sampling interval.
    pub interval: Duration,
    /// Where to serve `/metrics`; `None` for no page.
    pub listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint of the collector; `None` to not export.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every export (a bearer token, for a collector that wants one).
    pub otlp_headers: tonic::metadata::MetadataMap,
    /// A CA certificate (PEM) to trust for an `https://` endpoint, besides the public roots.
    pub otlp_ca_pem: Option<Vec<u8>>,
    /// This node's name (for NVML; the simulator names its own nodes).
    pub hostname: String,
    pub labels: LabelConfig,
    pub nccl: NcclConfig,
    /// Window of `DCGM_EXP_XID_ERRORS_COUNT`.
    pub xid_window: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            source: Source::Nvml,
            interval: Duration::from_secs(5),
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9400))),
            otlp_endpoint: Some("http://127.0.0.1:4317".to_string()),
            otlp_headers: tonic::metadata::MetadataMap::new(),
            otlp_ca_pem: None,
            hostname: "localhost".to_string(),
            labels: LabelConfig::default(),
            nccl: NcclConfig::default(),
            xid_window: Duration::from_secs(300),
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error(transparent)]
    Nvml(#[from] NvmlOpenError),
    #[error("simulated fleet: {0}")]
    Simulation(String),
    #[error("cannot write the ground truth to {path}: {source}")]
    GroundTruth {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serve /metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    #[error("cannot start the sampling thread: {0}")]
    Thread(std::io::Error),
}

/// What is sampled each round.
enum Backend {
    Nvml {
        backend: NvmlBackend,
        /// Per device: its labels, UUID and index.
        labels: Vec<(Labels, String, u32)>,
        xids: Option<mpsc::Receiver<XidEvent>>,
    },
    Simulated(Box<Fleet>),
}

/// A running exporter.
pub struct RunningExporter {
    /// The bound address of the `/metrics` page.
    pub metrics_addr: Option<SocketAddr>,
    /// How many GPUs are sampled.
    pub gpu_count: usize,
    stop: mpsc::Sender<()>,
    sampler: Option<JoinHandle<()>>,
    page_stop: Option<tokio::sync::oneshot::Sender<()>>,
    page: Option<tokio::task::JoinHandle<()>>,
}

impl RunningExporter {
    /// Stop sampling, export the last round and close the page.
    pub async fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(sampler) = self.sampler.take() {
            let _ = tokio::task::spawn_blocking(move || sampler.join()).await;
        }
        if let Some(page_stop) = self.page_stop.take() {
            let _ = page_stop.send(());
        }
        if let Some(page) = self.page.take() {
            let _ = page.await;
        }
    }
}

/// Start sampling. Must be called inside a Tokio runtime.
pub async fn start(config: ExporterConfig) -> Result<RunningExporter, ExporterError> {
    let backend = match &config.source {
        Source::Nvml => {
            let backend = NvmlBackend::open()?;
            let driver = backend.driver_version.clone();
            let mut device_labels = Vec::new();
            for device in &backend.devices {
                match device.identity() {
                    Ok(identity) => device_labels.push((
                        sample::device_labels(
                            &identity,
                            &config.hostname,
                            driver.as_deref(),
                            &config.labels,
                        ),
                        identity.uuid,
                        identity.index,
                    )),
                    Err(e) => {
                        return Err(ExporterError::Nvml(NvmlOpenError::Other(format!(
                            "cannot identify a GPU: {e}"
                        ))));
                    }
                }
            }
            let xids = match backend.watch_xids() {
                Ok(receiver) => Some(receiver),
                Err(message) => {
                    tracing::warn!(%message, "XID errors will not be counted");
                    None
                }
            };
            Backend::Nvml {
                backend,
                labels: device_labels,
                xids,
            }
        }
        Source::Simulate {
            fleet,
            ground_truth,
        } => {
            let fleet = Fleet::new((**fleet).clone());
            fleet.validate().map_err(ExporterError::Simulation)?;
            if let Some(path) = ground_truth {
                faults::write_ground_truth(path, &fleet.ground_truth(SystemTime::now())).map_err(
                    |source| ExporterError::GroundTruth {
                        path: path.clone(),
                        source,
                    },
                )?;
            }
            Backend::Simulated(Box::new(fleet))
        }
    };
    let gpu_count = match &backend {
        Backend::Nvml { labels, .. } => labels.len(),
        Backend::Simulated(fleet) => fleet.nodes.iter().map(|node| node.gpus.len()).sum(),
    };

    let latest: Latest = Arc::default();
    let (page_stop, page_stopped) = tokio::sync::oneshot::channel::<()>();
    let (metrics_addr, page) = match config.listen {
        Some(addr) => {
            let (bound, task) = prom::serve(addr, latest.clone(), async move {
                let _ = page_stopped.await;
            })
            .await
            .map_err(|source| ExporterError::Listen { addr, source })?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };

    // `instance` is what a Prometheus scrape of the page would give (host and page port), so
    // that PromQL shows the same series whichever way they came.
    let instance = match metrics_addr {
        Some(addr) => format!("{}:{}", config.hostname, addr.port()),
        None => config.hostname.clone(),
    };
    let otlp = match &config.otlp_endpoint {
        Some(endpoint) => Some(OtlpExport::start(
            endpoint,
            "vigil-gpu-exporter",
            &config.hostname,
            &instance,
            config.otlp_headers.clone(),
            config.otlp_ca_pem.clone(),
        )?),
        None => None,
    };

    let (stop, stopped) = mpsc::channel();
    let sampler = std::thread::Builder::new()
        .name("gpu-sampler".into())
        .spawn({
            let runtime = tokio::runtime::Handle::current();
            move || sampling_loop(config, backend, latest, otlp, stopped, runtime)
        })
        .map_err(ExporterError::Thread)?;

    Ok(RunningExporter {
        metrics_addr,
        gpu_count,
        stop,
        sampler: Some(sampler),
        page_stop: Some(page_stop),
        page,
    })
}

fn sampling_loop(
    config: ExporterConfig,
    mut backend: Backend,
    latest: Latest,
    otlp: Option<OtlpExport>,
    stopped: mpsc::Receiver<()>,
    runtime: tokio::runtime::Handle,
) {
    let node_name = match &backend {
        Backend::Nvml { .. } => config.hostname.clone(),
        Backend::Simulated(_) => "vigil-sim".to_string(),
    };
    let mut nccl = NcclSources::new(config.nccl.clone(), config.hostname.clone());
    let exporter_labels = sample_labels(&config.labels.hostname_labels, &node_name);
    let mut xids = XidTracker::new(config.xid_window);
    let mut errors = ReadErrors::default();
    let mut rounds = 0u64;
    let mut last_round = SystemTime::now();
    let mut next = Instant::now();
    loop {
        let started = Instant::now();
        let now = SystemTime::now();
        let mut out = Snapshot::new(now);
        match &mut backend {
            Backend::Nvml {
                backend,
                labels,
                xids: events,
            } => {
                if let Some(events) = events {
                    while let Ok(event) = events.try_recv() {
                        xids.record(&event, now);
                    }
                }
                let mut gpu_of_pid = Vec::new();
                for (device, (labels, uuid, index)) in backend.devices.iter_mut().zip(labels.iter())
                {
                    sample::sample_gpu(device, labels, uuid, &mut xids, now, &mut out, &mut errors);
                    if let Ok(pids) = device.compute_pids() {
                        gpu_of_pid
                            .extend(pids.into_iter().map(|pid| (pid, (*index, uuid.clone()))));
                    }
                }
                nccl.learn_gpus(gpu_of_pid);
            }
            Backend::Simulated(fleet) => {
                let dt = now
                    .duration_since(last_round)
                    .unwrap_or_default()
                    .max(Duration::from_millis(1));
                fleet.advance(now, dt);
                fleet.sample_into(&config.labels, now, &mut out);
            }
        }
        last_round = now;
        nccl.poll();
        nccl.emit(&config.labels.hostname_labels, &mut out);
        sample::emit_read_errors(&errors, &exporter_labels, &mut out);
        rounds += 1;
        out.push(&fields::ROUNDS, exporter_labels.clone(), rounds as f64);
        out.push(
            &fields::ROUND_SECONDS,
            exporter_labels.clone(),
            started.elapsed().as_secs_f64(),
        );
        let snapshot = Arc::new(out);
        *latest.write() = snapshot.clone();
        if let Some(otlp) = &otlp {
            otlp.publish(snapshot);
        }

        next += config.interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow GPU query): start the next round now, do not burst to catch up.
            next = now;
        }
        match stopped.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(otlp) = otlp {
        runtime.block_on(otlp.shutdown());
    }
}

fn sample_labels(hostname_labels: &[String], hostname: &str) -> Labels {
    let mut out = labels([]);
    for name in hostname_labels {
        out.push((Arc::from(name.as_str()), Arc::from(hostname)));
    }
    out
}
