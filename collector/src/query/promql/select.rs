//! Series selection: the rows of `metrics` a PromQL selector needs, read through the query engine
//! with the metric names, the label matchers that can be checked in SQL, and the time range pushed
//! into the scan, then shaped into Prometheus series (see [`super::names`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, AsArray, Float64Array, ListArray, MapArray, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use promql_parser::label::{MatchOp, Matcher};
use vigil_schemas::{col, metric_col};

use super::PromError;
use super::names::{self, BUCKET_LABEL, Kind, NAME_LABEL, Part, QUANTILE_LABEL};
use super::series_labels::{KnownSeries, SeriesLabels};
use super::target_info;
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
pub(super) struct CatalogEntry {
    pub(super) metric_name: String,
    pub(super) kind: Kind,
    names: Vec<(String, Part)>,
    help: String,
    unit: String,
}

impl CatalogEntry {
    fn new(
        metric_name: String,
        kind: &str,
        unit: Option<&str>,
        monotonic: Option<bool>,
        help: Option<String>,
    ) -> CatalogEntry {
        let kind = Kind::from_columns(kind, monotonic);
        let names = names::prometheus_names(&metric_name, unit, kind);
        CatalogEntry {
            metric_name,
            kind,
            names,
            help: help.unwrap_or_default(),
            unit: unit.unwrap_or("").to_string(),
        }
    }
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
    /// The metrics with rows between `start_ms` and `end_ms`: from the store's catalogs of its
    /// files and buffers, or, when those hold too many metrics to list, from a scan.
    pub async fn load(
        engine: &QueryEngine,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Catalog, PromError> {
        let store = engine.store().clone();
        let (lo, hi) = (
            start_ms.saturating_mul(1_000_000),
            end_ms.saturating_mul(1_000_000),
        );
        let indexed = tokio::task::spawn_blocking(move || store.metric_catalog(lo, hi))
            .await
            .map_err(|e| PromError::Internal(format!("the metric catalog's task failed: {e}")))?
            .map_err(|e| PromError::Internal(e.to_string()))?;
        let mut entries: Vec<CatalogEntry> = match indexed {
            Some(stored) => stored
                .into_iter()
                .map(|e| CatalogEntry::new(e.name, &e.kind, e.unit.as_deref(), e.monotonic, e.help))
                .collect(),
            None => Catalog::scan(engine, start_ms, end_ms).await?,
        };
        entries.sort_by(|a, b| a.metric_name.cmp(&b.metric_name));
        Ok(Catalog { entries })
    }

    /// The catalog read from the rows themselves.
    async fn scan(
        engine: &QueryEngine,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<CatalogEntry>, PromError> {
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
                entries.push(CatalogEntry::new(
                    name.value(row).to_string(),
                    kind.value(row),
                    (!unit.is_null(row)).then(|| unit.value(row)),
                    (!monotonic.is_null(row)).then(|| monotonic.value(row)),
                    help.is_valid(row).then(|| help.value(row).to_string()),
                ));
            }
        }
        Ok(entries)
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
    /// Whether `selected` has a name of every metric in the catalog.
    pub(super) fn every_metric_in(&self, selected: &[(&CatalogEntry, Part, &str)]) -> bool {
        self.entries.iter().all(|entry| {
            selected
                .iter()
                .any(|(chosen, _, _)| std::ptr::eq(*chosen, entry))
        })
    }

    pub(super) fn selected(&self, matchers: &[Matcher]) -> Vec<(&CatalogEntry, Part, &str)> {
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
    pub(super) fn take(&mut self, n: u64) -> Result<(), PromError> {
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

/// The metrics a group of matchers selects, and how each is read.
struct Wanted<'a> {
    /// Per stored metric name, its kind and the Prometheus names (and parts) it is shown under.
    metrics: HashMap<&'a str, (Kind, Vec<NamePart<'a>>)>,
    matchers: &'a [Matcher],
}

/// A Prometheus name a stored metric is shown under, and which part of its rows it shows.
type NamePart<'a> = (Part, &'a str);

impl Wanted<'_> {
    /// Whether any selected name reads the bucket or quantile lists.
    fn needs_lists(&self) -> bool {
        self.metrics
            .values()
            .flat_map(|(_, parts)| parts)
            .any(|(part, _)| matches!(part, Part::Bucket | Part::Quantile))
    }
}

