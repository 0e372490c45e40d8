//! The LLM views' numbers from `llm_minutes`, the collector's per-minute rollup of LLM calls:
//! an hour of ten million calls is a few thousand rows to read instead of ten million spans.
//! Quantiles come from its log-scale histograms (within 4.5% of the exact ones) and times are
//! whole minutes: a range starts at the minute its start falls in.

use std::collections::BTreeMap;

use arrow::array::{Array, MapArray, RecordBatch};
use vigil_schemas::rollup::{BUCKETS_PER_OCTAVE, add_buckets, add_counts, quantile};

use crate::TuiError;
use crate::fetch::{Request, f64s, i64s, quote, strings};
use crate::state::{Counts, Golden, ModelRow, ServedRow, TREND_BUCKETS, Trend};

const MINUTE_NS: i64 = 60_000_000_000;

/// One row of `llm_minutes` as the dashboard reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MinuteRow {
    pub minute_ns: i64,
    pub service: String,
    pub model: String,
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub first_ns: i64,
    pub duration_ms: BTreeMap<i32, i64>,
    pub ttft_ms: BTreeMap<i32, i64>,
    pub output_tokens_hist: BTreeMap<i32, i64>,
    pub finish_reasons: BTreeMap<String, i64>,
    pub error_types: BTreeMap<String, i64>,
}

/// The start of the minute `lo` falls in: where a range over minutes begins.
fn minute_floor(ns: i64) -> i64 {
    ns.div_euclid(MINUTE_NS) * MINUTE_NS
}

/// The minutes of the range, of the calls `scope` (SQL over `llm_minutes`) selects; `detail`
/// adds the output-token histograms, finish reasons and error types a model's view shows.
pub fn minutes_sql(r: &Request, scope: Option<&str>, detail: bool) -> String {
    let detail_columns = if detail {
        ", output_tokens_buckets, finish_reasons, error_types"
    } else {
        ""
    };
    let scope = scope.map(|s| format!(" AND {s}")).unwrap_or_default();
    format!(
        "SELECT CAST(time AS BIGINT) AS minute, service_name, request_model, calls, errors, \
         input_tokens, output_tokens, cost_usd, CAST(first_time AS BIGINT) AS first, \
         duration_ms_buckets, ttft_ms_buckets{detail_columns} \
         FROM llm_minutes WHERE {time}{scope}",
        time = r.minutes_filter(),
    )
}

/// The scope of one model's calls.
pub fn model_scope(service: &str, model: &str) -> String {
    format!(
        "service_name = {} AND request_model = {}",
        quote(service),
        quote(model)
    )
}

/// The scope of the calls served from one host.
pub fn host_scope(host: &str) -> String {
    format!("host_name = {}", quote(host))
}

fn map_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a MapArray>, TuiError> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(column) => column
            .as_any()
            .downcast_ref::<MapArray>()
            .map(Some)
            .ok_or_else(|| TuiError::Query(format!("column {name:?} is not a map"))),
    }
}

/// The rows of a [`minutes_sql`] answer.
pub fn parse(batches: &[RecordBatch]) -> Result<Vec<MinuteRow>, TuiError> {
    let minute = i64s(batches, "minute")?;
    let service = strings(batches, "service_name")?;
    let model = strings(batches, "request_model")?;
    let calls = i64s(batches, "calls")?;
    let errors = i64s(batches, "errors")?;
    let input = i64s(batches, "input_tokens")?;
    let output = i64s(batches, "output_tokens")?;
    let cost = f64s(batches, "cost_usd")?;
    let first = i64s(batches, "first")?;
    let count = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let mut rows = Vec::with_capacity(minute.len());
    let mut i = 0;
    for batch in batches {
        let duration = map_column(batch, "duration_ms_buckets")?;
        let ttft = map_column(batch, "ttft_ms_buckets")?;
        let tokens = map_column(batch, "output_tokens_buckets")?;
        let finish = map_column(batch, "finish_reasons")?;
        let error_types = map_column(batch, "error_types")?;
        for row in 0..batch.num_rows() {
            let mut out = MinuteRow {
                minute_ns: minute[i].unwrap_or(0),
                service: service[i].clone().unwrap_or_default(),
                model: model[i].clone().unwrap_or_default(),
                calls: count(calls[i]),
                errors: count(errors[i]),
                input_tokens: count(input[i]),
                output_tokens: count(output[i]),
                cost_usd: cost[i].unwrap_or(0.0),
                first_ns: first[i].unwrap_or(0),
                ..MinuteRow::default()
            };
            let histograms = [
                (duration, &mut out.duration_ms),
                (ttft, &mut out.ttft_ms),
                (tokens, &mut out.output_tokens_hist),
            ];
            for (column, into) in histograms {
                if let Some(column) = column {
                    add_buckets(into, column, row);
                }
            }
            for (column, into) in [
                (finish, &mut out.finish_reasons),
                (error_types, &mut out.error_types),
            ] {
                if let Some(column) = column {
                    add_counts(into, column, row)
                        .map_err(|e| TuiError::Query(format!("llm_minutes: {e}")))?;
                }
            }
            rows.push(out);
            i += 1;
        }
    }
    Ok(rows)
}

