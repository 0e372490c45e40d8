//! "Something just broke": the LLM golden signals of every service and every model in it (request
//! rate per step and over a minute, error ratio, p50/p95 latency, p50 time to first token,
//! output tokens/s, cost per hour), binned at `resolution`, each scored by its own
//! [`StreamingAnomaly`], but the error ratio, which has a test made for counts ([`ErrorRise`]).
//! A step whose score reaches `threshold` raises `LlmSignalAnomaly` on that series, saying when
//! it began, how far it is from the expected band, and the SQL that shows the spans behind it.
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
use super::calls_dropped::CallsDropped;
use super::cusum::{self, Episode as CountEpisode};
use super::seasonal::{BUCKET_SECS, DAY_BUCKETS, MIN_HISTORY_BUCKETS, Seasons};
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
    /// How far behind now a step must end before it is judged: a call counts in the step in
    /// which it ended (when its latency is known), and its span arrives after the exporter's
    /// batch delay.
    #[serde(with = "super::humantime_serde")]
    pub settle: Duration,
    /// Calls that ran longer than this are left out of the signals: it bounds how far back in
    /// the store each step's read reaches for calls that started long before they ended.
    #[serde(with = "super::humantime_serde")]
    pub max_call_duration: Duration,
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
    /// The error ratio's sensitivity knob: the evidence (a log-likelihood ratio, in nats) that
    /// a scope's errors tripled against the ratio it learned over `history` at which the rise
    /// alerts. Lower catches sooner and raises more false alarms (EVALUATION.md measures both).
    pub error_evidence_nats: f64,
    /// How long after a step ends its p50 latency and TTFT are looked at before it settles,
    /// the later looks only while calls of it seem missing (see [`EARLY_LOOKS`]); each must be
    /// shorter than `settle`. Empty: every signal waits for the settle.
    #[serde(with = "super::humantime_serde::list")]
    pub early_looks: Vec<Duration>,
    /// The calls' fall's sensitivity knob: the evidence (nats) that a scope's calls fell to half
    /// of what was expected (its level over the last half hour and its season) at which it
    /// alerts (`LlmSignalAnomaly{signal="calls_dropped"}`). Lower catches sooner and raises
    /// more false alarms (EVALUATION.md measures both).
    pub rate_drop_nats: f64,
    /// Series of the user's own, by SQL (`[[analyzer.anomaly.series]]`), scored the same way.
    pub series: Vec<super::named_series::NamedSeriesConfig>,
    /// How far back the rates' daily and weekly seasons are learned from (`llm_minutes`, in
    /// five-minute buckets; see [`super::seasonal`]), again every [`SEASONS_REFIT`]. Seasons
    /// need two weeks of history in the store (`llm_minutes` is kept five weeks by default).
    /// Zero: no seasons, every rate judged against its trailing window alone.
    #[serde(with = "super::humantime_serde")]
    pub seasons_history: Duration,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            resolution: Duration::from_secs(10),
            settle: Duration::from_secs(10),
            max_call_duration: Duration::from_secs(15 * 60),
            history: Duration::from_secs(2 * 3600),
            threshold: 0.81,
            warmup: 90,
            max_series: 500,
            forget_after: Duration::from_secs(3600),
            resolve_after: Duration::from_secs(300),
            error_evidence_nats: 12.0,
            early_looks: EARLY_LOOKS.to_vec(),
            rate_drop_nats: 12.0,
            series: Vec::new(),
            seasons_history: Duration::from_secs(28 * 86_400),
        }
    }
}

/// The signals of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    RequestRate,
    RequestRateMinute,
    ErrorRatio,
    /// Calls fell to about half of what was expected (see [`CallsDropped`]).
    CallsDropped,
    LatencyP50,
    LatencyP95,
    TtftP50,
    OutputTokenRate,
    CostPerHour,
}

impl Signal {
    pub const ALL: [Signal; 9] = [
        Signal::RequestRate,
        Signal::RequestRateMinute,
        Signal::ErrorRatio,
        Signal::CallsDropped,
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
            Signal::ErrorRatio => "error_ratio",
            Signal::CallsDropped => "calls_dropped",
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
            // Judged by [`ErrorRise`] and [`CallsDropped`], never by the streaming scorer.
            Signal::ErrorRatio | Signal::CallsDropped => value,
            Signal::LatencyP50 | Signal::LatencyP95 | Signal::TtftP50 => value,
        }
    }

    /// The rate whose seasons this signal is judged with, if any: traffic has a time of day;
    /// how long a call takes, and how often it fails, hardly do.
    fn season(self) -> Option<SeasonalRate> {
        match self {
            Signal::RequestRate | Signal::RequestRateMinute => Some(SeasonalRate::Calls),
            Signal::OutputTokenRate => Some(SeasonalRate::OutputTokens),
            Signal::CostPerHour => Some(SeasonalRate::Cost),
            _ => None,
        }
    }

    /// The inverse of [`Signal::scored`], for the expected value and band in alerts.
    fn unscored(self, scored: f64) -> f64 {
        match self {
            Signal::RequestRate
            | Signal::RequestRateMinute
            | Signal::OutputTokenRate
            | Signal::CostPerHour => scored.max(0.0).powi(2),
            Signal::ErrorRatio | Signal::CallsDropped => scored,
            Signal::LatencyP50 | Signal::LatencyP95 | Signal::TtftP50 => scored,
        }
    }

    /// A latency signal's value in `step`, when it holds calls enough for one: a percentile of
    /// a handful of calls is one call's latency.
    fn percentile(self, step: &Step) -> Option<f64> {
        match self {
            Signal::LatencyP50 => step.latency_p50.filter(|_| step.calls >= 10.0),
            Signal::LatencyP95 => step.latency_p95.filter(|_| step.calls >= 20.0),
            Signal::TtftP50 => step.ttft_p50.filter(|_| step.calls >= 10.0),
            _ => None,
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
            Signal::ErrorRatio
            | Signal::CallsDropped
            | Signal::RequestRate
            | Signal::RequestRateMinute => Severity::Critical,
            _ => Severity::Warning,
        }
    }
}

/// The rates whose seasons are learned, each on the scale its signals are scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeasonalRate {
    Calls,
    OutputTokens,
    Cost,
}

impl SeasonalRate {
    const ALL: [SeasonalRate; 3] = [
        SeasonalRate::Calls,
        SeasonalRate::OutputTokens,
        SeasonalRate::Cost,
    ];

    /// A bucket's value as its signal's scorer sees it.
    fn scored(self, bucket: &BucketTotals) -> f64 {
        let seconds = BUCKET_SECS as f64;
        match self {
            SeasonalRate::Calls => Signal::RequestRate.scored(bucket.calls / seconds),
            SeasonalRate::OutputTokens => {
                Signal::OutputTokenRate.scored(bucket.output_tokens / seconds)
            }
            SeasonalRate::Cost => Signal::CostPerHour.scored(bucket.cost / seconds * 3600.0),
        }
    }
}

/// What a scope did in one bucket of its history ([`BUCKET_SECS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BucketTotals {
    pub calls: f64,
    pub output_tokens: f64,
    pub cost: f64,
}

/// A scope's history for its seasons: the number of its first bucket (seconds since the epoch
/// / [`BUCKET_SECS`]) and every bucket from it on, consecutive.
pub type SeasonHistory = HashMap<Scope, (u64, Vec<BucketTotals>)>;

/// Seasons learned from a history, and the scopes whose history was long enough to learn them
/// from (cycles found or not).
type LearnedSeasons = (HashMap<(Scope, SeasonalRate), Seasons>, HashSet<Scope>);