pub(super) type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<fnv::FnvHasher>>;

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
        // The series, labels and label values APIs without `match[]` (`{__name__=~".+"}`) read
        // every metric's first rows anyway: `target_info`'s series come from their resources
        // instead of a read of their own.
        let mut target_info_found = None;
        if target_info::asked(matchers) {
            if !budget.keep_samples
                && !selected.is_empty()
                && catalog.every_metric_in(&selected)
                && prefilter(matchers).is_empty()
            {
                target_info_found = Some(target_info::Found::new(matchers));
            } else {
                target_info::select(engine, matchers, start_ms, end_ms, budget, &mut builder)
                    .await?;
            }
        }
        if selected.is_empty() {
            continue;
        }
        let mut wanted = Wanted {
            metrics: HashMap::new(),
            matchers,
        };
        for (entry, part, name) in &selected {
            wanted
                .metrics
                .entry(entry.metric_name.as_str())
                .or_insert_with(|| (entry.kind, Vec::new()))
                .1
                .push((*part, name));
        }
        let mut metric_names: Vec<&str> = wanted.metrics.keys().copied().collect();
        metric_names.sort();
        let scope = vec![
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
        let read = if budget.keep_samples {
            select_samples_by_series_id(engine, &scope, &wanted, budget, &mut builder).await?
        } else {
            let found = target_info_found.as_mut();
            select_series_by_series_id(engine, &scope, &wanted, budget, found, &mut builder).await?
        };
        // Rows stored before series ids were (or all rows, if two series' ids collided):
        // their labels are read with every row.
        let mut conditions = scope;
        let without_ids = match read {
            ById::Read {
                rows_without_id: false,
            } => false,
            ById::Read {
                rows_without_id: true,
            } => {
                conditions.push(format!("{} IS NULL", metric_col::SERIES_ID));
                true
            }
            ById::SharedId => true,
        };
        if without_ids {
            conditions.extend(prefilter(matchers));
            let found = target_info_found.as_mut();
            select_rows(engine, &conditions, &wanted, budget, found, &mut builder).await?;
        }
        if let Some(found) = target_info_found {
            found.finish(budget, &mut builder);
        }
    }
    Ok(builder.finish())
}

/// How a read by series id went.
enum ById {
    /// The rows with an id were read; whether the range also has rows without one (stored
    /// before there were ids), which are still to be read with their labels.
    Read { rows_without_id: bool },
    /// Two different series share an id (their 128-bit hashes differ in the half
    /// `series_check` holds): nothing was read, and the ids are not to be trusted for this read.
    SharedId,
}

/// Reads the series, without holding samples (the series, labels and label values APIs), in
/// two or three statements: the series and the first time each has a row; their labels, from
/// the rows at those times only; then, unless the first rows already show every series (each
/// of their metrics' names reads a plain value that the first row has), every row's id, time
/// and value, without the attribute maps (which cost most of a read).
async fn select_series_by_series_id(
    engine: &QueryEngine,
    scope: &[String],
    wanted: &Wanted<'_>,
    budget: &mut SampleBudget,
    mut target_info: Option<&mut target_info::Found<'_>>,
    builder: &mut SeriesBuilder,
) -> Result<ById, PromError> {
    let scope = format!(
        "{} AND {} IS NOT NULL",
        scope.join(" AND "),
        metric_col::SERIES_ID
    );
    let Some(first_times) = first_times(engine, &scope).await? else {
        return Ok(ById::SharedId);
    };

    // Each series' labels and first values, from its rows at the first times: a few rows a
    // series.
    let mut series: FnvMap<u64, IdSeries> = FnvMap::default();
    let mut every_series_shown = true;
    let columns = format!(
        "{id}, CAST({name} AS VARCHAR), {resource}, {attrs}, {values}",
        id = metric_col::SERIES_ID,
        name = metric_col::METRIC_NAME,
        resource = col::RESOURCE_ATTRIBUTES,
        attrs = col::ATTRIBUTES,
        values = Values::columns(false),
    );
    for sql in rows_at(&columns, &scope, &first_times) {
        let mut stream = engine.stream(&sql, Vec::new()).await?;
        while let Some(batch) = stream.batches.next().await {
            let batch = batch?;
            let ids = id_column(&batch, 0)?;
            let labels = LabelColumns::new(&batch, 1)?;
            let values = Values::new(&batch, 4, false)?;
            for row in 0..batch.num_rows() {
                let id = ids.value(row);
                if series.contains_key(&id) {
                    continue;
                }
                if let Some(found) = target_info.as_deref_mut() {
                    found.series_of(&labels.resource_pairs(row));
                }
                let metric_name = labels.name.value(row);
                let Some((kind, parts)) = wanted.metrics.get(metric_name) else {
                    continue;
                };
                let mut entry = IdSeries::new(*kind, parts, labels.base_labels(row).into());
                // A bucket or quantile name's series, or a part this row lacks, may only
                // show in later rows.
                every_series_shown &= values.shows_every_part(row, parts);
                values.emit_row(row, *kind, parts, budget, wanted, &mut entry.row, builder);
                series.insert(id, entry);
            }
        }
    }
    if every_series_shown {
        return Ok(ById::Read {
            rows_without_id: true,
        });
    }

    // Every row, by id, for the series only later rows show.
    let lists = wanted.needs_lists();
    let sql = format!(
        "SELECT {id}, {values} FROM metrics WHERE {scope}",
        id = metric_col::SERIES_ID,
        values = Values::columns(lists),
    );
    let mut stream = engine.stream(&sql, Vec::new()).await?;
    while let Some(batch) = stream.batches.next().await {
        let batch = batch?;
        let ids = id_column(&batch, 0)?;
        let values = Values::new(&batch, 1, lists)?;
        for row in 0..batch.num_rows() {
            // A series first stored after the first statement ran is not in this answer.
            let Some(entry) = series.get_mut(&ids.value(row)) else {
                continue;
            };
            let (parts, kind) = (entry.parts, entry.kind);
            values.emit_row(row, kind, parts, budget, wanted, &mut entry.row, builder);
        }
    }
    // Whether rows without ids are in range was not asked: they are read in any case.
    Ok(ById::Read {
        rows_without_id: true,
    })
}

