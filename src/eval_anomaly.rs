//! `vigil eval anomaly`: the golden-signal detector (`LlmSignalAnomaly`) on simulated LLM traffic
//! in simulated time. The detector is fed the per-step aggregates `vigil serve` reads from
//! `spans` (calls, errors, exact latency percentiles of the step's calls, tokens, cost), drawn
//! here from independent calls: Poisson arrivals whose rate follows a daily and a weekly cycle,
//! log-normal latencies. Real traffic is burstier; these figures are an upper bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use vigil_analyzer::detectors::golden_signals::{
    AnomalyConfig, BucketTotals, GoldenSignals, Scope, SeasonHistory, Signal, Step,
};
use vigil_analyzer::detectors::seasonal::BUCKET_SECS;

const SERVICE: &str = "chat";
/// (model, share of calls, median latency in seconds)
const MODELS: [(&str, f64, f64); 3] = [
    ("llama", 0.5, 0.9),
    ("gpt-4o", 0.3, 2.2),
    ("claude", 0.2, 2.8),
];
const CHANGED_MODEL: usize = 1;
const MEAN_RATE: f64 = 10.0;
const ERROR_RATE: f64 = 0.01;
/// A Monday, 00:00 UTC.
const MONDAY: u64 = 1_767_571_200;

/// What changes on the changed model, from the change on.
#[derive(Debug, Clone, Copy)]
struct Change {
    name: &'static str,
    latency: f64,
    error_rate: f64,
    rate: f64,
    /// Signals whose alert on the changed model (or its service) counts as the catch.
    signals: &'static [Signal],
}

const CHANGES: [Change; 3] = [
    Change {
        name: "latency x2 on one model",
        latency: 2.0,
        error_rate: ERROR_RATE,
        rate: 1.0,
        signals: &[Signal::LatencyP50, Signal::LatencyP95, Signal::TtftP50],
    },
    Change {
        name: "error ratio 1% -> 3% on one model",
        latency: 1.0,
        error_rate: 0.03,
        rate: 1.0,
        signals: &[Signal::ErrorRatio],
    },
    Change {
        name: "request rate halved on one model",
        latency: 1.0,
        error_rate: ERROR_RATE,
        rate: 0.5,
        signals: &[
            Signal::RequestRate,
            Signal::RequestRateMinute,
            Signal::CallsDropped,
        ],
    },
];

/// Calls per second of all traffic at `at`: a daily cycle between 5 and 15 (peak at 15:00 UTC),
/// weekends at 60%.
fn rate_at(at: SystemTime) -> f64 {
    // Signed: the seasons' history lies before the first week.
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
        - MONDAY as i64;
    let hour = seconds.rem_euclid(86_400) as f64 / 3600.0;
    let weekday = seconds.div_euclid(86_400).rem_euclid(7);
    let daily = 1.0 + 0.5 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
    let weekly = if weekday >= 5 { 0.6 } else { 1.0 };
    MEAN_RATE * daily * weekly
}

/// A linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    Some(sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64))
}

#[derive(Default)]
struct Calls {
    latencies: Vec<f64>,
    ttfts: Vec<f64>,
    errors: f64,
    tokens: f64,
}

impl Calls {
    fn add(&mut self, latency_ms: f64, ttft_ms: f64, failed: bool, tokens: f64) {
        self.latencies.push(latency_ms);
        self.ttfts.push(ttft_ms);
        self.errors += failed as u8 as f64;
        self.tokens += tokens;
    }

    fn step(&mut self) -> Step {
        self.latencies.sort_by(f64::total_cmp);
        self.ttfts.sort_by(f64::total_cmp);
        Step {
            calls: self.latencies.len() as f64,
            errors: self.errors,
            latency_p50: quantile(&self.latencies, 0.5),
            latency_p95: quantile(&self.latencies, 0.95),
            ttft_p50: quantile(&self.ttfts, 0.5),
            output_tokens: Some(self.tokens),
            cost: Some(self.tokens * 1e-5),
        }
    }
}

