//! Parquet files under `tables/{table}/date=YYYY-MM-DD/hour=HH/`: one per hour and flush
//! (`{lsn}.parquet`, the flush's highest LSN), and compactions of a run of an hour's files
//! (`{first}-{last}-c{level}.parquet`, the LSN range of the flushes they hold).
//!
//! A compacted file is committed by its rename; its inputs are deleted after it. A crash in
//! between leaves both, and [`recover`] deletes the files whose LSN range another file of the
//! same hour covers: a run is always every file of the hour within its range, so a covered
//! file's rows are all in the covering one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, TimestampNanosecondArray};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Timelike};
use datafusion::common::DataFusionError;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::object_store::{self, ObjectMeta};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use vigil_schemas::{Table, col, metric_col, span_col};

use super::metric_catalog::{self, MetricCatalog};
use super::{StorageConfig, StoreError, io_err};

pub(super) const HOUR_NS: i64 = 3_600_000_000_000;

/// A committed Parquet file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetFile {
    /// Absolute or data-dir-relative path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Start of the hour its rows' `time` falls in.
    pub hour_start_ns: i64,
    /// The highest LSN of the flush that wrote it (of the last flush, for a compaction).
    pub lsn: u64,
    /// The first flush's LSN, for a compaction; `lsn` for a flush's file.
    pub first_lsn: u64,
    /// How many compactions its rows went through: 0 for a flush's file.
    pub level: u8,
}

impl ParquetFile {
    /// The file as DataFusion's local object store names it. The store only knows absolute
    /// paths, given as object paths (`PartitionedFile::new` would turn `./x` into `%2E/x`).
    pub fn partitioned(&self) -> datafusion::common::Result<PartitionedFile> {
        let location = object_store::path::Path::from_absolute_path(&self.path).map_err(|e| {
            DataFusionError::Internal(format!(
                "Parquet file {} has no object-store path: {e}",
                self.path.display()
            ))
        })?;
        Ok(PartitionedFile::new_from_meta(ObjectMeta {
            location,
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size: self.size,
            e_tag: None,
            version: None,
        }))
    }

    /// Whether this file's LSN range holds the other's (and is not the other).
    fn covers(&self, other: &ParquetFile) -> bool {
        self.first_lsn <= other.first_lsn
            && other.lsn <= self.lsn
            && (self.first_lsn, self.lsn) != (other.first_lsn, other.lsn)
    }

    /// Whether the file may hold rows with `time` in `[lo, hi]`.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.hour_start_ns <= hi && self.hour_start_ns.saturating_add(HOUR_NS) > lo
    }
}

pub(super) fn sort_keys(table: Table) -> &'static [&'static str] {
    match table {
        // By time within a service: most reads of spans are of a time range (the recent calls,
        // the detectors' windows, Jaeger's searches), and a merged hour's row groups then each
        // hold a stretch of time that the range skips or takes; a trace is found by its id's
        // bloom filter.
        Table::Spans => &[col::SERVICE_NAME, col::TIME],
        Table::Metrics => &[metric_col::METRIC_NAME, col::SERVICE_NAME, col::TIME],
        Table::Logs => &[col::SERVICE_NAME, col::TIME],
        Table::Alerts => &[col::TIME],
        Table::LlmMinutes => &[col::SERVICE_NAME, span_col::REQUEST_MODEL, col::TIME],
        Table::GpuMinutes => &[metric_col::METRIC_NAME, "uuid", col::TIME],
    }
}

pub(super) fn hour_dir(dir: &Path, hour_start_ns: i64) -> PathBuf {
    let t = DateTime::from_timestamp_nanos(hour_start_ns);
    dir.join(format!("date={}", t.format("%Y-%m-%d")))
        .join(format!("hour={:02}", t.hour()))
}

/// The file name for a flush (`first == last`, level 0) or a compaction.
pub(super) fn file_name(first_lsn: u64, lsn: u64, level: u8) -> String {
    if level == 0 {
        format!("{lsn:020}.parquet")
    } else {
        format!("{first_lsn:020}-{lsn:020}-c{level}.parquet")
    }
}

/// `(first_lsn, lsn, level)` of a file name written by [`file_name`].
fn parse_file_name(name: &str) -> Option<(u64, u64, u8)> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let first: u64 = parts.next()?.parse().ok()?;
    let Some(last) = parts.next() else {
        return Some((first, first, 0));
    };
    let last: u64 = last.parse().ok()?;
    let level: u8 = parts.next()?.strip_prefix('c')?.parse().ok()?;
    (parts.next().is_none() && first <= last && level > 0).then_some((first, last, level))
}

