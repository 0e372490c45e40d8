//! Which metrics a `metrics` file or buffer holds: each distinct name, type, unit, monotonicity
//! and help, with the first and last time it has rows at.
//!
//! Every PromQL query, and Prometheus' label, series and metadata APIs, first ask which metrics
//! a time range holds. Answered by a scan, that cost ~450 ms over a day of 2,000 series (a
//! `SELECT DISTINCT` over 11.5 M rows), where Prometheus answers from its index. Files never
//! change once written, so each one's catalog is worked out as it is written and kept in its
//! footer (a file written before this is read once, on first use); buffers are read as asked.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use arrow::array::{Array, AsArray, BooleanArray, DictionaryArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use vigil_schemas::{col, metric_col};

use super::{StoreError, io_err};

/// The footer key a `metrics` file keeps its catalog under (JSON; `null` when it holds more than
/// [`MAX_ENTRIES`]).
pub(super) const FOOTER_KEY: &str = "vigil.metric_catalog";

/// Distinct metrics one file or buffer may list. Past this (a flood of generated metric names),
/// the catalog is not kept and the range is scanned instead: a footer or a cache of millions of
/// entries would cost more than it saves.
pub const MAX_ENTRIES: usize = 20_000;

/// One stored metric as its columns give it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetricEntry {
    pub name: String,
    /// `metric_type` as stored: `gauge`, `sum`, `histogram`, `exponential_histogram`, `summary`.
    pub kind: String,
    pub unit: Option<String>,
    pub monotonic: Option<bool>,
    pub help: Option<String>,
}

/// Each metric of a file or buffer with the first and last `time` (ns) of its rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricCatalog {
    spans: HashMap<MetricEntry, (i64, i64)>,
}

/// The footer's form: a list, since JSON keys are strings.
#[derive(Serialize, Deserialize)]
struct Stored {
    metrics: Vec<(MetricEntry, i64, i64)>,
}

/// A batch's column as a dictionary of strings (older files may hold plain strings).
fn dictionary(
    batch: &RecordBatch,
    name: &str,
) -> Result<Option<DictionaryArray<Int32Type>>, StoreError> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let wanted = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let column = if column.data_type() == &wanted {
        column.clone()
    } else {
        cast(column, &wanted)?
    };
    Ok(Some(column.as_dictionary::<Int32Type>().clone()))
}

/// A dictionary's values, if they are strings.
fn string_values(column: &Option<DictionaryArray<Int32Type>>) -> Option<&StringArray> {
    column
        .as_ref()
        .and_then(|c| c.values().as_string_opt::<i32>())
}

/// The string a dictionary holds at `row`, if not null.
fn text(
    column: &Option<DictionaryArray<Int32Type>>,
    values: &Option<&StringArray>,
    row: usize,
) -> Option<String> {
    let (column, values) = (column.as_ref()?, values.as_ref()?);
    column
        .is_valid(row)
        .then(|| values.value(column.keys().value(row) as usize).to_string())
}

impl MetricCatalog {
    /// How many distinct metrics it lists.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether it lists more metrics than are worth keeping.
    pub fn too_large(&self) -> bool {
        self.spans.len() > MAX_ENTRIES
    }

