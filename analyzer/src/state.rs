//! The life of an alert: ok → pending → firing → resolved, with a `for` duration before firing and
//! a `resolve_after` duration (plus the finding's hysteresis band) before resolving, so that an
//! alert neither fires on one noisy evaluation nor flaps at the threshold.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::alert::{Alert, AlertStatus, Finding, fingerprint};

/// Timing of one detector's alerts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long a finding must stay active before the alert fires.
    pub for_duration: Duration,
    /// How long a firing alert's scope must stay clear (or unreported) before it resolves.
    pub resolve_after: Duration,
}

#[derive(Debug, Clone)]
enum Phase {
    Pending {
        since: SystemTime,
    },
    Firing {
        since: SystemTime,
        clear_since: Option<SystemTime>,
        last: Box<Finding>,
    },
}

/// Alert states of every scope of every detector.
#[derive(Debug, Default)]
pub struct AlertStates {
    phases: HashMap<String, Phase>,
    /// Scopes (their labels, less `alertname` and `detector`) that stopped reporting, by the
    /// detector that found them silent.
    silent: HashMap<String, Vec<BTreeMap<String, String>>>,
}

impl AlertStates {
    /// Sets the scopes that stopped reporting: a firing alert whose labels include all of one
    /// scope's labels is held firing while it goes unreported, instead of resolving.
    pub fn set_silent(&mut self, detector: &str, scopes: Vec<BTreeMap<String, String>>) {
        self.silent.insert(detector.to_string(), scopes);
    }

