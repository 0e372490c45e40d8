//! A simulated GPU fleet for demos, tests and detector evaluation. Each simulated GPU implements
//! [`GpuDevice`], so it goes through the same mapping as a real one and produces the same metrics.
//!
//! The physics is simple but causal: power follows utilization and clock, temperature lags power
//! (first order, τ = 20 s), clocks fall when power reaches the limit or temperature the slowdown
//! threshold (with the throttle reason and violation time a real GPU reports), and energy
//! integrates power. Load follows a diurnal curve. All GPUs are ranks of one data-parallel job
//! whose NCCL collectives are simulated as the Inspector plugin would record them.

pub mod faults;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

use crate::device::{
    ClockDomain, DeviceIdentity, EccCounter, EccKind, GpuDevice, MemoryInfo, NvLinkCounter,
    PcieLink, Profiling, Read, ReadError, RemappedRows, RetiredPages, TempSensor, Utilization,
    Violation, XidEvent, throttle,
};
use crate::nccl::inspector::{CollRecord, InspectorAggregator};
use crate::sample::{LabelConfig, ReadErrors, XidTracker, device_labels, sample_gpu};
use crate::snapshot::{Labels, Snapshot};
pub use faults::{FaultKind, FaultSpec, GroundTruth};

/// The physical constants of a GPU model.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuModel {
    /// As NVML names it (`modelName`).
    pub name: &'static str,
    pub max_sm_clock_mhz: f64,
    pub idle_sm_clock_mhz: f64,
    pub mem_clock_mhz: u32,
    pub tdp_w: f64,
    pub idle_w: f64,
    pub fb_mib: u64,
    pub pcie_generation: u32,
    pub nvlinks: u32,
    /// HW slowdown threshold.
    pub slowdown_temp_c: f64,
    /// Bus bandwidth of a large AllReduce within one node / across nodes.
    pub intra_node_busbw_gbs: f64,
    pub inter_node_busbw_gbs: f64,
    /// Whether GPM (DCGM_FI_PROF_*) is available (Hopper and later).
    pub gpm: bool,
}

pub const H100: GpuModel = GpuModel {
    name: "NVIDIA H100 80GB HBM3",
    max_sm_clock_mhz: 1980.0,
    idle_sm_clock_mhz: 345.0,
    mem_clock_mhz: 2619,
    tdp_w: 700.0,
    idle_w: 72.0,
    fb_mib: 81559,
    pcie_generation: 5,
    nvlinks: 18,
    slowdown_temp_c: 87.0,
    intra_node_busbw_gbs: 460.0,
    inter_node_busbw_gbs: 46.0,
    gpm: true,
};

pub const A100: GpuModel = GpuModel {
    name: "NVIDIA A100-SXM4-80GB",
    max_sm_clock_mhz: 1410.0,
    idle_sm_clock_mhz: 210.0,
    mem_clock_mhz: 1593,
    tdp_w: 400.0,
    idle_w: 55.0,
    fb_mib: 81920,
    pcie_generation: 4,
    nvlinks: 12,
    slowdown_temp_c: 85.0,
    intra_node_busbw_gbs: 230.0,
    inter_node_busbw_gbs: 23.0,
    gpm: false,
};

pub const L40S: GpuModel = GpuModel {
    name: "NVIDIA L40S",
    max_sm_clock_mhz: 2520.0,
    idle_sm_clock_mhz: 210.0,
    mem_clock_mhz: 9001,
    tdp_w: 350.0,
    idle_w: 35.0,
    fb_mib: 46068,
    pcie_generation: 4,
    nvlinks: 0,
    slowdown_temp_c: 88.0,
    intra_node_busbw_gbs: 22.0,
    inter_node_busbw_gbs: 11.0,
    gpm: false,
};

/// Look a model up by a short name (`h100`, `a100`, `l40s`).
pub fn model_by_name(name: &str) -> Result<GpuModel, String> {
    match name.to_ascii_lowercase().as_str() {
        "h100" => Ok(H100),
        "a100" => Ok(A100),
        "l40s" => Ok(L40S),
        other => Err(format!(
            "unknown GPU model {other:?}; the simulator knows h100, a100 and l40s"
        )),
    }
}

