//! Each injected fault must show in the metrics the way it does on real hardware, and nowhere else.

use std::time::{Duration, SystemTime};

use super::*;
use crate::snapshot::Value;

/// 2026-01-15 14:00 UTC: afternoon load.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_485_600)
}

const STEP: Duration = Duration::from_secs(5);
const FAULT_START: Duration = Duration::from_secs(600);

/// Run a 2x4 fleet for `minutes` with `faults` and return the last snapshot and the one just
/// before the fault starts.
fn run(faults: Vec<FaultSpec>, minutes: u64) -> (Snapshot, Snapshot) {
    run_from(t0(), faults, minutes)
}

fn run_from(start: SystemTime, faults: Vec<FaultSpec>, minutes: u64) -> (Snapshot, Snapshot) {
    let mut fleet = Fleet::new(FleetConfig {
        nodes: 2,
        gpus_per_node: 4,
        faults,
        seed: 7,
        ..FleetConfig::default()
    });
    let config = LabelConfig::default();
    let mut before = Snapshot::default();
    let mut last = Snapshot::default();
    let steps = minutes * 60 / STEP.as_secs();
    for step in 1..=steps {
        let now = start + STEP * step as u32;
        fleet.advance(now, STEP);
        let mut out = Snapshot::new(now);
        fleet.sample_into(&config, now, &mut out);
        if STEP * step as u32 == FAULT_START - STEP {
            before = out.clone();
        }
        last = out;
    }
    (last, before)
}

fn gpu_fault(kind: FaultKind) -> Vec<FaultSpec> {
    vec![FaultSpec {
        kind,
        node: 0,
        gpu: Some(1),
        start: FAULT_START,
        duration: None,
    }]
}

const SICK: [(&str, &str); 2] = [("Hostname", "sim-node-00"), ("gpu", "1")];
const PEER: [(&str, &str); 2] = [("Hostname", "sim-node-00"), ("gpu", "2")];

fn value(snapshot: &Snapshot, name: &str, gpu: &[(&str, &str)]) -> f64 {
    snapshot
        .value(name, gpu)
        .unwrap_or_else(|| panic!("{name} {gpu:?} missing"))
}

fn reason(snapshot: &Snapshot, gpu: [(&str, &str); 2], reason: &str) -> f64 {
    let matching = [gpu[0], gpu[1], ("reason", reason)];
    value(snapshot, "vigil_gpu_clock_throttle_active", &matching)
}

/// Every GPU-side metric (everything but NCCL), for comparing runs.
fn gpu_side(snapshot: &Snapshot) -> Vec<(String, String, f64)> {
    let mut rows = Vec::new();
    for (name, family) in &snapshot.families {
        if name.starts_with("vigil_nccl") {
            continue;
        }
        for series in &family.series {
            if let Value::Scalar(v) = series.value {
                rows.push((name.to_string(), format!("{:?}", series.labels), v));
            }
        }
    }
    rows
}

fn rank_of(gpu: &[(&str, &str)]) -> f64 {
    let node: f64 = gpu[0].1.trim_start_matches("sim-node-").parse().unwrap();
    node * 4.0 + gpu[1].1.parse::<f64>().unwrap()
}

fn busbw(snapshot: &Snapshot, gpu: [(&str, &str); 2]) -> f64 {
    value(
        snapshot,
        "vigil_nccl_coll_busbw_gbs",
        &[("rank", &rank_of(&gpu).to_string())],
    )
}

#[test]
fn healthy_fleet_is_plausible_and_quiet() {
    let (last, _) = run(Vec::new(), 15);
    for gpu in [SICK, PEER] {
        let clock = value(&last, "DCGM_FI_DEV_SM_CLOCK", &gpu);
        let power = value(&last, "DCGM_FI_DEV_POWER_USAGE", &gpu);
        let temp = value(&last, "DCGM_FI_DEV_GPU_TEMP", &gpu);
        let util = value(&last, "DCGM_FI_DEV_GPU_UTIL", &gpu);
        assert!((1900.0..=1980.0).contains(&clock), "clock {clock}");
        assert!((300.0..=700.0).contains(&power), "power {power}");
        assert!((45.0..=80.0).contains(&temp), "temp {temp}");
        assert!((50.0..=100.0).contains(&util), "util {util}");
        assert_eq!(
            value(&last, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &gpu),
            0.0
        );
        assert_eq!(value(&last, "DCGM_FI_DEV_XID_ERRORS", &gpu), 0.0);
        let score = value(
            &last,
            "vigil_nccl_straggler_score",
            &[("rank", &rank_of(&gpu).to_string())],
        );
        assert!(score.abs() < 0.03, "healthy straggler score {score}");
    }
    // Energy integrates power: over 15 minutes at ~500 W, ~450 kJ.
    let (_, early) = run(Vec::new(), 10);
    let grown = value(&last, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &SICK)
        - value(&early, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &SICK);
    let power = value(&last, "DCGM_FI_DEV_POWER_USAGE", &SICK);
    let expected_mj = power * 1000.0 * 5.0 * 60.0;
    assert!(
        (grown / expected_mj - 1.0).abs() < 0.1,
        "energy grew {grown} mJ, power {power} W"
    );
}