/// Learns every scope's seasons from `history`: a few milliseconds a scope and rate (MSTL), so
/// `vigil serve` runs it off the async runtime.
fn fit_seasons(history: &SeasonHistory) -> LearnedSeasons {
    let mut learned = HashMap::new();
    for (scope, (first, buckets)) in history {
        for rate in SeasonalRate::ALL {
            let values: Vec<f64> = buckets.iter().map(|b| rate.scored(b)).collect();
            let seasons = Seasons::fit(*first, &values);
            if !seasons.is_empty() {
                learned.insert((scope.clone(), rate), seasons);
            }
        }
    }
    let known = history
        .iter()
        .filter(|(_, (_, buckets))| buckets.len() >= MIN_HISTORY_BUCKETS)
        .map(|(scope, _)| scope.clone())
        .collect();
    (learned, known)
}

/// How often the seasons are learned again from the store.
pub const SEASONS_REFIT: Duration = Duration::from_secs(6 * 3600);

/// An alert's time in its message and evidence.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339()
}

/// What every golden-signal finding's evidence says: the value shown and when, the expected
/// value and its band, and how many standard deviations off it is.
pub(crate) fn insert_band(
    evidence: &mut serde_json::Map<String, serde_json::Value>,
    (at, value): (SystemTime, f64),
    (expected, (low, high)): (f64, (f64, f64)),
    sigmas: f64,
) {
    evidence.insert("value".into(), json!(value));
    evidence.insert("at".into(), json!(rfc3339(at)));
    evidence.insert("expected".into(), json!(expected));
    evidence.insert("expected_band".into(), json!([low, high]));
    evidence.insert("deviation_sigmas".into(), json!(sigmas));
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

/// Calls of a scope's last steps, for the request rate over a minute.
#[derive(Debug, Clone, Default)]
struct Recent {
    steps: VecDeque<f64>,
}

impl Recent {
    fn push(&mut self, calls: f64) {
        if self.steps.len() == MINUTE_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back(calls);
    }

    /// Calls of the last minute, once a minute of steps is known.
    fn minute(&self) -> Option<f64> {
        (self.steps.len() >= MINUTE_STEPS).then(|| self.steps.iter().sum())
    }
}

/// The default of `early_looks`: how long after a step ends its latencies are looked at before
/// it settles, and looked at again while calls of it seem missing (only those shorter than
/// `settle`). The p50s need no
/// second step to confirm them, so a latency step is news about two seconds after its step,
/// not a settle later; the settle stays for what a late call changes (rates, errors, tails).
pub const EARLY_LOOKS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];

/// Steps of the request rate over a minute (at 10-second steps): at a few calls a second one
/// step holds too few calls to show a halved rate.
const MINUTE_STEPS: usize = 6;
/// How far (in standard deviations) the step after an anomalous one must still be, the same
/// way, to confirm it; and how far a series must stay for its anomaly to stay open.
const CONFIRM_SIGMAS: f64 = 4.0;

/// The rise [`ErrorRise`] is built to see soonest: errors tripled (1% to 3%). Smaller rises
/// are seen too, later; a doubling adds evidence about a tenth as fast.
const ERROR_RISE: f64 = 3.0;
/// Calls learned (exponentially weighted over `history`) before a scope's errors are judged.
const MIN_LEARNED_CALLS: f64 = 500.0;
/// The learned ratio is never taken below this: a scope that has had no errors is not alarmed
/// by its first few; a run of them (about ten in a row) still alerts.
const ERROR_RATIO_FLOOR: f64 = 0.001;

/// A rise in a scope's error ratio, judged with a test made for counts: a CUSUM of each call's
/// log-likelihood ratio between "errors tripled" and the ratio learned over the last `history`
/// (Page's test on Bernoulli trials). Errors add evidence, successes take it away, so it works
/// the same at night's few calls as at noon's many; it alerts when the evidence reaches
/// `error_evidence_nats`. At 1% errors and 10 calls/s a tripling is about 1,000 calls (100 s)
/// of evidence; a ratio over five minutes scored as a time series needed more than 10 minutes.
/// The learned ratio keeps learning during a rise (at the rate `history` allows), so a ratio
/// that stays high becomes the new normal within hours rather than firing for ever.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorRise {
    /// Calls and errors, exponentially weighted with time constant `history`.
    learned_calls: f64,
    learned_errors: f64,
    /// The CUSUM statistic, in nats, kept between 0 and twice the threshold (so that a rise
    /// that ends is forgotten within a couple of thousand calls).
    evidence: f64,
    /// Since when the evidence has been above zero, and the calls and errors since.
    run: Option<(SystemTime, f64, f64)>,
    /// The last step judged and the ratio expected then.
    last: Option<(SystemTime, f64)>,
    /// The rise past the threshold, if any.
    episode: Option<CountEpisode<ErrorStep>>,
}

/// A step of a rise: (at, evidence, expected ratio, calls, errors since the rise began).
type ErrorStep = (SystemTime, f64, f64, f64, f64);

impl ErrorRise {
    /// The ratio this scope's errors are judged against, once enough calls are learned.
    fn expected(&self) -> Option<f64> {
        (self.learned_calls >= MIN_LEARNED_CALLS).then(|| {
            ((self.learned_errors + 1.0) / (self.learned_calls + 1.0)).clamp(ERROR_RATIO_FLOOR, 0.3)
        })
    }

    /// One step's `calls` and `errors`: judged against the ratio learned before it, then
    /// learned (`keep` is the weight the past keeps over one step). `judging` is the threshold
    /// in nats and `resolve_after` when the step may alert, None while replaying history.
    fn update(
        &mut self,
        at: SystemTime,
        calls: f64,
        errors: f64,
        keep: f64,
        judging: Option<(f64, Duration)>,
    ) {
        if let Some(expected) = self.expected() {
            let risen = (ERROR_RISE * expected).min(0.99);
            let evidence = errors * (risen / expected).ln()
                + (calls - errors).max(0.0) * ((1.0 - risen) / (1.0 - expected)).ln();
            let cap = 2.0 * judging.map_or(f64::INFINITY, |(nats, _)| nats);
            self.evidence = (self.evidence + evidence).clamp(0.0, cap);
            self.run = if self.evidence > 0.0 {
                let (since, c, e) = self.run.unwrap_or((at, 0.0, 0.0));
                Some((since, c + calls, e + errors))
            } else {
                None
            };
            self.last = Some((at, expected));
            if let Some((nats, resolve_after)) = judging {
                self.judge(at, expected, nats, resolve_after);
            }
        }
        self.learned_calls = self.learned_calls * keep + calls;
        self.learned_errors = self.learned_errors * keep + errors;
    }

    fn judge(&mut self, at: SystemTime, expected: f64, nats: f64, resolve_after: Duration) {
        let (since, calls, errors) = self.run.unwrap_or((at, 0.0, 0.0));
        let step = (at, self.evidence, expected, calls, errors);
        cusum::judge(
            &mut self.episode,
            (at, since),
            (self.evidence, nats),
            resolve_after,
            step,
        );
    }

