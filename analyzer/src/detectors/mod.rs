//! Detectors: each reads a window of data through SQL and returns one [`Finding`] per scope it
//! judged. Their timing (`for`, `resolve_after`) and thresholds come from the TOML config.

pub mod anomaly;
pub mod calls_dropped;
mod cusum;
pub mod drift;
pub mod golden_signals;
pub mod gpu;
pub mod model_silence;
pub mod named_series;
pub mod seasonal;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::AnalyzerError;
use crate::alert::Finding;
use crate::source::QuerySource;
use crate::state::Timing;

/// A detector.
#[async_trait]
pub trait Detector: Send + Sync {
    /// The `detector` label of its alerts.
    fn name(&self) -> &'static str;
    fn timing(&self) -> Timing;
    /// Whether this detector's findings that are not clear are scopes that went silent: the
    /// runner then holds the other detectors' firing alerts on those scopes instead of letting
    /// them resolve. (Such a detector runs first, so that the hold applies in the same round.)
    fn silences_scopes(&self) -> bool {
        false
    }
    /// `vigil serve` runs each lane on a schedule of its own, its detectors one after another
    /// in their order, so that a slow one (drift's tests over a day of calls) never holds up a
    /// fast one's alerts (a latency step). A detector that silences scopes shares the lane of
    /// the detectors whose alerts it holds, and runs before them.
    fn lane(&self) -> &'static str {
        self.name()
    }
    /// When this detector next has something new to judge, if it knows (a step of its series
    /// complete): its lane runs then, instead of waiting up to an `interval` for its next tick.
    fn next_due(&self) -> Option<SystemTime> {
        None
    }
    /// Judge every scope in the window ending at `now`.
    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError>;
}

/// The analyzer's configuration (`[analyzer]` in the TOML file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerConfig {
    /// Run the detectors inside `vigil serve`.
    pub enabled: bool,
    /// How often every detector runs (each lane of detectors on its own schedule).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Alerts one detector may have pending or firing at once. Past it, the highest-scoring
    /// scopes keep their alerts and one `TooManyAlerts` alert stands for the rest: any OTLP
    /// sender can make up ten thousand GPU UUIDs, and ten thousand pages help no one.
    pub max_alerts_per_detector: usize,
    /// GPU alerts name the LLM services and models served from their host while the fault held
    /// (one query over the hour of spans before it, per alerting host).
    pub served_models: bool,
    pub gpu: gpu::GpuConfig,
    pub drift: drift::DriftConfig,
    pub anomaly: golden_signals::AnomalyConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            enabled: true,
            interval: Duration::from_secs(5),
            max_alerts_per_detector: 50,
            served_models: true,
            gpu: gpu::GpuConfig::default(),
            drift: drift::DriftConfig::default(),
            anomaly: golden_signals::AnomalyConfig::default(),
        }
    }
}

impl AnalyzerConfig {
    /// Every enabled detector.
    pub fn detectors(&self) -> Vec<Box<dyn Detector>> {
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        if self.gpu.enabled {
            detectors.extend(gpu::detectors(&self.gpu));
        }
        if self.drift.enabled {
            // First: the models it finds silent hold their drift alerts in the same round.
            detectors.push(Box::new(model_silence::SilentModels::new(
                self.drift.clone(),
            )));
            detectors.push(Box::new(drift::DriftDetector::new(self.drift.clone())));
        }
        if self.anomaly.enabled {
            detectors.push(Box::new(golden_signals::GoldenSignals::new(
                self.anomaly.clone(),
            )));
            if !self.anomaly.series.is_empty() {
                detectors.push(Box::new(named_series::NamedSeries::new(
                    self.anomaly.clone(),
                )));
            }
        }
        detectors
    }
}

/// Durations in the config are written like `30s`, `10m`, `1h`.
pub mod humantime_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// A list of durations, each as `30s`, `10m`, …
    pub mod list {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(
            durations: &[Duration],
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(durations.len()))?;
            for duration in durations {
                seq.serialize_element(&humantime::format_duration(*duration).to_string())?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<Duration>, D::Error> {
            Vec::<String>::deserialize(deserializer)?
                .iter()
                .map(|text| {
                    humantime::parse_duration(text).map_err(|e| {
                        serde::de::Error::custom(format!(
                            "{text:?} is not a duration like 2s, 30s or 1m: {e}"
                        ))
                    })
                })
                .collect()
        }
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like 30s, 10m or 1h: {e}"
            ))
        })
    }
}

/// Labels of an alert: its name, its detector, then the scope.
pub(crate) fn alert_labels(
    alertname: &str,
    detector: &str,
    scope: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), alertname.to_string());
    labels.insert("detector".to_string(), detector.to_string());
    for (key, value) in scope {
        if !value.is_empty() {
            labels.insert((*key).to_string(), (*value).to_string());
        }
    }
    labels
}