#[test]
fn thermal_throttle_sets_hw_slowdown_and_lowers_the_sm_clock() {
    let (last, before) = run(gpu_fault(FaultKind::ThermalThrottle), 20);
    assert_eq!(reason(&before, SICK, "hw_slowdown"), 0.0);
    assert_eq!(reason(&last, SICK, "hw_slowdown"), 1.0);
    assert_eq!(reason(&last, SICK, "hw_thermal_slowdown"), 1.0);
    assert_eq!(reason(&last, PEER, "hw_slowdown"), 0.0);
    // It hovers at the slowdown threshold, held there by the throttling.
    assert!(value(&last, "DCGM_FI_DEV_GPU_TEMP", &SICK) >= H100.slowdown_temp_c - 4.0);
    assert!(value(&last, "DCGM_FI_DEV_GPU_TEMP", &PEER) < 80.0);
    assert!(
        value(&last, "DCGM_FI_DEV_SM_CLOCK", &SICK)
            < 0.9 * value(&last, "DCGM_FI_DEV_SM_CLOCK", &PEER)
    );
    assert!(
        value(&last, "DCGM_FI_DEV_THERMAL_VIOLATION", &SICK) > 60e6,
        "over a minute throttled"
    );
    assert_eq!(value(&last, "DCGM_FI_DEV_THERMAL_VIOLATION", &PEER), 0.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_POWER_VIOLATION", &SICK), 0.0);
}

#[test]
fn power_cap_pins_power_at_the_limit_with_sw_power_cap() {
    let (last, before) = run(gpu_fault(FaultKind::PowerCap), 15);
    assert_eq!(value(&before, "DCGM_FI_DEV_POWER_MGMT_LIMIT", &SICK), 700.0);
    let limit = value(&last, "DCGM_FI_DEV_POWER_MGMT_LIMIT", &SICK);
    assert_eq!(limit, 175.0);
    let power = value(&last, "DCGM_FI_DEV_POWER_USAGE", &SICK);
    assert!(power <= limit && power > 0.95 * limit, "power {power}");
    assert_eq!(reason(&last, SICK, "sw_power_cap"), 1.0);
    assert_eq!(reason(&last, PEER, "sw_power_cap"), 0.0);
    assert!(
        value(&last, "DCGM_FI_DEV_SM_CLOCK", &SICK)
            < 0.9 * value(&last, "DCGM_FI_DEV_SM_CLOCK", &PEER)
    );
    assert!(value(&last, "DCGM_FI_DEV_POWER_VIOLATION", &SICK) > 60e6);
}

#[test]
fn clock_drop_lowers_clocks_with_no_reason_given() {
    let (last, _) = run(gpu_fault(FaultKind::ClockDrop), 15);
    assert!(
        value(&last, "DCGM_FI_DEV_SM_CLOCK", &SICK)
            < 0.7 * value(&last, "DCGM_FI_DEV_SM_CLOCK", &PEER)
    );
    assert_eq!(
        value(&last, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &SICK),
        0.0
    );
    assert!(
        value(&last, "DCGM_FI_DEV_POWER_USAGE", &SICK)
            < value(&last, "DCGM_FI_DEV_POWER_USAGE", &PEER)
    );
    assert!(
        (value(&last, "DCGM_FI_DEV_GPU_UTIL", &SICK) - value(&last, "DCGM_FI_DEV_GPU_UTIL", &PEER))
            .abs()
            < 10.0,
        "same load"
    );
}

#[test]
fn ecc_storm_raises_sbe_then_dbe_with_xid_48_and_remapped_rows() {
    let (last, before) = run(gpu_fault(FaultKind::EccStorm), 25);
    assert_eq!(value(&before, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", &SICK), 0.0);
    assert!(value(&last, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", &SICK) > 10_000.0);
    assert!(value(&last, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &SICK) >= 1.0);
    assert!(value(&last, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &SICK) >= 1.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_XID_ERRORS", &SICK), 48.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", &PEER), 0.0);
}

#[test]
fn xid_79_takes_the_gpu_off_the_bus_until_the_fault_ends() {
    let fault = vec![FaultSpec {
        kind: FaultKind::Xid79,
        node: 0,
        gpu: Some(1),
        start: FAULT_START,
        duration: Some(Duration::from_secs(120)),
    }];
    let (during, _) = run(fault.clone(), 11);
    assert_eq!(value(&during, "vigil_gpu_up", &SICK), 0.0);
    assert_eq!(value(&during, "DCGM_FI_DEV_XID_ERRORS", &SICK), 79.0);
    assert_eq!(
        value(
            &during,
            "vigil_gpu_xid_errors_total",
            &[SICK[0], SICK[1], ("xid", "79")]
        ),
        1.0
    );
    assert!(during.value("DCGM_FI_DEV_SM_CLOCK", &SICK).is_none());
    assert!(
        during
            .value("vigil_nccl_coll_busbw_gbs", &[("rank", "1")])
            .is_some(),
        "last value kept"
    );
    let (after, _) = run(fault, 14);
    assert_eq!(value(&after, "vigil_gpu_up", &SICK), 1.0);
    assert!(after.value("DCGM_FI_DEV_SM_CLOCK", &SICK).is_some());
    assert_eq!(
        value(
            &after,
            "vigil_gpu_xid_errors_total",
            &[SICK[0], SICK[1], ("xid", "79")]
        ),
        1.0
    );
}

#[test]
fn xid_48_94_and_31_are_counted_with_their_codes_and_memory_effects() {
    let (last, _) = run(gpu_fault(FaultKind::Xid48), 11);
    assert_eq!(
        value(
            &last,
            "vigil_gpu_xid_errors_total",
            &[SICK[0], SICK[1], ("xid", "48")]
        ),
        1.0
    );
    assert_eq!(value(&last, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &SICK), 1.0);

    let (last, _) = run(gpu_fault(FaultKind::Xid94), 11);
    assert_eq!(
        value(
            &last,
            "vigil_gpu_xid_errors_total",
            &[SICK[0], SICK[1], ("xid", "94")]
        ),
        1.0
    );
    assert_eq!(
        value(&last, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &SICK),
        1.0
    );
    assert_eq!(value(&last, "DCGM_FI_DEV_ROW_REMAP_PENDING", &SICK), 1.0);

    let (last, _) = run(gpu_fault(FaultKind::Xid31), 20);
    assert!(
        value(
            &last,
            "vigil_gpu_xid_errors_total",
            &[SICK[0], SICK[1], ("xid", "31")]
        ) >= 2.0
    );
    assert_eq!(value(&last, "DCGM_FI_DEV_XID_ERRORS", &SICK), 31.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &SICK), 0.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_XID_ERRORS", &PEER), 0.0);
}

#[test]
fn pcie_downtraining_shows_gen3_x8_against_gen5_x16_with_replays() {
    let (last, before) = run(gpu_fault(FaultKind::PcieDowntrain), 15);
    assert_eq!(
        value(&before, "vigil_gpu_pcie_link_downtrained", &SICK),
        0.0
    );
    assert_eq!(value(&last, "DCGM_FI_DEV_PCIE_LINK_GEN", &SICK), 3.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_PCIE_LINK_WIDTH", &SICK), 8.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_PCIE_MAX_LINK_GEN", &SICK), 5.0);
    assert_eq!(value(&last, "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH", &SICK), 16.0);
    assert_eq!(value(&last, "vigil_gpu_pcie_link_downtrained", &SICK), 1.0);
    assert!(value(&last, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", &SICK) > 0.0);
    assert_eq!(value(&last, "vigil_gpu_pcie_link_downtrained", &PEER), 0.0);
}

#[test]
fn nvlink_crc_errors_climb_on_one_link() {
    let (last, _) = run(gpu_fault(FaultKind::NvlinkCrc), 15);
    assert!(
        value(
            &last,
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            &SICK
        ) > 1000.0
    );
    assert!(
        value(
            &last,
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
            &SICK
        ) > 100.0
    );
    assert!(value(&last, "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", &SICK) > 10.0);
    let links_with_errors = last
        .series(
            "vigil_gpu_nvlink_errors_total",
            &[SICK[0], SICK[1], ("counter", "crc_flit")],
        )
        .filter(|s| s.value != Value::Scalar(0.0))
        .count();
    assert_eq!(links_with_errors, 1);
    assert_eq!(
        value(
            &last,
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            &PEER
        ),
        0.0
    );
}

#[test]
fn silent_straggler_moves_nothing_but_nccl_busbw_and_exec_time() {
    let (healthy, _) = run(Vec::new(), 15);
    let (last, _) = run(gpu_fault(FaultKind::Straggler), 15);
    assert_eq!(
        gpu_side(&healthy),
        gpu_side(&last),
        "no GPU counter may move"
    );
    let ratio = busbw(&last, SICK) / busbw(&last, PEER);
    assert!((0.80..0.93).contains(&ratio), "busbw ratio {ratio}");
    let score = value(&last, "vigil_nccl_straggler_score", &[("rank", "1")]);
    assert!((0.08..0.22).contains(&score), "straggler score {score}");
    let peer_score = value(&last, "vigil_nccl_straggler_score", &[("rank", "2")]);
    assert!(peer_score.abs() < 0.03, "peer score {peer_score}");
}

#[test]
fn node_busbw_sag_lowers_every_rank_on_the_node_and_nothing_else() {
    let (healthy, _) = run(Vec::new(), 15);
    let sag = vec![FaultSpec {
        kind: FaultKind::NcclBusbwSag,
        node: 1,
        gpu: None,
        start: FAULT_START,
        duration: None,
    }];
    let (last, _) = run(sag, 15);
    assert_eq!(gpu_side(&healthy), gpu_side(&last));
    for gpu in 0..4 {
        let node0 = busbw(
            &last,
            [("Hostname", "sim-node-00"), ("gpu", &gpu.to_string())],
        );
        let node1 = busbw(
            &last,
            [("Hostname", "sim-node-01"), ("gpu", &gpu.to_string())],
        );
        assert!(
            (0.6..0.8).contains(&(node1 / node0)),
            "gpu {gpu}: {node1} vs {node0}"
        );
    }
}

#[test]
fn ground_truth_lists_each_fault_with_host_gpu_and_times() {
    let fleet = Fleet::new(FleetConfig {
        nodes: 2,
        gpus_per_node: 4,
        faults: vec![
            "straggler:sim-node-01/2:60s:5m".parse().unwrap(),
            "nccl-sag:0:2m".parse().unwrap(),
        ],
        ..FleetConfig::default()
    });
    fleet.validate().unwrap();
    let truth = fleet.ground_truth(t0());
    assert_eq!(truth[0].host, "sim-node-01");
    assert_eq!(truth[0].gpu.as_ref().unwrap().0, 2);
    assert!(truth[0].gpu.as_ref().unwrap().1.starts_with("GPU-"));
    assert_eq!(truth[0].start, t0() + Duration::from_secs(60));
    assert_eq!(truth[0].end, Some(t0() + Duration::from_secs(360)));
    assert_eq!((truth[1].gpu.clone(), truth[1].end), (None, None));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.csv");
    faults::write_ground_truth(&path, &truth).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("fault,host,gpu,uuid,start,end\nstraggler,sim-node-01,2,GPU-"),
        "{text}"
    );
    assert!(
        text.contains("nccl-sag,sim-node-00,,,2026-01-15T14:02:00.000Z,\n"),
        "{text}"
    );

    let bad = Fleet::new(FleetConfig {
        nodes: 1,
        faults: vec!["thermal:3/0:1s".parse().unwrap()],
        ..FleetConfig::default()
    });
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("the fleet has 1 nodes")
    );
}

#[test]
fn thermal_and_power_faults_show_at_the_nightly_load_minimum_too() {
    // 03:00 UTC: the daily curve's low.
    let night = t0() - Duration::from_secs(11 * 3600);
    let (last, _) = run_from(night, gpu_fault(FaultKind::ThermalThrottle), 20);
    assert!(
        value(&last, "DCGM_FI_DEV_GPU_UTIL", &PEER) < 50.0,
        "low load"
    );
    assert_eq!(reason(&last, SICK, "hw_slowdown"), 1.0);
    let (last, _) = run_from(night, gpu_fault(FaultKind::PowerCap), 15);
    assert_eq!(reason(&last, SICK, "sw_power_cap"), 1.0);
    assert!(
        value(&last, "DCGM_FI_DEV_SM_CLOCK", &SICK)
            < 0.9 * value(&last, "DCGM_FI_DEV_SM_CLOCK", &PEER)
    );
}
