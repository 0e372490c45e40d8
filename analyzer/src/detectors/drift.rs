//! Model drift, per model across services, per service across models, per (service, model) and
//! for all LLM traffic: the distributions of input tokens, output tokens, latency and time to first
//! token, the error rate and the finish-reason mix in the current window against a reference window
//! (the trailing period, the same hours a day earlier, or a pinned period).
//!
//! Univariate tests: two-sample Kolmogorov–Smirnov and Mann–Whitney per numeric feature (PSI and
//! Jensen–Shannon reported as effect sizes), chi-square for finish reasons, Fisher's exact test for
//! errors. A multivariate one: a Gaussian mixture (linfa) fitted on the reference's even traces,
//! and a KS test of the per-request log-likelihoods of its odd traces against the current window's.
//!
//! False alarms: every test of every scope in one evaluation is one family under
//! Benjamini–Hochberg, so the chance that an evaluation of stationary traffic raises anything is
//! about `alpha`, however many models and services there are; `for_duration` then asks a finding
//! to hold across evaluations, which chance excursions of overlapping windows rarely do.
//!
//! Those p-values assume independent requests, and real ones are not: bursts of long contexts,
//! sessions and batch jobs move a real service's token counts between windows far beyond what an
//! iid null allows (an hour of Azure's production trace "drifts" in every window). So a test
//! counts only when its effect is also larger than the traffic's own weather: the reference is
//! cut into quarter-window slices, each window of four adjacent slices is compared with the rest of
//! the reference by the same statistic (KS distance, the shift of each of five quantiles,
//! error-rate change, finish-mix divergence, likelihood KS), and the current window must move
//! further than the largest of those moves (and than their mean plus three standard deviations),
//! and than the largest such move remembered from the scope's references of the last
//! `weather_memory` (a day): an hour's reference holds about six independent windows, too few to
//! bound a week's chance, while a day holds the traffic's episodes (remembered only while the
//! scope is not drifting).
//! Quantile by quantile, because a real service's weather is mostly a changing mix of kinds of
//! request, which swings some quantiles and leaves others still, while a change of the model
//! (every answer 10% longer) moves the still ones too. No verdict until the
//! reference holds traffic across `min_reference_coverage` of its span and at least seven
//! windows (until then the scope is listed in `evaluations` as not judged, and why); the alert's
//! evidence gives the coverage and the moves it was judged against.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Detector, alert_labels, humantime_serde};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, strings, ts};
use crate::state::Timing;
use crate::stats;

/// Where the reference window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMode {
    /// The `reference_length` just before the current window.
    Trailing,
    /// The current window's hours one day earlier (time of day is not drift).
    SameHoursYesterday,
    /// A fixed period (`pinned_from` .. `pinned_to`), e.g. a known-good release.
    Pinned,
}

/// `[analyzer.drift]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How far behind now the current window ends. Spans are stored at their start time and
    /// arrive after they end (an LLM call takes seconds, exporters batch for seconds more), so
    /// the newest seconds are always thin.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How often the tests run (each reads two windows of spans; more often than the window
    /// moves meaningfully only costs memory and CPU). Between runs the last verdicts stand.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    pub reference: ReferenceMode,
    #[serde(with = "humantime_serde")]
    pub reference_length: Duration,
    /// RFC 3339 bounds of a pinned reference.
    pub pinned_from: Option<String>,
    pub pinned_to: Option<String>,
    /// Requests needed in each window before any verdict.
    pub min_samples: usize,
    /// Share of the reference span a scope must have traffic in before any verdict: until then
    /// the reference (a service's first minutes, say) cannot tell its normal weather.
    pub min_reference_coverage: f64,
    /// False discovery rate per evaluation, across the tests of every scope.
    pub alpha: f64,
    /// Smallest KS distance worth an alert (with a big sample, tiny shifts are "significant")...
    pub min_ks_distance: f64,
    /// ...unless a quantile (10th to 90th percentile) moved by at least this fraction.
    pub min_relative_shift: f64,
    /// How far beyond the traffic's own weather a move must go: the largest move between the
    /// reference's windows times this. The sensitivity knob: 1 catches a 10% output shift on
    /// real traffic within about 11 minutes; larger trades that for fewer false alarms on traffic
    /// whose kinds of request come and go (EVALUATION.md measures both).
    pub weather_margin: f64,
    /// How long the largest moves between windows are remembered, per scope and statistic. An
    /// hour's reference holds about six independent windows, so a new window out-moves all of
    /// them about once in seven by chance alone; a day's memory holds the day's episodes (ten
    /// minutes of short prompts, a batch job) and bounds what the traffic does far better.
    /// Nothing is remembered while the scope drifts; once a lasting change has been alerted
    /// and has entered the reference, its moves are remembered, so that for a day after it a
    /// change must be larger than that one to alert again. Held in memory and refilled from the
    /// store when the detector starts (the day's references judged quietly, one per ten
    /// minutes). `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub weather_memory: Duration,
    /// Smallest change of the error rate worth an alert (absolute).
    pub min_error_rate_change: f64,
    /// Smallest Jensen–Shannon divergence of the finish-reason mix worth an alert.
    pub min_finish_reason_js: f64,
    /// Rows read per window at most.
    pub max_rows: usize,
    /// Gaussian mixture components of the multivariate test (0 turns it off).
    pub mixture_components: usize,
    #[serde(with = "humantime_serde")]
    pub for_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// A model (in a service) not called for this long, and for ten of its usual gaps between
    /// calls, gets `ModelStoppedReporting`; its drift alerts stay firing meanwhile instead of
    /// resolving as if it had recovered. `0s` turns this off (for models that idle by design).
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// A model not called for this long is forgotten (retired): its alerts then resolve.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            enabled: true,
            window: Duration::from_secs(600),
            settle: Duration::from_secs(30),
            evaluate_every: Duration::from_secs(60),
            reference: ReferenceMode::Trailing,
            reference_length: Duration::from_secs(3600),
            pinned_from: None,
            pinned_to: None,
            min_samples: 200,
            min_reference_coverage: 0.9,
            alpha: 0.001,
            min_ks_distance: 0.05,
            min_relative_shift: 0.03,
            weather_margin: 1.0,
            weather_memory: Duration::from_secs(24 * 3600),
            min_error_rate_change: 0.01,
            min_finish_reason_js: 0.005,
            max_rows: 50_000,
            mixture_components: 3,
            for_duration: Duration::from_secs(120),
            resolve_after: Duration::from_secs(300),
            silent_after: Duration::from_secs(900),
            forget_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The rows of one window of one scope.
#[derive(Debug, Default, Clone)]
struct Sample {
    input_tokens: Vec<f64>,
    output_tokens: Vec<f64>,
    latency_ms: Vec<f64>,
    ttft_ms: Vec<f64>,
    errors: u64,
    finish: BTreeMap<String, f64>,
    count: usize,
    trace_ids: Vec<String>,
    /// (log input, log output, log latency) per request, for the multivariate test...
    joint: Vec<[f64; 3]>,
    /// ...and whether the request's trace is one the mixture may be fitted on (an even trace id:
    /// the same split at every evaluation, so a cached mixture never judges rows it was fitted on).
    joint_fit: Vec<bool>,
}

/// A Gaussian mixture fitted on a reference's even traces, in coordinates standardized on them.
struct FittedMixture {
    fitted_at: SystemTime,
    model: GaussianMixtureModel<f64>,
    mean: [f64; 3],
    sd: [f64; 3],
}

impl FittedMixture {
    fn standardize(&self, rows: &[[f64; 3]]) -> Array2<f64> {
        standardize(rows, &self.mean, &self.sd)
    }
}

fn standardize(rows: &[[f64; 3]], mean: &[f64; 3], sd: &[f64; 3]) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), 3), |(r, d)| (rows[r][d] - mean[d]) / sd[d])
}

/// The drift detector.
pub struct DriftDetector {
    config: DriftConfig,
    last: Option<(SystemTime, Vec<Finding>)>,
    /// Mixtures per scope, refitted once a window has passed: fitting is the costly part of an
    /// evaluation, and a model from a few minutes ago describes the reference as well.
    mixtures: BTreeMap<(String, String), FittedMixture>,
    memory: WeatherMemory,
    /// When each scope last drifted: while it drifts, its references' moves are not remembered
    /// as weather.
    last_drift: BTreeMap<(String, String), SystemTime>,
    /// When the tests last ran (the cadence that "while it drifts" is measured in).
    last_judged: Option<SystemTime>,
    /// The memory has been refilled from the store since the detector started...
    restored: bool,
    /// ...and is being refilled now (one mixture fit per scope for all of it).
    restoring: bool,
}

/// Buckets of remembered moves per scope and statistic at most (a day in 10-minute buckets).
const MEMORY_BUCKETS: u32 = 144;