    /// This scope's finding on its error ratio (None before it is first judged).
    fn finding(
        &self,
        labels: BTreeMap<String, String>,
        subject: String,
        nats: f64,
        mut evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Finding> {
        let (at, expected) = self.last?;
        let (shown_at, shown_evidence, expected, calls, errors) = match self.episode {
            Some(episode) => episode.worst,
            None => {
                let (_, calls, errors) = self.run.unwrap_or((at, 0.0, 0.0));
                (at, self.evidence, expected, calls, errors)
            }
        };
        let ratio = if calls > 0.0 { errors / calls } else { 0.0 };
        // The band a ratio over this many calls keeps to (three binomial standard deviations).
        let spread = (expected * (1.0 - expected) / calls.max(1.0)).sqrt();
        let (low, high) = ((expected - 3.0 * spread).max(0.0), expected + 3.0 * spread);
        let sigmas = if spread > 0.0 {
            (ratio - expected) / spread
        } else {
            0.0
        };
        insert_band(
            &mut evidence,
            (shown_at, ratio),
            (expected, (low, high)),
            sigmas,
        );
        evidence.insert("calls".into(), json!(calls));
        evidence.insert("errors".into(), json!(errors));
        evidence.insert("evidence_nats".into(), json!(shown_evidence));
        evidence.insert("learned_calls".into(), json!(self.learned_calls.round()));
        if let Some(episode) = self.episode {
            evidence.insert("began".into(), json!(rfc3339(episode.began)));
        }
        let since = self
            .episode
            .map(|e| e.began)
            .or(self.run.map(|r| r.0))
            .unwrap_or(shown_at);
        Some(Finding {
            labels,
            severity: Severity::Critical,
            subject: subject.clone(),
            score: shown_evidence,
            threshold: nats,
            active: self.episode.is_some(),
            clear: self.episode.is_none(),
            message: format!(
                "{subject} is {ratio:.4} ({errors:.0} errors in {calls:.0} calls since {}), against the expected {expected:.4} (band {low:.4} to {high:.4} over that many calls, {sigmas:.1} standard deviations above): {shown_evidence:.1} nats of evidence that errors rose, threshold {nats}",
                rfc3339(since),
            ),
            evidence,
        })
    }

    fn began(&self) -> Option<SystemTime> {
        self.episode.map(|e| e.began)
    }
}

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
    /// Opened by an early look (see [`Series::look_early`]), its step not settled yet.
    early: bool,
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
        // An anomaly an early look opened on this very step is judged again now that the step
        // has settled: reopened below if the step still scores past the threshold, retracted
        // if not.
        if self.episode.is_some_and(|e| e.early && e.began == at) {
            self.episode = None;
        }
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
                    early: false,
                });
            } else if anomalous {
                self.pending = Some((at, value, scored, above));
            }
            return;
        }
        match (&mut self.episode, anomalous) {
            (Some(episode), true) => {
                // A settled step past the threshold makes an early anomaly a settled one.
                if episode.early {
                    episode.early = false;
                    episode.began = episode.began.min(at);
                }
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
                    early: false,
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

    /// Judges the step at `at` before it has settled, without learning it (the scorer peeks):
    /// when the calls already in score past `threshold`, the anomaly opens now, seconds after
    /// the step ended instead of a settle later. [`Series::update`] of the same step, settled,
    /// confirms or retracts it. `share` is the part of its usual calls the step holds so far: a
    /// median of fewer calls strays further by chance, so its distance from the expected is
    /// shrunk by the square root of that share before it is scored.
    pub(crate) fn look_early(
        &mut self,
        at: SystemTime,
        value: f64,
        scored_value: f64,
        threshold: f64,
        share: f64,
    ) {
        let Some((last, _, before)) = self.last else {
            return;
        };
        if self.episode.is_some() || last >= at {
            return;
        }
        let shrunk = before.mean + (scored_value - before.mean) * share.clamp(0.0, 1.0).sqrt();
        let scored = self.scorer.peek(shrunk);
        if scored.score >= threshold {
            self.episode = Some(Episode {
                began: at,
                last_active: at,
                worst: (at, value, scored),
                early: true,
            });
        }
    }

    /// This series' finding (None before its first step): `labels` and `subject` name it,
    /// `config` gives the threshold and resolution, `unscored` turns the scorer's scale back
    /// into the value's (at the step's time: a season may be part of it), `evidence` is added
    /// to.
    pub(crate) fn finding(
        &self,
        labels: BTreeMap<String, String>,
        severity: Severity,
        subject: String,
        config: &AnomalyConfig,
        unscored: impl Fn(SystemTime, f64) -> f64,
        mut evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Finding> {
        let (at, value, scored) = self.last?;
        let (shown_at, shown_value, shown) =
            self.episode.map(|e| e.worst).unwrap_or((at, value, scored));
        let expected = unscored(shown_at, shown.mean);
        let low = unscored(shown_at, shown.mean - 3.0 * shown.std_dev);
        let high = unscored(shown_at, shown.mean + 3.0 * shown.std_dev);
        insert_band(
            &mut evidence,
            (shown_at, shown_value),
            (expected, (low, high)),
            shown.z,
        );
        evidence.insert("novel_pattern".into(), json!(shown.novel));
        evidence.insert(
            "resolution_seconds".into(),
            json!(config.resolution.as_secs()),
        );
        if let Some(episode) = self.episode {
            evidence.insert("began".into(), json!(rfc3339(episode.began)));
            // Judged on the calls in soon after the step ended; its settled judgement follows.
            evidence.insert("settled".into(), json!(!episode.early));
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
    errors: HashMap<Scope, ErrorRise>,
    drops: HashMap<Scope, CallsDropped>,
    /// Start of the next step to read (None before the first, restoring, read).
    next_step: Option<SystemTime>,
    /// The early looks at the steps not yet settled: the end of the last step looked at, how
    /// many looks it has had, and whether the last found calls still missing.
    looked: Option<(SystemTime, usize, bool)>,
    warned_full: bool,
    /// Each scope's seasons per rate (absent: none learned), and when they were last learned.
    seasons: HashMap<(Scope, SeasonalRate), Seasons>,
    seasons_learned: Option<SystemTime>,
    /// The scopes whose history was long enough to learn seasons from, cycles found or not.
    seasons_known: HashSet<Scope>,
}

impl GoldenSignals {
    pub fn new(config: AnomalyConfig) -> Self {
        GoldenSignals {
            config,
            series: HashMap::new(),
            last_call: HashMap::new(),
            recent: HashMap::new(),
            errors: HashMap::new(),
            drops: HashMap::new(),
            next_step: None,
            looked: None,
            warned_full: false,
            seasons: HashMap::new(),
            seasons_learned: None,
            seasons_known: HashSet::new(),
        }
    }

    /// Reads every scope's history for its seasons: the calls, output tokens and cost of each
    /// five-minute bucket in `llm_minutes` over `seasons_history` before `now`'s bucket. Model
    /// scopes there are the requested model; where a response names another, that model has no
    /// season of its own (its service has).
    async fn read_season_history(
        &self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<SeasonHistory, AnalyzerError> {
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let until_bucket = now_secs / BUCKET_SECS;
        let from_bucket =
            until_bucket.saturating_sub(self.config.seasons_history.as_secs() / BUCKET_SECS);
        let bucket_time =
            |bucket: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(bucket * BUCKET_SECS);
        let sql = format!(
            "SELECT service_name AS service, request_model AS model, \
             CAST(date_bin(INTERVAL '{BUCKET_SECS} seconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS bucket, \
             sum(calls) AS calls, sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost \
             FROM llm_minutes WHERE time >= {from} AND time < {until} \
             GROUP BY GROUPING SETS ((service_name, request_model, bucket), (service_name, bucket))",
            from = ts(bucket_time(from_bucket)),
            until = ts(bucket_time(until_bucket)),
        );
        let batches = source.sql(&sql).await?;
        let service = strings(&batches, "service")?;
        let model = strings(&batches, "model")?;
        let bucket = floats(&batches, "bucket")?;
        let calls = floats(&batches, "calls")?;
        let output = floats(&batches, "output_tokens")?;
        let cost = floats(&batches, "cost")?;
        let mut by_scope: HashMap<Scope, BTreeMap<u64, BucketTotals>> = HashMap::new();
        for i in 0..service.len() {
            let (Some(service), Some(bucket_ns)) = (&service[i], bucket[i]) else {
                continue;
            };
            let scope = (
                service.clone(),
                model[i].clone().unwrap_or_else(|| "*".to_string()),
            );
            let number = (bucket_ns.max(0.0) / 1e9).round() as u64 / BUCKET_SECS;
            by_scope.entry(scope).or_default().insert(
                number,
                BucketTotals {
                    calls: calls[i].unwrap_or(0.0),
                    output_tokens: output[i].unwrap_or(0.0),
                    cost: cost[i].unwrap_or(0.0),
                },
            );
        }
        // From a scope's first bucket to the last complete one: a bucket without a row had no
        // calls.
        Ok(by_scope
            .into_iter()
            .filter_map(|(scope, buckets)| {
                let first = *buckets.keys().next()?;
                let totals = (first..until_bucket)
                    .map(|b| buckets.get(&b).copied().unwrap_or_default())
                    .collect();
                Some((scope, (first, totals)))
            })
            .collect())
    }

    /// Learns every scope's seasons from `history` (what [`Self::read_season_history`] read, or
    /// a simulation's). A rate whose season appears or goes away starts its series over (a new
    /// warm-up): its scorer learned the other scale. A season learned again stays close to the
    /// one before, and its series keep their state.
    pub fn learn_seasons(&mut self, history: &SeasonHistory) {
        self.apply_seasons(fit_seasons(history));
    }

    /// Takes seasons [`fit_seasons`] learned (see [`Self::learn_seasons`]).
    fn apply_seasons(&mut self, (learned, known): LearnedSeasons) {
        let changed: HashSet<(Scope, SeasonalRate)> = learned
            .keys()
            .filter(|key| !self.seasons.contains_key(key))
            .chain(self.seasons.keys().filter(|key| !learned.contains_key(key)))
            .cloned()
            .collect();
        self.series.retain(|(scope, signal), _| {
            signal
                .season()
                .is_none_or(|rate| !changed.contains(&(scope.clone(), rate)))
        });
        // A scope whose seasons became known (or unknown) starts its calls' test over: what it
        // gathered unjudged, through the turns it did not expect, is not carried in.
        let was_known = std::mem::take(&mut self.seasons_known);
        self.drops.retain(|scope, _| {
            !changed.contains(&(scope.clone(), SeasonalRate::Calls))
                && was_known.contains(scope) == known.contains(scope)
        });
        self.seasons = learned;
        self.seasons_known = known;
    }

    /// The seasonal part of `signal` of `scope` in the step starting at `at` (on the scorer's
    /// scale; 0 without a season).
    fn season(&self, scope: &Scope, signal: Signal, at: SystemTime) -> f64 {
        let Some(seasons) = signal
            .season()
            .and_then(|rate| self.seasons.get(&(scope.clone(), rate)))
        else {
            return 0.0;
        };
        let middle = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            + self.config.resolution / 2;
        seasons.at(middle.as_secs_f64())
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
        // percentiles cannot be added up from the models' own. A call counts in the step in
        // which it ended: counted where it started, a step would be judged before its slow
        // calls had ended, and a latency step would look like calls going missing.
        let sql = format!(
            "SELECT service_name AS service, coalesce(response_model, request_model) AS model, \
             CAST(date_bin(INTERVAL '{res} seconds', end_time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS step, \
             count(*) AS calls, \
             sum(CASE WHEN {FAILED_CALL} THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS latency_p50, \
             approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS latency_p95, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ns) / 1e6 AS ttft_p50, \
             sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost \
             FROM spans WHERE end_time >= {from} AND end_time < {until} \
             AND time >= {started_from} AND time < {until} \
             AND (response_model IS NOT NULL OR request_model IS NOT NULL) \
             GROUP BY GROUPING SETS ((service_name, coalesce(response_model, request_model), step), (service_name, step))",
            from = ts(from),
            until = ts(until),
            started_from = ts(from
                .checked_sub(self.config.max_call_duration)
                .unwrap_or(SystemTime::UNIX_EPOCH)),
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

    /// When the next early look is due: the step after the last looked at (or settled) a little
    /// after it ends, and again later while calls of it seemed missing.
    fn next_look(&self) -> Option<SystemTime> {
        let next = self.next_step?;
        let res = self.config.resolution.max(Duration::from_secs(1));
        let early_looks = &self.config.early_looks;
        let (end, looks) = match self.looked {
            Some((end, looks, missing)) if end > next && missing && looks < early_looks.len() => {
                (end, looks)
            }
            Some((end, ..)) if end > next => (end + res, 0),
            _ => (next + res, 0),
        };
        let after = *early_looks.get(looks)?;
        (after < self.config.settle).then_some(end + after)
    }

    /// Looks early at the latency signals of the steps in [from, until), ended but not yet
    /// settled (see [`Series::look_early`]). A scope's step is looked at when it already holds
    /// calls enough for a percentile and at least half the calls its steps had over the last
    /// minute: a step whose calls are still mostly on their way waits for the next look or its
    /// settle. Returns whether any scope's step seemed to miss calls.
    fn look_early(
        &mut self,
        steps: &BTreeMap<SystemTime, HashMap<Scope, Step>>,
        from: SystemTime,
        until: SystemTime,
    ) -> bool {
        let res = self.config.resolution.max(Duration::from_secs(1));
        let empty = HashMap::new();
        let mut missing = false;
        let mut at = from;
        while at < until {
            missing |= self.look_early_at(at, steps.get(&at).unwrap_or(&empty));
            at += res;
        }
        missing
    }

    /// Looks early at one step (starting at `at`) of every scope, as [`Self::look_early`]
    /// does, with the calls `here` so far; true when a scope's step seemed to miss calls.
    pub fn look_early_at(&mut self, at: SystemTime, here: &HashMap<Scope, Step>) -> bool {
        let threshold = self.config.threshold;
        let mut missing = false;
        for (scope, recent) in &self.recent {
            // Scopes whose steps rarely hold calls enough for a percentile wait to settle.
            let Some(usual) = recent
                .minute()
                .map(|calls| calls / MINUTE_STEPS as f64)
                .filter(|&usual| usual >= 10.0)
            else {
                continue;
            };
            let step = here.get(scope).copied().unwrap_or_default();
            if step.calls < usual / 2.0 {
                missing = true;
                continue;
            }
            for signal in [Signal::LatencyP50, Signal::TtftP50] {
                let (Some(value), Some(series)) = (
                    signal.percentile(&step),
                    self.series.get_mut(&(scope.clone(), signal)),
                ) else {
                    continue;
                };
                series.look_early(
                    at,
                    value,
                    signal.scored(value),
                    threshold,
                    step.calls / usual,
                );
            }
        }
        missing
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
            recent.push(step.calls);
            let minute = recent.minute();
            for signal in Signal::ALL {
                let value = match signal {
                    Signal::RequestRate => Some(step.calls * per_second),
                    Signal::RequestRateMinute => {
                        minute.map(|calls| calls * per_second / MINUTE_STEPS as f64)
                    }
                    Signal::ErrorRatio => {
                        self.observe_errors(&scope, at, &step, alerting);
                        None
                    }
                    Signal::CallsDropped => {
                        self.observe_calls(&scope, at, &step, alerting);
                        None
                    }
                    Signal::LatencyP50 | Signal::LatencyP95 | Signal::TtftP50 => {
                        signal.percentile(&step)
                    }
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
        self.errors.retain(|scope, _| known.contains(scope));
        self.drops.retain(|scope, _| known.contains(scope));
    }

    /// Judges and learns one step of a scope's calls (see [`CallsDropped`]).
    fn observe_calls(&mut self, scope: &Scope, at: SystemTime, step: &Step, alerting: bool) {
        if !self.drops.contains_key(scope) {
            if !self.has_room() {
                return;
            }
            self.drops.insert(scope.clone(), CallsDropped::default());
        }
        let season = self.season(scope, Signal::RequestRate, at);
        let step_secs = self
            .config
            .resolution
            .max(Duration::from_secs(1))
            .as_secs_f64();
        // Judged once the scope's seasons are known (see [`CallsDropped`]).
        let judging =
            (alerting && self.seasons_known.contains(scope)).then_some(self.config.resolve_after);
        let nats = self.config.rate_drop_nats;
        if let Some(drop) = self.drops.get_mut(scope) {
            drop.update(at, (step.calls, step_secs), season, nats, judging);
        }
    }

    /// Judges and learns one step of a scope's errors (see [`ErrorRise`]).
    fn observe_errors(&mut self, scope: &Scope, at: SystemTime, step: &Step, alerting: bool) {
        if !self.errors.contains_key(scope) {
            if !self.has_room() {
                return;
            }
            self.errors.insert(scope.clone(), ErrorRise::default());
        }
        let Some(rise) = self.errors.get_mut(scope) else {
            return;
        };
        let keep = (-self.config.resolution.as_secs_f64()
            / self.config.history.as_secs_f64().max(1.0))
        .exp();
        rise.update(
            at,
            step.calls,
            step.errors,
            keep,
            alerting.then_some((self.config.error_evidence_nats, self.config.resolve_after)),
        );
    }

    /// Whether another series may be scored (`max_series`), warning once when not.
    fn has_room(&mut self) -> bool {
        if self.series_count() < self.config.max_series {
            return true;
        }
        if !self.warned_full {
            tracing::warn!(
                max_series = self.config.max_series,
                "anomaly detector: series limit reached; new services and models are not scored (analyzer.anomaly.max_series)"
            );
            self.warned_full = true;
        }
        false
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
            if !self.has_room() {
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
        let season = self.season(scope, signal, at);
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        series.update(
            at,
            value,
            signal.scored(value) - season,
            signal.needs_confirmation(),
            alerting.then_some((threshold, resolve_after)),
        );
    }

    /// One finding per series: active while its anomaly lasts (and `resolve_after` beyond).
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for ((scope, signal), series) in &self.series {
            let (labels, subject, mut evidence) = describe(scope, *signal);
            if let Some((at, ..)) = series.last {
                evidence.insert(
                    "spans_sql".into(),
                    json!(spans_sql(scope, series.began().unwrap_or(at), None)),
                );
            }
            if let Some(rate) = signal.season()
                && let Some(seasons) = self.seasons.get(&(scope.clone(), rate))
            {
                let periods: Vec<&str> = seasons
                    .periods()
                    .into_iter()
                    .map(|p| if p == DAY_BUCKETS { "daily" } else { "weekly" })
                    .collect();
                evidence.insert("seasons".into(), json!(periods));
            }
            findings.extend(series.finding(
                labels,
                signal.severity(),
                subject,
                &self.config,
                |at, scored| signal.unscored(scored + self.season(scope, *signal, at)),
                evidence,
            ));
        }
        for (scope, drop) in &self.drops {
            let (labels, subject, mut evidence) = describe(scope, Signal::CallsDropped);
            if let Some(began) = drop.began() {
                evidence.insert("spans_sql".into(), json!(spans_sql(scope, began, None)));
            }
            findings.extend(
                drop.finding(
                    labels,
                    subject,
                    self.config.rate_drop_nats,
                    self.config
                        .resolution
                        .max(Duration::from_secs(1))
                        .as_secs_f64(),
                    evidence,
                ),
            );
        }
        for (scope, rise) in &self.errors {
            let (labels, subject, mut evidence) = describe(scope, Signal::ErrorRatio);
            if let Some((at, _)) = rise.last {
                let began = rise.began().or(rise.run.map(|r| r.0)).unwrap_or(at);
                evidence.insert(
                    "spans_sql".into(),
                    json!(spans_sql(scope, began, Some(FAILED_CALL))),
                );
            }
            findings.extend(rise.finding(
                labels,
                subject,
                self.config.error_evidence_nats,
                evidence,
            ));
        }
        findings
    }

    /// The series in an anomaly now, with when it began.
    pub fn anomalies(&self) -> impl Iterator<Item = (&Scope, Signal, SystemTime)> {
        let streaming = self.series.iter().filter_map(|((scope, signal), series)| {
            series.began().map(|began| (scope, *signal, began))
        });
        let errors = self.errors.iter().filter_map(|(scope, rise)| {
            rise.began().map(|began| (scope, Signal::ErrorRatio, began))
        });
        let drops = self.drops.iter().filter_map(|(scope, drop)| {
            drop.began()
                .map(|began| (scope, Signal::CallsDropped, began))
        });
        streaming.chain(errors).chain(drops)
    }

    /// Series scored now.
    pub fn series_count(&self) -> usize {
        self.series.len() + self.errors.len() + self.drops.len()
    }

    /// Bytes of scorer state held now.
    pub fn state_bytes(&self) -> usize {
        self.series
            .values()
            .map(|s| s.scorer.state_bytes())
            .sum::<usize>()
            + self.errors.len() * std::mem::size_of::<ErrorRise>()
            + self.drops.len() * std::mem::size_of::<CallsDropped>()
            + self
                .seasons
                .values()
                .map(Seasons::state_bytes)
                .sum::<usize>()
    }
}

/// A series' labels, subject and the start of its evidence.
fn describe(
    scope: &Scope,
    signal: Signal,
) -> (
    BTreeMap<String, String>,
    String,
    serde_json::Map<String, serde_json::Value>,
) {
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
    let mut evidence = serde_json::Map::new();
    evidence.insert("signal".into(), json!(signal.as_str()));
    (labels, subject, evidence)
}

/// A call failed when its status is error (stored lower-case) or it carries `error.type`, as
/// in `llm_minutes`.
const FAILED_CALL: &str = "(lower(status_code) = 'error' OR error_type IS NOT NULL)";

/// The SQL that shows a scope's spans (those matching `filter`) from five minutes before
/// `began`.
fn spans_sql(scope: &Scope, began: SystemTime, filter: Option<&str>) -> String {
    let (service, model) = scope;
    let model_filter = if model == "*" {
        String::new()
    } else {
        format!(
            " AND coalesce(response_model, request_model) = {}",
            quote(model)
        )
    };
    format!(
        "SELECT * FROM spans WHERE service_name = {}{model_filter} AND end_time >= {}{} ORDER BY end_time",
        quote(service),
        ts(began.checked_sub(Duration::from_secs(300)).unwrap_or(began)),
        filter.map(|f| format!(" AND {f}")).unwrap_or_default()
    )
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

    fn next_due(&self) -> Option<SystemTime> {
        // The step after the last judged is complete once it has settled, and looked at early
        // before that.
        let settled = self
            .next_step
            .map(|next| next + self.config.resolution + self.config.settle);
        match (settled, self.next_look()) {
            (Some(settled), Some(look)) => Some(settled.min(look)),
            (settled, look) => settled.or(look),
        }
    }

    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        // Seasons first, so that a restart's replayed history is judged with them too.
        if !self.config.seasons_history.is_zero()
            && self
                .seasons_learned
                .is_none_or(|last| now >= last + SEASONS_REFIT)
        {
            match self.read_season_history(source, now).await {
                Ok(history) => {
                    match tokio::task::spawn_blocking(move || fit_seasons(&history)).await {
                        Ok(learned) => self.apply_seasons(learned),
                        Err(e) => tracing::warn!(
                            "anomaly detector: learning the rates' seasons failed ({e}); judging without them until the next try"
                        ),
                    }
                }
                Err(e) => tracing::warn!(
                    "anomaly detector: the rates' seasons could not be read from llm_minutes ({e}); judging without them until the next try"
                ),
            }
            self.seasons_learned = Some(now);
        }
        let until = complete_until(now, self.config.resolution, self.config.settle);
        let (from, alerting) = steps_due(self.next_step, until, self.config.history);
        if from < until {
            let steps = self.read(source, from, until).await?;
            self.learn(&steps, from, until, alerting);
            self.next_step = Some(until);
        }
        let Some(&first_look) = self.config.early_looks.first() else {
            return Ok(self.findings());
        };
        let look_until = complete_until(now, self.config.resolution, first_look);
        if look_until > until {
            let looks = match self.looked {
                Some((end, looks, missing)) if end == look_until => {
                    if missing {
                        looks
                    } else {
                        self.config.early_looks.len()
                    }
                }
                _ => 0,
            };
            let due = self
                .config
                .early_looks
                .get(looks)
                .is_some_and(|&after| after < self.config.settle && now >= look_until + after);
            if due {
                let steps = self.read(source, until, look_until).await?;
                let missing = self.look_early(&steps, until, look_until);
                self.looked = Some((look_until, looks + 1, missing));
            }
        }
        Ok(self.findings())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, TimestampNanosecondArray};
    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, LogNormal};

    use super::*;

    const START: u64 = 1_800_000_000;

    /// What changes on model `b`.
    #[derive(Clone, Copy)]
    struct Change {
        latency: f64,
        rate: f64,
        errors: f64,
    }

    const NO_CHANGE: Change = Change {
        latency: 1.0,
        rate: 1.0,
        errors: 1.0,
    };

    /// One service, two models, 5 calls/s each (Poisson) for `minutes`, 2% of the calls
    /// failing; model `b`'s latency, rate and error ratio multiplied by `change`'s from
    /// `change_minute` on.
    fn spans(minutes: u64, change_minute: u64, change: Change) -> RecordBatch {
        let mut rng = StdRng::seed_from_u64(7);
        let latency = LogNormal::new(2.0f64.ln(), 0.4).unwrap();
        let (mut time, mut model, mut duration, mut ttft, mut status, mut output, mut cost) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut error_type = vec![];
        for name in ["a", "b"] {
            let mut at = START as f64;
            let end = (START + minutes * 60) as f64;
            loop {
                let changed = name == "b" && at >= (START + change_minute * 60) as f64;
                let change = if changed { change } else { NO_CHANGE };
                let rate = 5.0 * change.rate;
                at += -(1.0 - rng.r#gen::<f64>()).ln() / rate;
                if at >= end {
                    break;
                }
                let seconds = latency.sample(&mut rng) * change.latency;
                time.push((at * 1e9) as i64);
                model.push(name);
                duration.push((seconds * 1e9) as i64);
                ttft.push((seconds * 0.1 * 1e9) as i64);
                // As the store writes them (lower-case), from OTLP's STATUS_CODE_ERROR.
                status.push(if rng.gen_bool(0.01 * change.errors) {
                    "error"
                } else {
                    "unset"
                });
                // As many have `error.type` and no error status (an instrumentation that
                // records only the attribute).
                error_type.push(rng.gen_bool(0.01 * change.errors).then_some("timeout"));
                let tokens = rng.gen_range(50..400);
                output.push(tokens as i64);
                cost.push(tokens as f64 * 1e-5);
            }
        }
        let n = time.len();
        let end_time: Vec<i64> = time.iter().zip(&duration).map(|(t, d)| t + d).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            (
                "end_time",
                Arc::new(TimestampNanosecondArray::from(end_time).with_timezone("UTC")),
            ),
            ("service_name", Arc::new(StringArray::from(vec!["chat"; n]))),
            ("request_model", Arc::new(StringArray::from(model.clone()))),
            ("response_model", Arc::new(StringArray::from(model))),
            ("output_tokens", Arc::new(Int64Array::from(output))),
            ("duration_ns", Arc::new(Int64Array::from(duration))),
            ("ttft_ns", Arc::new(Int64Array::from(ttft))),
            ("status_code", Arc::new(StringArray::from(status))),
            ("error_type", Arc::new(StringArray::from(error_type))),
            ("cost_usd", Arc::new(Float64Array::from(cost))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// Errors are counted as the store keeps them: status `error` (lower-case, as OTLP ingest
    /// writes it) or an `error.type`. (Comparing with "ERROR" counted none from real clients.)
    #[tokio::test]
    async fn errors_are_counted_as_the_store_writes_them() {
        let batch = spans(10, 100, NO_CHANGE);
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

    /// Runs the detector over simulated time as the analyzer's lane does (when it says a step
    /// is due, and every 10 s at the latest); returns (first evaluation at which each (model,
    /// signal) was active, in seconds from the start).
    async fn run(
        batch: RecordBatch,
        minutes: u64,
        config: AnomalyConfig,
    ) -> Vec<(u64, String, String)> {
        run_as_spans_arrive(batch, minutes, config, None).await
    }

    /// As `run`; with an `export_delay`, each span is in the store only from that long after
    /// its call ended, as spans arrive from a real exporter.
    async fn run_as_spans_arrive(
        batch: RecordBatch,
        minutes: u64,
        config: AnomalyConfig,
        export_delay: Option<Duration>,
    ) -> Vec<(u64, String, String)> {
        let ends = batch
            .column_by_name("end_time")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .clone();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        let mut detector = GoldenSignals::new(config);
        let mut active = Vec::new();
        let mut seen = HashSet::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(START);
        let end = start + Duration::from_secs(minutes * 60);
        let mut now = start;
        while now <= end {
            let second = now.duration_since(start).unwrap().as_secs();
            if let Some(delay) = export_delay {
                let arrived_by = (now - delay)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as i64;
                let arrived: arrow::array::BooleanArray = ends
                    .iter()
                    .map(|end| end.map(|e| e <= arrived_by))
                    .collect();
                let stored = arrow::compute::filter_record_batch(&batch, &arrived).unwrap();
                let table = MemTable::try_new(stored.schema(), vec![vec![stored]]).unwrap();
                ctx.deregister_table("spans").unwrap();
                ctx.register_table("spans", Arc::new(table)).unwrap();
            }
            for finding in detector.evaluate(&ctx, now).await.unwrap() {
                let key = (
                    finding.labels["model"].clone(),
                    finding.labels["signal"].clone(),
                );
                if finding.active && seen.insert(key.clone()) {
                    active.push((second, key.0, key.1));
                }
            }
            // As the lane does: due a little past the time, a second after this round at the
            // soonest.
            let tick = now + Duration::from_secs(10);
            now = detector
                .next_due()
                .map_or(tick, |due| (due + Duration::from_millis(20)).min(tick))
                .max(now + Duration::from_secs(1));
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
        let (delay, active) = latency_doubled(None).await;
        assert!(delay <= 30, "{active:?}");
        assert!(
            active.iter().all(|(_, model, _)| model != "a"),
            "model a did not change: {active:?}"
        );
    }

    /// Model b's calls twice as slow from minute 30 of 40, each span in the store
    /// `export_delay` after its call ended: the seconds from the change to the first latency
    /// anomaly on b (none anywhere before it), and every anomaly.
    async fn latency_doubled(export_delay: Option<Duration>) -> (u64, Vec<(u64, String, String)>) {
        latency_doubled_with(AnomalyConfig::default(), export_delay).await
    }

    async fn latency_doubled_with(
        config: AnomalyConfig,
        export_delay: Option<Duration>,
    ) -> (u64, Vec<(u64, String, String)>) {
        let batch = spans(
            40,
            30,
            Change {
                latency: 2.0,
                ..NO_CHANGE
            },
        );
        let active = run_as_spans_arrive(batch, 40, config, export_delay).await;
        (delay_after_change(&active, "latency"), active)
    }

    /// The p50s are looked at two seconds after their step ends: with spans in the store a
    /// second after their calls end (a batching exporter), the first step of slow calls
    /// (30:10–30:20: calls that start slow at 30:00 end from about 30:04) is news at 30:22,
    /// not when it settles at 30:30.
    #[tokio::test]
    async fn a_latency_step_is_news_two_seconds_after_its_step_ends() {
        let (delay, active) = latency_doubled(Some(Duration::from_secs(1))).await;
        assert!(delay <= 22, "{active:?}");
    }

    /// Spans 7 s behind their calls (an exporter's default 5 s batch delay, plus its send):
    /// the first look finds each step short of calls and judges nothing on it, the second
    /// (5 s after the step) finds most of them. No false alarm comes of the steps judged
    /// early on part of their calls, and the step is caught 25 s after the change instead of 30.
    #[tokio::test]
    async fn spans_later_than_the_first_early_look_are_judged_by_the_second() {
        let (delay, active) = latency_doubled(Some(Duration::from_secs(7))).await;
        assert!(delay <= 25, "{active:?}");
        assert!(
            active.iter().all(|(_, model, _)| model != "a"),
            "model a did not change: {active:?}"
        );
    }

    /// Without early looks (`early_looks = []`) a latency step waits for its settle: the same
    /// change as above, with spans a second behind, is caught later than the first look finds
    /// it, and still within the 30 s.
    #[tokio::test]
    async fn without_early_looks_a_latency_step_waits_for_its_settle() {
        let config = AnomalyConfig {
            early_looks: Vec::new(),
            ..AnomalyConfig::default()
        };
        let (delay, active) = latency_doubled_with(config, Some(Duration::from_secs(1))).await;
        assert!((23..=30).contains(&delay), "{delay} s: {active:?}");
    }

    /// An early look opens an anomaly on the calls in so far; the same step, settled, keeps it
    /// when it still scores past the threshold and retracts it when not.
    #[test]
    fn an_early_anomaly_is_kept_or_retracted_when_its_step_settles() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut series = Series::new(90);
        let step = |i: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(START + i * 10);
        for i in 0..300 {
            let value = 2000.0 + rng.gen_range(-100.0..100.0);
            series.update(
                step(i),
                value,
                value,
                false,
                Some((0.81, Duration::from_secs(300))),
            );
        }
        assert!(series.began().is_none());
        // The calls in early say 4 s; settled, the step is ordinary after all.
        series.look_early(step(300), 4000.0, 4000.0, 0.81, 1.0);
        assert_eq!(series.began(), Some(step(300)));
        assert!(series.episode.is_some_and(|e| e.early));
        series.update(
            step(300),
            2010.0,
            2010.0,
            false,
            Some((0.81, Duration::from_secs(300))),
        );
        assert!(series.began().is_none(), "retracted");
        // A look at a step already settled changes nothing.
        series.look_early(step(300), 4000.0, 4000.0, 0.81, 1.0);
        assert!(series.began().is_none());
        // Early and settled alike 4 s: the anomaly stays, settled.
        series.look_early(step(301), 4000.0, 4000.0, 0.81, 1.0);
        series.update(
            step(301),
            4100.0,
            4100.0,
            false,
            Some((0.81, Duration::from_secs(300))),
        );
        assert_eq!(series.began(), Some(step(301)));
        assert!(series.episode.is_some_and(|e| !e.early));
    }

    /// Calls far longer than `settle` (a reasoning model's 20 s, then 40 s) are judged when
    /// they end: counted where they started, a step would be judged before most of its calls
    /// had ended, its latency would be that of the quick few, and the slowdown would look like
    /// calls going missing.
    #[tokio::test]
    async fn a_latency_step_on_calls_longer_than_the_settle_is_caught_as_latency() {
        let batch = spans(
            40,
            30,
            Change {
                latency: 2.0,
                ..NO_CHANGE
            },
        );
        // Ten times longer calls: a median of 20 s, then 40 s on model b.
        let time = batch
            .column_by_name("time")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .clone();
        let duration = batch
            .column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let longer: Int64Array = duration.iter().map(|d| d.map(|d| d * 10)).collect();
        let ends: Vec<i64> = time
            .values()
            .iter()
            .zip(longer.values())
            .map(|(t, d)| t + d)
            .collect();
        let schema = batch.schema();
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| -> ArrayRef {
                match field.name().as_str() {
                    "duration_ns" => Arc::new(longer.clone()),
                    "end_time" => {
                        Arc::new(TimestampNanosecondArray::from(ends.clone()).with_timezone("UTC"))
                    }
                    _ => column.clone(),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let active = run_as_spans_arrive(
            batch,
            40,
            AnomalyConfig::default(),
            Some(Duration::from_secs(5)),
        )
        .await;
        let delay = delay_after_change(&active, "latency");
        // The first of the slower calls end about 40 s after the change.
        assert!(delay <= 90, "{active:?}");
    }

    #[tokio::test]
    async fn state_is_restored_from_the_store_after_a_restart() {
        // A detector started 25 minutes into the traffic replays its history and judges the
        // change at minute 30 as one that ran all along would.
        let batch = spans(
            35,
            30,
            Change {
                latency: 2.0,
                ..NO_CHANGE
            },
        );
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
        let batch = spans(
            40,
            30,
            Change {
                rate: 0.5,
                ..NO_CHANGE
            },
        );
        let active = run(batch, 40, AnomalyConfig::default()).await;
        let delay = delay_after_change(&active, "requests_per_second");
        assert!(delay <= 120, "{active:?}");
    }

    #[tokio::test]
    async fn a_tripled_error_ratio_is_caught_within_three_minutes() {
        // Model b at 5 calls/s failing 2% of its calls, then 6%: about 450 calls of evidence.
        let batch = spans(
            40,
            30,
            Change {
                errors: 3.0,
                ..NO_CHANGE
            },
        );
        let active = run(batch, 40, AnomalyConfig::default()).await;
        let delay = delay_after_change(&active, "error_ratio");
        assert!(delay <= 180, "{delay} s: {active:?}");
        assert!(
            active
                .iter()
                .all(|(_, model, signal)| model != "a" || signal != "error_ratio"),
            "model a's errors did not change: {active:?}"
        );
    }

    #[test]
    fn an_error_rise_says_how_large_it_is_and_when_it_began_and_resolves() {
        let config = AnomalyConfig::default();
        let judging = Some((config.error_evidence_nats, config.resolve_after));
        let keep = (-10.0f64 / 7200.0).exp();
        let mut rise = ErrorRise::default();
        let at = |step: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(START + step * 10);
        // An hour at 100 calls a step, exactly 1% failing: no evidence, nothing open.
        for step in 0..360 {
            rise.update(at(step), 100.0, 1.0, keep, judging);
        }
        assert_eq!(rise.evidence, 0.0);
        assert!(rise.began().is_none());
        // 5% failing from step 360 on: open within a few steps, begun at the rise.
        let mut opened = None;
        for step in 360..400 {
            rise.update(at(step), 100.0, 5.0, keep, judging);
            if opened.is_none() && rise.began().is_some() {
                opened = Some(step);
            }
        }
        let opened = opened.expect("a fivefold rise was not seen");
        assert!(opened <= 366, "{opened}");
        assert_eq!(rise.began(), Some(at(360)));
        let labels = BTreeMap::new();
        let finding = rise
            .finding(
                labels,
                "error_ratio of service s".into(),
                12.0,
                Default::default(),
            )
            .expect("judged");
        assert!(finding.active);
        let value = finding.evidence["value"].as_f64().unwrap();
        assert!((value - 0.05).abs() < 0.005, "{value}");
        let expected = finding.evidence["expected"].as_f64().unwrap();
        assert!((0.009..0.013).contains(&expected), "{expected}");
        assert!(
            finding.message.contains("nats of evidence"),
            "{}",
            finding.message
        );
        // Back to 1%: the evidence drains and the alert resolves after `resolve_after`.
        for step in 400..500 {
            rise.update(at(step), 100.0, 1.0, keep, judging);
        }
        assert!(rise.began().is_none(), "{:?}", rise.episode);
    }

    #[test]
    fn a_scope_that_never_failed_is_not_alarmed_by_a_few_errors_but_by_a_run() {
        let config = AnomalyConfig::default();
        let judging = Some((config.error_evidence_nats, config.resolve_after));
        let keep = (-10.0f64 / 7200.0).exp();
        let mut rise = ErrorRise::default();
        let at = |step: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(START + step * 10);
        for step in 0..360 {
            rise.update(at(step), 10.0, 0.0, keep, judging);
        }
        // Three errors in a step, against a learned ratio of none (floored at 0.1%).
        rise.update(at(360), 10.0, 3.0, keep, judging);
        assert!(rise.began().is_none());
        // Every call failing: a dozen calls are enough.
        rise.update(at(361), 10.0, 10.0, keep, judging);
        rise.update(at(362), 10.0, 10.0, keep, judging);
        assert!(rise.began().is_some());
    }

    #[tokio::test]
    async fn traffic_stopping_is_caught_within_a_minute() {
        let batch = spans(
            40,
            30,
            Change {
                rate: 0.0,
                ..NO_CHANGE
            },
        );
        let active = run(batch, 40, AnomalyConfig::default()).await;
        let delay = delay_after_change(&active, "requests_per_second");
        assert!(delay <= 60, "{active:?}");
    }

    /// `llm_minutes` of service chat for the `days` before `until` (seconds): model `b` with a
    /// daily cycle of its calls per second between 1 and 9 (peak at 15:00), model `a` flat at 5.
    fn minutes(until: u64, days: u64) -> RecordBatch {
        let (mut time, mut model, mut calls, mut output, mut cost) =
            (vec![], vec![], vec![], vec![], vec![]);
        for minute in (until - days * 86_400) / 60..until / 60 {
            let hour = (minute % 1440) as f64 / 60.0;
            let cycle = 5.0 + 4.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
            for (name, per_second) in [("a", 5.0), ("b", cycle)] {
                let n = (per_second * 60.0f64).round() as i64;
                time.push(minute as i64 * 60_000_000_000);
                model.push(name);
                calls.push(n);
                output.push(n * 100);
                cost.push(n as f64 * 1e-3);
            }
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            (
                "service_name",
                Arc::new(StringArray::from(vec!["chat"; model.len()])),
            ),
            ("request_model", Arc::new(StringArray::from(model))),
            ("calls", Arc::new(Int64Array::from(calls))),
            ("output_tokens", Arc::new(Int64Array::from(output))),
            ("cost_usd", Arc::new(Float64Array::from(cost))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[tokio::test]
    async fn the_rates_seasons_are_learned_from_llm_minutes_and_move_the_expected_rate() {
        let now = START - START % 86_400 + 15 * 86_400 + 120;
        let ctx = SessionContext::new();
        let batch = minutes(now, 15);
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("llm_minutes", Arc::new(table)).unwrap();
        let mut detector = GoldenSignals::new(AnomalyConfig::default());
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let history = detector.read_season_history(&ctx, at(now)).await.unwrap();
        assert_eq!(history.len(), 3, "a, b and the service");
        let (first, buckets) = &history[&("chat".to_string(), "b".to_string())];
        assert_eq!(
            (*first, buckets.len()),
            ((now - 15 * 86_400) / BUCKET_SECS, 15 * DAY_BUCKETS),
            "from the first bucket with calls to the last complete one"
        );
        detector.learn_seasons(&history);
        let scope = |model: &str| ("chat".to_string(), model.to_string());
        let day = now - now % 86_400 + 86_400;
        for signal in [
            Signal::RequestRate,
            Signal::OutputTokenRate,
            Signal::CostPerHour,
        ] {
            // On the scorer's square-root scale, the peak is sqrt(9) - sqrt(1) = 2 above the
            // trough for the calls (their tokens and cost follow, scaled).
            let swing = detector.season(&scope("b"), signal, at(day + 15 * 3600))
                - detector.season(&scope("b"), signal, at(day + 3 * 3600));
            let scale = signal.scored(match signal {
                Signal::RequestRate => 1.0,
                Signal::OutputTokenRate => 100.0,
                _ => 3600.0 * 1e-3,
            });
            assert!((swing / scale - 2.0).abs() < 0.3, "{signal:?}: {swing}");
            assert_eq!(
                detector.season(&scope("a"), signal, at(day + 15 * 3600)),
                0.0
            );
            assert_ne!(
                detector.season(&scope("*"), signal, at(day + 15 * 3600)),
                0.0
            );
        }
        // Latency has no season.
        assert_eq!(
            detector.season(&scope("b"), Signal::LatencyP50, at(day + 15 * 3600)),
            0.0
        );

        // A step's expected rate in an alert is the season's: model b's at its trough and at
        // its peak, after an hour of each as history (the rest of the day learned as well).
        for (hour, expected) in [(3, 1.0), (15, 9.0)] {
            let mut detector = GoldenSignals::new(AnomalyConfig::default());
            detector.learn_seasons(&history);
            let start = day + hour * 3600 - 3600;
            for step in 0..360 {
                let mut here = HashMap::new();
                let t = start + step * 10;
                let hour = (t % 86_400) as f64 / 3600.0;
                let per_second = 5.0 + 4.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
                here.insert(
                    scope("b"),
                    Step {
                        calls: (per_second * 10.0).round(),
                        ..Step::default()
                    },
                );
                detector.observe_step(at(t), &here, true);
            }
            let finding = detector
                .findings()
                .into_iter()
                .find(|f| f.labels["model"] == "b" && f.labels["signal"] == "requests_per_second")
                .unwrap();
            let got = finding.evidence["expected"].as_f64().unwrap();
            assert!(
                (got - expected).abs() < 0.5,
                "at {hour}:00 expected {got}, not {expected}"
            );
            assert_eq!(finding.evidence["seasons"], json!(["daily"]));
            assert!(!finding.active, "{}", finding.message);
        }

        // Model a's calls halve: judged as a fall once its seasons are known (two weeks of it,
        // no cycle found), not before.
        for known in [true, false] {
            let mut detector = GoldenSignals::new(AnomalyConfig::default());
            if known {
                detector.learn_seasons(&history);
            }
            let start = day + 12 * 3600;
            let mut fell_at = None;
            for step in 0..400 {
                let calls = if step < 360 { 50.0 } else { 25.0 };
                let here = HashMap::from([(
                    scope("a"),
                    Step {
                        calls,
                        ..Step::default()
                    },
                )]);
                detector.observe_step(at(start + step * 10), &here, true);
                let dropped = detector
                    .anomalies()
                    .any(|(_, signal, _)| signal == Signal::CallsDropped);
                if dropped && fell_at.is_none() {
                    fell_at = Some(step);
                }
            }
            if known {
                let fell_at = fell_at.expect("the fall alerted");
                assert!((360..=364).contains(&fell_at), "{fell_at}");
                let finding = detector
                    .findings()
                    .into_iter()
                    .find(|f| f.labels["signal"] == "calls_dropped")
                    .unwrap();
                assert!(finding.active);
                assert_eq!(finding.evidence["expected"].as_f64().unwrap().round(), 5.0);
            } else {
                assert_eq!(fell_at, None);
            }
        }
    }
}