/// The working memory of a flush beyond the buffers it writes out: rows are sorted in chunks of
/// about this many bytes, and a row group is closed once its encoded pages reach it. An eighth
/// of the memory limit, so that flushing under pressure cannot take the process far past it.
pub(super) fn chunk_bytes(config: &StorageConfig) -> usize {
    ((config.memory_limit_bytes / 8) as usize).clamp(1 << 20, 64 << 20)
}

/// One open output file of a flush.
struct HourWriter {
    writer: ArrowWriter<fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    /// The sorted chunks whose rows it holds: with one, the file is sorted throughout.
    chunks: usize,
    /// The metrics its rows hold, for its footer (`metrics` files only).
    catalog: Option<MetricCatalog>,
}

/// Adds a `metrics` file's catalog to its footer, before it is closed.
pub(super) fn write_catalog(writer: &mut ArrowWriter<fs::File>, catalog: &MetricCatalog) {
    writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
        metric_catalog::FOOTER_KEY.to_string(),
        catalog.footer_value(),
    ));
}

/// Key-value metadata of a file sorted by its table's keys throughout (a flush sorts its rows
/// in chunks, so a big flush's file is not): compaction merges such files without sorting them.
/// Its value names the keys, so that a file sorted by keys since changed is sorted again.
pub(super) const SORTED_KEY: &str = "vigil.sorted";

fn sorted_value(table: Table) -> String {
    sort_keys(table).join(",")
}

/// Marks a file of `table` about to be closed as sorted throughout by the table's keys.
pub(super) fn mark_sorted(writer: &mut ArrowWriter<fs::File>, table: Table) {
    writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
        SORTED_KEY.to_string(),
        sorted_value(table),
    ));
}

/// Whether a file of `table` says it is sorted throughout by the table's keys as they are now.
pub(super) fn is_sorted(path: &Path, table: Table) -> Result<bool, StoreError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|e| {
        StoreError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let metadata = parquet::file::reader::FileReader::metadata(&reader);
    let keys = sorted_value(table);
    Ok(metadata
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|pairs| {
            pairs
                .iter()
                .any(|kv| kv.key == SORTED_KEY && kv.value.as_deref() == Some(keys.as_str()))
        }))
}

/// Files a flush may have open at once. Rows spread over more hours than this are written in
/// passes, a group of hours at a time, so that a request with timestamps an hour apart cannot
/// open thousands of files (and descriptors, and writer buffers) at once.
pub const MAX_OPEN_WRITERS: usize = 16;

/// Writes one flush: rows grouped by hour (one file per hour), sorted within chunks for compression.
pub fn write_flush(
    dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    lsn: u64,
    config: &StorageConfig,
) -> Result<Vec<ParquetFile>, StoreError> {
    let hours = distinct_hours(dir, batches)?;
    let mut files = Vec::with_capacity(hours.len());
    for group in hours.chunks(MAX_OPEN_WRITERS) {
        let range = match group {
            _ if group.len() == hours.len() => None,
            [first, .., last] => Some((*first, *last + HOUR_NS)),
            [only] => Some((*only, *only + HOUR_NS)),
            [] => None,
        };
        files.extend(write_hours(dir, table, batches, lsn, config, range)?);
    }
    Ok(files)
}

/// The hours (their starts, ascending) that the batches' rows fall in.
fn distinct_hours(dir: &Path, batches: &[RecordBatch]) -> Result<Vec<i64>, StoreError> {
    let mut hours = std::collections::BTreeSet::new();
    for batch in batches {
        // A missing time sorts into hour 0, as in `sort_by_hour`.
        for t in time_column(dir, batch)?.iter() {
            hours.insert(t.unwrap_or(0).div_euclid(HOUR_NS) * HOUR_NS);
        }
    }
    Ok(hours.into_iter().collect())
}

fn time_column<'a>(
    dir: &Path,
    batch: &'a RecordBatch,
) -> Result<&'a TimestampNanosecondArray, StoreError> {
    batch
        .column_by_name(col::TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| StoreError::Parquet {
            path: dir.to_path_buf(),
            message: "batch has no time column".into(),
        })
}

/// The most rows of a data page.
const PAGE_ROWS: usize = 4096;
/// The largest dictionary page of a column chunk.
const DICTIONARY_BYTES: usize = 64 << 10;

