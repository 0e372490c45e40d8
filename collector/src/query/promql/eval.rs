//! PromQL evaluation over the series [`super::select`] read, with Prometheus 2's semantics: every
//! node is evaluated at all the query's steps at once (a series' labels do not change from step to
//! step, so grouping and vector matching are worked out once per series, not once per step).

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinModifier, BinaryExpr, Call, Expr, LabelModifier, Offset,
    SubqueryExpr, VectorMatchCardinality, VectorSelector,
};

use super::PromError;
use super::functions;
use super::names::NAME_LABEL;
use super::select::{FnvMap, Labels, RawSeries, is_stale, label};

/// One series of an instant vector at every step: `None` where it has no sample.
#[derive(Debug, Clone)]
pub struct StepSeries {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
    /// The sample timestamps, where they differ from the step times (`timestamp()` reads them).
    pub sample_times: Option<Vec<i64>>,
}

/// A range vector at every step: each series' samples, and the window `[end - range, end]` of
/// each step.
#[derive(Debug, Clone)]
pub struct RangeValue {
    pub series: Vec<RawSeries>,
    pub ends: Vec<i64>,
    pub range_ms: i64,
}

impl RangeValue {
    /// The samples of series `s` in the window of step `i` (both ends included, as in
    /// Prometheus 2).
    pub fn window(&self, s: usize, i: usize) -> &[(i64, f64)] {
        let samples = &self.series[s].samples;
        let end = self.ends[i];
        let start = end - self.range_ms;
        let lo = samples.partition_point(|(t, _)| *t < start);
        let hi = samples.partition_point(|(t, _)| *t <= end);
        &samples[lo..hi.max(lo)]
    }
}

/// What an expression evaluates to.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    Range(RangeValue),
    String(String),
}

/// The key under which a selector's series are fetched: its matchers, in groups (a selector
/// with `or` has several).
pub fn selector_groups(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let name = vs
        .name
        .as_ref()
        .map(|n| Matcher::new(MatchOp::Equal, NAME_LABEL, n));
    let mut groups: Vec<Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    for group in &mut groups {
        if let Some(name) = &name {
            group.push(name.clone());
        }
    }
    groups
}