const AMBIENT_C: f64 = 30.0;
/// Temperature time constant.
const THERMAL_TAU_S: f64 = 20.0;
/// Power grows with roughly clock^2.4 at fixed utilization (voltage rises with frequency).
const POWER_CLOCK_EXPONENT: f64 = 2.4;
/// Message size of the simulated job's gradient AllReduce.
const ALLREDUCE_BYTES: u64 = 256 * 1024 * 1024;
/// AllReduces per second the simulated job runs.
const COLLECTIVES_PER_SECOND: f64 = 1.0;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub nodes: usize,
    pub gpus_per_node: usize,
    pub model: GpuModel,
    pub seed: u64,
    pub faults: Vec<FaultSpec>,
    pub driver_version: String,
    /// Simulated hostnames are `{prefix}{index:02}`.
    pub hostname_prefix: String,
    /// Simulate the data-parallel job's NCCL collectives.
    pub nccl: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            nodes: 2,
            gpus_per_node: 8,
            model: H100,
            seed: 1,
            faults: Vec::new(),
            driver_version: "550.54.15".to_string(),
            hostname_prefix: "sim-node-".to_string(),
            nccl: true,
        }
    }
}

/// The state of one simulated GPU.
#[derive(Debug)]
pub struct SimGpu {
    identity: DeviceIdentity,
    model: GpuModel,
    rng: StdRng,
    /// Per-GPU manufacturing spread: some run a little hotter or draw a little more.
    thermal_spread: f64,
    power_spread: f64,
    /// How much slower this GPU runs collectives while it is a straggler (1.10–1.20).
    straggler_factor: f64,
    /// The NVLink link whose CRC errors a `nvlink-crc` fault raises.
    faulty_link: u32,
    util: f64,
    sm_clock: f64,
    power_w: f64,
    power_limit_w: f64,
    temp_c: f64,
    /// Clock multiplier of thermal slowdown (1: none).
    thermal_factor: f64,
    energy_mj: f64,
    reasons: u64,
    violation_ns: [f64; 6],
    sbe: u64,
    dbe: u64,
    sbe_aggregate_base: u64,
    remapped_correctable: u64,
    remapped_uncorrectable: u64,
    remap_pending: bool,
    pcie_replays: u64,
    pcie_link: PcieLink,
    nvlink_errors: Vec<[u64; 4]>,
    nvlink_kib: f64,
    fb_used_mib: f64,
    lost: bool,
    active: HashSet<FaultKind>,
}

