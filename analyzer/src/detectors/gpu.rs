//! Silent GPU degradation, per GPU, over the dcgm-exporter-named metrics `vigil gpu-exporter`
//! sends: rate rules on error counters, conditions held too long, comparison against peers, a
//! learned (linfa) baseline of the clock a GPU should run at for its load, NCCL stragglers and
//! sustained bus-bandwidth drops.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Detector, alert_labels, humantime_serde};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, quote, strings, ts};
use crate::state::Timing;
use crate::stats::median_mad;

/// `[analyzer.gpu]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GpuConfig {
    pub enabled: bool,
    /// The label that carries the host name (the exporter's `--hostname-label`).
    pub hostname_label: String,
    /// The window each evaluation looks at: about three sampling intervals.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a finding must hold before its alert fires.
    #[serde(with = "humantime_serde")]
    pub for_duration: Duration,
    /// How long a GPU must look healthy before its alert resolves.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// Single-bit ECC errors per window that make a storm.
    pub sbe_per_window: f64,
    /// PCIe replays per window worth an alert.
    pub pcie_replays_per_window: f64,
    /// NVLink CRC errors per window worth an alert.
    pub nvlink_errors_per_window: f64,
    /// Share of the window a condition (throttling, downtrained link, lost GPU) must hold.
    pub held_fraction: f64,
    /// Robust z-score against peers (same model) that makes a GPU an outlier.
    pub peer_z: f64,
    /// …and the relative difference from the peers' median it must also exceed.
    pub peer_min_difference: f64,
    /// Only GPUs at least this busy (percent) are compared on clocks.
    pub min_utilization: f64,
    /// NCCL straggler score (the exporter's `vigil_nccl_straggler_score`) that flags a rank.
    pub straggler_score: f64,
    /// Relative drop in a rank's NCCL bus bandwidth against its own recent past that is a shift.
    pub busbw_drop: f64,
    /// The trailing period the clock baseline is learned from and bus bandwidth is compared to.
    #[serde(with = "humantime_serde")]
    pub baseline_window: Duration,
    /// Relative shortfall of the SM clock below the learned baseline that flags a GPU.
    pub baseline_shortfall: f64,
    /// A GPU (or a whole node) that sent nothing for this long gets `GpuStoppedReporting`, and
    /// its other alerts stay firing meanwhile instead of resolving as if it had recovered.
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// A GPU silent for this long is forgotten (decommissioned): its alerts then resolve.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Judge only metrics sent with a GPU-exporter token (`[auth] gpu_exporter_tokens`): with
    /// open ingest doors, anyone can make up a GPU and raise its alerts.
    pub trusted_senders_only: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            enabled: true,
            hostname_label: "Hostname".to_string(),
            window: Duration::from_secs(20),
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(30),
            sbe_per_window: 50.0,
            pcie_replays_per_window: 3.0,
            nvlink_errors_per_window: 5.0,
            held_fraction: 0.6,
            peer_z: 5.0,
            peer_min_difference: 0.05,
            min_utilization: 20.0,
            straggler_score: 0.07,
            busbw_drop: 0.08,
            baseline_window: Duration::from_secs(600),
            baseline_shortfall: 0.08,
            silent_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(24 * 3600),
            trusted_senders_only: false,
        }
    }
}

/// Every GPU detector.
pub fn detectors(config: &GpuConfig) -> Vec<Box<dyn Detector>> {
    vec![
        // First: the scopes it finds silent hold the other detectors' alerts in the same round.
        Box::new(SilentGpus {
            config: config.clone(),
            last_seen: HashMap::new(),
            read_until: None,
        }),
        Box::new(CounterRules {
            config: config.clone(),
        }),
        Box::new(HeldConditions {
            config: config.clone(),
        }),
        Box::new(PeerOutliers {
            config: config.clone(),
        }),
        Box::new(ClockBaseline {
            config: config.clone(),
        }),
        Box::new(NcclStraggler {
            config: config.clone(),
        }),
        Box::new(BusBandwidthShift {
            config: config.clone(),
        }),
    ]
}

/// Metrics that every exporter sends for every GPU it sees, vigil's and NVIDIA's dcgm-exporter.
const PRESENCE_METRICS: [&str; 3] = [
    "vigil_gpu_up",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_GPU_UTIL",
];

/// GPUs that stopped reporting. The other detectors judge what arrives, so a GPU or a node that
/// goes silent raises nothing there, and their alerts on it would resolve as if it had recovered:
/// silence is not health. It gets an alert of its own, and the runner holds its other alerts
/// while the silence lasts (see [`Detector::silences_scopes`]).
pub struct SilentGpus {
    config: GpuConfig,
    last_seen: HashMap<GpuKey, SystemTime>,
    /// The end of the window last read; the next read starts a window before it, for late samples.
    read_until: Option<SystemTime>,
}

