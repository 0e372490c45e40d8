//! The analyzer loop: every interval, run each lane of detectors, move alert states, record the
//! changes in the `alerts` table, and hand them to delivery.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, AsArray};
use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::broadcast;
use vigil_schemas::tables::{Table, new_string_map_builder};

use crate::AnalyzerError;
use crate::alert::{Alert, AlertStatus, Finding, Severity};
use crate::detectors::Detector;
use crate::findings::Evaluations;
use crate::health::AnalyzerHealth;
use crate::notify::Notifier;
use crate::source::QuerySource;
use crate::state::{AlertStates, Timing};

/// Where alert rows go (the collector's `alerts` table, through its WAL).
#[async_trait]
pub trait AlertSink: Send + Sync {
    async fn record(&self, batch: RecordBatch) -> Result<(), AnalyzerError>;
}

/// Alerts as rows of the `alerts` table.
pub fn alerts_batch(alerts: &[Alert]) -> Result<RecordBatch, AnalyzerError> {
    let n = alerts.len();
    let time: TimestampNanosecondArray = alerts
        .iter()
        .map(|a| {
            Some(
                a.at.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as i64,
            )
        })
        .collect::<TimestampNanosecondArray>()
        .with_timezone("UTC");
    let mut detector = StringDictionaryBuilder::<Int32Type>::new();
    let mut severity = StringDictionaryBuilder::<Int32Type>::new();
    let mut subject = StringBuilder::with_capacity(n, n * 48);
    let mut score = Float64Builder::with_capacity(n);
    let mut threshold = Float64Builder::with_capacity(n);
    let mut message = StringBuilder::with_capacity(n, n * 96);
    let mut state = StringDictionaryBuilder::<Int32Type>::new();
    let mut fingerprint = StringBuilder::with_capacity(n, n * 16);
    let mut labels = new_string_map_builder(n);
    for alert in alerts {
        detector.append_value(
            alert
                .labels
                .get("detector")
                .map(String::as_str)
                .unwrap_or(""),
        );
        severity.append_value(alert.severity.as_str());
        subject.append_value(&alert.subject);
        score.append_value(alert.score);
        threshold.append_value(alert.threshold);
        // The message carries the evidence, so that SQL alone shows what moved.
        let summary = alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_default();
        message.append_value(format!(
            "{summary} | evidence: {}",
            serde_json::Value::Object(alert.evidence.clone())
        ));
        state.append_value(alert.status.as_str());
        fingerprint.append_value(&alert.fingerprint);
        for (key, value) in &alert.labels {
            labels.keys().append_value(key);
            labels.values().append_value(value);
        }
        labels
            .append(true)
            .map_err(|e| AnalyzerError::Shape(e.to_string()))?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time),
        Arc::new(detector.finish()),
        Arc::new(severity.finish()),
        Arc::new(subject.finish()),
        Arc::new(score.finish()),
        Arc::new(threshold.finish()),
        Arc::new(message.finish()),
        Arc::new(state.finish()),
        Arc::new(fingerprint.finish()),
        Arc::new(labels.finish()),
    ];
    RecordBatch::try_new(Table::Alerts.schema(), columns)
        .map_err(|e| AnalyzerError::Shape(e.to_string()))
}

/// The analyzer.
pub struct Analyzer {
    detectors: Vec<Box<dyn Detector>>,
    states: AlertStates,
    source: Arc<dyn QuerySource>,
    sink: Option<Arc<dyn AlertSink>>,
    notifier: Option<Notifier>,
    events: broadcast::Sender<Alert>,
    health: Arc<AnalyzerHealth>,
    max_alerts_per_detector: usize,
    served_models: Option<ServedModels>,
    evaluations: Option<Arc<Evaluations>>,
}

/// Where GPU alerts look up the models served from their host (see [`crate::served`]).
#[derive(Debug, Clone)]
pub struct ServedModels {
    /// The alert label that carries the host name (`analyzer.gpu.hostname_label`).
    pub host_label: String,
    /// How long before an alert fired its fault began (about the detectors' window).
    pub lookback: Duration,
}

