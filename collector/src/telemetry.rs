//! vigil's own counters, served on `/metrics` in the Prometheus text format.
//!
//! Every accepted, rejected or pushed-back item is counted here, so that nothing is dropped unseen.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use vigil_schemas::Table;

/// Counters per signal table.
#[derive(Debug, Default)]
pub struct SignalCounters {
    /// Items (spans, data points, log records) stored.
    pub accepted: AtomicU64,
    /// Items rejected as malformed (partial success).
    pub rejected: AtomicU64,
    /// Requests refused whole because memory was full (the client retries).
    pub throttled_requests: AtomicU64,
    /// Requests refused whole as malformed, oversize or of the wrong content type.
    pub bad_requests: AtomicU64,
    /// Requests accepted.
    pub requests: AtomicU64,
    /// Items refused because their time was outside what is stored (also in `rejected`).
    pub out_of_range: AtomicU64,
}

/// Picks one counter out of a signal's counters.
type CounterOf = fn(&SignalCounters) -> &AtomicU64;

/// Renders more metric families, kept elsewhere in the process, onto `/metrics`.
pub type Exposition = Box<dyn Fn(&mut String) + Send + Sync>;

#[derive(Default)]
struct Expositions(parking_lot::Mutex<Vec<Exposition>>);

/// One section of `GET /api/v1/status`, kept elsewhere in the process.
pub type StatusSection = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Default)]
struct StatusSections(parking_lot::Mutex<Vec<(String, StatusSection)>>);

impl std::fmt::Debug for StatusSections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} status sections", self.0.lock().len())
    }
}

impl std::fmt::Debug for Expositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} more expositions", self.0.lock().len())
    }
}

/// All of the collector's counters.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub spans: SignalCounters,
    pub metrics: SignalCounters,
    pub logs: SignalCounters,
    pub alerts: SignalCounters,
    /// Derived rows, never received; here so that every table has counters.
    pub llm_minutes: SignalCounters,
    pub gpu_minutes: SignalCounters,
    /// Spans whose model is not in the price table (their cost is null, not zero).
    pub unpriced_spans: AtomicU64,
    /// Bytes appended to the WAL.
    pub wal_bytes: AtomicU64,
    /// WAL group commits (one fsync each under the `always` policy).
    pub wal_groups: AtomicU64,
    /// Records replayed from the WAL at start-up.
    pub wal_replayed_records: AtomicU64,
    /// Damaged places in the WAL skipped at start-up (torn tails included).
    pub wal_damaged_regions: AtomicU64,
    /// Bytes of the WAL skipped over at start-up to reach intact records.
    pub wal_skipped_bytes: AtomicU64,
    /// Parquet files written.
    pub parquet_files_written: AtomicU64,
    /// Bytes of Parquet written.
    pub parquet_bytes_written: AtomicU64,
    /// Flushes that failed (the data stays in memory and in the WAL, and is retried).
    pub flush_failures: AtomicU64,
    /// Parquet files deleted by retention.
    pub retention_deleted_files: AtomicU64,
    /// Parquet files merged into larger ones by compaction.
    pub parquet_files_compacted: AtomicU64,
    /// Compactions that failed (their files stay as they are).
    pub compaction_failures: AtomicU64,
    /// The last WAL write failed for want of space (cleared by the next that succeeds).
    pub disk_full: std::sync::atomic::AtomicBool,
    /// SQL queries answered, and refused.
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    /// Families from other parts of the process (the analyzer's alert deliveries).
    more: Expositions,
    /// Sections of the status document from other parts of the process (the analyzer's health).
    sections: StatusSections,
}

impl Telemetry {
    /// Add families to `/metrics`: `render` appends them, HELP and TYPE lines included.
    pub fn add_exposition(&self, render: Exposition) {
        self.more.0.lock().push(render);
    }

    /// Add a section named `name` to `GET /api/v1/status`.
    pub fn add_status_section(&self, name: &str, section: StatusSection) {
        self.sections.0.lock().push((name.to_string(), section));
    }

    /// The status document: one key per section.
    pub fn status(&self) -> serde_json::Value {
        let sections = self.sections.0.lock();
        serde_json::Value::Object(
            sections
                .iter()
                .map(|(name, section)| (name.clone(), section()))
                .collect(),
        )
    }