#[async_trait]
impl Detector for SilentGpus {
    fn name(&self) -> &'static str {
        "gpu_silence"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        // The silence itself is the wait; it ends the moment a sample arrives.
        Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::ZERO,
        }
    }
    fn silences_scopes(&self) -> bool {
        true
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        // After a start, look back as far as a GPU is remembered; then only at what is new.
        let from = match self.read_until {
            Some(until) => until - self.config.window,
            None => now - self.config.forget_after,
        };
        let names: Vec<String> = PRESENCE_METRICS.iter().map(|m| quote(m)).collect();
        let sql = format!(
            "SELECT {}, arrow_cast(max(time), 'Int64') AS last_ns FROM metrics \
             WHERE metric_name IN ({}) AND attributes['UUID'] IS NOT NULL AND {} \
             GROUP BY host, gpu, uuid, model",
            gpu_columns(&self.config.hostname_label),
            names.join(", "),
            window_clause(&self.config, from, now)
        );
        let batches = source.sql(&sql).await?;
        let keys = gpu_keys(&batches)?;
        let last = floats(&batches, "last_ns")?;
        for (key, last) in keys.into_iter().zip(last) {
            let Some(last) = last else { continue };
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(last.max(0.0) as u64);
            let seen = self.last_seen.entry(key).or_insert(at);
            *seen = (*seen).max(at);
        }
        self.read_until = Some(now);
        let forget_after = self.config.forget_after;
        self.last_seen
            .retain(|_, seen| now.duration_since(*seen).unwrap_or_default() < forget_after);
        let silent_after = self.config.silent_after.as_secs_f64();
        let window = self.config.window.as_secs_f64();
        // A node whose GPUs are all silent is silent too: its alerts without a GPU (NCCL ranks
        // that no process list tied to a GPU) are held as well. Never an alert of its own.
        let mut hosts: BTreeMap<&str, bool> = BTreeMap::new();
        for (key, seen) in &self.last_seen {
            let silent = now.duration_since(*seen).unwrap_or_default().as_secs_f64();
            *hosts.entry(key.host.as_str()).or_insert(true) &= silent >= window;
        }
        let silent_hosts: Vec<Finding> = hosts
            .into_iter()
            .filter(|(host, silent)| *silent && !host.is_empty())
            .map(|(host, _)| Finding {
                labels: alert_labels(
                    "GpuStoppedReporting",
                    self.name(),
                    &[(self.config.hostname_label.as_str(), host)],
                ),
                severity: Severity::Critical,
                subject: format!("node {host}"),
                score: 0.0,
                threshold: 1.0,
                active: false,
                clear: false,
                message: String::new(),
                evidence: serde_json::Map::new(),
            })
            .collect();
        Ok(self
            .last_seen
            .iter()
            .map(|(key, seen)| {
                let silent = now.duration_since(*seen).unwrap_or_default().as_secs_f64();
                let since = chrono::DateTime::<chrono::Utc>::from(*seen).to_rfc3339();
                let mut evidence = serde_json::Map::new();
                evidence.insert("last_sample".into(), json!(since));
                evidence.insert("silent_seconds".into(), json!(silent.round()));
                evidence.insert("gpu_uuid".into(), json!(key.uuid));
                Finding {
                    labels: key.labels(
                        "GpuStoppedReporting",
                        self.name(),
                        &self.config.hostname_label,
                        &[],
                    ),
                    severity: Severity::Critical,
                    subject: key.subject(),
                    score: silent,
                    threshold: silent_after,
                    // Between the two (no sample within a window, not yet silent_after) the
                    // GPU's other alerts are already held, but it raises nothing yet.
                    active: silent >= silent_after,
                    clear: silent < window,
                    message: format!(
                        "{}: no samples since {since} ({:.0} s); its node, exporter or the network to it is down, and its other alerts are held until it reports again",
                        key.subject(),
                        silent
                    ),
                    evidence,
                }
            })
            .chain(silent_hosts)
            .collect())
    }
}

