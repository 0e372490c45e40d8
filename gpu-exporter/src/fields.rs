//! Every metric the exporter emits, defined once: name, type, unit, help. GPU fields use
//! dcgm-exporter's names (`DCGM_FI_*`) so its Grafana dashboard works unchanged; what dcgm-exporter
//! has no name for is `vigil_*`.

/// How a metric behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// Monotonic, cumulative since the device (or the exporter) started.
    Counter,
    /// Cumulative bucket counts, sum and count.
    Histogram,
}

/// One metric's definition.
#[derive(Debug, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    /// UCUM-style unit for OTLP (`MHz`, `Cel`, `W`, `mJ`, `MiB`, `us`, `%`, `1`, `By/s`, `GBy/s`).
    pub unit: &'static str,
    pub help: &'static str,
}

const fn gauge(name: &'static str, unit: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind: MetricKind::Gauge,
        unit,
        help,
    }
}

const fn counter(name: &'static str, unit: &'static str, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind: MetricKind::Counter,
        unit,
        help,
    }
}

// dcgm-exporter's default set.
pub const SM_CLOCK: MetricDef = gauge(
    "DCGM_FI_DEV_SM_CLOCK",
    "MHz",
    "SM clock frequency (in MHz).",
);
pub const MEM_CLOCK: MetricDef = gauge(
    "DCGM_FI_DEV_MEM_CLOCK",
    "MHz",
    "Memory clock frequency (in MHz).",
);
pub const GPU_TEMP: MetricDef = gauge("DCGM_FI_DEV_GPU_TEMP", "Cel", "GPU temperature (in C).");
pub const MEMORY_TEMP: MetricDef = gauge(
    "DCGM_FI_DEV_MEMORY_TEMP",
    "Cel",
    "Memory temperature (in C).",
);
pub const POWER_USAGE: MetricDef = gauge("DCGM_FI_DEV_POWER_USAGE", "W", "Power draw (in W).");
pub const TOTAL_ENERGY: MetricDef = counter(
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "mJ",
    "Total energy consumption since boot (in mJ).",
);
pub const PCIE_REPLAY: MetricDef = counter(
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "1",
    "Total number of PCIe retries.",
);
pub const GPU_UTIL: MetricDef = gauge("DCGM_FI_DEV_GPU_UTIL", "%", "GPU utilization (in %).");
pub const MEM_COPY_UTIL: MetricDef = gauge(
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "%",
    "Memory utilization (in %).",
);
pub const ENC_UTIL: MetricDef = gauge("DCGM_FI_DEV_ENC_UTIL", "%", "Encoder utilization (in %).");
pub const DEC_UTIL: MetricDef = gauge("DCGM_FI_DEV_DEC_UTIL", "%", "Decoder utilization (in %).");
pub const XID_ERRORS: MetricDef = gauge(
    "DCGM_FI_DEV_XID_ERRORS",
    "1",
    "Value of the last XID error encountered.",
);
pub const FB_FREE: MetricDef = gauge(
    "DCGM_FI_DEV_FB_FREE",
    "MiB",
    "Frame buffer memory free (in MB).",
);
pub const FB_USED: MetricDef = gauge(
    "DCGM_FI_DEV_FB_USED",
    "MiB",
    "Frame buffer memory used (in MB).",
);
pub const FB_RESERVED: MetricDef = gauge(
    "DCGM_FI_DEV_FB_RESERVED",
    "MiB",
    "Frame buffer memory reserved (in MB).",
);
pub const FB_TOTAL: MetricDef = gauge(
    "DCGM_FI_DEV_FB_TOTAL",
    "MiB",
    "Frame buffer memory total (in MB).",
);
pub const NVLINK_BANDWIDTH_TOTAL: MetricDef = counter(
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "KiBy",
    "Total NVLink traffic over all links (in KiB).",
);
pub const UNCORRECTABLE_REMAPPED_ROWS: MetricDef = counter(
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "1",
    "Number of remapped rows for uncorrectable errors",
);
pub const CORRECTABLE_REMAPPED_ROWS: MetricDef = counter(
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "1",
    "Number of remapped rows for correctable errors",
);
pub const ROW_REMAP_FAILURE: MetricDef = gauge(
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "1",
    "Whether remapping of rows has failed",
);
pub const ROW_REMAP_PENDING: MetricDef = gauge(
    "DCGM_FI_DEV_ROW_REMAP_PENDING",
    "1",
    "Whether remapping of rows is pending a GPU reset",
);

