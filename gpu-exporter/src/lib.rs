//! vigil's GPU exporter: samples NVML (and NCCL's Inspector, nccl-tests and log output) on a GPU
//! node and exports it as OTLP metrics and a dcgm-exporter-compatible Prometheus page.
//! Depends on nvml-wrapper (loaded at run time, so it builds and runs without a GPU) and the
//! OpenTelemetry SDK; never on the collector. It must never invent a value: a reading the GPU does
//! not support is left out, not zeroed.
//!
//! The same mapping serves real GPUs and the simulated fleet:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use vigil_gpu_exporter::{sample, sim, snapshot::Snapshot};
//!
//! let mut fleet = sim::Fleet::new(sim::FleetConfig { nodes: 1, gpus_per_node: 2, ..Default::default() });
//! fleet.advance(SystemTime::now(), Duration::from_secs(5));
//! let mut out = Snapshot::new(SystemTime::now());
//! fleet.sample_into(&sample::LabelConfig::default(), SystemTime::now(), &mut out);
//! assert!(out.value("DCGM_FI_DEV_SM_CLOCK", &[("gpu", "1")]).is_some());
//! ```

pub mod device;
pub mod export;
pub mod exporter;
pub mod fields;
pub mod nccl;
pub mod nvml;
pub mod sample;
pub mod sim;
pub mod snapshot;