fn timing(config: &GpuConfig) -> Timing {
    Timing {
        for_duration: config.for_duration,
        resolve_after: config.resolve_after,
    }
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
struct GpuKey {
    host: String,
    gpu: String,
    uuid: String,
    model: String,
}

impl GpuKey {
    fn subject(&self) -> String {
        format!("GPU {} ({}) on {}", self.gpu, self.uuid, self.host)
    }

    fn labels(
        &self,
        alertname: &str,
        detector: &str,
        hostname_label: &str,
        extra: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let mut scope = vec![
            (hostname_label, self.host.as_str()),
            ("gpu", self.gpu.as_str()),
            ("UUID", self.uuid.as_str()),
            ("modelName", self.model.as_str()),
        ];
        scope.extend_from_slice(extra);
        alert_labels(alertname, detector, &scope)
    }
}

fn gpu_columns(host_label: &str) -> String {
    format!(
        "attributes[{}] AS host, attributes['gpu'] AS gpu, attributes['UUID'] AS uuid, attributes['modelName'] AS model",
        quote(host_label)
    )
}

fn gpu_keys(batches: &[arrow::array::RecordBatch]) -> Result<Vec<GpuKey>, AnalyzerError> {
    let host = strings(batches, "host")?;
    let gpu = strings(batches, "gpu")?;
    let uuid = strings(batches, "uuid")?;
    let model = strings(batches, "model")?;
    Ok((0..host.len())
        .map(|i| GpuKey {
            host: host[i].clone().unwrap_or_default(),
            gpu: gpu[i].clone().unwrap_or_default(),
            uuid: uuid[i].clone().unwrap_or_default(),
            model: model[i].clone().unwrap_or_default(),
        })
        .collect())
}

/// The time window of a GPU query, and, with `trusted_senders_only`, only metrics sent with a
/// GPU-exporter token (any OTLP sender can make up a GPU and its XID counter).
fn window_clause(config: &GpuConfig, start: SystemTime, end: SystemTime) -> String {
    let sender = if config.trusted_senders_only {
        format!(
            " AND resource_attributes[{}] = {}",
            quote(vigil_schemas::attrs::SENDER_ATTRIBUTE),
            quote(vigil_schemas::attrs::GPU_EXPORTER_SENDER)
        )
    } else {
        String::new()
    };
    format!("time > {} AND time <= {}{sender}", ts(start), ts(end))
}

/// A counter rule: an increase over the window above a threshold.
struct CounterRule {
    alertname: &'static str,
    metrics: &'static [&'static str],
    severity: Severity,
    /// Increase that fires (strictly above).
    threshold: fn(&GpuConfig) -> f64,
    /// A series first seen inside the window counts from zero (the exporter creates XID series at
    /// the first XID); other counters need a value before the window to count an increase.
    new_series_from_zero: bool,
    what: &'static str,
}

const COUNTER_RULES: [CounterRule; 6] = [
    CounterRule {
        alertname: "GpuXidError",
        metrics: &["vigil_gpu_xid_errors_total"],
        severity: Severity::Critical,
        threshold: |_| 0.0,
        new_series_from_zero: true,
        what: "XID errors",
    },
    CounterRule {
        alertname: "GpuEccDoubleBitErrors",
        metrics: &["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"],
        severity: Severity::Critical,
        threshold: |_| 0.0,
        new_series_from_zero: false,
        what: "double-bit (uncorrectable) ECC errors",
    },
    CounterRule {
        alertname: "GpuEccSingleBitStorm",
        metrics: &["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"],
        severity: Severity::Warning,
        threshold: |c| c.sbe_per_window,
        new_series_from_zero: false,
        what: "single-bit ECC errors",
    },
    CounterRule {
        alertname: "GpuRowsRemapped",
        metrics: &["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"],
        severity: Severity::Warning,
        threshold: |_| 0.0,
        new_series_from_zero: false,
        what: "HBM rows remapped for uncorrectable errors",
    },
    CounterRule {
        alertname: "GpuPcieReplays",
        metrics: &["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"],
        severity: Severity::Warning,
        threshold: |c| c.pcie_replays_per_window,
        new_series_from_zero: false,
        what: "PCIe replays",
    },
    CounterRule {
        alertname: "GpuNvlinkErrors",
        metrics: &[
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        ],
        severity: Severity::Warning,
        threshold: |c| c.nvlink_errors_per_window,
        new_series_from_zero: false,
        what: "NVLink CRC errors",
    },
];