impl SimGpu {
    fn new(model: &GpuModel, node: usize, index: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(
            seed ^ ((node as u64) << 32 | index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let uuid = format!(
            "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            rng.r#gen::<u32>(),
            rng.r#gen::<u16>(),
            rng.r#gen::<u16>(),
            rng.r#gen::<u16>(),
            rng.r#gen::<u64>() & 0xffff_ffff_ffff
        );
        const BUSES: [u32; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];
        let bus = BUSES.get(index).copied().unwrap_or(0xe0 + index as u32);
        let thermal_spread = rng.gen_range(0.95..1.05);
        let power_spread = rng.gen_range(0.97..1.03);
        let straggler_factor = rng.gen_range(1.10..1.20);
        let faulty_link = if model.nvlinks > 0 {
            rng.gen_range(0..model.nvlinks)
        } else {
            0
        };
        SimGpu {
            identity: DeviceIdentity {
                index: index as u32,
                uuid,
                pci_bus_id: format!("00000000:{bus:02X}:00.0"),
                name: model.name.to_string(),
                minor_number: index as u32,
            },
            model: model.clone(),
            thermal_spread,
            power_spread,
            straggler_factor,
            faulty_link,
            util: 0.0,
            sm_clock: model.idle_sm_clock_mhz,
            power_w: model.idle_w,
            power_limit_w: model.tdp_w,
            temp_c: AMBIENT_C + 5.0,
            thermal_factor: 1.0,
            energy_mj: rng.gen_range(1.0e9..5.0e9),
            reasons: throttle::GPU_IDLE,
            violation_ns: [0.0; 6],
            sbe: 0,
            dbe: 0,
            sbe_aggregate_base: rng.gen_range(0..3),
            remapped_correctable: 0,
            remapped_uncorrectable: 0,
            remap_pending: false,
            pcie_replays: 0,
            pcie_link: PcieLink {
                generation: model.pcie_generation,
                width: 16,
                max_generation: model.pcie_generation,
                max_width: 16,
            },
            nvlink_errors: vec![[0; 4]; model.nvlinks as usize],
            nvlink_kib: rng.gen_range(1.0e9..2.0e9),
            fb_used_mib: model.fb_mib as f64 * 0.85,
            lost: false,
            rng,
            active: HashSet::new(),
        }
    }

    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        Poisson::new(mean)
            .map(|p| p.sample(&mut self.rng) as u64)
            .unwrap_or(0)
    }

    /// Advance `dt` seconds at target utilization `load` (0..=1); returns XID codes raised.
    fn step(&mut self, load: f64, dt: f64, started: &HashSet<FaultKind>) -> Vec<u64> {
        let mut xids = Vec::new();
        let active = self.active.clone();
        let has = |kind| active.contains(&kind);
        let model = self.model.clone();

        // XID 79 takes the GPU off the bus; the job on it stops.
        if started.contains(&FaultKind::Xid79) {
            xids.push(79);
        }
        self.lost = has(FaultKind::Xid79);
        if self.lost {
            return xids;
        }

        let noise = Normal::new(0.0, 0.02)
            .map(|n| n.sample(&mut self.rng))
            .unwrap_or(0.0);
        self.util = (load + noise).clamp(0.0, 1.0);

        // A power brake (a failing PSU, a site power cap): the limit drops to a quarter of TDP,
        // below what any real load draws.
        self.power_limit_w = if has(FaultKind::PowerCap) {
            (model.tdp_w * 0.25).max(model.idle_w + 40.0)
        } else {
            model.tdp_w
        };
        let mut reasons = 0u64;
        let mut clock_cap = model.max_sm_clock_mhz;
        if has(FaultKind::ClockDrop) {
            // Stuck in a lower performance state with no reason given: the silent kind.
            clock_cap *= 0.65;
        }
        // Thermal slowdown from the lagged temperature, with hysteresis as real parts have: clocks
        // step down while above the threshold and recover only once well below it.
        if self.temp_c > model.slowdown_temp_c {
            self.thermal_factor = (self.thermal_factor - 0.02 * dt).max(0.45);
        } else if self.temp_c < model.slowdown_temp_c - 3.0 {
            self.thermal_factor = (self.thermal_factor + 0.05 * dt).min(1.0);
        }
        if self.thermal_factor < 1.0 {
            clock_cap *= self.thermal_factor;
            reasons |= throttle::HW_SLOWDOWN
                | throttle::HW_THERMAL_SLOWDOWN
                | throttle::SW_THERMAL_SLOWDOWN;
            self.violation_ns[1] += dt * 1e9;
        }
        let dynamic_w = (model.tdp_w * 0.95 - model.idle_w) * self.power_spread;
        let demand = |clock: f64, util: f64| {
            model.idle_w
                + dynamic_w * util * (clock / model.max_sm_clock_mhz).powf(POWER_CLOCK_EXPONENT)
        };
        let mut clock = if self.util < 0.02 {
            model.idle_sm_clock_mhz
        } else {
            clock_cap
        };
        if self.util < 0.02 {
            reasons |= throttle::GPU_IDLE;
        }
        if demand(clock, self.util) > self.power_limit_w {
            let ratio = ((self.power_limit_w - model.idle_w) / (dynamic_w * self.util)).max(0.0);
            clock = model.max_sm_clock_mhz * ratio.powf(1.0 / POWER_CLOCK_EXPONENT);
            reasons |= throttle::SW_POWER_CAP;
            self.violation_ns[0] += dt * 1e9;
        }
        // Clocks move in 15 MHz steps on real parts.
        self.sm_clock = ((clock / 15.0).round() * 15.0).max(model.idle_sm_clock_mhz);
        let power_noise = Normal::new(0.0, 3.0)
            .map(|n| n.sample(&mut self.rng))
            .unwrap_or(0.0);
        self.power_w = (demand(self.sm_clock, self.util) + power_noise)
            .clamp(model.idle_w * 0.9, self.power_limit_w);
        self.reasons = reasons;

        // A cooling fault (failed fans, blocked airflow) raises the inlet temperature and the
        // thermal resistance: enough to throttle at any load.
        let mut resistance = (75.0 - AMBIENT_C) / model.tdp_w * self.thermal_spread;
        let mut inlet = AMBIENT_C;
        if has(FaultKind::ThermalThrottle) {
            resistance *= 1.5;
            inlet += 40.0;
        }
        let target = inlet + resistance * self.power_w;
        self.temp_c += (target - self.temp_c) * (1.0 - (-dt / THERMAL_TAU_S).exp());
        self.energy_mj += self.power_w * dt * 1000.0;
        self.nvlink_kib += self.util * 40.0e6 * dt * f64::from(model.nvlinks.min(1));
        let fb_noise = Normal::new(0.0, 40.0)
            .map(|n| n.sample(&mut self.rng))
            .unwrap_or(0.0);
        self.fb_used_mib = (model.fb_mib as f64 * (0.80 + 0.1 * self.util) + fb_noise)
            .clamp(0.0, model.fb_mib as f64 - 600.0);

        // Memory errors: a trickle normally, a storm under the fault.
        let sbe_rate = if has(FaultKind::EccStorm) {
            40.0
        } else {
            2.0e-6
        };
        let new_sbe = self.poisson(sbe_rate * dt);
        self.sbe += new_sbe;
        if has(FaultKind::EccStorm) {
            self.remapped_correctable += self.poisson(0.05 * dt);
            if self.poisson(0.02 * dt) > 0 {
                self.dbe += 1;
                self.remapped_uncorrectable += 1;
                self.remap_pending = true;
                xids.push(48);
            }
        }
        if started.contains(&FaultKind::Xid48) {
            self.dbe += 1;
            xids.push(48);
        }
        if started.contains(&FaultKind::Xid94) {
            self.dbe += 1;
            self.remapped_uncorrectable += 1;
            self.remap_pending = true;
            xids.push(94);
        }
        if has(FaultKind::Xid31)
            && (started.contains(&FaultKind::Xid31) || self.poisson(dt / 20.0) > 0)
        {
            xids.push(31);
        }

        if has(FaultKind::PcieDowntrain) {
            self.pcie_link.generation = 3.min(model.pcie_generation);
            self.pcie_link.width = 8;
            self.pcie_replays += self.poisson(0.5 * dt);
        } else {
            self.pcie_link.generation = model.pcie_generation;
            self.pcie_link.width = 16;
        }
        if has(FaultKind::NvlinkCrc) && model.nvlinks > 0 {
            let flit = self.poisson(20.0 * dt);
            let data = self.poisson(5.0 * dt);
            let replay = self.poisson(2.0 * dt);
            let recovery = self.poisson(0.01 * dt);
            let link = &mut self.nvlink_errors[self.faulty_link as usize];
            link[0] += flit;
            link[1] += data;
            link[2] += replay;
            link[3] += recovery;
        }
        xids
    }

    /// How much longer this GPU's collectives take than a healthy GPU's.
    fn collective_slowdown(&self, inter_node: bool) -> f64 {
        let mut factor = 1.0;
        if self.active.contains(&FaultKind::Straggler) {
            factor *= self.straggler_factor;
        }
        if self.active.contains(&FaultKind::NvlinkCrc) {
            factor *= 1.04;
        }
        if self.active.contains(&FaultKind::PcieDowntrain) && inter_node {
            // GPU-to-NIC traffic crosses the narrowed link.
            factor *= 1.6;
        }
        factor
    }
}

impl GpuDevice for SimGpu {
    fn compute_pids(&self) -> Read<Vec<u32>> {
        // The simulated job's records carry their GPU already.
        Ok(Vec::new())
    }
    fn identity(&self) -> Read<DeviceIdentity> {
        Ok(self.identity.clone())
    }
    fn clock_mhz(&self, domain: ClockDomain) -> Read<u32> {
        if self.lost {
            return Err(ReadError::GpuLost);
        }
        Ok(match domain {
            ClockDomain::Sm => self.sm_clock as u32,
            ClockDomain::Memory => self.model.mem_clock_mhz,
        })
    }
    fn temperature_c(&self, sensor: TempSensor) -> Read<u32> {
        Ok(match sensor {
            TempSensor::Gpu => self.temp_c.round() as u32,
            TempSensor::Memory => (self.temp_c + 6.0 + 4.0 * self.util).round() as u32,
        })
    }
    fn power_usage_mw(&self) -> Read<u32> {
        Ok((self.power_w * 1000.0) as u32)
    }
    fn power_limit_mw(&self) -> Read<u32> {
        Ok((self.power_limit_w * 1000.0) as u32)
    }
    fn total_energy_mj(&self) -> Read<u64> {
        Ok(self.energy_mj as u64)
    }
    fn utilization(&self) -> Read<Utilization> {
        Ok(Utilization {
            gpu_percent: (self.util * 100.0).round() as u32,
            memory_percent: (self.util * 45.0).round() as u32,
        })
    }
    fn encoder_utilization(&self) -> Read<u32> {
        Ok(0)
    }
    fn decoder_utilization(&self) -> Read<u32> {
        Ok(0)
    }
    fn memory(&self) -> Read<MemoryInfo> {
        const MIB: u64 = 1024 * 1024;
        let total = self.model.fb_mib * MIB;
        let reserved = 519 * MIB;
        let used = (self.fb_used_mib as u64) * MIB;
        Ok(MemoryInfo {
            total,
            free: total - reserved - used,
            used,
            reserved,
        })
    }
    fn pcie_replay_counter(&self) -> Read<u64> {
        Ok(self.pcie_replays)
    }
    fn pcie_link(&self) -> Read<PcieLink> {
        Ok(self.pcie_link)
    }
    fn throttle_reasons(&self) -> Read<u64> {
        Ok(self.reasons)
    }
    fn violation_time_ns(&self, policy: Violation) -> Read<u64> {
        let slot = Violation::ALL
            .iter()
            .position(|p| *p == policy)
            .unwrap_or(0);
        Ok(self.violation_ns[slot] as u64)
    }
    fn ecc_errors(&self, kind: EccKind, counter: EccCounter) -> Read<u64> {
        let base = if counter == EccCounter::Aggregate {
            self.sbe_aggregate_base
        } else {
            0
        };
        Ok(match kind {
            EccKind::SingleBit => self.sbe + base,
            EccKind::DoubleBit => self.dbe,
        })
    }
    fn retired_pages(&self) -> Read<RetiredPages> {
        // Ampere and later repair HBM by remapping rows, not by retiring pages.
        Err(ReadError::NotSupported)
    }
    fn remapped_rows(&self) -> Read<RemappedRows> {
        Ok(RemappedRows {
            correctable: self.remapped_correctable,
            uncorrectable: self.remapped_uncorrectable,
            pending: self.remap_pending,
            failed: false,
        })
    }
    fn nvlink_link_count(&self) -> u32 {
        self.model.nvlinks
    }
    fn nvlink_error_count(&self, link: u32, counter: NvLinkCounter) -> Read<u64> {
        let slot = NvLinkCounter::ALL
            .iter()
            .position(|c| *c == counter)
            .unwrap_or(0);
        self.nvlink_errors
            .get(link as usize)
            .map(|counts| counts[slot])
            .ok_or(ReadError::NotSupported)
    }
    fn nvlink_traffic_kib(&self) -> Read<u64> {
        if self.model.nvlinks == 0 {
            return Err(ReadError::NotSupported);
        }
        Ok(self.nvlink_kib as u64)
    }
    fn profiling(&mut self) -> Read<Profiling> {
        if !self.model.gpm {
            return Err(ReadError::NotSupported);
        }
        let clock = self.sm_clock / self.model.max_sm_clock_mhz;
        let u = self.util;
        let link_bytes =
            f64::from(self.pcie_link.generation.min(5)) * 4.0e9 * f64::from(self.pcie_link.width)
                / 16.0;
        Ok(Profiling {
            gr_engine_active: Some(u * 0.97),
            sm_active: Some(u * 0.88),
            sm_occupancy: Some(u * 0.42),
            tensor_active: Some(u * 0.55 * clock),
            dram_active: Some(u * 0.61),
            fp64_active: Some(u * 0.01),
            fp32_active: Some(u * 0.18),
            fp16_active: Some(u * 0.09),
            pcie_tx_bytes_per_second: Some((u * 3.0e9).min(link_bytes)),
            pcie_rx_bytes_per_second: Some((u * 5.0e9).min(link_bytes)),
        })
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub hostname: String,
    pub gpus: Vec<SimGpu>,
    labels: Vec<Labels>,
}

/// The whole simulated fleet.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    pub nodes: Vec<SimNode>,
    started_at: Option<SystemTime>,
    elapsed: Duration,
    rng: StdRng,
    xids: XidTracker,
    errors: ReadErrors,
    pub nccl: InspectorAggregator,
    comm_id: String,
    coll_sn: u64,
    /// Fractional collectives carried between steps.
    collective_debt: f64,
    labels_for: Option<LabelConfig>,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Self {
        let nodes = (0..config.nodes)
            .map(|node| SimNode {
                hostname: format!("{}{node:02}", config.hostname_prefix),
                gpus: (0..config.gpus_per_node)
                    .map(|gpu| SimGpu::new(&config.model, node, gpu, config.seed))
                    .collect(),
                labels: Vec::new(),
            })
            .collect();
        let rng = StdRng::seed_from_u64(config.seed.wrapping_add(0x5EED));
        Fleet {
            comm_id: format!(
                "0x{:014x}",
                config.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) & 0xff_ffff_ffff_ffff
            ),
            config,
            nodes,
            started_at: None,
            elapsed: Duration::ZERO,
            rng,
            xids: XidTracker::new(Duration::from_secs(300)),
            errors: ReadErrors::default(),
            nccl: InspectorAggregator::default(),
            coll_sn: 0,
            collective_debt: 0.0,
            labels_for: None,
        }
    }

