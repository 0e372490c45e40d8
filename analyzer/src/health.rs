//! Whether each detector ran: a detector that fails every round raises no alert, so its silence
//! must not pass for health. Shared with `/metrics`, the status endpoint and `vigil alerts`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

/// One detector's record.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DetectorHealth {
    /// Rounds run, failed or not.
    pub runs: u64,
    /// Rounds that failed.
    pub failures: u64,
    /// Failed rounds since the last one that succeeded (0: the last round succeeded).
    pub consecutive_failures: u64,
    /// The last failure, as the log said it.
    pub last_error: Option<String>,
    /// When it last failed, in RFC 3339.
    pub last_error_at: Option<String>,
    /// How long its last round took, in seconds: a slow detector delays only its own lane.
    pub last_round_seconds: f64,
}

/// A `/metrics` family: name, type, help, and the value it reads from a record.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DetectorHealth) -> f64,
);

/// Every detector's record, by detector name.
#[derive(Debug, Default)]
pub struct AnalyzerHealth {
    detectors: Mutex<BTreeMap<&'static str, DetectorHealth>>,
}

impl AnalyzerHealth {
    /// Registers a detector before its first round, so that it shows with zero counts.
    pub fn register(&self, detector: &'static str) {
        self.detectors.lock().entry(detector).or_default();
    }

    /// Records one round of `detector`, which took `took`.
    pub fn record(
        &self,
        detector: &'static str,
        outcome: Result<(), String>,
        now: SystemTime,
        took: Duration,
    ) {
        let mut detectors = self.detectors.lock();
        let health = detectors.entry(detector).or_default();
        health.runs += 1;
        health.last_round_seconds = took.as_secs_f64();
        match outcome {
            Ok(()) => health.consecutive_failures = 0,
            Err(error) => {
                health.failures += 1;
                health.consecutive_failures += 1;
                health.last_error = Some(error);
                health.last_error_at =
                    Some(chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339());
            }
        }
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> BTreeMap<&'static str, DetectorHealth> {
        self.detectors.lock().clone()
    }

    /// Whether any detector's last round failed.
    pub fn degraded(&self) -> bool {
        self.detectors
            .lock()
            .values()
            .any(|h| h.consecutive_failures > 0)
    }

    /// The status document: `{"degraded": bool, "detectors": {name: DetectorHealth}}`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "degraded": self.degraded(),
            "detectors": self.snapshot(),
        })
    }

    /// The families for `/metrics`, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let detectors = self.snapshot();
        let families: [Family; 4] = [
            (
                "vigil_analyzer_detector_runs_total",
                "counter",
                "Rounds each detector ran, failed or not.",
                |h| h.runs as f64,
            ),
            (
                "vigil_analyzer_detector_failures_total",
                "counter",
                "Rounds each detector failed (it raised and resolved nothing in them).",
                |h| h.failures as f64,
            ),
            (
                "vigil_analyzer_detector_failing",
                "gauge",
                "1 while a detector's last round failed: the analyzer is degraded.",
                |h| f64::from(u8::from(h.consecutive_failures > 0)),
            ),
            (
                "vigil_analyzer_detector_round_seconds",
                "gauge",
                "How long each detector's last round took.",
                |h| h.last_round_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (detector, health) in &detectors {
                let _ = writeln!(out, "{name}{{detector=\"{detector}\"}} {}", value(health));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_detector_is_counted_until_it_succeeds_again() {
        let health = AnalyzerHealth::default();
        health.register("drift");
        health.register("gpu_xid");
        let now = SystemTime::now();
        health.record("drift", Ok(()), now, Duration::from_millis(250));
        assert!(!health.degraded());
        health.record(
            "gpu_xid",
            Err("object not found".into()),
            now,
            Duration::ZERO,
        );
        health.record(
            "gpu_xid",
            Err("object not found".into()),
            now,
            Duration::ZERO,
        );
        assert!(health.degraded());
        let status = health.status();
        assert_eq!(status["degraded"], true);
        assert_eq!(status["detectors"]["gpu_xid"]["consecutive_failures"], 2);
        assert_eq!(
            status["detectors"]["gpu_xid"]["last_error"],
            "object not found"
        );
        let mut page = String::new();
        health.render(&mut page);
        assert!(page.contains("vigil_analyzer_detector_failures_total{detector=\"gpu_xid\"} 2\n"));
        assert!(page.contains("vigil_analyzer_detector_failures_total{detector=\"drift\"} 0\n"));
        assert!(page.contains("vigil_analyzer_detector_failing{detector=\"gpu_xid\"} 1\n"));
        assert!(page.contains("vigil_analyzer_detector_round_seconds{detector=\"drift\"} 0.25\n"));
        health.record("gpu_xid", Ok(()), now, Duration::ZERO);
        assert!(!health.degraded());
        assert_eq!(health.snapshot()["gpu_xid"].failures, 2);
    }
}
