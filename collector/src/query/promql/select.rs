//! Series selection: the rows of `metrics` a PromQL selector needs, read through the query engine
//! with the metric names, the label matchers that can be checked in SQL, and the time range pushed
//! into the scan, then shaped into Prometheus series (see [`super::names`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, ListArray, MapArray, StringArray, TimestampNanosecondArray,
    UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use futures::StreamExt;
use promql_parser::label::{MatchOp, Matcher};
use vigil_schemas::{col, metric_col};

use super::PromError;
use super::names::{self, BUCKET_LABEL, Kind, NAME_LABEL, Part, QUANTILE_LABEL};
use crate::query::QueryEngine;

/// A series' labels, sorted by name, `__name__` included; empty values are absent.
pub type Labels = Arc<[(String, String)]>;

/// One series' samples, sorted by time (milliseconds), one per timestamp.
#[derive(Debug, Clone)]
pub struct RawSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// The value Prometheus writes to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `value` is a staleness marker.
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// The label value of `name` in `labels` ("" when absent, as PromQL treats it).
pub fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .map(|i| labels[i].1.as_str())
        .unwrap_or("")
}

/// Single quotes for a SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL timestamp literal for `ms` milliseconds since the epoch.
pub fn sql_time(ms: i64) -> String {
    format!(
        "arrow_cast({}, 'Timestamp(Nanosecond, Some(\"UTC\"))')",
        ms.saturating_mul(1_000_000)
    )
}

/// One stored metric and the Prometheus names it is shown under.
#[derive(Debug, Clone)]
struct CatalogEntry {
    metric_name: String,
    kind: Kind,
    names: Vec<(String, Part)>,
    help: String,
    unit: String,
}

/// What Prometheus' metadata API tells of one metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metadata {
    pub name: String,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