/// The largest moves between windows seen in a scope's earlier references, per statistic, as
/// (bucket start, largest move in it), oldest first.
#[derive(Debug, Default)]
struct WeatherMemory {
    moves: BTreeMap<(String, String, String), std::collections::VecDeque<(SystemTime, f64)>>,
}

impl WeatherMemory {
    /// Forgets moves from before `start`.
    fn forget_before(&mut self, start: SystemTime) {
        self.moves.retain(|_, moves| {
            while moves.front().is_some_and(|(at, _)| *at < start) {
                moves.pop_front();
            }
            !moves.is_empty()
        });
    }

    /// The oldest move remembered for a scope.
    fn since(&self, scope: &(String, String)) -> Option<SystemTime> {
        self.moves
            .iter()
            .filter(|((service, model, _), _)| *service == scope.0 && *model == scope.1)
            .filter_map(|(_, moves)| moves.front().map(|(at, _)| *at))
            .min()
    }
}

/// One scope's memory at one evaluation.
struct Recall<'a> {
    memory: &'a mut WeatherMemory,
    scope: &'a (String, String),
    now: SystemTime,
    bucket: Duration,
    /// This reference's moves are remembered (the scope has been calm).
    record: bool,
}

impl Recall<'_> {
    /// `limit` (this reference's largest move of `statistic`) raised to the largest remembered,
    /// and remembered itself when the scope has been calm.
    fn limit(&mut self, statistic: &str, limit: f64) -> f64 {
        let key = (
            self.scope.0.clone(),
            self.scope.1.clone(),
            statistic.to_owned(),
        );
        let remembered = self.memory.moves.get(&key).map_or(0.0, |moves| {
            moves.iter().map(|(_, m)| *m).fold(0.0, f64::max)
        });
        if self.record {
            let moves = self.memory.moves.entry(key).or_default();
            match moves.back_mut() {
                Some((start, largest))
                    if self.now.duration_since(*start).unwrap_or_default() < self.bucket =>
                {
                    *largest = largest.max(limit)
                }
                _ => moves.push_back((self.now, limit)),
            }
        }
        limit.max(remembered)
    }

    fn numeric(
        &mut self,
        feature: &str,
        weather: Option<NumericWeather>,
    ) -> Option<NumericWeather> {
        let mut weather = weather?;
        weather.ks_distance = self.limit(&format!("{feature}.ks"), weather.ks_distance);
        for (q, name) in PROFILE_NAMES.iter().enumerate() {
            weather.quantile_shifts[q] =
                self.limit(&format!("{feature}.{name}"), weather.quantile_shifts[q]);
        }
        Some(weather)
    }
}

impl DriftDetector {
    pub fn new(config: DriftConfig) -> Self {
        DriftDetector {
            config,
            last: None,
            mixtures: BTreeMap::new(),
            memory: WeatherMemory::default(),
            last_drift: BTreeMap::new(),
            last_judged: None,
            restored: false,
            restoring: false,
        }
    }

    fn reference_window(&self, now: SystemTime) -> Result<(SystemTime, SystemTime), AnalyzerError> {
        let current_start = now - self.config.window;
        Ok(match self.config.reference {
            ReferenceMode::Trailing => {
                (current_start - self.config.reference_length, current_start)
            }
            ReferenceMode::SameHoursYesterday => {
                // `reference_length` centred on the current window's time a day earlier: long
                // enough to see how much the traffic moves between windows at that hour.
                let day = Duration::from_secs(86_400);
                let middle = current_start + self.config.window / 2 - day;
                let half = self.config.reference_length.max(self.config.window) / 2;
                (middle - half, middle + half)
            }
            ReferenceMode::Pinned => {
                let parse = |what: &str,
                             value: &Option<String>|
                 -> Result<SystemTime, AnalyzerError> {
                    let text = value.as_deref().ok_or_else(|| {
                        AnalyzerError::Config(format!(
                            "analyzer.drift.reference = \"pinned\" needs {what}"
                        ))
                    })?;
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map(SystemTime::from)
                        .map_err(|e| {
                            AnalyzerError::Config(format!("analyzer.drift.{what} {text:?}: {e}"))
                        })
                };
                (
                    parse("pinned_from", &self.config.pinned_from)?,
                    parse("pinned_to", &self.config.pinned_to)?,
                )
            }
        })
    }

    /// The rows between `start` and `end` per scope, cut into `slices` equal slices of time (one
    /// for the current window; quarter windows for the reference, whose runs of four are the
    /// windows its normal weather is measured on).
    async fn load(
        &self,
        source: &dyn QuerySource,
        start: SystemTime,
        end: SystemTime,
        slices: usize,
    ) -> Result<BTreeMap<(String, String), Vec<Sample>>, AnalyzerError> {
        let slices = slices.max(1);
        let start_ns = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let slice_ns =
            (end.duration_since(start).unwrap_or_default().as_nanos() / slices as u128).max(1);
        let sql = format!(
            "SELECT service_name AS service, coalesce(response_model, request_model) AS model, \
             input_tokens, output_tokens, duration_ns / 1e6 AS latency_ms, ttft_ns / 1e6 AS ttft_ms, \
             status_code, array_to_string(finish_reasons, ',') AS finish, trace_id, \
             (arrow_cast(time, 'Int64') - {start_ns}) / {slice_ns} AS slice \
             FROM spans WHERE time > {} AND time <= {} \
             AND (response_model IS NOT NULL OR request_model IS NOT NULL) LIMIT {}",
            ts(start),
            ts(end),
            self.config.max_rows
        );
        let batches = source.sql(&sql).await?;
        let service = strings(&batches, "service")?;
        let model = strings(&batches, "model")?;
        let input = floats(&batches, "input_tokens")?;
        let output = floats(&batches, "output_tokens")?;
        let latency = floats(&batches, "latency_ms")?;
        let ttft = floats(&batches, "ttft_ms")?;
        let status = strings(&batches, "status_code")?;
        let finish = strings(&batches, "finish")?;
        let trace = strings(&batches, "trace_id")?;
        let slice = floats(&batches, "slice")?;
        let mut samples: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
        for i in 0..service.len() {
            let key = (
                service[i].clone().unwrap_or_default(),
                model[i].clone().unwrap_or_default(),
            );
            let index = (slice[i].unwrap_or(0.0).max(0.0) as usize).min(slices - 1);
            let sample = &mut samples
                .entry(key)
                .or_insert_with(|| vec![Sample::default(); slices])[index];
            sample.count += 1;
            if let Some(v) = input[i] {
                sample.input_tokens.push(v);
            }
            if let Some(v) = output[i] {
                sample.output_tokens.push(v);
            }
            if let Some(v) = latency[i] {
                sample.latency_ms.push(v);
            }
            if let Some(v) = ttft[i] {
                sample.ttft_ms.push(v);
            }
            if status[i]
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("error"))
            {
                sample.errors += 1;
            }
            let reason = finish[i]
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "none".to_string());
            *sample.finish.entry(reason).or_default() += 1.0;
            if let (Some(a), Some(b), Some(c)) = (input[i], output[i], latency[i]) {
                sample.joint.push([a.ln_1p(), b.ln_1p(), c.max(1e-3).ln()]);
                sample
                    .joint_fit
                    .push(trace[i].as_deref().is_none_or(even_trace));
            }
            if sample.trace_ids.len() < 3
                && let Some(id) = &trace[i]
            {
                sample.trace_ids.push(id.clone());
            }
        }
        // Roll-ups: a model across the services that call it, a service across its models, and
        // all LLM traffic. A change in a model, in one app's prompts, or in everything (a shared
        // template, a retrieval change) shows first in the roll-up that holds it, with the most
        // samples. Only roll-ups of two or more parts: otherwise they repeat a scope.
        let mut rollups: BTreeMap<(String, String), (Vec<Sample>, usize)> = BTreeMap::new();
        for ((service, model), parts) in &samples {
            for key in [
                ("*".to_string(), model.clone()),
                (service.clone(), "*".to_string()),
                ("*".to_string(), "*".to_string()),
            ] {
                let entry = rollups
                    .entry(key)
                    .or_insert_with(|| (vec![Sample::default(); slices], 0));
                for (into, part) in entry.0.iter_mut().zip(parts) {
                    into.merge(part);
                }
                entry.1 += 1;
            }
        }
        // All traffic repeats a model's or a service's roll-up unless there are several of each.
        let services = samples
            .keys()
            .map(|(s, _)| s)
            .collect::<BTreeSet<_>>()
            .len();
        let models = samples
            .keys()
            .map(|(_, m)| m)
            .collect::<BTreeSet<_>>()
            .len();
        for ((service, model), (sample, parts)) in rollups {
            let everything = service == "*" && model == "*";
            if parts >= 2 && (!everything || (services >= 2 && models >= 2)) {
                samples.insert((service, model), sample);
            }
        }
        Ok(samples)
    }
}