/// A stable text key for a selector's matchers.
pub fn selector_key(vs: &VectorSelector) -> String {
    selector_groups(vs)
        .iter()
        .map(|g| {
            let mut parts: Vec<String> = g.iter().map(|m| format!("{m:?}")).collect();
            parts.sort();
            parts.join(",")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// What one query evaluates over.
pub struct Context {
    /// The query's own start and end (`start()` and `end()` of the `@` modifier).
    pub start: i64,
    pub end: i64,
    pub lookback_ms: i64,
    /// The step of a subquery that names none.
    pub default_subquery_step_ms: i64,
}

impl Context {
    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            Some(AtModifier::Start) => Some(self.start),
            Some(AtModifier::End) => Some(self.end),
            Some(AtModifier::At(time)) => Some(match time.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            }),
            None => None,
        }
    }

    /// The times a node's selectors read, for steps between `lo` and `hi`: each selector's key
    /// with the window of samples it needs.
    pub fn plan(
        &self,
        expr: &Expr,
        lo: i64,
        hi: i64,
        out: &mut HashMap<String, (VectorSelector, i64, i64)>,
    ) {
        let mut need = |vs: &VectorSelector, from: i64, to: i64| {
            let entry = out
                .entry(selector_key(vs))
                .or_insert_with(|| (vs.clone(), from, to));
            entry.1 = entry.1.min(from);
            entry.2 = entry.2.max(to);
        };
        match expr {
            Expr::VectorSelector(vs) => {
                let (lo, hi) = self.shift(lo, hi, &vs.at, &vs.offset);
                need(vs, lo - self.lookback_ms, hi);
            }
            Expr::MatrixSelector(ms) => {
                let (lo, hi) = self.shift(lo, hi, &ms.vs.at, &ms.vs.offset);
                need(&ms.vs, lo - ms.range.as_millis() as i64, hi);
            }
            Expr::Subquery(sq) => {
                let (lo, hi) = self.shift(lo, hi, &sq.at, &sq.offset);
                self.plan(&sq.expr, lo - sq.range.as_millis() as i64, hi, out);
            }
            Expr::Aggregate(a) => {
                self.plan(&a.expr, lo, hi, out);
                if let Some(p) = &a.param {
                    self.plan(p, lo, hi, out);
                }
            }
            Expr::Unary(u) => self.plan(&u.expr, lo, hi, out),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo, hi, out);
                self.plan(&b.rhs, lo, hi, out);
            }
            Expr::Paren(p) => self.plan(&p.expr, lo, hi, out),
            Expr::Call(c) => {
                for arg in &c.args.args {
                    self.plan(arg, lo, hi, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn shift(
        &self,
        lo: i64,
        hi: i64,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
    ) -> (i64, i64) {
        let offset = offset_ms(offset);
        match self.at_ms(at) {
            Some(at) => (at - offset, at - offset),
            None => (lo - offset, hi - offset),
        }
    }
}

/// Evaluates expressions over fetched series.
pub struct Evaluator<'a> {
    pub context: &'a Context,
    pub data: &'a HashMap<String, Vec<RawSeries>>,
    /// The most points (series × steps) one node may hold: the sample budget of the query.
    pub max_points: u64,
}

fn drop_name(labels: &Labels) -> Labels {
    if labels.iter().any(|(k, _)| k == NAME_LABEL) {
        labels
            .iter()
            .filter(|(k, _)| k != NAME_LABEL)
            .cloned()
            .collect::<Vec<_>>()
            .into()
    } else {
        labels.clone()
    }
}

/// Collects output series by label set, refusing two values for one label set at one step.
pub struct Output {
    steps: usize,
    index: FnvMap<Labels, usize>,
    series: Vec<StepSeries>,
}

impl Output {
    pub fn new(steps: usize) -> Output {
        Output {
            steps,
            index: FnvMap::default(),
            series: Vec::new(),
        }
    }

    pub fn set(&mut self, labels: Labels, step: usize, value: f64) -> Result<(), PromError> {
        let steps = self.steps;
        let i = *self.index.entry(labels.clone()).or_insert_with(|| {
            self.series.push(StepSeries {
                labels,
                values: vec![None; steps],
                sample_times: None,
            });
            self.series.len() - 1
        });
        let slot = &mut self.series[i].values[step];
        if slot.is_some() {
            return Err(PromError::Execution(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
        *slot = Some(value);
        Ok(())
    }

    pub fn finish(self) -> Vec<StepSeries> {
        self.series
    }
}

/// The comparison and arithmetic of two samples: the value, and whether a comparison holds.
fn binop(op: u16, lhs: f64, rhs: f64) -> (f64, bool) {
    match op {
        token::T_ADD => (lhs + rhs, true),
        token::T_SUB => (lhs - rhs, true),
        token::T_MUL => (lhs * rhs, true),
        token::T_DIV => (lhs / rhs, true),
        token::T_MOD => (lhs % rhs, true),
        token::T_POW => (lhs.powf(rhs), true),
        token::T_ATAN2 => (lhs.atan2(rhs), true),
        token::T_EQLC => (lhs, lhs == rhs),
        token::T_NEQ => (lhs, lhs != rhs),
        token::T_GTR => (lhs, lhs > rhs),
        token::T_LSS => (lhs, lhs < rhs),
        token::T_GTE => (lhs, lhs >= rhs),
        token::T_LTE => (lhs, lhs <= rhs),
        _ => (f64::NAN, false),
    }
}

fn is_comparison(op: TokenType) -> bool {
    op.is_comparison_operator()
}

/// Arithmetic drops the metric name; Prometheus 2 keeps it for `atan2`.
fn drops_name(op: TokenType) -> bool {
    matches!(
        op.id(),
        token::T_ADD | token::T_SUB | token::T_MUL | token::T_DIV | token::T_MOD | token::T_POW
    )
}

impl Evaluator<'_> {
    /// Evaluates `expr` at each of `times` (milliseconds, ascending).
    pub fn eval(&self, expr: &Expr, times: &[i64]) -> Result<Value, PromError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; times.len()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, times),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.select(vs, times, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                Ok(Value::Range(self.range(expr, times)?))
            }
            Expr::Unary(u) => check_duplicates(match self.eval(&u.expr, times)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(series) => Ok(Value::Vector(
                    series
                        .into_iter()
                        .map(|s| StepSeries {
                            labels: drop_name(&s.labels),
                            values: s.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                            sample_times: None,
                        })
                        .collect(),
                )),
                _ => Err(PromError::BadData(
                    "unary minus applies to scalars and instant vectors only".into(),
                )),
            }?),
            Expr::Binary(b) => check_duplicates(self.binary(b, times)?),
            Expr::Aggregate(a) => self.aggregate(a, times),
            Expr::Call(c) => check_duplicates(self.call(c, times)?),
            Expr::Extension(_) => Err(PromError::BadData("unsupported expression".into())),
        }
    }

    /// An instant vector selector: the latest sample within the lookback of each step (none when
    /// it is a staleness marker). With `keep_sample_times`, the samples' own times are kept.
    pub fn select(
        &self,
        vs: &VectorSelector,
        times: &[i64],
        keep_sample_times: bool,
    ) -> Result<Vec<StepSeries>, PromError> {
        let key = selector_key(vs);
        let Some(fetched) = self.data.get(&key) else {
            return Err(PromError::Internal(format!(
                "selector {vs} was not fetched"
            )));
        };
        self.check_points(fetched.len(), times.len())?;
        let offset = offset_ms(&vs.offset);
        let at = self.context.at_ms(&vs.at);
        let lookback = self.context.lookback_ms;
        let mut out = Vec::new();
        for series in fetched {
            let mut values = Vec::with_capacity(times.len());
            let mut sample_times = Vec::new();
            let mut any = false;
            for &t in times {
                let t = at.unwrap_or(t) - offset;
                let i = series.samples.partition_point(|(ts, _)| *ts <= t);
                let found = (i > 0)
                    .then(|| series.samples[i - 1])
                    .filter(|(ts, v)| *ts >= t - lookback && !is_stale(*v));
                any |= found.is_some();
                values.push(found.map(|(_, v)| v));
                if keep_sample_times {
                    sample_times.push(found.map(|(ts, _)| ts).unwrap_or(0));
                }
            }
            if any {
                out.push(StepSeries {
                    labels: series.labels.clone(),
                    values,
                    sample_times: keep_sample_times.then_some(sample_times),
                });
            }
        }
        Ok(out)
    }

    /// Refuses a node of `series` × `steps` points past the query's sample budget.
    pub fn check_points(&self, series: usize, steps: usize) -> Result<(), PromError> {
        if (series as u64).saturating_mul(steps as u64) > self.max_points {
            return Err(PromError::Execution(format!(
                "query processing would load too many samples into memory in query execution ({series} series × {steps} steps is more than {}, query.max_samples)",
                self.max_points
            )));
        }
        Ok(())
    }

    /// A range vector: a matrix selector or a subquery.
    pub fn range(&self, expr: &Expr, times: &[i64]) -> Result<RangeValue, PromError> {
        let range = self.range_unchecked(expr, times)?;
        self.check_points(range.series.len(), times.len())?;
        Ok(range)
    }

    fn range_unchecked(&self, expr: &Expr, times: &[i64]) -> Result<RangeValue, PromError> {
        match expr {
            Expr::Paren(p) => self.range_unchecked(&p.expr, times),
            Expr::MatrixSelector(ms) => {
                let key = selector_key(&ms.vs);
                let Some(fetched) = self.data.get(&key) else {
                    return Err(PromError::Internal(format!(
                        "selector {} was not fetched",
                        ms.vs
                    )));
                };
                let offset = offset_ms(&ms.vs.offset);
                let at = self.context.at_ms(&ms.vs.at);
                let series = fetched
                    .iter()
                    .map(|s| RawSeries {
                        labels: s.labels.clone(),
                        samples: s
                            .samples
                            .iter()
                            .copied()
                            .filter(|(_, v)| !is_stale(*v))
                            .collect(),
                    })
                    .filter(|s| !s.samples.is_empty())
                    .collect();
                Ok(RangeValue {
                    series,
                    ends: times.iter().map(|&t| at.unwrap_or(t) - offset).collect(),
                    range_ms: ms.range.as_millis() as i64,
                })
            }
            Expr::Subquery(sq) => self.subquery(sq, times),
            _ => Err(PromError::BadData(format!(
                "expected a range vector, got {expr}"
            ))),
        }
    }

    fn subquery(&self, sq: &SubqueryExpr, times: &[i64]) -> Result<RangeValue, PromError> {
        let offset = offset_ms(&sq.offset);
        let at = self.context.at_ms(&sq.at);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|s| s.as_millis() as i64)
            .filter(|s| *s > 0)
            .unwrap_or(self.context.default_subquery_step_ms);
        let ends: Vec<i64> = times.iter().map(|&t| at.unwrap_or(t) - offset).collect();
        let (Some(&first), Some(&last)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(RangeValue {
                series: Vec::new(),
                ends,
                range_ms: range,
            });
        };
        // The inner steps are aligned to multiples of the step, as Prometheus aligns them.
        let from = first - range;
        let mut start = step * from.div_euclid(step);
        if start < from {
            start += step;
        }
        let inner_times: Vec<i64> = (0..)
            .map(|k| start + k * step)
            .take_while(|t| *t <= last)
            .collect();
        if inner_times.len() > 11_000 * times.len().max(1) {
            return Err(PromError::BadData(
                "the subquery's step is too small for its range".into(),
            ));
        }
        let inner = match self.eval(&sq.expr, &inner_times)? {
            Value::Vector(v) => v,
            other => {
                return Err(PromError::BadData(format!(
                    "subquery is only allowed on instant vector, got {}",
                    type_name(&other)
                )));
            }
        };
        let series = inner
            .into_iter()
            .map(|s| RawSeries {
                labels: s.labels,
                samples: inner_times
                    .iter()
                    .zip(s.values)
                    .filter_map(|(t, v)| v.map(|v| (*t, v)))
                    .collect(),
            })
            .collect();
        Ok(RangeValue {
            series,
            ends,
            range_ms: range,
        })
    }

    fn binary(&self, b: &BinaryExpr, times: &[i64]) -> Result<Value, PromError> {
        let lhs = self.eval(&b.lhs, times)?;
        let rhs = self.eval(&b.rhs, times)?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let op = b.op;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(x, y)| {
                        let (v, keep) = binop(op.id(), *x, *y);
                        if is_comparison(op) {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Value::Vector(v), Value::Scalar(s)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, false, return_bool)))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                Ok(Value::Vector(vector_scalar(op, v, &s, true, return_bool)))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let steps = times.len();
                if op.is_set_operator() {
                    Ok(Value::Vector(set_operation(
                        op,
                        l,
                        r,
                        b.modifier.as_ref(),
                        steps,
                    )))
                } else {
                    Ok(Value::Vector(vector_vector(
                        op,
                        l,
                        r,
                        b.modifier.as_ref(),
                        steps,
                        return_bool,
                    )?))
                }
            }
            (l, r) => Err(PromError::BadData(format!(
                "binary operator {op} is not defined between {} and {}",
                type_name(&l),
                type_name(&r)
            ))),
        }
    }

    fn aggregate(&self, a: &AggregateExpr, times: &[i64]) -> Result<Value, PromError> {
        let series = match self.eval(&a.expr, times)? {
            Value::Vector(v) => v,
            other => {
                return Err(PromError::BadData(format!(
                    "aggregation expects an instant vector, got {}",
                    type_name(&other)
                )));
            }
        };
        let param = match &a.param {
            Some(p) => Some(self.eval(p, times)?),
            None => None,
        };
        functions::aggregate(a.op, a.modifier.as_ref(), series, param, times.len())
    }

    fn call(&self, c: &Call, times: &[i64]) -> Result<Value, PromError> {
        functions::call(self, c, times)
    }
}

