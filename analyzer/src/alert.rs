//! What a detector concludes, and the alerts made of it.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One detector's verdict on one scope (a GPU, a model in a service, …) in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Identify the alert: `alertname`, `detector` and the scope's labels (`Hostname`, `gpu`,
    /// `UUID`, `model`, `service`, …). The fingerprint is a hash of these.
    pub labels: BTreeMap<String, String>,
    pub severity: Severity,
    /// Human-readable scope, e.g. `GPU 3 (GPU-…) on node-7`.
    pub subject: String,
    pub score: f64,
    pub threshold: f64,
    /// The score is past the threshold.
    pub active: bool,
    /// The score is back inside the hysteresis band (clearly healthy). Between `active` and
    /// `clear`, a firing alert stays firing and a quiet one stays quiet.
    pub clear: bool,
    pub message: String,
    /// The values that moved, the window, test statistics: kept in the alert and sent as `x_`
    /// fields of the webhook.
    pub evidence: serde_json::Map<String, serde_json::Value>,
}

/// The evidence key of a scope seen but not judged (a reference still filling, too few
/// calls): its value says why. Such a finding is shown in `evaluations` and never touches an
/// alert's state, which goes on as if the scope had not been reported.
pub const NOT_JUDGED: &str = "not_judged";

impl Finding {
    /// A verdict, rather than a note that the scope could not be judged ([`NOT_JUDGED`]).
    pub fn judged(&self) -> bool {
        !self.evidence.contains_key(NOT_JUDGED)
    }
}

/// Whether an alert is firing or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An alert as delivered: firing or resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub status: AlertStatus,
    pub severity: Severity,
    pub subject: String,
    pub score: f64,
    pub threshold: f64,
    #[serde(with = "rfc3339")]
    pub starts_at: SystemTime,
    #[serde(with = "rfc3339_opt")]
    pub ends_at: Option<SystemTime>,
    /// When this state change happened.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub fingerprint: String,
    pub evidence: serde_json::Map<String, serde_json::Value>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over the sorted names and values, each
/// followed by the byte 0xff, as 16 hex digits; the same labels give the same fingerprint there.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hasher = fnv::FnvHasher::default();
    for (name, value) in labels {
        hasher.write(name.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    format!("{:016x}", hasher.finish())
}

/// RFC 3339 UTC with milliseconds, as Alertmanager writes times.
pub fn format_time(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(SystemTime::from)
        .map_err(|e| e.to_string())
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_time(*time))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&super::format_time(*time)),
            None => serializer.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| super::parse_time(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_alertmanagers_fnv64a_over_sorted_labels() {
        // Alertmanager: model.LabelSet{"alertname": "TestAlert"}.Fingerprint().
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "TestAlert".to_string());
        let one = fingerprint(&labels);
        assert_eq!(one.len(), 16);
        labels.insert("gpu".to_string(), "3".to_string());
        assert_ne!(fingerprint(&labels), one);
        let mut reordered = BTreeMap::new();
        reordered.insert("gpu".to_string(), "3".to_string());
        reordered.insert("alertname".to_string(), "TestAlert".to_string());
        assert_eq!(fingerprint(&reordered), fingerprint(&labels));
    }
}
