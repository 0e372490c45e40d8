//! "Something just broke": the LLM golden signals of every service and every model in it (request
//! rate per step and over a minute, error ratio over five minutes, p50/p95 latency,
//! p50 time to first token, output tokens/s, cost per hour), binned at `resolution`, each scored
//! by its own [`StreamingAnomaly`]. A step whose score
//! reaches `threshold` raises `LlmSignalAnomaly` on that series, saying when it began, how far it
//! is from the expected band, and the SQL that shows the spans behind it.
//!
//! State is restored from the store, not from scratch: the first evaluation replays the trailing
//! `history` of spans through the scorers (without alerting), so a restart neither forgets what
//! normal looks like nor waits out a new warm-up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::anomaly::{AnomalyParams, Scored, StreamingAnomaly};
use super::{Detector, alert_labels};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, quote, strings, ts};
use crate::state::Timing;

/// `[analyzer.anomaly]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// Width of one step of every signal.
    #[serde(with = "super::humantime_serde")]
    pub resolution: Duration,
    /// How far behind now a step must end before it is judged: spans are stored at their start
    /// and arrive after they end and after the exporter's batch delay.
    #[serde(with = "super::humantime_serde")]
    pub settle: Duration,
    /// Spans replayed through the scorers when the analyzer starts.
    #[serde(with = "super::humantime_serde")]
    pub history: Duration,
    /// The sensitivity knob: a step whose score (in [0, 1]) reaches this alerts. Lower finds
    /// more and raises more false alarms (EVALUATION.md measures both).
    pub threshold: f64,
    /// Steps of a series learned from before it can alert (its range and spread).
    pub warmup: usize,
    /// Series judged at most; a sender inventing services cannot grow the analyzer without
    /// bound. Series past it are not scored (and a warning is logged once).
    pub max_series: usize,
    /// A series with no calls for this long is forgotten.
    #[serde(with = "super::humantime_serde")]
    pub forget_after: Duration,
    /// How long an anomalous step keeps its alert firing after the series looks normal again.
    #[serde(with = "super::humantime_serde")]
    pub resolve_after: Duration,
    /// Series of the user's own, by SQL (`[[analyzer.anomaly.series]]`), scored the same way.
    pub series: Vec<super::named_series::NamedSeriesConfig>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            resolution: Duration::from_secs(10),
            settle: Duration::from_secs(10),
            history: Duration::from_secs(2 * 3600),
            threshold: 0.81,
            warmup: 90,
            max_series: 500,
            forget_after: Duration::from_secs(3600),
            resolve_after: Duration::from_secs(300),
            series: Vec::new(),
        }
    }
}