/// Refuses a vector in which two series with one label set have a sample at one step, as
/// Prometheus does after every operation that may drop or change labels.
fn check_duplicates(value: Value) -> Result<Value, PromError> {
    if let Value::Vector(series) = &value {
        let mut by_labels: FnvMap<&Labels, Vec<usize>> = FnvMap::default();
        for (i, s) in series.iter().enumerate() {
            by_labels.entry(&s.labels).or_default().push(i);
        }
        for members in by_labels.values().filter(|m| m.len() > 1) {
            let steps = series[members[0]].values.len();
            for step in 0..steps {
                let present = members
                    .iter()
                    .filter(|&&i| series[i].values[step].is_some())
                    .count();
                if present > 1 {
                    return Err(PromError::Execution(
                        "vector cannot contain metrics with the same labelset".into(),
                    ));
                }
            }
        }
    }
    Ok(value)
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Scalar(_) => "scalar",
        Value::Vector(_) => "instant vector",
        Value::Range(_) => "range vector",
        Value::String(_) => "string",
    }
}

fn vector_scalar(
    op: TokenType,
    series: Vec<StepSeries>,
    scalar: &[f64],
    scalar_on_left: bool,
    return_bool: bool,
) -> Vec<StepSeries> {
    let comparison = is_comparison(op);
    series
        .into_iter()
        .filter_map(|s| {
            let values: Vec<Option<f64>> = s
                .values
                .iter()
                .zip(scalar)
                .map(|(v, sc)| {
                    let v = (*v)?;
                    let (l, r) = if scalar_on_left { (*sc, v) } else { (v, *sc) };
                    let (mut out, keep) = binop(op.id(), l, r);
                    if comparison && scalar_on_left {
                        out = v;
                    }
                    if return_bool {
                        Some(if keep { 1.0 } else { 0.0 })
                    } else if keep {
                        Some(out)
                    } else {
                        None
                    }
                })
                .collect();
            if values.iter().all(Option::is_none) {
                return None;
            }
            let labels = if drops_name(op) || return_bool {
                drop_name(&s.labels)
            } else {
                s.labels
            };
            Some(StepSeries {
                labels,
                values,
                sample_times: None,
            })
        })
        .collect()
}