    fn is_silent(&self, labels: &BTreeMap<String, String>) -> bool {
        self.silent
            .values()
            .flatten()
            .any(|scope| !scope.is_empty() && scope.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Whether the alert with this fingerprint is pending or firing.
    pub fn tracks(&self, fingerprint: &str) -> bool {
        self.phases.contains_key(fingerprint)
    }

    /// Apply one evaluation of one detector: `findings` are every scope it judged; a firing scope
    /// it did not report counts as clear. Returns the alerts that fired or resolved now.
    pub fn apply(
        &mut self,
        detector: &str,
        findings: Vec<Finding>,
        timing: Timing,
        now: SystemTime,
    ) -> Vec<Alert> {
        let mut changes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for finding in findings {
            let key = fingerprint(&finding.labels);
            seen.insert(key.clone());
            let phase = self.phases.remove(&key);
            let next = match phase {
                None if finding.active => {
                    if timing.for_duration.is_zero() {
                        changes.push(to_alert(
                            &finding,
                            AlertStatus::Firing,
                            now,
                            None,
                            now,
                            &key,
                        ));
                        Some(Phase::Firing {
                            since: now,
                            clear_since: None,
                            last: Box::new(finding),
                        })
                    } else {
                        Some(Phase::Pending { since: now })
                    }
                }
                None => None,
                Some(Phase::Pending { since }) if finding.active => {
                    if now.duration_since(since).unwrap_or_default() >= timing.for_duration {
                        changes.push(to_alert(
                            &finding,
                            AlertStatus::Firing,
                            since,
                            None,
                            now,
                            &key,
                        ));
                        Some(Phase::Firing {
                            since,
                            clear_since: None,
                            last: Box::new(finding),
                        })
                    } else {
                        Some(Phase::Pending { since })
                    }
                }
                Some(Phase::Pending { .. }) => None,
                Some(Phase::Firing {
                    since,
                    clear_since,
                    last,
                }) => {
                    if finding.clear {
                        let clear_since = clear_since.unwrap_or(now);
                        if now.duration_since(clear_since).unwrap_or_default()
                            >= timing.resolve_after
                        {
                            changes.push(to_alert(
                                &finding,
                                AlertStatus::Resolved,
                                since,
                                Some(now),
                                now,
                                &key,
                            ));
                            None
                        } else {
                            Some(Phase::Firing {
                                since,
                                clear_since: Some(clear_since),
                                last,
                            })
                        }
                    } else {
                        // Still active, or inside the hysteresis band: keep firing with fresh evidence.
                        Some(Phase::Firing {
                            since,
                            clear_since: None,
                            last: Box::new(finding),
                        })
                    }
                }
            };
            if let Some(next) = next {
                self.phases.insert(key, next);
            }
        }
        // Scopes this detector owns but did not report (no data any more): they count as clear.
        let prefix_labels = |finding: &Finding| {
            finding.labels.get("detector").map(String::as_str) == Some(detector)
        };
        let unreported: Vec<String> = self
            .phases
            .iter()
            .filter(|(key, phase)| {
                !seen.contains(*key)
                    && match phase {
                        Phase::Firing { last, .. } => prefix_labels(last),
                        Phase::Pending { .. } => false,
                    }
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in unreported {
            if let Some(Phase::Firing {
                since,
                clear_since,
                last,
            }) = self.phases.remove(&key)
            {
                if self.is_silent(&last.labels) {
                    // Not reported because its scope went silent, not because it cleared.
                    self.phases.insert(
                        key,
                        Phase::Firing {
                            since,
                            clear_since: None,
                            last,
                        },
                    );
                    continue;
                }
                let clear_since = clear_since.unwrap_or(now);
                if now.duration_since(clear_since).unwrap_or_default() >= timing.resolve_after {
                    changes.push(to_alert(
                        &last,
                        AlertStatus::Resolved,
                        since,
                        Some(now),
                        now,
                        &key,
                    ));
                } else {
                    self.phases.insert(
                        key,
                        Phase::Firing {
                            since,
                            clear_since: Some(clear_since),
                            last,
                        },
                    );
                }
            }
        }
        changes
    }

    /// Take back an alert that was firing before a restart, so that it resolves (and is not
    /// raised a second time) when its detector next judges its scope.
    pub fn restore(&mut self, finding: Finding, since: SystemTime) {
        let key = fingerprint(&finding.labels);
        self.phases.insert(
            key,
            Phase::Firing {
                since,
                clear_since: None,
                last: Box::new(finding),
            },
        );
    }

    /// The alerts firing now.
    pub fn firing(&self, now: SystemTime) -> Vec<Alert> {
        self.phases
            .iter()
            .filter_map(|(key, phase)| match phase {
                Phase::Firing { since, last, .. } => {
                    Some(to_alert(last, AlertStatus::Firing, *since, None, now, key))
                }
                Phase::Pending { .. } => None,
            })
            .collect()
    }
}

fn to_alert(
    finding: &Finding,
    status: AlertStatus,
    starts_at: SystemTime,
    ends_at: Option<SystemTime>,
    at: SystemTime,
    key: &str,
) -> Alert {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert("summary".to_string(), finding.message.clone());
    annotations.insert("subject".to_string(), finding.subject.clone());
    Alert {
        labels: finding.labels.clone(),
        annotations,
        status,
        severity: finding.severity,
        subject: finding.subject.clone(),
        score: finding.score,
        threshold: finding.threshold,
        starts_at,
        ends_at,
        at,
        fingerprint: key.to_string(),
        evidence: finding.evidence.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use std::collections::BTreeMap;

    fn finding(score: f64) -> Finding {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".into(), "GpuClockLow".into());
        labels.insert("detector".into(), "peer".into());
        labels.insert("gpu".into(), "3".into());
        Finding {
            labels,
            severity: Severity::Warning,
            subject: "GPU 3".into(),
            score,
            threshold: 4.0,
            active: score >= 4.0,
            clear: score < 3.0,
            message: "clock low".into(),
            evidence: Default::default(),
        }
    }

    #[test]
    fn pends_fires_holds_in_the_band_and_resolves_after_the_delay() {
        let timing = Timing {
            for_duration: Duration::from_secs(10),
            resolve_after: Duration::from_secs(20),
        };
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s);
        let mut states = AlertStates::default();
        assert!(
            states
                .apply("peer", vec![finding(5.0)], timing, t(0))
                .is_empty(),
            "pending"
        );
        assert!(
            states
                .apply("peer", vec![finding(2.0)], timing, t(5))
                .is_empty(),
            "back to ok"
        );
        assert!(
            states
                .apply("peer", vec![finding(5.0)], timing, t(10))
                .is_empty()
        );
        let fired = states.apply("peer", vec![finding(6.0)], timing, t(20));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert_eq!(fired[0].starts_at, t(10));
        // Inside the band (3..4): neither active nor clear, keeps firing.
        assert!(
            states
                .apply("peer", vec![finding(3.5)], timing, t(30))
                .is_empty()
        );
        assert_eq!(states.firing(t(30)).len(), 1);
        // Clear, but not for long enough; then a relapse resets the clock.
        assert!(
            states
                .apply("peer", vec![finding(1.0)], timing, t(40))
                .is_empty()
        );
        assert!(
            states
                .apply("peer", vec![finding(4.5)], timing, t(50))
                .is_empty()
        );
        assert!(
            states
                .apply("peer", vec![finding(1.0)], timing, t(60))
                .is_empty()
        );
        let resolved = states.apply("peer", vec![finding(1.0)], timing, t(80));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].ends_at, Some(t(80)));
        assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
        assert!(states.firing(t(80)).is_empty());
    }

    #[test]
    fn a_scope_that_stops_reporting_resolves() {
        let timing = Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(10),
        };
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s);
        let mut states = AlertStates::default();
        assert_eq!(
            states.apply("peer", vec![finding(9.0)], timing, t(0)).len(),
            1
        );
        assert!(states.apply("peer", vec![], timing, t(5)).is_empty());
        assert!(
            states.apply("other", vec![], timing, t(20)).is_empty(),
            "another detector's round"
        );
        let resolved = states.apply("peer", vec![], timing, t(20));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
    }