/// The signals of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    RequestRate,
    RequestRateMinute,
    ErrorRatioFiveMinutes,
    LatencyP50,
    LatencyP95,
    TtftP50,
    OutputTokenRate,
    CostPerHour,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::RequestRate,
        Signal::RequestRateMinute,
        Signal::ErrorRatioFiveMinutes,
        Signal::LatencyP50,
        Signal::LatencyP95,
        Signal::TtftP50,
        Signal::OutputTokenRate,
        Signal::CostPerHour,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::RequestRate => "requests_per_second",
            Signal::RequestRateMinute => "requests_per_second_1m",
            Signal::ErrorRatioFiveMinutes => "error_ratio_5m",
            Signal::LatencyP50 => "latency_p50_ms",
            Signal::LatencyP95 => "latency_p95_ms",
            Signal::TtftP50 => "ttft_p50_ms",
            Signal::OutputTokenRate => "output_tokens_per_second",
            Signal::CostPerHour => "cost_usd_per_hour",
        }
    }

    /// What the scorer sees: counts and sums of counts on a square-root scale, ratios of counts
    /// on an arcsine-root scale, where their noise is about as wide at every level (at night's
    /// few calls as at noon's many); a z-score on the raw values would see every quiet hour's
    /// chance 0-or-2 as a shock.
    fn scored(self, value: f64) -> f64 {
        match self {
            Signal::RequestRate
            | Signal::RequestRateMinute
            | Signal::OutputTokenRate
            | Signal::CostPerHour => value.max(0.0).sqrt(),
            Signal::ErrorRatioFiveMinutes => value.clamp(0.0, 1.0).sqrt().asin(),
            Signal::LatencyP50 | Signal::LatencyP95 | Signal::TtftP50 => value,
        }
    }

    /// The inverse of [`Signal::scored`], for the expected value and band in alerts.
    fn unscored(self, scored: f64) -> f64 {
        match self {
            Signal::RequestRate
            | Signal::RequestRateMinute
            | Signal::OutputTokenRate
            | Signal::CostPerHour => scored.max(0.0).powi(2),
            Signal::ErrorRatioFiveMinutes => {
                scored.clamp(0.0, std::f64::consts::FRAC_PI_2).sin().powi(2)
            }
            Signal::LatencyP50 | Signal::LatencyP95 | Signal::TtftP50 => scored,
        }
    }

    /// Whether one step past the threshold needs the next to confirm it. The medians of a
    /// step's calls are steady enough to be believed at once (a latency step is caught one step
    /// sooner); rates, counts, ratios and the p95 of a few dozen calls are not.
    fn needs_confirmation(self) -> bool {
        !matches!(self, Signal::LatencyP50 | Signal::TtftP50)
    }

    /// Errors are what users see; the rest is warning until a person looks.
    fn severity(self) -> Severity {
        match self {
            Signal::ErrorRatioFiveMinutes | Signal::RequestRate | Signal::RequestRateMinute => {
                Severity::Critical
            }
            _ => Severity::Warning,
        }
    }
}

/// A service (`model` = "*": all its models) or a model in a service.
pub type Scope = (String, String);

/// The aggregates of one scope in one step: read from `spans` in `vigil serve`, drawn from a
/// simulation in `vigil eval anomaly`. Latencies in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Step {
    pub calls: f64,
    pub errors: f64,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub ttft_p50: Option<f64>,
    pub output_tokens: Option<f64>,
    pub cost: Option<f64>,
}

/// Calls and errors of a scope's last steps, for the signals taken over longer than a step.
#[derive(Debug, Clone, Default)]
struct Recent {
    steps: VecDeque<(f64, f64)>,
}

impl Recent {
    fn push(&mut self, calls: f64, errors: f64) {
        if self.steps.len() == LONGEST_SPAN_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back((calls, errors));
    }

    /// (calls, errors) of the last `steps` steps, once that many are known.
    fn sum(&self, steps: usize) -> Option<(f64, f64)> {
        (self.steps.len() >= steps).then(|| {
            self.steps
                .iter()
                .rev()
                .take(steps)
                .fold((0.0, 0.0), |(c, e), (calls, errors)| {
                    (c + calls, e + errors)
                })
        })
    }
}

/// Steps of the request rate over a minute and the error ratio over five (at 10-second steps):
/// at a few calls a second one step holds too few calls, and too few errors, to show a halved
/// rate or a tripled error ratio.
const MINUTE_STEPS: usize = 6;
const LONGEST_SPAN_STEPS: usize = 30;
/// How far (in standard deviations) the step after an anomalous one must still be, the same
/// way, to confirm it; and how far a series must stay for its anomaly to stay open.
const CONFIRM_SIGMAS: f64 = 4.0;
/// Calls in five minutes below which the error ratio is not judged (one error in 20 calls is
/// 5%, and means nothing yet).
const MIN_CALLS_FOR_ERROR_RATIO: f64 = 100.0;

/// One series: its scorer and the episode it is in.
pub(crate) struct Series {
    scorer: StreamingAnomaly,
    last: Option<(SystemTime, f64, Scored)>,
    /// When the current anomalous episode began, and its worst step.
    episode: Option<Episode>,
    /// A step past the threshold waiting for the next to confirm it: (at, value, score, above
    /// the expected).
    pending: Option<(SystemTime, f64, Scored, bool)>,
    /// The scope has reported cost at least once (otherwise cost is not a signal of it).
    has_cost: bool,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    began: SystemTime,
    last_active: SystemTime,
    worst: (SystemTime, f64, Scored),
}