/// Minutes added together.
#[derive(Default)]
struct Sum {
    calls: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    first_ns: Option<i64>,
    duration_ms: BTreeMap<i32, u64>,
    ttft_ms: BTreeMap<i32, u64>,
}

impl Sum {
    fn add(&mut self, row: &MinuteRow) {
        self.calls += row.calls;
        self.errors += row.errors;
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        self.cost_usd += row.cost_usd;
        self.first_ns = Some(self.first_ns.map_or(row.first_ns, |f| f.min(row.first_ns)));
        for (into, from) in [
            (&mut self.duration_ms, &row.duration_ms),
            (&mut self.ttft_ms, &row.ttft_ms),
        ] {
            for (b, c) in from {
                *into.entry(*b).or_default() += (*c).max(0) as u64;
            }
        }
    }

    fn seconds(&self, r: &Request) -> f64 {
        let start = self
            .first_ns
            .unwrap_or(i64::MIN)
            .max(minute_floor(r.lo_ns()));
        ((r.now_ns - start) as f64 / 1e9).max(1.0)
    }

    /// A latency quantile in seconds.
    fn latency_s(&self, q: f64) -> Option<f64> {
        quantile(&self.duration_ms, q).map(|ms| ms / 1e3)
    }

    fn ttft_s(&self, q: f64) -> Option<f64> {
        quantile(&self.ttft_ms, q).map(|ms| ms / 1e3)
    }

    fn error_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.errors as f64 / self.calls as f64)
    }
}

/// The golden signals of the whole range.
pub fn golden(r: &Request, rows: &[MinuteRow]) -> Golden {
    let mut sum = Sum::default();
    rows.iter().for_each(|row| sum.add(row));
    if sum.calls == 0 {
        return Golden::default();
    }
    let seconds = sum.seconds(r);
    Golden {
        calls: sum.calls,
        requests_per_s: sum.calls as f64 / seconds,
        p50_s: sum.latency_s(0.5),
        p95_s: sum.latency_s(0.95),
        ttft_p50_s: sum.ttft_s(0.5),
        ttft_p95_s: sum.ttft_s(0.95),
        input_tokens_per_s: sum.input_tokens as f64 / seconds,
        output_tokens_per_s: sum.output_tokens as f64 / seconds,
        cost_per_hour: sum.cost_usd * 3600.0 / seconds,
        error_rate: sum.error_rate(),
    }
}

/// The golden signals per (service, model).
pub fn models(r: &Request, rows: &[MinuteRow]) -> Vec<ModelRow> {
    let mut by_model: BTreeMap<(&str, &str), Sum> = BTreeMap::new();
    for row in rows {
        by_model
            .entry((&row.service, &row.model))
            .or_default()
            .add(row);
    }
    by_model
        .into_iter()
        .map(|((service, model), sum)| {
            let seconds = sum.seconds(r);
            ModelRow {
                service: service.to_string(),
                model: model.to_string(),
                calls: sum.calls,
                requests_per_s: sum.calls as f64 / seconds,
                p50_s: sum.latency_s(0.5),
                p95_s: sum.latency_s(0.95),
                ttft_p95_s: sum.ttft_s(0.95),
                output_tokens_per_s: sum.output_tokens as f64 / seconds,
                cost_per_hour: sum.cost_usd * 3600.0 / seconds,
                error_rate: sum.error_rate().unwrap_or(0.0),
            }
        })
        .collect()
}

/// The models a host served, busiest first.
pub fn served(r: &Request, rows: &[MinuteRow]) -> Vec<ServedRow> {
    let mut served: Vec<ServedRow> = models(r, rows)
        .into_iter()
        .map(|m| ServedRow {
            service: m.service,
            model: m.model,
            calls: m.calls,
            p95_s: m.p95_s,
        })
        .collect();
    served.sort_by_key(|s| std::cmp::Reverse(s.calls));
    served.truncate(10);
    served
}

