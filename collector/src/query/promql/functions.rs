//! PromQL's functions and aggregations, as Prometheus 2 computes them.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use promql_parser::label::MatchOp;
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{Call, Expr, LabelModifier};

use super::PromError;
use super::eval::{
    Evaluator, Output, RangeValue, StepSeries, Value, labels_from, type_name, without_name,
};
use super::names::{BUCKET_LABEL, NAME_LABEL, float_label};
use super::select::{FnvMap, Labels, label};

fn bad(message: impl Into<String>) -> PromError {
    PromError::BadData(message.into())
}

fn arg(c: &Call, i: usize) -> Result<&Expr, PromError> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| bad(format!("{} expects more arguments", c.func.name)))
}

fn vector_arg(
    e: &Evaluator,
    c: &Call,
    i: usize,
    times: &[i64],
) -> Result<Vec<StepSeries>, PromError> {
    match e.eval(arg(c, i)?, times)? {
        Value::Vector(v) => Ok(v),
        other => Err(bad(format!(
            "expected type instant vector in call to function {:?}, got {}",
            c.func.name,
            type_name(&other)
        ))),
    }
}

fn scalar_arg(e: &Evaluator, c: &Call, i: usize, times: &[i64]) -> Result<Vec<f64>, PromError> {
    match e.eval(arg(c, i)?, times)? {
        Value::Scalar(v) => Ok(v),
        other => Err(bad(format!(
            "expected type scalar in call to function {:?}, got {}",
            c.func.name,
            type_name(&other)
        ))),
    }
}

fn string_arg(c: &Call, i: usize) -> Result<String, PromError> {
    match unparen(arg(c, i)?) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => Err(bad(format!(
            "expected a string literal in call to function {:?}, got {other}",
            c.func.name
        ))),
    }
}

fn unparen(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// Applies `f` to every sample, dropping the metric name.
fn map_samples(series: Vec<StepSeries>, f: impl Fn(f64, usize) -> f64) -> Vec<StepSeries> {
    series
        .into_iter()
        .map(|s| StepSeries {
            labels: without_name(&s.labels),
            values: s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|x| f(x, i)))
                .collect(),
            sample_times: None,
        })
        .collect()
}

/// Applies `f` to each window of a range vector; `keep_name` for `last_over_time`.
fn over_windows(
    range: &RangeValue,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)], usize) -> Option<f64>,
) -> Result<Vec<StepSeries>, PromError> {
    let steps = range.ends.len();
    let mut output = Output::new(steps);
    for s in 0..range.series.len() {
        let labels = if keep_name {
            range.series[s].labels.clone()
        } else {
            without_name(&range.series[s].labels)
        };
        for i in 0..steps {
            let window = range.window(s, i);
            if window.is_empty() {
                continue;
            }
            if let Some(v) = f(window, i) {
                output.set(labels.clone(), i, v)?;
            }
        }
    }
    Ok(output.finish())
}

