//! The seam between what a GPU reports and how vigil names it: one trait, [`GpuDevice`], with one
//! method per NVML query the exporter makes. The real NVML backend, the simulated fleet and the
//! scripted devices of the unit tests all implement it, so the mapping to dcgm-exporter's names in
//! [`crate::sample`] is the same code for all three.

/// Why one reading of one device did not produce a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The device or driver does not offer this reading: the metric is left out, not zeroed.
    #[error("not supported on this device")]
    NotSupported,
    /// The GPU stopped answering (NVML_ERROR_GPU_IS_LOST: fallen off the bus, XID 79).
    #[error("the GPU is lost (it no longer answers on the bus)")]
    GpuLost,
    /// Any other failure, with NVML's message.
    #[error("{0}")]
    Other(String),
}

/// The result of one reading.
pub type Read<T> = Result<T, ReadError>;

/// What identifies a GPU; becomes dcgm-exporter's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// NVML index on the node (`gpu` label).
    pub index: u32,
    /// `GPU-…` UUID (`UUID` label).
    pub uuid: String,
    /// `00000000:07:00.0` (`pci_bus_id` label).
    pub pci_bus_id: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3` (`modelName` label).
    pub name: String,
    /// Minor number of `/dev/nvidiaN` (`device` label is `nvidiaN`).
    pub minor_number: u32,
}

/// Which clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDomain {
    Sm,
    Memory,
}

/// Which temperature sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempSensor {
    Gpu,
    /// HBM; not wrapped by nvml-wrapper, read as NVML field value `NVML_FI_DEV_MEMORY_TEMP`.
    Memory,
}

/// GPU and memory-controller utilization in percent over NVML's sample period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utilization {
    pub gpu_percent: u32,
    pub memory_percent: u32,
}

/// Frame buffer, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    pub total: u64,
    pub free: u64,
    pub used: u64,
    pub reserved: u64,
}

/// Current and maximum PCIe link; current below maximum is a downtrained link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieLink {
    pub generation: u32,
    pub width: u32,
    pub max_generation: u32,
    pub max_width: u32,
}

/// Reasons NVML reports for a clock below its maximum (a bitmask, `nvmlClocksEventReasons`).
pub mod throttle {
    pub const GPU_IDLE: u64 = 0x1;
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SYNC_BOOST: u64 = 0x10;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;

    /// Every reason with the label value vigil gives it.
    pub const ALL: [(u64, &str); 9] = [
        (GPU_IDLE, "gpu_idle"),
        (APPLICATIONS_CLOCKS_SETTING, "applications_clocks_setting"),
        (SW_POWER_CAP, "sw_power_cap"),
        (HW_SLOWDOWN, "hw_slowdown"),
        (SYNC_BOOST, "sync_boost"),
        (SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
        (DISPLAY_CLOCK_SETTING, "display_clock_setting"),
    ];
}

/// The performance policies NVML keeps violation (throttled) time for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Power,
    Thermal,
    SyncBoost,
    BoardLimit,
    LowUtilization,
    Reliability,
}

impl Violation {
    pub const ALL: [Violation; 6] = [
        Violation::Power,
        Violation::Thermal,
        Violation::SyncBoost,
        Violation::BoardLimit,
        Violation::LowUtilization,
        Violation::Reliability,
    ];
}

/// Single-bit (corrected) or double-bit (uncorrected) ECC errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccKind {
    SingleBit,
    DoubleBit,
}

/// Since the last driver load (volatile) or over the GPU's life (aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCounter {
    Volatile,
    Aggregate,
}

/// Pages retired by the driver (pre-Ampere memory repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredPages {
    pub single_bit: u64,
    pub double_bit: u64,
    pub pending: bool,
}

/// HBM rows remapped (Ampere and later memory repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemappedRows {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failed: bool,
}

/// NVLink per-link error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvLinkCounter {
    CrcFlit,
    CrcData,
    Replay,
    Recovery,
}

impl NvLinkCounter {
    pub const ALL: [NvLinkCounter; 4] = [
        NvLinkCounter::CrcFlit,
        NvLinkCounter::CrcData,
        NvLinkCounter::Replay,
        NvLinkCounter::Recovery,
    ];

    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            NvLinkCounter::CrcFlit => "crc_flit",
            NvLinkCounter::CrcData => "crc_data",
            NvLinkCounter::Replay => "replay",
            NvLinkCounter::Recovery => "recovery",
        }
    }
}

/// GPU Performance Monitoring (Hopper and later): activity ratios in 0..=1, PCIe bytes per second.
/// A field is `None` when this GPU's GPM does not report it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Profiling {
    pub gr_engine_active: Option<f64>,
    pub sm_active: Option<f64>,
    pub sm_occupancy: Option<f64>,
    pub tensor_active: Option<f64>,
    pub dram_active: Option<f64>,
    pub fp64_active: Option<f64>,
    pub fp32_active: Option<f64>,
    pub fp16_active: Option<f64>,
    pub pcie_tx_bytes_per_second: Option<f64>,
    pub pcie_rx_bytes_per_second: Option<f64>,
}

/// One GPU, as the exporter reads it. Every method is one NVML query (or one group of field
/// values); an unsupported query returns [`ReadError::NotSupported`].
pub trait GpuDevice: Send {
    fn identity(&self) -> Read<DeviceIdentity>;
    fn clock_mhz(&self, domain: ClockDomain) -> Read<u32>;
    fn temperature_c(&self, sensor: TempSensor) -> Read<u32>;
    fn power_usage_mw(&self) -> Read<u32>;
    fn power_limit_mw(&self) -> Read<u32>;
    fn total_energy_mj(&self) -> Read<u64>;
    fn utilization(&self) -> Read<Utilization>;
    fn encoder_utilization(&self) -> Read<u32>;
    fn decoder_utilization(&self) -> Read<u32>;
    fn memory(&self) -> Read<MemoryInfo>;
    fn pcie_replay_counter(&self) -> Read<u64>;
    fn pcie_link(&self) -> Read<PcieLink>;
    /// Current clock-event (throttle) reasons, a bitmask of [`throttle`] constants.
    fn throttle_reasons(&self) -> Read<u64>;
    /// Cumulative time, in nanoseconds, that clocks were held down by this policy.
    fn violation_time_ns(&self, policy: Violation) -> Read<u64>;
    fn ecc_errors(&self, kind: EccKind, counter: EccCounter) -> Read<u64>;
    fn retired_pages(&self) -> Read<RetiredPages>;
    fn remapped_rows(&self) -> Read<RemappedRows>;
    /// How many NVLink links to ask about (0 on PCIe-only GPUs).
    fn nvlink_link_count(&self) -> u32;
    fn nvlink_error_count(&self, link: u32, counter: NvLinkCounter) -> Read<u64>;
    /// Cumulative NVLink traffic over all links, KiB (NVML field `NVLINK_THROUGHPUT_RAW_TX + RX`).
    fn nvlink_traffic_kib(&self) -> Read<u64>;
    /// GPM metrics over the interval since the previous call (the first call may return
    /// `NotSupported` while it takes its first sample).
    fn profiling(&mut self) -> Read<Profiling>;
    /// Ids of the processes with a compute context on this GPU: NCCL Inspector records name
    /// their process, not their GPU, and this ties the two.
    fn compute_pids(&self) -> Read<Vec<u32>>;
}

/// One XID error as an NVML event set delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    /// UUID of the GPU that raised it.
    pub uuid: String,
    /// The XID code (79: fallen off the bus, 48: double-bit ECC, 94/95: contained/uncontained ECC, …).
    pub xid: u64,
}