/// The metrics stored in a time window, with their Prometheus names: which stored names a
/// `__name__` matcher selects.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The metrics with rows between `start_ms` and `end_ms`.
    pub async fn load(
        engine: &QueryEngine,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Catalog, PromError> {
        let sql = format!(
            // DISTINCT over the dictionary columns as stored: casting every row to text first
            // costs more than the rest of the scan.
            "SELECT DISTINCT {name} AS name, {kind} AS kind, {unit} AS unit, \
             {monotonic} AS monotonic, {help} AS help FROM metrics \
             WHERE {time} >= {start} AND {time} <= {end}",
            name = metric_col::METRIC_NAME,
            kind = metric_col::METRIC_TYPE,
            unit = metric_col::UNIT,
            monotonic = metric_col::IS_MONOTONIC,
            help = metric_col::DESCRIPTION,
            time = col::TIME,
            start = sql_time(start_ms),
            end = sql_time(end_ms),
        );
        let (_, batches) = engine.query(&sql).await.map_err(PromError::from)?;
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for batch in &batches {
            let name = string_column(batch.column(0))?;
            let kind = string_column(batch.column(1))?;
            let unit = string_column(batch.column(2))?;
            let monotonic = batch
                .column(3)
                .as_boolean_opt()
                .ok_or_else(|| PromError::Internal("is_monotonic is not boolean".into()))?;
            let help = string_column(batch.column(4))?;
            for row in 0..batch.num_rows() {
                let metric_name = name.value(row).to_string();
                let is_monotonic = (!monotonic.is_null(row)).then(|| monotonic.value(row));
                let kind = Kind::from_columns(kind.value(row), is_monotonic);
                let unit = (!unit.is_null(row)).then(|| unit.value(row));
                let names = names::prometheus_names(&metric_name, unit, kind);
                entries.push(CatalogEntry {
                    metric_name,
                    kind,
                    names,
                    help: if help.is_valid(row) {
                        help.value(row).to_string()
                    } else {
                        String::new()
                    },
                    unit: unit.unwrap_or("").to_string(),
                });
            }
        }
        entries.sort_by(|a, b| a.metric_name.cmp(&b.metric_name));
        Ok(Catalog { entries })
    }

    /// Every Prometheus metric name in the window.
    pub fn prometheus_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .flat_map(|e| e.names.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Each metric's type, help and unit, under its base Prometheus name.
    pub fn metadata(&self) -> Vec<Metadata> {
        let mut out: Vec<Metadata> = self
            .entries
            .iter()
            .filter(|e| !e.names.is_empty())
            .map(|e| {
                let kind = match e.kind {
                    Kind::Sum { monotonic: true } => "counter",
                    Kind::Histogram => "histogram",
                    Kind::Summary => "summary",
                    _ => "gauge",
                };
                let name = match e.kind {
                    Kind::Histogram => e.names[0].0.trim_end_matches("_bucket").to_string(),
                    _ => e.names[0].0.clone(),
                };
                Metadata {
                    name,
                    kind,
                    help: e.help.clone(),
                    unit: e.unit.clone(),
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The stored metrics, with the parts and Prometheus names, that the `__name__` matchers in
    /// `matchers` accept (all of them when there is none).
    fn selected(&self, matchers: &[Matcher]) -> Vec<(&CatalogEntry, Part, &str)> {
        let name_matchers: Vec<&Matcher> =
            matchers.iter().filter(|m| m.name == NAME_LABEL).collect();
        let mut out = Vec::new();
        for entry in &self.entries {
            for (name, part) in &entry.names {
                if name_matchers.iter().all(|m| m.is_match(name)) {
                    out.push((entry, *part, name.as_str()));
                }
            }
        }
        out
    }
}

/// Counts the samples a query holds, against `limit`. A budget that keeps no samples (series,
/// labels and label values need only the series) reads without holding.
pub struct SampleBudget {
    pub loaded: u64,
    pub limit: u64,
    pub keep_samples: bool,
}

impl SampleBudget {
    fn take(&mut self, n: u64) -> Result<(), PromError> {
        if !self.keep_samples {
            return Ok(());
        }
        self.loaded += n;
        if self.loaded > self.limit {
            return Err(PromError::Execution(format!(
                "query processing would load too many samples into memory in query execution (more than {}, query.max_samples)",
                self.limit
            )));
        }
        Ok(())
    }
}

/// The SQL conditions that keep only rows a group of matchers may accept. A condition on an
/// attribute lets rows without that attribute through, since a label can also come from a
/// resource attribute or a renamed key; the exact check happens on the built labels.
fn prefilter(matchers: &[Matcher]) -> Vec<String> {
    matchers
        .iter()
        .filter(|m| {
            m.op == MatchOp::Equal
                && !m.value.is_empty()
                && !matches!(
                    m.name.as_str(),
                    NAME_LABEL | "job" | "instance" | BUCKET_LABEL | QUANTILE_LABEL
                )
        })
        .map(|m| {
            format!(
                "({attrs}[{key}] = {value} OR {attrs}[{key}] IS NULL)",
                attrs = col::ATTRIBUTES,
                key = quote(&m.name),
                value = quote(&m.value)
            )
        })
        .collect()
}

/// Whether `labels` pass every matcher of a group (an absent label matches as "").
pub fn matches(labels: &[(String, String)], matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.is_match(label(labels, &m.name)))
}

/// Reads the series that any of `groups` (each a conjunction of matchers) selects, with their
/// samples between `start_ms` and `end_ms` inclusive.
pub async fn select(
    engine: &QueryEngine,
    catalog: &Catalog,
    groups: &[Vec<Matcher>],
    start_ms: i64,
    end_ms: i64,
    budget: &mut SampleBudget,
) -> Result<Vec<RawSeries>, PromError> {
    let mut builder = SeriesBuilder::default();
    for matchers in groups {
        let selected = catalog.selected(matchers);
        if selected.is_empty() {
            continue;
        }
        let mut wanted: HashMap<&str, Vec<(Part, &str)>> = HashMap::new();
        for (entry, part, name) in &selected {
            wanted
                .entry(entry.metric_name.as_str())
                .or_default()
                .push((*part, name));
        }
        let kinds: HashMap<&str, Kind> = selected
            .iter()
            .map(|(e, _, _)| (e.metric_name.as_str(), e.kind))
            .collect();
        let mut metric_names: Vec<&str> = wanted.keys().copied().collect();
        metric_names.sort();
        let mut conditions = vec![
            format!(
                "{} IN ({})",
                metric_col::METRIC_NAME,
                metric_names
                    .iter()
                    .map(|n| quote(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("{} >= {}", col::TIME, sql_time(start_ms)),
            format!("{} <= {}", col::TIME, sql_time(end_ms)),
        ];
        conditions.extend(prefilter(matchers));
        let sql = format!(
            "SELECT {time}, CAST({name} AS VARCHAR), {resource}, {attrs}, {value}, {count}, {sum}, \
             {bounds}, {counts}, {quantiles}, {quantile_values} FROM metrics WHERE {conditions}",
            time = col::TIME,
            name = metric_col::METRIC_NAME,
            resource = col::RESOURCE_ATTRIBUTES,
            attrs = col::ATTRIBUTES,
            value = metric_col::VALUE,
            count = metric_col::COUNT,
            sum = metric_col::SUM,
            bounds = metric_col::BUCKET_BOUNDS,
            counts = metric_col::BUCKET_COUNTS,
            quantiles = metric_col::QUANTILES,
            quantile_values = metric_col::QUANTILE_VALUES,
            conditions = conditions.join(" AND "),
        );
        let mut stream = engine.stream(&sql, Vec::new()).await?;
        // Rows of one series share their labels: they are built once per distinct row identity.
        let mut known: HashMap<u64, Vec<(Vec<String>, RowSeries)>> = HashMap::new();
        while let Some(batch) = stream.batches.next().await {
            let batch = batch?;
            budget.take(batch.num_rows() as u64)?;
            let rows = Rows::new(&batch)?;
            for row in 0..batch.num_rows() {
                let metric_name = rows.name.value(row);
                let (Some(parts), Some(kind)) = (wanted.get(metric_name), kinds.get(metric_name))
                else {
                    continue;
                };
                let hash = {
                    use std::hash::Hasher;
                    let mut hasher = fnv::FnvHasher::default();
                    for part in rows.identity(row) {
                        hasher.write(part.as_bytes());
                        hasher.write_u8(0xff);
                    }
                    hasher.finish()
                };
                let bucket = known.entry(hash).or_default();
                // The same hash from another series (a collision) is told apart by its text.
                let found = bucket
                    .iter()
                    .position(|(parts, _)| parts.iter().map(String::as_str).eq(rows.identity(row)));
                let index = match found {
                    Some(i) => i,
                    None => {
                        bucket.push((
                            rows.identity(row).map(str::to_string).collect(),
                            RowSeries {
                                base: rows.base_labels(row),
                                series: HashMap::new(),
                            },
                        ));
                        bucket.len() - 1
                    }
                };
                let entry = &mut bucket[index].1;
                let time_ms = rows.time.value(row).div_euclid(1_000_000);
                for (slot, (part, name)) in parts.iter().enumerate() {
                    let mut emit = Emit {
                        slot,
                        name,
                        time_ms,
                        keep_samples: budget.keep_samples,
                        matchers,
                        entry: &mut *entry,
                        out: &mut builder,
                    };
                    rows.emit(row, *kind, *part, &mut emit);
                }
            }
        }
    }
    Ok(builder.finish())
}

/// The columns of one batch of [`select`]'s query.
struct Rows<'a> {
    time: &'a TimestampNanosecondArray,
    name: StringArray,
    resource: &'a MapArray,
    attributes: &'a MapArray,
    value: &'a Float64Array,
    count: &'a UInt64Array,
    sum: &'a Float64Array,
    bounds: &'a ListArray,
    counts: &'a ListArray,
    quantiles: &'a ListArray,
    quantile_values: &'a ListArray,
}

fn string_column(array: &dyn Array) -> Result<StringArray, PromError> {
    let cast = cast(array, &DataType::Utf8).map_err(|e| PromError::Internal(e.to_string()))?;
    Ok(cast.as_string::<i32>().clone())
}

fn map_entries(map: &MapArray, row: usize) -> Vec<(String, String)> {
    if map.is_null(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_string_opt::<i32>(),
    ) else {
        return Vec::new();
    };
    (0..entries.len())
        .filter(|&i| !values.is_null(i))
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect()
}

impl<'a> Rows<'a> {
    fn new(batch: &'a arrow::record_batch::RecordBatch) -> Result<Rows<'a>, PromError> {
        let bad = |what: &str| {
            PromError::Internal(format!("metrics column {what} has an unexpected type"))
        };
        Ok(Rows {
            time: batch
                .column(0)
                .as_primitive_opt()
                .ok_or_else(|| bad(col::TIME))?,
            name: string_column(batch.column(1))?,
            resource: batch
                .column(2)
                .as_map_opt()
                .ok_or_else(|| bad("resource_attributes"))?,
            attributes: batch
                .column(3)
                .as_map_opt()
                .ok_or_else(|| bad("attributes"))?,
            value: batch
                .column(4)
                .as_primitive_opt()
                .ok_or_else(|| bad("value"))?,
            count: batch
                .column(5)
                .as_primitive_opt()
                .ok_or_else(|| bad("count"))?,
            sum: batch
                .column(6)
                .as_primitive_opt()
                .ok_or_else(|| bad("sum"))?,
            bounds: batch
                .column(7)
                .as_list_opt()
                .ok_or_else(|| bad("bucket_bounds"))?,
            counts: batch
                .column(8)
                .as_list_opt()
                .ok_or_else(|| bad("bucket_counts"))?,
            quantiles: batch
                .column(9)
                .as_list_opt()
                .ok_or_else(|| bad("quantiles"))?,
            quantile_values: batch
                .column(10)
                .as_list_opt()
                .ok_or_else(|| bad("quantile_values"))?,
        })
    }

    /// The row's labels other than `__name__`, `le` and `quantile`: its attributes under their
    /// Prometheus names, then `job` and `instance` from its resource.
    fn base_labels(&self, row: usize) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = map_entries(self.attributes, row)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (names::label_name(&k), v))
            .filter(|(k, _)| k != NAME_LABEL)
            .collect();
        let resource = map_entries(self.resource, row);
        let get = |key: &str| {
            resource
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let job = names::job(get("service.namespace"), get("service.name"));
        let instance = get("service.instance.id").filter(|v| !v.is_empty());
        for (key, value) in [("job", job), ("instance", instance.map(str::to_string))] {
            if let Some(value) = value {
                labels.retain(|(k, _)| k != key);
                labels.push((key.to_string(), value));
            }
        }
        labels.sort();
        // Two keys that sanitize to one label: the first (in key order) wins.
        labels.dedup_by(|b, a| a.0 == b.0);
        labels
    }

    /// What makes the row's series, as stored: its metric, then every attribute and resource
    /// attribute (key, value), read in place from the batch.
    fn identity(&self, row: usize) -> impl Iterator<Item = &str> + '_ {
        let entries = |map: &'a MapArray| {
            let (keys, values) = (
                map.keys().as_string_opt::<i32>(),
                map.values().as_string_opt::<i32>(),
            );
            let range = if map.is_null(row) {
                0..0
            } else {
                let offsets = map.value_offsets();
                offsets[row] as usize..offsets[row + 1] as usize
            };
            range.flat_map(move |i| match (keys, values) {
                (Some(k), Some(v)) => [k.value(i), if v.is_null(i) { "\u{2}" } else { v.value(i) }],
                _ => ["", ""],
            })
        };
        std::iter::once(self.name.value(row))
            .chain(std::iter::once("\u{1}"))
            .chain(entries(self.attributes))
            .chain(std::iter::once("\u{1}"))
            .chain(entries(self.resource))
    }

    /// The samples one row gives to one Prometheus name.
    fn emit(&self, row: usize, kind: Kind, part: Part, emit: &mut Emit) {
        match part {
            Part::Value => {
                if !self.value.is_null(row) {
                    emit.sample(None, self.value.value(row));
                }
            }
            Part::Sum => {
                if !self.sum.is_null(row) {
                    emit.sample(None, self.sum.value(row));
                }
            }
            Part::Count => {
                if !self.count.is_null(row) {
                    emit.sample(None, self.count.value(row) as f64);
                }
            }
            Part::Bucket => {
                let bounds = list_f64(self.bounds, row);
                let counts = list_u64(self.counts, row);
                let mut cumulative = 0u64;
                for (i, count) in counts.iter().enumerate() {
                    cumulative += count;
                    let bound = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    emit.sample(Some((BUCKET_LABEL, bound)), cumulative as f64);
                }
                if counts.len() <= bounds.len() && kind == Kind::Histogram {
                    // A histogram without counts still has its +Inf bucket: its count.
                    let total = if self.count.is_null(row) {
                        cumulative
                    } else {
                        self.count.value(row)
                    };
                    emit.sample(Some((BUCKET_LABEL, f64::INFINITY)), total as f64);
                }
            }
            Part::Quantile => {
                let quantiles = list_f64(self.quantiles, row);
                let values = list_f64(self.quantile_values, row);
                for (q, v) in quantiles.iter().zip(values.iter()) {
                    emit.sample(Some((QUANTILE_LABEL, *q)), *v);
                }
            }
        }
    }
}

/// The series of one row identity: its labels without name, `le` and `quantile`, and the series
/// each (name, bound) of it feeds (`None` when the matchers refuse it).
struct RowSeries {
    base: Vec<(String, String)>,
    series: HashMap<(usize, u64), Option<usize>>,
}

/// Where one row's samples for one Prometheus name go.
struct Emit<'a> {
    /// Which of the metric's Prometheus names.
    slot: usize,
    name: &'a str,
    time_ms: i64,
    keep_samples: bool,
    matchers: &'a [Matcher],
    entry: &'a mut RowSeries,
    out: &'a mut SeriesBuilder,
}

impl Emit<'_> {
    /// One sample, with `extra` the `le` or `quantile` label it carries.
    fn sample(&mut self, extra: Option<(&str, f64)>, value: f64) {
        let key = (
            self.slot,
            extra.map_or(u64::MAX, |(_, bound)| bound.to_bits()),
        );
        let (name, base, matchers, out) =
            (self.name, &self.entry.base, self.matchers, &mut *self.out);
        let series = *self.entry.series.entry(key).or_insert_with(|| {
            let mut labels = Vec::with_capacity(base.len() + 2);
            labels.push((NAME_LABEL.to_string(), name.to_string()));
            labels.extend(
                base.iter()
                    .filter(|(k, _)| Some(k.as_str()) != extra.map(|e| e.0))
                    .cloned(),
            );
            if let Some((k, bound)) = extra {
                labels.push((k.to_string(), names::float_label(bound)));
            }
            labels.sort();
            matches(&labels, matchers).then(|| out.index_of(labels))
        });
        if let Some(i) = series
            && self.keep_samples
        {
            self.out.series[i].1.push((self.time_ms, value));
        }
    }
}

fn list_f64(list: &ListArray, row: usize) -> Vec<f64> {
    if list.is_null(row) {
        return Vec::new();
    }
    let values = list.value(row);
    values
        .as_primitive_opt::<arrow::datatypes::Float64Type>()
        .map(|a| a.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

fn list_u64(list: &ListArray, row: usize) -> Vec<u64> {
    if list.is_null(row) {
        return Vec::new();
    }
    let values = list.value(row);
    values
        .as_primitive_opt::<arrow::datatypes::UInt64Type>()
        .map(|a| a.iter().map(|v| v.unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Gathers samples into series.
#[derive(Default)]
struct SeriesBuilder {
    index: HashMap<Vec<(String, String)>, usize>,
    series: Vec<(Vec<(String, String)>, Samples)>,
}

type Samples = Vec<(i64, f64)>;

impl SeriesBuilder {
    /// The index of the series with `labels`, added if new.
    fn index_of(&mut self, labels: Vec<(String, String)>) -> usize {
        match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.series.push((labels.clone(), Vec::new()));
                self.index.insert(labels, self.series.len() - 1);
                self.series.len() - 1
            }
        }
    }

    /// Series come out sorted by labels, as Prometheus' storage gives them: `topk` breaks ties
    /// by that order.
    fn finish(mut self) -> Vec<RawSeries> {
        self.series.sort_by(|a, b| a.0.cmp(&b.0));
        self.series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|(t, _)| *t);
                samples.dedup_by(|later, earlier| {
                    if later.0 == earlier.0 {
                        earlier.1 = later.1;
                        true
                    } else {
                        false
                    }
                });
                RawSeries {
                    labels: labels.into(),
                    samples,
                }
            })
            .collect()
    }
}