impl Sample {
    fn merge(&mut self, other: &Sample) {
        self.input_tokens.extend_from_slice(&other.input_tokens);
        self.output_tokens.extend_from_slice(&other.output_tokens);
        self.latency_ms.extend_from_slice(&other.latency_ms);
        self.ttft_ms.extend_from_slice(&other.ttft_ms);
        self.errors += other.errors;
        for (reason, count) in &other.finish {
            *self.finish.entry(reason.clone()).or_default() += count;
        }
        self.count += other.count;
        if self.trace_ids.len() < 3 {
            self.trace_ids.extend(
                other
                    .trace_ids
                    .iter()
                    .take(3 - self.trace_ids.len())
                    .cloned(),
            );
        }
        self.joint.extend_from_slice(&other.joint);
        self.joint_fit.extend_from_slice(&other.joint_fit);
    }

    /// The joint rows of the traces a mixture may be fitted on (`fit`), or of the others.
    fn joint_rows(&self, fit: bool) -> Vec<[f64; 3]> {
        self.joint
            .iter()
            .zip(&self.joint_fit)
            .filter(|(_, fit_row)| **fit_row == fit)
            .map(|(row, _)| *row)
            .collect()
    }
}

/// The reference is cut into slices of a quarter window; every run of four adjacent slices is
/// one of its windows. Quarter steps rather than halves give twice the windows to measure the
/// weather on, and its largest move is then less often an underestimate (measured on the Azure
/// traces: fewer chance exceedances at the same sensitivity).
const SLICES_PER_WINDOW: usize = 4;
/// Windows of the reference needed to tell its normal weather (a reference of 2.5 windows).
const MIN_WINDOWS: usize = 7;
/// Slices of the reference at most (a day's reference at 10-second windows): each holds its
/// rows' values, and each window of them is sorted once an evaluation.
const MAX_SLICES: usize = 40_000;
/// A window's statistic counts as weather up to the largest seen between the reference's own
/// windows, and at least their mean plus this many standard deviations.
const WEATHER_SD: f64 = 3.0;

/// The largest move of a statistic that this traffic makes between windows on its own (see
/// [`WEATHER_SD`]), or `None` with fewer than [`MIN_WINDOWS`] windows to go by.
fn weather_limit(moves: &[f64]) -> Option<f64> {
    if moves.len() < MIN_WINDOWS {
        return None;
    }
    let n = moves.len() as f64;
    let mean = moves.iter().sum::<f64>() / n;
    let sd = (moves.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = moves.iter().copied().fold(0.0, f64::max);
    Some(max.max(mean + WEATHER_SD * sd))
}

/// The quantiles whose shifts are judged, each against its own weather. A multiplicative change
/// (every answer 10% longer) moves them all, while a real service's weather is mostly a changing
/// mix of kinds of request (more long answers this minute, fewer the next): it swings the
/// quantiles where the kinds meet and leaves the others nearly still. Comparing each quantile with
/// how far that same quantile moves on its own finds the shift in the still ones; the median
/// alone, or the KS distance, is dominated by the swinging ones.
const PROFILE: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];
const PROFILE_NAMES: [&str; 5] = ["p10", "p25", "p50", "p75", "p90"];

/// How far a quantile moved, as a log ratio (plus one, so that a quantile at zero stays finite).
fn log_shift(current: f64, reference: f64) -> f64 {
    ((current.max(0.0) + 1.0) / (reference.max(0.0) + 1.0)).ln()
}

/// How far a numeric feature moves between windows inside the reference: each window (four
/// adjacent quarter-window slices) against the rest of the reference.
#[derive(Debug, Clone, Copy)]
struct NumericWeather {
    ks_distance: f64,
    /// Per quantile of [`PROFILE`], the largest log shift.
    quantile_shifts: [f64; PROFILE.len()],
    windows: usize,
}

/// The reference's windows, as ranges of slices.
fn windows_of(slices: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..(slices + 1).saturating_sub(SLICES_PER_WINDOW)).map(|w| w..w + SLICES_PER_WINDOW)
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

fn numeric_weather(
    slices: &[Sample],
    feature: fn(&Sample) -> &Vec<f64>,
    min_window: usize,
) -> Option<NumericWeather> {
    let all = sorted(slices.iter().flat_map(|s| feature(s).iter().copied()));
    let mut distances = Vec::new();
    let mut shifts: [Vec<f64>; PROFILE.len()] = Default::default();
    for w in windows_of(slices.len()) {
        let part = sorted(slices[w].iter().flat_map(|s| feature(s).iter().copied()));
        if part.len() < min_window || all.len() - part.len() < min_window {
            continue;
        }
        let (Some(d), Some(rest), Some(window)) = (
            stats::ks_against_rest(&all, &part),
            stats::quantiles_of_rest(&all, &part, &PROFILE),
            stats::quantiles(&part, &PROFILE),
        ) else {
            continue;
        };
        distances.push(d);
        for (q, moves) in shifts.iter_mut().enumerate() {
            moves.push(log_shift(window[q], rest[q]).abs());
        }
    }
    let mut quantile_shifts = [0.0; PROFILE.len()];
    for (limit, moves) in quantile_shifts.iter_mut().zip(&shifts) {
        *limit = weather_limit(moves)?;
    }
    Some(NumericWeather {
        ks_distance: weather_limit(&distances)?,
        quantile_shifts,
        windows: distances.len(),
    })
}

/// How far the error rate moves between the reference's windows (absolute difference).
fn error_rate_weather(slices: &[Sample], min_window: usize) -> Option<f64> {
    let (errors, count) = slices
        .iter()
        .fold((0u64, 0usize), |(e, n), s| (e + s.errors, n + s.count));
    let mut moves = Vec::new();
    for w in windows_of(slices.len()) {
        let (we, wn) = slices[w]
            .iter()
            .fold((0u64, 0usize), |(e, n), s| (e + s.errors, n + s.count));
        if wn < min_window || count - wn < min_window {
            continue;
        }
        moves.push((we as f64 / wn as f64 - (errors - we) as f64 / (count - wn) as f64).abs());
    }
    weather_limit(&moves)
}

/// How far the finish-reason mix moves between the reference's windows (Jensen–Shannon).
fn finish_weather(slices: &[Sample], min_window: usize) -> Option<f64> {
    let mut total: BTreeMap<&String, f64> = BTreeMap::new();
    for slice in slices {
        for (reason, n) in &slice.finish {
            *total.entry(reason).or_default() += n;
        }
    }
    let mut moves = Vec::new();
    for w in windows_of(slices.len()) {
        let window: Vec<f64> = total
            .keys()
            .map(|r| {
                slices[w.clone()]
                    .iter()
                    .map(|s| s.finish.get(*r).copied().unwrap_or(0.0))
                    .sum::<f64>()
            })
            .collect();
        let rest: Vec<f64> = total.values().zip(&window).map(|(t, w)| t - w).collect();
        let (wn, rn) = (window.iter().sum::<f64>(), rest.iter().sum::<f64>());
        if wn < min_window as f64 || rn < min_window as f64 {
            continue;
        }
        moves.push(stats::jensen_shannon(
            &stats::shares(&window),
            &stats::shares(&rest),
        ));
    }
    weather_limit(&moves)
}

/// How far the mixture log-likelihoods (of the held-out traces) move between the reference's
/// windows: KS distance of each window against the rest.
fn likelihood_weather(slice_likelihoods: &[Vec<f64>], min_window: usize) -> Option<f64> {
    let all = sorted(slice_likelihoods.iter().flatten().copied());
    let mut moves = Vec::new();
    for w in windows_of(slice_likelihoods.len()) {
        let part = sorted(slice_likelihoods[w].iter().flatten().copied());
        if part.len() < min_window || all.len() - part.len() < min_window {
            continue;
        }
        if let Some(d) = stats::ks_against_rest(&all, &part) {
            moves.push(d);
        }
    }
    weather_limit(&moves)
}

/// How an alert names a scope.
fn scope_subject(service: &str, model: &str) -> String {
    match (service, model) {
        ("*", "*") => "all LLM traffic".to_string(),
        ("*", model) => format!("model {model} (all services)"),
        (service, "*") => format!("service {service} (all models)"),
        (service, model) => format!("model {model} in service {service}"),
    }
}

/// Whether a trace id (hex) ends in an even digit.
fn even_trace(trace_id: &str) -> bool {
    trace_id
        .chars()
        .last()
        .and_then(|c| c.to_digit(16))
        .is_none_or(|d| d % 2 == 0)
}

/// One test's outcome.
struct TestResult {
    feature: &'static str,
    p: f64,
    /// The effect size is large enough to matter.
    material: bool,
    evidence: serde_json::Value,
}