impl Series {
    pub(crate) fn new(warmup: usize) -> Self {
        Series {
            scorer: StreamingAnomaly::new(AnomalyParams {
                warmup,
                ..AnomalyParams::default()
            }),
            last: None,
            episode: None,
            pending: None,
            has_cost: false,
        }
    }

    /// Scores one step's `value` (`scored_value` on the scorer's scale) and moves the series'
    /// anomaly: `judging` is the threshold and `resolve_after` when the step may alert, None
    /// while replaying history.
    pub(crate) fn update(
        &mut self,
        at: SystemTime,
        value: f64,
        scored_value: f64,
        needs_confirmation: bool,
        judging: Option<(f64, Duration)>,
    ) {
        let scored = self.scorer.score(scored_value);
        self.last = Some((at, value, scored));
        let above = scored_value >= scored.mean;
        let anomalous = judging.is_some_and(|(threshold, _)| scored.score >= threshold);
        // A step past the threshold on a signal whose single steps are noisy (rates, counts,
        // tails) opens an anomaly only when the next step is still off the same way: chance
        // spikes last one step, incidents do not.
        if self.episode.is_none() && needs_confirmation {
            let pending = self.pending.take();
            if let Some(first) = pending
                && judging.is_some()
                && first.3 == above
                && scored.z >= CONFIRM_SIGMAS
            {
                let worst = if scored.score > first.2.score {
                    (at, value, scored)
                } else {
                    (first.0, first.1, first.2)
                };
                self.episode = Some(Episode {
                    began: first.0,
                    last_active: at,
                    worst,
                });
            } else if anomalous {
                self.pending = Some((at, value, scored, above));
            }
            return;
        }
        match (&mut self.episode, anomalous) {
            (Some(episode), true) => {
                episode.last_active = at;
                if scored.score > episode.worst.2.score {
                    episode.worst = (at, value, scored);
                }
            }
            (None, true) => {
                self.episode = Some(Episode {
                    began: at,
                    last_active: at,
                    worst: (at, value, scored),
                })
            }
            (Some(episode), false) => {
                let resolve_after = judging.map_or(Duration::ZERO, |(_, after)| after);
                // Still off the way it went keeps the anomaly open (the score of a lasting
                // shift falls once it is no longer a new high).
                if scored.z >= CONFIRM_SIGMAS {
                    episode.last_active = at;
                } else if at.duration_since(episode.last_active).unwrap_or_default()
                    >= resolve_after
                {
                    self.episode = None;
                }
            }
            (None, false) => {}
        }
    }