/// The signature two series match on: the `on` labels, or every label but the `ignoring` ones
/// and the name.
fn signature(labels: &[(String, String)], matching: Option<&LabelModifier>) -> String {
    let mut sig = String::new();
    let mut add = |k: &str, v: &str| {
        sig.push_str(k);
        sig.push('\u{1}');
        sig.push_str(v);
        sig.push('\u{2}');
    };
    match matching {
        Some(LabelModifier::Include(on)) => {
            let mut names: Vec<&String> = on.labels.iter().collect();
            names.sort();
            names.dedup();
            for name in names {
                add(name, label(labels, name));
            }
        }
        Some(LabelModifier::Exclude(ignoring)) => {
            for (k, v) in labels {
                if k != NAME_LABEL && !ignoring.labels.contains(k) {
                    add(k, v);
                }
            }
        }
        None => {
            for (k, v) in labels {
                if k != NAME_LABEL {
                    add(k, v);
                }
            }
        }
    }
    sig
}

fn set_operation(
    op: TokenType,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    modifier: Option<&BinModifier>,
    steps: usize,
) -> Vec<StepSeries> {
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let lsigs: Vec<String> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let rsigs: Vec<String> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    // For each signature, at which steps a series of the other side has a sample.
    let present = |series: &[StepSeries], sigs: &[String]| {
        let mut map: HashMap<String, Vec<bool>> = HashMap::new();
        for (s, sig) in series.iter().zip(sigs) {
            let slot = map.entry(sig.clone()).or_insert_with(|| vec![false; steps]);
            for (i, v) in s.values.iter().enumerate() {
                slot[i] |= v.is_some();
            }
        }
        map
    };
    let keep = |series: Vec<StepSeries>, test: &dyn Fn(usize, usize) -> bool| -> Vec<StepSeries> {
        series
            .into_iter()
            .enumerate()
            .filter_map(|(n, mut s)| {
                for (i, v) in s.values.iter_mut().enumerate() {
                    if v.is_some() && !test(n, i) {
                        *v = None;
                    }
                }
                s.values.iter().any(Option::is_some).then_some(s)
            })
            .collect()
    };
    match op.id() {
        token::T_LAND => {
            let rp = present(&rhs, &rsigs);
            keep(lhs, &|n, i| rp.get(&lsigs[n]).is_some_and(|p| p[i]))
        }
        token::T_LUNLESS => {
            let rp = present(&rhs, &rsigs);
            keep(lhs, &|n, i| !rp.get(&lsigs[n]).is_some_and(|p| p[i]))
        }
        _ => {
            let lp = present(&lhs, &lsigs);
            let mut out = lhs;
            out.extend(keep(rhs, &|n, i| !lp.get(&rsigs[n]).is_some_and(|p| p[i])));
            out
        }
    }
}