/// Prometheus' `extrapolatedRate`: the change over a window, corrected for counter resets and
/// extrapolated towards the window's ends.
fn extrapolated_rate(
    window: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let (first_t, first_v) = window[0];
    let (last_t, last_v) = window[window.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut previous = first_v;
        for &(_, v) in &window[1..] {
            if v < previous {
                result += previous;
            }
            previous = v;
        }
    }
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average_gap = sampled / (window.len() - 1) as f64;
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_gap / 2.0
    };
    // In Prometheus' order of operations, so that ties (topk) break the same way.
    let mut factor = interval / sampled;
    if is_rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_delta(window: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let (last_t, last_v) = window[window.len() - 1];
    let (previous_t, previous_v) = window[window.len() - 2];
    let mut result = if is_rate && last_v < previous_v {
        last_v
    } else {
        last_v - previous_v
    };
    let interval = last_t - previous_t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least squares over a window, times in seconds from `intercept_time`: (slope, intercept).
fn linear_regression(window: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let n = window.len() as f64;
    let (mut sum_x, mut sum_y, mut sum_xy, mut sum_x2) = (0.0, 0.0, 0.0, 0.0);
    let first = window[0].1;
    let mut constant = true;
    for &(t, v) in window {
        if v != first {
            constant = false;
        }
        let x = (t - intercept_time) as f64 / 1000.0;
        sum_x += x;
        sum_y += v;
        sum_xy += x * v;
        sum_x2 += x * x;
    }
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Population variance, by Welford's method.
fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    m2 / count
}

/// Prometheus' `bucketQuantile` over (upper bound, cumulative count) pairs.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one; counts never decrease.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (bound, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == bound => last.1 += count,
            _ => merged.push((bound, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged.partition_point(|(_, count)| *count < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn holt_winters(window: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| {
        if i == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        }
    };
    let (mut s0, mut s1) = (0.0, window[0].1);
    let mut b = window[1].1 - window[0].1;
    for (i, &(_, v)) in window.iter().enumerate().skip(1) {
        let x = sf * v;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

fn date_part(series: Vec<StepSeries>, f: impl Fn(chrono::DateTime<Utc>) -> f64) -> Vec<StepSeries> {
    map_samples(series, |v, _| {
        if v.is_nan() || v.is_infinite() {
            return f64::NAN;
        }
        match Utc.timestamp_opt(v.floor() as i64, 0).single() {
            Some(t) => f(t),
            None => f64::NAN,
        }
    })
}

fn days_in_month(t: chrono::DateTime<Utc>) -> f64 {
    let (y, m) = (t.year(), t.month());
    let next = if m == 12 {
        Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(y, m + 1, 1, 0, 0, 0)
    };
    let this = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0);
    match (this.single(), next.single()) {
        (Some(a), Some(b)) => (b - a).num_days() as f64,
        _ => f64::NAN,
    }
}

/// A function of one window of samples, given the window's start and end.
type WindowFn = dyn Fn(&[(i64, f64)], i64, i64) -> Option<f64>;

/// Evaluates a function call.
pub fn call(e: &Evaluator, c: &Call, times: &[i64]) -> Result<Value, PromError> {
    let name = c.func.name;
    let steps = times.len();
    let range_fn = |f: &WindowFn, keep_name: bool| -> Result<Value, PromError> {
        let range = e.range(arg(c, 0)?, times)?;
        let r = range.range_ms;
        let ends = range.ends.clone();
        Ok(Value::Vector(over_windows(&range, keep_name, |w, i| {
            f(w, ends[i] - r, ends[i])
        })?))
    };
    match name {
        "rate" => range_fn(&|w, s, e| extrapolated_rate(w, s, e, true, true), false),
        "increase" => range_fn(&|w, s, e| extrapolated_rate(w, s, e, true, false), false),
        "delta" => range_fn(&|w, s, e| extrapolated_rate(w, s, e, false, false), false),
        "irate" => range_fn(&|w, _, _| instant_delta(w, true), false),
        "idelta" => range_fn(&|w, _, _| instant_delta(w, false), false),
        "resets" => range_fn(
            &|w, _, _| Some(w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64),
            false,
        ),
        "changes" => range_fn(
            &|w, _, _| {
                Some(
                    w.windows(2)
                        .filter(|p| p[1].1 != p[0].1 && !(p[1].1.is_nan() && p[0].1.is_nan()))
                        .count() as f64,
                )
            },
            false,
        ),
        "avg_over_time" => range_fn(
            &|w, _, _| Some(w.iter().map(|s| s.1).sum::<f64>() / w.len() as f64),
            false,
        ),
        "sum_over_time" => range_fn(&|w, _, _| Some(w.iter().map(|s| s.1).sum()), false),
        "count_over_time" => range_fn(&|w, _, _| Some(w.len() as f64), false),
        "present_over_time" => range_fn(&|_, _, _| Some(1.0), false),
        "last_over_time" => range_fn(&|w, _, _| w.last().map(|s| s.1), true),
        "min_over_time" => range_fn(
            &|w, _, _| {
                Some(w.iter().map(|s| s.1).fold(f64::NAN, |acc, v| {
                    if acc.is_nan() || v < acc { v } else { acc }
                }))
            },
            false,
        ),
        "max_over_time" => range_fn(
            &|w, _, _| {
                Some(w.iter().map(|s| s.1).fold(f64::NAN, |acc, v| {
                    if acc.is_nan() || v > acc { v } else { acc }
                }))
            },
            false,
        ),
        "stddev_over_time" => range_fn(
            &|w, _, _| Some(variance(w.iter().map(|s| s.1)).sqrt()),
            false,
        ),
        "stdvar_over_time" => range_fn(&|w, _, _| Some(variance(w.iter().map(|s| s.1))), false),
        "deriv" => range_fn(
            &|w, _, _| (w.len() >= 2).then(|| linear_regression(w, w[0].0).0),
            false,
        ),
        "quantile_over_time" => {
            let q = scalar_arg(e, c, 0, times)?;
            let range = e.range(arg(c, 1)?, times)?;
            Ok(Value::Vector(over_windows(&range, false, |w, i| {
                let mut values: Vec<f64> = w.iter().map(|s| s.1).collect();
                Some(quantile(q[i], &mut values))
            })?))
        }
        "predict_linear" => {
            let range = e.range(arg(c, 0)?, times)?;
            let seconds = scalar_arg(e, c, 1, times)?;
            let ends = range.ends.clone();
            Ok(Value::Vector(over_windows(&range, false, |w, i| {
                (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, ends[i]);
                    slope * seconds[i] + intercept
                })
            })?))
        }
        "holt_winters" | "double_exponential_smoothing" => {
            let range = e.range(arg(c, 0)?, times)?;
            let sf = scalar_arg(e, c, 1, times)?;
            let tf = scalar_arg(e, c, 2, times)?;
            for (s, t) in sf.iter().zip(&tf) {
                if !(*s > 0.0 && *s < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {s}"
                    )));
                }
                if !(*t > 0.0 && *t < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {t}"
                    )));
                }
            }
            Ok(Value::Vector(over_windows(&range, false, |w, i| {
                holt_winters(w, sf[i], tf[i])
            })?))
        }
        "absent_over_time" => {
            let range = e.range(arg(c, 0)?, times)?;
            let labels = absent_labels(arg(c, 0)?);
            let values: Vec<Option<f64>> = (0..steps)
                .map(|i| {
                    let any = (0..range.series.len()).any(|s| !range.window(s, i).is_empty());
                    (!any).then_some(1.0)
                })
                .collect();
            Ok(Value::Vector(present_only(labels, values)))
        }
        "absent" => {
            let series = vector_arg(e, c, 0, times)?;
            let labels = absent_labels(arg(c, 0)?);
            let values: Vec<Option<f64>> = (0..steps)
                .map(|i| (!series.iter().any(|s| s.values[i].is_some())).then_some(1.0))
                .collect();
            Ok(Value::Vector(present_only(labels, values)))
        }
        "time" => Ok(Value::Scalar(
            times.iter().map(|t| *t as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Value::Scalar(vec![std::f64::consts::PI; steps])),
        "vector" => {
            let s = scalar_arg(e, c, 0, times)?;
            Ok(Value::Vector(vec![StepSeries {
                labels: labels_from(Vec::new()),
                values: s.into_iter().map(Some).collect(),
                sample_times: None,
            }]))
        }
        "scalar" => {
            let series = vector_arg(e, c, 0, times)?;
            Ok(Value::Scalar(
                (0..steps)
                    .map(|i| {
                        let mut present = series.iter().filter_map(|s| s.values[i]);
                        match (present.next(), present.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let series = match unparen(arg(c, 0)?) {
                Expr::VectorSelector(vs) => e.select(vs, times, true)?,
                _ => vector_arg(e, c, 0, times)?,
            };
            Ok(Value::Vector(
                series
                    .into_iter()
                    .map(|s| StepSeries {
                        labels: without_name(&s.labels),
                        values: s
                            .values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| {
                                v.map(|_| {
                                    let t = s.sample_times.as_ref().map_or(times[i], |st| st[i]);
                                    t as f64 / 1000.0
                                })
                            })
                            .collect(),
                        sample_times: None,
                    })
                    .collect(),
            ))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            Ok(Value::Vector(map_samples(
                vector_arg(e, c, 0, times)?,
                |v, _| f(v),
            )))
        }
        "round" => {
            let series = vector_arg(e, c, 0, times)?;
            let to = if c.args.args.len() > 1 {
                scalar_arg(e, c, 1, times)?
            } else {
                vec![1.0; steps]
            };
            Ok(Value::Vector(map_samples(series, |v, i| {
                let inverse = 1.0 / to[i];
                (v * inverse + 0.5).floor() / inverse
            })))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let series = vector_arg(e, c, 0, times)?;
            let a = scalar_arg(e, c, 1, times)?;
            let (min, max) = match name {
                "clamp" => (a, scalar_arg(e, c, 2, times)?),
                "clamp_min" => (a, vec![f64::INFINITY; steps]),
                _ => (vec![f64::NEG_INFINITY; steps], a),
            };
            let mut out = map_samples(series, |v, i| {
                if v.is_nan() {
                    v
                } else {
                    v.max(min[i]).min(max[i])
                }
            });
            // `clamp` with max below min returns nothing at that step.
            for s in &mut out {
                for (i, v) in s.values.iter_mut().enumerate() {
                    if max[i] < min[i] {
                        *v = None;
                    }
                }
            }
            out.retain(|s| s.values.iter().any(Option::is_some));
            Ok(Value::Vector(out))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let series = if c.args.args.is_empty() {
                vec![StepSeries {
                    labels: labels_from(Vec::new()),
                    values: times.iter().map(|t| Some(*t as f64 / 1000.0)).collect(),
                    sample_times: None,
                }]
            } else {
                vector_arg(e, c, 0, times)?
            };
            let f: fn(chrono::DateTime<Utc>) -> f64 = match name {
                "minute" => |t| t.minute() as f64,
                "hour" => |t| t.hour() as f64,
                "day_of_week" => |t| t.weekday().num_days_from_sunday() as f64,
                "day_of_month" => |t| t.day() as f64,
                "day_of_year" => |t| t.ordinal() as f64,
                "days_in_month" => days_in_month,
                "month" => |t| t.month() as f64,
                _ => |t| t.year() as f64,
            };
            Ok(Value::Vector(date_part(series, f)))
        }
        "sort" | "sort_desc" => {
            let mut series = vector_arg(e, c, 0, times)?;
            // Only an instant query's order is visible; range results are ordered by labels.
            let descending = name == "sort_desc";
            series.sort_by(|a, b| {
                let (x, y) = (
                    a.values[0].unwrap_or(f64::NAN),
                    b.values[0].unwrap_or(f64::NAN),
                );
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if descending => y.total_cmp(&x),
                    _ => x.total_cmp(&y),
                }
            });
            Ok(Value::Vector(series))
        }
        "label_replace" => {
            let series = vector_arg(e, c, 0, times)?;
            let dst = string_arg(c, 1)?;
            let replacement = string_arg(c, 2)?;
            let src = string_arg(c, 3)?;
            let pattern = string_arg(c, 4)?;
            let regex = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                PromError::Execution(format!(
                    "invalid regular expression in label_replace(): {pattern}: {e}"
                ))
            })?;
            if !valid_label_name(&dst) {
                return Err(PromError::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            relabel(series, steps, |labels| {
                let value = label(labels, &src);
                let captures = regex.captures(value)?;
                let mut out = String::new();
                captures.expand(&replacement, &mut out);
                Some((dst.clone(), out))
            })
        }
        "label_join" => {
            let series = vector_arg(e, c, 0, times)?;
            let dst = string_arg(c, 1)?;
            let separator = string_arg(c, 2)?;
            let sources: Vec<String> = (3..c.args.args.len())
                .map(|i| string_arg(c, i))
                .collect::<Result<_, _>>()?;
            if !valid_label_name(&dst) {
                return Err(PromError::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            relabel(series, steps, |labels| {
                let joined: Vec<&str> = sources.iter().map(|s| label(labels, s)).collect();
                Some((dst.clone(), joined.join(&separator)))
            })
        }
        "histogram_quantile" => {
            let q = scalar_arg(e, c, 0, times)?;
            let series = vector_arg(e, c, 1, times)?;
            let mut groups: FnvMap<Labels, Vec<(f64, usize)>> = FnvMap::default();
            for (n, s) in series.iter().enumerate() {
                let Ok(bound) = parse_bound(label(&s.labels, BUCKET_LABEL)) else {
                    continue;
                };
                let key: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != BUCKET_LABEL && k != NAME_LABEL)
                    .cloned()
                    .collect();
                groups.entry(labels_from(key)).or_default().push((bound, n));
            }
            let mut output = Output::new(steps);
            for (labels, members) in groups {
                for (i, &phi) in q.iter().enumerate() {
                    let buckets: Vec<(f64, f64)> = members
                        .iter()
                        .filter_map(|(bound, n)| series[*n].values[i].map(|v| (*bound, v)))
                        .collect();
                    if buckets.is_empty() {
                        continue;
                    }
                    output.set(labels.clone(), i, bucket_quantile(phi, buckets))?;
                }
            }
            Ok(Value::Vector(output.finish()))
        }
        other => Err(bad(format!(
            "function {other:?} is not supported by vigil yet"
        ))),
    }
}

fn parse_bound(text: &str) -> Result<f64, ()> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse::<f64>().map_err(|_| ()),
    }
}

fn valid_label_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sets one label on every series (an empty value removes it); two series that end up with one
/// label set at one step are an error, as in Prometheus.
fn relabel(
    series: Vec<StepSeries>,
    steps: usize,
    change: impl Fn(&[(String, String)]) -> Option<(String, String)>,
) -> Result<Value, PromError> {
    let mut output = Output::new(steps);
    for s in series {
        let labels = match change(&s.labels) {
            Some((name, value)) => {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != name)
                    .cloned()
                    .collect();
                if !value.is_empty() {
                    labels.push((name, value));
                }
                labels_from(labels)
            }
            None => s.labels.clone(),
        };
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                output.set(labels.clone(), i, *v)?;
            }
        }
    }
    Ok(Value::Vector(output.finish()))
}