pub(super) fn writer_properties(table: Table, config: &StorageConfig) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(config.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1024)))
        // Pages are what the page index skips: at the default 20,000 rows, the last minutes of
        // a metric or a service in a merged hour, or one metric among the rollups', share their
        // pages with much else that is then decompressed and decoded for nothing.
        .set_data_page_row_count_limit(PAGE_ROWS)
        // Reading any page of a dictionary-encoded column chunk reads its dictionary first. At
        // the default 1 MiB, the chunks of times, ids and costs (nearly all distinct) kept
        // dictionaries of a MiB each, so the newest calls' few pages cost ~10 MB of dictionary
        // reads; with a small one such columns fall back to plain pages early, and the columns
        // a dictionary suits (names, models, services) fit in it anyway.
        .set_dictionary_page_size_limit(DICTIONARY_BYTES);
    // A trace is looked up by its id (the TUI's waterfall, Jaeger's API), but files are sorted
    // by service first, so every row group's id range covers nearly all ids: a bloom filter
    // lets a lookup skip the row groups that do not hold it (sized for a row group of distinct
    // ids: about 1.2 bytes per span at 1% false positives).
    if matches!(table, Table::Spans | Table::Logs) {
        let trace_id = ColumnPath::from(col::TRACE_ID);
        props = props
            .set_column_bloom_filter_enabled(trace_id.clone(), true)
            .set_column_bloom_filter_fpp(trace_id, 0.01);
    }
    props.build()
}

/// Writes the rows whose time is in `range` (`[lo, hi)`; all rows when `None`), one file per hour.
fn write_hours(
    dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    lsn: u64,
    config: &StorageConfig,
    range: Option<(i64, i64)>,
) -> Result<Vec<ParquetFile>, StoreError> {
    let schema = table.schema();
    let props = writer_properties(table, config);
    let budget = chunk_bytes(config);
    let mut writers: BTreeMap<i64, HourWriter> = BTreeMap::new();
    let mut chunk_start = 0;
    while chunk_start < batches.len() {
        let mut chunk_end = chunk_start;
        let mut bytes = 0;
        while chunk_end < batches.len()
            && (bytes == 0 || bytes + batches[chunk_end].get_array_memory_size() <= budget)
        {
            bytes += batches[chunk_end].get_array_memory_size();
            chunk_end += 1;
        }
        let chunk = concat_batches(&schema, &batches[chunk_start..chunk_end])?;
        chunk_start = chunk_end;
        let chunk = match range {
            None => chunk,
            Some((lo, hi)) => {
                let time = time_column(dir, &chunk)?;
                let in_range: arrow::array::BooleanArray = time
                    .iter()
                    .map(|t| Some((lo..hi).contains(&t.unwrap_or(0))))
                    .collect();
                arrow::compute::filter_record_batch(&chunk, &in_range)?
            }
        };
        if chunk.num_rows() == 0 {
            continue;
        }
        let (sorted, hours) = sort_by_hour(dir, table, &chunk)?;
        drop(chunk);
        let mut written_to = std::collections::BTreeSet::new();
        let mut start = 0;
        while start < sorted.num_rows() {
            let hour = hours.value(start);
            let mut end = start + 1;
            while end < sorted.num_rows() && hours.value(end) == hour {
                end += 1;
            }
            let out = match writers.entry(hour) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let target_dir = hour_dir(dir, hour);
                    fs::create_dir_all(&target_dir).map_err(io_err(&target_dir))?;
                    let path = target_dir.join(file_name(lsn, lsn, 0));
                    let tmp = target_dir.join(format!("{}.tmp", file_name(lsn, lsn, 0)));
                    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
                    let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
                        .map_err(|e| StoreError::Parquet {
                            path: tmp.clone(),
                            message: e.to_string(),
                        })?;
                    e.insert(HourWriter {
                        writer,
                        tmp,
                        path,
                        dir: target_dir,
                        chunks: 0,
                        catalog: (table == Table::Metrics).then(MetricCatalog::default),
                    })
                }
            };
            let parquet_err = |e: parquet::errors::ParquetError| StoreError::Parquet {
                path: out.tmp.clone(),
                message: e.to_string(),
            };
            let rows = sorted.slice(start, end - start);
            if let Some(catalog) = &mut out.catalog {
                catalog.add_batch(&rows)?;
            }
            out.writer.write(&rows).map_err(parquet_err)?;
            if written_to.insert(hour) {
                out.chunks += 1;
            }
            if out.writer.in_progress_size() >= budget {
                out.writer.flush().map_err(parquet_err)?;
            }
            start = end;
        }
    }

    let mut files = Vec::with_capacity(writers.len());
    for (hour, mut out) in writers {
        if out.chunks == 1 {
            mark_sorted(&mut out.writer, table);
        }
        if let Some(catalog) = &out.catalog {
            write_catalog(&mut out.writer, catalog);
        }
        let file = out.writer.into_inner().map_err(|e| StoreError::Parquet {
            path: out.tmp.clone(),
            message: e.to_string(),
        })?;
        file.sync_all().map_err(io_err(&out.tmp))?;
        let size = file.metadata().map_err(io_err(&out.tmp))?.len();
        fs::rename(&out.tmp, &out.path).map_err(io_err(&out.path))?;
        fs::File::open(&out.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&out.dir))?;
        files.push(ParquetFile {
            path: out.path,
            size,
            hour_start_ns: hour,
            lsn,
            first_lsn: lsn,
            level: 0,
        });
    }
    Ok(files)
}