    /// This series' finding (None before its first step): `labels` and `subject` name it,
    /// `config` gives the threshold and resolution, `unscored` turns the scorer's scale back
    /// into the value's, `evidence` is added to.
    pub(crate) fn finding(
        &self,
        labels: BTreeMap<String, String>,
        severity: Severity,
        subject: String,
        config: &AnomalyConfig,
        unscored: impl Fn(f64) -> f64,
        mut evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Finding> {
        let (at, value, scored) = self.last?;
        let (shown_at, shown_value, shown) =
            self.episode.map(|e| e.worst).unwrap_or((at, value, scored));
        let expected = unscored(shown.mean);
        let low = unscored(shown.mean - 3.0 * shown.std_dev);
        let high = unscored(shown.mean + 3.0 * shown.std_dev);
        let rfc3339 = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
        evidence.insert("value".into(), json!(shown_value));
        evidence.insert("at".into(), json!(rfc3339(shown_at)));
        evidence.insert("expected".into(), json!(expected));
        evidence.insert("expected_band".into(), json!([low, high]));
        evidence.insert("deviation_sigmas".into(), json!(shown.z));
        evidence.insert("novel_pattern".into(), json!(shown.novel));
        evidence.insert(
            "resolution_seconds".into(),
            json!(config.resolution.as_secs()),
        );
        if let Some(episode) = self.episode {
            evidence.insert("began".into(), json!(rfc3339(episode.began)));
        }
        let direction = if shown_value >= expected {
            "above"
        } else {
            "below"
        };
        Some(Finding {
            labels,
            severity,
            subject: subject.clone(),
            score: shown.score,
            threshold: config.threshold,
            active: self.episode.is_some(),
            clear: self.episode.is_none(),
            message: format!(
                "{subject} is {shown_value:.4} at {}, {direction} the expected {expected:.4} by {:.1} standard deviations (band {low:.4} to {high:.4}){}",
                rfc3339(shown_at),
                shown.z,
                if shown.novel {
                    "; a pattern this series has not made before"
                } else {
                    ""
                }
            ),
            evidence,
        })
    }

    /// When the series' current anomaly began.
    pub(crate) fn began(&self) -> Option<SystemTime> {
        self.episode.map(|e| e.began)
    }
}

/// Which steps to read at `now`: from where, to the last complete step (`until`), and whether
/// they may alert. The first read replays `history` quietly (a restart restores what normal
/// looks like from the store); so does a stall longer than `history`, rather than judging a
/// flood of stale steps at once.
pub(crate) fn steps_due(
    next_step: Option<SystemTime>,
    until: SystemTime,
    history: Duration,
) -> (SystemTime, bool) {
    let oldest = until.checked_sub(history).unwrap_or(until);
    match next_step {
        Some(next) if next >= oldest => (next, true),
        _ => (oldest, false),
    }
}

/// The end of the last step of `resolution` that is complete at `now`, `settle` included.
pub(crate) fn complete_until(
    now: SystemTime,
    resolution: Duration,
    settle: Duration,
) -> SystemTime {
    let res = resolution.as_secs().max(1);
    let settled = now
        .checked_sub(settle)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(settled / res * res)
}

pub struct GoldenSignals {
    config: AnomalyConfig,
    series: HashMap<(Scope, Signal), Series>,
    last_call: HashMap<Scope, SystemTime>,
    recent: HashMap<Scope, Recent>,
    /// Start of the next step to read (None before the first, restoring, read).
    next_step: Option<SystemTime>,
    warned_full: bool,
}

impl GoldenSignals {
    pub fn new(config: AnomalyConfig) -> Self {
        GoldenSignals {
            config,
            series: HashMap::new(),
            last_call: HashMap::new(),
            recent: HashMap::new(),
            next_step: None,
            warned_full: false,
        }
    }

    fn resolution_secs(&self) -> u64 {
        self.config.resolution.as_secs().max(1)
    }