/// XIDs that mean the hardware (not the application) is at fault.
fn xid_severity(xid: &str) -> Severity {
    match xid {
        "13" | "31" | "43" | "45" => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// Rate rules over the error counters.
pub struct CounterRules {
    config: GpuConfig,
}

#[async_trait]
impl Detector for CounterRules {
    fn name(&self) -> &'static str {
        "gpu_counters"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let start = now - self.config.window;
        let lookback = start - self.config.baseline_window;
        let names: Vec<String> = COUNTER_RULES
            .iter()
            .flat_map(|r| r.metrics.iter().map(|m| quote(m)))
            .collect();
        let sql = format!(
            "SELECT metric_name, {}, attributes['xid'] AS xid, \
             max(CASE WHEN time > {} THEN value END) AS now_value, \
             max(CASE WHEN time <= {} THEN value END) AS before_value \
             FROM metrics WHERE metric_name IN ({}) AND {} \
             GROUP BY metric_name, host, gpu, uuid, model, xid",
            gpu_columns(&self.config.hostname_label),
            ts(start),
            ts(start),
            names.join(", "),
            window_clause(&self.config, lookback, now),
        );
        let batches = source.sql(&sql).await?;
        let keys = gpu_keys(&batches)?;
        let metric = strings(&batches, "metric_name")?;
        let xid = strings(&batches, "xid")?;
        let now_value = floats(&batches, "now_value")?;
        let before_value = floats(&batches, "before_value")?;
        // Sum per rule, GPU (and XID code).
        let mut increases: BTreeMap<(usize, GpuKey, String), (f64, bool)> = BTreeMap::new();
        for i in 0..keys.len() {
            let Some(name) = metric[i].as_deref() else {
                continue;
            };
            let Some(rule) = COUNTER_RULES.iter().position(|r| r.metrics.contains(&name)) else {
                continue;
            };
            let Some(current) = now_value[i] else {
                continue;
            };
            let before = match before_value[i] {
                Some(before) => before,
                None if COUNTER_RULES[rule].new_series_from_zero => 0.0,
                // No earlier value to compare with (exporter just started): no verdict yet.
                None => continue,
            };
            let entry = increases
                .entry((rule, keys[i].clone(), xid[i].clone().unwrap_or_default()))
                .or_insert((0.0, true));
            entry.0 += (current - before).max(0.0);
        }
        let mut findings = Vec::new();
        for ((rule_index, key, xid), (increase, _)) in increases {
            let rule = &COUNTER_RULES[rule_index];
            let threshold = (rule.threshold)(&self.config);
            let extra: Vec<(&str, &str)> = if xid.is_empty() {
                vec![]
            } else {
                vec![("xid", xid.as_str())]
            };
            let severity = if xid.is_empty() {
                rule.severity
            } else {
                xid_severity(&xid)
            };
            let message = if xid.is_empty() {
                format!(
                    "{}: {increase} {} in the last {}",
                    key.subject(),
                    rule.what,
                    humantime::format_duration(self.config.window)
                )
            } else {
                format!(
                    "{}: XID {xid} ×{increase} in the last {}",
                    key.subject(),
                    humantime::format_duration(self.config.window)
                )
            };
            let mut evidence = serde_json::Map::new();
            evidence.insert("increase".into(), json!(increase));
            evidence.insert("metrics".into(), json!(rule.metrics));
            evidence.insert(
                "window".into(),
                json!(humantime::format_duration(self.config.window).to_string()),
            );
            evidence.insert("gpu_uuid".into(), json!(key.uuid));
            findings.push(Finding {
                labels: key.labels(
                    rule.alertname,
                    self.name(),
                    &self.config.hostname_label,
                    &extra,
                ),
                severity,
                subject: key.subject(),
                score: increase,
                threshold,
                active: increase > threshold,
                clear: increase <= threshold / 2.0,
                message,
                evidence,
            });
        }
        Ok(findings)
    }
}

/// Conditions a GPU should not stay in: throttled (by reason), a downtrained PCIe link, lost.
pub struct HeldConditions {
    config: GpuConfig,
}

const THROTTLE_REASONS: [&str; 5] = [
    "hw_slowdown",
    "hw_thermal_slowdown",
    "sw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "sw_power_cap",
];

#[async_trait]
impl Detector for HeldConditions {
    fn name(&self) -> &'static str {
        "gpu_conditions"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let reasons: Vec<String> = THROTTLE_REASONS.iter().map(|r| quote(r)).collect();
        let sql = format!(
            "SELECT metric_name, {}, coalesce(attributes['reason'], '') AS reason, \
             avg(CASE WHEN metric_name = 'vigil_gpu_up' THEN CASE WHEN value < 1 THEN 1.0 ELSE 0.0 END \
                      ELSE CASE WHEN value >= 1 THEN 1.0 ELSE 0.0 END END) AS held, count(*) AS samples \
             FROM metrics WHERE {} AND (metric_name IN ('vigil_gpu_pcie_link_downtrained', 'vigil_gpu_up') \
               OR (metric_name = 'vigil_gpu_clock_throttle_active' AND attributes['reason'] IN ({}))) \
             GROUP BY metric_name, host, gpu, uuid, model, reason",
            gpu_columns(&self.config.hostname_label),
            window_clause(&self.config, now - self.config.window, now),
            reasons.join(", "),
        );
        let batches = source.sql(&sql).await?;
        let keys = gpu_keys(&batches)?;
        let metric = strings(&batches, "metric_name")?;
        let reason = strings(&batches, "reason")?;
        let held = floats(&batches, "held")?;
        let mut findings = Vec::new();
        for i in 0..keys.len() {
            let (Some(name), Some(fraction)) = (metric[i].as_deref(), held[i]) else {
                continue;
            };
            let reason = reason[i].clone().unwrap_or_default();
            let (alertname, severity, what, extra) = match name {
                "vigil_gpu_up" => (
                    "GpuLost",
                    Severity::Critical,
                    "not answering NVML (fallen off the bus?)".to_string(),
                    vec![],
                ),
                "vigil_gpu_pcie_link_downtrained" => (
                    "GpuPcieLinkDowntrained",
                    Severity::Warning,
                    "PCIe link below its maximum generation or width".to_string(),
                    vec![],
                ),
                _ => (
                    "GpuThrottled",
                    Severity::Warning,
                    format!("clocks throttled ({reason})"),
                    vec![("reason", reason.as_str())],
                ),
            };
            let key = &keys[i];
            let mut evidence = serde_json::Map::new();
            evidence.insert("held_fraction".into(), json!(fraction));
            evidence.insert("metric".into(), json!(name));
            evidence.insert("gpu_uuid".into(), json!(key.uuid));
            evidence.insert(
                "window".into(),
                json!(humantime::format_duration(self.config.window).to_string()),
            );
            findings.push(Finding {
                labels: key.labels(alertname, self.name(), &self.config.hostname_label, &extra),
                severity,
                subject: key.subject(),
                score: fraction,
                threshold: self.config.held_fraction,
                active: fraction >= self.config.held_fraction,
                clear: fraction < self.config.held_fraction / 3.0,
                message: format!(
                    "{}: {what} for {:.0}% of the last {}",
                    key.subject(),
                    fraction * 100.0,
                    humantime::format_duration(self.config.window)
                ),
                evidence,
            });
        }
        Ok(findings)
    }
}

