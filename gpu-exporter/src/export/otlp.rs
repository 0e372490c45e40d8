//! OTLP export with the OpenTelemetry SDK and `opentelemetry-otlp` (gRPC). Gauges and counters are
//! observable instruments whose callbacks read the snapshot being exported, so each sampling
//! round is exported once with the same values the `/metrics` page shows. NCCL exec times are a
//! synchronous histogram recorded as collectives arrive.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use parking_lot::RwLock;

use crate::fields::{self, MetricKind};
use crate::nccl::inspector::EXEC_TIME_BOUNDS_SECONDS;
use crate::snapshot::{Snapshot, Value};

/// Why OTLP export could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {message}")]
pub struct OtlpError {
    endpoint: String,
    message: String,
}

/// A running OTLP export pipeline.
pub struct OtlpExport {
    provider: SdkMeterProvider,
    meter: Meter,
    rounds: Option<SyncSender<Arc<Snapshot>>>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpExport {
    /// Connect lazily to `endpoint` (e.g. `http://127.0.0.1:4317`). Must be called inside a Tokio
    /// runtime: the gRPC channel lives on it.
    pub fn start(endpoint: &str, service_name: &str, host_name: &str) -> Result<Self, OtlpError> {
        let exporter = MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OtlpError {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        // Exports happen on force_flush after every sampling round; the reader's own timer is only
        // a backstop.
        let reader = PeriodicReader::builder(exporter)
            .with_interval(Duration::from_secs(3600))
            .build();
        let resource = Resource::builder()
            .with_service_name(service_name.to_string())
            .with_attribute(KeyValue::new("host.name", host_name.to_string()))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            // A fleet has many more series per metric than the SDK's default limit of 2000.
            .with_view(|_: &Instrument| {
                Stream::builder()
                    .with_cardinality_limit(1 << 20)
                    .build()
                    .ok()
            })
            .build();
        let meter = provider.meter("vigil-gpu-exporter");

        let current: Arc<RwLock<Arc<Snapshot>>> = Arc::default();
        let (rounds, receiver) = mpsc::sync_channel::<Arc<Snapshot>>(1);
        let thread_provider = provider.clone();
        let thread_meter = meter.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let mut registered = HashSet::new();
                let mut instruments = Vec::new();
                while let Ok(snapshot) = receiver.recv() {
                    for family in snapshot.families.values() {
                        if family.def.kind != MetricKind::Histogram && registered.insert(family.def.name) {
                            instruments.push(register(&thread_meter, family.def, current.clone()));
                        }
                    }
                    *current.write() = snapshot;
                    if let Err(e) = thread_provider.force_flush() {
                        tracing::warn!(error = %e, "OTLP export failed; the next round will try again");
                    }
                }
            })
            .map_err(|e| OtlpError { endpoint: endpoint.to_string(), message: e.to_string() })?;
        Ok(OtlpExport {
            provider,
            meter,
            rounds: Some(rounds),
            thread: Some(thread),
        })
    }

    /// The histogram NCCL exec times are recorded into.
    pub fn exec_time_histogram(&self) -> Histogram<f64> {
        self.meter
            .f64_histogram(fields::NCCL_EXEC_TIME.name)
            .with_description(fields::NCCL_EXEC_TIME.help)
            .with_unit(fields::NCCL_EXEC_TIME.unit)
            .with_boundaries(EXEC_TIME_BOUNDS_SECONDS.to_vec())
            .build()
    }

    /// Export this round. If the previous round is still being exported (a slow or unreachable
    /// collector), this one is skipped rather than queued: memory stays bounded, and the next
    /// round carries the counters forward.
    pub fn publish(&self, snapshot: Arc<Snapshot>) -> bool {
        match self.rounds.as_ref().map(|rounds| rounds.try_send(snapshot)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_))) => {
                tracing::debug!("previous OTLP export still running; skipping this round");
                false
            }
            _ => false,
        }
    }

    /// Export what is pending and stop.
    pub fn shutdown(mut self) {
        self.rounds.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "OTLP exporter shutdown");
        }
    }
}

/// An observable instrument for `def` that reports every series of it in the current snapshot.
fn register(
    meter: &Meter,
    def: &'static fields::MetricDef,
    current: Arc<RwLock<Arc<Snapshot>>>,
) -> Box<dyn std::any::Any + Send> {
    let observe = move |report: &dyn Fn(f64, &[KeyValue])| {
        let snapshot = current.read().clone();
        if let Some(family) = snapshot.families.get(def.name) {
            for series in &family.series {
                if let Value::Scalar(value) = series.value {
                    let attributes: Vec<KeyValue> = series
                        .labels
                        .iter()
                        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
                        .collect();
                    report(value, &attributes);
                }
            }
        }
    };
    match def.kind {
        MetricKind::Counter => Box::new(
            meter
                .f64_observable_counter(def.name)
                .with_description(def.help)
                .with_unit(def.unit)
                .with_callback(move |observer| {
                    observe(&|value, attributes| observer.observe(value, attributes))
                })
                .build(),
        ),
        _ => Box::new(
            meter
                .f64_observable_gauge(def.name)
                .with_description(def.help)
                .with_unit(def.unit)
                .with_callback(move |observer| {
                    observe(&|value, attributes| observer.observe(value, attributes))
                })
                .build(),
        ),
    }
}
