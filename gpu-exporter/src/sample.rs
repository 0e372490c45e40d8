//! The mapping from [`GpuDevice`] readings to dcgm-exporter's metric names and labels. The real
//! NVML backend, the simulated fleet and the tests' scripted devices all go through [`sample_gpu`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::device::{
    ClockDomain, DeviceIdentity, EccCounter, EccKind, GpuDevice, NvLinkCounter, Read, ReadError,
    TempSensor, Violation, XidEvent, throttle,
};
use crate::fields::{self, MetricDef};
use crate::snapshot::{Labels, Snapshot};

/// Which labels every GPU series carries, and how the host is called.
#[derive(Debug, Clone)]
pub struct LabelConfig {
    /// Label names for the host name: dcgm-exporter uses `Hostname`; some dashboards expect
    /// `hostname`. Every name listed gets the host name.
    pub hostname_labels: Vec<String>,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            hostname_labels: vec!["Hostname".to_string()],
        }
    }
}

/// The labels of one GPU, in dcgm-exporter's order.
pub fn device_labels(
    identity: &DeviceIdentity,
    hostname: &str,
    driver_version: Option<&str>,
    config: &LabelConfig,
) -> Labels {
    let mut labels: Labels = vec![
        (Arc::from("gpu"), Arc::from(identity.index.to_string())),
        (Arc::from("UUID"), Arc::from(identity.uuid.as_str())),
        (
            Arc::from("pci_bus_id"),
            Arc::from(identity.pci_bus_id.as_str()),
        ),
        (
            Arc::from("device"),
            Arc::from(format!("nvidia{}", identity.minor_number)),
        ),
        (Arc::from("modelName"), Arc::from(identity.name.as_str())),
    ];
    for name in &config.hostname_labels {
        labels.push((Arc::from(name.as_str()), Arc::from(hostname)));
    }
    if let Some(version) = driver_version {
        labels.push((Arc::from("DCGM_FI_DRIVER_VERSION"), Arc::from(version)));
    }
    labels
}

/// Failed readings (other than "not supported"), per field, for the exporter's own metric.
#[derive(Debug, Default)]
pub struct ReadErrors {
    pub by_field: BTreeMap<&'static str, u64>,
}

/// XID errors per GPU and code: a cumulative count and the events inside a sliding window.
#[derive(Debug)]
pub struct XidTracker {
    window: Duration,
    per_gpu: HashMap<String, GpuXids>,
}

#[derive(Debug, Default)]
struct GpuXids {
    totals: BTreeMap<u64, u64>,
    recent: VecDeque<(SystemTime, u64)>,
    last: Option<u64>,
}

impl XidTracker {
    pub fn new(window: Duration) -> Self {
        XidTracker {
            window,
            per_gpu: HashMap::new(),
        }
    }

    pub fn record(&mut self, event: &XidEvent, at: SystemTime) {
        let gpu = self.per_gpu.entry(event.uuid.clone()).or_default();
        *gpu.totals.entry(event.xid).or_default() += 1;
        gpu.recent.push_back((at, event.xid));
        gpu.last = Some(event.xid);
    }

    /// Emit this GPU's XID metrics: the last code (0 if none yet, as dcgm-exporter reports), a
    /// counter per code and a windowed count per code.
    fn emit(&mut self, uuid: &str, labels: &Labels, now: SystemTime, out: &mut Snapshot) {
        let window_label = humantime::format_duration(self.window).to_string();
        let gpu = self.per_gpu.entry(uuid.to_string()).or_default();
        while gpu
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() > self.window)
        {
            gpu.recent.pop_front();
        }
        out.push(
            &fields::XID_ERRORS,
            labels.clone(),
            gpu.last.unwrap_or(0) as f64,
        );
        for (xid, total) in &gpu.totals {
            let xid_label = xid.to_string();
            out.push(
                &fields::XID_TOTAL,
                with(labels, &[("xid", &xid_label)]),
                *total as f64,
            );
            let in_window = gpu.recent.iter().filter(|(_, code)| code == xid).count();
            out.push(
                &fields::XID_WINDOW,
                with(labels, &[("xid", &xid_label), ("window", &window_label)]),
                in_window as f64,
            );
        }
    }
}