/// Per-GPU medians of some metrics over a window.
async fn gpu_medians(
    source: &dyn QuerySource,
    config: &GpuConfig,
    metrics: &[&str],
    start: SystemTime,
    end: SystemTime,
) -> Result<HashMap<GpuKey, HashMap<String, f64>>, AnalyzerError> {
    let names: Vec<String> = metrics.iter().map(|m| quote(m)).collect();
    let sql = format!(
        "SELECT metric_name, {}, median(value) AS v FROM metrics WHERE metric_name IN ({}) AND {} \
         GROUP BY metric_name, host, gpu, uuid, model",
        gpu_columns(&config.hostname_label),
        names.join(", "),
        window_clause(config, start, end)
    );
    let batches = source.sql(&sql).await?;
    let keys = gpu_keys(&batches)?;
    let metric = strings(&batches, "metric_name")?;
    let value = floats(&batches, "v")?;
    let mut out: HashMap<GpuKey, HashMap<String, f64>> = HashMap::new();
    for i in 0..keys.len() {
        if let (Some(name), Some(v)) = (&metric[i], value[i]) {
            out.entry(keys[i].clone())
                .or_default()
                .insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// GPUs whose clock is low or temperature high against peers of the same model, by robust
/// z-score (median and MAD), at comparable load.
pub struct PeerOutliers {
    config: GpuConfig,
}

#[async_trait]
impl Detector for PeerOutliers {
    fn name(&self) -> &'static str {
        "gpu_peers"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let medians = gpu_medians(
            source,
            &self.config,
            &[
                "DCGM_FI_DEV_SM_CLOCK",
                "DCGM_FI_DEV_GPU_TEMP",
                "DCGM_FI_DEV_GPU_UTIL",
            ],
            now - self.config.window,
            now,
        )
        .await?;
        let mut by_model: BTreeMap<String, Vec<(&GpuKey, &HashMap<String, f64>)>> = BTreeMap::new();
        for (key, values) in &medians {
            by_model
                .entry(key.model.clone())
                .or_default()
                .push((key, values));
        }
        let mut findings = Vec::new();
        for gpus in by_model.values() {
            // (metric, direction that is bad, alertname, floor of the scale as a share of the median)
            for (metric, sign, alertname, what) in [
                (
                    "DCGM_FI_DEV_SM_CLOCK",
                    -1.0,
                    "GpuClockBelowPeers",
                    "SM clock",
                ),
                (
                    "DCGM_FI_DEV_GPU_TEMP",
                    1.0,
                    "GpuHotterThanPeers",
                    "temperature",
                ),
            ] {
                let busy = |values: &HashMap<String, f64>| {
                    values
                        .get("DCGM_FI_DEV_GPU_UTIL")
                        .is_some_and(|u| *u >= self.config.min_utilization)
                };
                let sample: Vec<(&GpuKey, f64)> = gpus
                    .iter()
                    .filter(|(_, values)| busy(values))
                    .filter_map(|(key, values)| values.get(metric).map(|v| (*key, *v)))
                    .collect();
                if sample.len() < 4 {
                    continue;
                }
                let values: Vec<f64> = sample.iter().map(|(_, v)| *v).collect();
                let Some((center, scale)) = median_mad(&values) else {
                    continue;
                };
                // Identical healthy GPUs have a MAD near zero; a floor keeps z meaningful.
                let scale = scale.max(center.abs() * 0.01).max(1e-9);
                for (key, value) in sample {
                    let z = sign * (value - center) / scale;
                    let difference = sign * (value - center) / center.abs().max(1e-9);
                    let mut evidence = serde_json::Map::new();
                    evidence.insert("metric".into(), json!(metric));
                    evidence.insert("value".into(), json!(value));
                    evidence.insert("peer_median".into(), json!(center));
                    evidence.insert("peer_count".into(), json!(values.len()));
                    evidence.insert("robust_z".into(), json!(z));
                    evidence.insert("gpu_uuid".into(), json!(key.uuid));
                    findings.push(Finding {
                        labels: key.labels(alertname, self.name(), &self.config.hostname_label, &[]),
                        severity: Severity::Warning,
                        subject: key.subject(),
                        score: z,
                        threshold: self.config.peer_z,
                        active: z >= self.config.peer_z && difference >= self.config.peer_min_difference,
                        clear: z < self.config.peer_z / 2.0 || difference < self.config.peer_min_difference / 2.0,
                        message: format!(
                            "{}: {what} {value:.0} against a peer median of {center:.0} ({:+.1}%, robust z {z:.1})",
                            key.subject(),
                            (value - center) / center.abs().max(1e-9) * 100.0
                        ),
                        evidence,
                    });
                }
            }
        }
        Ok(findings)
    }
}

/// A learned baseline: SM clock as a linear function of utilization and temperature, fitted with
/// linfa on the trailing baseline window of every GPU of the model; a GPU whose clock stays well
/// below what the model predicts for its load is degraded, whatever its peers do.
pub struct ClockBaseline {
    config: GpuConfig,
}

#[async_trait]
impl Detector for ClockBaseline {
    fn name(&self) -> &'static str {
        "gpu_baseline"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let current_start = now - self.config.window;
        let reference_start = current_start - self.config.baseline_window;
        // One row per GPU and sampling instant with the three fields side by side.
        let sql = format!(
            "SELECT {}, arrow_cast(time, 'Int64') AS t, \
             max(CASE WHEN metric_name = 'DCGM_FI_DEV_SM_CLOCK' THEN value END) AS clock, \
             max(CASE WHEN metric_name = 'DCGM_FI_DEV_GPU_UTIL' THEN value END) AS util, \
             max(CASE WHEN metric_name = 'DCGM_FI_DEV_GPU_TEMP' THEN value END) AS temp \
             FROM metrics WHERE metric_name IN ('DCGM_FI_DEV_SM_CLOCK', 'DCGM_FI_DEV_GPU_UTIL', 'DCGM_FI_DEV_GPU_TEMP') AND {} \
             GROUP BY host, gpu, uuid, model, t",
            gpu_columns(&self.config.hostname_label),
            window_clause(&self.config, reference_start, now)
        );
        let batches = source.sql(&sql).await?;
        let keys = gpu_keys(&batches)?;
        let times = floats(&batches, "t")?;
        let clock = floats(&batches, "clock")?;
        let util = floats(&batches, "util")?;
        let temp = floats(&batches, "temp")?;
        let current_start_ns = current_start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as f64;
        // Per model: reference rows; per GPU: current rows.
        let mut reference: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
        let mut current: BTreeMap<GpuKey, Vec<[f64; 3]>> = BTreeMap::new();
        for i in 0..keys.len() {
            let (Some(c), Some(u), Some(t)) = (clock[i], util[i], temp[i]) else {
                continue;
            };
            if u < self.config.min_utilization {
                continue;
            }
            let in_current = times[i].is_some_and(|time| time > current_start_ns);
            if in_current {
                current.entry(keys[i].clone()).or_default().push([u, t, c]);
            } else {
                reference
                    .entry(keys[i].model.clone())
                    .or_default()
                    .push([u, t, c]);
            }
        }
        let mut findings = Vec::new();
        for (model, rows) in reference {
            if rows.len() < 30 {
                continue;
            }
            let records = Array2::from_shape_fn((rows.len(), 2), |(r, c)| rows[r][c]);
            let targets = Array1::from_iter(rows.iter().map(|r| r[2]));
            let dataset = Dataset::new(records, targets);
            let Ok(fitted) = LinearRegression::default().fit(&dataset) else {
                tracing::debug!(%model, "clock baseline did not fit");
                continue;
            };
            for (key, rows) in current.iter().filter(|(key, _)| key.model == model) {
                let records = Array2::from_shape_fn((rows.len(), 2), |(r, c)| rows[r][c]);
                let predicted: Array1<f64> = fitted.predict(&records);
                let expected = predicted.mean().unwrap_or(0.0);
                let actual = rows.iter().map(|r| r[2]).sum::<f64>() / rows.len() as f64;
                if expected <= 0.0 {
                    continue;
                }
                let shortfall = (expected - actual) / expected;
                let mut evidence = serde_json::Map::new();
                evidence.insert("expected_sm_clock".into(), json!(expected));
                evidence.insert("actual_sm_clock".into(), json!(actual));
                evidence.insert("model_intercept".into(), json!(fitted.intercept()));
                evidence.insert(
                    "model_coefficients_util_temp".into(),
                    json!(fitted.params().to_vec()),
                );
                evidence.insert("gpu_uuid".into(), json!(key.uuid));
                findings.push(Finding {
                    labels: key.labels("GpuClockBelowBaseline", self.name(), &self.config.hostname_label, &[]),
                    severity: Severity::Warning,
                    subject: key.subject(),
                    score: shortfall,
                    threshold: self.config.baseline_shortfall,
                    active: shortfall >= self.config.baseline_shortfall,
                    clear: shortfall < self.config.baseline_shortfall / 2.0,
                    message: format!(
                        "{}: SM clock {actual:.0} MHz where the learned baseline expects {expected:.0} MHz at this load ({:.0}% short)",
                        key.subject(),
                        shortfall * 100.0
                    ),
                    evidence,
                });
            }
        }
        Ok(findings)
    }
}

/// One NCCL rank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RankKey {
    gpu: GpuKey,
    comm: String,
    rank: String,
}

