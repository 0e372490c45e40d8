//! Models that stopped being called. The drift detector judges the calls that arrive, so a model
//! whose traffic stops raises nothing there, and its `ModelDrift` alert would resolve as if the
//! model had recovered: silence is not health. A model (in a service) that goes quiet for much
//! longer than its usual gap between calls gets `ModelStoppedReporting`, and the runner holds its
//! other alerts while the silence lasts (see [`Detector::silences_scopes`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;

use super::drift::DriftConfig;
use super::{Detector, alert_labels};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, strings, ts};
use crate::state::Timing;

/// Silences shorter than this many usual gaps are the traffic's own rhythm, not a stop.
const GAPS_BEFORE_SILENT: f64 = 10.0;
/// Past this many usual gaps (and [`HOLD_AFTER_AT_LEAST`]) the scope's other alerts are held:
/// its windows are thinning out, so its detectors stop judging it before it is called silent.
const GAPS_BEFORE_HOLD: f64 = 3.0;
const HOLD_AFTER_AT_LEAST: Duration = Duration::from_secs(120);

/// What is known of one (service, model).
#[derive(Debug, Clone)]
struct Seen {
    first: SystemTime,
    last: SystemTime,
    calls: u64,
}

impl Seen {
    /// The usual time between two calls, over everything seen of it.
    fn gap(&self) -> Option<Duration> {
        let span = self.last.duration_since(self.first).ok()?;
        (self.calls >= 2).then(|| span / (self.calls - 1) as u32)
    }
}

pub struct SilentModels {
    config: DriftConfig,
    seen: HashMap<(String, String), Seen>,
    /// The end of the window last read; the next read starts a little before it, for late spans.
    read_until: Option<SystemTime>,
}

impl SilentModels {
    pub fn new(config: DriftConfig) -> Self {
        SilentModels {
            config,
            seen: HashMap::new(),
            read_until: None,
        }
    }
}

#[async_trait]
impl Detector for SilentModels {
    fn name(&self) -> &'static str {
        "model_silence"
    }
    fn lane(&self) -> &'static str {
        "drift"
    }

    fn timing(&self) -> Timing {
        // The silence itself is the wait; it ends the moment a call arrives.
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
        if self.config.silent_after.is_zero() {
            return Ok(Vec::new());
        }
        // Reading spans is the costly part, and silence is measured in minutes: read as often as
        // the drift tests run; in between, judge what is known against the new `now`.
        let due = self.read_until.is_none_or(|until| {
            now.duration_since(until).unwrap_or_default() >= self.config.evaluate_every
        });
        if due {
            self.read(source, now).await?;
        }
        Ok(self.findings(now))
    }
}

impl SilentModels {
    /// Reads what was called since the last read (and a little before it, for late spans).
    async fn read(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<(), AnalyzerError> {
        // Spans are stored at their start and arrive after they end: read back over the last
        // read's tail for late ones, but count each call once.
        let late = self.config.settle + Duration::from_secs(60);
        let (from, counted_from) = match self.read_until {
            Some(until) => (until - late, until),
            // After a start, what was called in the drift detector's horizon.
            None => {
                let start = now - (self.config.reference_length + self.config.window);
                (start, start)
            }
        };
        let sql = format!(
            "SELECT service_name AS service, response_model, request_model, \
             count(*) FILTER (WHERE time > {counted}) AS calls, \
             arrow_cast(min(time), 'Int64') AS first_ns, arrow_cast(max(time), 'Int64') AS last_ns \
             FROM spans WHERE time > {from} AND time <= {now} \
             AND (response_model IS NOT NULL OR request_model IS NOT NULL) GROUP BY 1, 2, 3",
            counted = ts(counted_from),
            from = ts(from),
            now = ts(now),
        );
        let batches = source.sql(&sql).await?;
        let service = strings(&batches, "service")?;
        // The model as the drift detector names it; grouped by both columns here, because
        // grouping by a computed one copies every row it reads.
        let response_model = strings(&batches, "response_model")?;
        let request_model = strings(&batches, "request_model")?;
        let model: Vec<Option<String>> = response_model
            .into_iter()
            .zip(request_model)
            .map(|(response, request)| response.or(request))
            .collect();
        let calls = floats(&batches, "calls")?;
        let first = floats(&batches, "first_ns")?;
        let last = floats(&batches, "last_ns")?;
        let at = |ns: f64| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.max(0.0) as u64);
        for i in 0..service.len() {
            let (Some(first), Some(last)) = (first[i], last[i]) else {
                continue;
            };
            let key = (
                service[i].clone().unwrap_or_default(),
                model[i].clone().unwrap_or_default(),
            );
            let seen = self.seen.entry(key).or_insert(Seen {
                first: at(first),
                last: at(last),
                calls: 0,
            });
            seen.first = seen.first.min(at(first));
            seen.last = seen.last.max(at(last));
            seen.calls += calls[i].unwrap_or(0.0) as u64;
        }
        self.read_until = Some(now);
        Ok(())
    }