/// `labels` plus extra pairs.
pub fn with(labels: &Labels, extra: &[(&str, &str)]) -> Labels {
    let mut all = labels.clone();
    all.extend(extra.iter().map(|(k, v)| (Arc::from(*k), Arc::from(*v))));
    all
}

struct Emitter<'a> {
    labels: &'a Labels,
    out: &'a mut Snapshot,
    errors: &'a mut ReadErrors,
    lost: bool,
}

impl Emitter<'_> {
    /// Emit a reading; leave it out if unsupported; count any other failure.
    fn put<T>(
        &mut self,
        def: &'static MetricDef,
        reading: Read<T>,
        to_value: impl FnOnce(T) -> f64,
    ) {
        if let Some(value) = self.take(def.name, reading) {
            self.out.push(def, self.labels.clone(), to_value(value));
        }
    }

    fn take<T>(&mut self, field: &'static str, reading: Read<T>) -> Option<T> {
        match reading {
            Ok(value) => Some(value),
            Err(ReadError::NotSupported) => None,
            Err(ReadError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(ReadError::Other(message)) => {
                tracing::debug!(field, %message, "NVML reading failed");
                *self.errors.by_field.entry(field).or_default() += 1;
                None
            }
        }
    }
}

/// Read every field of one GPU into `out`. A field the device does not support is left out; a GPU
/// that is lost reports `vigil_gpu_up 0` and its XID counters only.
pub fn sample_gpu(
    device: &mut dyn GpuDevice,
    labels: &Labels,
    uuid: &str,
    xids: &mut XidTracker,
    now: SystemTime,
    out: &mut Snapshot,
    errors: &mut ReadErrors,
) {
    let profiling = device.profiling();
    let device = &*device;
    let mut e = Emitter {
        labels,
        out,
        errors,
        lost: false,
    };
    e.put(
        &fields::SM_CLOCK,
        device.clock_mhz(ClockDomain::Sm),
        f64::from,
    );
    if e.lost {
        // Every other query would fail the same way; say so once.
        e.out.push(&fields::GPU_UP, labels.clone(), 0.0);
        xids.emit(uuid, labels, now, e.out);
        return;
    }
    e.put(
        &fields::MEM_CLOCK,
        device.clock_mhz(ClockDomain::Memory),
        f64::from,
    );
    e.put(
        &fields::GPU_TEMP,
        device.temperature_c(TempSensor::Gpu),
        f64::from,
    );
    e.put(
        &fields::MEMORY_TEMP,
        device.temperature_c(TempSensor::Memory),
        f64::from,
    );
    e.put(&fields::POWER_USAGE, device.power_usage_mw(), |mw| {
        f64::from(mw) / 1000.0
    });
    e.put(&fields::POWER_LIMIT, device.power_limit_mw(), |mw| {
        f64::from(mw) / 1000.0
    });
    e.put(&fields::TOTAL_ENERGY, device.total_energy_mj(), |mj| {
        mj as f64
    });
    if let Some(util) = e.take(fields::GPU_UTIL.name, device.utilization()) {
        e.out.push(
            &fields::GPU_UTIL,
            labels.clone(),
            f64::from(util.gpu_percent),
        );
        e.out.push(
            &fields::MEM_COPY_UTIL,
            labels.clone(),
            f64::from(util.memory_percent),
        );
    }
    e.put(&fields::ENC_UTIL, device.encoder_utilization(), f64::from);
    e.put(&fields::DEC_UTIL, device.decoder_utilization(), f64::from);
    if let Some(memory) = e.take(fields::FB_USED.name, device.memory()) {
        const MIB: f64 = 1024.0 * 1024.0;
        e.out.push(
            &fields::FB_FREE,
            labels.clone(),
            (memory.free as f64 / MIB).floor(),
        );
        e.out.push(
            &fields::FB_USED,
            labels.clone(),
            (memory.used as f64 / MIB).floor(),
        );
        e.out.push(
            &fields::FB_RESERVED,
            labels.clone(),
            (memory.reserved as f64 / MIB).floor(),
        );
        e.out.push(
            &fields::FB_TOTAL,
            labels.clone(),
            (memory.total as f64 / MIB).floor(),
        );
    }
    e.put(&fields::PCIE_REPLAY, device.pcie_replay_counter(), |n| {
        n as f64
    });
    if let Some(link) = e.take(fields::PCIE_LINK_GEN.name, device.pcie_link()) {
        e.out.push(
            &fields::PCIE_LINK_GEN,
            labels.clone(),
            f64::from(link.generation),
        );
        e.out.push(
            &fields::PCIE_LINK_WIDTH,
            labels.clone(),
            f64::from(link.width),
        );
        e.out.push(
            &fields::PCIE_MAX_LINK_GEN,
            labels.clone(),
            f64::from(link.max_generation),
        );
        e.out.push(
            &fields::PCIE_MAX_LINK_WIDTH,
            labels.clone(),
            f64::from(link.max_width),
        );
        let downtrained = link.generation < link.max_generation || link.width < link.max_width;
        e.out.push(
            &fields::PCIE_DOWNTRAINED,
            labels.clone(),
            f64::from(u8::from(downtrained)),
        );
    }
    if let Some(reasons) = e.take(
        fields::CLOCK_THROTTLE_REASONS.name,
        device.throttle_reasons(),
    ) {
        e.out.push(
            &fields::CLOCK_THROTTLE_REASONS,
            labels.clone(),
            reasons as f64,
        );
        for (bit, reason) in throttle::ALL {
            let active = f64::from(u8::from(reasons & bit != 0));
            e.out.push(
                &fields::THROTTLE_ACTIVE,
                with(labels, &[("reason", reason)]),
                active,
            );
        }
    }
    for policy in Violation::ALL {
        let def = match policy {
            Violation::Power => &fields::POWER_VIOLATION,
            Violation::Thermal => &fields::THERMAL_VIOLATION,
            Violation::SyncBoost => &fields::SYNC_BOOST_VIOLATION,
            Violation::BoardLimit => &fields::BOARD_LIMIT_VIOLATION,
            Violation::LowUtilization => &fields::LOW_UTIL_VIOLATION,
            Violation::Reliability => &fields::RELIABILITY_VIOLATION,
        };
        // NVML counts nanoseconds; dcgm-exporter reports microseconds.
        e.put(def, device.violation_time_ns(policy), |ns| {
            (ns / 1000) as f64
        });
    }
    for (def, kind, counter) in [
        (
            &fields::ECC_SBE_VOL,
            EccKind::SingleBit,
            EccCounter::Volatile,
        ),
        (
            &fields::ECC_DBE_VOL,
            EccKind::DoubleBit,
            EccCounter::Volatile,
        ),
        (
            &fields::ECC_SBE_AGG,
            EccKind::SingleBit,
            EccCounter::Aggregate,
        ),
        (
            &fields::ECC_DBE_AGG,
            EccKind::DoubleBit,
            EccCounter::Aggregate,
        ),
    ] {
        e.put(def, device.ecc_errors(kind, counter), |n| n as f64);
    }
    if let Some(pages) = e.take(fields::RETIRED_SBE.name, device.retired_pages()) {
        e.out.push(
            &fields::RETIRED_SBE,
            labels.clone(),
            pages.single_bit as f64,
        );
        e.out.push(
            &fields::RETIRED_DBE,
            labels.clone(),
            pages.double_bit as f64,
        );
        e.out.push(
            &fields::RETIRED_PENDING,
            labels.clone(),
            f64::from(u8::from(pages.pending)),
        );
    }
    if let Some(rows) = e.take(
        fields::CORRECTABLE_REMAPPED_ROWS.name,
        device.remapped_rows(),
    ) {
        e.out.push(
            &fields::CORRECTABLE_REMAPPED_ROWS,
            labels.clone(),
            rows.correctable as f64,
        );
        e.out.push(
            &fields::UNCORRECTABLE_REMAPPED_ROWS,
            labels.clone(),
            rows.uncorrectable as f64,
        );
        e.out.push(
            &fields::ROW_REMAP_PENDING,
            labels.clone(),
            f64::from(u8::from(rows.pending)),
        );
        e.out.push(
            &fields::ROW_REMAP_FAILURE,
            labels.clone(),
            f64::from(u8::from(rows.failed)),
        );
    }
    e.put(
        &fields::NVLINK_BANDWIDTH_TOTAL,
        device.nvlink_traffic_kib(),
        |kib| kib as f64,
    );
    let links = device.nvlink_link_count();
    if links > 0 {
        let mut totals = [None::<u64>; 4];
        for link in 0..links {
            let link_label = link.to_string();
            for (slot, counter) in NvLinkCounter::ALL.into_iter().enumerate() {
                let reading = device.nvlink_error_count(link, counter);
                if let Some(count) = e.take(fields::NVLINK_LINK_ERRORS.name, reading) {
                    *totals[slot].get_or_insert(0) += count;
                    // Per-link series only for links with errors: 18 links x 4 counters of zeros
                    // per GPU would be most of the page. The totals are always there.
                    if count == 0 {
                        continue;
                    }
                    e.out.push(
                        &fields::NVLINK_LINK_ERRORS,
                        with(
                            labels,
                            &[("link", &link_label), ("counter", counter.label())],
                        ),
                        count as f64,
                    );
                }
            }
        }
        let defs = [
            &fields::NVLINK_CRC_FLIT_TOTAL,
            &fields::NVLINK_CRC_DATA_TOTAL,
            &fields::NVLINK_REPLAY_TOTAL,
            &fields::NVLINK_RECOVERY_TOTAL,
        ];
        for (def, total) in defs.into_iter().zip(totals) {
            if let Some(total) = total {
                e.out.push(def, labels.clone(), total as f64);
            }
        }
    }
    if let Some(prof) = e.take(fields::PROF_GR_ENGINE_ACTIVE.name, profiling) {
        for (def, value) in [
            (&fields::PROF_GR_ENGINE_ACTIVE, prof.gr_engine_active),
            (&fields::PROF_SM_ACTIVE, prof.sm_active),
            (&fields::PROF_SM_OCCUPANCY, prof.sm_occupancy),
            (&fields::PROF_PIPE_TENSOR_ACTIVE, prof.tensor_active),
            (&fields::PROF_DRAM_ACTIVE, prof.dram_active),
            (&fields::PROF_PIPE_FP64_ACTIVE, prof.fp64_active),
            (&fields::PROF_PIPE_FP32_ACTIVE, prof.fp32_active),
            (&fields::PROF_PIPE_FP16_ACTIVE, prof.fp16_active),
            (&fields::PROF_PCIE_TX_BYTES, prof.pcie_tx_bytes_per_second),
            (&fields::PROF_PCIE_RX_BYTES, prof.pcie_rx_bytes_per_second),
        ] {
            if let Some(value) = value {
                e.out.push(def, labels.clone(), value);
            }
        }
    }
    let lost = e.lost;
    e.out.push(
        &fields::GPU_UP,
        labels.clone(),
        if lost { 0.0 } else { 1.0 },
    );
    xids.emit(uuid, labels, now, e.out);
}