fn rank_columns(host_label: &str) -> String {
    format!(
        "{}, attributes['comm'] AS comm, attributes['rank'] AS rank",
        gpu_columns(host_label)
    )
}

fn rank_keys(batches: &[arrow::array::RecordBatch]) -> Result<Vec<RankKey>, AnalyzerError> {
    let gpus = gpu_keys(batches)?;
    let comm = strings(batches, "comm")?;
    let rank = strings(batches, "rank")?;
    Ok(gpus
        .into_iter()
        .enumerate()
        .map(|(i, gpu)| RankKey {
            gpu,
            comm: comm[i].clone().unwrap_or_default(),
            rank: rank[i].clone().unwrap_or_default(),
        })
        .collect())
}

impl RankKey {
    fn subject(&self) -> String {
        if self.gpu.uuid.is_empty() {
            format!("rank {} of {} on {}", self.rank, self.comm, self.gpu.host)
        } else {
            format!(
                "rank {} ({}) of {}",
                self.rank,
                self.gpu.subject(),
                self.comm
            )
        }
    }

    fn labels(
        &self,
        alertname: &str,
        detector: &str,
        hostname_label: &str,
    ) -> BTreeMap<String, String> {
        self.gpu.labels(
            alertname,
            detector,
            hostname_label,
            &[("comm", &self.comm), ("rank", &self.rank)],
        )
    }
}