/// Reads the rows in `scope` with their samples, in one statement of ids, checks, times and
/// values (not the attribute maps, which cost most of a read) when every series in it was
/// seen before (its labels are in [`SeriesLabels`]); the rows of series not seen before are
/// held back until their labels are read from their first rows, a few rows a series.
async fn select_samples_by_series_id(
    engine: &QueryEngine,
    scope: &[String],
    wanted: &Wanted<'_>,
    budget: &mut SampleBudget,
    builder: &mut SeriesBuilder,
) -> Result<ById, PromError> {
    let known = engine.series_labels();
    let scope = scope.join(" AND ");
    let lists = wanted.needs_lists();
    let sql = format!(
        "SELECT {id}, {check}, {values} FROM metrics WHERE {scope}",
        id = metric_col::SERIES_ID,
        check = metric_col::SERIES_CHECK,
        values = Values::columns(lists),
    );
    // Into a builder of this read's own, so that ids found to be shared leave nothing behind.
    let mut read = SampleRead {
        wanted,
        series: FnvMap::default(),
        unknown: FnvMap::default(),
        held: Vec::new(),
        rows_without_id: false,
        builder: SeriesBuilder::default(),
    };
    let loaded_before = budget.loaded;
    let mut stream = engine.stream(&sql, Vec::new()).await?;
    while let Some(batch) = stream.batches.next().await {
        let batch = batch?;
        budget.take(batch.num_rows() as u64)?;
        if read.route(&batch, lists, known, budget)?.is_err() {
            budget.loaded = loaded_before;
            return Ok(ById::SharedId);
        }
    }

    if !read.unknown.is_empty() {
        let mut first_times: Vec<i64> = read.unknown.values().map(|u| u.first_ns).collect();
        first_times.sort_unstable();
        first_times.dedup();
        let columns = format!(
            "{id}, {check}, CAST({name} AS VARCHAR), {resource}, {attrs}",
            id = metric_col::SERIES_ID,
            check = metric_col::SERIES_CHECK,
            name = metric_col::METRIC_NAME,
            resource = col::RESOURCE_ATTRIBUTES,
            attrs = col::ATTRIBUTES,
        );
        let with_id = format!("{scope} AND {} IS NOT NULL", metric_col::SERIES_ID);
        for sql in rows_at(&columns, &with_id, &first_times) {
            let mut stream = engine.stream(&sql, Vec::new()).await?;
            while let Some(batch) = stream.batches.next().await {
                let batch = batch?;
                let ids = id_column(&batch, 0)?;
                let checks = id_column(&batch, 1)?;
                let labels = LabelColumns::new(&batch, 2)?;
                for row in 0..batch.num_rows() {
                    let (id, check) = (ids.value(row), checks.value(row));
                    if read.unknown.get(&id).map(|u| u.check) != Some(check)
                        || read.series.contains_key(&id)
                    {
                        continue;
                    }
                    let entry = KnownSeries {
                        check,
                        metric_name: labels.name.value(row).into(),
                        base: labels.base_labels(row).into(),
                    };
                    read.know(id, &entry);
                    known.insert(id, entry);
                }
            }
        }
        // The rows held back, now that their series are known. A series whose first row is
        // gone by now (retention) is not in this answer.
        read.unknown.clear();
        for batch in std::mem::take(&mut read.held) {
            if read.route(&batch, lists, known, budget)?.is_err() {
                budget.loaded = loaded_before;
                return Ok(ById::SharedId);
            }
        }
    }
    builder.absorb(read.builder);
    Ok(ById::Read {
        rows_without_id: read.rows_without_id,
    })
}

/// One read of samples by series id, as its batches arrive.
struct SampleRead<'a> {
    wanted: &'a Wanted<'a>,
    /// The series met so far whose labels are known (`None`: a metric not asked for).
    series: FnvMap<u64, Option<IdSeries<'a>>>,
    /// The series met whose labels are not known yet.
    unknown: FnvMap<u64, Unknown>,
    /// The rows of those series, held until their labels are read.
    held: Vec<RecordBatch>,
    rows_without_id: bool,
    builder: SeriesBuilder,
}