    /// Every (service, model) known, judged as of `now`.
    fn findings(&mut self, now: SystemTime) -> Vec<Finding> {
        let forget_after = self.config.forget_after;
        self.seen
            .retain(|_, seen| now.duration_since(seen.last).unwrap_or_default() < forget_after);

        let mut findings = Vec::new();
        // Roll-ups (a model across services, a service across models, all traffic) are silent
        // when every scope under them is: the drift detector judges those too.
        let mut rollups: BTreeMap<(String, String), bool> = BTreeMap::new();
        for ((service, model), seen) in &self.seen {
            let silent = now.duration_since(seen.last).unwrap_or_default();
            // Too few calls to know a rhythm (the drift detector cannot judge it either): no
            // alert of its own, but it still keeps its roll-ups from being called silent.
            let gap = seen
                .gap()
                .filter(|_| seen.calls >= self.config.min_samples as u64);
            let hold_after =
                HOLD_AFTER_AT_LEAST.max(gap.unwrap_or_default().mul_f64(GAPS_BEFORE_HOLD));
            let held = silent >= hold_after;
            for rollup in [
                ("*".to_string(), model.clone()),
                (service.clone(), "*".to_string()),
                ("*".to_string(), "*".to_string()),
            ] {
                *rollups.entry(rollup).or_insert(true) &= held;
            }
            let Some(gap) = gap else {
                continue;
            };
            let silent_after = self
                .config
                .silent_after
                .max(gap.mul_f64(GAPS_BEFORE_SILENT));
            let since = chrono::DateTime::<chrono::Utc>::from(seen.last).to_rfc3339();
            let subject = format!("model {model} in service {service}");
            let mut evidence = serde_json::Map::new();
            evidence.insert("last_call".into(), json!(since));
            evidence.insert("silent_seconds".into(), json!(silent.as_secs()));
            evidence.insert("usual_gap_seconds".into(), json!(gap.as_secs_f64()));
            evidence.insert("silent_after_seconds".into(), json!(silent_after.as_secs()));
            findings.push(Finding {
                labels: alert_labels(
                    "ModelStoppedReporting",
                    self.name(),
                    &[("service", service), ("model", model)],
                ),
                severity: Severity::Warning,
                subject: subject.clone(),
                score: silent.as_secs_f64(),
                threshold: silent_after.as_secs_f64(),
                active: silent >= silent_after,
                clear: !held,
                message: format!(
                    "{subject}: no calls since {since} ({} s; it usually sees one every {:.1} s); the service, its exporter or the network to vigil is down, or its traffic moved to another model, and its other alerts are held until it is called again",
                    silent.as_secs(),
                    gap.as_secs_f64()
                ),
                evidence,
            });
        }
        let names: BTreeSet<&(String, String)> = rollups.keys().collect();
        for (service, model) in names {
            if rollups[&(service.clone(), model.clone())] {
                // Never an alert of its own (its parts have theirs); not clear, so it holds.
                findings.push(Finding {
                    labels: alert_labels(
                        "ModelStoppedReporting",
                        self.name(),
                        &[("service", service), ("model", model)],
                    ),
                    severity: Severity::Warning,
                    subject: format!("service {service}, model {model}"),
                    score: 0.0,
                    threshold: 1.0,
                    active: false,
                    clear: false,
                    message: String::new(),
                    evidence: serde_json::Map::new(),
                });
            }
        }
        findings
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray};