    /// Check that every fault names a node and GPU that exist.
    pub fn validate(&self) -> Result<(), String> {
        for fault in &self.config.faults {
            if fault.node >= self.config.nodes {
                return Err(format!(
                    "fault {} names node {}, but the fleet has {} nodes (0..{})",
                    fault.kind,
                    fault.node,
                    self.config.nodes,
                    self.config.nodes - 1
                ));
            }
            if let Some(gpu) = fault.gpu
                && gpu >= self.config.gpus_per_node
            {
                return Err(format!(
                    "fault {} names GPU {gpu}, but nodes have {} GPUs",
                    fault.kind, self.config.gpus_per_node
                ));
            }
        }
        Ok(())
    }

    /// The ground truth of the schedule, in wall-clock times from the start of the simulation.
    pub fn ground_truth(&self, start: SystemTime) -> Vec<GroundTruth> {
        self.config
            .faults
            .iter()
            .filter(|fault| fault.node < self.nodes.len())
            .map(|fault| {
                let node = &self.nodes[fault.node];
                GroundTruth {
                    fault: fault.kind,
                    host: node.hostname.clone(),
                    gpu: fault
                        .gpu
                        .and_then(|g| node.gpus.get(g))
                        .map(|gpu| (gpu.identity.index as usize, gpu.identity.uuid.clone())),
                    start: start + fault.start,
                    end: fault.duration.map(|d| start + fault.start + d),
                }
            })
            .collect()
    }