/// The labels `absent()` gives: the selector's equality matchers, except a label named twice.
fn absent_labels(expr: &Expr) -> Labels {
    let vs = match unparen(expr) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let Some(vs) = vs else {
        return labels_from(Vec::new());
    };
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &vs.matchers.matchers {
        *counts.entry(m.name.as_str()).or_default() += 1;
    }
    let labels = vs
        .matchers
        .matchers
        .iter()
        .filter(|m| m.op == MatchOp::Equal && m.name != NAME_LABEL && counts[m.name.as_str()] == 1)
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    labels_from(labels)
}

fn present_only(labels: Labels, values: Vec<Option<f64>>) -> Vec<StepSeries> {
    if values.iter().all(Option::is_none) {
        return Vec::new();
    }
    vec![StepSeries {
        labels,
        values,
        sample_times: None,
    }]
}

/// The `k` samples `topk` (or `bottomk`) keeps, chosen with the same binary heap and the same
/// comparisons as Prometheus (Go's `container/heap`), so that ties break as they do there.
fn top_k(samples: impl Iterator<Item = (usize, f64)>, k: usize, top: bool) -> Vec<(usize, f64)> {
    // The heap's root is the sample to evict first: the smallest for topk, the largest for
    // bottomk; NaN before anything.
    let less = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
    let up = |heap: &mut Vec<(usize, f64)>, mut j: usize| {
        while j > 0 {
            let parent = (j - 1) / 2;
            if !less(heap[j].1, heap[parent].1) {
                break;
            }
            heap.swap(parent, j);
            j = parent;
        }
    };
    let down = |heap: &mut Vec<(usize, f64)>, start: usize| -> bool {
        let n = heap.len();
        let mut i = start;
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let mut j = left;
            if left + 1 < n && less(heap[left + 1].1, heap[left].1) {
                j = left + 1;
            }
            if !less(heap[j].1, heap[i].1) {
                break;
            }
            heap.swap(i, j);
            i = j;
        }
        i > start
    };
    let mut heap: Vec<(usize, f64)> = Vec::new();
    for (n, v) in samples {
        if heap.len() < k {
            heap.push((n, v));
            let last = heap.len() - 1;
            up(&mut heap, last);
            continue;
        }
        let root = heap[0].1;
        let replaces = if top { root < v } else { root > v } || (root.is_nan() && !v.is_nan());
        if replaces {
            heap[0] = (n, v);
            if k > 1 && !down(&mut heap, 0) {
                up(&mut heap, 0);
            }
        }
    }
    heap
}