    async fn read(
        &self,
        source: &dyn QuerySource,
        from: SystemTime,
        until: SystemTime,
    ) -> Result<BTreeMap<SystemTime, HashMap<Scope, Step>>, AnalyzerError> {
        let res = self.resolution_secs();
        // One pass with two grouping sets: per model in a service, and per service (model NULL);
        // percentiles cannot be added up from the models' own. A call failed when its status
        // is error (stored lower-case) or it carries `error.type`, as in `llm_minutes`.
        let sql = format!(
            "SELECT service_name AS service, coalesce(response_model, request_model) AS model, \
             CAST(date_bin(INTERVAL '{res} seconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS step, \
             count(*) AS calls, \
             sum(CASE WHEN lower(status_code) = 'error' OR error_type IS NOT NULL THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS latency_p50, \
             approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS latency_p95, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ns) / 1e6 AS ttft_p50, \
             sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost \
             FROM spans WHERE time >= {} AND time < {} \
             AND (response_model IS NOT NULL OR request_model IS NOT NULL) \
             GROUP BY GROUPING SETS ((service_name, coalesce(response_model, request_model), step), (service_name, step))",
            ts(from),
            ts(until),
        );
        let batches = source.sql(&sql).await?;
        let service = strings(&batches, "service")?;
        let model = strings(&batches, "model")?;
        let step = floats(&batches, "step")?;
        let calls = floats(&batches, "calls")?;
        let errors = floats(&batches, "errors")?;
        let p50 = floats(&batches, "latency_p50")?;
        let p95 = floats(&batches, "latency_p95")?;
        let ttft = floats(&batches, "ttft_p50")?;
        let output = floats(&batches, "output_tokens")?;
        let cost = floats(&batches, "cost")?;
        let mut steps: BTreeMap<SystemTime, HashMap<Scope, Step>> = BTreeMap::new();
        for i in 0..service.len() {
            let (Some(service), Some(step_ns)) = (&service[i], step[i]) else {
                continue;
            };
            // Steps are whole seconds; the f64 the column came through is not exact in nanoseconds.
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_secs((step_ns.max(0.0) / 1e9).round() as u64);
            let model = model[i].clone().unwrap_or_else(|| "*".to_string());
            steps.entry(at).or_default().insert(
                (service.clone(), model),
                Step {
                    calls: calls[i].unwrap_or(0.0),
                    errors: errors[i].unwrap_or(0.0),
                    latency_p50: p50[i],
                    latency_p95: p95[i],
                    ttft_p50: ttft[i],
                    output_tokens: output[i],
                    cost: cost[i],
                },
            );
        }
        Ok(steps)
    }

    /// Feeds every step in [from, until) to the scorers.
    fn learn(
        &mut self,
        steps: &BTreeMap<SystemTime, HashMap<Scope, Step>>,
        from: SystemTime,
        until: SystemTime,
        alerting: bool,
    ) {
        let res = self.config.resolution.max(Duration::from_secs(1));
        let empty = HashMap::new();
        let mut at = from;
        while at < until {
            self.observe_step(at, steps.get(&at).unwrap_or(&empty), alerting);
            at += res;
        }
    }

    /// Feeds one step (starting at `at`) of every scope to the scorers: known scopes without
    /// calls in it get a request rate (and token rate, cost) of zero; latencies need calls.
    /// `alerting` false learns without opening anomalies (a replayed history).
    pub fn observe_step(&mut self, at: SystemTime, here: &HashMap<Scope, Step>, alerting: bool) {
        let res = self
            .config
            .resolution
            .max(Duration::from_secs(1))
            .as_secs_f64();
        let per_second = 1.0 / res;
        for scope in here.keys() {
            self.last_call.insert(scope.clone(), at);
        }
        let forget_after = self.config.forget_after;
        self.last_call
            .retain(|_, last| at.duration_since(*last).unwrap_or_default() < forget_after);
        let scopes: Vec<Scope> = self.last_call.keys().cloned().collect();
        for scope in scopes {
            let step = here.get(&scope).copied().unwrap_or_default();
            let recent = self.recent.entry(scope.clone()).or_default();
            recent.push(step.calls, step.errors);
            let minute = recent.sum(MINUTE_STEPS);
            let five_minutes = recent.sum(LONGEST_SPAN_STEPS);
            for signal in Signal::ALL {
                let value = match signal {
                    Signal::RequestRate => Some(step.calls * per_second),
                    Signal::RequestRateMinute => {
                        minute.map(|(calls, _)| calls * per_second / MINUTE_STEPS as f64)
                    }
                    Signal::ErrorRatioFiveMinutes => five_minutes
                        .filter(|(calls, _)| *calls >= MIN_CALLS_FOR_ERROR_RATIO)
                        .map(|(calls, errors)| errors / calls),
                    // A percentile of a handful of calls is one call's latency.
                    Signal::LatencyP50 => step.latency_p50.filter(|_| step.calls >= 10.0),
                    Signal::LatencyP95 => step.latency_p95.filter(|_| step.calls >= 20.0),
                    Signal::TtftP50 => step.ttft_p50.filter(|_| step.calls >= 10.0),
                    Signal::OutputTokenRate => Some(step.output_tokens.unwrap_or(0.0) * per_second),
                    Signal::CostPerHour => Some(step.cost.unwrap_or(0.0) * per_second * 3600.0),
                };
                let Some(value) = value else { continue };
                self.observe(&scope, signal, at, value, step.cost.is_some(), alerting);
            }
        }
        let known: HashSet<&Scope> = self.last_call.keys().collect();
        self.series.retain(|(scope, _), _| known.contains(scope));
        self.recent.retain(|scope, _| known.contains(scope));
    }