/// Ranks whose collectives run slower than their peers' (the exporter's straggler score).
pub struct NcclStraggler {
    config: GpuConfig,
}

#[async_trait]
impl Detector for NcclStraggler {
    fn name(&self) -> &'static str {
        "nccl_straggler"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let sql = format!(
            "SELECT {}, median(value) AS score FROM metrics \
             WHERE metric_name = 'vigil_nccl_straggler_score' AND {} GROUP BY host, gpu, uuid, model, comm, rank",
            rank_columns(&self.config.hostname_label),
            window_clause(&self.config, now - self.config.window, now)
        );
        let batches = source.sql(&sql).await?;
        let keys = rank_keys(&batches)?;
        let score = floats(&batches, "score")?;
        let mut findings = Vec::new();
        for (key, score) in keys.iter().zip(score) {
            let Some(score) = score else { continue };
            let mut evidence = serde_json::Map::new();
            evidence.insert("straggler_score".into(), json!(score));
            evidence.insert("comm".into(), json!(key.comm));
            evidence.insert("rank".into(), json!(key.rank));
            evidence.insert("gpu_uuid".into(), json!(key.gpu.uuid));
            findings.push(Finding {
                labels: key.labels("NcclStraggler", self.name(), &self.config.hostname_label),
                severity: Severity::Warning,
                subject: key.subject(),
                score,
                threshold: self.config.straggler_score,
                active: score >= self.config.straggler_score,
                clear: score < self.config.straggler_score / 2.0,
                message: format!(
                    "{}: collectives take {:.0}% longer than its peers'",
                    key.subject(),
                    score * 100.0
                ),
                evidence,
            });
        }
        Ok(findings)
    }
}

/// A sustained shift (change point) in a rank's bus bandwidth: the current window's median
/// against the median of the trailing baseline window.
pub struct BusBandwidthShift {
    config: GpuConfig,
}

