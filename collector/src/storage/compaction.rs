//! Compaction: an hour's small Parquet files merged into fewer, larger ones.
//!
//! Every statement opens each file of the hours it reads (~0.8 ms a file before it reads a
//! row), and a busy hour gets a file per flush: 60 at the default interval, hundreds when
//! flushes happen under memory pressure. Files are merged `fan_in` at a time among files of the
//! same level (how many merges their rows went through), so a row is rewritten about
//! log_fan_in(flushes per hour) times and the current hour never holds more than
//! `fan_in - 1` files of a level; once an hour is over, its small files become one. A merged
//! file is sorted by the table's keys throughout (a flush's file only within chunks), so its
//! row groups' statistics narrow: a statement over one metric reads the row groups of that
//! metric, not every row group the flushes mixed it into.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;

use super::metric_catalog::MetricCatalog;
use super::parquet_files::{
    HOUR_NS, ParquetFile, file_name, hour_dir, is_sorted, mark_sorted, sort_by_hour, sort_keys,
    write_catalog, writer_properties,
};
use super::{StorageConfig, StoreError, io_err};

/// When and how files are merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// How many files of one level (and hour) are merged into one; below 2, compaction is off.
    pub fan_in: usize,
    /// Files this big or bigger are left as they are.
    pub max_file_bytes: u64,
    /// How often compaction looks for work (it goes on while it finds some).
    pub check_interval_secs: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            fan_in: 4,
            max_file_bytes: 256 << 20,
            check_interval_secs: 10,
        }
    }
}

/// The most files one merge reads: it holds a batch of each at once.
const MAX_RUN_FILES: usize = 32;

/// The next run of one table's files to merge, if any: files of one hour, consecutive in LSN
/// order (so that the merged file's LSN range holds exactly its inputs), each under
/// `max_file_bytes`. In an hour still being written, `fan_in` consecutive files of one level;
/// in an hour that ended more than `settle_ns` ago, the whole run of small files (up to
/// `max_file_bytes` together; files that came late to a merged file join it only once they are
/// a `fan_in`-th of its size). `files` are sorted by hour, then LSN; `skip` tells inputs that
/// failed before.
pub fn pick(
    files: &[ParquetFile],
    now_ns: i64,
    settle_ns: i64,
    config: &CompactionConfig,
    skip: impl Fn(&ParquetFile) -> bool,
) -> Option<Vec<ParquetFile>> {
    if config.fan_in < 2 {
        return None;
    }
    let small = |f: &ParquetFile| f.size < config.max_file_bytes && !skip(f);
    for hour in files.chunk_by(|a, b| a.hour_start_ns == b.hour_start_ns) {
        let settled = hour[0]
            .hour_start_ns
            .saturating_add(HOUR_NS)
            .saturating_add(settle_ns)
            < now_ns;
        for run in hour.split(|f| !small(f)) {
            if settled {
                // Rows that come late to an hour already merged (the spans of a long call, stored
                // at its start) would have the merged file rewritten for each flush of a few of
                // them: they are merged among themselves until they add up to a `fan_in`-th of
                // the larger file before them, so a byte is rewritten a bounded number of times.
                // The size limit counts from the first file merged, not from the big file passed
                // over: else late files after a file near the limit would never merge.
                let mut start = 0;
                while run.len() - start >= 2 {
                    let rest = &run[start..];
                    let mut total = 0;
                    let take = rest
                        .iter()
                        .take(MAX_RUN_FILES)
                        .take_while(|f| {
                            total += f.size;
                            total <= config.max_file_bytes
                        })
                        .count()
                        .max(2);
                    let later: u64 = rest[1..take].iter().map(|f| f.size).sum();
                    if rest[0].size > config.fan_in as u64 * later {
                        start += 1;
                        continue;
                    }
                    return Some(rest[..take].to_vec());
                }
                continue;
            }
            if let Some(window) = run
                .windows(config.fan_in.min(MAX_RUN_FILES))
                .find(|w| w.iter().all(|f| f.level == w[0].level))
            {
                return Some(window.to_vec());
            }
        }
    }
    None
}