// Profiling (GPM, Hopper and later).
pub const PROF_GR_ENGINE_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "1",
    "Ratio of time the graphics engine is active.",
);
pub const PROF_SM_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_SM_ACTIVE",
    "1",
    "The ratio of cycles an SM has at least 1 warp assigned.",
);
pub const PROF_SM_OCCUPANCY: MetricDef = gauge(
    "DCGM_FI_PROF_SM_OCCUPANCY",
    "1",
    "The ratio of number of warps resident on an SM.",
);
pub const PROF_PIPE_TENSOR_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "1",
    "Ratio of cycles the tensor (HMMA) pipe is active.",
);
pub const PROF_DRAM_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "1",
    "Ratio of cycles the device memory interface is active sending or receiving data.",
);
pub const PROF_PIPE_FP64_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
    "1",
    "Ratio of cycles the fp64 pipes are active.",
);
pub const PROF_PIPE_FP32_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
    "1",
    "Ratio of cycles the fp32 pipes are active.",
);
pub const PROF_PIPE_FP16_ACTIVE: MetricDef = gauge(
    "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
    "1",
    "Ratio of cycles the fp16 pipes are active.",
);
// DCGM reports these as bytes per second over the sample period; dcgm-exporter calls them
// counters, which makes rate() on them meaningless, so they are gauges here.
pub const PROF_PCIE_TX_BYTES: MetricDef = gauge(
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "By/s",
    "PCIe transmit throughput, header and payload (bytes per second).",
);
pub const PROF_PCIE_RX_BYTES: MetricDef = gauge(
    "DCGM_FI_PROF_PCIE_RX_BYTES",
    "By/s",
    "PCIe receive throughput, header and payload (bytes per second).",
);

// Gray-failure signals dcgm-exporter ships commented out; on by default here.
pub const CLOCK_THROTTLE_REASONS: MetricDef = gauge(
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
    "1",
    "Current clock throttle (clock event) reasons, NVML bitmask.",
);
pub const THROTTLE_ACTIVE: MetricDef = gauge(
    "vigil_gpu_clock_throttle_active",
    "1",
    "1 while the clock throttle reason in the reason label is active, else 0.",
);
pub const POWER_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_POWER_VIOLATION",
    "us",
    "Throttling duration due to power constraints (in us).",
);
pub const THERMAL_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "us",
    "Throttling duration due to thermal constraints (in us).",
);
pub const SYNC_BOOST_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
    "us",
    "Throttling duration due to sync-boost constraints (in us).",
);
pub const BOARD_LIMIT_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION",
    "us",
    "Throttling duration due to board limit constraints (in us).",
);
pub const LOW_UTIL_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_LOW_UTIL_VIOLATION",
    "us",
    "Throttling duration due to low utilization (in us).",
);
pub const RELIABILITY_VIOLATION: MetricDef = counter(
    "DCGM_FI_DEV_RELIABILITY_VIOLATION",
    "us",
    "Throttling duration due to reliability constraints (in us).",
);
pub const POWER_LIMIT: MetricDef = gauge(
    "DCGM_FI_DEV_POWER_MGMT_LIMIT",
    "W",
    "Current power management limit (in W).",
);
pub const ECC_SBE_VOL: MetricDef = counter(
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "1",
    "Total number of single-bit volatile ECC errors.",
);
pub const ECC_DBE_VOL: MetricDef = counter(
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "1",
    "Total number of double-bit volatile ECC errors.",
);
pub const ECC_SBE_AGG: MetricDef = counter(
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "1",
    "Total number of single-bit persistent ECC errors.",
);
pub const ECC_DBE_AGG: MetricDef = counter(
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "1",
    "Total number of double-bit persistent ECC errors.",
);
pub const RETIRED_SBE: MetricDef = counter(
    "DCGM_FI_DEV_RETIRED_SBE",
    "1",
    "Total number of retired pages due to single-bit errors.",
);
pub const RETIRED_DBE: MetricDef = counter(
    "DCGM_FI_DEV_RETIRED_DBE",
    "1",
    "Total number of retired pages due to double-bit errors.",
);
pub const RETIRED_PENDING: MetricDef = gauge(
    "DCGM_FI_DEV_RETIRED_PENDING",
    "1",
    "Whether pages are pending retirement.",
);
pub const NVLINK_CRC_FLIT_TOTAL: MetricDef = counter(
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "1",
    "Total number of NVLink flow-control CRC errors.",
);
pub const NVLINK_CRC_DATA_TOTAL: MetricDef = counter(
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
    "1",
    "Total number of NVLink data CRC errors.",
);
pub const NVLINK_REPLAY_TOTAL: MetricDef = counter(
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "1",
    "Total number of NVLink retries.",
);
pub const NVLINK_RECOVERY_TOTAL: MetricDef = counter(
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
    "1",
    "Total number of NVLink recovery errors.",
);
pub const NVLINK_LINK_ERRORS: MetricDef = counter(
    "vigil_gpu_nvlink_errors_total",
    "1",
    "NVLink errors per link and counter (crc_flit, crc_data, replay, recovery); only links with errors.",
);
pub const PCIE_LINK_GEN: MetricDef = gauge(
    "DCGM_FI_DEV_PCIE_LINK_GEN",
    "1",
    "Current PCIe link generation.",
);
pub const PCIE_LINK_WIDTH: MetricDef = gauge(
    "DCGM_FI_DEV_PCIE_LINK_WIDTH",
    "1",
    "Current PCIe link width (lanes).",
);
pub const PCIE_MAX_LINK_GEN: MetricDef = gauge(
    "DCGM_FI_DEV_PCIE_MAX_LINK_GEN",
    "1",
    "Maximum PCIe link generation of the GPU and system.",
);
pub const PCIE_MAX_LINK_WIDTH: MetricDef = gauge(
    "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH",
    "1",
    "Maximum PCIe link width (lanes).",
);
pub const PCIE_DOWNTRAINED: MetricDef = gauge(
    "vigil_gpu_pcie_link_downtrained",
    "1",
    "1 when the PCIe link runs below its maximum generation or width, else 0.",
);
pub const XID_TOTAL: MetricDef = counter(
    "vigil_gpu_xid_errors_total",
    "1",
    "XID errors since the exporter started, per XID code (from an NVML event set, not polled).",
);
pub const XID_WINDOW: MetricDef = gauge(
    "DCGM_EXP_XID_ERRORS_COUNT",
    "1",
    "Count of XID errors within the window in the window label, per XID code.",
);
pub const GPU_UP: MetricDef = gauge(
    "vigil_gpu_up",
    "1",
    "1 while the GPU answers NVML queries, 0 once it is lost (e.g. after XID 79).",
);