/// A series met whose labels are still to be read: its check, and the first time it has a row.
struct Unknown {
    check: u64,
    first_ns: i64,
}

/// Two different series met under one id.
struct SharedId;

impl<'a> SampleRead<'a> {
    /// Gives each row of `batch` (id, check, then the values) to its series, holds the rows
    /// of series whose labels are not known yet (new ones are looked up in `known` first).
    fn route(
        &mut self,
        batch: &RecordBatch,
        lists: bool,
        known: &SeriesLabels,
        budget: &SampleBudget,
    ) -> Result<Result<(), SharedId>, PromError> {
        let ids = id_column(batch, 0)?;
        let checks = id_column(batch, 1)?;
        let values = Values::new(batch, 2, lists)?;
        let mut hold: Option<arrow::array::BooleanBuilder> = None;
        for row in 0..batch.num_rows() {
            if ids.is_null(row) {
                self.rows_without_id = true;
                continue;
            }
            let (id, check) = (ids.value(row), checks.value(row));
            if !self.series.contains_key(&id)
                && !self.unknown.contains_key(&id)
                && let Some(entry) = known.get(id, check)
            {
                self.know(id, &entry);
            }
            if let Some(entry) = self.series.get_mut(&id) {
                let Some(entry) = entry else { continue };
                if entry.check != check {
                    return Ok(Err(SharedId));
                }
                let (parts, kind) = (entry.parts, entry.kind);
                let wanted = self.wanted;
                values.emit_row(
                    row,
                    kind,
                    parts,
                    budget,
                    wanted,
                    &mut entry.row,
                    &mut self.builder,
                );
                continue;
            }
            let time = values.time.value(row);
            let unknown = self.unknown.entry(id).or_insert(Unknown {
                check,
                first_ns: time,
            });
            if unknown.check != check {
                return Ok(Err(SharedId));
            }
            unknown.first_ns = unknown.first_ns.min(time);
            let hold = hold.get_or_insert_with(|| {
                arrow::array::BooleanBuilder::with_capacity(batch.num_rows())
            });
            hold.append_n(row - hold.len(), false);
            hold.append_value(true);
        }
        if let Some(mut hold) = hold {
            hold.append_n(batch.num_rows() - hold.len(), false);
            let held = arrow::compute::filter_record_batch(batch, &hold.finish())
                .map_err(|e| PromError::Internal(e.to_string()))?;
            self.held.push(held);
        }
        Ok(Ok(()))
    }

    /// Sets up the series `id` with the labels `entry` gives it.
    fn know(&mut self, id: u64, entry: &KnownSeries) {
        let series = self
            .wanted
            .metrics
            .get(entry.metric_name.as_ref())
            .map(|(kind, parts)| {
                let mut series = IdSeries::new(*kind, parts, entry.base.clone());
                series.check = entry.check;
                series
            });
        self.series.insert(id, series);
    }
}

/// Column `index` of `batch` as series ids or checks.
pub(super) fn id_column(batch: &RecordBatch, index: usize) -> Result<&UInt64Array, PromError> {
    batch
        .column(index)
        .as_primitive_opt()
        .ok_or_else(|| PromError::Internal("a series id or check is not UInt64".into()))
}

/// Each series id in `scope` (a condition that keeps only rows with an id) with the first time
/// it has a row, as sorted distinct nanosecond times; `None` when two different series share an
/// id (their 128-bit hashes differ in the half `series_check` holds), so that the ids are not to
/// be trusted for this read.
pub(super) async fn first_times(
    engine: &QueryEngine,
    scope: &str,
) -> Result<Option<Vec<i64>>, PromError> {
    let first_seen = format!(
        "SELECT {id}, min({time}), min({check}) = max({check}) FROM metrics WHERE {scope} \
         GROUP BY {id}",
        id = metric_col::SERIES_ID,
        time = col::TIME,
        check = metric_col::SERIES_CHECK,
    );
    let (_, batches) = engine.query(&first_seen).await.map_err(PromError::from)?;
    let mut first_times: Vec<i64> = Vec::new();
    for batch in &batches {
        let times: &TimestampNanosecondArray = batch
            .column(1)
            .as_primitive_opt()
            .ok_or_else(|| PromError::Internal("min(time) is not a timestamp".into()))?;
        let single = batch
            .column(2)
            .as_boolean_opt()
            .ok_or_else(|| PromError::Internal("a series check is not boolean".into()))?;
        if single.false_count() > 0 {
            tracing::warn!("two series share a series id; reading their rows with their labels");
            return Ok(None);
        }
        first_times.extend(times.iter().flatten());
    }
    first_times.sort_unstable();
    first_times.dedup();
    Ok(Some(first_times))
}