/// Emit the exporter's own read-error counters.
pub fn emit_read_errors(errors: &ReadErrors, base: &Labels, out: &mut Snapshot) {
    for (field, count) in &errors.by_field {
        out.push(
            &fields::READ_ERRORS,
            with(base, &[("field", field)]),
            *count as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{MemoryInfo, PcieLink, Profiling, RemappedRows, RetiredPages, Utilization};
    use std::time::SystemTime;

    /// A device whose every reading is scripted; `None` means NVML says "not supported".
    #[derive(Clone)]
    struct Scripted {
        sm_clock: Read<u32>,
        gpu_temp: Option<u32>,
        memory_temp: Option<u32>,
        power_mw: Option<u32>,
        energy_mj: Option<u64>,
        util: Option<Utilization>,
        memory: Option<MemoryInfo>,
        link: Option<PcieLink>,
        reasons: Option<u64>,
        thermal_violation_ns: Option<u64>,
        dbe_volatile: Read<u64>,
        nvlinks: u32,
        profiling: Option<Profiling>,
    }

    fn unsupported<T>(value: Option<T>) -> Read<T> {
        value.ok_or(ReadError::NotSupported)
    }

    impl GpuDevice for Scripted {
        fn identity(&self) -> Read<DeviceIdentity> {
            Ok(identity())
        }
        fn clock_mhz(&self, domain: ClockDomain) -> Read<u32> {
            match domain {
                ClockDomain::Sm => self.sm_clock.clone(),
                ClockDomain::Memory => Ok(2619),
            }
        }
        fn temperature_c(&self, sensor: TempSensor) -> Read<u32> {
            match sensor {
                TempSensor::Gpu => unsupported(self.gpu_temp),
                TempSensor::Memory => unsupported(self.memory_temp),
            }
        }
        fn power_usage_mw(&self) -> Read<u32> {
            unsupported(self.power_mw)
        }
        fn power_limit_mw(&self) -> Read<u32> {
            Ok(700_000)
        }
        fn total_energy_mj(&self) -> Read<u64> {
            unsupported(self.energy_mj)
        }
        fn utilization(&self) -> Read<Utilization> {
            unsupported(self.util)
        }
        fn encoder_utilization(&self) -> Read<u32> {
            Err(ReadError::NotSupported)
        }
        fn decoder_utilization(&self) -> Read<u32> {
            Ok(0)
        }
        fn memory(&self) -> Read<MemoryInfo> {
            unsupported(self.memory)
        }
        fn pcie_replay_counter(&self) -> Read<u64> {
            Ok(3)
        }
        fn pcie_link(&self) -> Read<PcieLink> {
            unsupported(self.link)
        }
        fn throttle_reasons(&self) -> Read<u64> {
            unsupported(self.reasons)
        }
        fn violation_time_ns(&self, policy: Violation) -> Read<u64> {
            match policy {
                Violation::Thermal => unsupported(self.thermal_violation_ns),
                _ => Ok(0),
            }
        }
        fn ecc_errors(&self, kind: EccKind, counter: EccCounter) -> Read<u64> {
            match (kind, counter) {
                (EccKind::DoubleBit, EccCounter::Volatile) => self.dbe_volatile.clone(),
                _ => Ok(0),
            }
        }
        fn retired_pages(&self) -> Read<RetiredPages> {
            Err(ReadError::NotSupported)
        }
        fn remapped_rows(&self) -> Read<RemappedRows> {
            Ok(RemappedRows {
                correctable: 2,
                uncorrectable: 0,
                pending: false,
                failed: false,
            })
        }
        fn nvlink_link_count(&self) -> u32 {
            self.nvlinks
        }
        fn nvlink_error_count(&self, link: u32, counter: NvLinkCounter) -> Read<u64> {
            match (link, counter) {
                (1, NvLinkCounter::CrcFlit) => Ok(7),
                (2, _) => Err(ReadError::NotSupported),
                _ => Ok(0),
            }
        }
        fn nvlink_traffic_kib(&self) -> Read<u64> {
            Ok(1 << 20)
        }
        fn profiling(&mut self) -> Read<Profiling> {
            unsupported(self.profiling)
        }
        fn compute_pids(&self) -> Read<Vec<u32>> {
            Err(ReadError::NotSupported)
        }
    }

    fn identity() -> DeviceIdentity {
        DeviceIdentity {
            index: 3,
            uuid: "GPU-11111111-2222-3333-4444-555555555555".into(),
            pci_bus_id: "00000000:18:00.0".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            minor_number: 3,
        }
    }

    fn h100() -> Scripted {
        Scripted {
            sm_clock: Ok(1980),
            gpu_temp: Some(61),
            memory_temp: Some(70),
            power_mw: Some(512_345),
            energy_mj: Some(123_456_789),
            util: Some(Utilization {
                gpu_percent: 97,
                memory_percent: 41,
            }),
            memory: Some(MemoryInfo {
                total: 81559 * 1024 * 1024,
                free: 1000 * 1024 * 1024,
                used: 80000 * 1024 * 1024,
                reserved: 559 * 1024 * 1024,
            }),
            link: Some(PcieLink {
                generation: 5,
                width: 16,
                max_generation: 5,
                max_width: 16,
            }),
            reasons: Some(0),
            thermal_violation_ns: Some(2_500_000),
            dbe_volatile: Ok(0),
            nvlinks: 3,
            profiling: Some(Profiling {
                gr_engine_active: Some(0.9),
                tensor_active: Some(0.55),
                ..Profiling::default()
            }),
        }
    }

    fn sample(device: &mut Scripted, config: &LabelConfig) -> (Snapshot, ReadErrors) {
        let labels = device_labels(&identity(), "node-7", Some("550.54.15"), config);
        let mut out = Snapshot::new(SystemTime::UNIX_EPOCH);
        let mut errors = ReadErrors::default();
        let mut xids = XidTracker::new(Duration::from_secs(300));
        let now = SystemTime::now();
        xids.record(
            &XidEvent {
                uuid: identity().uuid,
                xid: 79,
            },
            now,
        );
        xids.record(
            &XidEvent {
                uuid: identity().uuid,
                xid: 48,
            },
            now,
        );
        xids.record(
            &XidEvent {
                uuid: identity().uuid,
                xid: 48,
            },
            now,
        );
        sample_gpu(
            device,
            &labels,
            &identity().uuid,
            &mut xids,
            now,
            &mut out,
            &mut errors,
        );
        (out, errors)
    }

    #[test]
    fn maps_readings_to_dcgm_names_units_and_labels() {
        let (out, errors) = sample(&mut h100(), &LabelConfig::default());
        assert!(errors.by_field.is_empty());
        let text = out.render_prometheus();
        let labels = r#"gpu="3",UUID="GPU-11111111-2222-3333-4444-555555555555",pci_bus_id="00000000:18:00.0",device="nvidia3",modelName="NVIDIA H100 80GB HBM3",Hostname="node-7",DCGM_FI_DRIVER_VERSION="550.54.15""#;
        for line in [
            format!("DCGM_FI_DEV_SM_CLOCK{{{labels}}} 1980"),
            format!("DCGM_FI_DEV_POWER_USAGE{{{labels}}} 512.345"),
            format!("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} 123456789"),
            format!("DCGM_FI_DEV_GPU_UTIL{{{labels}}} 97"),
            format!("DCGM_FI_DEV_MEM_COPY_UTIL{{{labels}}} 41"),
            format!("DCGM_FI_DEV_FB_USED{{{labels}}} 80000"),
            format!("DCGM_FI_DEV_FB_RESERVED{{{labels}}} 559"),
            format!("DCGM_FI_DEV_THERMAL_VIOLATION{{{labels}}} 2500"),
            format!("DCGM_FI_DEV_XID_ERRORS{{{labels}}} 48"),
            format!("vigil_gpu_xid_errors_total{{{labels},xid=\"48\"}} 2"),
            format!("DCGM_EXP_XID_ERRORS_COUNT{{{labels},xid=\"79\",window=\"5m\"}} 1"),
            format!("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{{{labels}}} 7"),
            format!("vigil_gpu_nvlink_errors_total{{{labels},link=\"1\",counter=\"crc_flit\"}} 7"),
            format!("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{labels}}} 0.55"),
            format!("vigil_gpu_pcie_link_downtrained{{{labels}}} 0"),
            format!("vigil_gpu_up{{{labels}}} 1"),
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line}\n{text}"
            );
        }
        // Link 2 does not support error counters: no series for it, and no zero.
        assert!(!text.contains("link=\"2\""));
        // GPM reported only two ratios: the others are absent, not zero.
        assert!(out.value("DCGM_FI_PROF_SM_OCCUPANCY", &[]).is_none());
        assert!(out.value("DCGM_FI_DEV_ENC_UTIL", &[]).is_none());
    }

    #[test]
    fn unsupported_fields_are_omitted_and_sampling_goes_on() {
        let mut device = h100();
        device.memory_temp = None;
        device.power_mw = None;
        device.energy_mj = None;
        device.util = None;
        device.memory = None;
        device.link = None;
        device.reasons = None;
        device.nvlinks = 0;
        device.profiling = None;
        let (out, errors) = sample(&mut device, &LabelConfig::default());
        assert!(errors.by_field.is_empty());
        for name in [
            "DCGM_FI_DEV_MEMORY_TEMP",
            "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_PCIE_LINK_GEN",
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "vigil_gpu_clock_throttle_active",
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        ] {
            assert!(!out.families.contains_key(name), "{name} should be omitted");
        }
        // The fields after the unsupported ones still arrive.
        assert_eq!(out.value("DCGM_FI_DEV_GPU_TEMP", &[]), Some(61.0));
        assert_eq!(
            out.value("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", &[]),
            Some(2.0)
        );
        assert_eq!(out.value("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", &[]), Some(3.0));
    }

    #[test]
    fn other_failures_are_counted_per_field_and_a_lost_gpu_reports_down() {
        let mut device = h100();
        device.dbe_volatile = Err(ReadError::Other("Unknown Error".into()));
        let (out, errors) = sample(&mut device, &LabelConfig::default());
        assert_eq!(
            errors.by_field.get("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
            Some(&1)
        );
        assert!(out.value("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &[]).is_none());
        assert_eq!(out.value("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", &[]), Some(0.0));

        let mut lost = h100();
        lost.sm_clock = Err(ReadError::GpuLost);
        let (out, _) = sample(&mut lost, &LabelConfig::default());
        assert_eq!(out.value("vigil_gpu_up", &[]), Some(0.0));
        assert_eq!(
            out.value("vigil_gpu_xid_errors_total", &[("xid", "79")]),
            Some(1.0)
        );
        assert!(out.value("DCGM_FI_DEV_GPU_TEMP", &[]).is_none());
    }

    #[test]
    fn throttle_bits_become_named_reasons_and_hostname_labels_are_configurable() {
        let mut device = h100();
        device.reasons = Some(throttle::HW_SLOWDOWN | throttle::HW_THERMAL_SLOWDOWN);
        device.link = Some(PcieLink {
            generation: 3,
            width: 8,
            max_generation: 5,
            max_width: 16,
        });
        let config = LabelConfig {
            hostname_labels: vec!["Hostname".into(), "hostname".into()],
        };
        let (out, _) = sample(&mut device, &config);
        assert_eq!(
            out.value("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &[]),
            Some(72.0)
        );
        let active = |reason| out.value("vigil_gpu_clock_throttle_active", &[("reason", reason)]);
        assert_eq!(active("hw_slowdown"), Some(1.0));
        assert_eq!(active("hw_thermal_slowdown"), Some(1.0));
        assert_eq!(active("sw_power_cap"), Some(0.0));
        assert_eq!(
            out.value("vigil_gpu_pcie_link_downtrained", &[("hostname", "node-7")]),
            Some(1.0)
        );
        assert_eq!(
            out.value("DCGM_FI_DEV_PCIE_LINK_WIDTH", &[("Hostname", "node-7")]),
            Some(8.0)
        );
    }
}