    fn observe(
        &mut self,
        scope: &Scope,
        signal: Signal,
        at: SystemTime,
        value: f64,
        has_cost: bool,
        alerting: bool,
    ) {
        let key = (scope.clone(), signal);
        if !self.series.contains_key(&key) {
            if self.series.len() >= self.config.max_series {
                if !self.warned_full {
                    tracing::warn!(
                        max_series = self.config.max_series,
                        "anomaly detector: series limit reached; new services and models are not scored (analyzer.anomaly.max_series)"
                    );
                    self.warned_full = true;
                }
                return;
            }
            self.series
                .insert(key.clone(), Series::new(self.config.warmup));
        }
        let threshold = self.config.threshold;
        let resolve_after = self.config.resolve_after;
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        series.has_cost |= has_cost;
        if signal == Signal::CostPerHour && !series.has_cost {
            return;
        }
        series.update(
            at,
            value,
            signal.scored(value),
            signal.needs_confirmation(),
            alerting.then_some((threshold, resolve_after)),
        );
    }

    /// One finding per series: active while its anomaly lasts (and `resolve_after` beyond).
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for ((scope, signal), series) in &self.series {
            let (service, model) = scope;
            let subject = if model == "*" {
                format!("{} of service {service}", signal.as_str())
            } else {
                format!("{} of model {model} in service {service}", signal.as_str())
            };
            let mut labels = alert_labels(
                "LlmSignalAnomaly",
                "golden_signals",
                &[("service", service), ("signal", signal.as_str())],
            );
            labels.insert("model".into(), model.clone());
            let model_filter = if model == "*" {
                String::new()
            } else {
                format!(
                    " AND coalesce(response_model, request_model) = {}",
                    quote(model)
                )
            };
            let mut evidence = serde_json::Map::new();
            evidence.insert("signal".into(), json!(signal.as_str()));
            if let Some((at, ..)) = series.last {
                let began = series.began().unwrap_or(at);
                evidence.insert(
                    "spans_sql".into(),
                    json!(format!(
                        "SELECT * FROM spans WHERE service_name = {}{model_filter} AND time >= {} ORDER BY time",
                        quote(service),
                        ts(began.checked_sub(Duration::from_secs(300)).unwrap_or(began))
                    )),
                );
            }
            findings.extend(series.finding(
                labels,
                signal.severity(),
                subject,
                &self.config,
                |scored| signal.unscored(scored),
                evidence,
            ));
        }
        findings
    }

    /// The series in an anomaly now, with when it began.
    pub fn anomalies(&self) -> impl Iterator<Item = (&Scope, Signal, SystemTime)> {
        self.series.iter().filter_map(|((scope, signal), series)| {
            series.began().map(|began| (scope, *signal, began))
        })
    }

    /// Series scored now.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Bytes of scorer state held now.
    pub fn state_bytes(&self) -> usize {
        self.series.values().map(|s| s.scorer.state_bytes()).sum()
    }
}