/// Statements that read `columns` of the rows in `scope` at `times` (nanoseconds), 1,024 times
/// a statement.
pub(super) fn rows_at<'a>(
    columns: &'a str,
    scope: &'a str,
    times: &'a [i64],
) -> impl Iterator<Item = String> + 'a {
    times.chunks(1024).map(move |chunk| {
        let at = chunk
            .iter()
            .map(|ns| format!("arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"UTC\"))')"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {columns} FROM metrics WHERE {scope} AND {time} IN ({at})",
            time = col::TIME
        )
    })
}

/// One series read by its id: its metric's names and kind, its check, and where its samples go.
struct IdSeries<'a> {
    parts: &'a [(Part, &'a str)],
    kind: Kind,
    check: u64,
    row: RowSeries,
}

impl<'a> IdSeries<'a> {
    fn new(kind: Kind, parts: &'a [NamePart<'a>], base: Labels) -> IdSeries<'a> {
        IdSeries {
            parts,
            kind,
            check: 0,
            row: RowSeries {
                base,
                series: FnvMap::default(),
            },
        }
    }
}

/// Reads rows with their labels, each row's attribute maps decoded: the rows stored before
/// series ids.
async fn select_rows(
    engine: &QueryEngine,
    conditions: &[String],
    wanted: &Wanted<'_>,
    budget: &mut SampleBudget,
    mut target_info: Option<&mut target_info::Found<'_>>,
    builder: &mut SeriesBuilder,
) -> Result<(), PromError> {
    let sql = format!(
        "SELECT CAST({name} AS VARCHAR), {resource}, {attrs}, {values} FROM metrics WHERE {conditions}",
        name = metric_col::METRIC_NAME,
        resource = col::RESOURCE_ATTRIBUTES,
        attrs = col::ATTRIBUTES,
        values = Values::columns(true),
        conditions = conditions.join(" AND "),
    );
    let mut stream = engine.stream(&sql, Vec::new()).await?;
    // Rows of one series share their labels: they are built once per distinct row identity.
    let mut known: FnvMap<u64, Vec<(Vec<String>, RowSeries)>> = FnvMap::default();
    while let Some(batch) = stream.batches.next().await {
        let batch = batch?;
        budget.take(batch.num_rows() as u64)?;
        let labels = LabelColumns::new(&batch, 0)?;
        let values = Values::new(&batch, 3, true)?;
        for row in 0..batch.num_rows() {
            let metric_name = labels.name.value(row);
            let Some((kind, parts)) = wanted.metrics.get(metric_name) else {
                continue;
            };
            let hash = {
                use std::hash::Hasher;
                let mut hasher = fnv::FnvHasher::default();
                for part in labels.identity(row) {
                    hasher.write(part.as_bytes());
                    hasher.write_u8(0xff);
                }
                hasher.finish()
            };
            let bucket = known.entry(hash).or_default();
            // The same hash from another series (a collision) is told apart by its text.
            let found = bucket
                .iter()
                .position(|(parts, _)| parts.iter().map(String::as_str).eq(labels.identity(row)));
            let index = match found {
                Some(i) => i,
                None => {
                    if let Some(found) = target_info.as_deref_mut() {
                        found.series_of(&labels.resource_pairs(row));
                    }
                    bucket.push((
                        labels.identity(row).map(str::to_string).collect(),
                        RowSeries {
                            base: labels.base_labels(row).into(),
                            series: FnvMap::default(),
                        },
                    ));
                    bucket.len() - 1
                }
            };
            let entry = &mut bucket[index].1;
            values.emit_row(row, *kind, parts, budget, wanted, entry, builder);
        }
    }
    Ok(())
}

/// A batch's metric name and attribute maps, from column `first` on.
pub(super) struct LabelColumns<'a> {
    pub(super) name: StringArray,
    resource: &'a MapArray,
    attributes: &'a MapArray,
}

/// A batch's time and value columns, from column `first` on: time, value, count, sum, then
/// (when read) the bucket bounds and counts, quantiles and their values.
struct Values<'a> {
    time: &'a TimestampNanosecondArray,
    value: &'a Float64Array,
    count: &'a UInt64Array,
    sum: &'a Float64Array,
    lists: Option<[&'a ListArray; 4]>,
}

fn string_column(array: &dyn Array) -> Result<StringArray, PromError> {
    let cast = cast(array, &DataType::Utf8).map_err(|e| PromError::Internal(e.to_string()))?;
    Ok(cast.as_string::<i32>().clone())
}

