//! Where data rests: the WAL first, then in-memory Arrow buffers (queryable at once), then Parquet
//! files partitioned by table and hour, committed per table through a manifest.
//! Each `metrics` file also carries, in its footer, the catalog of the metrics it holds
//! ([`metric_catalog`]), which PromQL reads instead of scanning for it.
//!
//! Exactly-once across crashes: each table's manifest records the highest LSN that is in Parquet.
//! A flush writes its files, then the manifest; at start-up, files past the manifest (a flush that
//! crashed before committing) are deleted and WAL records past it are replayed into the buffers.

mod compaction;
pub mod metric_catalog;
mod parquet_files;
pub mod paths;
mod retention;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use vigil_schemas::Table;

use crate::telemetry::{Telemetry, add};
use crate::wal::{self, PendingRecord, WalConfig, WalError, WalWriter, encode_batch};

pub use compaction::CompactionConfig;
pub use metric_catalog::{MetricCatalog, MetricEntry};
pub use parquet_files::ParquetFile;
pub use retention::RetentionConfig;

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The data directory: `wal/` and `tables/` live under it. Relative paths are taken from the
    /// working directory at start-up, `~/` from `$HOME`; [`Store::config`] holds the absolute path.
    pub data_dir: PathBuf,
    /// Memory the collector may use for data: half for buffered (not yet flushed) rows, half for
    /// requests being decoded and flushes in progress. When the buffers' half is full, receivers
    /// push back. The process also needs a baseline of about 50 MiB beyond this.
    pub memory_limit_bytes: u64,
    /// A table's buffer is flushed once it holds this many rows…
    pub flush_rows: usize,
    /// …or this many bytes…
    pub flush_bytes: u64,
    /// …or its oldest row has waited this long.
    pub flush_interval_secs: u64,
    /// zstd level of Parquet pages.
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// How long and how much to keep.
    pub retention: RetentionConfig,
    /// Merging an hour's small files into larger ones.
    pub compaction: CompactionConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./vigil-data"),
            memory_limit_bytes: 1 << 30,
            flush_rows: 1_000_000,
            flush_bytes: 256 << 20,
            flush_interval_secs: 60,
            zstd_level: 3,
            row_group_rows: 256 * 1024,
            wal: WalConfig::default(),
            retention: RetentionConfig::default(),
            compaction: CompactionConfig::default(),
        }
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("memory limit reached ({used} of {limit} bytes buffered); retry after the next flush")]
    Overloaded { used: u64, limit: u64 },
    #[error(
        "one request needs {needed} bytes in memory but the buffers may hold only {limit}; send smaller batches or raise storage.memory_limit_bytes"
    )]
    TooLarge { needed: u64, limit: u64 },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("storage I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Path(#[from] paths::PathError),
    #[error("Parquet error on {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("the WAL writer has stopped; the collector is shutting down or failed: {0}")]
    WriterGone(String),
    #[error("table {0} is derived from another table and cannot be written to")]
    Derived(Table),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Memory accounting shared by receivers (reservations) and flushes (releases).
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Reserves `bytes` if that stays within the limit.
    pub fn try_reserve(&self, bytes: u64) -> Result<(), StoreError> {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let next = current + bytes;
            if next > self.limit {
                return Err(StoreError::Overloaded {
                    used: current,
                    limit: self.limit,
                });
            }
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Accounts for bytes that must be held whatever the limit (replayed WAL records).
    fn force_reserve(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives bytes back.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Batches held in memory with the LSN range they came from.
#[derive(Default)]
struct Buffered {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: u64,
    min_lsn: Option<u64>,
    max_lsn: u64,
    since: Option<Instant>,
}

impl Buffered {
    fn push(&mut self, lsn: u64, batch: RecordBatch, bytes: u64) {
        self.rows += batch.num_rows();
        self.bytes += bytes;
        self.min_lsn.get_or_insert(lsn);
        self.max_lsn = self.max_lsn.max(lsn);
        self.since.get_or_insert_with(Instant::now);
        self.batches.push(batch);
    }
}

/// Casts a batch written under an older schema (say, a column that was UTF-8 and is now a
/// dictionary) to the table's current one; columns are matched by name, new ones are null.
fn conform(
    batch: RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => arrow::compute::cast(column, field.data_type()),
            None => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// What one table holds.
#[derive(Default)]
struct TableData {
    /// Receiving new batches.
    active: Buffered,
    /// Being written to Parquet; still served to queries until the files are committed.
    flushing: Buffered,
    /// Committed Parquet files.
    files: Vec<ParquetFile>,
    /// Highest LSN of this table that is in Parquet.
    flushed_lsn: u64,
}

struct TableState {
    table: Table,
    dir: PathBuf,
    data: RwLock<TableData>,
    flush_lock: tokio::sync::Mutex<()>,
}

/// A consistent view of one table for a query: in-memory batches and Parquet files.
#[derive(Clone)]
pub struct TableSnapshot {
    pub batches: Vec<RecordBatch>,
    pub files: Vec<ParquetFile>,
}

/// Rows of a derived table computed from an appended batch, with their reserved bytes.
struct Derived {
    table: Table,
    batch: RecordBatch,
    bytes: u64,
}

impl Derived {
    /// The derived rows of a batch of `table`, if any: `llm_minutes` from `spans`,
    /// `gpu_minutes` from `metrics`.
    fn of(table: Table, batch: &RecordBatch) -> Result<Option<Derived>, StoreError> {
        let Some(derived) = table.derived() else {
            return Ok(None);
        };
        Ok(derived.derive(batch)?.map(|batch| Derived {
            table: derived,
            bytes: batch.get_array_memory_size() as u64,
            batch,
        }))
    }
}

enum WalCommand {
    Append {
        table: Table,
        payload: Vec<u8>,
        batch: RecordBatch,
        bytes: u64,
        /// Rows derived from `batch` (its `llm_minutes` or `gpu_minutes`), buffered under the
        /// same LSN.
        derived: Option<Derived>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Truncate(u64),
    Sync,
}

/// The storage engine: append, snapshot for queries, flush, retention.
pub struct Store {
    config: StorageConfig,
    tables: BTreeMap<Table, Arc<TableState>>,
    wal_tx: mpsc::Sender<WalCommand>,
    memory: Arc<MemoryBudget>,
    /// Requests being converted into rows, priced before conversion: the other half of the limit.
    conversions: Arc<MemoryBudget>,
    /// The highest LSN whose record is in a buffer (or already in Parquet); the WAL writer
    /// raises it after publishing a group.
    published_lsn: Arc<AtomicU64>,
    /// Files retention or compaction took out of the tables, with when they may leave the disk.
    doomed: parking_lot::Mutex<Vec<(PathBuf, Instant)>>,
    /// Files a compaction failed on (unreadable, or the disk full), with when: left out of
    /// compactions for [`COMPACTION_RETRY`] after.
    compaction_failed: parking_lot::Mutex<std::collections::HashMap<PathBuf, Instant>>,
    /// Each `metrics` file's catalog once read (`None`: it holds too many metrics to list).
    metric_catalogs:
        parking_lot::Mutex<std::collections::HashMap<PathBuf, Option<Arc<MetricCatalog>>>>,
    /// Raised at shutdown: a compaction in progress stops and leaves nothing behind.
    stopping: std::sync::atomic::AtomicBool,
    telemetry: Arc<Telemetry>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    flushed_lsn: u64,
}

const MANIFEST: &str = "_manifest.json";

/// How long files a compaction failed on are left out of compactions.
const COMPACTION_RETRY: Duration = Duration::from_secs(600);

/// Where compaction's sort spills past its memory, under the data directory; emptied at start-up.
const SPILL_DIR: &str = "tmp";

fn read_manifest(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join(MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => {
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
            Ok(manifest.flushed_lsn)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

/// Replaces the manifest atomically: write a temporary file, fsync, rename, fsync the directory.
fn write_manifest(dir: &Path, flushed_lsn: u64) -> Result<(), StoreError> {
    let tmp = dir.join("_manifest.json.tmp");
    let path = dir.join(MANIFEST);
    let body = serde_json::to_vec(&Manifest { flushed_lsn }).expect("manifest serializes");
    {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::Write::write_all(&mut f, &body).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

impl Store {
    /// Opens the data directory: recovers Parquet files and replays the WAL, then starts the WAL
    /// writer. Must be called inside a Tokio runtime.
    pub fn open(
        mut config: StorageConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Store>, StoreError> {
        config.data_dir = paths::resolve_dir(&config.data_dir, "data directory")?;
        let tables_dir = config.data_dir.join("tables");
        // Spill files of a merge the last process did not finish.
        let spill_dir = config.data_dir.join(SPILL_DIR);
        if spill_dir.exists() {
            fs::remove_dir_all(&spill_dir).map_err(io_err(&spill_dir))?;
        }
        // Half of the limit is for buffered rows; the other half is headroom for requests being
        // decoded (before they can be counted) and for flushes in progress.
        let memory = Arc::new(MemoryBudget::new(config.memory_limit_bytes / 2));
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let dir = tables_dir.join(table.name());
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let flushed_lsn = read_manifest(&dir)?;
            let files = parquet_files::recover(&dir, flushed_lsn)?;
            let data = TableData {
                files,
                flushed_lsn,
                ..Default::default()
            };
            tables.insert(
                table,
                Arc::new(TableState {
                    table,
                    dir,
                    data: RwLock::new(data),
                    flush_lock: tokio::sync::Mutex::new(()),
                }),
            );
        }

        // LSNs already in Parquet must never be handed out again, even when every WAL segment
        // that held them has been truncated away.
        let min_next_lsn = tables
            .values()
            .map(|t| t.data.read().flushed_lsn)
            .max()
            .unwrap_or(0)
            + 1;
        let (writer, recovered) = wal::open(
            &config.data_dir.join("wal"),
            config.wal.clone(),
            min_next_lsn,
        )?;
        for problem in &recovered.corrupt_segments {
            tracing::warn!(%problem, "damaged WAL records were skipped; the records around them are kept (after a crash, a torn tail holds only unacknowledged records)");
        }
        add(
            &telemetry.wal_damaged_regions,
            recovered.corrupt_segments.len() as u64,
        );
        add(&telemetry.wal_skipped_bytes, recovered.skipped_bytes);
        let mut replayed = 0u64;
        for record in recovered.records {
            let state = &tables[&record.table];
            if record.table.is_derived() {
                tracing::error!(lsn = record.lsn, table = %record.table, "WAL record of a derived table is skipped");
                continue;
            }
            // The derived rows were flushed on their own schedule: rebuild those still missing,
            // even for a batch that its own table already holds in Parquet (the WAL keeps a
            // record until every table built from it is flushed).
            let needs_derived = record
                .table
                .derived()
                .is_some_and(|derived| record.lsn > tables[&derived].data.read().flushed_lsn);
            let needs_batch = record.lsn > state.data.read().flushed_lsn;
            if !needs_batch && !needs_derived {
                continue;
            }
            let batch = match conform(record.batch, &record.table.schema()) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(lsn = record.lsn, table = %record.table, error = %e, "WAL record does not fit the table's schema and is skipped");
                    continue;
                }
            };
            if needs_derived {
                match Derived::of(record.table, &batch) {
                    Ok(Some(d)) => {
                        memory.force_reserve(d.bytes);
                        tables[&d.table]
                            .data
                            .write()
                            .active
                            .push(record.lsn, d.batch, d.bytes);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(lsn = record.lsn, table = %record.table, error = %e, "cannot derive rows from a replayed record")
                    }
                }
            }
            if !needs_batch {
                continue;
            }
            let bytes = batch.get_array_memory_size() as u64;
            memory.force_reserve(bytes);
            state.data.write().active.push(record.lsn, batch, bytes);
            replayed += 1;
        }
        add(&telemetry.wal_replayed_records, replayed);
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "replayed WAL records not yet in Parquet"
            );
        }

        let (wal_tx, wal_rx) = mpsc::channel(4096);
        let writer_tables = tables.clone();
        let writer_telemetry = telemetry.clone();
        let published_lsn = Arc::new(AtomicU64::new(writer.next_lsn().saturating_sub(1)));
        let writer_published = published_lsn.clone();
        std::thread::Builder::new()
            .name("vigil-wal".into())
            .spawn(move || {
                wal_writer_loop(
                    writer,
                    wal_rx,
                    writer_tables,
                    writer_telemetry,
                    writer_published,
                )
            })
            .map_err(io_err(&config.data_dir))?;
        let conversions = Arc::new(MemoryBudget::new(config.memory_limit_bytes / 2));
        let store = Arc::new(Store {
            config,
            tables,
            wal_tx,
            conversions,
            published_lsn,
            doomed: parking_lot::Mutex::new(Vec::new()),
            compaction_failed: parking_lot::Mutex::new(Default::default()),
            metric_catalogs: parking_lot::Mutex::new(Default::default()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            memory,
            telemetry,
        });
        Ok(store)
    }

    /// The budget of requests being converted into rows, before they reach the buffers.
    pub fn conversions(&self) -> &Arc<MemoryBudget> {
        &self.conversions
    }

    /// The memory budget the receivers reserve against.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// The configuration in force.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Makes a batch durable (WAL, synced as configured) and queryable. Returns once both hold.
    /// Fails with [`StoreError::Overloaded`] without writing anything when memory is full.
    pub async fn append(&self, table: Table, batch: RecordBatch) -> Result<(), StoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if table.is_derived() {
            return Err(StoreError::Derived(table));
        }
        let bytes = batch.get_array_memory_size() as u64;
        // Twice: the batch and its WAL copy are held together for a moment.
        if bytes * 2 > self.memory.limit() {
            return Err(StoreError::TooLarge {
                needed: bytes * 2,
                limit: self.memory.limit(),
            });
        }
        self.memory.try_reserve(bytes)?;
        let result = self.append_reserved(table, batch, bytes).await;
        if result.is_err() {
            self.memory.release(bytes);
        }
        result
    }

    async fn append_reserved(
        &self,
        table: Table,
        batch: RecordBatch,
        bytes: u64,
    ) -> Result<(), StoreError> {
        let payload = encode_batch(&batch)?;
        // The encoded copy lives until the WAL writer has written it; it counts against the limit too.
        let payload_bytes = payload.len() as u64;
        self.memory.try_reserve(payload_bytes)?;
        let result = self.append_with_derived(table, payload, batch, bytes).await;
        self.memory.release(payload_bytes);
        result
    }

    /// Sends a batch to the WAL with the rows derived from it, which stay buffered (and
    /// reserved) until the derived table's flush.
    async fn append_with_derived(
        &self,
        table: Table,
        payload: Vec<u8>,
        batch: RecordBatch,
        bytes: u64,
    ) -> Result<(), StoreError> {
        let derived = Derived::of(table, &batch)?;
        let derived_bytes = derived.as_ref().map_or(0, |d| d.bytes);
        self.memory.try_reserve(derived_bytes)?;
        let result = self
            .send_to_wal(table, payload, batch, bytes, derived)
            .await;
        if result.is_err() {
            self.memory.release(derived_bytes);
        }
        result
    }

    async fn send_to_wal(
        &self,
        table: Table,
        payload: Vec<u8>,
        batch: RecordBatch,
        bytes: u64,
        derived: Option<Derived>,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.wal_tx
            .send(WalCommand::Append {
                table,
                payload,
                batch,
                bytes,
                derived,
                done,
            })
            .await
            .map_err(|_| StoreError::WriterGone("channel closed".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::WriterGone(message)),
            Err(_) => Err(StoreError::WriterGone("writer dropped the request".into())),
        }
    }

    /// A consistent view of a table for a query.
    pub fn snapshot(&self, table: Table) -> TableSnapshot {
        let data = self.tables[&table].data.read();
        let mut batches =
            Vec::with_capacity(data.flushing.batches.len() + data.active.batches.len());
        batches.extend(data.flushing.batches.iter().cloned());
        batches.extend(data.active.batches.iter().cloned());
        TableSnapshot {
            batches,
            files: data.files.clone(),
        }
    }

    /// The metrics with rows between `lo` and `hi` (ns, inclusive; a file's metric counts when
    /// its first and last rows there lie either side), from each file's catalog (read from its
    /// footer once) and the buffers' rows. `None` when a file or the buffers hold more distinct
    /// metrics than [`metric_catalog::MAX_ENTRIES`]: the caller scans instead. Reads files: call
    /// it off the async threads.
    pub fn metric_catalog(&self, lo: i64, hi: i64) -> Result<Option<Vec<MetricEntry>>, StoreError> {
        let snapshot = self.snapshot(Table::Metrics);
        let mut entries: std::collections::BTreeSet<MetricEntry> = Default::default();
        for file in snapshot.files.iter().filter(|f| f.overlaps(lo, hi)) {
            let cached = self.metric_catalogs.lock().get(&file.path).cloned();
            let catalog = match cached {
                Some(catalog) => catalog,
                None => {
                    let catalog = MetricCatalog::of_file(&file.path)?.map(Arc::new);
                    self.metric_catalogs
                        .lock()
                        .insert(file.path.clone(), catalog.clone());
                    catalog
                }
            };
            let Some(catalog) = catalog else {
                return Ok(None);
            };
            entries.extend(catalog.in_range(lo, hi).cloned());
        }
        let mut buffered = MetricCatalog::default();
        for batch in &snapshot.batches {
            buffered.add_batch(batch)?;
            if buffered.too_large() {
                return Ok(None);
            }
        }
        entries.extend(buffered.in_range(lo, hi).cloned());
        // Files merged or expired since are forgotten.
        let current: std::collections::HashSet<&PathBuf> =
            snapshot.files.iter().map(|f| &f.path).collect();
        self.metric_catalogs
            .lock()
            .retain(|path, _| current.contains(path));
        Ok(Some(entries.into_iter().collect()))
    }

    /// Rows and bytes in memory, and Parquet files and bytes, per table.
    pub fn stats(&self) -> Vec<(Table, usize, u64, usize, u64)> {
        self.tables
            .iter()
            .map(|(t, s)| {
                let d = s.data.read();
                let disk: u64 = d.files.iter().map(|f| f.size).sum();
                (
                    *t,
                    d.active.rows + d.flushing.rows,
                    d.active.bytes + d.flushing.bytes,
                    d.files.len(),
                    disk,
                )
            })
            .collect()
    }

    /// Whether a table's buffer is due for a flush. `largest` is the most bytes any table's
    /// buffer holds: under memory pressure the big buffers are flushed, not every table's
    /// (flushing the small ones too wrote a file of each table per second under heavy span
    /// load, and every later query over them opened all those files).
    fn flush_due(&self, state: &TableState, largest: u64) -> bool {
        let d = state.data.read();
        if !d.flushing.batches.is_empty() {
            return true; // a failed flush to retry
        }
        let a = &d.active;
        if a.batches.is_empty() {
            return false;
        }
        let memory_pressure = self.memory.used() * 2 >= self.memory.limit();
        a.rows >= self.config.flush_rows
            || a.bytes >= self.config.flush_bytes
            || (memory_pressure && a.bytes * 2 >= largest)
            || a.since.is_some_and(|s| {
                s.elapsed() >= Duration::from_secs(self.config.flush_interval_secs)
            })
    }

    /// Flushes every table whose buffer is due (or every table with data, when `force`).
    pub async fn flush_due_tables(self: &Arc<Self>, force: bool) -> Result<(), StoreError> {
        let largest = self
            .tables
            .values()
            .map(|state| state.data.read().active.bytes)
            .max()
            .unwrap_or(0);
        for state in self.tables.values() {
            let due = if force {
                !state.data.read().active.batches.is_empty()
            } else {
                self.flush_due(state, largest)
            };
            if due && let Err(e) = self.flush_table(state.clone()).await {
                add(&self.telemetry.flush_failures, 1);
                tracing::error!(table = %state.table, error = %e, "flush failed; data stays in memory and in the WAL and will be retried");
            }
        }
        Ok(())
    }

    async fn flush_table(self: &Arc<Self>, state: Arc<TableState>) -> Result<(), StoreError> {
        let _guard = state.flush_lock.lock().await;
        let (batches, max_lsn) = {
            let mut d = state.data.write();
            if d.flushing.batches.is_empty() {
                if d.active.batches.is_empty() {
                    return Ok(());
                }
                d.flushing = std::mem::take(&mut d.active);
            }
            (d.flushing.batches.clone(), d.flushing.max_lsn)
        };
        let dir = state.dir.clone();
        let table = state.table;
        let config = self.config.clone();
        let written =
            tokio::task::spawn_blocking(move || -> Result<Vec<ParquetFile>, StoreError> {
                // Derived rows arrive one set per request: merged, a minute is one row again.
                let batches = if table.is_derived() {
                    table.merge_derived(&batches)?
                } else {
                    batches
                };
                let files = parquet_files::write_flush(&dir, table, &batches, max_lsn, &config)?;
                write_manifest(&dir, max_lsn)?;
                Ok(files)
            })
            .await
            .map_err(|e| StoreError::WriterGone(format!("flush task panicked: {e}")))??;

        let released = {
            let mut d = state.data.write();
            add(&self.telemetry.parquet_files_written, written.len() as u64);
            add(
                &self.telemetry.parquet_bytes_written,
                written.iter().map(|f| f.size).sum(),
            );
            d.files.extend(written);
            d.files.sort_by_key(|f| (f.hour_start_ns, f.lsn));
            d.flushed_lsn = max_lsn;
            std::mem::take(&mut d.flushing).bytes
        };
        self.memory.release(released);
        let durable = self.durable_lsn();
        let _ = self.wal_tx.send(WalCommand::Truncate(durable)).await;
        Ok(())
    }

    /// The highest LSN below which every record of every table is in Parquet.
    ///
    /// Only records already published to the buffers count: one written to the WAL but not yet
    /// in a buffer is in neither place this looks, so the bound starts at the last published LSN,
    /// read before the buffers are.
    fn durable_lsn(&self) -> u64 {
        let mut durable = self.published_lsn.load(Ordering::Acquire);
        for state in self.tables.values() {
            let d = state.data.read();
            for buffered in [&d.flushing, &d.active] {
                if let Some(min) = buffered.min_lsn {
                    durable = durable.min(min - 1);
                }
            }
        }
        durable
    }

    /// Runs the background loops (flush, WAL sync for the `interval` policy, retention) until
    /// `shutdown` resolves, then flushes everything that is buffered.
    pub async fn run_background(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut flush_tick = tokio::time::interval(Duration::from_millis(500));
        let mut sync_tick = tokio::time::interval(Duration::from_millis(
            self.config.wal.sync_interval_ms.max(10),
        ));
        let mut retention_tick = tokio::time::interval(Duration::from_secs(
            self.config.retention.check_interval_secs.max(1),
        ));
        // Apart from the flush loop: a merge takes seconds, and flushes must not wait for it.
        let compactor = tokio::spawn(self.clone().run_compaction(shutdown.clone()));
        loop {
            tokio::select! {
                _ = flush_tick.tick() => {
                    let _ = self.flush_due_tables(false).await;
                }
                _ = sync_tick.tick() => {
                    let _ = self.wal_tx.send(WalCommand::Sync).await;
                }
                _ = retention_tick.tick() => {
                    if let Err(e) = self.enforce_retention(Instant::now()) {
                        tracing::error!(error = %e, "retention pass failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        let _ = compactor.await;
        if let Err(e) = self.flush_due_tables(true).await {
            tracing::error!(error = %e, "final flush failed; the WAL still holds the data");
        }
        let _ = self.wal_tx.send(WalCommand::Sync).await;
    }

    /// Merges runs of small files until there is nothing to merge or the collector stops.
    async fn run_compaction(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(
            self.config.compaction.check_interval_secs.max(1),
        ));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // A backlog (after a restart, or a burst) is worked off at once, run by run.
            while !self.stopping.load(Ordering::Relaxed) {
                if self.compact_once().await == 0 {
                    break;
                }
            }
        }
    }

    /// Merges at most one run of small files per table; returns how many runs were merged.
    pub async fn compact_once(self: &Arc<Self>) -> usize {
        let mut merged = 0;
        for state in self.tables.values() {
            match self.compact_table(state).await {
                Ok(true) => merged += 1,
                Ok(false) => {}
                Err((inputs, e)) => {
                    add(&self.telemetry.compaction_failures, 1);
                    tracing::error!(table = %state.table, error = %e, files = inputs.len(), "compaction failed; these files stay as they are, and are tried again in 10 minutes");
                    let now = Instant::now();
                    self.compaction_failed
                        .lock()
                        .extend(inputs.into_iter().map(|f| (f.path, now)));
                }
            }
        }
        merged
    }

    async fn compact_table(
        self: &Arc<Self>,
        state: &Arc<TableState>,
    ) -> Result<bool, (Vec<ParquetFile>, StoreError)> {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        // Late rows of an hour reach Parquet within a flush interval of its end; wait two.
        let settle_ns = (self.config.flush_interval_secs as i64)
            .saturating_mul(2_000_000_000)
            .max(60_000_000_000);
        let inputs = {
            let mut failed = self.compaction_failed.lock();
            failed.retain(|_, at| at.elapsed() < COMPACTION_RETRY);
            let d = state.data.read();
            compaction::pick(&d.files, now_ns, settle_ns, &self.config.compaction, |f| {
                failed.contains_key(&f.path)
            })
        };
        let Some(inputs) = inputs else {
            return Ok(false);
        };
        // Under memory pressure ingest needs the memory and the cores: merge later.
        if self.memory.used() * 2 >= self.memory.limit() {
            return Ok(false);
        }
        // Its working memory (the sort's, and as much again for decoding and the row group
        // being written) comes out of the conversions' half of the limit: a merge waits for
        // ingest, not the other way round.
        let sort_bytes = parquet_files::chunk_bytes(&self.config);
        let reserved = 2 * sort_bytes as u64;
        if self.conversions.try_reserve(reserved).is_err() {
            return Ok(false);
        }
        let store = self.clone();
        let (dir, table, config, run) = (
            state.dir.clone(),
            state.table,
            self.config.clone(),
            inputs.clone(),
        );
        // A thread of its own at the lowest CPU priority: a merge takes the cores ingest and
        // queries leave idle (on all cores it cost a third of peak ingest, BENCHMARKS.md).
        let (done, merged) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("vigil-compact".into())
            .spawn(move || {
                lowest_cpu_priority();
                let spill_dir = config.data_dir.join(SPILL_DIR);
                let _ = done.send(compaction::compact(
                    &dir,
                    table,
                    &run,
                    &config,
                    sort_bytes,
                    &spill_dir,
                    &store.stopping,
                ));
            });
        let written = match spawned {
            Ok(_) => merged
                .await
                .map_err(|_| StoreError::WriterGone("the compaction thread panicked".into())),
            Err(e) => Err(StoreError::Io {
                path: self.config.data_dir.clone(),
                source: e,
            }),
        };
        self.conversions.release(reserved);
        let output = match written {
            Ok(Ok(Some(output))) => output,
            Ok(Ok(None)) => return Ok(false),
            Ok(Err(e)) | Err(e) => return Err((inputs, e)),
        };

        let grace = Instant::now() + Duration::from_secs(self.config.retention.delete_grace_secs);
        let mut d = state.data.write();
        let all_there = inputs
            .iter()
            .all(|i| d.files.iter().any(|f| f.path == i.path));
        let mut doomed = self.doomed.lock();
        if !all_there {
            // Retention took some of the inputs meanwhile: their rows must not come back.
            doomed.push((output.path, Instant::now()));
            return Ok(false);
        }
        d.files.retain(|f| !inputs.iter().any(|i| i.path == f.path));
        add(&self.telemetry.parquet_files_compacted, inputs.len() as u64);
        add(&self.telemetry.parquet_files_written, 1);
        add(&self.telemetry.parquet_bytes_written, output.size);
        d.files.push(output);
        d.files.sort_by_key(|f| (f.hour_start_ns, f.lsn));
        // Queries that started before may still read the inputs; they go after the grace.
        doomed.extend(inputs.into_iter().map(|f| (f.path, grace)));
        Ok(true)
    }

    /// One retention pass as of `now`: files past the age or size limits leave their tables at
    /// once and are deleted from disk `delete_grace_secs` later, when no query that saw them
    /// can still be reading them (queries end within `query.timeout_secs`).
    pub(crate) fn enforce_retention(&self, now: Instant) -> Result<(), StoreError> {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let states: Vec<&TableState> = self.tables.values().map(|s| s.as_ref()).collect();
        let victims = {
            let locked: Vec<_> = states.iter().map(|s| s.data.read()).collect();
            let files: Vec<(bool, Vec<ParquetFile>)> = self
                .tables
                .keys()
                .zip(&locked)
                .map(|(table, d)| (table.is_derived(), d.files.clone()))
                .collect();
            retention::select_victims(&files, now_ns, &self.config.retention)
        };
        let grace = Duration::from_secs(self.config.retention.delete_grace_secs);
        for (index, paths) in victims.into_iter().enumerate() {
            if paths.is_empty() {
                continue;
            }
            states[index]
                .data
                .write()
                .files
                .retain(|f| !paths.contains(&f.path));
            let mut doomed = self.doomed.lock();
            doomed.extend(paths.into_iter().map(|p| (p, now + grace)));
        }
        let due: Vec<PathBuf> = {
            let mut doomed = self.doomed.lock();
            let (due, later): (Vec<_>, Vec<_>) = doomed.drain(..).partition(|(_, at)| *at <= now);
            *doomed = later;
            due.into_iter().map(|(path, _)| path).collect()
        };
        let mut deleted = 0u64;
        let mut failed = None;
        for path in due {
            match fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Try again on the next pass.
                Err(e) => {
                    self.doomed.lock().push((path.clone(), now));
                    failed = Some(StoreError::Io { path, source: e });
                }
            }
        }
        if deleted > 0 {
            add(&self.telemetry.retention_deleted_files, deleted);
            tracing::info!(files = deleted, "retention deleted Parquet files");
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Lowers the calling thread to the lowest CPU priority (nice 19; Linux keeps it per thread).
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; gettid names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

fn wal_writer_loop(
    mut writer: WalWriter,
    mut rx: mpsc::Receiver<WalCommand>,
    tables: BTreeMap<Table, Arc<TableState>>,
    telemetry: Arc<Telemetry>,
    published_lsn: Arc<AtomicU64>,
) {
    const MAX_GROUP_BYTES: usize = 8 << 20;
    let mut pending = Vec::new();
    let mut waiters = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut group_bytes = 0usize;
        // Gather everything already queued into one group: one write, one fsync.
        while let Some(command) = next.take() {
            match command {
                WalCommand::Append {
                    table,
                    payload,
                    batch,
                    bytes,
                    derived,
                    done,
                } => {
                    group_bytes += payload.len();
                    pending.push(PendingRecord { table, payload });
                    waiters.push((table, batch, bytes, derived, done));
                }
                WalCommand::Truncate(lsn) => {
                    if let Err(e) = writer.truncate_through(lsn) {
                        tracing::error!(error = %e, "WAL truncation failed; segments are kept");
                    }
                }
                WalCommand::Sync => {
                    if let Err(e) = writer.sync() {
                        tracing::error!(error = %e, "WAL sync failed");
                    }
                }
            }
            if group_bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if pending.is_empty() {
            continue;
        }
        match writer.append_group(&pending) {
            Ok(lsns) => {
                telemetry.disk_full.store(false, Ordering::Relaxed);
                add(&telemetry.wal_groups, 1);
                add(&telemetry.wal_bytes, group_bytes as u64);
                let last = lsns.last().copied();
                for ((table, batch, bytes, derived, done), lsn) in waiters.drain(..).zip(lsns) {
                    // Derived rows first: a query that sees the batch sees its rollup too.
                    if let Some(d) = derived {
                        tables[&d.table]
                            .data
                            .write()
                            .active
                            .push(lsn, d.batch, d.bytes);
                    }
                    tables[&table].data.write().active.push(lsn, batch, bytes);
                    let _ = done.send(Ok(()));
                }
                if let Some(last) = last {
                    published_lsn.fetch_max(last, Ordering::Release);
                }
            }
            Err(e) => {
                if e.is_disk_full() {
                    telemetry.disk_full.store(true, Ordering::Relaxed);
                }
                tracing::error!(error = %e, "WAL append failed; the requests are refused");
                let message = e.to_string();
                for (_, _, _, _, done) in waiters.drain(..) {
                    let _ = done.send(Err(message.clone()));
                }
            }
        }
        pending.clear();
    }
    let _ = writer.sync();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use vigil_schemas::convert::spans_to_batch;
    use vigil_schemas::genai::Normalizer;

    /// `n` spans timed now, with ids from `first` on.
    pub(crate) fn spans(first: u8, n: u8) -> RecordBatch {
        spans_at(
            first,
            n,
            chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64,
        )
    }

    /// `n` spans timed within 10 µs from `now` (by the last digit of their id), with ids from
    /// `first` on.
    fn spans_at(first: u8, n: u8, now: u64) -> RecordBatch {
        let spans = (first..first + n)
            .map(|i| Span {
                trace_id: vec![i; 16],
                span_id: vec![i; 8],
                name: format!("s{i}"),
                start_time_unix_nano: now + u64::from(i % 10) * 1000,
                end_time_unix_nano: now + u64::from(i % 10) * 1000 + 1,
                ..Default::default()
            })
            .collect();
        spans_batch(spans)
    }

    /// The `spans` rows of one resource's spans.
    fn spans_batch(spans: Vec<Span>) -> RecordBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        spans_to_batch(&request, &Normalizer::default()).batch
    }

    fn config(dir: &Path) -> StorageConfig {
        StorageConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        }
    }

    fn rows(snapshot: &TableSnapshot) -> usize {
        snapshot.batches.iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test]
    async fn appended_rows_are_visible_flushed_and_never_replayed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, spans(1, 3)).await.unwrap();
        assert_eq!(rows(&store.snapshot(Table::Spans)), 3);
        store.flush_due_tables(true).await.unwrap();
        let snapshot = store.snapshot(Table::Spans);
        assert_eq!((rows(&snapshot), snapshot.files.len()), (0, 1));
        store.append(Table::Spans, spans(10, 2)).await.unwrap();
        drop(store);

        // Reopen without a clean shutdown: the flushed rows stay in Parquet, only the unflushed
        // ones come back from the WAL.
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        let snapshot = store.snapshot(Table::Spans);
        assert_eq!((rows(&snapshot), snapshot.files.len()), (2, 1));
    }

    /// `n` LLM calls of one model, timed now.
    fn llm_calls(first: u8, n: u8) -> RecordBatch {
        llm_calls_at(
            first,
            n,
            chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64,
        )
    }

    /// `n` LLM calls of one model, timed `now`.
    fn llm_calls_at(first: u8, n: u8, now: u64) -> RecordBatch {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let model = KeyValue {
            key: "gen_ai.request.model".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("gpt-4o".into())),
            }),
            ..Default::default()
        };
        let spans = (first..first + n)
            .map(|i| Span {
                trace_id: vec![i; 16],
                span_id: vec![i; 8],
                name: "chat".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1_000_000,
                attributes: vec![model.clone()],
                ..Default::default()
            })
            .collect();
        spans_batch(spans)
    }

    fn calls(snapshot: &TableSnapshot) -> i64 {
        use arrow::array::AsArray;
        let mut total = 0;
        let mut add_up = |batch: &RecordBatch| {
            total += batch
                .column_by_name("calls")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
        };
        snapshot.batches.iter().for_each(&mut add_up);
        for file in &snapshot.files {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                fs::File::open(&file.path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            reader.map(|b| b.unwrap()).for_each(|b| add_up(&b));
        }
        total
    }

    /// `llm_minutes` follows `spans` through buffers, flushes and crashes, counting every call
    /// once, whichever of the two tables was flushed when the process died.
    #[tokio::test]
    async fn llm_minutes_count_each_call_once_across_flushes_and_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, llm_calls(1, 3)).await.unwrap();
        store.append(Table::Spans, llm_calls(10, 2)).await.unwrap();
        store.append(Table::Spans, spans(20, 4)).await.unwrap(); // not LLM calls
        let minutes = store.snapshot(Table::LlmMinutes);
        assert_eq!(
            (rows(&minutes), calls(&minutes)),
            (2, 5),
            "one row per request"
        );
        assert!(matches!(
            store
                .append(Table::LlmMinutes, minutes.batches[0].clone())
                .await,
            Err(StoreError::Derived(Table::LlmMinutes))
        ));

        // Spans flushed, minutes not, then a crash: the WAL still has the records, and the
        // minutes come back from them.
        store
            .flush_table(store.tables[&Table::Spans].clone())
            .await
            .unwrap();
        drop(store);
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        assert_eq!(rows(&store.snapshot(Table::Spans)), 0);
        assert_eq!(calls(&store.snapshot(Table::LlmMinutes)), 5);

        // Flushed: one merged row; after a restart, nothing is counted twice.
        store.flush_due_tables(true).await.unwrap();
        let minutes = store.snapshot(Table::LlmMinutes);
        assert_eq!((rows(&minutes), minutes.files.len()), (0, 1));
        drop(store);
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, llm_calls(30, 1)).await.unwrap();
        assert_eq!(calls(&store.snapshot(Table::LlmMinutes)), 6);
    }

    /// Truncation may remove only records that are in Parquet; with nothing published past
    /// what was flushed, the bound is the last published LSN, not "everything".
    #[tokio::test]
    async fn the_durable_bound_never_passes_the_last_published_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        assert_eq!(
            store.durable_lsn(),
            0,
            "nothing written, nothing to truncate"
        );
        store.append(Table::Spans, spans(1, 3)).await.unwrap();
        assert_eq!(store.durable_lsn(), 0, "buffered, not in Parquet");
        store.flush_due_tables(true).await.unwrap();
        assert_eq!(
            store.durable_lsn(),
            1,
            "flushed up to the one published record"
        );
        // A record the writer holds but has not published yet stays above the bound.
        store.published_lsn.store(1, Ordering::Release);
        assert!(store.durable_lsn() <= 1);
    }

    #[tokio::test]
    async fn an_uncommitted_flush_is_discarded_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, spans(1, 4)).await.unwrap();
        drop(store);
        // A crash between writing a flush's files and its manifest leaves a file past the manifest.
        let table_dir = dir.path().join("tables/spans");
        let batch = spans(1, 4);
        let files =
            parquet_files::write_flush(&table_dir, Table::Spans, &[batch], 1, &config(dir.path()))
                .unwrap();
        assert!(files[0].path.exists());
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        let snapshot = store.snapshot(Table::Spans);
        assert_eq!((rows(&snapshot), snapshot.files.len()), (4, 0));
        assert!(!files[0].path.exists());
    }

    #[test]
    fn old_batches_are_cast_to_the_current_schema() {
        use arrow::array::{Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let old = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(old, vec![Arc::new(StringArray::from(vec!["a", "b"]))]).unwrap();
        let new = Arc::new(Schema::new(vec![
            Field::new("name", vigil_schemas::tables::dict_type(), false),
            Field::new("added", DataType::Int64, true),
        ]));
        let conformed = conform(batch, &new).unwrap();
        assert_eq!(conformed.schema(), new);
        assert_eq!(conformed.column(1).null_count(), 2);
    }

    #[tokio::test]
    async fn a_full_budget_refuses_without_writing() {
        let batch = spans(1, 5);
        let bytes = batch.get_array_memory_size() as u64;
        let payload = encode_batch(&batch).unwrap().len() as u64;
        // Room for two batches but not for a second batch's WAL copy besides them.
        let budget = 2 * bytes + payload / 2;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.memory_limit_bytes = budget * 2;
        let store = Store::open(cfg, Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, batch.clone()).await.unwrap();
        let err = store.append(Table::Spans, batch).await.unwrap_err();
        assert!(matches!(err, StoreError::Overloaded { .. }), "{err}");
        assert_eq!(rows(&store.snapshot(Table::Spans)), 5);
        assert_eq!(store.memory().used(), bytes);
    }

    /// Under memory pressure the big buffer is flushed and the small ones wait for their own
    /// thresholds: one file per table per pressure flush was hundreds of tiny files a minute.
    #[tokio::test]
    async fn memory_pressure_flushes_the_big_buffers_not_every_table() {
        let batch = llm_calls(1, 200);
        let probe = tempfile::tempdir().unwrap();
        let store = Store::open(config(probe.path()), Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, batch.clone()).await.unwrap();
        let used = store.memory().used();
        drop(store);

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        // A budget the calls fit in, more than half full once they are in.
        cfg.memory_limit_bytes = used * 19 / 10 * 2;
        let store = Store::open(cfg, Arc::new(Telemetry::default())).unwrap();
        store.append(Table::Spans, batch).await.unwrap();
        let (spans, minutes) = (
            store.snapshot(Table::Spans),
            store.snapshot(Table::LlmMinutes),
        );
        assert!(rows(&spans) == 200 && rows(&minutes) > 0);
        assert!(store.memory().used() * 2 >= store.memory().limit());
        store.flush_due_tables(false).await.unwrap();
        let (spans, minutes) = (
            store.snapshot(Table::Spans),
            store.snapshot(Table::LlmMinutes),
        );
        assert_eq!((rows(&spans), spans.files.len()), (0, 1));
        assert!(minutes.files.is_empty() && rows(&minutes) > 0);
    }

    #[tokio::test]
    async fn a_batch_bigger_than_the_whole_budget_is_refused_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.memory_limit_bytes = 2048;
        let store = Store::open(cfg, Arc::new(Telemetry::default())).unwrap();
        let err = store.append(Table::Spans, spans(1, 50)).await.unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        assert_eq!(rows(&store.snapshot(Table::Spans)), 0);
        assert_eq!(store.memory().used(), 0);
    }

    /// A column of a table's files cast to `to`, in file and row order.
    fn cast_column_in_files(
        files: &[ParquetFile],
        name: &str,
        to: &arrow::datatypes::DataType,
    ) -> Vec<arrow::array::ArrayRef> {
        let mut columns = Vec::new();
        for file in files {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                fs::File::open(&file.path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in reader {
                let column = batch.unwrap().column_by_name(name).unwrap().clone();
                columns.push(arrow::compute::cast(&column, to).unwrap());
            }
        }
        columns
    }

    /// A string column of a table's files, in file and row order.
    fn column_in_files(files: &[ParquetFile], name: &str) -> Vec<String> {
        use arrow::array::AsArray;
        cast_column_in_files(files, name, &arrow::datatypes::DataType::Utf8)
            .iter()
            .flat_map(|c| {
                c.as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The `time` of each row in the files, in their order.
    fn times_in_files(files: &[ParquetFile]) -> Vec<i64> {
        use arrow::array::AsArray;
        cast_column_in_files(files, "time", &arrow::datatypes::DataType::Int64)
            .iter()
            .flat_map(|c| {
                c.as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    /// The ids of the spans in a table's files, sorted.
    fn span_ids_in_files(files: &[ParquetFile]) -> Vec<String> {
        let mut ids = column_in_files(files, "span_id");
        ids.sort();
        ids
    }

    /// A minute into the current hour, so that every flush of a test lands in one hour.
    fn this_hour() -> u64 {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
        now - now % 3_600_000_000_000 + 60_000_000_000
    }

    /// Four flushes of 10 spans each, timed `hour`.
    async fn flush_four_times(store: &Arc<Store>, hour: u64) {
        for flush in 0..4u8 {
            store
                .append(Table::Spans, spans_at(flush * 10 + 1, 10, hour))
                .await
                .unwrap();
            store.flush_due_tables(true).await.unwrap();
        }
    }

    /// Merges `inputs` of `spans` as a compaction would, without touching the store's list.
    async fn merge_spans_directly(
        store: &Arc<Store>,
        inputs: &[ParquetFile],
        memory: usize,
        scratch: &Path,
    ) -> ParquetFile {
        let (table_dir, settings, run) = (
            store.tables[&Table::Spans].dir.clone(),
            store.config.clone(),
            inputs.to_vec(),
        );
        let spill = scratch.join("spill");
        tokio::task::spawn_blocking(move || {
            compaction::compact(
                &table_dir,
                Table::Spans,
                &run,
                &settings,
                memory,
                &spill,
                &std::sync::atomic::AtomicBool::new(false),
            )
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    }

    /// Four flushes of one hour become one file holding each row once; the inputs leave the
    /// table at once and the disk after the grace.
    #[tokio::test]
    async fn four_flushes_of_an_hour_are_merged_into_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let telemetry = Arc::new(Telemetry::default());
        let store = Store::open(config(dir.path()), telemetry.clone()).unwrap();
        let hour = this_hour();
        flush_four_times(&store, hour).await;
        let before = store.snapshot(Table::Spans).files;
        assert_eq!(before.len(), 4);
        let expected = span_ids_in_files(&before);
        assert_eq!(expected.len(), 40);

        assert!(store.compact_once().await >= 1);
        let after = store.snapshot(Table::Spans).files;
        assert_eq!(after.len(), 1, "{after:?}");
        let merged = &after[0];
        assert!(
            before
                .iter()
                .all(|f| parquet_files::is_sorted(&f.path, Table::Spans).unwrap())
        );
        assert!(parquet_files::is_sorted(&merged.path, Table::Spans).unwrap());
        assert_eq!(
            (merged.first_lsn, merged.lsn, merged.level),
            (before[0].lsn, before[3].lsn, 1)
        );
        assert_eq!(span_ids_in_files(&after), expected);
        // Sorted by the table's keys throughout (one service, then time), not per flush.
        let times = times_in_files(&after);
        assert!(times.is_sorted());
        assert!(!times_in_files(&before).is_sorted());
        assert_eq!(telemetry.parquet_files_compacted.load(Ordering::Relaxed), 4);
        // Nothing more to merge.
        assert_eq!(store.compact_once().await, 0);

        // Queries that began before may still read the inputs: they stay until the grace ends.
        assert!(before.iter().all(|f| f.path.exists()));
        let grace = Duration::from_secs(store.config.retention.delete_grace_secs + 1);
        store.enforce_retention(Instant::now() + grace).unwrap();
        assert!(before.iter().all(|f| !f.path.exists()));
        assert!(merged.path.exists());
    }

    /// A crash after the merged file is committed but before its inputs are gone: the next
    /// start keeps the merged file and deletes the inputs, and a later flush of the same hour
    /// survives; no row is lost or counted twice.
    #[tokio::test]
    async fn a_crash_between_the_merge_and_the_deletes_keeps_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        let hour = this_hour();
        flush_four_times(&store, hour).await;
        let inputs = store.snapshot(Table::Spans).files;
        let merged = merge_spans_directly(&store, &inputs, 64 << 20, dir.path()).await;
        store
            .append(Table::Spans, spans_at(101, 5, hour))
            .await
            .unwrap();
        store.flush_due_tables(true).await.unwrap();
        drop(store);

        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        let files = store.snapshot(Table::Spans).files;
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].path, merged.path);
        assert!(inputs.iter().all(|f| !f.path.exists()));
        assert_eq!(span_ids_in_files(&files).len(), 45);
    }

    /// Merging `llm_minutes` files makes a minute one row again, with every call counted once.
    #[tokio::test]
    async fn merged_minutes_count_each_call_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path()), Arc::new(Telemetry::default())).unwrap();
        let hour = this_hour();
        for flush in 0..4u8 {
            store
                .append(Table::Spans, llm_calls_at(flush * 10 + 1, 3, hour))
                .await
                .unwrap();
            store.flush_due_tables(true).await.unwrap();
        }
        let minutes = store.snapshot(Table::LlmMinutes);
        assert_eq!((minutes.files.len(), calls(&minutes)), (4, 12));
        let mut merges = 0;
        while store.compact_once().await > 0 {
            merges += 1;
        }
        assert_eq!(merges, 1);
        let minutes = store.snapshot(Table::LlmMinutes);
        assert_eq!(minutes.files.len(), 1);
        assert_eq!(calls(&minutes), 12);
        let rows: i64 = parquet::file::reader::SerializedFileReader::new(
            fs::File::open(&minutes.files[0].path).unwrap(),
        )
        .map(|r| {
            parquet::file::reader::FileReader::metadata(&r)
                .file_metadata()
                .num_rows()
        })
        .unwrap();
        assert_eq!(rows, 1, "one model, one minute");
    }

    /// Flushes bigger than a sorted chunk (so their files are not sorted throughout) are sorted
    /// by the merge, which spills past its memory, and every row is written once, in order.
    #[tokio::test]
    async fn a_merge_past_its_memory_spills_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.memory_limit_bytes = 8 << 20; // flushes sorted in chunks of 1 MiB
        let store = Store::open(cfg, Arc::new(Telemetry::default())).unwrap();
        let hour = this_hour();
        let mut appended_bytes = 0;
        for flush in 0..4u64 {
            for part in 0..20u64 {
                let batch = spans_at(1, 250, hour + flush * 1000 + part);
                appended_bytes += batch.get_array_memory_size();
                store.append(Table::Spans, batch).await.unwrap();
            }
            store.flush_due_tables(true).await.unwrap();
        }
        let memory = 4 << 20;
        assert!(
            appended_bytes > memory,
            "{appended_bytes} bytes fit in memory"
        );
        let inputs = store.snapshot(Table::Spans).files;
        assert_eq!(inputs.len(), 4);
        assert!(!parquet_files::is_sorted(&inputs[0].path, Table::Spans).unwrap());
        let merged = merge_spans_directly(&store, &inputs, memory, dir.path()).await;
        let times = times_in_files(std::slice::from_ref(&merged));
        assert_eq!(times.len(), 20_000);
        assert!(times.is_sorted());
        assert!(parquet_files::is_sorted(&merged.path, Table::Spans).unwrap());
        assert_eq!(
            span_ids_in_files(std::slice::from_ref(&merged)),
            span_ids_in_files(&inputs)
        );
    }

    /// The compaction thread runs at nice 19, so that it takes only the CPU others leave.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_merge_thread_runs_at_the_lowest_priority() {
        let nice = std::thread::spawn(|| {
            lowest_cpu_priority();
            let stat = fs::read_to_string("/proc/thread-self/stat").unwrap();
            // Fields after the command's closing parenthesis: nice is the 17th of them.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
        // The caller's own priority is untouched.
        let stat = fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        assert_ne!(after.split(' ').nth(16).unwrap(), "19");
    }
}