/// The range's trend slots, each minute's sums spread evenly over the slots it covers when a
/// slot is shorter than a minute (the 5- and 15-minute ranges), so that rates stay true.
pub fn trend(r: &Request, rows: &[MinuteRow]) -> Trend {
    let width_ns = r.bucket_secs() as i64 * 1_000_000_000;
    let unit_ns = width_ns.max(MINUTE_NS);
    let mut units: BTreeMap<i64, Sum> = BTreeMap::new();
    for row in rows {
        units
            .entry(row.minute_ns.div_euclid(unit_ns) * unit_ns)
            .or_default()
            .add(row);
    }
    let mut t = Trend {
        calls: vec![0; TREND_BUCKETS],
        p95_ms: vec![0; TREND_BUCKETS],
        ttft_p95_ms: vec![0; TREND_BUCKETS],
        tokens: vec![0; TREND_BUCKETS],
        cost_micro_usd: vec![0; TREND_BUCKETS],
        errors: vec![0; TREND_BUCKETS],
    };
    let slots_per_unit = (unit_ns / width_ns).max(1) as u64;
    // The k-th of n shares of a total, so that the shares add up to it exactly.
    let share = |total: u64, k: u64| total / slots_per_unit + u64::from(k < total % slots_per_unit);
    for (start, sum) in units {
        let p95_ms = quantile(&sum.duration_ms, 0.95).unwrap_or(0.0).round() as u64;
        let ttft_ms = quantile(&sum.ttft_ms, 0.95).unwrap_or(0.0).round() as u64;
        let tokens = sum.input_tokens + sum.output_tokens;
        let cost = (sum.cost_usd * 1e6).max(0.0).round() as u64;
        for k in 0..slots_per_unit {
            let Some(slot) = r.slot(start + k as i64 * width_ns) else {
                continue;
            };
            t.calls[slot] = share(sum.calls, k);
            t.errors[slot] = share(sum.errors, k);
            t.tokens[slot] = share(tokens, k);
            t.cost_micro_usd[slot] = share(cost, k);
            t.p95_ms[slot] = p95_ms;
            t.ttft_p95_ms[slot] = ttft_ms;
        }
    }
    t
}

/// A histogram in powers of two (`[2^b, 2^(b+1))`, values under 1 in the first), the scale
/// the model view draws, from the rollup's eighth-of-a-doubling buckets.
pub fn octaves(histogram: &BTreeMap<i32, i64>) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for (b, c) in histogram {
        let octave = b.div_euclid(BUCKETS_PER_OCTAVE).max(0) as i64;
        *out.entry(octave).or_default() += (*c).max(0) as u64;
    }
    out
}

/// Everything a model's histograms, reasons and errors need, summed over its minutes.
pub struct ModelSums {
    pub duration_ms: BTreeMap<i32, i64>,
    pub ttft_ms: BTreeMap<i32, i64>,
    pub output_tokens: BTreeMap<i32, i64>,
    pub finish_reasons: Counts,
    pub errors: Counts,
}

/// The top eight labels by count.
fn top(counts: BTreeMap<String, i64>) -> Counts {
    let mut out: Counts = counts
        .into_iter()
        .map(|(label, c)| (label, c.max(0) as u64))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(8);
    out
}

pub fn model_sums(rows: &[MinuteRow]) -> ModelSums {
    let mut duration_ms = BTreeMap::new();
    let mut ttft_ms = BTreeMap::new();
    let mut output_tokens = BTreeMap::new();
    let mut finish = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for row in rows {
        for (into, from) in [
            (&mut duration_ms, &row.duration_ms),
            (&mut ttft_ms, &row.ttft_ms),
            (&mut output_tokens, &row.output_tokens_hist),
        ] {
            for (b, c) in from {
                *into.entry(*b).or_insert(0) += c;
            }
        }
        for (into, from) in [
            (&mut finish, &row.finish_reasons),
            (&mut errors, &row.error_types),
        ] {
            for (label, c) in from {
                *into.entry(label.clone()).or_insert(0) += c;
            }
        }
    }
    ModelSums {
        duration_ms,
        ttft_ms,
        output_tokens,
        finish_reasons: top(finish),
        errors: top(errors),
    }
}