/// Keeps at most `max` active findings of one detector, preferring the scopes already alerting
/// and then the highest scores; the rest become one roll-up finding, which clears once the
/// detector is back under the cap.
fn cap_findings(
    detector: &str,
    mut findings: Vec<Finding>,
    max: usize,
    tracked: impl Fn(&Finding) -> bool,
) -> Vec<Finding> {
    let active = findings.iter().filter(|f| f.active).count();
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("alertname".to_string(), "TooManyAlerts".to_string());
    labels.insert("detector".to_string(), detector.to_string());
    if active <= max {
        findings.push(Finding {
            labels,
            severity: Severity::Warning,
            subject: format!("{detector}: more scopes than alerts"),
            score: active as f64,
            threshold: max as f64,
            active: false,
            clear: true,
            message: String::new(),
            evidence: Default::default(),
        });
        return findings;
    }
    let (mut hot, rest): (Vec<Finding>, Vec<Finding>) =
        findings.into_iter().partition(|f| f.active);
    hot.sort_by(|a, b| {
        tracked(b)
            .cmp(&tracked(a))
            .then(b.score.total_cmp(&a.score))
    });
    let over = hot.split_off(max);
    let severity = over
        .iter()
        .map(|f| f.severity)
        .max_by_key(|s| *s as u8)
        .unwrap_or(Severity::Warning);
    let examples: Vec<&str> = over.iter().take(5).map(|f| f.subject.as_str()).collect();
    let mut evidence = serde_json::Map::new();
    evidence.insert("scopes_over_cap".into(), over.len().into());
    evidence.insert("examples".into(), examples.clone().into());
    hot.push(Finding {
        labels,
        severity,
        subject: format!("{} more scopes of {detector}", over.len()),
        score: active as f64,
        threshold: max as f64,
        active: true,
        clear: false,
        message: format!(
            "{detector} found {active} scopes alerting; {max} have alerts of their own (analyzer.max_alerts_per_detector) and this one stands for the other {} (e.g. {}). So many at once is more often a flood of made-up series than a real fleet-wide fault: check who sends them.",
            over.len(),
            examples.join(", ")
        ),
        evidence,
    });
    hot.extend(rest);
    hot
}

/// Adds the models served from each GPU alert's host; a lookup that fails leaves the alert as
/// it was (the alert matters more than its context).
async fn add_served_models(source: &dyn QuerySource, served: &ServedModels, alerts: &mut [Alert]) {
    let mut looked_up: std::collections::BTreeMap<(String, SystemTime, SystemTime), Vec<_>> =
        Default::default();
    for alert in alerts.iter_mut() {
        let from_gpu_detector = alert
            .labels
            .get("detector")
            .is_some_and(|d| d.starts_with("gpu_") || d.starts_with("nccl_"));
        let Some(host) = alert.labels.get(&served.host_label).cloned() else {
            continue;
        };
        if !from_gpu_detector {
            continue;
        }
        let (from, to) = crate::served::fault_window(alert, served.lookback);
        let key = (host, from, to);
        if !looked_up.contains_key(&key) {
            if looked_up.len() >= crate::served::MAX_HOSTS_PER_ROUND {
                continue;
            }
            match crate::served::served_from(source, &key.0, from, to).await {
                Ok(models) => {
                    looked_up.insert(key.clone(), models);
                }
                Err(e) => {
                    tracing::warn!(host = %key.0, error = %e, "could not look up the models served from an alerting GPU's host");
                    continue;
                }
            }
        }
        crate::served::annotate(alert, &looked_up[&key]);
    }
}

impl Analyzer {
    pub fn new(
        detectors: Vec<Box<dyn Detector>>,
        source: Arc<dyn QuerySource>,
        sink: Option<Arc<dyn AlertSink>>,
        notifier: Option<Notifier>,
    ) -> Analyzer {
        let (events, _) = broadcast::channel(1024);
        let health = Arc::new(AnalyzerHealth::default());
        for detector in &detectors {
            health.register(detector.name());
        }
        Analyzer {
            detectors,
            states: AlertStates::default(),
            source,
            sink,
            notifier,
            events,
            health,
            max_alerts_per_detector: crate::AnalyzerConfig::default().max_alerts_per_detector,
            served_models: None,
            evaluations: None,
        }
    }

