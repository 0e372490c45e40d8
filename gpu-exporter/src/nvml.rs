//! The real backend: NVML through nvml-wrapper. libnvidia-ml is loaded at run time, so vigil builds
//! and starts on machines without a GPU; [`NvmlBackend::open`] then fails with a message that says
//! how to run the simulated fleet instead.

use std::sync::mpsc;
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter as NvmlEccCounter, MemoryError, PerformancePolicy, RetirementCause,
    TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_RX,
    NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_TX, NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE,
    NVML_FI_DEV_REMAPPED_PENDING, NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, GpmSample, Nvml};

use crate::device::{
    ClockDomain, DeviceIdentity, EccCounter, EccKind, GpuDevice, MemoryInfo, NvLinkCounter,
    PcieLink, Profiling, Read, ReadError, RemappedRows, RetiredPages, TempSensor, Utilization,
    Violation, XidEvent,
};

/// NVML's most links per GPU.
const MAX_NVLINKS: u32 = 18;

/// Why the real backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum NvmlOpenError {
    #[error(
        "NVML could not be loaded ({0}): this machine has no NVIDIA driver or GPU that vigil can see.\n\
         To try the exporter without a GPU, run the simulated fleet: vigil gpu-exporter --simulate"
    )]
    NotLoaded(String),
    #[error(
        "NVML loaded but found no GPUs; to try the exporter without one, run: vigil gpu-exporter --simulate"
    )]
    NoDevices,
    #[error("NVML: {0}")]
    Other(String),
}

fn read_error(error: NvmlError) -> ReadError {
    match error {
        NvmlError::NotSupported
        | NvmlError::FunctionNotFound
        | NvmlError::FailedToLoadSymbol(_) => ReadError::NotSupported,
        NvmlError::GpuLost => ReadError::GpuLost,
        other => ReadError::Other(other.to_string()),
    }
}

fn read<T>(result: Result<T, NvmlError>) -> Read<T> {
    result.map_err(read_error)
}

/// NVML, opened once for the life of the process.
pub struct NvmlBackend {
    nvml: &'static Nvml,
    pub driver_version: Option<String>,
    pub devices: Vec<NvmlGpu>,
}

impl NvmlBackend {
    pub fn open() -> Result<Self, NvmlOpenError> {
        let nvml = Nvml::init().map_err(|e| match e {
            NvmlError::LibloadingError(_)
            | NvmlError::LibraryNotFound
            | NvmlError::DriverNotLoaded => NvmlOpenError::NotLoaded(e.to_string()),
            other => NvmlOpenError::Other(other.to_string()),
        })?;
        // The exporter runs until the process exits; the handle lives as long.
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        let count = nvml
            .device_count()
            .map_err(|e| NvmlOpenError::Other(e.to_string()))?;
        if count == 0 {
            return Err(NvmlOpenError::NoDevices);
        }
        let mut devices = Vec::new();
        for index in 0..count {
            match nvml.device_by_index(index) {
                Ok(device) => devices.push(NvmlGpu::new(nvml, device, index)),
                Err(e) => tracing::warn!(index, error = %e, "skipping a GPU NVML cannot open"),
            }
        }
        Ok(NvmlBackend {
            nvml,
            driver_version: nvml.sys_driver_version().ok(),
            devices,
        })
    }