fn numeric_test(
    feature: &'static str,
    reference: &[f64],
    current: &[f64],
    config: &DriftConfig,
    weather: Option<NumericWeather>,
) -> Option<TestResult> {
    if reference.len() < config.min_samples || current.len() < config.min_samples {
        return None;
    }
    // Without the reference's own weather there is no telling a shift from a normal day.
    let weather = weather?;
    // KS for any change of shape, Mann–Whitney for the common case, a shift: the smaller p of
    // the two, Bonferroni-corrected, so that the pair counts as one test.
    let (d, p_ks) = stats::ks_two_sample(reference, current)?;
    let (z, p_mw) = stats::mann_whitney(reference, current)?;
    let p = (2.0 * p_ks.min(p_mw)).min(1.0);
    let edges = stats::quantile_edges(reference, 10);
    let p_bins = stats::histogram_shares(reference, &edges);
    let q_bins = stats::histogram_shares(current, &edges);
    let psi = stats::psi(&p_bins, &q_bins);
    let js = stats::jensen_shannon(&p_bins, &q_bins);
    let reference_quantiles = stats::quantiles(&sorted(reference.iter().copied()), &PROFILE)?;
    let current_quantiles = stats::quantiles(&sorted(current.iter().copied()), &PROFILE)?;
    let (median_ref, median_cur) = (reference_quantiles[2], current_quantiles[2]);
    let relative_shift = if median_ref > 0.0 {
        median_cur / median_ref - 1.0
    } else {
        0.0
    };
    // Larger than this traffic moves between windows on its own, not merely significant under
    // an iid null that real, bursty traffic does not follow: the KS distance, or any quantile
    // against that quantile's own weather (and at least `min_relative_shift`).
    let floor = (1.0 + config.min_relative_shift).ln();
    let mut quantiles = serde_json::Map::new();
    let mut moved_quantiles = Vec::new();
    for (q, name) in PROFILE_NAMES.iter().enumerate() {
        let shift = log_shift(current_quantiles[q], reference_quantiles[q]);
        if shift.abs() >= floor.max(weather.quantile_shifts[q] * config.weather_margin) {
            moved_quantiles.push(*name);
        }
        quantiles.insert(
            (*name).to_owned(),
            json!({
                "reference": reference_quantiles[q], "current": current_quantiles[q],
                "shift": shift.exp_m1(),
                "between_reference_windows": weather.quantile_shifts[q].exp_m1(),
            }),
        );
    }
    Some(TestResult {
        feature,
        p,
        material: d
            >= config
                .min_ks_distance
                .max(weather.ks_distance * config.weather_margin)
            || !moved_quantiles.is_empty(),
        evidence: json!({
            "ks_distance": d, "ks_p": p_ks, "mann_whitney_z": z, "mann_whitney_p": p_mw, "p": p,
            "psi": psi, "jensen_shannon": js,
            "reference_median": median_ref, "current_median": median_cur,
            "median_shift": relative_shift,
            "quantiles": quantiles, "moved_quantiles": moved_quantiles,
            "reference_n": reference.len(), "current_n": current.len(),
            "between_reference_windows": {
                "ks_distance": weather.ks_distance, "windows": weather.windows,
            },
        }),
    })
}

/// Per-request log-density under a Gaussian mixture, from its public weights, means and precisions.
fn log_densities(model: &GaussianMixtureModel<f64>, rows: &Array2<f64>) -> Vec<f64> {
    let weights = model.weights();
    let means = model.means();
    let precisions = model.precisions();
    let dims = rows.ncols();
    let components: Vec<(f64, f64)> = (0..weights.len())
        .map(|k| {
            let precision = precisions.index_axis(ndarray::Axis(0), k).to_owned();
            (weights[k].ln(), determinant(&precision).max(1e-300).ln())
        })
        .collect();
    let log_two_pi = (2.0 * std::f64::consts::PI).ln();
    rows.outer_iter()
        .map(|x| {
            let terms: Vec<f64> = components
                .iter()
                .enumerate()
                .map(|(k, (log_weight, log_det_precision))| {
                    let diff = &x - &means.row(k);
                    let precision = precisions.index_axis(ndarray::Axis(0), k);
                    let mahalanobis = diff.dot(&precision.dot(&diff));
                    log_weight + 0.5 * (log_det_precision - dims as f64 * log_two_pi - mahalanobis)
                })
                .collect();
            let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// Determinant by Gaussian elimination with partial pivoting (the matrices are 3×3).
fn determinant(matrix: &Array2<f64>) -> f64 {
    let mut m = matrix.clone();
    let n = m.nrows();
    let mut det = 1.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|a, b| m[[*a, col]].abs().total_cmp(&m[[*b, col]].abs()))
            .unwrap_or(col);
        if m[[pivot, col]].abs() < 1e-300 {
            return 0.0;
        }
        if pivot != col {
            for j in 0..n {
                m.swap([pivot, j], [col, j]);
            }
            det = -det;
        }
        det *= m[[col, col]];
        for row in col + 1..n {
            let factor = m[[row, col]] / m[[col, col]];
            for j in col..n {
                m[[row, j]] -= factor * m[[col, j]];
            }
        }
    }
    det
}

/// Fit a mixture on the reference's even traces (standardized on them).
fn fit_mixture(reference: &Sample, config: &DriftConfig, now: SystemTime) -> Option<FittedMixture> {
    let rows = reference.joint_rows(true);
    if rows.len() < config.min_samples {
        return None;
    }
    let mut mean = [0.0; 3];
    let mut sd = [0.0; 3];
    for d in 0..3 {
        mean[d] = rows.iter().map(|r| r[d]).sum::<f64>() / rows.len() as f64;
        sd[d] = (rows.iter().map(|r| (r[d] - mean[d]).powi(2)).sum::<f64>() / rows.len() as f64)
            .sqrt()
            .max(1e-9);
    }
    let model = GaussianMixtureModel::params(config.mixture_components)
        .n_runs(2)
        .tolerance(1e-3)
        .reg_covariance(1e-3)
        .fit(&DatasetBase::from(standardize(&rows, &mean, &sd)))
        .ok()?;
    Some(FittedMixture {
        fitted_at: now,
        model,
        mean,
        sd,
    })
}

fn multivariate_test(
    mixture: &FittedMixture,
    reference_slices: &[Sample],
    current: &Sample,
    config: &DriftConfig,
    min_window: usize,
    recall: &mut Recall,
) -> Option<TestResult> {
    // Only the odd traces of the reference: in-sample likelihoods would flatter it.
    let slice_likelihoods: Vec<Vec<f64>> = reference_slices
        .iter()
        .map(|s| log_densities(&mixture.model, &mixture.standardize(&s.joint_rows(false))))
        .collect();
    let ll_reference: Vec<f64> = slice_likelihoods.iter().flatten().copied().collect();
    if ll_reference.len() < config.min_samples || current.joint.len() < config.min_samples {
        return None;
    }
    let weather = recall.limit("joint", likelihood_weather(&slice_likelihoods, min_window)?);
    let ll_current = log_densities(&mixture.model, &mixture.standardize(&current.joint));
    let (d, p) = stats::ks_two_sample(&ll_reference, &ll_current)?;
    let mean_ref = ll_reference.iter().sum::<f64>() / ll_reference.len() as f64;
    let mean_cur = ll_current.iter().sum::<f64>() / ll_current.len() as f64;
    Some(TestResult {
        feature: "joint_input_output_latency",
        p,
        material: d >= config.min_ks_distance.max(weather * config.weather_margin),
        evidence: json!({
            "method": "gaussian mixture (linfa) log-likelihood, KS of held-out reference vs current",
            "components": config.mixture_components, "ks_distance": d, "p": p,
            "reference_mean_loglik": mean_ref, "current_mean_loglik": mean_cur,
            "between_reference_windows": {"ks_distance": weather},
        }),
    })
}

#[async_trait]
impl Detector for DriftDetector {
    fn name(&self) -> &'static str {
        "model_drift"
    }
    fn lane(&self) -> &'static str {
        "drift"
    }

    fn timing(&self) -> Timing {
        Timing {
            for_duration: self.config.for_duration,
            resolve_after: self.config.resolve_after,
        }
    }

    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        if let Some((at, findings)) = &self.last
            && now.duration_since(*at).unwrap_or_default() < self.config.evaluate_every
        {
            return Ok(findings.clone());
        }
        if !self.restored {
            self.restored = true;
            self.restore(source, now).await;
        }
        let findings = self.judge(source, now).await?;
        self.last = Some((now, findings.clone()));
        Ok(findings)
    }
}

impl DriftDetector {
    /// Refills the weather memory after a start, from the store: the day before `now` judged
    /// quietly, one evaluation per memory bucket (a coarser cadence than live, and one mixture
    /// fit per scope for all of them), so that a restart does not bring back an hour-only
    /// weather.
    async fn restore(&mut self, source: &dyn QuerySource, now: SystemTime) {
        let memory = self.config.weather_memory;
        if memory == Duration::ZERO {
            return;
        }
        let bucket = self.config.window.max(memory / MEMORY_BUCKETS);
        let started = std::time::Instant::now();
        let (mut at, mut judged) = (now.checked_sub(memory).unwrap_or(now) + bucket, 0);
        self.restoring = true;
        while at < now {
            if let Err(e) = self.judge(source, at).await {
                tracing::warn!(error = %e, "drift: the weather memory could not be restored from the store");
                break;
            }
            judged += 1;
            at += bucket;
        }
        self.restoring = false;
        tracing::info!(
            references = judged,
            statistics = self.memory.moves.len(),
            seconds = started.elapsed().as_secs_f64(),
            "drift: weather memory restored from the store"
        );
    }

