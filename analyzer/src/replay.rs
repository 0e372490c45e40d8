//! Real traces of LLM requests (timestamp, input and output tokens, as the Azure LLM inference
//! traces) replayed as a `spans` table, so that the drift detector is judged on traffic nobody
//! here generated (`vigil eval drift-trace`, and the detector's own tests), and stretched past
//! their hour by a block bootstrap that keeps their bursts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng};

use arrow::array::RecordBatch;

use crate::AnalyzerError;

/// One request of a trace: when (ns, relative to the first), input and output tokens.
pub type TraceRow = (i64, i64, i64);

/// Reads `timestamp,input_tokens,output_tokens` rows (a header line first; timestamps RFC 3339
/// or `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC, as the Azure LLM inference traces write them).
pub fn read_trace(path: &Path) -> Result<Vec<TraceRow>, AnalyzerError> {
    let text = std::fs::read_to_string(path)?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| {
            AnalyzerError::Config(format!("{}:{}: {what}", path.display(), number + 1))
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [at, input, output] = fields[..] else {
            return Err(bad("expected timestamp,input_tokens,output_tokens".into()));
        };
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|t| t.and_utc())
            })
            .map_err(|_| bad(format!("timestamp {at:?}")))?;
        let parse =
            |v: &str, what: &str| v.parse::<i64>().map_err(|_| bad(format!("{what} {v:?}")));
        rows.push((
            at.timestamp_nanos_opt()
                .ok_or_else(|| bad("timestamp out of range".into()))?,
            parse(input, "input tokens")?,
            parse(output, "output tokens")?,
        ));
    }
    rows.sort_by_key(|r| r.0);
    let first = rows
        .first()
        .ok_or_else(|| AnalyzerError::Config(format!("{}: no rows", path.display())))?
        .0;
    for row in &mut rows {
        row.0 -= first;
    }
    Ok(rows)
}