    /// Two detectors find scopes silent (GPUs, models); the second's round must not drop the
    /// first's holds: a drift alert of a silent model stays firing through a GPU round.
    #[test]
    fn silent_scopes_of_every_silencing_detector_hold_their_alerts() {
        let timing = Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(10),
        };
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s);
        let scope = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut drift = finding(9.0);
        drift.labels = scope(&[
            ("alertname", "ModelDrift"),
            ("detector", "drift"),
            ("service", "chat"),
            ("model", "gpt-4o"),
        ]);
        let mut states = AlertStates::default();
        assert_eq!(states.apply("drift", vec![drift], timing, t(0)).len(), 1);
        states.set_silent(
            "model_silence",
            vec![scope(&[("service", "chat"), ("model", "gpt-4o")])],
        );
        states.set_silent("gpu_silence", vec![scope(&[("gpu", "3")])]);
        assert!(states.apply("drift", vec![], timing, t(5)).is_empty());
        assert!(
            states.apply("drift", vec![], timing, t(60)).is_empty(),
            "held"
        );
        assert_eq!(states.firing(t(60)).len(), 1);
        // Called again (and still no verdict): the hold ends and it resolves after the delay.
        states.set_silent("model_silence", vec![]);
        assert!(states.apply("drift", vec![], timing, t(61)).is_empty());
        let resolved = states.apply("drift", vec![], timing, t(71));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
    }

    #[test]
    fn a_restored_alert_is_not_raised_again_and_resolves_when_clear() {
        let timing = Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(10),
        };
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s);
        let mut states = AlertStates::default();
        states.restore(finding(9.0), t(0));
        assert!(
            states
                .apply("peer", vec![finding(9.0)], timing, t(5))
                .is_empty(),
            "still firing, no new alert"
        );
        assert!(
            states
                .apply("peer", vec![finding(1.0)], timing, t(10))
                .is_empty()
        );
        let resolved = states.apply("peer", vec![finding(1.0)], timing, t(20));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].starts_at, t(0));
    }
}