    async fn judge(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let now = now - self.config.settle;
        let (reference_start, reference_end) = self.reference_window(now)?;
        // The reference in quarter-window slices: each run of four neighbours is a window, so
        // the reference shows how much this traffic moves between windows of this length. A
        // window too short for its reference would cut it into more slices than memory holds.
        let slice = self.config.window / SLICES_PER_WINDOW as u32;
        let reference_span = reference_end
            .duration_since(reference_start)
            .unwrap_or_default();
        let slices = (reference_span.as_secs_f64() / slice.as_secs_f64().max(1e-9)).ceil();
        if self.config.window < Duration::from_secs(1) || slices > MAX_SLICES as f64 {
            return Err(AnalyzerError::Config(format!(
                "analyzer.drift: a window of {} against a reference of {} cuts the reference into \
                 {slices:.0} quarter-window slices (at most {MAX_SLICES}, and the window at least 1s): \
                 lengthen window or shorten reference_length",
                humantime::format_duration(self.config.window),
                humantime::format_duration(reference_span),
            )));
        }
        let slices = slices as usize;
        // Without a reference there is nothing to compare: count before reading rows, so that a
        // young or flooded collector pays for a count, not for materializing a window.
        let counted = source
            .sql(&format!(
                "SELECT count(*) AS n FROM spans WHERE time > {} AND time <= {} \
                 AND (response_model IS NOT NULL OR request_model IS NOT NULL)",
                ts(reference_start),
                ts(reference_end)
            ))
            .await?;
        let reference_rows = floats(&counted, "n")?
            .first()
            .copied()
            .flatten()
            .unwrap_or(0.0);
        if reference_rows < self.config.min_samples as f64 {
            // Nothing to judge against yet: say so for the scopes the current window holds (one
            // grouped count, not the window's rows), so that a new deployment's models read as
            // "not judged yet" rather than as nothing at all.
            let seen = source
                .sql(&format!(
                    "SELECT service_name AS service, coalesce(response_model, request_model) AS model, \
                     count(*) AS n FROM spans WHERE time > {} AND time <= {} \
                     AND (response_model IS NOT NULL OR request_model IS NOT NULL) GROUP BY 1, 2",
                    ts(now - self.config.window),
                    ts(now)
                ))
                .await?;
            let (services, models) = (strings(&seen, "service")?, strings(&seen, "model")?);
            let reason = format!(
                "the reference holds {reference_rows} calls, {} needed",
                self.config.min_samples
            );
            return Ok(services
                .iter()
                .zip(&models)
                .map(|(service, model)| {
                    self.not_judged(
                        service.as_deref().unwrap_or_default(),
                        model.as_deref().unwrap_or_default(),
                        reason.clone(),
                        json!({
                            "from": crate::alert::format_time(reference_start),
                            "to": crate::alert::format_time(reference_end),
                            "coverage": 0.0,
                        }),
                    )
                })
                .collect());
        }
        let current: BTreeMap<(String, String), Sample> = self
            .load(source, now - self.config.window, now, 1)
            .await?
            .into_iter()
            .filter_map(|(key, mut slices)| slices.pop().map(|s| (key, s)))
            .collect();
        if current.is_empty() {
            return Ok(Vec::new());
        }
        let reference = self
            .load(source, reference_start, reference_end, slices)
            .await?;
        let config = self.config.clone();
        // A window of the reference is judged when it holds a fair share of a window's requests.
        let min_window = (config.min_samples / 2).max(20);
        // The tests of every scope first; the verdicts once all p-values are known.
        let mut scopes: Vec<(
            &String,
            &String,
            &Sample,
            Vec<TestResult>,
            serde_json::Value,
        )> = Vec::new();
        // Scopes seen but not judged, and why: shown in `evaluations` (and the TUI) so that a
        // quiet model reads as "not judged yet", not as "stable".
        let mut not_judged = Vec::new();
        // Out of `self` while the scopes are judged (the mixtures borrow it), put back after.
        let mut memory = std::mem::take(&mut self.memory);
        let bucket = config.window.max(config.weather_memory / MEMORY_BUCKETS);
        // Not remembered while the scope drifts (its last evaluation found drift).
        let calm_after = self
            .last_judged
            .and_then(|last| now.duration_since(last).ok())
            .unwrap_or(config.evaluate_every)
            * 3
            / 2;
        self.last_judged = Some(now);
        for ((service, model), cur) in &current {
            let Some(reference_slices) = reference.get(&(service.clone(), model.clone())) else {
                not_judged.push(self.not_judged(
                    service,
                    model,
                    "no traffic in the reference yet".to_string(),
                    json!({
                        "from": crate::alert::format_time(reference_start),
                        "to": crate::alert::format_time(reference_end),
                        "coverage": 0.0,
                    }),
                ));
                continue;
            };
            let mut whole = Sample::default();
            for slice in reference_slices {
                whole.merge(slice);
            }
            let reference = &whole;
            if reference.count < config.min_samples || cur.count < config.min_samples {
                not_judged.push(self.not_judged(
                    service,
                    model,
                    format!(
                        "too few calls: {} in the window and {} in the reference, {} needed in each",
                        cur.count, reference.count, config.min_samples
                    ),
                    json!({"current_n": cur.count, "reference_n": reference.count}),
                ));
                continue;
            }
            // No verdict from a reference that does not yet span its period (a service's first
            // minutes are not its normal), nor from one too short to hold several windows.
            let first = reference_slices
                .iter()
                .position(|s| s.count > 0)
                .unwrap_or(reference_slices.len());
            let coverage = (reference_slices.len() - first) as f64 / reference_slices.len() as f64;
            let windows = windows_of(reference_slices.len())
                .filter(|w| {
                    reference_slices[w.clone()]
                        .iter()
                        .map(|s| s.count)
                        .sum::<usize>()
                        >= min_window
                })
                .count();
            if coverage < config.min_reference_coverage || windows < MIN_WINDOWS {
                not_judged.push(self.not_judged(
                    service,
                    model,
                    format!(
                        "the reference is too short to judge: traffic across {:.0}% of its span \
                         ({:.0}% needed), {windows} windows of this length ({MIN_WINDOWS} needed)",
                        coverage * 100.0,
                        config.min_reference_coverage * 100.0
                    ),
                    json!({
                        "from": crate::alert::format_time(reference_start),
                        "to": crate::alert::format_time(reference_end),
                        "coverage": coverage, "windows_compared": windows,
                    }),
                ));
                continue;
            }
            let scope = (service.clone(), model.clone());
            let mut recall = Recall {
                memory: &mut memory,
                scope: &scope,
                now,
                bucket,
                record: config.weather_memory > Duration::ZERO
                    && self
                        .last_drift
                        .get(&scope)
                        .is_none_or(|at| now.duration_since(*at).unwrap_or_default() > calm_after),
            };
            let mut weather = |feature: &str, values: fn(&Sample) -> &Vec<f64>| {
                recall.numeric(
                    feature,
                    numeric_weather(reference_slices, values, min_window),
                )
            };
            let weathers = [
                weather("input_tokens", |s| &s.input_tokens),
                weather("output_tokens", |s| &s.output_tokens),
                weather("latency_ms", |s| &s.latency_ms),
                weather("ttft_ms", |s| &s.ttft_ms),
            ];
            let mixture = self.mixture(service, model, reference, now);
            let mut tests: Vec<TestResult> = [
                numeric_test(
                    "input_tokens",
                    &reference.input_tokens,
                    &cur.input_tokens,
                    &config,
                    weathers[0],
                ),
                numeric_test(
                    "output_tokens",
                    &reference.output_tokens,
                    &cur.output_tokens,
                    &config,
                    weathers[1],
                ),
                numeric_test(
                    "latency_ms",
                    &reference.latency_ms,
                    &cur.latency_ms,
                    &config,
                    weathers[2],
                ),
                numeric_test(
                    "ttft_ms",
                    &reference.ttft_ms,
                    &cur.ttft_ms,
                    &config,
                    weathers[3],
                ),
                mixture.and_then(|m| {
                    multivariate_test(m, reference_slices, cur, &config, min_window, &mut recall)
                }),
            ]
            .into_iter()
            .flatten()
            .collect();
            let (n_ref, n_cur) = (reference.count as u64, cur.count as u64);
            if let (Some((change, p)), Some(normal)) = (
                stats::fisher_exact(reference.errors, n_ref, cur.errors, n_cur),
                error_rate_weather(reference_slices, min_window)
                    .map(|w| recall.limit("error_rate", w)),
            ) {
                let (rate_ref, rate_cur) = (
                    reference.errors as f64 / n_ref as f64,
                    cur.errors as f64 / n_cur as f64,
                );
                tests.push(TestResult {
                    feature: "error_rate",
                    p,
                    material: change.abs()
                        >= config.min_error_rate_change.max(normal * config.weather_margin),
                    evidence: json!({"reference_rate": rate_ref, "current_rate": rate_cur, "reference_errors": reference.errors, "current_errors": cur.errors, "test": "fisher exact", "p": p, "between_reference_windows": {"rate_change": normal}}),
                });
            }
            let categories: Vec<&String> = reference
                .finish
                .keys()
                .chain(cur.finish.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let ref_counts: Vec<f64> = categories
                .iter()
                .map(|c| reference.finish.get(*c).copied().unwrap_or(0.0))
                .collect();
            let cur_counts: Vec<f64> = categories
                .iter()
                .map(|c| cur.finish.get(*c).copied().unwrap_or(0.0))
                .collect();
            if let (Some((chi2, p)), Some(normal)) = (
                stats::chi_square_homogeneity(&ref_counts, &cur_counts),
                finish_weather(reference_slices, min_window)
                    .map(|w| recall.limit("finish_reasons", w)),
            ) {
                let js =
                    stats::jensen_shannon(&stats::shares(&ref_counts), &stats::shares(&cur_counts));
                tests.push(TestResult {
                    feature: "finish_reasons",
                    p,
                    material: js >= config.min_finish_reason_js.max(normal * config.weather_margin),
                    evidence: json!({"chi_square": chi2, "p": p, "jensen_shannon": js, "categories": categories, "between_reference_windows": {"jensen_shannon": normal}}),
                });
            }
            let reference_summary = json!({
                "mode": config.reference,
                "from": crate::alert::format_time(reference_start),
                "to": crate::alert::format_time(reference_end),
                "coverage": coverage,
                "windows_compared": windows,
                "weather_remembered_since": memory.since(&scope).map(crate::alert::format_time),
            });
            if !tests.is_empty() {
                scopes.push((service, model, cur, tests, reference_summary));
            }
        }
        memory.forget_before(now - config.weather_memory);
        self.memory = memory;
        self.last_drift
            .retain(|_, at| now.duration_since(*at).unwrap_or_default() <= calm_after);
        // Scopes come and go with model names: keep mixtures only for the ones still seen.
        self.mixtures.retain(|key, _| current.contains_key(key));
        // One family per evaluation: with ~40 scopes of 7 tests, a per-scope correction would
        // let some scope or other cross the line by chance every few evaluations.
        let all_p: Vec<f64> = scopes
            .iter()
            .flat_map(|(_, _, _, tests, _)| tests.iter().map(|t| t.p))
            .collect();
        let family = all_p.len();
        let mut adjusted_all = stats::benjamini_hochberg(&all_p).into_iter();
        let mut findings = Vec::new();
        for (service, model, cur, tests, reference_summary) in scopes {
            let adjusted: Vec<f64> = adjusted_all.by_ref().take(tests.len()).collect();
            let moved: Vec<usize> = (0..tests.len())
                .filter(|i| adjusted[*i] < config.alpha && tests[*i].material)
                .collect();
            let min_p = adjusted.iter().copied().fold(1.0f64, f64::min).max(1e-300);
            let score = -min_p.log10();
            let threshold = -config.alpha.log10();
            let mut evidence = serde_json::Map::new();
            for (test, p_adjusted) in tests.iter().zip(&adjusted) {
                let mut entry = test.evidence.clone();
                entry["p_adjusted"] = json!(p_adjusted);
                evidence.insert(test.feature.to_string(), entry);
            }
            evidence.insert("model".into(), json!(model));
            evidence.insert("service".into(), json!(service));
            evidence.insert(
                "window".into(),
                json!(humantime::format_duration(config.window).to_string()),
            );
            evidence.insert("reference".into(), reference_summary);
            evidence.insert(
                "multiple_testing".into(),
                json!(format!(
                    "Benjamini-Hochberg across the {family} tests of this evaluation"
                )),
            );
            evidence.insert("example_trace_ids".into(), json!(cur.trace_ids));
            let moved_names: Vec<&str> = moved.iter().map(|i| tests[*i].feature).collect();
            if !moved.is_empty() {
                self.last_drift
                    .insert((service.clone(), model.clone()), now);
            }
            evidence.insert("moved".into(), json!(moved_names));
            let clear = !(0..tests.len())
                .any(|i| adjusted[i] < (config.alpha * 100.0).min(0.5) && tests[i].material);
            let subject = scope_subject(service, model);
            findings.push(Finding {
                labels: alert_labels(
                    "ModelDrift",
                    self.name(),
                    &[("service", service), ("model", model)],
                ),
                severity: Severity::Warning,
                subject: subject.clone(),
                score,
                threshold,
                active: !moved.is_empty(),
                clear,
                message: if moved.is_empty() {
                    format!("{subject}: no drift")
                } else {
                    format!(
                        "{subject}: {} shifted against the reference (adjusted p {:.1e})",
                        moved_names.join(", "),
                        min_p
                    )
                },
                evidence,
            });
        }
        findings.extend(not_judged);
        Ok(findings)
    }

    /// A scope seen and not judged, with the reason in its message and evidence: shown in
    /// `evaluations`, kept away from alert state (see [`crate::alert::NOT_JUDGED`]), so that an
    /// alert goes on as if the scope had not been reported (resolving unless held by silence).
    fn not_judged(
        &self,
        service: &str,
        model: &str,
        reason: String,
        reference: serde_json::Value,
    ) -> Finding {
        let subject = scope_subject(service, model);
        let mut evidence = serde_json::Map::new();
        evidence.insert(crate::alert::NOT_JUDGED.into(), json!(reason));
        evidence.insert("model".into(), json!(model));
        evidence.insert("service".into(), json!(service));
        evidence.insert(
            "window".into(),
            json!(humantime::format_duration(self.config.window).to_string()),
        );
        evidence.insert("reference".into(), reference);
        Finding {
            labels: alert_labels(
                "ModelDrift",
                self.name(),
                &[("service", service), ("model", model)],
            ),
            severity: Severity::Warning,
            subject: subject.clone(),
            score: 0.0,
            threshold: -self.config.alpha.log10(),
            active: false,
            clear: false,
            message: format!("{subject}: not judged: {reason}"),
            evidence,
        }
    }

    /// The scope's mixture, refitted on the reference once a window has passed since the last fit.
    fn mixture(
        &mut self,
        service: &str,
        model: &str,
        reference: &Sample,
        now: SystemTime,
    ) -> Option<&FittedMixture> {
        if self.config.mixture_components == 0 {
            return None;
        }
        let key = (service.to_string(), model.to_string());
        // While the memory is restored, one fit per scope serves the whole day: the fit is
        // most of an evaluation's cost, and the weather is how far the likelihoods move
        // between windows, which a fit from a few hours away measures as well.
        let restoring = self.restoring;
        let stale = self.mixtures.get(&key).is_none_or(|m| {
            !restoring
                && (now.duration_since(m.fitted_at).unwrap_or_default() >= self.config.window
                    || m.fitted_at > now)
        });
        if stale {
            match fit_mixture(reference, &self.config, now) {
                Some(fitted) => {
                    self.mixtures.insert(key.clone(), fitted);
                }
                None => {
                    self.mixtures.remove(&key);
                }
            }
        }
        self.mixtures.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::record_batch::RecordBatch;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, LogNormal};
    use std::sync::Arc;

    /// Requests as the loader makes them: every other trace one the mixture may be fitted on.
    fn joint(n: usize, output_median: f64, seed: u64) -> Sample {
        let mut rng = StdRng::seed_from_u64(seed);
        let input = LogNormal::new(6.0, 0.6).unwrap();
        let output = LogNormal::new(output_median.ln(), 0.5).unwrap();
        let jitter = LogNormal::new(0.0, 0.15).unwrap();
        let mut sample = Sample::default();
        for row in 0..n {
            let i: f64 = input.sample(&mut rng);
            let o: f64 = output.sample(&mut rng);
            let latency = (200.0 + 20.0 * o) * jitter.sample(&mut rng);
            sample.joint.push([i.ln_1p(), o.ln_1p(), latency.ln()]);
            sample.joint_fit.push(row % 2 == 0);
        }
        sample
    }

    #[test]
    fn the_mixture_test_sees_a_joint_shift_and_not_noise() {
        let config = DriftConfig::default();
        // The reference as the detector holds it: quarter-window slices.
        let slices: Vec<Sample> = (0..12).map(|k| joint(500, 200.0, 10 + k)).collect();
        let mut reference = Sample::default();
        for slice in &slices {
            reference.merge(slice);
        }
        let mixture = fit_mixture(&reference, &config, SystemTime::UNIX_EPOCH).unwrap();
        let (mut memory, scope) = (WeatherMemory::default(), ("s".into(), "m".into()));
        let mut recall = Recall {
            memory: &mut memory,
            scope: &scope,
            now: SystemTime::UNIX_EPOCH,
            bucket: Duration::from_secs(600),
            record: false,
        };
        let same = multivariate_test(
            &mixture,
            &slices,
            &joint(2000, 200.0, 2),
            &config,
            100,
            &mut recall,
        )
        .unwrap();
        assert!(same.p > 1e-3, "p {}", same.p);
        // The log-likelihood test is an omnibus test: less sharp than KS on the one feature that
        // moved, but it sees shifts in how features go together that no marginal shows.
        let shifted = multivariate_test(
            &mixture,
            &slices,
            &joint(2000, 340.0, 3),
            &config,
            100,
            &mut recall,
        )
        .unwrap();
        assert!(shifted.p < 1e-6 && shifted.material, "p {}", shifted.p);
    }

    #[test]
    fn trace_ids_split_evenly_and_the_same_way_every_time() {
        assert!(even_trace("0af7651916cd43dd8448eb211c80319c"));
        assert!(!even_trace("4bf92f3577b34da6a3ce929d0e0e4736f"));
        assert!(even_trace("5b8efff798038103d269b633813fc60e"));
    }

    #[test]
    fn determinant_of_small_matrices() {
        let m = ndarray::array![[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 4.0]];
        assert!((determinant(&m) - 24.0).abs() < 1e-9);
        let swap = ndarray::array![[0.0, 1.0], [1.0, 0.0]];
        assert!((determinant(&swap) + 1.0).abs() < 1e-9);
    }

    /// A `spans` table with the columns the detector reads: 2 services × 2 models, one call per
    /// second each, for `minutes` before `end`; gpt-b's output tokens ×`shift` in the last 4.
    /// A `spans` table with the columns the detector reads: 2 services × 2 models, one call per
    /// second each, for `minutes` before `end`; gpt-b's output tokens ×`shift` in the last 4.
    fn spans_table(end: SystemTime, minutes: u64, shift: f64, seed: u64) -> RecordBatch {
        synthetic_spans(end, minutes, seed, |_, model, second| {
            if model == "gpt-b" && second < 4 * 60 {
                shift
            } else {
                1.0
            }
        })
    }

    /// 2 services × 2 models, one call per second each, for `minutes` before `end`; output
    /// tokens times `factor(service, model, seconds before end)`.
    fn synthetic_spans(
        end: SystemTime,
        minutes: u64,
        seed: u64,
        factor: impl Fn(&str, &str, u64) -> f64,
    ) -> RecordBatch {
        use arrow::array::{
            ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, TimestampNanosecondArray,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let input = LogNormal::new(800f64.ln(), 1.0).unwrap();
        let output = LogNormal::new(200f64.ln(), 0.8).unwrap();
        let ttft = LogNormal::new(0.35f64.ln(), 0.5).unwrap();
        let end_ns = end
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let (mut time, mut service, mut model, mut trace) = (vec![], vec![], vec![], vec![]);
        let (mut inputs, mut outputs, mut durations, mut ttfts) = (vec![], vec![], vec![], vec![]);
        let mut status = vec![];
        let mut finish = ListBuilder::new(StringBuilder::new());
        for second in 0..minutes * 60 {
            let at = end_ns - (second as i64) * 1_000_000_000;
            for svc in ["chat", "support"] {
                for name in ["gpt-a", "gpt-b"] {
                    let out = output.sample(&mut rng) * factor(svc, name, second);
                    let first = ttft.sample(&mut rng);
                    time.push(at);
                    service.push(svc);
                    model.push(name);
                    trace.push(format!("{:032x}", rand::Rng::r#gen::<u128>(&mut rng)));
                    inputs.push(input.sample(&mut rng) as i64);
                    outputs.push(out as i64);
                    ttfts.push((first * 1e9) as i64);
                    durations.push(((first + out * 0.02) * 1e9) as i64);
                    status.push(if rand::Rng::gen_bool(&mut rng, 0.02) {
                        "ERROR"
                    } else {
                        "UNSET"
                    });
                    finish.values().append_value("stop");
                    finish.append(true);
                }
            }
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            ("service_name", Arc::new(StringArray::from(service))),
            ("request_model", Arc::new(StringArray::from(model.clone()))),
            ("response_model", Arc::new(StringArray::from(model))),
            ("input_tokens", Arc::new(Int64Array::from(inputs))),
            ("output_tokens", Arc::new(Int64Array::from(outputs))),
            ("duration_ns", Arc::new(Int64Array::from(durations))),
            ("ttft_ns", Arc::new(Int64Array::from(ttfts))),
            ("status_code", Arc::new(StringArray::from(status))),
            ("finish_reasons", Arc::new(finish.finish())),
            ("trace_id", Arc::new(StringArray::from(trace))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    async fn judge_table(batch: RecordBatch, now: SystemTime) -> Vec<Finding> {
        let ctx = datafusion::prelude::SessionContext::new();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        // A 5-minute window against the 20 minutes before it: small enough for a debug build.
        let mut detector = DriftDetector::new(DriftConfig {
            window: Duration::from_secs(300),
            reference_length: Duration::from_secs(1200),
            min_samples: 100,
            weather_memory: Duration::ZERO,
            ..DriftConfig::default()
        });
        detector.evaluate(&ctx, now).await.unwrap()
    }

    #[tokio::test]
    async fn one_model_drifts_and_only_its_scopes_move() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Stationary: every scope judged, none moved.
        let findings = judge_table(spans_table(now, 26, 1.0, 1), now).await;
        let scopes: BTreeSet<(String, String)> = findings
            .iter()
            .map(|f| (f.labels["service"].clone(), f.labels["model"].clone()))
            .collect();
        // 4 (service, model) + 2 models + 2 services + all traffic.
        assert_eq!(scopes.len(), 9, "{scopes:?}");
        assert!(
            findings.iter().all(|f| !f.active),
            "{:?}",
            findings
                .iter()
                .filter(|f| f.active)
                .map(|f| &f.message)
                .collect::<Vec<_>>()
        );
        // gpt-b's output tokens +40% for the last 4 minutes.
        let findings = judge_table(spans_table(now, 26, 1.4, 2), now).await;
        let active: BTreeSet<(String, String)> = findings
            .iter()
            .filter(|f| f.active)
            .map(|f| (f.labels["service"].clone(), f.labels["model"].clone()))
            .collect();
        assert!(active.contains(&("*".into(), "gpt-b".into())), "{active:?}");
        assert!(
            active.iter().all(|(_, model)| model != "gpt-a"),
            "gpt-a did not change: {active:?}"
        );
        let drifted = findings
            .iter()
            .find(|f| f.labels["service"] == "*" && f.labels["model"] == "gpt-b")
            .unwrap();
        assert!(
            drifted.evidence["moved"]
                .to_string()
                .contains("output_tokens")
        );
        assert!(drifted.score > drifted.threshold);
    }

    /// An episode the traffic had earlier in the day (six minutes of answers twice as long) is
    /// remembered as weather: when a milder one comes back hours later, against a trailing
    /// reference that holds no episode, the detector without memory calls it drift and the one
    /// with memory does not; a move larger than any remembered still is drift.
    #[tokio::test]
    async fn episodes_seen_earlier_in_the_day_are_weather_and_larger_moves_still_drift() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let minutes = 120;
        let table = |second_factor: f64| {
            synthetic_spans(end, minutes, 5, move |_, _, second| {
                let minute = minutes - second / 60 - 1;
                match minute {
                    10..16 => 2.0,
                    100..106 => second_factor,
                    _ => 1.0,
                }
            })
        };
        let at = |minute: u64| {
            end - Duration::from_secs((minutes - minute) * 60) + Duration::from_secs(30)
        };
        let config = |memory: Duration| DriftConfig {
            window: Duration::from_secs(300),
            reference_length: Duration::from_secs(1200),
            min_samples: 100,
            weather_memory: memory,
            // The joint test is not the subject, and its fits are most of a debug build's time.
            mixture_components: 0,
            ..DriftConfig::default()
        };
        let all_traffic = |findings: &[Finding]| {
            findings
                .iter()
                .find(|f| f.labels["service"] == "*" && f.labels["model"] == "*")
                .cloned()
                .unwrap()
        };
        for (second_factor, remembered_as_weather) in [(1.6, true), (3.0, false)] {
            let ctx = datafusion::prelude::SessionContext::new();
            let batch = table(second_factor);
            let table =
                datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
                    .unwrap();
            ctx.register_table("spans", Arc::new(table)).unwrap();
            let mut forgetful = DriftDetector::new(config(Duration::ZERO));
            let mut remembering = DriftDetector::new(config(Duration::from_secs(24 * 3600)));
            // While the first episode is in the trailing reference.
            for minute in [30, 35, 40] {
                let calm = all_traffic(&remembering.evaluate(&ctx, at(minute)).await.unwrap());
                assert!(!calm.active, "minute {minute}: {}", calm.message);
            }
            let forgot = all_traffic(&forgetful.evaluate(&ctx, at(106)).await.unwrap());
            let remembered = all_traffic(&remembering.evaluate(&ctx, at(106)).await.unwrap());
            // One started just now refills its memory from the store, and judges the same.
            let mut restarted = DriftDetector::new(config(Duration::from_secs(24 * 3600)));
            let restored = all_traffic(&restarted.evaluate(&ctx, at(106)).await.unwrap());
            assert_eq!(
                restored.active, remembered.active,
                "x{second_factor} restored: {}",
                restored.message
            );
            let evidence = |f: &Finding| serde_json::Value::Object(f.evidence.clone());
            assert!(
                forgot.active
                    && forgot.evidence["moved"]
                        .to_string()
                        .contains("output_tokens"),
                "x{second_factor} without memory: {}\n{:#}",
                forgot.message,
                evidence(&forgot)
            );
            assert_eq!(
                !remembered.active,
                remembered_as_weather,
                "x{second_factor} with memory: {}\n{:#}",
                remembered.message,
                evidence(&remembered)
            );
            assert!(
                remembered.evidence["reference"]["weather_remembered_since"].is_string(),
                "{:#}",
                evidence(&remembered)
            );
        }
    }

    #[test]
    fn the_memory_keeps_the_largest_move_per_bucket_and_forgets_after_its_span() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut memory = WeatherMemory::default();
        let scope = ("chat".to_string(), "gpt-a".to_string());
        let bucket = Duration::from_secs(600);
        let recall = |memory: &mut WeatherMemory, minute: u64, limit: f64, record: bool| {
            Recall {
                memory,
                scope: &scope,
                now: t0 + Duration::from_secs(minute * 60),
                bucket,
                record,
            }
            .limit("output_tokens.p50", limit)
        };
        assert_eq!(recall(&mut memory, 0, 0.2, true), 0.2);
        assert_eq!(recall(&mut memory, 5, 0.1, true), 0.2);
        // Not recorded (the scope drifts), but judged against what is remembered.
        assert_eq!(recall(&mut memory, 8, 0.9, false), 0.9);
        assert_eq!(recall(&mut memory, 9, 0.05, true), 0.2);
        assert_eq!(recall(&mut memory, 12, 0.3, true), 0.3);
        let moves = &memory.moves[&("chat".into(), "gpt-a".into(), "output_tokens.p50".into())];
        assert_eq!(moves.len(), 2, "{moves:?}");
        memory.forget_before(t0 + Duration::from_secs(11 * 60));
        assert_eq!(recall(&mut memory, 13, 0.0, true), 0.3);
        memory.forget_before(t0 + Duration::from_secs(60 * 60));
        assert!(memory.moves.is_empty());
        assert_eq!(memory.since(&scope), None);
    }

    /// An hour of the Azure LLM inference trace (2023, CC-BY 4.0: analyzer/tests/data/
    /// azure-llm-2023/README.md) as spans, replayed `times` times back to back up to `end`;
    /// output tokens × `shift` in the last `shifted` of it.
    fn azure_table(
        trace: &str,
        end: SystemTime,
        times: u32,
        shift: f64,
        shifted: Duration,
    ) -> RecordBatch {
        let path = format!(
            "{}/tests/data/azure-llm-2023/AzureLLMInferenceTrace_{trace}.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        let rows = crate::replay::read_trace(std::path::Path::new(&path)).unwrap();
        let period = Duration::from_nanos(rows[rows.len() - 1].0 as u64) + Duration::from_secs(1);
        crate::replay::trace_spans(&rows, end - period * times, end, shift, end - shifted).unwrap()
    }

    async fn judge_with(batch: &RecordBatch, config: DriftConfig, now: SystemTime) -> Vec<Finding> {
        let ctx = datafusion::prelude::SessionContext::new();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])
                .unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        DriftDetector::new(config)
            .evaluate(&ctx, now)
            .await
            .unwrap()
    }

    /// Real traffic moves a lot between windows with nothing changed (the median output of the
    /// conversation trace's 10-minute windows wanders between about 100 and 200 tokens); under
    /// an iid null every window of it "drifts". Judged against its own weather, it does not,
    /// while a 10% shift on top of it still shows within a window (in the quantiles the weather
    /// leaves still: the conversation trace's 90th percentile).
    #[tokio::test]
    async fn real_traffic_does_not_drift_against_itself_and_a_shift_beyond_its_weather_does() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let config = DriftConfig::default();
        for trace in ["conv", "code"] {
            let steady = azure_table(trace, end, 2, 1.0, Duration::ZERO);
            // One detector along the way, as `vigil serve` runs it (its first evaluation
            // refills the weather memory from the table).
            let ctx = datafusion::prelude::SessionContext::new();
            let table = datafusion::datasource::MemTable::try_new(
                steady.schema(),
                vec![vec![steady.clone()]],
            )
            .unwrap();
            ctx.register_table("spans", Arc::new(table)).unwrap();
            let mut detector = DriftDetector::new(config.clone());
            for minutes in [45u64, 25, 10, 0] {
                let now = end - Duration::from_secs(minutes * 60);
                let findings = detector.evaluate(&ctx, now).await.unwrap();
                assert_eq!(findings.len(), 1, "{trace} at -{minutes} min: judged");
                assert!(
                    !findings[0].active,
                    "{trace} at -{minutes} min: {}\n{:#}",
                    findings[0].message,
                    serde_json::Value::Object(findings[0].evidence.clone())
                );
            }
            // Output tokens +10% for the last 11 minutes: the last window is all shifted.
            let shifted = azure_table(trace, end, 2, 1.1, Duration::from_secs(660));
            let findings = judge_with(&shifted, config.clone(), end).await;
            assert!(
                findings[0].active
                    && findings[0].evidence["moved"]
                        .to_string()
                        .contains("output_tokens"),
                "{trace}: {}\n{:#}",
                findings[0].message,
                serde_json::Value::Object(findings[0].evidence.clone())
            );
        }
    }

    /// A window far too short for its reference is refused with a message that says which
    /// settings to change, instead of cutting the reference into millions of slices.
    #[tokio::test]
    async fn a_window_too_short_for_its_reference_is_a_clear_error() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ctx = datafusion::prelude::SessionContext::new();
        for window in [Duration::ZERO, Duration::from_millis(100)] {
            let config = DriftConfig {
                window,
                ..DriftConfig::default()
            };
            let error = DriftDetector::new(config)
                .evaluate(&ctx, end)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("lengthen window or shorten reference_length"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn no_verdict_from_a_reference_that_does_not_yet_span_its_period() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // 45 minutes of traffic: a 10-minute window against a reference that holds only 35 of
        // its 60 minutes. A big shift, and still no verdict: the reference's first minutes are
        // not yet this service's normal.
        let batch = azure_table("conv", end, 1, 2.0, Duration::from_secs(660));
        let recent = {
            let start = end - Duration::from_secs(45 * 60);
            let start_ns = start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            let time = batch
                .column_by_name("time")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::TimestampNanosecondArray>()
                .unwrap();
            let keep = arrow::array::BooleanArray::from(
                time.values()
                    .iter()
                    .map(|t| *t >= start_ns)
                    .collect::<Vec<_>>(),
            );
            arrow::compute::filter_record_batch(&batch, &keep).unwrap()
        };
        let findings = judge_with(&recent, DriftConfig::default(), end).await;
        assert!(
            findings.iter().all(|f| !f.active
                && !f.clear
                && f.message
                    .contains("not judged: the reference is too short to judge")),
            "{findings:?}"
        );
        let coverage = findings[0].evidence["reference"]["coverage"]
            .as_f64()
            .unwrap();
        assert!((0.5..0.9).contains(&coverage), "{coverage}");
        // Traffic only in the window, none in the reference: each scope seen, none judged.
        let config = DriftConfig {
            reference_length: Duration::from_secs(3600),
            ..DriftConfig::default()
        };
        let young = judge_with(&recent, config, end - Duration::from_secs(34 * 60)).await;
        assert!(
            !young.is_empty()
                && young.iter().all(|f| !f.active
                    && !f.clear
                    && f.message.contains("not judged: the reference holds")),
            "{young:?}"
        );
        // A window too long for its reference (10 minutes against 20): no verdict either.
        let full = azure_table("conv", end, 2, 2.0, Duration::from_secs(660));
        let config = DriftConfig {
            reference_length: Duration::from_secs(1200),
            ..DriftConfig::default()
        };
        let findings = judge_with(&full, config, end).await;
        assert!(
            !findings.is_empty() && findings.iter().all(|f| !f.active && !f.clear),
            "{findings:?}"
        );
    }
}