#[async_trait]
impl Detector for BusBandwidthShift {
    fn name(&self) -> &'static str {
        "nccl_busbw_shift"
    }
    fn lane(&self) -> &'static str {
        "gpu"
    }
    fn timing(&self) -> Timing {
        timing(&self.config)
    }
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let start = now - self.config.window;
        let sql = format!(
            "SELECT {}, attributes['coll'] AS coll, attributes['msg_size'] AS msg_size, \
             median(CASE WHEN time > {} THEN value END) AS current, \
             median(CASE WHEN time <= {} THEN value END) AS reference, \
             count(CASE WHEN time <= {} THEN value END) AS reference_samples \
             FROM metrics WHERE metric_name = 'vigil_nccl_coll_busbw_gbs' AND {} \
             GROUP BY host, gpu, uuid, model, comm, rank, coll, msg_size",
            rank_columns(&self.config.hostname_label),
            ts(start),
            ts(start),
            ts(start),
            window_clause(&self.config, start - self.config.baseline_window, now)
        );
        let batches = source.sql(&sql).await?;
        let keys = rank_keys(&batches)?;
        let current = floats(&batches, "current")?;
        let reference = floats(&batches, "reference")?;
        let samples = floats(&batches, "reference_samples")?;
        let coll = strings(&batches, "coll")?;
        let msg_size = strings(&batches, "msg_size")?;
        let mut findings = Vec::new();
        for i in 0..keys.len() {
            let (Some(now_bw), Some(ref_bw)) = (current[i], reference[i]) else {
                continue;
            };
            // A baseline needs some history; a fresh job has none yet.
            if samples[i].unwrap_or(0.0) < 6.0 || ref_bw <= 0.0 {
                continue;
            }
            let drop = (ref_bw - now_bw) / ref_bw;
            let key = &keys[i];
            let mut evidence = serde_json::Map::new();
            evidence.insert("busbw_gbs_now".into(), json!(now_bw));
            evidence.insert("busbw_gbs_baseline".into(), json!(ref_bw));
            evidence.insert("gpu_uuid".into(), json!(key.gpu.uuid));
            let mut labels = key.labels(
                "NcclBusBandwidthDrop",
                self.name(),
                &self.config.hostname_label,
            );
            labels.insert("coll".into(), coll[i].clone().unwrap_or_default());
            labels.insert("msg_size".into(), msg_size[i].clone().unwrap_or_default());
            findings.push(Finding {
                labels,
                severity: Severity::Warning,
                subject: key.subject(),
                score: drop,
                threshold: self.config.busbw_drop,
                active: drop >= self.config.busbw_drop,
                clear: drop < self.config.busbw_drop / 2.0,
                message: format!(
                    "{}: NCCL bus bandwidth {now_bw:.1} GB/s, {:.0}% below its baseline of {ref_bw:.1} GB/s",
                    key.subject(),
                    drop * 100.0
                ),
                evidence,
            });
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, MapBuilder, RecordBatch, StringArray, StringBuilder, TimestampNanosecondArray,
    };

    use super::*;

    const BASE: u64 = 1_800_000_000;

    fn second(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(BASE + s)
    }

    /// `vigil_gpu_up` samples of (host, gpu) at the given seconds.
    fn metrics(samples: &[(&str, &str, u64)]) -> datafusion::prelude::SessionContext {
        let mut attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for (host, gpu, _) in samples {
            for (key, value) in [
                ("Hostname", *host),
                ("gpu", *gpu),
                ("UUID", &format!("GPU-{host}-{gpu}")),
                ("modelName", "H100"),
            ] {
                attributes.keys().append_value(key);
                attributes.values().append_value(value);
            }
            attributes.append(true).unwrap();
        }
        let time: Vec<i64> = samples
            .iter()
            .map(|s| ((BASE + s.2) * 1_000_000_000) as i64)
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            (
                "metric_name",
                Arc::new(StringArray::from(vec!["vigil_gpu_up"; samples.len()])),
            ),
            ("attributes", Arc::new(attributes.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("metrics", Arc::new(table)).unwrap();
        ctx
    }

    /// Node a stops at t = 100 (both GPUs); node b's GPU 0 stops, its GPU 1 goes on. Each silent
    /// GPU is reported, and node a (not b) is held as a whole, for its alerts that name no GPU.
    #[tokio::test]
    async fn silent_gpus_are_reported_and_a_node_whose_gpus_are_all_silent_is_held() {
        let mut samples = Vec::new();
        for s in 0..300 {
            if s < 100 {
                samples.extend([("a", "0", s), ("a", "1", s), ("b", "0", s)]);
            }
            samples.push(("b", "1", s));
        }
        let ctx = metrics(&samples);
        let mut detector = SilentGpus {
            config: GpuConfig::default(),
            last_seen: HashMap::new(),
            read_until: None,
        };
        let findings = detector.evaluate(&ctx, second(299)).await.unwrap();
        let mut active: Vec<&str> = findings
            .iter()
            .filter(|f| f.active)
            .map(|f| f.subject.as_str())
            .collect();
        active.sort();
        assert_eq!(
            active,
            [
                "GPU 0 (GPU-a-0) on a",
                "GPU 0 (GPU-b-0) on b",
                "GPU 1 (GPU-a-1) on a"
            ]
        );
        let held_nodes: Vec<&BTreeMap<String, String>> = findings
            .iter()
            .filter(|f| !f.clear && !f.labels.contains_key("gpu"))
            .map(|f| &f.labels)
            .collect();
        assert_eq!(held_nodes.len(), 1, "{held_nodes:?}");
        assert_eq!(held_nodes[0]["Hostname"], "a");
        assert!(
            findings
                .iter()
                .all(|f| f.labels.contains_key("gpu") || !f.active)
        );
    }
}