    /// Take back the alerts the `alerts` table says were firing when the analyzer last stopped.
    /// Returns how many.
    pub async fn restore(&mut self) -> Result<usize, AnalyzerError> {
        let sql = "SELECT arrow_cast(time, 'Int64') AS t, severity, subject, score, threshold, message, labels \
                   FROM (SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY time DESC) AS n FROM alerts) \
                   WHERE n = 1 AND state = 'firing'";
        let batches = self.source.sql(sql).await?;
        let times = crate::source::floats(&batches, "t")?;
        let severities = crate::source::strings(&batches, "severity")?;
        let subjects = crate::source::strings(&batches, "subject")?;
        let scores = crate::source::floats(&batches, "score")?;
        let thresholds = crate::source::floats(&batches, "threshold")?;
        let messages = crate::source::strings(&batches, "message")?;
        let mut labels = Vec::new();
        for batch in &batches {
            let column = batch
                .column_by_name("labels")
                .ok_or_else(|| AnalyzerError::Shape("alerts has no labels column".into()))?;
            let map = column.as_map();
            let keys = arrow::compute::cast(map.keys(), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| AnalyzerError::Shape(e.to_string()))?;
            let values = arrow::compute::cast(map.values(), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| AnalyzerError::Shape(e.to_string()))?;
            let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
            for row in 0..map.len() {
                let range =
                    map.value_offsets()[row] as usize..map.value_offsets()[row + 1] as usize;
                labels.push(
                    range
                        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                );
            }
        }
        for (i, labels) in labels.into_iter().enumerate() {
            let severity = match severities[i].as_deref() {
                Some("critical") => crate::alert::Severity::Critical,
                Some("info") => crate::alert::Severity::Info,
                _ => crate::alert::Severity::Warning,
            };
            let message = messages[i].clone().unwrap_or_default();
            let finding = crate::alert::Finding {
                labels,
                severity,
                subject: subjects[i].clone().unwrap_or_default(),
                score: scores[i].unwrap_or(0.0),
                threshold: thresholds[i].unwrap_or(0.0),
                active: true,
                clear: false,
                message: message
                    .split(" | evidence:")
                    .next()
                    .unwrap_or("")
                    .to_string(),
                evidence: Default::default(),
            };
            let since =
                SystemTime::UNIX_EPOCH + Duration::from_nanos(times[i].unwrap_or(0.0) as u64);
            self.states.restore(finding, since);
        }
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.resume_firing(&self.states.firing(SystemTime::now()));
        }
        Ok(times.len())
    }

    /// Every alert that fires or resolves, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.events.subscribe()
    }

    /// At most `max` alerts per detector (see `AnalyzerConfig::max_alerts_per_detector`).
    pub fn with_alert_cap(mut self, max: usize) -> Analyzer {
        self.max_alerts_per_detector = max.max(1);
        self
    }

    /// GPU and NCCL alerts name the models and services served from their host while the
    /// fault held (their evidence and annotations); needs a `spans` table in the source.
    pub fn with_served_models(mut self, served: ServedModels) -> Analyzer {
        self.served_models = Some(served);
        self
    }

    /// Each detector's runs and failures, shared with whoever reports them.
    /// Keep every detector's latest verdicts in `evaluations` (see [`crate::findings`]).
    pub fn with_evaluations(mut self, evaluations: Arc<Evaluations>) -> Analyzer {
        self.evaluations = Some(evaluations);
        self
    }

    pub fn health(&self) -> Arc<AnalyzerHealth> {
        self.health.clone()
    }

    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    /// Run every detector once as of `now`, one after another; returns the alerts that fired
    /// or resolved.
    pub async fn evaluate(&mut self, now: SystemTime) -> Vec<Alert> {
        let mut verdicts = Vec::with_capacity(self.detectors.len());
        for detector in &mut self.detectors {
            verdicts.push(judge(detector.as_mut(), self.source.as_ref(), now).await);
        }
        self.apply(verdicts, now).await
    }

    /// Takes one round's verdicts (of every detector, or of one lane), in the order the
    /// detectors ran; returns the alerts that fired or resolved, recorded and announced.
    async fn apply(&mut self, verdicts: Vec<Verdict>, now: SystemTime) -> Vec<Alert> {
        let mut changes = Vec::new();
        for verdict in verdicts {
            let Verdict {
                detector,
                timing,
                silences_scopes,
                took,
                outcome,
            } = verdict;
            match outcome {
                Ok(findings) => {
                    self.health.record(detector, Ok(()), now, took);
                    if let Some(evaluations) = &self.evaluations
                        && let Err(e) = evaluations.record(detector, &findings, now).await
                    {
                        tracing::warn!(detector, error = %e, "could not keep this round's verdicts in the evaluations table");
                    }
                    if silences_scopes {
                        let scopes = findings
                            .iter()
                            .filter(|f| !f.clear)
                            .map(|f| {
                                let mut scope = f.labels.clone();
                                scope.remove("alertname");
                                scope.remove("detector");
                                scope
                            })
                            .collect();
                        self.states.set_silent(detector, scopes);
                    }
                    // Notes that a scope could not be judged are for `evaluations` only.
                    let findings: Vec<Finding> =
                        findings.into_iter().filter(Finding::judged).collect();
                    let states = &self.states;
                    let findings =
                        cap_findings(detector, findings, self.max_alerts_per_detector, |f| {
                            states.tracks(&crate::alert::fingerprint(&f.labels))
                        });
                    changes.extend(self.states.apply(detector, findings, timing, now));
                }
                Err(e) => {
                    tracing::warn!(detector, error = %e, "detector failed this round");
                    self.health.record(detector, Err(e), now, took);
                }
            }
        }
        if changes.is_empty() {
            return changes;
        }
        if let Some(served) = &self.served_models {
            add_served_models(self.source.as_ref(), served, &mut changes).await;
        }
        if let Some(sink) = &self.sink {
            match alerts_batch(&changes) {
                Ok(batch) => {
                    if let Err(e) = sink.record(batch).await {
                        tracing::error!(error = %e, "could not record alerts in the alerts table");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not build alert rows"),
            }
        }
        for alert in &changes {
            match alert.status {
                AlertStatus::Firing => {
                    tracing::warn!(alert = alert.name(), subject = %alert.subject, score = alert.score, "alert firing")
                }
                AlertStatus::Resolved => {
                    tracing::info!(alert = alert.name(), subject = %alert.subject, "alert resolved")
                }
            }
            let _ = self.events.send(alert.clone());
        }
        if let Some(notifier) = &mut self.notifier {
            notifier.submit(&changes, now);
        }
        changes
    }

    /// Deliver what is due (webhooks from the outbox, Alertmanager pushes).
    pub async fn deliver(&mut self, now: SystemTime) {
        if let Some(notifier) = &mut self.notifier {
            if let Err(e) = notifier.flush_due(now) {
                tracing::error!(error = %e, "could not queue notifications in the outbox");
            }
            if let Err(e) = notifier.deliver_due(now).await {
                tracing::error!(error = %e, "outbox delivery failed");
            }
            notifier.push_alertmanagers(now).await;
        }
    }

    /// Queue the notifications that are due (webhooks and Alertmanagers are sent to by the
    /// tasks that `run` starts).
    fn queue(&mut self, now: SystemTime) {
        if let Some(notifier) = &mut self.notifier
            && let Err(e) = notifier.flush_due(now)
        {
            tracing::error!(error = %e, "could not queue notifications in the outbox");
        }
    }

    /// Evaluate every `interval`, each lane of detectors (see [`Detector::lane`]) on a task
    /// and schedule of its own, and queue notifications every half second until `shutdown`
    /// flips. Webhooks and Alertmanagers are sent to by a task of their own, so that a receiver
    /// that never answers cannot hold up detection.
    pub async fn run(
        mut self,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        // Webhooks and Alertmanagers each in a task of their own: a hung receiver of one kind
        // delays neither detection nor the other kind.
        let mut tasks = Vec::new();
        if let Some(notifier) = self.notifier.as_ref() {
            let deliverer = notifier.deliverer();
            tasks.push(every_half_second(shutdown.clone(), move || {
                let deliverer = deliverer.clone();
                async move {
                    if let Err(e) = deliverer.deliver_due(SystemTime::now()).await {
                        tracing::error!(error = %e, "outbox delivery failed");
                    }
                }
            }));
            let pusher = notifier.pusher();
            tasks.push(every_half_second(shutdown.clone(), move || {
                let pusher = pusher.clone();
                async move { pusher.push_due(SystemTime::now()).await }
            }));
        }
        // The lanes judge; this task alone keeps the alert states, so every change is applied
        // in one place, in the order each lane's detectors ran.
        let lanes = into_lanes(std::mem::take(&mut self.detectors));
        let (verdicts_tx, mut verdicts_rx) = tokio::sync::mpsc::channel(lanes.len().max(1));
        for lane in lanes {
            tasks.push(tokio::spawn(run_lane(
                lane,
                self.source.clone(),
                interval,
                verdicts_tx.clone(),
                shutdown.clone(),
            )));
        }
        drop(verdicts_tx);
        let mut queue = tokio::time::interval(Duration::from_millis(500));
        queue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some((now, verdicts)) = verdicts_rx.recv() => {
                    self.apply(verdicts, now).await;
                }
                _ = queue.tick() => {
                    self.queue(SystemTime::now());
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(verdicts_rx);
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// One detector's round: what it found (or why it could not judge), and how long it took.
struct Verdict {
    detector: &'static str,
    timing: Timing,
    silences_scopes: bool,
    took: Duration,
    outcome: Result<Vec<Finding>, String>,
}

/// Runs one detector's round. A detector that panics fails this round, as one that returns an
/// error does, instead of taking the analyzer down with it.
async fn judge(detector: &mut dyn Detector, source: &dyn QuerySource, now: SystemTime) -> Verdict {
    let started = std::time::Instant::now();
    let outcome = match std::panic::AssertUnwindSafe(detector.evaluate(source, now))
        .catch_unwind()
        .await
    {
        Ok(Ok(findings)) => Ok(findings),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
    };
    Verdict {
        detector: detector.name(),
        timing: detector.timing(),
        silences_scopes: detector.silences_scopes(),
        took: started.elapsed(),
        outcome,
    }
}

/// The detectors grouped by lane, each lane in the order of its first detector, each
/// detector in its lane in the order given.
fn into_lanes(detectors: Vec<Box<dyn Detector>>) -> Vec<Vec<Box<dyn Detector>>> {
    let mut lanes: Vec<(&'static str, Vec<Box<dyn Detector>>)> = Vec::new();
    for detector in detectors {
        let lane = detector.lane();
        match lanes.iter_mut().find(|(name, _)| *name == lane) {
            Some((_, members)) => members.push(detector),
            None => lanes.push((lane, vec![detector])),
        }
    }
    lanes.into_iter().map(|(_, members)| members).collect()
}

/// Runs one lane's detectors every `interval`, and as soon as one of them has something due
/// (see [`Detector::next_due`]), and sends their verdicts, until `shutdown` flips (a round
/// under way is abandoned).
async fn run_lane(
    mut lane: Vec<Box<dyn Detector>>,
    source: Arc<dyn QuerySource>,
    interval: Duration,
    verdicts: tokio::sync::mpsc::Sender<(SystemTime, Vec<Verdict>)>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut next_tick = tokio::time::Instant::now();
    let mut last_round = None;
    loop {
        // A little past the due time: the system clock and the monotonic one may disagree by
        // a few milliseconds, and a round a hair early finds nothing yet. And a second after
        // the last round at the soonest: a round that failed leaves its step due.
        let due = lane.iter().filter_map(|d| d.next_due()).min().map(|at| {
            let due = tokio::time::Instant::now()
                + at.duration_since(SystemTime::now()).unwrap_or_default()
                + Duration::from_millis(20);
            last_round.map_or(due, |last: tokio::time::Instant| {
                due.max(last + Duration::from_secs(1))
            })
        });
        let wake = due.map_or(next_tick, |due| due.min(next_tick));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.changed() => break,
        }
        let started = tokio::time::Instant::now();
        last_round = Some(started);
        if started >= next_tick {
            next_tick = started + interval;
        }
        let now = SystemTime::now();
        let round = async {
            let mut round = Vec::with_capacity(lane.len());
            for detector in &mut lane {
                round.push(judge(detector.as_mut(), source.as_ref(), now).await);
            }
            round
        };
        let round = tokio::select! {
            round = round => round,
            _ = shutdown.changed() => break,
        };
        if verdicts.send((now, round)).await.is_err() {
            break;
        }
    }
}

/// Runs `round` every half second until `shutdown` flips.
fn every_half_second<F, Fut>(
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    round: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => round().await,
                _ = shutdown.changed() => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::prelude::SessionContext;
    use parking_lot::Mutex;

    use super::*;
    use crate::alert::{Finding, Severity};
    use crate::notify::{AlertingConfig, AlertmanagerConfig};
    use crate::state::{AlertStates, Timing};

    /// A detector that reports every scope it is fed as alerting, as the XID counter detector
    /// does when a sender makes up ten thousand GPU UUIDs.
    struct Flood {
        scopes: usize,
    }

    #[async_trait]
    impl Detector for Flood {
        fn name(&self) -> &'static str {
            "gpu_counters"
        }
        fn timing(&self) -> Timing {
            Timing {
                for_duration: Duration::ZERO,
                resolve_after: Duration::ZERO,
            }
        }
        async fn evaluate(
            &mut self,
            _source: &dyn crate::source::QuerySource,
            _now: SystemTime,
        ) -> Result<Vec<Finding>, AnalyzerError> {
            Ok((0..self.scopes)
                .map(|i| {
                    let mut labels = BTreeMap::new();
                    labels.insert("alertname".to_string(), "GpuXidError".to_string());
                    labels.insert("detector".to_string(), "gpu_counters".to_string());
                    labels.insert("UUID".to_string(), format!("GPU-forged-{i}"));
                    Finding {
                        labels,
                        severity: Severity::Critical,
                        subject: format!("GPU-forged-{i}"),
                        score: i as f64,
                        threshold: 1.0,
                        active: true,
                        clear: false,
                        message: "XID 79".into(),
                        evidence: Default::default(),
                    }
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn ten_thousand_forged_gpus_raise_at_most_the_cap_and_one_roll_up() {
        let detector = Box::new(Flood { scopes: 10_000 });
        let mut analyzer =
            Analyzer::new(vec![detector], Arc::new(SessionContext::new()), None, None)
                .with_alert_cap(20);
        let now = SystemTime::now();
        let fired = analyzer.evaluate(now).await;
        assert_eq!(fired.len(), 21, "20 of their own and one roll-up");
        let roll_up: Vec<_> = fired
            .iter()
            .filter(|a| a.labels["alertname"] == "TooManyAlerts")
            .collect();
        assert_eq!(roll_up.len(), 1);
        assert_eq!(roll_up[0].severity, Severity::Critical);
        assert!(
            roll_up[0].subject.starts_with("9980 more scopes"),
            "{}",
            roll_up[0].subject
        );
        // The highest scores keep their own alerts.
        assert!(fired.iter().any(|a| a.subject == "GPU-forged-9999"));
        // The next round changes nothing: the same scopes keep their alerts, no flapping.
        assert!(
            analyzer
                .evaluate(now + Duration::from_secs(5))
                .await
                .is_empty()
        );
        // Back under the cap: the roll-up resolves.
        analyzer.detectors = vec![Box::new(Flood { scopes: 3 })];
        let changes = analyzer.evaluate(now + Duration::from_secs(10)).await;
        assert!(
            changes
                .iter()
                .any(|a| a.labels["alertname"] == "TooManyAlerts"
                    && a.status == AlertStatus::Resolved),
            "{changes:?}"
        );
    }

    /// A detector in a lane of its own whose rounds take `delay`, then fail by panicking or
    /// find nothing.
    struct Slow {
        delay: Duration,
        panics: bool,
    }

    #[async_trait]
    impl Detector for Slow {
        fn name(&self) -> &'static str {
            "drift"
        }
        fn timing(&self) -> Timing {
            Flood { scopes: 0 }.timing()
        }
        async fn evaluate(
            &mut self,
            _source: &dyn crate::source::QuerySource,
            _now: SystemTime,
        ) -> Result<Vec<Finding>, AnalyzerError> {
            tokio::time::sleep(self.delay).await;
            assert!(!self.panics, "a bug in a detector");
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_slow_detector_holds_up_no_other_lanes_alerts_nor_the_shutdown() {
        let slow = Box::new(Slow {
            delay: Duration::from_secs(60),
            panics: false,
        });
        // The slow lane runs first, as drift runs before the golden signals.
        let analyzer = Analyzer::new(
            vec![slow, Box::new(Flood { scopes: 1 })],
            Arc::new(SessionContext::new()),
            None,
            None,
        );
        let mut events = analyzer.subscribe();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(analyzer.run(Duration::from_millis(100), stopped));
        let alert = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the fast lane alerts while the slow lane's round is under way")
            .unwrap();
        assert_eq!(alert.subject, "GPU-forged-0");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("a round under way does not hold up the shutdown")
            .unwrap();
    }

    /// A detector that always has a step overdue and fails to read it, counting its rounds.
    struct Overdue {
        rounds: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl Detector for Overdue {
        fn name(&self) -> &'static str {
            "golden_signals"
        }
        fn timing(&self) -> Timing {
            Flood { scopes: 0 }.timing()
        }
        fn next_due(&self) -> Option<SystemTime> {
            Some(SystemTime::UNIX_EPOCH)
        }
        async fn evaluate(
            &mut self,
            _source: &dyn crate::source::QuerySource,
            _now: SystemTime,
        ) -> Result<Vec<Finding>, AnalyzerError> {
            self.rounds
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(AnalyzerError::Shape("the store is away".into()))
        }
    }

    /// A step due runs the lane before its next tick; a step that stays due (its round failed)
    /// is tried again a second later, not in a busy loop.
    #[tokio::test]
    async fn a_lane_runs_when_a_step_is_due_and_retries_a_failed_one_each_second() {
        let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let analyzer = Analyzer::new(
            vec![Box::new(Overdue {
                rounds: rounds.clone(),
            })],
            Arc::new(SessionContext::new()),
            None,
            None,
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(analyzer.run(Duration::from_secs(3600), stopped));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.send(true).unwrap();
        running.await.unwrap();
        let rounds = rounds.load(std::sync::atomic::Ordering::SeqCst);
        assert!((2..=4).contains(&rounds), "{rounds} rounds in 2.5 s");
    }

    #[tokio::test]
    async fn a_detector_that_panics_fails_its_round_and_the_others_go_on() {
        let buggy = Box::new(Slow {
            delay: Duration::ZERO,
            panics: true,
        });
        let mut analyzer = Analyzer::new(
            vec![buggy, Box::new(Flood { scopes: 1 })],
            Arc::new(SessionContext::new()),
            None,
            None,
        );
        let now = SystemTime::now();
        assert_eq!(analyzer.evaluate(now).await.len(), 1);
        assert_eq!(analyzer.evaluate(now).await.len(), 0);
        let health = analyzer.health().snapshot();
        assert_eq!(health["drift"].failures, 2);
        assert!(
            health["drift"]
                .last_error
                .as_deref()
                .unwrap()
                .contains("panicked: a bug in a detector"),
            "{:?}",
            health["drift"]
        );
        assert_eq!(health["gpu_counters"].failures, 0);
    }

    /// The same scope as `Flood`'s first, seen but not judged (as the drift detector reports a
    /// model whose reference is still filling).
    struct NotJudged;

    #[async_trait]
    impl Detector for NotJudged {
        fn name(&self) -> &'static str {
            "gpu_counters"
        }
        fn timing(&self) -> Timing {
            Flood { scopes: 0 }.timing()
        }
        async fn evaluate(
            &mut self,
            source: &dyn crate::source::QuerySource,
            now: SystemTime,
        ) -> Result<Vec<Finding>, AnalyzerError> {
            let mut findings = Flood { scopes: 1 }.evaluate(source, now).await?;
            findings[0].active = false;
            findings[0]
                .evidence
                .insert(crate::alert::NOT_JUDGED.into(), "too few calls".into());
            Ok(findings)
        }
    }

    /// A note that a scope could not be judged neither fires nor keeps a firing alert alive: the
    /// alert goes on as if the scope had not been reported (here, resolving at once).
    #[tokio::test]
    async fn a_scope_not_judged_does_not_hold_its_alert() {
        let mut analyzer = Analyzer::new(
            vec![Box::new(Flood { scopes: 1 })],
            Arc::new(SessionContext::new()),
            None,
            None,
        );
        let now = SystemTime::now();
        assert_eq!(analyzer.evaluate(now).await.len(), 1);
        analyzer.detectors = vec![Box::new(NotJudged)];
        let changes = analyzer.evaluate(now + Duration::from_secs(5)).await;
        assert!(
            changes.len() == 1 && changes[0].status == AlertStatus::Resolved,
            "{changes:?}"
        );
        assert!(
            analyzer
                .evaluate(now + Duration::from_secs(10))
                .await
                .is_empty()
        );
    }

    /// An Alertmanager forgets an alert it stops hearing about, so an alert that was firing
    /// before a restart must keep being pushed after it.
    #[tokio::test]
    async fn alerts_firing_before_a_restart_are_pushed_to_alertmanager_again() {
        let pushed = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::post({
                let pushed = pushed.clone();
                move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                    pushed.lock().push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        // The alerts table as the previous run left it: one alert fired, never resolved.
        let fired_at = SystemTime::now() - Duration::from_secs(600);
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "GpuClockLow".to_string());
        labels.insert("gpu".to_string(), "3".to_string());
        let finding = Finding {
            labels,
            severity: Severity::Warning,
            subject: "GPU 3".to_string(),
            score: 9.0,
            threshold: 4.0,
            active: true,
            clear: false,
            message: "SM clock 20% below its peers".to_string(),
            evidence: Default::default(),
        };
        let timing = Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(60),
        };
        let fired = AlertStates::default().apply("peer", vec![finding], timing, fired_at);
        assert_eq!(fired.len(), 1);
        let context = SessionContext::new();
        context
            .register_batch("alerts", alerts_batch(&fired).unwrap())
            .unwrap();

        let outbox = tempfile::tempdir().unwrap();
        let config = AlertingConfig {
            alertmanagers: vec![AlertmanagerConfig {
                url: format!("http://{address}"),
                ..AlertmanagerConfig::default()
            }],
            ..AlertingConfig::default()
        };
        let notifier = Notifier::new(config, outbox.path().to_path_buf()).unwrap();
        let mut analyzer = Analyzer::new(Vec::new(), Arc::new(context), None, Some(notifier));
        assert_eq!(analyzer.restore().await.unwrap(), 1);
        let now = SystemTime::now();
        analyzer.deliver(now).await;

        let pushed = pushed.lock().clone();
        assert_eq!(pushed.len(), 1, "one push: {pushed:?}");
        let alerts = pushed[0].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["labels"]["alertname"], "GpuClockLow");
        assert_eq!(alerts[0]["labels"]["gpu"], "3");
        let starts_at = alerts[0]["startsAt"].as_str().unwrap();
        let ends_at = alerts[0]["endsAt"].as_str().unwrap();
        let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap();
        assert_eq!(
            parse(starts_at).timestamp(),
            chrono::DateTime::<chrono::Utc>::from(fired_at).timestamp(),
            "starts when it first fired, not at the restart"
        );
        assert!(
            parse(ends_at) > chrono::DateTime::<chrono::Utc>::from(now),
            "still firing: endsAt {ends_at} is in the future"
        );
        server.abort();
    }
}