/// Merges `inputs` (files of one hour, consecutive in LSN order) into one file sorted by the
/// table's keys, committed by its rename. DataFusion merges the sorted inputs and sorts the
/// others first within `memory_bytes`, spilling to `spill_dir` past that, on this thread alone
/// (a merge takes at most one core from ingest and queries). Returns `None`, with nothing left
/// behind, when `cancel` is raised midway.
pub fn compact(
    dir: &Path,
    table: Table,
    inputs: &[ParquetFile],
    config: &StorageConfig,
    memory_bytes: usize,
    spill_dir: &Path,
    cancel: &AtomicBool,
) -> Result<Option<ParquetFile>, StoreError> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Ok(None);
    };
    let hour = first.hour_start_ns;
    let first_lsn = inputs
        .iter()
        .map(|f| f.first_lsn)
        .min()
        .unwrap_or(first.lsn);
    let lsn = inputs.iter().map(|f| f.lsn).max().unwrap_or(last.lsn);
    let level = inputs
        .iter()
        .map(|f| f.level)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let target_dir = hour_dir(dir, hour);
    let name = file_name(first_lsn, lsn, level);
    let path = target_dir.join(&name);
    let tmp = target_dir.join(format!("{name}.tmp"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err(&tmp))?;
    let written = runtime.block_on(write_sorted(
        table,
        inputs,
        config,
        memory_bytes,
        spill_dir,
        &tmp,
        cancel,
    ));
    let file = match written {
        Ok(Some(file)) => file,
        Ok(None) => {
            let _ = fs::remove_file(&tmp);
            return Ok(None);
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all().map_err(io_err(&tmp))?;
    let size = file.metadata().map_err(io_err(&tmp))?.len();
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fs::File::open(&target_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&target_dir))?;
    Ok(Some(ParquetFile {
        path,
        size,
        hour_start_ns: hour,
        lsn,
        first_lsn,
        level,
    }))
}

/// Copies of unsorted inputs, sorted, in the spill directory; deleted when dropped.
struct SortedCopies(Vec<PathBuf>);

impl Drop for SortedCopies {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// A scan of one Parquet file at `path`.
fn scan(path: &Path, schema: &SchemaRef) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let size = fs::metadata(path)?.len();
    let file = ParquetFile {
        path: path.to_path_buf(),
        size,
        hour_start_ns: 0,
        lsn: 0,
        first_lsn: 0,
        level: 0,
    };
    let config = FileScanConfigBuilder::new(
        ObjectStoreUrl::local_filesystem(),
        Arc::new(ParquetSource::new(schema.clone())),
    )
    .with_file_groups(vec![FileGroup::new(vec![file.partitioned()?])])
    .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Reads `inputs` sorted by the table's keys and writes them to `tmp`.
///
/// Files already sorted throughout (merged ones, and flushes that fit in one sorted chunk) are
/// merged as they are. Each of the others is first sorted alone, with the whole memory (one
/// sort at a time: side by side, a few unsorted inputs left each sort less than a batch), into
/// an uncompressed copy in the spill directory.
async fn write_sorted(
    table: Table,
    inputs: &[ParquetFile],
    config: &StorageConfig,
    memory_bytes: usize,
    spill_dir: &Path,
    tmp: &Path,
    cancel: &AtomicBool,
) -> Result<Option<fs::File>, StoreError> {
    let query_err = |e: DataFusionError| StoreError::Parquet {
        path: tmp.to_path_buf(),
        message: format!("merging files: {}", e.strip_backtrace()),
    };
    let parquet_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: parquet::errors::ParquetError| StoreError::Parquet {
            path,
            message: e.to_string(),
        }
    };
    let schema = table.schema();
    fs::create_dir_all(spill_dir).map_err(io_err(spill_dir))?;
    // The sort keeps a quarter back for merging its spilled runs (10 MiB by default, more than
    // a small limit holds).
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .with_temp_file_path(spill_dir)
        .build_arc()
        .map_err(query_err)?;
    let session = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(4096)
        .with_sort_spill_reservation_bytes(memory_bytes / 4);
    let context = SessionContext::new_with_config_rt(session, runtime);
    let ordering = sort_keys(table)
        .iter()
        .map(|key| Ok(PhysicalSortExpr::new_default(physical_col(key, &schema)?)))
        .collect::<Result<Vec<_>, DataFusionError>>()
        .map_err(query_err)?;
    let ordering = LexOrdering::new(ordering).ok_or_else(|| StoreError::Parquet {
        path: tmp.to_path_buf(),
        message: "the table has no sort keys".into(),
    })?;

    let mut copies = SortedCopies(Vec::new());
    let mut runs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(inputs.len());
    for input in inputs {
        if is_sorted(&input.path, table)? {
            runs.push(scan(&input.path, &schema).map_err(query_err)?);
            continue;
        }
        let name = input.path.file_name().unwrap_or_default().to_string_lossy();
        let copy = spill_dir.join(format!("{name}.sorted"));
        copies.0.push(copy.clone());
        let sort = Arc::new(SortExec::new(
            ordering.clone(),
            scan(&input.path, &schema).map_err(query_err)?,
        ));
        let mut sorted = execute_stream(sort, context.task_ctx()).map_err(query_err)?;
        let file = fs::File::create(&copy).map_err(io_err(&copy))?;
        let plain = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build();
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(plain)).map_err(parquet_err(&copy))?;
        while let Some(batch) = sorted.next().await {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            writer
                .write(&batch.map_err(query_err)?)
                .map_err(parquet_err(&copy))?;
        }
        writer.close().map_err(parquet_err(&copy))?;
        runs.push(scan(&copy, &schema).map_err(query_err)?);
    }
    let runs: Arc<dyn ExecutionPlan> = if runs.len() == 1 {
        runs.remove(0)
    } else {
        UnionExec::try_new(runs).map_err(query_err)?
    };
    // The merge holds a batch of every input at once, which it cannot spill: batches small
    // enough that all of them together are MERGE_ROWS rows, whatever the number of inputs
    // (Parquet's sizes say little of a row's size in memory, so rows are what is bounded).
    let batch_rows = (MERGE_ROWS / inputs.len().max(1)).clamp(64, MERGE_ROWS);
    let merge_context =
        SessionContext::new_with_config(context.copied_config().with_batch_size(batch_rows));
    let plan = Arc::new(SortPreservingMergeExec::new(ordering, runs));
    let mut sorted = execute_stream(plan, merge_context.task_ctx()).map_err(query_err)?;

    let file = fs::File::create(tmp).map_err(io_err(tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(table, config)))
            .map_err(parquet_err(tmp))?;
    // Derived rows of one minute from different flushes are neighbours once sorted: merged in
    // runs of this many rows, a minute becomes one row again (or two, across a run's edge).
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut catalog = (table == Table::Metrics).then(MetricCatalog::default);
    while let Some(batch) = sorted.next().await {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let batch = batch.map_err(query_err)?;
        if let Some(catalog) = &mut catalog {
            catalog.add_batch(&batch)?;
        }
        if !table.is_derived() {
            writer.write(&batch).map_err(parquet_err(tmp))?;
            continue;
        }
        pending_rows += batch.num_rows();
        pending.push(batch);
        if pending_rows >= DERIVED_RUN_ROWS {
            write_merged(table, &mut pending, &mut writer, tmp)?;
            pending_rows = 0;
        }
    }
    write_merged(table, &mut pending, &mut writer, tmp)?;
    mark_sorted(&mut writer, table);
    if let Some(catalog) = &catalog {
        write_catalog(&mut writer, catalog);
    }
    writer.into_inner().map(Some).map_err(parquet_err(tmp))
}