    use super::*;

    /// Calls of (service, model) at the given seconds.
    fn spans(calls: &[(&str, &str, u64)]) -> RecordBatch {
        let time: Vec<i64> = calls
            .iter()
            .map(|c| (BASE + c.2) as i64 * 1_000_000_000)
            .collect();
        let service: Vec<&str> = calls.iter().map(|c| c.0).collect();
        let model: Vec<&str> = calls.iter().map(|c| c.1).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            ("service_name", Arc::new(StringArray::from(service))),
            ("request_model", Arc::new(StringArray::from(model.clone()))),
            ("response_model", Arc::new(StringArray::from(model))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn context(batch: RecordBatch) -> datafusion::prelude::SessionContext {
        let ctx = datafusion::prelude::SessionContext::new();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        ctx
    }

    /// Tests' seconds start here, so that the first read's look-back stays after the epoch.
    const BASE: u64 = 1_800_000_000;

    fn second(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(BASE + s)
    }

    fn find<'a>(findings: &'a [Finding], service: &str, model: &str) -> Option<&'a Finding> {
        findings
            .iter()
            .find(|f| f.labels["service"] == service && f.labels["model"] == model)
    }

    /// `busy` is called every second until t = 1000 and then stops; `rare` is called every 100 s
    /// throughout; `few` only three times. Only `busy` is reported silent, once its silence is
    /// much longer than its rhythm; `rare`'s 100 s gaps are its normal weather.
    #[tokio::test]
    async fn a_model_that_stops_is_reported_after_its_own_rhythm_not_before() {
        let mut calls = Vec::new();
        for s in 0..1000 {
            calls.push(("chat", "busy", s));
        }
        for s in (0..3000).step_by(100) {
            calls.push(("chat", "rare", s));
        }
        calls.extend([
            ("chat", "few", 10),
            ("chat", "few", 20),
            ("chat", "few", 30),
        ]);
        let ctx = context(spans(&calls));
        let config = DriftConfig {
            min_samples: 10,
            silent_after: Duration::from_secs(600),
            reference_length: Duration::from_secs(3600),
            ..DriftConfig::default()
        };
        let mut detector = SilentModels::new(config);

        let findings = detector.evaluate(&ctx, second(1060)).await.unwrap();
        let busy = find(&findings, "chat", "busy").unwrap();
        assert!(!busy.active && busy.clear, "{busy:?}");
        assert!(
            find(&findings, "chat", "few").is_none(),
            "too few calls to judge"
        );

        // 3 minutes quiet: held (its drift windows are thinning), not yet an alert.
        let findings = detector.evaluate(&ctx, second(1180)).await.unwrap();
        let busy = find(&findings, "chat", "busy").unwrap();
        assert!(!busy.active && !busy.clear, "{busy:?}");
        // The service's roll-up is not held: `rare` is still called.
        assert!(find(&findings, "chat", "*").is_none());
        assert!(find(&findings, "*", "busy").is_some_and(|f| !f.clear && !f.active));

        // Past silent_after: an alert, naming the usual gap.
        let findings = detector.evaluate(&ctx, second(1700)).await.unwrap();
        let busy = find(&findings, "chat", "busy").unwrap();
        assert!(busy.active, "{busy:?}");
        assert_eq!(busy.labels["alertname"], "ModelStoppedReporting");
        assert!(busy.message.contains("every 1.0 s"), "{}", busy.message);
        // `rare` at 100 s into a 100 s gap is fine, and its count was not doubled by the overlap
        // of successive reads.
        let rare = find(&findings, "chat", "rare").unwrap();
        assert!(!rare.active && rare.clear, "{rare:?}");
        assert_eq!(detector.seen[&("chat".into(), "rare".into())].calls, 18);
    }

    #[tokio::test]
    async fn silent_after_zero_turns_it_off() {
        let ctx = context(spans(&[("a", "m", 1), ("a", "m", 2)]));
        let mut detector = SilentModels::new(DriftConfig {
            silent_after: Duration::ZERO,
            ..DriftConfig::default()
        });
        assert!(
            detector
                .evaluate(&ctx, second(5000))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