    /// The fleet-wide load at `now`: a diurnal curve peaking mid-afternoon UTC.
    fn diurnal_load(now: SystemTime) -> f64 {
        let seconds = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let hour = (seconds / 3600.0) % 24.0;
        let phase = (hour - 9.0) / 24.0 * std::f64::consts::TAU;
        0.6 + 0.3 * phase.sin()
    }

    /// Advance the simulation to `now` by `dt`.
    pub fn advance(&mut self, now: SystemTime, dt: Duration) {
        let start = *self.started_at.get_or_insert(now - dt);
        let before = self.elapsed;
        self.elapsed = now.duration_since(start).unwrap_or_default();
        let dt_s = dt.as_secs_f64();
        let load = Self::diurnal_load(now);
        for (node_index, node) in self.nodes.iter_mut().enumerate() {
            for (gpu_index, gpu) in node.gpus.iter_mut().enumerate() {
                let mut started = HashSet::new();
                gpu.active.clear();
                for fault in &self.config.faults {
                    let here = fault.node == node_index && fault.gpu.is_none_or(|g| g == gpu_index);
                    if !here {
                        continue;
                    }
                    if fault.active_at(self.elapsed) {
                        gpu.active.insert(fault.kind);
                        if !fault.active_at(before) || before.is_zero() && fault.start.is_zero() {
                            started.insert(fault.kind);
                        }
                    }
                }
                let gpu_noise: f64 = self.rng.gen_range(-0.01..0.01);
                for xid in gpu.step(load + gpu_noise, dt_s, &started) {
                    self.xids.record(
                        &XidEvent {
                            uuid: gpu.identity.uuid.clone(),
                            xid,
                        },
                        now,
                    );
                }
            }
        }
        if self.config.nccl {
            self.simulate_collectives(dt_s);
        }
    }