/// Sorts a chunk by (hour, the table's sort keys) and returns it with each row's hour.
pub(super) fn sort_by_hour(
    dir: &Path,
    table: Table,
    chunk: &RecordBatch,
) -> Result<(RecordBatch, Int64Array), StoreError> {
    let time = time_column(dir, chunk)?;
    let hours: Int64Array = time
        .iter()
        .map(|t| t.map(|t| t.div_euclid(HOUR_NS) * HOUR_NS))
        .collect();
    let hours: ArrayRef = Arc::new(hours);
    let mut sort_columns = vec![SortColumn {
        values: hours.clone(),
        options: None,
    }];
    for key in sort_keys(table) {
        if let Some(column) = chunk.column_by_name(key) {
            sort_columns.push(SortColumn {
                values: column.clone(),
                options: None,
            });
        }
    }
    let indices = lexsort_to_indices(&sort_columns, None)?;
    let sorted = take_record_batch(chunk, &indices)?;
    let sorted_hours = arrow::compute::take(hours.as_ref(), &indices, None)?;
    let sorted_hours = sorted_hours
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("hours are Int64")
        .clone();
    Ok((sorted, sorted_hours))
}

fn parse_hour(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(date_dir.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    date.and_hms_opt(hour, 0, 0)?
        .and_utc()
        .timestamp_nanos_opt()
}

/// Lists a table's committed files; deletes temporary files, files of a flush that did not
/// commit (LSN past the manifest), whose rows the WAL replays, and the inputs of a compaction
/// that committed before they were deleted.
pub fn recover(dir: &Path, flushed_lsn: u64) -> Result<Vec<ParquetFile>, StoreError> {
    let mut files = Vec::new();
    for date in fs::read_dir(dir).map_err(io_err(dir))? {
        let date = date.map_err(io_err(dir))?;
        if !date.file_type().map_err(io_err(dir))?.is_dir() {
            continue;
        }
        let date_name = date.file_name().to_string_lossy().into_owned();
        for hour in fs::read_dir(date.path()).map_err(io_err(&date.path()))? {
            let hour = hour.map_err(io_err(&date.path()))?;
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            let Some(hour_start_ns) = parse_hour(&date_name, &hour_name) else {
                tracing::warn!(path = %hour.path().display(), "ignoring a directory that is not a date=/hour= partition");
                continue;
            };
            let mut in_hour = Vec::new();
            for entry in fs::read_dir(hour.path()).map_err(io_err(&hour.path()))? {
                let entry = entry.map_err(io_err(&hour.path()))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                let Some((first_lsn, lsn, level)) = parse_file_name(&name) else {
                    continue;
                };
                if lsn > flushed_lsn {
                    tracing::info!(path = %path.display(), "deleting a Parquet file of an uncommitted flush; the WAL replays its rows");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                let size = entry.metadata().map_err(io_err(&path))?.len();
                in_hour.push(ParquetFile {
                    path,
                    size,
                    hour_start_ns,
                    lsn,
                    first_lsn,
                    level,
                });
            }
            for file in &in_hour {
                if in_hour.iter().any(|other| other.covers(file)) {
                    tracing::info!(path = %file.path.display(), "deleting a Parquet file whose rows a merged file holds (its deletion was still pending when the collector stopped)");
                    fs::remove_file(&file.path).map_err(io_err(&file.path))?;
                } else {
                    files.push(file.clone());
                }
            }
        }
    }
    files.sort_by_key(|f| (f.hour_start_ns, f.lsn));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_marked(path: &Path, marker: Option<&str>) {
        let batch = RecordBatch::try_from_iter([(
            "time",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        )])
        .unwrap();
        let mut writer =
            ArrowWriter::try_new(fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        match marker {
            Some(value) => writer.append_key_value_metadata(
                parquet::file::metadata::KeyValue::new(SORTED_KEY.into(), value.to_string()),
            ),
            None => mark_sorted(&mut writer, Table::Spans),
        }
        writer.close().unwrap();
    }

    /// A file sorted by the keys of an older version (marked `true`, when spans were sorted by
    /// service, name, trace and time) is not merged as if sorted by today's keys.
    #[test]
    fn only_a_file_sorted_by_the_current_keys_counts_as_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let (current, older) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write_marked(&current, None);
        write_marked(&older, Some("true"));
        assert!(is_sorted(&current, Table::Spans).unwrap());
        assert!(!is_sorted(&older, Table::Spans).unwrap());
        assert!(!is_sorted(&current, Table::Metrics).unwrap());
    }
}