// NCCL.
pub const NCCL_EXEC_TIME: MetricDef = MetricDef {
    name: "vigil_nccl_coll_exec_time_seconds",
    kind: MetricKind::Histogram,
    unit: "s",
    help: "NCCL collective execution time (NCCL Inspector), per operation, message-size bucket, communicator and rank.",
};
pub const NCCL_BUSBW: MetricDef = gauge(
    "vigil_nccl_coll_busbw_gbs",
    "GBy/s",
    "Mean NCCL bus bandwidth of the collectives seen in the last sampling interval.",
);
pub const NCCL_ALGOBW: MetricDef = gauge(
    "vigil_nccl_coll_algobw_gbs",
    "GBy/s",
    "Mean NCCL algorithm bandwidth of the collectives seen in the last sampling interval.",
);
pub const NCCL_COLLECTIVES: MetricDef = counter(
    "vigil_nccl_collectives_total",
    "1",
    "NCCL collectives recorded by the Inspector.",
);
pub const NCCL_STRAGGLER: MetricDef = gauge(
    "vigil_nccl_straggler_score",
    "1",
    "How much longer this rank's collectives run than its peers' for the same sequence numbers (median ratio - 1).",
);
pub const NCCL_PROBE_BUSBW: MetricDef = gauge(
    "vigil_nccl_probe_busbw_gbs",
    "GBy/s",
    "Bus bandwidth measured by an nccl-tests run, per operation and message size (out-of-place).",
);
pub const NCCL_PROBE_TIME: MetricDef = gauge(
    "vigil_nccl_probe_time_seconds",
    "s",
    "Time measured by an nccl-tests run, per operation and message size (out-of-place).",
);
pub const NCCL_WARNINGS: MetricDef = counter(
    "vigil_nccl_warnings_total",
    "1",
    "NCCL WARN lines seen in NCCL_DEBUG logs, by kind.",
);
pub const NCCL_PARSE_ERRORS: MetricDef = counter(
    "vigil_nccl_parse_errors_total",
    "1",
    "Lines of NCCL Inspector, nccl-tests or NCCL log input that could not be parsed, by source.",
);

// The exporter itself.
pub const READ_ERRORS: MetricDef = counter(
    "vigil_gpu_exporter_read_errors_total",
    "1",
    "NVML readings that failed for a reason other than 'not supported', per field.",
);
pub const ROUNDS: MetricDef = counter(
    "vigil_gpu_exporter_rounds_total",
    "1",
    "Sampling rounds completed since the exporter started.",
);
pub const ROUND_SECONDS: MetricDef = gauge(
    "vigil_gpu_exporter_round_seconds",
    "s",
    "How long the last sampling round took (every GPU, NCCL sources and rendering).",
);
