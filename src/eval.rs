//! `vigil eval`: the detectors over labelled data. GPU faults come from the simulated fleet and its
//! ground truth; drift scenarios from the load generator with a known change time; both are run
//! offline, in simulated time, through the same OTLP → Arrow conversion and the same SQL the
//! running collector uses (tables held in memory, one sliding window at a time). `vigil eval csv`
//! scores any `timestamp,value` series with the streaming anomaly detector.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rand::{Rng, SeedableRng};
use vigil_analyzer::alert::{Alert, AlertStatus};
use vigil_analyzer::detectors::anomaly::{AnomalyParams, StreamingAnomaly};
use vigil_analyzer::detectors::{drift, gpu};
use vigil_analyzer::replay;
use vigil_analyzer::{Analyzer, AnalyzerConfig};
use vigil_gpu_exporter::export::otlp::requests;
use vigil_gpu_exporter::sample::LabelConfig;
use vigil_gpu_exporter::sim::{FaultKind, FaultSpec, Fleet, FleetConfig, GroundTruth};
use vigil_gpu_exporter::snapshot::Snapshot;
use vigil_schemas::convert::{metrics_to_batch, spans_to_batch};
use vigil_schemas::genai::{NormalizeConfig, Normalizer};
use vigil_schemas::tables::Table;

use crate::cli::{DriftTraceArgs, EvalArgs, EvalCommand};
use crate::loadgen::{Drift, Generator};

/// A sliding in-memory copy of one table, registered in a context the analyzer reads.
struct Window {
    table: Table,
    batches: VecDeque<(SystemTime, RecordBatch)>,
    keep: Duration,
}

impl Window {
    fn push(&mut self, at: SystemTime, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push_back((at, batch));
        }
        while self
            .batches
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t).unwrap_or_default() > self.keep)
        {
            self.batches.pop_front();
        }
    }

    fn register(&self, ctx: &SessionContext) -> anyhow::Result<()> {
        let batches: Vec<RecordBatch> = self.batches.iter().map(|(_, b)| b.clone()).collect();
        let table = MemTable::try_new(self.table.schema(), vec![batches])?;
        let _ = ctx.deregister_table(self.table.name())?;
        ctx.register_table(self.table.name(), Arc::new(table))?;
        Ok(())
    }
}

/// One fault instance and how it was caught.
struct Outcome {
    truth: GroundTruth,
    first_alert: Option<(SystemTime, String)>,
}

fn matches(alert: &Alert, truth: &GroundTruth, grace: Duration) -> bool {
    let in_time = alert.at >= truth.start && truth.end.is_none_or(|end| alert.at <= end + grace);
    let same_place = match &truth.gpu {
        Some((_, uuid)) => alert.labels.get("UUID") == Some(uuid),
        None => alert.labels.get("Hostname") == Some(&truth.host),
    };
    in_time && same_place
}

fn pct(x: f64) -> String {
    format!("{:.2}", x)
}