/// Traffic as bursty as a real trace and as long as needed: a stationary block bootstrap
/// (Politis and Romano) of `rows`. Blocks of the trace, of random length (exponential, mean
/// `mean_block`) and from random points (the trace taken as circular), laid end to end until
/// `length`. Inside a block the real bursts, sessions and batch jobs stand as they came; between
/// blocks the mix changes as abruptly as real traffic's does, and no hour repeats the last, so
/// that a week of it holds many more distinct windows than the hour replayed 168 times. A mean
/// block of 10 minutes gives the Azure conversation trace's own variability between 2- and
/// 10-minute windows (`between_windows`; shorter blocks average its episodes away).
/// With `daily_cycle`, requests are kept with a probability that follows the time of day (all at
/// 18:00 UTC, half at 06:00), as real traffic's rate does.
pub fn block_bootstrap(
    rows: &[TraceRow],
    length: Duration,
    mean_block: Duration,
    daily_cycle: bool,
    seed: u64,
) -> Vec<TraceRow> {
    let Some(last) = rows.last() else {
        return Vec::new();
    };
    let period = last.0 + 1_000_000_000;
    let (length, mean_block) = (
        length.as_nanos() as i64,
        mean_block.as_nanos().max(1) as f64,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut at = 0i64;
    while at < length {
        let from = rng.gen_range(0..period);
        let block = ((-(1.0 - rng.r#gen::<f64>()).ln() * mean_block) as i64).clamp(1, period);
        // The rows from `from` for `block` ns, wrapping around the end of the trace.
        let first = rows.partition_point(|r| r.0 < from);
        for k in 0..rows.len() {
            let (offset, input, output) = rows[(first + k) % rows.len()];
            let since = (offset - from).rem_euclid(period);
            if since >= block || (k > 0 && since == 0) {
                break;
            }
            let time = at + since;
            if time >= length {
                break;
            }
            if daily_cycle {
                let day = 86_400e9;
                let phase = (time as f64 % day) / day;
                // 1 at 18:00, 0.5 at 06:00.
                let keep = 0.75 + 0.25 * (2.0 * std::f64::consts::PI * (phase - 0.75)).cos();
                if rng.r#gen::<f64>() >= keep {
                    continue;
                }
            }
            out.push((time, input, output));
        }
        at += block;
    }
    out
}

/// How much a trace's token counts move between windows of `window`: for input and output
/// tokens, the coefficient of variation of the windows' medians and the lag-1 autocorrelation
/// of those medians (how long a wander lasts). Windows with fewer than 20 requests are skipped.
pub fn between_windows(rows: &[TraceRow], window: Duration) -> [(f64, f64); 2] {
    let window = window.as_nanos().max(1) as i64;
    let mut medians: [Vec<f64>; 2] = Default::default();
    let mut k = 0;
    while k < rows.len() {
        let index = rows[k].0 / window;
        let end = k + rows[k..].partition_point(|r| r.0 / window == index);
        if end - k >= 20 {
            for (feature, medians) in medians.iter_mut().enumerate() {
                let mut values: Vec<f64> = rows[k..end]
                    .iter()
                    .map(|r| if feature == 0 { r.1 } else { r.2 } as f64)
                    .collect();
                medians.extend(crate::stats::median(&mut values));
            }
        }
        k = end;
    }
    medians.map(|m| {
        let n = m.len() as f64;
        let mean = m.iter().sum::<f64>() / n;
        let var = m.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let lag1 = m
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / n;
        (var.sqrt() / mean, if var > 0.0 { lag1 / var } else { 0.0 })
    })
}

/// The trace as spans of one service and model, repeated back to back from `start` until
/// `end`; output tokens × `shift` from `shift_from` on. The traces carry no latency: it follows
/// the output tokens, as generation time does.
pub fn trace_spans(
    rows: &[TraceRow],
    start: SystemTime,
    end: SystemTime,
    shift: f64,
    shift_from: SystemTime,
) -> Result<RecordBatch, AnalyzerError> {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
    let ns = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64
    };
    let period = rows.last().map(|r| r.0).unwrap_or(0) + 1_000_000_000;
    let (start, end, shift_from) = (ns(start), ns(end), ns(shift_from));
    let (mut time, mut inputs, mut outputs, mut durations, mut traces) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut finish = ListBuilder::new(StringBuilder::new());
    let mut round = 0i64;
    'replay: loop {
        for (i, (offset, input, output)) in rows.iter().enumerate() {
            let at = start + round * period + offset;
            if at > end {
                break 'replay;
            }
            let output = if at >= shift_from {
                (*output as f64 * shift).round() as i64
            } else {
                *output
            };
            time.push(at);
            inputs.push(*input);
            outputs.push(output);
            durations.push((250 + 25 * output) * 1_000_000);
            traces.push(format!("{:016x}{:016x}", round, i));
            finish.values().append_value("stop");
            finish.append(true);
        }
        round += 1;
    }
    let n = time.len();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "time",
            Arc::new(arrow::array::TimestampNanosecondArray::from(time).with_timezone("UTC")),
        ),
        (
            "service_name",
            Arc::new(StringArray::from(vec!["replay"; n])),
        ),
        (
            "request_model",
            Arc::new(StringArray::from(vec!["trace"; n])),
        ),
        (
            "response_model",
            Arc::new(StringArray::from(vec!["trace"; n])),
        ),
        ("input_tokens", Arc::new(Int64Array::from(inputs))),
        ("output_tokens", Arc::new(Int64Array::from(outputs))),
        ("duration_ns", Arc::new(Int64Array::from(durations))),
        ("ttft_ns", Arc::new(Int64Array::from(vec![None::<i64>; n]))),
        ("status_code", Arc::new(StringArray::from(vec!["UNSET"; n]))),
        ("finish_reasons", Arc::new(finish.finish())),
        ("trace_id", Arc::new(StringArray::from(traces))),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| AnalyzerError::Shape(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<TraceRow> {
        let path = format!(
            "{}/tests/data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        read_trace(Path::new(&path)).unwrap()
    }

    #[test]
    fn the_bootstrap_is_made_of_stretches_of_the_trace_and_as_long_as_asked() {
        let rows = conversation();
        let hours = Duration::from_secs(6 * 3600);
        let boot = block_bootstrap(&rows, hours, Duration::from_secs(600), false, 7);
        assert!(boot.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        let last = boot.last().unwrap().0;
        assert!(last < hours.as_nanos() as i64 && last > hours.as_nanos() as i64 - 60_000_000_000);
        // About six hours' worth of the trace's requests, every one of them a request of the trace.
        let ratio = boot.len() as f64 / (6.0 * rows.len() as f64);
        assert!((0.85..1.15).contains(&ratio), "{ratio}");
        let known: std::collections::HashSet<(i64, i64)> =
            rows.iter().map(|r| (r.1, r.2)).collect();
        assert!(boot.iter().all(|r| known.contains(&(r.1, r.2))));
        // Same seed, same traffic; another seed, other traffic.
        assert_eq!(
            boot,
            block_bootstrap(&rows, hours, Duration::from_secs(600), false, 7)
        );
        assert_ne!(
            boot,
            block_bootstrap(&rows, hours, Duration::from_secs(600), false, 8)
        );
    }

    #[test]
    fn the_daily_cycle_halves_the_night() {
        let rows = conversation();
        let boot = block_bootstrap(
            &rows,
            Duration::from_secs(86_400),
            Duration::from_secs(600),
            true,
            1,
        );
        let hour = |h: i64| boot.iter().filter(|r| r.0 / 3_600_000_000_000 == h).count() as f64;
        let (night, evening) = (hour(5) + hour(6), hour(17) + hour(18));
        assert!(
            (0.4..0.65).contains(&(night / evening)),
            "{night} {evening}"
        );
    }

    #[test]
    fn the_bootstrap_moves_between_windows_as_the_trace_does() {
        let rows = conversation();
        let boot = block_bootstrap(
            &rows,
            Duration::from_secs(12 * 3600),
            Duration::from_secs(600),
            false,
            3,
        );
        let window = Duration::from_secs(120);
        let (real, made) = (
            between_windows(&rows, window),
            between_windows(&boot, window),
        );
        for feature in 0..2 {
            let (real_cv, made_cv) = (real[feature].0, made[feature].0);
            assert!(
                made_cv > 0.5 * real_cv && made_cv < 1.5 * real_cv,
                "feature {feature}: {real:?} {made:?}"
            );
            // Successive windows stay alike for a while, as in the real hour.
            assert!(made[feature].1 > 0.3, "{made:?}");
        }
    }
}