    /// The counters of one table.
    pub fn signal(&self, table: Table) -> &SignalCounters {
        match table {
            Table::Spans => &self.spans,
            Table::Metrics => &self.metrics,
            Table::Logs => &self.logs,
            Table::Alerts => &self.alerts,
            Table::LlmMinutes => &self.llm_minutes,
            Table::GpuMinutes => &self.gpu_minutes,
        }
    }

    /// Renders the counters, plus the given gauges, in the Prometheus text format.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let per_signal: [(&str, &str, CounterOf); 6] = [
            (
                "vigil_ingest_accepted_items_total",
                "Items stored, by signal.",
                |s| &s.accepted,
            ),
            (
                "vigil_ingest_rejected_items_total",
                "Items rejected as malformed, by signal.",
                |s| &s.rejected,
            ),
            (
                "vigil_ingest_out_of_range_items_total",
                "Items refused because their time was too far in the future or older than retention keeps, by signal (also counted as rejected).",
                |s| &s.out_of_range,
            ),
            (
                "vigil_ingest_requests_total",
                "Export requests accepted, by signal.",
                |s| &s.requests,
            ),
            (
                "vigil_ingest_throttled_requests_total",
                "Export requests refused because memory was full, by signal.",
                |s| &s.throttled_requests,
            ),
            (
                "vigil_ingest_bad_requests_total",
                "Export requests refused as malformed, oversize or of a wrong content type, by signal.",
                |s| &s.bad_requests,
            ),
        ];
        for (name, help, field) in per_signal {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for table in [Table::Spans, Table::Metrics, Table::Logs] {
                let _ = writeln!(
                    out,
                    "{name}{{signal=\"{}\"}} {}",
                    table.name(),
                    get(field(self.signal(table)))
                );
            }
        }
        let singles = [
            (
                "vigil_unpriced_spans_total",
                "Spans with token counts whose model has no price (cost_usd is null).",
                &self.unpriced_spans,
            ),
            (
                "vigil_wal_bytes_total",
                "Bytes appended to the write-ahead log.",
                &self.wal_bytes,
            ),
            (
                "vigil_wal_group_commits_total",
                "Group commits to the write-ahead log.",
                &self.wal_groups,
            ),
            (
                "vigil_wal_replayed_records_total",
                "WAL records replayed at start-up.",
                &self.wal_replayed_records,
            ),
            (
                "vigil_wal_damaged_regions_total",
                "Damaged places in the WAL skipped at start-up, torn tails included (the log says where).",
                &self.wal_damaged_regions,
            ),
            (
                "vigil_wal_skipped_bytes_total",
                "Bytes of the WAL skipped at start-up to reach the next intact record.",
                &self.wal_skipped_bytes,
            ),
            (
                "vigil_parquet_files_written_total",
                "Parquet files written.",
                &self.parquet_files_written,
            ),
            (
                "vigil_parquet_bytes_written_total",
                "Bytes of Parquet written.",
                &self.parquet_bytes_written,
            ),
            (
                "vigil_flush_failures_total",
                "Flushes to Parquet that failed and will be retried.",
                &self.flush_failures,
            ),
            (
                "vigil_retention_deleted_files_total",
                "Parquet files deleted by retention.",
                &self.retention_deleted_files,
            ),
            (
                "vigil_parquet_files_compacted_total",
                "Parquet files merged into larger ones by compaction.",
                &self.parquet_files_compacted,
            ),
            (
                "vigil_compaction_failures_total",
                "Compactions that failed; their files stay as they are.",
                &self.compaction_failures,
            ),
            (
                "vigil_queries_total",
                "SQL queries answered.",
                &self.queries,
            ),
            (
                "vigil_query_errors_total",
                "SQL queries refused or failed.",
                &self.query_errors,
            ),
        ];
        for (name, help, counter) in singles {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP vigil_storage_disk_full 1 while the data directory's disk is full: requests are refused (never acknowledged) until space returns.\n# TYPE vigil_storage_disk_full gauge\nvigil_storage_disk_full {}",
            u8::from(self.disk_full.load(Ordering::Relaxed))
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for render in self.more.0.lock().iter() {
            render(&mut out);
        }
        out
    }
}

/// Adds to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