const DERIVED_RUN_ROWS: usize = 64 * 1024;

/// Rows a merge holds at once across its inputs.
const MERGE_ROWS: usize = 8192;

/// Merges a run of sorted derived rows and writes it, sorted again.
fn write_merged(
    table: Table,
    pending: &mut Vec<RecordBatch>,
    writer: &mut ArrowWriter<fs::File>,
    tmp: &Path,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let merged = table.merge_derived(pending)?;
    pending.clear();
    let merged = concat_batches(&table.schema(), &merged)?;
    let (sorted, _) = sort_by_hour(tmp, table, &merged)?;
    writer.write(&sorted).map_err(|e| StoreError::Parquet {
        path: tmp.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(hour: i64, lsn: u64, level: u8, size: u64) -> ParquetFile {
        ParquetFile {
            path: PathBuf::from(format!("{hour}/{lsn}")),
            size,
            hour_start_ns: hour * HOUR_NS,
            lsn,
            first_lsn: lsn,
            level,
        }
    }

    fn lsns(run: Option<Vec<ParquetFile>>) -> Vec<u64> {
        run.unwrap_or_default().iter().map(|f| f.lsn).collect()
    }

    #[test]
    fn an_open_hour_merges_fan_in_files_of_one_level() {
        let config = CompactionConfig::default();
        let now = 10 * HOUR_NS + 60_000_000_000;
        let hour = |files: &[(u64, u8)]| -> Vec<ParquetFile> {
            files
                .iter()
                .map(|&(lsn, level)| file(10, lsn, level, 1 << 20))
                .collect()
        };
        let pick = |files: &[ParquetFile]| lsns(pick(files, now, 0, &config, |_| false));
        assert!(pick(&hour(&[(1, 0), (2, 0), (3, 0)])).is_empty());
        assert_eq!(pick(&hour(&[(1, 0), (2, 0), (3, 0), (4, 0)])), [1, 2, 3, 4]);
        // Three of level 1, then four of level 0: the fresh ones, not the merged ones again.
        let mixed = hour(&[(4, 1), (8, 1), (12, 1), (13, 0), (14, 0), (15, 0), (16, 0)]);
        assert_eq!(pick(&mixed), [13, 14, 15, 16]);
        assert_eq!(
            pick(&hour(&[(4, 1), (8, 1), (12, 1), (16, 1)])),
            [4, 8, 12, 16]
        );
        // Off below a fan-in of 2.
        let off = CompactionConfig {
            fan_in: 1,
            ..config.clone()
        };
        assert!(super::pick(&hour(&[(1, 0), (2, 0)]), now, 0, &off, |_| false).is_none());
    }

    #[test]
    fn a_big_or_failed_file_splits_the_run_and_is_left_alone() {
        let config = CompactionConfig::default();
        let now = 10 * HOUR_NS;
        let mut files: Vec<ParquetFile> = (1..=4).map(|lsn| file(9, lsn, 0, 1 << 20)).collect();
        files[2].size = config.max_file_bytes;
        // [1, 2] and [4] around the big file 3: no run of four.
        assert!(pick(&files, now, HOUR_NS, &config, |_| false).is_none());
        files[2].size = 1;
        assert!(pick(&files, now, HOUR_NS, &config, |f| f.lsn == 3).is_none());
        assert_eq!(
            lsns(pick(&files, now, HOUR_NS, &config, |_| false)),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn a_settled_hour_merges_its_small_files_up_to_the_size_limit() {
        let config = CompactionConfig {
            max_file_bytes: 100,
            ..CompactionConfig::default()
        };
        let settle = 120_000_000_000;
        let files = vec![
            file(8, 1, 2, 40),
            file(8, 2, 0, 30),
            file(8, 3, 0, 40),
            file(9, 4, 0, 10),
            file(9, 5, 0, 10),
        ];
        // Hour 8 ended two hours ago: its first two files fit in 100 bytes, the third not.
        let now = 10 * HOUR_NS;
        assert_eq!(lsns(pick(&files, now, settle, &config, |_| false)), [1, 2]);
        // Hour 9 ended a minute ago: not settled, and two files are not a fan-in.
        assert_eq!(
            lsns(pick(
                &files[3..],
                now + 60_000_000_000,
                settle,
                &config,
                |_| false
            )),
            Vec::<u64>::new()
        );
        assert_eq!(
            lsns(pick(&files[3..], now + 3 * settle, settle, &config, |_| {
                false
            })),
            [4, 5]
        );
    }

    /// A merged hour is not rewritten for each late flush of a few rows: the late files are
    /// merged among themselves until they are a `fan_in`-th of the merged file's size.
    #[test]
    fn late_rows_in_a_merged_hour_do_not_rewrite_it_each_time() {
        let config = CompactionConfig::default();
        let now = 11 * HOUR_NS; // hour 8 ended two hours ago, a settle of one
        let merged = file(8, 100, 3, 200 << 20);
        let late = |lsn, size| file(8, lsn, 0, size);
        let pick = |files: &[ParquetFile]| lsns(pick(files, now, HOUR_NS, &config, |_| false));
        assert!(pick(&[merged.clone(), late(101, 10 << 10)]).is_empty());
        assert_eq!(
            pick(&[merged.clone(), late(101, 10 << 10), late(102, 10 << 10)]),
            [101, 102]
        );
        // Behind a merged file near the size limit, late files still merge among themselves
        // (they were left as they came, once: the limit was counted from the merged file).
        let near_limit = file(8, 100, 5, 250 << 20);
        let mut files = vec![near_limit.clone(), file(8, 150, 1, 18 << 20)];
        files.extend((151..167).map(|lsn| late(lsn, 2 << 20)));
        assert_eq!(pick(&files), (150..167).collect::<Vec<u64>>());
        let merged_late = file(8, 166, 2, 50 << 20);
        assert!(pick(&[near_limit, merged_late]).is_empty());
        // Once the late rows add up to a quarter of it, the merged file takes them in.
        assert_eq!(
            pick(&[merged.clone(), late(101, 25 << 20), late(102, 25 << 20)]),
            [100, 101, 102]
        );
    }
}