/// One step of every scope: the three models and their service; and the same step as an early
/// look finds it, two seconds after it ended, with only part of its calls in (each call in with
/// a chance drawn per step between 50% and 100%, by `arrivals`, so that the full steps are the
/// same with early looks as without).
fn simulate_step(
    rng: &mut StdRng,
    arrivals: &mut StdRng,
    at: SystemTime,
    resolution: f64,
    change: Option<&Change>,
) -> (HashMap<Scope, Step>, HashMap<Scope, Step>) {
    let rate = rate_at(at);
    let tokens = LogNormal::new(4.8f64, 0.6).expect("valid");
    let arrived = arrivals.gen_range(0.5..=1.0);
    let mut all = Calls::default();
    let mut early_all = Calls::default();
    let mut out = HashMap::new();
    let mut early = HashMap::new();
    for (index, (name, share, median)) in MODELS.iter().enumerate() {
        let changed = change.filter(|_| index == CHANGED_MODEL);
        let mean_calls = rate * share * resolution * changed.map_or(1.0, |c| c.rate);
        let count = Poisson::new(mean_calls).map_or(0.0, |p| p.sample(rng)) as usize;
        let latency = LogNormal::new(median.ln(), 0.35).expect("valid");
        let error_rate = changed.map_or(ERROR_RATE, |c| c.error_rate);
        let mut calls = Calls::default();
        let mut early_calls = Calls::default();
        for _ in 0..count {
            let ms = latency.sample(rng) * changed.map_or(1.0, |c| c.latency) * 1000.0;
            let ttft = ms * rng.gen_range(0.08..0.2);
            let failed = rng.gen_bool(error_rate);
            let out_tokens = tokens.sample(rng).round();
            let in_early = arrivals.gen_bool(arrived);
            for (target, counted) in [
                (&mut calls, true),
                (&mut all, true),
                (&mut early_calls, in_early),
                (&mut early_all, in_early),
            ] {
                if counted {
                    target.add(ms, ttft, failed, out_tokens);
                }
            }
        }
        let scope = (SERVICE.to_string(), name.to_string());
        if !early_calls.latencies.is_empty() {
            early.insert(scope.clone(), early_calls.step());
        }
        if count > 0 {
            out.insert(scope, calls.step());
        }
    }
    let scope = (SERVICE.to_string(), "*".to_string());
    if !early_all.latencies.is_empty() {
        early.insert(scope.clone(), early_all.step());
    }
    if !all.latencies.is_empty() {
        out.insert(scope, all.step());
    }
    (out, early)
}

/// Days of history before a run that the detector learns its seasons from, as `vigil serve`
/// reads them from `llm_minutes` (kept five weeks by default): two weeks, the least that
/// seasons are learned from.
const SEASON_DAYS: u64 = 14;

/// What the store would hold of the traffic's `SEASON_DAYS` before `start`, in five-minute
/// buckets: each model's Poisson calls, their output tokens (the sum of log-normal draws, taken
/// as normal) and cost, and the service's totals.
fn season_history(seed: u64, start: SystemTime) -> SeasonHistory {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ea5);
    let start_bucket = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / BUCKET_SECS;
    let first = start_bucket - SEASON_DAYS * 86_400 / BUCKET_SECS;
    // The moments of LogNormal(4.8, 0.6), as `simulate_step` draws tokens.
    let token_mean = (4.8f64 + 0.18).exp();
    let token_sd = token_mean * (0.36f64.exp() - 1.0).sqrt();
    let normal = rand_distr::StandardNormal;
    let mut history: SeasonHistory = HashMap::new();
    for bucket in first..start_bucket {
        let middle =
            SystemTime::UNIX_EPOCH + Duration::from_secs(bucket * BUCKET_SECS + BUCKET_SECS / 2);
        let rate = rate_at(middle);
        let mut service = BucketTotals::default();
        for (name, share, _) in MODELS {
            let calls =
                Poisson::new(rate * share * BUCKET_SECS as f64).map_or(0.0, |p| p.sample(&mut rng));
            let noise: f64 = normal.sample(&mut rng);
            let output_tokens = (calls * token_mean + calls.sqrt() * token_sd * noise).max(0.0);
            let totals = BucketTotals {
                calls,
                output_tokens,
                cost: output_tokens * 1e-5,
            };
            service.calls += totals.calls;
            service.output_tokens += totals.output_tokens;
            service.cost += totals.cost;
            history
                .entry((SERVICE.to_string(), name.to_string()))
                .or_insert_with(|| (first, Vec::new()))
                .1
                .push(totals);
        }
        history
            .entry((SERVICE.to_string(), "*".to_string()))
            .or_insert_with(|| (first, Vec::new()))
            .1
            .push(service);
    }
    history
}