    fn simulate_collectives(&mut self, dt_s: f64) {
        self.collective_debt += dt_s * COLLECTIVES_PER_SECOND;
        let count = self.collective_debt.floor() as u64;
        self.collective_debt -= count as f64;
        let ranks: u32 = (self.nodes.len() * self.config.gpus_per_node) as u32;
        if ranks < 2 {
            return;
        }
        let inter_node = self.nodes.len() > 1;
        let model = &self.config.model;
        let busbw = if inter_node {
            model.inter_node_busbw_gbs
        } else {
            model.intra_node_busbw_gbs
        };
        let bus_factor = 2.0 * f64::from(ranks - 1) / f64::from(ranks);
        let base_algbw = busbw / bus_factor;
        let base_time_us = ALLREDUCE_BYTES as f64 / (base_algbw * 1e9) * 1e6;
        let jitter = LogNormal::new(0.0, 0.03).ok();
        for _ in 0..count {
            self.coll_sn += 1;
            let mut rank = 0u32;
            for (node_index, node) in self.nodes.iter().enumerate() {
                let sag = self.config.faults.iter().any(|f| {
                    f.kind == FaultKind::NcclBusbwSag
                        && f.node == node_index
                        && f.active_at(self.elapsed)
                });
                for gpu in &node.gpus {
                    let this_rank = rank;
                    rank += 1;
                    if gpu.lost {
                        continue;
                    }
                    let mut factor = gpu.collective_slowdown(inter_node);
                    if sag {
                        factor /= 0.7;
                    }
                    let noise = jitter.map(|j| j.sample(&mut self.rng)).unwrap_or(1.0);
                    let exec_time_us = base_time_us * factor * noise;
                    let algobw = ALLREDUCE_BYTES as f64 / (exec_time_us * 1e-6) / 1e9;
                    self.nccl.observe(&CollRecord {
                        comm_id: self.comm_id.clone(),
                        rank: this_rank,
                        n_ranks: ranks,
                        hostname: node.hostname.clone(),
                        coll: "AllReduce".to_string(),
                        coll_sn: self.coll_sn,
                        msg_size_bytes: ALLREDUCE_BYTES,
                        exec_time_us,
                        algobw_gbs: algobw,
                        busbw_gbs: algobw * bus_factor,
                        pid: None,
                        gpu: Some((gpu.identity.index, gpu.identity.uuid.clone())),
                    });
                }
            }
        }
    }

    /// Sample every GPU (through [`GpuDevice`], as for real hardware) and the NCCL job into `out`.
    pub fn sample_into(&mut self, config: &LabelConfig, now: SystemTime, out: &mut Snapshot) {
        let relabel = self
            .labels_for
            .as_ref()
            .is_none_or(|c| c.hostname_labels != config.hostname_labels);
        if relabel {
            for node in &mut self.nodes {
                node.labels = node
                    .gpus
                    .iter()
                    .map(|gpu| {
                        device_labels(
                            &gpu.identity,
                            &node.hostname,
                            Some(&self.config.driver_version),
                            config,
                        )
                    })
                    .collect();
            }
            self.labels_for = Some(config.clone());
        }
        for node in &mut self.nodes {
            for (gpu, labels) in node.gpus.iter_mut().zip(&node.labels) {
                let uuid = gpu.identity.uuid.clone();
                sample_gpu(
                    gpu,
                    labels,
                    &uuid,
                    &mut self.xids,
                    now,
                    out,
                    &mut self.errors,
                );
            }
        }
        self.nccl.emit(&config.hostname_labels, out);
    }
}

#[cfg(test)]
mod signatures;