    /// Adds the metrics of a batch of `metrics` rows.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let name = dictionary(batch, metric_col::METRIC_NAME)?;
        let kind = dictionary(batch, metric_col::METRIC_TYPE)?;
        let unit = dictionary(batch, metric_col::UNIT)?;
        let help = dictionary(batch, metric_col::DESCRIPTION)?;
        let monotonic: Option<BooleanArray> = batch
            .column_by_name(metric_col::IS_MONOTONIC)
            .and_then(|c| c.as_boolean_opt().cloned());
        let time = batch
            .column_by_name(col::TIME)
            .and_then(|c| {
                c.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
                    .cloned()
            })
            .ok_or_else(|| {
                StoreError::Arrow(arrow::error::ArrowError::SchemaError(
                    "a metrics batch has no nanosecond time column".into(),
                ))
            })?;
        let key_of = |column: &Option<DictionaryArray<Int32Type>>, row: usize| {
            column
                .as_ref()
                .and_then(|c| c.is_valid(row).then(|| c.keys().value(row)))
        };
        // Rows come sorted (or at least in runs) by metric: the dictionary keys of a row are
        // compared with the last row's before any hashing.
        type Keys = (
            Option<i32>,
            Option<i32>,
            Option<i32>,
            Option<i32>,
            Option<bool>,
        );
        let mut by_keys: HashMap<Keys, (i64, i64, usize)> = HashMap::new();
        let mut last: Option<(Keys, i64, i64, usize)> = None;
        for row in 0..batch.num_rows() {
            let keys: Keys = (
                key_of(&name, row),
                key_of(&kind, row),
                key_of(&unit, row),
                key_of(&help, row),
                monotonic
                    .as_ref()
                    .and_then(|m| m.is_valid(row).then(|| m.value(row))),
            );
            let t = if time.is_valid(row) {
                time.value(row)
            } else {
                0
            };
            match &mut last {
                Some((k, lo, hi, _)) if *k == keys => {
                    *lo = (*lo).min(t);
                    *hi = (*hi).max(t);
                }
                _ => {
                    if let Some((k, lo, hi, first_row)) = last.take() {
                        let slot = by_keys.entry(k).or_insert((lo, hi, first_row));
                        slot.0 = slot.0.min(lo);
                        slot.1 = slot.1.max(hi);
                    }
                    last = Some((keys, t, t, row));
                }
            }
        }
        if let Some((k, lo, hi, first_row)) = last {
            let slot = by_keys.entry(k).or_insert((lo, hi, first_row));
            slot.0 = slot.0.min(lo);
            slot.1 = slot.1.max(hi);
        }
        let (name_values, kind_values, unit_values, help_values) = (
            string_values(&name),
            string_values(&kind),
            string_values(&unit),
            string_values(&help),
        );
        for (keys, (lo, hi, row)) in by_keys {
            let entry = MetricEntry {
                name: text(&name, &name_values, row).unwrap_or_default(),
                kind: text(&kind, &kind_values, row).unwrap_or_default(),
                unit: text(&unit, &unit_values, row),
                monotonic: keys.4,
                help: text(&help, &help_values, row),
            };
            self.insert(entry, lo, hi);
        }
        Ok(())
    }

    fn insert(&mut self, entry: MetricEntry, lo: i64, hi: i64) {
        let slot = self.spans.entry(entry).or_insert((lo, hi));
        slot.0 = slot.0.min(lo);
        slot.1 = slot.1.max(hi);
    }

    /// Adds another catalog's metrics.
    pub fn merge(&mut self, other: &MetricCatalog) {
        for (entry, (lo, hi)) in &other.spans {
            self.insert(entry.clone(), *lo, *hi);
        }
    }

    /// The metrics with rows between `lo` and `hi` (ns, inclusive). A metric whose first and
    /// last rows lie either side of the range counts, as Prometheus counts a block's.
    pub fn in_range(&self, lo: i64, hi: i64) -> impl Iterator<Item = &MetricEntry> {
        self.spans
            .iter()
            .filter(move |(_, (first, last))| *first <= hi && *last >= lo)
            .map(|(entry, _)| entry)
    }

    /// The footer value: the catalog as JSON, or `null` when it is too large to keep.
    pub(super) fn footer_value(&self) -> String {
        if self.too_large() {
            return "null".into();
        }
        let mut metrics: Vec<(MetricEntry, i64, i64)> = self
            .spans
            .iter()
            .map(|(e, (lo, hi))| (e.clone(), *lo, *hi))
            .collect();
        metrics.sort();
        serde_json::to_string(&Stored { metrics }).expect("a catalog serializes")
    }

    /// The catalog a footer value gives: `Some(None)` when the file held too many metrics.
    fn from_footer(value: &str) -> Option<Option<MetricCatalog>> {
        let stored: Option<Stored> = serde_json::from_str(value).ok()?;
        Some(stored.map(|stored| {
            let mut catalog = MetricCatalog::default();
            for (entry, lo, hi) in stored.metrics {
                catalog.insert(entry, lo, hi);
            }
            catalog
        }))
    }

    /// The catalog of a committed `metrics` file: from its footer, or, for a file written
    /// without one (or with a damaged one), from its catalog columns. `None` when it holds more
    /// than [`MAX_ENTRIES`] metrics.
    pub fn of_file(path: &Path) -> Result<Option<MetricCatalog>, StoreError> {
        let parquet_err = |e: parquet::errors::ParquetError| StoreError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = fs::File::open(path).map_err(io_err(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
        let stored = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|pairs| pairs.iter().find(|kv| kv.key == FOOTER_KEY))
            .and_then(|kv| kv.value.as_deref())
            .and_then(MetricCatalog::from_footer);
        if let Some(catalog) = stored {
            return Ok(catalog);
        }
        let wanted = [
            metric_col::METRIC_NAME,
            metric_col::METRIC_TYPE,
            metric_col::UNIT,
            metric_col::DESCRIPTION,
            metric_col::IS_MONOTONIC,
            col::TIME,
        ];
        let roots: Vec<usize> = builder
            .parquet_schema()
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| wanted.contains(&field.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(parquet_err)?;
        let mut catalog = MetricCatalog::default();
        for batch in reader {
            catalog.add_batch(&batch?)?;
            if catalog.too_large() {
                return Ok(None);
            }
        }
        Ok(Some(catalog))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    fn strings(values: &[Option<&str>], as_dictionary: bool) -> ArrayRef {
        let plain: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        if as_dictionary {
            cast(
                &plain,
                &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            )
            .unwrap()
        } else {
            plain
        }
    }

    /// (name, type, unit, monotonic, time)
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<bool>, i64);

    /// Rows of metrics without help.
    fn batch(rows: &[Row], dict: bool) -> RecordBatch {
        let names: Vec<_> = rows.iter().map(|r| Some(r.0)).collect();
        let kinds: Vec<_> = rows.iter().map(|r| Some(r.1)).collect();
        let units: Vec<_> = rows.iter().map(|r| r.2).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (metric_col::METRIC_NAME, strings(&names, dict)),
            (metric_col::METRIC_TYPE, strings(&kinds, dict)),
            (metric_col::UNIT, strings(&units, dict)),
            (
                metric_col::DESCRIPTION,
                strings(&vec![None; rows.len()], dict),
            ),
            (
                metric_col::IS_MONOTONIC,
                Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ),
            (
                col::TIME,
                Arc::new(TimestampNanosecondArray::from(
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, c)| c).collect(),
        )
        .unwrap()
    }

    fn listed(catalog: &MetricCatalog, lo: i64, hi: i64) -> Vec<String> {
        let mut names: Vec<String> = catalog
            .in_range(lo, hi)
            .map(|e| format!("{}:{}:{:?}:{:?}", e.name, e.kind, e.unit, e.monotonic))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_batch_lists_each_metric_once_with_its_first_and_last_time() {
        let rows = [
            ("a", "gauge", Some("By"), None, 30),
            ("a", "gauge", Some("By"), None, 10),
            ("b", "sum", None, Some(true), 50),
            ("a", "gauge", Some("By"), None, 20),
            ("b", "sum", None, Some(false), 60),
        ];
        let mut catalog = MetricCatalog::default();
        catalog.add_batch(&batch(&rows, true)).unwrap();
        assert_eq!(catalog.len(), 3);
        assert_eq!(
            listed(&catalog, 0, 100),
            [
                "a:gauge:Some(\"By\"):None",
                "b:sum:None:Some(false)",
                "b:sum:None:Some(true)"
            ]
        );
        // `a` spans 10..=30: a range inside it lists it; one past it does not.
        assert_eq!(listed(&catalog, 15, 15), ["a:gauge:Some(\"By\"):None"]);
        assert_eq!(listed(&catalog, 31, 49), Vec::<String>::new());
        assert_eq!(listed(&catalog, 55, 60), ["b:sum:None:Some(false)"]);
        // Plain strings (a file of an older schema) give the same catalog.
        let mut plain = MetricCatalog::default();
        plain.add_batch(&batch(&rows, false)).unwrap();
        assert_eq!(plain, catalog);
    }

    #[test]
    fn a_file_gives_its_catalog_from_its_footer_or_else_from_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            ("x", "gauge", None, None, 5),
            ("y", "histogram", Some("s"), None, 7),
        ];
        let data = batch(&rows, true);
        let mut expected = MetricCatalog::default();
        expected.add_batch(&data).unwrap();
        let write = |path: &Path, footer: Option<String>| {
            let mut writer =
                ArrowWriter::try_new(fs::File::create(path).unwrap(), data.schema(), None).unwrap();
            writer.write(&data).unwrap();
            if let Some(value) = footer {
                writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                    FOOTER_KEY.into(),
                    value,
                ));
            }
            writer.close().unwrap();
        };
        let with_footer = dir.path().join("a.parquet");
        write(&with_footer, Some(expected.footer_value()));
        assert_eq!(
            MetricCatalog::of_file(&with_footer).unwrap(),
            Some(expected.clone())
        );
        let without = dir.path().join("b.parquet");
        write(&without, None);
        assert_eq!(
            MetricCatalog::of_file(&without).unwrap(),
            Some(expected.clone())
        );
        let damaged = dir.path().join("c.parquet");
        write(&damaged, Some("{not json".into()));
        assert_eq!(MetricCatalog::of_file(&damaged).unwrap(), Some(expected));
        let too_many = dir.path().join("d.parquet");
        write(&too_many, Some("null".into()));
        assert_eq!(MetricCatalog::of_file(&too_many).unwrap(), None);
    }

    #[test]
    fn a_flood_of_metric_names_is_too_large_to_keep() {
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("m{i}")).collect();
        let rows: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), "gauge", None, None, 1))
            .collect();
        let mut catalog = MetricCatalog::default();
        catalog.add_batch(&batch(&rows, true)).unwrap();
        assert!(catalog.too_large());
        assert_eq!(catalog.footer_value(), "null");
    }
}