fn vector_vector(
    op: TokenType,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    modifier: Option<&BinModifier>,
    steps: usize,
    return_bool: bool,
) -> Result<Vec<StepSeries>, PromError> {
    let card = modifier
        .map(|m| m.card.clone())
        .unwrap_or(VectorMatchCardinality::OneToOne);
    let matching = modifier.and_then(|m| m.matching.as_ref());
    let (include, swapped) = match &card {
        VectorMatchCardinality::OneToOne => (Vec::new(), false),
        VectorMatchCardinality::ManyToOne(l) => (l.labels.clone(), false),
        VectorMatchCardinality::OneToMany(l) => (l.labels.clone(), true),
        VectorMatchCardinality::ManyToMany => {
            return Err(PromError::BadData(
                "many-to-many matching is only allowed for set operators".into(),
            ));
        }
    };
    // `many` is the side each output comes from; `one` is matched against it.
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let many_sigs: Vec<String> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let one_sigs: Vec<String> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut by_sig: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, sig) in one_sigs.iter().enumerate() {
        by_sig.entry(sig.as_str()).or_default().push(i);
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let on = matches!(matching, Some(LabelModifier::Include(_)));
    let matching_labels: Vec<String> = match matching {
        Some(LabelModifier::Include(l)) | Some(LabelModifier::Exclude(l)) => l.labels.clone(),
        None => Vec::new(),
    };
    // The output labels of each (many, one) pair, worked out once.
    let mut result_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut result_of = |m: usize, o: usize| -> Labels {
        result_labels
            .entry((m, o))
            .or_insert_with(|| {
                let mut labels: Vec<(String, String)> = many[m].labels.to_vec();
                if drops_name(op) || return_bool {
                    labels.retain(|(k, _)| k != NAME_LABEL);
                }
                if one_to_one {
                    if on {
                        labels.retain(|(k, _)| matching_labels.contains(k));
                    } else {
                        labels.retain(|(k, _)| !matching_labels.contains(k));
                    }
                }
                for name in &include {
                    labels.retain(|(k, _)| k != name);
                    let v = label(&one[o].labels, name);
                    if !v.is_empty() {
                        labels.push((name.clone(), v.to_string()));
                    }
                }
                labels.sort();
                labels.into()
            })
            .clone()
    };
    let mut output = Output::new(steps);
    for step in 0..steps {
        // The "one" side must be unique per signature at each step.
        let mut matched_one: HashMap<&str, usize> = HashMap::new();
        for (sig, idxs) in &by_sig {
            let present: Vec<usize> = idxs
                .iter()
                .copied()
                .filter(|&i| one[i].values[step].is_some())
                .collect();
            if present.len() > 1 {
                let side = if swapped { "left" } else { "right" };
                return Err(PromError::Execution(format!(
                    "found duplicate series for the match group on the {side} hand-side of the operation: {};many-to-many matching not allowed: matching labels must be unique on one side",
                    format_labels(&one[present[0]].labels)
                )));
            }
            if let Some(&i) = present.first() {
                matched_one.insert(sig, i);
            }
        }
        let mut seen_sigs: HashMap<&str, Vec<Labels>> = HashMap::new();
        for (m, series) in many.iter().enumerate() {
            let Some(value) = series.values[step] else {
                continue;
            };
            let Some(&o) = matched_one.get(many_sigs[m].as_str()) else {
                continue;
            };
            let Some(other) = one[o].values[step] else {
                continue;
            };
            let (l, r) = if swapped {
                (other, value)
            } else {
                (value, other)
            };
            let (mut out, keep) = binop(op.id(), l, r);
            if is_comparison(op) {
                out = l;
            }
            let out = if return_bool {
                if keep { 1.0 } else { 0.0 }
            } else if keep {
                out
            } else {
                continue;
            };
            let labels = result_of(m, o);
            let seen = seen_sigs.entry(many_sigs[m].as_str()).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(PromError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
            } else if seen.contains(&labels) {
                return Err(PromError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            seen.push(labels.clone());
            output.set(labels, step, out)?;
        }
    }
    Ok(output.finish())
}

/// `{a="b", c="d"}`, as Prometheus prints a label set.
pub fn format_labels(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Labels without `__name__` as a shared list.
pub fn without_name(labels: &Labels) -> Labels {
    drop_name(labels)
}

/// Shares a label list.
pub fn labels_from(mut labels: Vec<(String, String)>) -> Labels {
    labels.sort();
    Arc::from(labels)
}