/// The labels of an aggregation's group.
fn group_labels(labels: &[(String, String)], modifier: Option<&LabelModifier>) -> Labels {
    let kept: Vec<(String, String)> = match modifier {
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.contains(k))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k != NAME_LABEL && !without.labels.contains(k))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    labels_from(kept)
}

/// Evaluates an aggregation.
pub fn aggregate(
    op: TokenType,
    modifier: Option<&LabelModifier>,
    series: Vec<StepSeries>,
    param: Option<Value>,
    steps: usize,
) -> Result<Value, PromError> {
    let scalar_param = |what: &str| -> Result<Vec<f64>, PromError> {
        match &param {
            Some(Value::Scalar(v)) => Ok(v.clone()),
            _ => Err(bad(format!("{what} expects a scalar parameter"))),
        }
    };
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut index: FnvMap<Labels, usize> = FnvMap::default();
    for (n, s) in series.iter().enumerate() {
        let key = group_labels(&s.labels, modifier);
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(n);
    }
    let mut output = Output::new(steps);
    match op.id() {
        token::T_TOPK | token::T_BOTTOMK => {
            let k = scalar_param("topk/bottomk")?;
            let top = op.id() == token::T_TOPK;
            let mut out: Vec<StepSeries> = series
                .iter()
                .map(|s| StepSeries {
                    labels: s.labels.clone(),
                    values: vec![None; steps],
                    sample_times: None,
                })
                .collect();
            for (_, members) in &groups {
                for i in 0..steps {
                    let k = if k[i].is_nan() { 0.0 } else { k[i].floor() };
                    if k < 1.0 {
                        continue;
                    }
                    let present = members
                        .iter()
                        .filter_map(|&n| series[n].values[i].map(|v| (n, v)));
                    let kept = top_k(present, k as usize, top);
                    for (n, v) in kept {
                        out[n].values[i] = Some(v);
                    }
                }
            }
            if steps == 1 {
                // An instant query shows the top first, as Prometheus orders it.
                out.retain(|s| s.values[0].is_some());
                out.sort_by(|a, b| {
                    let (x, y) = (
                        a.values[0].unwrap_or(f64::NAN),
                        b.values[0].unwrap_or(f64::NAN),
                    );
                    if top {
                        y.total_cmp(&x)
                    } else {
                        x.total_cmp(&y)
                    }
                });
            }
            out.retain(|s| s.values.iter().any(Option::is_some));
            return Ok(Value::Vector(out));
        }
        token::T_COUNT_VALUES => {
            let name = match &param {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(bad("count_values expects a string parameter")),
            };
            if !valid_label_name(&name) {
                return Err(bad(format!("invalid label name {name:?}")));
            }
            for (labels, members) in &groups {
                for i in 0..steps {
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for &n in members {
                        if let Some(v) = series[n].values[i] {
                            let text = float_label(v);
                            match counts.iter_mut().find(|(t, _)| *t == text) {
                                Some(c) => c.1 += 1.0,
                                None => counts.push((text, 1.0)),
                            }
                        }
                    }
                    for (text, count) in counts {
                        let mut l: Vec<(String, String)> =
                            labels.iter().filter(|(k, _)| *k != name).cloned().collect();
                        l.push((name.clone(), text));
                        output.set(labels_from(l), i, count)?;
                    }
                }
            }
            return Ok(Value::Vector(output.finish()));
        }
        _ => {}
    }
    let q = if op.id() == token::T_QUANTILE {
        scalar_param("quantile")?
    } else {
        Vec::new()
    };
    for (labels, members) in &groups {
        for i in 0..steps {
            let values: Vec<f64> = members
                .iter()
                .filter_map(|&n| series[n].values[i])
                .collect();
            if values.is_empty() {
                continue;
            }
            let n = values.len() as f64;
            let v = match op.id() {
                token::T_SUM => values.iter().sum(),
                token::T_AVG => values.iter().sum::<f64>() / n,
                token::T_COUNT => n,
                token::T_GROUP => 1.0,
                token::T_MIN => values.iter().copied().fold(f64::NAN, |acc, v| {
                    if acc.is_nan() || v < acc { v } else { acc }
                }),
                token::T_MAX => values.iter().copied().fold(f64::NAN, |acc, v| {
                    if acc.is_nan() || v > acc { v } else { acc }
                }),
                token::T_STDDEV => variance(values.iter().copied()).sqrt(),
                token::T_STDVAR => variance(values.iter().copied()),
                token::T_QUANTILE => {
                    let mut values = values;
                    quantile(q.get(i).copied().unwrap_or(f64::NAN), &mut values)
                }
                _ => {
                    return Err(bad(format!(
                        "aggregation {op} is not supported by vigil yet"
                    )));
                }
            };
            output.set(labels.clone(), i, v)?;
        }
    }
    Ok(Value::Vector(output.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_as_prometheus_does() {
        // A counter at 1/s sampled every 15 s over a 60 s window ending on a sample.
        let window: Vec<(i64, f64)> = (0..5).map(|i| (i * 15_000, i as f64 * 15.0)).collect();
        let rate = extrapolated_rate(&window, 0, 60_000, true, true).unwrap();
        assert!((rate - 1.0).abs() < 1e-9, "{rate}");
        // A reset counts the value before it.
        let reset = [(0, 10.0), (15_000, 20.0), (30_000, 5.0)];
        let increase = extrapolated_rate(&reset, 0, 30_000, true, false).unwrap();
        assert!((increase - 15.0).abs() < 1e-9, "{increase}");
    }

    #[test]
    fn bucket_quantiles_interpolate_within_the_bucket() {
        let buckets = vec![(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, buckets.clone()) - 0.3).abs() < 1e-9);
        assert_eq!(bucket_quantile(1.0, buckets.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).is_nan());
        assert_eq!(bucket_quantile(-1.0, buckets), f64::NEG_INFINITY);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [5.0, 1.0]), 1.0);
        assert!(quantile(0.5, &mut []).is_nan());
    }
}