/// Anomalies opened during a run: (the step at which the detector opened it, scope, signal,
/// when that step was judged: by an early look or when it settled).
struct Run {
    began: Vec<(SystemTime, Scope, Signal, SystemTime)>,
    scorer_time: Duration,
    series_updates: u64,
    state_bytes_per_series: f64,
    /// Learning the seasons at the start, and the series (scope and rate) they were learned for.
    season_time: Duration,
    season_series: u64,
}

/// The sensitivity knobs of `[analyzer.anomaly]`, turned together: (`threshold`,
/// `error_evidence_nats`, which `rate_drop_nats` follows). The middle row is the default.
const SENSITIVITIES: [(f64, f64); 3] = [(0.7, 9.0), (0.81, 12.0), (0.9, 15.0)];

fn run_traffic(
    base: &AnomalyConfig,
    (threshold, error_evidence_nats): (f64, f64),
    seed: u64,
    start: SystemTime,
    steps: u64,
    change: Option<(SystemTime, Change)>,
) -> Run {
    let config = AnomalyConfig {
        threshold,
        error_evidence_nats,
        rate_drop_nats: error_evidence_nats,
        ..base.clone()
    };
    let resolution = config.resolution;
    let settle = config.settle;
    let first_look = config.early_looks.first().copied();
    let seasons = !config.seasons_history.is_zero();
    let mut detector = GoldenSignals::new(config);
    let (mut season_time, mut season_series) = (Duration::ZERO, 0);
    if seasons {
        let history = season_history(seed, start);
        let timer = Instant::now();
        detector.learn_seasons(&history);
        season_time = timer.elapsed();
        season_series = history.len() as u64 * 3;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut arrivals = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut seen = BTreeSet::new();
    let mut began = Vec::new();
    let mut scorer_time = Duration::ZERO;
    let mut series_updates = 0;
    for i in 0..steps {
        let at = start + resolution * i as u32;
        let active = change.filter(|(from, _)| at >= *from).map(|(_, c)| c);
        let (step, early) = simulate_step(
            &mut rng,
            &mut arrivals,
            at,
            resolution.as_secs_f64(),
            active.as_ref(),
        );
        // As `vigil serve` does: an early look, then the settled step. An anomaly an early look
        // opens counts, also when the settled step retracts it.
        let looks = [
            first_look.map(|after| (Some(&early), after)),
            Some((None, settle)),
        ];
        for (early, after) in looks.into_iter().flatten() {
            let timer = Instant::now();
            match early {
                Some(early) => {
                    detector.look_early_at(at, early);
                }
                None => detector.observe_step(at, &step, true),
            }
            scorer_time += timer.elapsed();
            // When the detector opened the anomaly (a confirmed one began a step earlier).
            for (scope, signal, when) in detector.anomalies() {
                if seen.insert((scope.clone(), signal, when)) {
                    began.push((at, scope.clone(), signal, at + resolution + after));
                }
            }
        }
        series_updates += detector.series_count() as u64;
    }
    Run {
        began,
        scorer_time,
        series_updates,
        state_bytes_per_series: detector.state_bytes() as f64
            / detector.series_count().max(1) as f64,
        season_time,
        season_series,
    }
}

/// The detector's CPU over every run: (scoring time, series updates, season learning time,
/// series whose seasons were learned).
#[derive(Default)]
struct Cost(Duration, u64, Duration, u64);

impl Cost {
    fn add(&mut self, run: &Run) {
        self.0 += run.scorer_time;
        self.1 += run.series_updates;
        self.2 += run.season_time;
        self.3 += run.season_series;
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    quantile(values, 0.5)
}

/// Each change scenario `repeats` times: (cells of the table row, false alarms before changes).
fn scenarios(
    base: &AnomalyConfig,
    sensitivity: (f64, f64),
    seed: u64,
    repeats: u64,
    cost: &mut Cost,
) -> (Vec<String>, usize) {
    let resolution = AnomalyConfig::default().resolution;
    let mut cells = Vec::new();
    let mut false_alarms = 0;
    for (index, change) in CHANGES.iter().enumerate() {
        let mut delays = Vec::new();
        for repeat in 0..repeats {
            let run_seed = seed * 1000 + index as u64 * 100 + repeat;
            // Each run starts at another hour of the week and changes 3 h in (the warm-up is
            // 15 min).
            let start = SystemTime::UNIX_EPOCH
                + Duration::from_secs(MONDAY + (run_seed * 7919 % 168) * 3600);
            let change_at = start + Duration::from_secs(3 * 3600);
            let steps = (3 * 3600 + 15 * 60) / resolution.as_secs();
            let run = run_traffic(
                base,
                sensitivity,
                run_seed,
                start,
                steps,
                Some((change_at, *change)),
            );
            cost.add(&run);
            false_alarms += run.began.iter().filter(|(at, ..)| *at < change_at).count();
            let caught = run.began.iter().find(|(at, scope, signal, _)| {
                *at >= change_at
                    && (scope.1 == MODELS[CHANGED_MODEL].0 || scope.1 == "*")
                    && change.signals.contains(signal)
            });
            if let Some((.., judged)) = caught {
                delays.push(
                    judged
                        .duration_since(change_at)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
            }
        }
        let caught = delays.len();
        cells.push(format!(
            "{caught}/{repeats}, {}",
            median(&mut delays).map_or("-".to_string(), |d| format!("{d:.0} s"))
        ));
    }
    (cells, false_alarms)
}

/// Stationary weeks, where every anomaly is a false alarm: (when, scope, signal, judged) of each, and
/// the state per series at the end.
fn stationary(
    base: &AnomalyConfig,
    sensitivity: (f64, f64),
    seed: u64,
    weeks: u64,
    cost: &mut Cost,
) -> (Vec<(SystemTime, Scope, Signal, SystemTime)>, f64) {
    let resolution = AnomalyConfig::default().resolution;
    let mut alarms = Vec::new();
    let mut state_bytes = 0.0;
    for week in 0..weeks {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(MONDAY + week * 7 * 86_400);
        let steps = 7 * 86_400 / resolution.as_secs();
        let run = run_traffic(
            base,
            sensitivity,
            seed * 1000 + 900 + week,
            start,
            steps,
            None,
        );
        cost.add(&run);
        state_bytes = run.state_bytes_per_series;
        alarms.extend(run.began);
    }
    (alarms, state_bytes)
}

/// The table of `vigil eval anomaly`; `seasons` false judges the rates without their seasons
/// (`seasons_history = "0s"`), for the comparison EVALUATION.md makes.
pub fn run(seed: u64, repeats: u64, weeks: u64, seasons: bool) -> anyhow::Result<String> {
    let defaults = AnomalyConfig::default();
    let base = AnomalyConfig {
        seasons_history: if seasons {
            defaults.seasons_history
        } else {
            Duration::ZERO
        },
        ..defaults.clone()
    };
    let mut out = format!(
        "Simulated traffic: service {SERVICE}, models {} ({MEAN_RATE} calls/s on average, a daily cycle between half and 1.5x, weekends at 60%), error ratio {ERROR_RATE}; defaults of [analyzer.anomaly] ({}-second steps) but the sensitivity knobs, `threshold` and `error_evidence_nats` (`rate_drop_nats` set to the same). Each change is made on gpt-4o (30% of calls) {repeats} times, 3 h into traffic starting at another hour of the week; delays are from the change to the first evaluation that can see it: an early look {} s after the step ends (p50 latency and TTFT, with 50-100% of the step's calls in, drawn per step), or the step's end plus `settle` (the analyzer's lane runs at that moment). An anomaly an early look opens counts, also when its settled step retracts it. {}\n\n",
        MODELS.map(|m| m.0).join(", "),
        defaults.resolution.as_secs(),
        defaults
            .early_looks
            .first()
            .map_or(0, |look| look.as_secs()),
        if seasons {
            "The rates (calls, output tokens, cost) are judged with the seasons learned from the two weeks before each run, drawn as `llm_minutes` would hold it (two weeks: the daily and the weekly season)."
        } else {
            "The rates are judged without seasons (`--without-seasons`)."
        }
    );
    out.push_str("| threshold, error_evidence_nats = rate_drop_nats | ");
    out.push_str(
        &CHANGES
            .iter()
            .map(|c| format!("{}: caught, median delay", c.name))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(&format!(
        " | false alarms in the {:.0} h before the changes | false alarms a week, stationary ({weeks} weeks) |\n|---|---|---|---|---|---|\n",
        repeats as f64 * 3.0 * CHANGES.len() as f64
    ));
    let mut cost = Cost::default();
    let mut default_alarms = Vec::new();
    let mut state_bytes = 0.0;
    for sensitivity in SENSITIVITIES {
        let (cells, before) = scenarios(&base, sensitivity, seed, repeats, &mut cost);
        let (alarms, bytes) = stationary(&base, sensitivity, seed, weeks, &mut cost);
        out.push_str(&format!(
            "| {}, {} | {} | {before} | {:.1} |\n",
            sensitivity.0,
            sensitivity.1,
            cells.join(" | "),
            alarms.len() as f64 / weeks.max(1) as f64
        ));
        if sensitivity == (defaults.threshold, defaults.error_evidence_nats) {
            default_alarms = alarms;
            state_bytes = bytes;
        }
    }
    let mut per_signal: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_scope: BTreeMap<String, usize> = BTreeMap::new();
    let settled_after = defaults.resolution + defaults.settle;
    for (at, scope, signal, judged) in &default_alarms {
        *per_signal.entry(signal.as_str()).or_default() += 1;
        *per_scope
            .entry(format!("{}/{}", scope.0, scope.1))
            .or_default() += 1;
        eprintln!(
            "eval anomaly: false alarm at {} of week {}: {} of {}/{}{}",
            chrono::DateTime::<chrono::Utc>::from(*at).format("%a %H:%M"),
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                .saturating_sub(MONDAY)
                / (7 * 86_400)
                + 1,
            signal.as_str(),
            scope.0,
            scope.1,
            if judged.duration_since(*at).unwrap_or_default() < settled_after {
                " (an early look)"
            } else {
                ""
            }
        );
    }
    out.push_str(&format!(
        "\nFalse alarms in the stationary weeks at the defaults (threshold {}, error_evidence_nats and rate_drop_nats {}), {} series (3 models and the service, {} signals each), by signal: {}; by scope: {}.\n",
        defaults.threshold,
        defaults.error_evidence_nats,
        4 * Signal::ALL.len(),
        Signal::ALL.len(),
        if per_signal.is_empty() { "none".to_string() } else { per_signal.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ") },
        if per_scope.is_empty() { "none".to_string() } else { per_scope.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ") },
    ));
    out.push_str(&format!(
        "\nCost: {:.2} µs of CPU per sample per series (the detector's own work for a step, over the series it updated), {:.1} KiB of state per series.\n",
        cost.0.as_secs_f64() * 1e6 / cost.1.max(1) as f64,
        state_bytes / 1024.0
    ));
    if cost.3 > 0 {
        out.push_str(&format!(
            "Learning the seasons (MSTL over two weeks of five-minute buckets): {:.1} ms per series (scope and rate), once every 6 hours.\n",
            cost.2.as_secs_f64() * 1e3 / cost.3 as f64
        ));
    }
    Ok(out)
}
