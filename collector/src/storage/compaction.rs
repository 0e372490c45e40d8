//! Compaction: an hour's small Parquet files merged into fewer, larger ones.
//!
//! Every statement opens each file of the hours it reads (~0.8 ms a file before it reads a
//! row), and a busy hour gets a file per flush: 60 at the default interval, hundreds when
//! flushes happen under memory pressure. Files are merged `fan_in` at a time among files of the
//! same level (how many merges their rows went through), so a row is rewritten about
//! log_fan_in(flushes per hour) times and the current hour never holds more than
//! `fan_in - 1` files of a level; once an hour is over, its small files become one.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;

use super::parquet_files::{
    HOUR_NS, ParquetFile, file_name, hour_dir, sort_by_hour, writer_properties,
};
use super::{StorageConfig, StoreError, conform, io_err};

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

/// The next run of one table's files to merge, if any: files of one hour, consecutive in LSN
/// order (so that the merged file's LSN range holds exactly its inputs), each under
/// `max_file_bytes`. In an hour still being written, `fan_in` consecutive files of one level;
/// in an hour that ended more than `settle_ns` ago, the whole run of small files (up to
/// `max_file_bytes` together). `files` are sorted by hour, then LSN; `skip` tells inputs that
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
            if settled && run.len() >= 2 {
                let mut total = 0;
                let take = run
                    .iter()
                    .take_while(|f| {
                        total += f.size;
                        total <= config.max_file_bytes
                    })
                    .count()
                    .max(2);
                return Some(run[..take].to_vec());
            }
            if let Some(window) = run
                .windows(config.fan_in)
                .find(|w| w.iter().all(|f| f.level == w[0].level))
            {
                return Some(window.to_vec());
            }
        }
    }
    None
}

/// Merges `inputs` (files of one hour, consecutive in LSN order) into one file sorted by the
/// table's keys in chunks of about `chunk_bytes`, committed by its rename. Returns `None`, with
/// nothing left behind, when `cancel` is raised midway.
pub fn compact(
    dir: &Path,
    table: Table,
    inputs: &[ParquetFile],
    config: &StorageConfig,
    chunk_bytes: usize,
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
    let schema = table.schema();
    let parquet_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: parquet::errors::ParquetError| StoreError::Parquet {
            path,
            message: e.to_string(),
        }
    };

    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(table, config)))
            .map_err(parquet_err(&tmp))?;
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_size = 0;
    let write_chunk = |chunk: &mut Vec<RecordBatch>,
                       writer: &mut ArrowWriter<fs::File>|
     -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        // Derived rows of one minute from different flushes become one row again.
        let rows = if table.is_derived() {
            table.merge_derived(chunk)?
        } else {
            std::mem::take(chunk)
        };
        chunk.clear();
        let rows = concat_batches(&schema, &rows)?;
        let (sorted, _) = sort_by_hour(dir, table, &rows)?;
        drop(rows);
        writer.write(&sorted).map_err(parquet_err(&tmp))?;
        if writer.in_progress_size() >= chunk_bytes {
            writer.flush().map_err(parquet_err(&tmp))?;
        }
        Ok(())
    };
    let result = (|| -> Result<bool, StoreError> {
        for input in inputs {
            let file = fs::File::open(&input.path).map_err(io_err(&input.path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|builder| builder.with_batch_size(8192).build())
                .map_err(parquet_err(&input.path))?;
            for batch in reader {
                let batch = conform(batch?, &schema)?;
                chunk_size += batch.get_array_memory_size();
                chunk.push(batch);
                if chunk_size >= chunk_bytes {
                    write_chunk(&mut chunk, &mut writer)?;
                    chunk_size = 0;
                    if cancel.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                }
            }
        }
        write_chunk(&mut chunk, &mut writer)?;
        Ok(true)
    })();
    match result {
        Ok(true) => {}
        Ok(false) => {
            drop(writer);
            let _ = fs::remove_file(&tmp);
            return Ok(None);
        }
        Err(e) => {
            drop(writer);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    let file = writer.into_inner().map_err(parquet_err(&tmp))?;
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
}