#[async_trait]
impl Detector for GoldenSignals {
    fn name(&self) -> &'static str {
        "golden_signals"
    }

    fn timing(&self) -> Timing {
        // The episode logic above is the hysteresis: an anomalous step is news at once, and
        // stays news for resolve_after.
        Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::ZERO,
        }
    }

    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let until = complete_until(now, self.config.resolution, self.config.settle);
        let (from, alerting) = steps_due(self.next_step, until, self.config.history);
        if from < until {
            let steps = self.read(source, from, until).await?;
            self.learn(&steps, from, until, alerting);
            self.next_step = Some(until);
        }
        Ok(self.findings())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, TimestampNanosecondArray};
    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, LogNormal};

    use super::*;

    const START: u64 = 1_800_000_000;

    /// One service, two models, 5 calls/s each (Poisson) for `minutes`; model `b`'s latency ×
    /// `latency_factor` and its rate × `rate_factor` from `change_minute` on.
    fn spans(
        minutes: u64,
        change_minute: u64,
        latency_factor: f64,
        rate_factor: f64,
    ) -> RecordBatch {
        let mut rng = StdRng::seed_from_u64(7);
        let latency = LogNormal::new(2.0f64.ln(), 0.4).unwrap();
        let (mut time, mut model, mut duration, mut ttft, mut status, mut output, mut cost) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for name in ["a", "b"] {
            let mut at = START as f64;
            let end = (START + minutes * 60) as f64;
            loop {
                let changed = name == "b" && at >= (START + change_minute * 60) as f64;
                let rate = 5.0 * if changed { rate_factor } else { 1.0 };
                at += -(1.0 - rng.r#gen::<f64>()).ln() / rate;
                if at >= end {
                    break;
                }
                let seconds = latency.sample(&mut rng) * if changed { latency_factor } else { 1.0 };
                time.push((at * 1e9) as i64);
                model.push(name);
                duration.push((seconds * 1e9) as i64);
                ttft.push((seconds * 0.1 * 1e9) as i64);
                // As the store writes them (lower-case), from OTLP's STATUS_CODE_ERROR.
                status.push(if rng.gen_bool(0.01) { "error" } else { "unset" });
                let tokens = rng.gen_range(50..400);
                output.push(tokens as i64);
                cost.push(tokens as f64 * 1e-5);
            }
        }
        let n = time.len();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            ("service_name", Arc::new(StringArray::from(vec!["chat"; n]))),
            ("request_model", Arc::new(StringArray::from(model.clone()))),
            ("response_model", Arc::new(StringArray::from(model))),
            ("output_tokens", Arc::new(Int64Array::from(output))),
            ("duration_ns", Arc::new(Int64Array::from(duration))),
            ("ttft_ns", Arc::new(Int64Array::from(ttft))),
            ("status_code", Arc::new(StringArray::from(status))),
            // One call in 100 has `error.type` and no error status (an instrumentation that
            // records only the attribute).
            (
                "error_type",
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| (i % 100 == 50).then_some("timeout"))
                        .collect::<Vec<_>>(),
                )),
            ),
            ("cost_usd", Arc::new(Float64Array::from(cost))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// Errors are counted as the store keeps them: status `error` (lower-case, as OTLP ingest
    /// writes it) or an `error.type`. (Comparing with "ERROR" counted none from real clients.)
    #[tokio::test]
    async fn errors_are_counted_as_the_store_writes_them() {
        let batch = spans(10, 100, 1.0, 1.0);
        let status = batch
            .column_by_name("status_code")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let error_type = batch.column_by_name("error_type").unwrap().clone();
        let expected = (0..batch.num_rows())
            .filter(|&i| status.value(i) == "error" || error_type.is_valid(i))
            .count() as f64;
        assert!(expected > 10.0, "{expected}");
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        let detector = GoldenSignals::new(AnomalyConfig::default());
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(START);
        let steps = detector
            .read(&ctx, from, from + Duration::from_secs(3600))
            .await
            .unwrap();
        let counted: f64 = steps
            .values()
            .flat_map(|scopes| scopes.iter())
            .filter(|((_, model), _)| model == "*")
            .map(|(_, step)| step.errors)
            .sum();
        assert_eq!(counted, expected);
    }

    /// Runs the detector every 10 s of simulated time; returns (first evaluation at which each
    /// (model, signal) was active, in seconds from the start).
    async fn run(
        batch: RecordBatch,
        minutes: u64,
        config: AnomalyConfig,
    ) -> Vec<(u64, String, String)> {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        let mut detector = GoldenSignals::new(config);
        let mut active = Vec::new();
        let mut seen = HashSet::new();
        for second in (0..=minutes * 60).step_by(10) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(START + second);
            for finding in detector.evaluate(&ctx, now).await.unwrap() {
                let key = (
                    finding.labels["model"].clone(),
                    finding.labels["signal"].clone(),
                );
                if finding.active && seen.insert(key.clone()) {
                    active.push((second, key.0, key.1));
                }
            }
        }
        assert!(detector.state_bytes() < 64 * 1024 * detector.series.len().max(1));
        active
    }

    /// Seconds from the change (at minute 30) to the first anomaly on model b's signals named
    /// `signal…`, after asserting there was none anywhere before the change.
    fn delay_after_change(active: &[(u64, String, String)], signal: &str) -> u64 {
        let before: Vec<_> = active.iter().filter(|(s, ..)| *s < 30 * 60).collect();
        assert!(
            before.is_empty(),
            "false alarms before the change: {before:?}"
        );
        let caught = active
            .iter()
            .find(|(_, model, name)| model == "b" && name.starts_with(signal))
            .unwrap_or_else(|| panic!("not caught: {active:?}"));
        caught.0 - 30 * 60
    }

    #[tokio::test]
    async fn a_latency_step_on_one_model_is_caught_within_thirty_seconds() {
        let batch = spans(40, 30, 2.0, 1.0);
        let active = run(batch, 40, AnomalyConfig::default()).await;
        // The step ends 10 s after the change and settles 10 s more.
        let delay = delay_after_change(&active, "latency");
        assert!(delay <= 30, "{active:?}");
        assert!(
            active.iter().all(|(_, model, _)| model != "a"),
            "model a did not change: {active:?}"
        );
    }

    #[tokio::test]
    async fn state_is_restored_from_the_store_after_a_restart() {
        // A detector started 25 minutes into the traffic replays its history and judges the
        // change at minute 30 as one that ran all along would.
        let batch = spans(35, 30, 2.0, 1.0);
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        let mut detector = GoldenSignals::new(AnomalyConfig::default());
        let restart = SystemTime::UNIX_EPOCH + Duration::from_secs(START + 25 * 60);
        let quiet = detector.evaluate(&ctx, restart).await.unwrap();
        assert!(quiet.iter().all(|f| !f.active));
        assert!(detector.series.values().all(|s| s.scorer.seen() > 90));
        let mut caught = None;
        for second in (25 * 60..=35 * 60).step_by(10) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(START + second);
            let findings = detector.evaluate(&ctx, now).await.unwrap();
            if findings.iter().any(|f| {
                f.active && f.labels["model"] == "b" && f.labels["signal"].starts_with("latency")
            }) {
                caught = Some(second);
                break;
            }
        }
        let caught = caught.expect("not caught after the restart");
        assert!((30 * 60..=30 * 60 + 30).contains(&caught), "{caught}");
    }

    #[tokio::test]
    async fn a_halved_request_rate_is_caught_within_two_minutes() {
        // One model at 5 calls/s falls to 2.5: 50 ± 7 calls a step become 25, seen by the
        // per-step rate or the rate over a minute. (`vigil eval anomaly` measures how often
        // this is caught: not always.)
        let batch = spans(40, 30, 1.0, 0.5);
        let active = run(batch, 40, AnomalyConfig::default()).await;
        let delay = delay_after_change(&active, "requests_per_second");
        assert!(delay <= 120, "{active:?}");
    }

    #[tokio::test]
    async fn traffic_stopping_is_caught_within_a_minute() {
        let batch = spans(40, 30, 1.0, 0.0);
        let active = run(batch, 40, AnomalyConfig::default()).await;
        let delay = delay_after_change(&active, "requests_per_second");
        assert!(delay <= 60, "{active:?}");
    }
}