    /// Watch for XID errors on every GPU through an NVML event set (every XID is delivered, none is
    /// missed between polls). Events arrive on the returned channel; the thread ends with the first
    /// event after the receiver is dropped, or with the process.
    pub fn watch_xids(&self) -> Result<mpsc::Receiver<XidEvent>, String> {
        let nvml = self.nvml;
        let count = self.devices.len() as u32;
        let (sender, receiver) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("nvml-xid-events".into())
            .spawn(move || {
                let mut set = match nvml.create_event_set() {
                    Ok(set) => set,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot create an NVML event set: {e}")));
                        return;
                    }
                };
                let mut registered = 0;
                for index in 0..count {
                    let Ok(device) = nvml.device_by_index(index) else {
                        continue;
                    };
                    // Registering a GPU that cannot report XIDs would consume the set; ask first.
                    let supported = device
                        .supported_event_types()
                        .is_ok_and(|types| types.contains(EventTypes::CRITICAL_XID_ERROR));
                    if !supported {
                        tracing::warn!(index, "this GPU cannot report XID events");
                        continue;
                    }
                    match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                        Ok(returned) => {
                            set = returned;
                            registered += 1;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!(
                                "cannot register GPU {index} for XID events: {}",
                                e.error
                            )));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(if registered > 0 {
                    Ok(())
                } else {
                    Err("no GPU supports XID events".into())
                });
                loop {
                    match set.wait(1000) {
                        Ok(event) => {
                            let xid = match event.event_data {
                                Some(XidError::Value(code)) => code,
                                _ => 0,
                            };
                            let uuid = event.device.uuid().unwrap_or_default();
                            if sender.send(XidEvent { uuid, xid }).is_err() {
                                return;
                            }
                        }
                        // Nothing happened within the second; wait again.
                        Err(NvmlError::Timeout) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "NVML event wait failed");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the XID thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the XID thread stopped".to_string())??;
        Ok(receiver)
    }
}

/// One GPU through NVML.
pub struct NvmlGpu {
    nvml: &'static Nvml,
    device: Device<'static>,
    index: u32,
    links: u32,
    gpm_supported: bool,
    previous_gpm: Option<GpmSample<'static>>,
}

impl NvmlGpu {
    fn new(nvml: &'static Nvml, device: Device<'static>, index: u32) -> Self {
        let links = (0..MAX_NVLINKS)
            .take_while(|link| device.link_wrapper_for(*link).is_active().is_ok())
            .count() as u32;
        let gpm_supported = device.gpm_support().unwrap_or(false);
        NvmlGpu {
            nvml,
            device,
            index,
            links,
            gpm_supported,
            previous_gpm: None,
        }
    }

    fn fields(&self, ids: &[u32]) -> Read<Vec<Read<f64>>> {
        let ids: Vec<FieldId> = ids.iter().map(|id| FieldId(*id)).collect();
        let samples = read(self.device.field_values_for(&ids))?;
        Ok(samples.into_iter().map(field_value).collect())
    }
}

fn field_value(sample: Result<FieldValueSample, NvmlError>) -> Read<f64> {
    let sample = read(sample)?;
    Ok(match read(sample.value)? {
        SampleValue::F64(v) => v,
        SampleValue::U32(v) => f64::from(v),
        SampleValue::U64(v) => v as f64,
        SampleValue::I64(v) => v as f64,
    })
}

impl GpuDevice for NvmlGpu {
    fn compute_pids(&self) -> Read<Vec<u32>> {
        read(self.device.running_compute_processes())
            .map(|processes| processes.into_iter().map(|p| p.pid).collect())
    }
    fn identity(&self) -> Read<DeviceIdentity> {
        Ok(DeviceIdentity {
            index: read(self.device.index()).unwrap_or(self.index),
            uuid: read(self.device.uuid())?,
            pci_bus_id: read(self.device.pci_info())?.bus_id,
            name: read(self.device.name())?,
            minor_number: read(self.device.minor_number()).unwrap_or(self.index),
        })
    }
    fn clock_mhz(&self, domain: ClockDomain) -> Read<u32> {
        read(self.device.clock_info(match domain {
            ClockDomain::Sm => Clock::SM,
            ClockDomain::Memory => Clock::Memory,
        }))
    }
    fn temperature_c(&self, sensor: TempSensor) -> Read<u32> {
        match sensor {
            TempSensor::Gpu => read(self.device.temperature(TemperatureSensor::Gpu)),
            TempSensor::Memory => {
                let value = self.fields(&[NVML_FI_DEV_MEMORY_TEMP])?.remove(0)?;
                // NVML reports 0 on boards without an HBM sensor.
                if value <= 0.0 {
                    Err(ReadError::NotSupported)
                } else {
                    Ok(value as u32)
                }
            }
        }
    }
    fn power_usage_mw(&self) -> Read<u32> {
        read(self.device.power_usage())
    }
    fn power_limit_mw(&self) -> Read<u32> {
        read(self.device.enforced_power_limit())
    }
    fn total_energy_mj(&self) -> Read<u64> {
        read(self.device.total_energy_consumption())
    }
    fn utilization(&self) -> Read<Utilization> {
        let rates = read(self.device.utilization_rates())?;
        Ok(Utilization {
            gpu_percent: rates.gpu,
            memory_percent: rates.memory,
        })
    }
    fn encoder_utilization(&self) -> Read<u32> {
        Ok(read(self.device.encoder_utilization())?.utilization)
    }
    fn decoder_utilization(&self) -> Read<u32> {
        Ok(read(self.device.decoder_utilization())?.utilization)
    }
    fn memory(&self) -> Read<MemoryInfo> {
        let info = read(self.device.memory_info())?;
        Ok(MemoryInfo {
            total: info.total,
            free: info.free,
            used: info.used,
            reserved: info.reserved,
        })
    }
    fn pcie_replay_counter(&self) -> Read<u64> {
        read(self.device.pcie_replay_counter()).map(u64::from)
    }
    fn pcie_link(&self) -> Read<PcieLink> {
        Ok(PcieLink {
            generation: read(self.device.current_pcie_link_gen())?,
            width: read(self.device.current_pcie_link_width())?,
            max_generation: read(self.device.max_pcie_link_gen())?,
            max_width: read(self.device.max_pcie_link_width())?,
        })
    }
    fn throttle_reasons(&self) -> Read<u64> {
        Ok(read(self.device.current_throttle_reasons())?.bits())
    }
    fn violation_time_ns(&self, policy: Violation) -> Read<u64> {
        let policy = match policy {
            Violation::Power => PerformancePolicy::Power,
            Violation::Thermal => PerformancePolicy::Thermal,
            Violation::SyncBoost => PerformancePolicy::SyncBoost,
            Violation::BoardLimit => PerformancePolicy::BoardLimit,
            Violation::LowUtilization => PerformancePolicy::LowUtilization,
            Violation::Reliability => PerformancePolicy::Reliability,
        };
        Ok(read(self.device.violation_status(policy))?.violation_time)
    }
    fn ecc_errors(&self, kind: EccKind, counter: EccCounter) -> Read<u64> {
        let kind = match kind {
            EccKind::SingleBit => MemoryError::Corrected,
            EccKind::DoubleBit => MemoryError::Uncorrected,
        };
        let counter = match counter {
            EccCounter::Volatile => NvmlEccCounter::Volatile,
            EccCounter::Aggregate => NvmlEccCounter::Aggregate,
        };
        read(self.device.total_ecc_errors(kind, counter))
    }
    fn retired_pages(&self) -> Read<RetiredPages> {
        Ok(RetiredPages {
            single_bit: read(
                self.device
                    .retired_pages(RetirementCause::MultipleSingleBitEccErrors),
            )?
            .len() as u64,
            double_bit: read(
                self.device
                    .retired_pages(RetirementCause::DoubleBitEccError),
            )?
            .len() as u64,
            pending: read(self.device.are_pages_pending_retired())?,
        })
    }
    fn remapped_rows(&self) -> Read<RemappedRows> {
        let values = self.fields(&[
            NVML_FI_DEV_REMAPPED_COR,
            NVML_FI_DEV_REMAPPED_UNC,
            NVML_FI_DEV_REMAPPED_PENDING,
            NVML_FI_DEV_REMAPPED_FAILURE,
        ])?;
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or(Err(ReadError::NotSupported));
        Ok(RemappedRows {
            correctable: next()? as u64,
            uncorrectable: next()? as u64,
            pending: next()? != 0.0,
            failed: next()? != 0.0,
        })
    }
    fn nvlink_link_count(&self) -> u32 {
        self.links
    }
    fn nvlink_error_count(&self, link: u32, counter: NvLinkCounter) -> Read<u64> {
        let counter = match counter {
            NvLinkCounter::CrcFlit => ErrorCounter::DlCrcFlit,
            NvLinkCounter::CrcData => ErrorCounter::DlCrcData,
            NvLinkCounter::Replay => ErrorCounter::DlReplay,
            NvLinkCounter::Recovery => ErrorCounter::DlRecovery,
        };
        read(self.device.link_wrapper_for(link).error_counter(counter))
    }
    fn nvlink_traffic_kib(&self) -> Read<u64> {
        if self.links == 0 {
            return Err(ReadError::NotSupported);
        }
        let values = self.fields(&[
            NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_TX,
            NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_RX,
        ])?;
        let mut total = 0.0;
        for value in values {
            total += value?;
        }
        Ok(total as u64)
    }
    fn profiling(&mut self) -> Read<Profiling> {
        if !self.gpm_supported {
            return Err(ReadError::NotSupported);
        }
        let current = read(self.device.gpm_sample())?;
        let Some(previous) = self.previous_gpm.replace(current) else {
            // GPM needs two samples; the first round has only one.
            return Err(ReadError::NotSupported);
        };
        let Some(current) = self.previous_gpm.as_ref() else {
            return Err(ReadError::NotSupported);
        };
        const IDS: [GpmMetricId; 10] = [
            GpmMetricId::GraphicsUtil,
            GpmMetricId::SmUtil,
            GpmMetricId::SmOccupancy,
            GpmMetricId::AnyTensorUtil,
            GpmMetricId::DramBwUtil,
            GpmMetricId::Fp64Util,
            GpmMetricId::Fp32Util,
            GpmMetricId::Fp16Util,
            GpmMetricId::PcieTxPerSec,
            GpmMetricId::PcieRxPerSec,
        ];
        let results = read(nvml_wrapper::gpm::gpm_metrics_get(
            self.nvml, &previous, current, &IDS,
        ))?;
        let value = |slot: usize| {
            results
                .get(slot)
                .and_then(|r| r.as_ref().ok())
                .map(|r| r.value)
        };
        // GPM reports percentages and MiB/s; DCGM's PROF fields are ratios and bytes/s.
        let ratio = |slot: usize| value(slot).map(|v| v / 100.0);
        let bytes = |slot: usize| value(slot).map(|v| v * 1024.0 * 1024.0);
        Ok(Profiling {
            gr_engine_active: ratio(0),
            sm_active: ratio(1),
            sm_occupancy: ratio(2),
            tensor_active: ratio(3),
            dram_active: ratio(4),
            fp64_active: ratio(5),
            fp32_active: ratio(6),
            fp16_active: ratio(7),
            pcie_tx_bytes_per_second: bytes(8),
            pcie_rx_bytes_per_second: bytes(9),
        })
    }
}