/// The lower bound of the newest window of whole minutes that holds `wanted` calls (as
/// `count` counts them per minute), or the range's start: where the recent-calls list needs to
/// look, so that it reads a minute of spans and not the hour.
pub fn recent_window(r: &Request, per_minute: &[(i64, u64)], wanted: u64) -> i64 {
    let mut minutes: Vec<(i64, u64)> = per_minute.to_vec();
    minutes.sort_by_key(|m| std::cmp::Reverse(m.0));
    let mut seen = 0;
    for (minute, calls) in minutes {
        seen += calls;
        if seen >= wanted {
            return minute.max(r.lo_ns());
        }
    }
    r.lo_ns()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Tab;
    use std::time::Duration;
    use vigil_schemas::rollup::bucket_of;

    fn request(range_secs: u64) -> Request {
        let mut r = Request::now(Tab::Overview, Duration::from_secs(range_secs));
        r.now_ns = 1_700_000_040 * 1_000_000_000 + 30_000_000_000; // 30 s into a minute
        r
    }

    fn row(minute_ns: i64, model: &str, calls: u64, latency_ms: f64) -> MinuteRow {
        MinuteRow {
            minute_ns,
            service: "api".into(),
            model: model.into(),
            calls,
            errors: calls / 10,
            input_tokens: calls * 100,
            output_tokens: calls * 10,
            cost_usd: calls as f64 * 0.001,
            first_ns: minute_ns,
            duration_ms: BTreeMap::from([(bucket_of(latency_ms), calls as i64)]),
            ttft_ms: BTreeMap::from([(bucket_of(latency_ms / 4.0), calls as i64)]),
            ..MinuteRow::default()
        }
    }

    #[test]
    fn golden_signals_add_minutes_up_and_read_quantiles_from_histograms() {
        let r = request(3600);
        let last = minute_floor(r.now_ns);
        let rows = vec![
            row(last - MINUTE_NS, "a", 90, 100.0),
            row(last, "a", 20, 2_000.0),
            row(last, "b", 100, 100.0),
        ];
        let g = golden(&r, &rows);
        assert_eq!(g.calls, 210);
        // The first call was 90 s before now: the rate is over those 90 s, not the hour.
        assert!((g.requests_per_s - 210.0 / 90.0).abs() < 1e-9);
        assert!((g.p50_s.unwrap() - 0.1).abs() < 0.1 * 0.045);
        assert!((g.p95_s.unwrap() - 2.0).abs() < 2.0 * 0.045);
        assert!((g.error_rate.unwrap() - 21.0 / 210.0).abs() < 1e-9);
        let m = models(&r, &rows);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].model.as_str(), m[0].calls), ("a", 110));
        assert!((m[1].p95_s.unwrap() - 0.1).abs() < 0.0045);
        assert_eq!(golden(&r, &[]), Golden::default());
    }

    #[test]
    fn trend_slots_are_minutes_or_shares_of_them() {
        // An hour: one slot per minute.
        let r = request(3600);
        let last = minute_floor(r.now_ns);
        let t = trend(
            &r,
            &[
                row(last, "a", 7, 100.0),
                row(last - MINUTE_NS, "a", 3, 100.0),
            ],
        );
        assert_eq!(&t.calls[TREND_BUCKETS - 2..], &[3, 7]);
        assert!(t.p95_ms[TREND_BUCKETS - 1].abs_diff(100) <= 5);
        // Five minutes, 5-second slots: the minute before the current one is spread over its
        // twelve slots, and its calls add up.
        let r = request(300);
        let t = trend(&r, &[row(last - MINUTE_NS, "a", 25, 100.0)]);
        let spread: u64 = t.calls.iter().sum();
        assert_eq!(spread, 25);
        assert_eq!(t.calls.iter().filter(|c| **c > 0).count(), 12);
    }

    #[test]
    fn histograms_fold_into_powers_of_two() {
        let h = BTreeMap::from([
            (bucket_of(0.0), 1),
            (bucket_of(0.5), 2),
            (bucket_of(1.5), 3),
            (bucket_of(1.9), 4),
            (bucket_of(300.0), 5),
        ]);
        assert_eq!(
            octaves(&h),
            BTreeMap::from([(0, 1 + 2 + 3 + 4), (8, 5)]),
            "under 2 in the first octave, 300 in [256, 512)"
        );
    }

    #[test]
    fn the_recent_window_holds_enough_calls_or_is_the_whole_range() {
        let r = request(3600);
        let last = minute_floor(r.now_ns);
        let minutes = [
            (last, 300),
            (last - MINUTE_NS, 300),
            (last - 2 * MINUTE_NS, 300),
        ];
        assert_eq!(recent_window(&r, &minutes, 500), last - MINUTE_NS);
        assert_eq!(recent_window(&r, &minutes, 100), last);
        assert_eq!(recent_window(&r, &minutes, 10_000), r.lo_ns());
        assert_eq!(recent_window(&r, &[], 500), r.lo_ns());
    }
}