pub(super) fn map_entries(map: &MapArray, row: usize) -> Vec<(String, String)> {
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

fn bad_column(what: &str) -> PromError {
    PromError::Internal(format!("metrics column {what} has an unexpected type"))
}

impl<'a> LabelColumns<'a> {
    pub(super) fn new(
        batch: &'a arrow::record_batch::RecordBatch,
        first: usize,
    ) -> Result<LabelColumns<'a>, PromError> {
        Ok(LabelColumns {
            name: string_column(batch.column(first))?,
            resource: batch
                .column(first + 1)
                .as_map_opt()
                .ok_or_else(|| bad_column("resource_attributes"))?,
            attributes: batch
                .column(first + 2)
                .as_map_opt()
                .ok_or_else(|| bad_column("attributes"))?,
        })
    }
    /// The row's labels other than `__name__`, `le` and `quantile`: its attributes under their
    /// Prometheus names, then `job` and `instance` from its resource.
    pub(super) fn base_labels(&self, row: usize) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = map_entries(self.attributes, row)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (names::label_name(&k), v))
            .filter(|(k, _)| k != NAME_LABEL)
            .collect();
        let resource = map_entries(self.resource, row);
        for (key, value) in target_info::job_and_instance(&resource) {
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

    /// The row's resource attributes.
    pub(super) fn resource_pairs(&self, row: usize) -> Vec<(String, String)> {
        map_entries(self.resource, row)
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
}

impl<'a> Values<'a> {
    /// The columns `new` reads, in its order, for a SELECT list.
    fn columns(with_lists: bool) -> String {
        let mut columns = vec![
            col::TIME,
            metric_col::VALUE,
            metric_col::COUNT,
            metric_col::SUM,
        ];
        if with_lists {
            columns.extend([
                metric_col::BUCKET_BOUNDS,
                metric_col::BUCKET_COUNTS,
                metric_col::QUANTILES,
                metric_col::QUANTILE_VALUES,
            ]);
        }
        columns.join(", ")
    }

    fn new(
        batch: &'a arrow::record_batch::RecordBatch,
        first: usize,
        with_lists: bool,
    ) -> Result<Values<'a>, PromError> {
        let list = |i: usize, what: &str| -> Result<&'a ListArray, PromError> {
            batch
                .column(first + i)
                .as_list_opt()
                .ok_or_else(|| bad_column(what))
        };
        Ok(Values {
            time: batch
                .column(first)
                .as_primitive_opt()
                .ok_or_else(|| bad_column(col::TIME))?,
            value: batch
                .column(first + 1)
                .as_primitive_opt()
                .ok_or_else(|| bad_column("value"))?,
            count: batch
                .column(first + 2)
                .as_primitive_opt()
                .ok_or_else(|| bad_column("count"))?,
            sum: batch
                .column(first + 3)
                .as_primitive_opt()
                .ok_or_else(|| bad_column("sum"))?,
            lists: if with_lists {
                Some([
                    list(4, "bucket_bounds")?,
                    list(5, "bucket_counts")?,
                    list(6, "quantiles")?,
                    list(7, "quantile_values")?,
                ])
            } else {
                None
            },
        })
    }

    /// Whether this row alone gives every series its metric's `parts` can have: each part a
    /// plain value (no bucket or quantile list) that the row holds.
    fn shows_every_part(&self, row: usize, parts: &[(Part, &str)]) -> bool {
        parts.iter().all(|(part, _)| match part {
            Part::Value => !self.value.is_null(row),
            Part::Sum => !self.sum.is_null(row),
            Part::Count => !self.count.is_null(row),
            Part::Bucket | Part::Quantile => false,
        })
    }

    /// The samples one row gives to each of its metric's Prometheus names.
    #[allow(clippy::too_many_arguments)]
    fn emit_row(
        &self,
        row: usize,
        kind: Kind,
        parts: &[(Part, &str)],
        budget: &SampleBudget,
        wanted: &Wanted<'_>,
        entry: &mut RowSeries,
        out: &mut SeriesBuilder,
    ) {
        let time_ms = self.time.value(row).div_euclid(1_000_000);
        for (slot, (part, name)) in parts.iter().enumerate() {
            let mut emit = Emit {
                slot,
                name,
                time_ms,
                keep_samples: budget.keep_samples,
                matchers: wanted.matchers,
                entry: &mut *entry,
                out: &mut *out,
            };
            self.emit(row, kind, *part, &mut emit);
        }
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
                let Some([bounds, counts, _, _]) = self.lists else {
                    return;
                };
                let bounds = list_f64(bounds, row);
                let counts = list_u64(counts, row);
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
                let Some([_, _, quantiles, values]) = self.lists else {
                    return;
                };
                let quantiles = list_f64(quantiles, row);
                let values = list_f64(values, row);
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
    base: Labels,
    series: FnvMap<(usize, u64), Option<usize>>,
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

pub(super) fn list_f64(list: &ListArray, row: usize) -> Vec<f64> {
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
pub(super) struct SeriesBuilder {
    index: FnvMap<Labels, usize>,
    pub(super) series: Vec<(Labels, Samples)>,
}

type Samples = Vec<(i64, f64)>;

impl SeriesBuilder {
    /// The index of the series with `labels`, added if new.
    pub(super) fn index_of(&mut self, labels: Vec<(String, String)>) -> usize {
        if let Some(&i) = self.index.get(labels.as_slice()) {
            return i;
        }
        self.add(labels.into())
    }

    fn add(&mut self, labels: Labels) -> usize {
        self.series.push((labels.clone(), Vec::new()));
        self.index.insert(labels, self.series.len() - 1);
        self.series.len() - 1
    }

    /// Adds what `other` read.
    fn absorb(&mut self, other: SeriesBuilder) {
        for (labels, samples) in other.series {
            let i = match self.index.get(&labels) {
                Some(&i) => i,
                None => self.add(labels),
            };
            self.series[i].1.extend(samples);
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
                RawSeries { labels, samples }
            })
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::storage::{StorageConfig, Store};
    use crate::telemetry::Telemetry;
    use arrow::array::{ArrayRef, RecordBatch};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use vigil_schemas::Table;

    const SECOND_NS: u64 = 1_000_000_000;
    const T0_NS: u64 = 1_700_000_000 * SECOND_NS;

    /// Gauge `m` of GPUs `gpus`, one point each at each of `seconds` after T0.
    fn gauge(gpus: &[&str], seconds: &[u64]) -> RecordBatch {
        let points = gpus
            .iter()
            .flat_map(|gpu| {
                seconds.iter().map(move |s| NumberDataPoint {
                    time_unix_nano: T0_NS + s * SECOND_NS,
                    value: Some(number_data_point::Value::AsDouble(*s as f64)),
                    attributes: vec![KeyValue {
                        key: "gpu".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(gpu.to_string())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            })
            .collect();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        vigil_schemas::convert::metrics_to_batch(&request).batch
    }

    /// `batch` with its series ids replaced by `id`, its own checks kept; or, with `None`,
    /// neither (as stored before there were ids).
    pub(in crate::query::promql) fn with_series_ids(
        batch: RecordBatch,
        id: Option<u64>,
    ) -> RecordBatch {
        let schema = batch.schema();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[schema.index_of(metric_col::SERIES_ID).unwrap()] =
            Arc::new(UInt64Array::from(vec![id; batch.num_rows()]));
        if id.is_none() {
            columns[schema.index_of(metric_col::SERIES_CHECK).unwrap()] =
                Arc::new(UInt64Array::from(vec![None; batch.num_rows()]));
        }
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// A store in `dir` with default settings, and its engine.
    fn open(dir: &std::path::Path) -> (Arc<Store>, QueryEngine) {
        let config = StorageConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(config, Arc::new(Telemetry::default())).unwrap();
        let engine = QueryEngine::new(store.clone(), Default::default()).unwrap();
        (store, engine)
    }

    async fn read_all(engine: &QueryEngine) -> Vec<RawSeries> {
        read(engine, true).await
    }

    async fn read(engine: &QueryEngine, keep_samples: bool) -> Vec<RawSeries> {
        let (lo, hi) = (1_700_000_000_000, 1_700_000_100_000);
        let catalog = Catalog::load(engine, lo, hi).await.unwrap();
        let groups = vec![vec![
            Matcher::new(MatchOp::Equal, NAME_LABEL, "m"),
            Matcher::new(MatchOp::NotEqual, "gpu", "9"),
        ]];
        let mut budget = SampleBudget {
            loaded: 0,
            limit: u64::MAX,
            keep_samples,
        };
        select(engine, &catalog, &groups, lo, hi, &mut budget)
            .await
            .unwrap()
    }

    fn summary(series: &[RawSeries]) -> Vec<(String, Vec<i64>)> {
        series
            .iter()
            .map(|s| {
                (
                    label(&s.labels, "gpu").to_string(),
                    s.samples
                        .iter()
                        .map(|(t, _)| t / 1000 - 1_700_000_000)
                        .collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn rows_with_and_without_series_ids_make_the_same_series_and_a_collision_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, engine) = open(dir.path());
        // Rows stored before series ids, then the same series' later rows with their ids.
        let old = with_series_ids(gauge(&["0", "1"], &[0, 1]), None);
        store.append(Table::Metrics, old).await.unwrap();
        store
            .append(Table::Metrics, gauge(&["0", "1", "9"], &[2, 3]))
            .await
            .unwrap();
        let expected = vec![
            ("0".to_string(), vec![0, 1, 2, 3]),
            ("1".to_string(), vec![0, 1, 2, 3]),
        ];
        assert_eq!(summary(&read_all(&engine).await), expected);
        store.flush_due_tables(true).await.unwrap();
        assert_eq!(
            summary(&read_all(&engine).await),
            expected,
            "the same from Parquet"
        );
        // The series alone (as /api/v1/series reads them): the same series, no samples.
        let series_only: Vec<(String, Vec<i64>)> = expected
            .iter()
            .map(|(gpu, _)| (gpu.clone(), Vec::new()))
            .collect();
        assert_eq!(summary(&read(&engine, false).await), series_only);
        // A series whose rows all carry ids, shown by its first row alone.
        store
            .append(Table::Metrics, gauge(&["3"], &[5, 6]))
            .await
            .unwrap();
        let mut series_only = series_only;
        series_only.push(("3".to_string(), Vec::new()));
        assert_eq!(summary(&read(&engine, false).await), series_only);
        let mut expected = expected;
        expected.push(("3".to_string(), vec![5, 6]));
        assert_eq!(summary(&read_all(&engine).await), expected);

        // Another series stored under gpu 0's id: read with its labels, not merged into gpu 0.
        let id_of_gpu0 = gauge(&["0"], &[0])
            .column_by_name(metric_col::SERIES_ID)
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .value(0);
        let colliding = with_series_ids(gauge(&["2"], &[4]), Some(id_of_gpu0));
        store.append(Table::Metrics, colliding).await.unwrap();
        expected.insert(2, ("2".to_string(), vec![4]));
        assert_eq!(summary(&read_all(&engine).await), expected);
        let series_only: Vec<(String, Vec<i64>)> = expected
            .iter()
            .map(|(g, _)| (g.clone(), Vec::new()))
            .collect();
        assert_eq!(summary(&read(&engine, false).await), series_only);
    }

    /// A metric `name` of the given shape with one point at each of `seconds` after T0.
    fn metric(name: &str, unit: &str, sum: Option<bool>, seconds: &[u64]) -> RecordBatch {
        use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Sum};
        let data_points: Vec<NumberDataPoint> = seconds
            .iter()
            .map(|s| NumberDataPoint {
                time_unix_nano: T0_NS + s * SECOND_NS,
                value: Some(number_data_point::Value::AsDouble(*s as f64)),
                ..Default::default()
            })
            .collect();
        let data = match sum {
            Some(is_monotonic) => metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic,
            }),
            None => metric::Data::Gauge(Gauge { data_points }),
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        unit: unit.into(),
                        description: format!("help of {name}"),
                        data: Some(data),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        vigil_schemas::convert::metrics_to_batch(&request).batch
    }

    fn listed(entries: &[CatalogEntry]) -> Vec<String> {
        let mut listed: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{} {:?} {:?} {} {}",
                    e.metric_name, e.kind, e.names, e.unit, e.help
                )
            })
            .collect();
        listed.sort();
        listed
    }

    /// The store's catalogs (of buffers, flushed files and merged files) list what a scan of
    /// the rows finds, for ranges that hold some metrics and not others.
    #[tokio::test]
    async fn the_stored_catalog_lists_what_a_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (store, engine) = open(dir.path());
        let writes = [
            metric("gpu.temperature", "Cel", None, &[0, 10, 20]),
            metric("requests", "1", Some(true), &[5, 15]),
            metric("queue", "", Some(false), &[30, 40]),
            metric("late", "By", None, &[100, 110]),
        ];
        let ranges = [
            (0, 200),
            (0, 12),
            (21, 29),
            (41, 99),
            (110, 120),
            (300, 400),
        ];
        let t0_ms = (T0_NS / 1_000_000) as i64;
        let compare = |stage: &'static str| {
            let engine = engine.clone();
            async move {
                for (from, to) in ranges {
                    let (lo, hi) = (t0_ms + from * 1000, t0_ms + to * 1000);
                    let stored = Catalog::load(&engine, lo, hi).await.unwrap();
                    let scanned = Catalog::scan(&engine, lo, hi).await.unwrap();
                    assert_eq!(
                        listed(&stored.entries),
                        listed(&scanned),
                        "{stage}, seconds {from}..={to}"
                    );
                }
            }
        };
        for (i, batch) in writes.iter().enumerate() {
            store.append(Table::Metrics, batch.clone()).await.unwrap();
            compare("buffered").await;
            store.flush_due_tables(true).await.unwrap();
            compare(if i == 0 { "one file" } else { "files" }).await;
        }
        let files = || store.snapshot(Table::Metrics).files.len();
        assert_eq!(files(), 4);
        assert!(store.compact_once().await > 0);
        assert!(files() < 4, "the hour's files were merged");
        compare("merged").await;
        // Between two rows of a metric (its first and last either side), the catalog lists it
        // where the rows have none, as Prometheus lists a block's metrics.
        let (lo, hi) = (t0_ms + 105_000, t0_ms + 106_000);
        let in_gap = Catalog::load(&engine, lo, hi).await.unwrap();
        assert_eq!(listed(&in_gap.entries).len(), 1);
        assert_eq!(in_gap.entries[0].metric_name, "late");
        assert!(Catalog::scan(&engine, lo, hi).await.unwrap().is_empty());
        let all = Catalog::load(&engine, t0_ms, t0_ms + 200_000)
            .await
            .unwrap();
        assert_eq!(all.entries.len(), 4);
        assert_eq!(
            all.prometheus_names(),
            ["gpu_temperature_celsius", "late", "queue", "requests"]
        );
    }
}