/// GPU faults: every kind, several times, on a 5-node fleet, scored against the ground truth.
async fn eval_gpu(
    minutes_per_fault: u64,
    repeats: usize,
    seed: u64,
    interval: Duration,
) -> anyhow::Result<String> {
    let nodes = 5usize;
    let gpus_per_node = 4usize;
    // Slots of (fault + recovery); three faults run at once on different nodes; node 4 carries the
    // node-wide bus-bandwidth sag in slots of its own and is otherwise healthy.
    let slot = Duration::from_secs(minutes_per_fault * 60 + 300);
    let warmup = Duration::from_secs(15 * 60);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let per_gpu: Vec<FaultKind> = FaultKind::ALL
        .iter()
        .copied()
        .filter(|k| !k.is_node_wide())
        .collect();
    let mut faults = Vec::new();
    let mut instances: Vec<FaultKind> =
        (0..repeats).flat_map(|_| per_gpu.iter().copied()).collect();
    let mut slot_index = 0u32;
    while !instances.is_empty() {
        for node in 0..3 {
            if let Some(kind) = instances.pop() {
                faults.push(FaultSpec {
                    kind,
                    node,
                    gpu: Some(rng.gen_range(0..gpus_per_node)),
                    start: warmup + slot * slot_index,
                    duration: Some(Duration::from_secs(minutes_per_fault * 60)),
                });
            }
        }
        slot_index += 1;
    }
    for _ in 0..repeats {
        faults.push(FaultSpec {
            kind: FaultKind::NcclBusbwSag,
            node: 4,
            gpu: None,
            start: warmup + slot * slot_index,
            duration: Some(Duration::from_secs(minutes_per_fault * 60)),
        });
        slot_index += 1;
    }
    let total = warmup + slot * slot_index;
    let mut fleet = Fleet::new(FleetConfig {
        nodes,
        gpus_per_node,
        seed,
        faults,
        ..FleetConfig::default()
    });
    fleet.validate().map_err(anyhow::Error::msg)?;
    // A fixed start (a Wednesday, 08:00 UTC) so that runs are comparable across days.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_772_800 + 8 * 3600);
    let truth = fleet.ground_truth(start);

    let mut config = AnalyzerConfig::default();
    config.drift.enabled = false;
    let gpu_config = config.gpu.clone();
    let ctx = Arc::new(SessionContext::new());
    let mut window = Window {
        table: Table::Metrics,
        batches: VecDeque::new(),
        keep: gpu_config.baseline_window + gpu_config.window + interval,
    };
    window.register(&ctx)?;
    let mut analyzer = Analyzer::new(gpu::detectors(&gpu_config), ctx.clone(), None, None);
    let resource = Default::default();
    let labels = LabelConfig::default();
    let mut alerts: Vec<Alert> = Vec::new();
    let steps = (total.as_secs() / interval.as_secs().max(1)) as u32;
    for step in 1..=steps {
        let now = start + interval * step;
        fleet.advance(now, interval);
        let mut snapshot = Snapshot::new(now);
        fleet.sample_into(&labels, now, &mut snapshot);
        for request in requests(&snapshot, &resource, start) {
            window.push(now, metrics_to_batch(&request).batch);
        }
        if now.duration_since(start).unwrap_or_default() < Duration::from_secs(120) {
            continue;
        }
        window.register(&ctx)?;
        alerts.extend(
            analyzer
                .evaluate(now)
                .await
                .into_iter()
                .filter(|a| a.status == AlertStatus::Firing),
        );
    }

    // Score.
    let grace = Duration::from_secs(120);
    let outcomes: Vec<Outcome> = truth
        .iter()
        .map(|t| Outcome {
            truth: t.clone(),
            first_alert: alerts
                .iter()
                .filter(|a| matches(a, t, grace))
                .min_by_key(|a| a.at)
                .map(|a| (a.at, a.labels.get("alertname").cloned().unwrap_or_default())),
        })
        .collect();
    let days = total.as_secs_f64() / 86_400.0;
    let mut out = String::new();
    out.push_str(&format!(
        "Simulated: {nodes} nodes x {gpus_per_node} H100, sampled every {} for {} ({} fault instances, {} min each), seed {seed}.\n\n",
        humantime::format_duration(interval),
        humantime::format_duration(total),
        outcomes.len(),
        minutes_per_fault
    ));
    out.push_str("| fault | instances | recall | median delay | median delay (intervals) | first alert |\n|---|---|---|---|---|---|\n");
    let mut by_kind: BTreeMap<FaultKind, Vec<&Outcome>> = BTreeMap::new();
    for outcome in &outcomes {
        by_kind
            .entry(outcome.truth.fault)
            .or_default()
            .push(outcome);
    }
    for (kind, list) in &by_kind {
        let detected: Vec<f64> = list
            .iter()
            .filter_map(|o| {
                o.first_alert.as_ref().map(|(at, _)| {
                    at.duration_since(o.truth.start)
                        .unwrap_or_default()
                        .as_secs_f64()
                })
            })
            .collect();
        let mut sorted = detected.clone();
        let median = vigil_analyzer::stats::median(&mut sorted);
        let names: std::collections::BTreeSet<&str> = list
            .iter()
            .filter_map(|o| o.first_alert.as_ref().map(|(_, n)| n.as_str()))
            .collect();
        out.push_str(&format!(
            "| {kind} | {} | {} | {} | {} | {} |\n",
            list.len(),
            pct(detected.len() as f64 / list.len() as f64),
            median
                .map(|m| format!("{m:.0} s"))
                .unwrap_or_else(|| "-".into()),
            median
                .map(|m| format!("{:.1}", m / interval.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            names.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    // Precision per detector: firing alerts that match an injected fault.
    out.push_str("\n| detector | alerts fired | true | false | precision | false alarms per day |\n|---|---|---|---|---|---|\n");
    let mut per_detector: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for alert in &alerts {
        let detector = alert.labels.get("detector").cloned().unwrap_or_default();
        let entry = per_detector.entry(detector).or_default();
        entry.0 += 1;
        if truth.iter().any(|t| matches(alert, t, grace)) {
            entry.1 += 1;
        }
    }
    let (mut all, mut all_true) = (0, 0);
    for (detector, (fired, true_alerts)) in &per_detector {
        all += fired;
        all_true += true_alerts;
        out.push_str(&format!(
            "| {detector} | {fired} | {true_alerts} | {} | {} | {:.1} |\n",
            fired - true_alerts,
            pct(*true_alerts as f64 / *fired as f64),
            (fired - true_alerts) as f64 / days
        ));
    }
    let recall = outcomes.iter().filter(|o| o.first_alert.is_some()).count() as f64
        / outcomes.len().max(1) as f64;
    out.push_str(&format!(
        "| all | {all} | {all_true} | {} | {} | {:.1} |\n\nOverall recall {}.\n",
        all - all_true,
        pct(all_true as f64 / all.max(1) as f64),
        (all - all_true) as f64 / days,
        pct(recall)
    ));
    Ok(out)
}

/// LLM calls at `rate` per second from `start` for `duration`, with a drift from `change` on.
struct DriftRun {
    window: Window,
    generator: Generator,
    normalizer: Normalizer,
    batch_id: u64,
}

impl DriftRun {
    fn new(seed: u64, keep: Duration, drift: Drift) -> DriftRun {
        let mut generator = Generator::new(seed, false);
        generator.drift = drift;
        DriftRun {
            window: Window {
                table: Table::Spans,
                batches: VecDeque::new(),
                keep,
            },
            generator,
            normalizer: Normalizer::new(&NormalizeConfig::default()),
            batch_id: 0,
        }
    }

    /// Send one simulated second of traffic ending at `now`.
    fn send_second(&mut self, now: SystemTime, spans_per_second: usize, drifting: bool) {
        self.generator.drifting = drifting;
        self.batch_id += 1;
        let ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let (request, _) = self
            .generator
            .request_at(ns, spans_per_second, self.batch_id, "eval");
        self.window
            .push(now, spans_to_batch(&request, &self.normalizer).batch);
    }
}

/// How long a drift run sends traffic before the detector is first asked: the windows it reads
/// (and the rows kept for them) must be full.
fn drift_warmup(config: &drift::DriftConfig) -> Duration {
    config.window + config.reference_length + config.settle + Duration::from_secs(120)
}

/// Minutes until the first drift alert after `change` (None: not within the run), and false
/// alarms before it.
/// With `daily_cycle`, the rate follows the time of day (half at 06:00 UTC, one and a half at
/// 18:00), the way real traffic does; the distributions do not.
#[allow(clippy::too_many_arguments)]
async fn drift_scenario(
    label: &str,
    config: &drift::DriftConfig,
    drift: Drift,
    seed: u64,
    before: Duration,
    after: Duration,
    spans_per_second: usize,
    every: Duration,
    daily_cycle: bool,
) -> anyhow::Result<(Option<f64>, usize)> {
    let keep = drift_warmup(config);
    let mut run = DriftRun::new(seed, keep, drift);
    let ctx = Arc::new(SessionContext::new());
    run.window.register(&ctx)?;
    let mut analyzer = Analyzer::new(
        vec![Box::new(drift::DriftDetector::new(config.clone()))],
        ctx.clone(),
        None,
        None,
    );
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_772_800);
    let change = start + before;
    let mut false_alarms = 0;
    let total = (before + after).as_secs();
    for second in 1..=total {
        let now = start + Duration::from_secs(second);
        let rate = if daily_cycle {
            let phase = (second % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
            ((spans_per_second as f64) * (1.0 - 0.5 * phase.sin())).round() as usize
        } else {
            spans_per_second
        };
        run.send_second(now, rate, now >= change);
        if second % (12 * 3600) == 0 {
            eprintln!(
                "eval drift: {label}: {} simulated hours, {false_alarms} false alarms",
                second / 3600
            );
        }
        if second % every.as_secs().max(1) != 0 || Duration::from_secs(second) < keep {
            continue;
        }
        run.window.register(&ctx)?;
        for alert in analyzer.evaluate(now).await {
            if alert.status != AlertStatus::Firing {
                continue;
            }
            if now < change {
                false_alarms += 1;
                eprintln!(
                    "eval drift: {label}: false alarm after {:.1} h: {}",
                    Duration::from_secs(second).as_secs_f64() / 3600.0,
                    alert.annotations.get("summary").unwrap_or(&alert.subject)
                );
            } else {
                eprintln!(
                    "eval drift: {label}: caught after {:.0} min: {}",
                    now.duration_since(change).unwrap_or_default().as_secs_f64() / 60.0,
                    alert.annotations.get("summary").unwrap_or(&alert.subject)
                );
                return Ok((
                    Some(now.duration_since(change).unwrap_or_default().as_secs_f64() / 60.0),
                    false_alarms,
                ));
            }
        }
    }
    Ok((None, false_alarms))
}

async fn eval_drift(
    seed: u64,
    stationary_hours: u64,
    stationary_runs: u64,
    stationary_only: bool,
) -> anyhow::Result<String> {
    let defaults = drift::DriftConfig::default();
    // The loops below call the detector at its own cadence (`evaluate_every`, as `vigil serve`).
    let every = defaults.evaluate_every;
    let config = drift::DriftConfig {
        evaluate_every: Duration::ZERO,
        ..defaults.clone()
    };
    // About 22 spans per second carry 10 LLM calls per second (the rest are retrieval, tools, HTTP).
    let spans_per_second = 22;
    let none = Drift {
        input_tokens: 1.0,
        output_tokens: 1.0,
        latency: 1.0,
        error_rate: None,
    };
    // Stationary traffic: every alert is a false alarm (a "change" one second after the end that
    // changes nothing). It runs beside the shift scenarios, on the other core.
    let stationary_runs = stationary_runs.clamp(1, stationary_hours.max(1));
    let each = Duration::from_secs(stationary_hours * 3600 / stationary_runs);
    let stationary_tasks: Vec<_> = (0..stationary_runs)
        .map(|run| {
            let config = config.clone();
            tokio::spawn(async move {
                drift_scenario(
                    &format!("stationary run {}", run + 1),
                    &config,
                    none,
                    seed + 1 + run,
                    each + Duration::from_secs(1),
                    Duration::ZERO,
                    spans_per_second,
                    every,
                    true,
                )
                .await
            })
        })
        .collect();
    let mut out = String::new();
    out.push_str(&format!(
        "Traffic: ~10 LLM calls/s across {} models and 4 services; detector defaults (window {}, settle {}, trailing reference {}, alpha {} across all tests of an evaluation, for {}), evaluated every {}.\n\n",
        6,
        humantime::format_duration(config.window),
        humantime::format_duration(config.settle),
        humantime::format_duration(config.reference_length),
        config.alpha,
        humantime::format_duration(config.for_duration),
        humantime::format_duration(every),
    ));
    out.push_str("Detection delay after the change (from the change to the alert firing, for_duration included):\n\n");
    out.push_str("| shift | 5% | 10% | 25% |\n|---|---|---|---|\n");
    type MakeDrift = fn(f64) -> Drift;
    let shifts: [(&str, MakeDrift); 4] = [
        ("output tokens", |s| Drift {
            input_tokens: 1.0,
            output_tokens: 1.0 + s,
            latency: 1.0,
            error_rate: None,
        }),
        ("input tokens", |s| Drift {
            input_tokens: 1.0 + s,
            output_tokens: 1.0,
            latency: 1.0,
            error_rate: None,
        }),
        ("latency", |s| Drift {
            input_tokens: 1.0,
            output_tokens: 1.0,
            latency: 1.0 + s,
            error_rate: None,
        }),
        ("error rate (2% baseline)", |s| Drift {
            input_tokens: 1.0,
            output_tokens: 1.0,
            latency: 1.0,
            error_rate: Some(0.02 * (1.0 + s)),
        }),
    ];
    for (name, make) in shifts {
        if stationary_only {
            break;
        }
        let mut cells = Vec::new();
        for size in [0.05, 0.10, 0.25] {
            let label = format!("{name} +{:.0}%", size * 100.0);
            let (delay, false_alarms) = drift_scenario(
                &label,
                &config,
                make(size),
                seed,
                Duration::from_secs(100 * 60),
                Duration::from_secs(40 * 60),
                spans_per_second,
                every,
                false,
            )
            .await?;
            cells.push(match delay {
                Some(minutes) => format!(
                    "{minutes:.0} min{}",
                    if false_alarms > 0 {
                        format!(" ({false_alarms} false before)")
                    } else {
                        String::new()
                    }
                ),
                None => "not within 40 min".to_string(),
            });
        }
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    let mut false_alarms = 0;
    for task in stationary_tasks {
        false_alarms += task.await??.1;
    }
    let judged_hours =
        stationary_runs as f64 * each.saturating_sub(drift_warmup(&config)).as_secs_f64() / 3600.0;
    let per_week = false_alarms as f64 * 7.0 * 24.0 / judged_hours.max(1.0 / 60.0);
    out.push_str(&format!(
        "\nStationary traffic with a daily cycle of the rate (5 to 15 calls/s), {stationary_hours} h in {stationary_runs} independent runs ({judged_hours:.1} h judged after each run's reference filled): {false_alarms} false alarms, {per_week:.1} per simulated week.\n"
    ));
    Ok(out)
}

/// Score a `timestamp,value` CSV: one `timestamp,value,anomaly_score` row per input row on
/// stdout (the format NAB's scorer reads).
fn eval_csv(path: &std::path::Path, warmup: Option<usize>) -> anyhow::Result<()> {
    use std::io::Write;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((timestamp, value)) = line.split_once(',') else {
            bail!(
                "{}:{}: expected timestamp,value, got {line:?}",
                path.display(),
                number + 1
            );
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            if number == 0 {
                continue; // a header
            }
            bail!(
                "{}:{}: {:?} is not a number",
                path.display(),
                number + 1,
                value.trim()
            );
        };
        rows.push((timestamp.trim(), value));
    }
    // NAB's probationary period: what its scorer does not judge, and what every detector it
    // runs is told to learn from.
    let warmup = warmup.unwrap_or(((rows.len() as f64 * 0.15) as usize).min(750));
    let mut detector = StreamingAnomaly::new(AnomalyParams {
        warmup,
        ..AnomalyParams::default()
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "timestamp,value,anomaly_score")?;
    for (timestamp, value) in rows {
        writeln!(
            out,
            "{timestamp},{value},{:.6}",
            detector.score(value).score
        )?;
    }
    out.flush()?;
    Ok(())
}

/// A drift detector over `batch` (as the `spans` table) and an analyzer around it.
fn trace_analyzer(batch: RecordBatch, config: &drift::DriftConfig) -> anyhow::Result<Analyzer> {
    let ctx = Arc::new(SessionContext::new());
    ctx.register_table(
        "spans",
        Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?),
    )?;
    Ok(Analyzer::new(
        vec![Box::new(drift::DriftDetector::new(config.clone()))],
        ctx,
        None,
        None,
    ))
}

/// What moved in a drift alert, and against what weather: "input_tokens p25 -31% (weather
/// 28%), ...", for the false alarms printed on stderr.
fn drift_detail(alert: &Alert) -> String {
    let mut parts = Vec::new();
    for feature in alert
        .evidence
        .get("moved")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let Some(name) = feature.as_str() else {
            continue;
        };
        let Some(test) = alert.evidence.get(name) else {
            continue;
        };
        let moved: Vec<&str> = test["moved_quantiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q.as_str())
            .collect();
        if moved.is_empty() {
            parts.push(format!(
                "{name} ks {:.3} (weather {:.3})",
                test["ks_distance"].as_f64().unwrap_or(f64::NAN),
                test["between_reference_windows"]["ks_distance"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ));
        }
        for q in moved {
            parts.push(format!(
                "{name} {q} {:+.0}% (weather {:.0}%)",
                test["quantiles"][q]["shift"].as_f64().unwrap_or(f64::NAN) * 100.0,
                test["quantiles"][q]["between_reference_windows"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    * 100.0
            ));
        }
    }
    parts.join(", ")
}

fn firing(alerts: &[Alert]) -> impl Iterator<Item = &Alert> {
    alerts.iter().filter(|a| a.status == AlertStatus::Firing)
}

async fn eval_drift_trace(args: &DriftTraceArgs) -> anyhow::Result<String> {
    let DriftTraceArgs {
        ref file,
        window,
        reference,
        hours,
        shift,
        changes,
        mixture_components,
        weather_margin,
        weather_memory,
        bootstrap,
    } = *args;
    let rows = replay::read_trace(file)?;
    // The traffic of one run: the trace back to back, or a bootstrap of it long enough.
    let traffic = |length: Duration, seed: u64| match bootstrap {
        Some(base) => replay::block_bootstrap(
            &rows,
            length,
            Duration::from_secs(600),
            true,
            base.wrapping_add(seed),
        ),
        None => rows.clone(),
    };
    let period = Duration::from_nanos(rows.last().map(|r| r.0).unwrap_or(0).max(0) as u64)
        + Duration::from_secs(1);
    let reference = reference.unwrap_or_else(|| Duration::from_secs(3600).max(window * 5 / 2));
    let config = drift::DriftConfig {
        window,
        reference_length: reference,
        mixture_components,
        weather_margin,
        weather_memory,
        ..drift::DriftConfig::default()
    };
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_772_800);
    // Judged once the reference and the weather memory have filled.
    let first_verdict = start + drift_warmup(&config);
    let judged_from = first_verdict + weather_memory;
    let mut out = format!(
        "{}: {} requests ({:.1} min) {}; window {}, trailing reference {}, mixture components {}, weather margin {weather_margin}, weather memory {}\n",
        file.display(),
        rows.len(),
        period.as_secs_f64() / 60.0,
        match bootstrap {
            Some(seed) => format!(
                "stretched by a block bootstrap (seed {seed}, 10-minute blocks, daily cycle)"
            ),
            None => "replayed back to back".to_owned(),
        },
        humantime::format_duration(window),
        humantime::format_duration(reference),
        mixture_components,
        humantime::format_duration(weather_memory),
    );

    // False alarms: the trace as it is, judged once a minute for `hours`.
    if hours > 0.0 {
        let end = judged_from + Duration::from_secs_f64(hours * 3600.0);
        let traffic = traffic(end.duration_since(start)? + Duration::from_secs(60), 0);
        if bootstrap.is_some() {
            // How much the stretched traffic moves between windows, beside the trace itself.
            for minutes in [2, 10] {
                let window = Duration::from_secs(minutes * 60);
                let [real_in, real_out] = replay::between_windows(&rows, window);
                let [boot_in, boot_out] = replay::between_windows(&traffic, window);
                out.push_str(&format!(
                    "medians of {minutes}-minute windows, coefficient of variation (lag-1 autocorrelation): \
                     input tokens {:.2} ({:.2}) in the trace, {:.2} ({:.2}) stretched; \
                     output tokens {:.2} ({:.2}) in the trace, {:.2} ({:.2}) stretched\n",
                    real_in.0, real_in.1, boot_in.0, boot_in.1,
                    real_out.0, real_out.1, boot_out.0, boot_out.1,
                ));
            }
        }
        let mut analyzer = trace_analyzer(
            replay::trace_spans(&traffic, start, end, 1.0, end + period)?,
            &config,
        )?;
        let (mut false_alarms, mut while_filling) = (0, 0);
        let mut now = first_verdict;
        while now <= end {
            for alert in firing(&analyzer.evaluate(now).await) {
                if now < judged_from {
                    while_filling += 1;
                    continue;
                }
                false_alarms += 1;
                let at_h = now
                    .duration_since(judged_from)
                    .unwrap_or_default()
                    .as_secs_f64()
                    / 3600.0;
                eprintln!(
                    "eval drift-trace: false alarm at {at_h:.2} h: {} [{}]",
                    alert.annotations.get("summary").unwrap_or(&alert.subject),
                    drift_detail(alert)
                );
            }
            now += config.evaluate_every;
        }
        if weather_memory > Duration::ZERO {
            out.push_str(&format!(
                "false alarms while the weather memory filled: {while_filling} in {:.1} h\n",
                weather_memory.as_secs_f64() / 3600.0
            ));
        }
        out.push_str(&format!(
            "false alarms: {false_alarms} in {hours:.1} judged hours ({:.1} a week)\n",
            false_alarms as f64 / hours * 168.0
        ));
    }

    // Shifts: `changes` runs, each changing the output tokens at a different point of the trace
    // (where a change lands, in a burst or a lull, moves its delay), judged for an hour after.
    if shift != 1.0 && changes > 0 {
        let mut delays = Vec::new();
        for i in 0..changes {
            // Back to back, each change lands at another point of the trace; bootstrapped, each
            // run is other traffic.
            let change = judged_from
                + match bootstrap {
                    Some(_) => Duration::ZERO,
                    None => period.mul_f64(i as f64 / changes as f64),
                };
            let end = change + Duration::from_secs(3600);
            let traffic = traffic(
                end.duration_since(start)? + Duration::from_secs(60),
                1 + i as u64,
            );
            let mut analyzer = trace_analyzer(
                replay::trace_spans(&traffic, start, end, shift, change)?,
                &config,
            )?;
            // From a few minutes before the change, so that an alert already firing then is not
            // taken for a catch; the detector's first evaluation refills its weather memory from
            // the day of traffic before, as after a restart.
            let mut now = change - Duration::from_secs(300);
            let mut caught = None;
            if weather_memory > Duration::ZERO {
                let started = std::time::Instant::now();
                analyzer.evaluate(now).await;
                eprintln!(
                    "eval drift-trace: first evaluation, the weather memory restored from the store: {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                now += config.evaluate_every;
            }
            while now <= end && caught.is_none() {
                if firing(&analyzer.evaluate(now).await).next().is_some() && now >= change {
                    caught =
                        Some(now.duration_since(change).unwrap_or_default().as_secs_f64() / 60.0);
                }
                now += config.evaluate_every;
            }
            eprintln!(
                "eval drift-trace: change {}/{changes} at {:.0} min into the traffic: {}",
                i + 1,
                change.duration_since(start)?.as_secs_f64() / 60.0,
                caught.map_or("not caught within 1 h".to_owned(), |m| format!(
                    "caught after {m:.0} min"
                ))
            );
            delays.push(caught);
        }
        let mut sorted: Vec<f64> = delays.iter().map(|d| d.unwrap_or(f64::INFINITY)).collect();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let caught = delays.iter().flatten().count();
        out.push_str(&format!(
            "output tokens x{shift}: caught {caught} of {changes} changes within 1 h, median delay {}; delays (min): {}\n",
            if median.is_finite() { format!("{median:.0} min") } else { "over 1 h".to_owned() },
            delays
                .iter()
                .map(|d| d.map_or("-".to_owned(), |m| format!("{m:.0}")))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    Ok(out)
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Gpu {
            minutes_per_fault,
            repeats,
            seed,
            interval,
        } => {
            println!(
                "{}",
                eval_gpu(minutes_per_fault, repeats, seed, interval).await?
            );
        }
        EvalCommand::Drift {
            seed,
            stationary_hours,
            stationary_runs,
            stationary_only,
        } => {
            println!(
                "{}",
                eval_drift(seed, stationary_hours, stationary_runs, stationary_only).await?
            );
        }
        EvalCommand::DriftTrace(args) => print!("{}", eval_drift_trace(&args).await?),
        EvalCommand::Csv { file, warmup } => eval_csv(&file, warmup)?,
        EvalCommand::Anomaly {
            seed,
            repeats,
            weeks,
            without_seasons,
        } => print!(
            "{}",
            crate::eval_anomaly::run(seed, repeats, weeks, !without_seasons)?
        ),
    }
    Ok(())
}
