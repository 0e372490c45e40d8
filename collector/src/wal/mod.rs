//! The write-ahead log: every accepted batch is appended here, and synced as the policy says,
//! before the request that carried it is acknowledged.
//!
//! A segment is a file `{first_lsn:020}.wal` that starts with [`SEGMENT_MAGIC`] and holds records:
//! `len: u32 | crc32: u32 | lsn: u64 | table: u8 | payload`, little-endian, where the CRC covers
//! `lsn | table | payload` and the payload is an Arrow IPC stream of one record batch.
//! Replay skips a record that is short or fails its checksum and goes on at the next intact one
//! (found again by its length, table tag and CRC): a torn write at the tail is a crash, and
//! nothing after it was acknowledged; damage in the middle costs only the records it hit.

mod codec;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use vigil_schemas::Table;

pub use codec::{decode_batch, encode_batch};

/// First bytes of every segment: the format and its version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"VGLWAL01";
const HEADER_LEN: usize = 4 + 4 + 8 + 1;

/// When the log is synced to stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// fsync each group of appends before acknowledging them (group commit). Survives power loss.
    #[default]
    Always,
    /// Write to the OS at once, fsync every `sync_interval_ms`. Survives a process crash; a power
    /// loss can cost the last interval.
    Interval,
    /// Write to the OS, never fsync. Survives a process crash only.
    Never,
}

/// WAL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// When appends reach the disk: `always`, `interval` or `never`.
    pub sync: SyncPolicy,
    /// fsync period for the `interval` policy.
    pub sync_interval_ms: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            sync: SyncPolicy::Always,
            sync_interval_ms: 200,
            segment_bytes: 64 << 20,
        }
    }
}

impl WalError {
    /// Whether the disk (or the file system's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || source.kind() == std::io::ErrorKind::QuotaExceeded)
    }
}

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL record could not be encoded or decoded: {0}")]
    Codec(#[from] arrow::error::ArrowError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A record read back from the log.
#[derive(Debug)]
pub struct WalRecord {
    /// Log sequence number, increasing by one per record.
    pub lsn: u64,
    /// The table the batch belongs to.
    pub table: Table,
    /// The batch as it was appended.
    pub batch: RecordBatch,
}

/// A record to append: the table and its batch already encoded with [`encode_batch`].
pub struct PendingRecord {
    pub table: Table,
    pub payload: Vec<u8>,
}

/// One closed or open segment file.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_lsn: u64,
}

/// The appending side of the log. Not thread-safe by itself: one writer task owns it.
pub struct WalWriter {
    dir: PathBuf,
    config: WalConfig,
    file: BufWriter<File>,
    current: Segment,
    current_bytes: u64,
    closed: Vec<Segment>,
    next_lsn: u64,
    last_sync: Instant,
    dirty: bool,
}

/// What [`open`] found in the log directory.
pub struct Recovered {
    /// Every intact record, in LSN order.
    pub records: Vec<WalRecord>,
    /// Where records were lost to a torn tail or corruption, one line each (a torn tail was
    /// never acknowledged; damage in the middle of a segment was).
    pub corrupt_segments: Vec<String>,
    /// Bytes skipped over to reach the next intact record.
    pub skipped_bytes: u64,
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first_lsn) = stem.parse::<u64>() {
            segments.push(Segment {
                path: entry.path(),
                first_lsn,
            });
        }
    }
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Why the bytes at one position are not an intact record.
enum Unreadable {
    /// The record runs past the end of the segment: a write cut short by a crash.
    Torn(String),
    /// A whole record whose checksum, table or payload is wrong.
    Bad(String),
}

/// Parses the record at `pos`; returns it and where the next one starts.
fn parse_record(bytes: &[u8], pos: usize) -> Result<(WalRecord, usize), Unreadable> {
    if bytes.len() - pos < HEADER_LEN {
        return Err(Unreadable::Torn(format!(
            "torn record header at byte {pos}"
        )));
    }
    let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
    let body_start = pos + 8;
    let body_end = body_start.saturating_add(8 + 1).saturating_add(len);
    if body_end > bytes.len() {
        return Err(Unreadable::Torn(format!("torn record at byte {pos}")));
    }
    let body = &bytes[body_start..body_end];
    if crc32fast::hash(body) != crc {
        return Err(Unreadable::Bad(format!("checksum mismatch at byte {pos}")));
    }
    let lsn = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let Some(table) = Table::from_tag(body[8]) else {
        return Err(Unreadable::Bad(format!(
            "unknown table tag {} at byte {pos}",
            body[8]
        )));
    };
    let batch = decode_batch(&body[9..])
        .map_err(|e| Unreadable::Bad(format!("undecodable batch at byte {pos}: {e}")))?;
    Ok((WalRecord { lsn, table, batch }, body_end))
}

/// The next position after `from` where an intact record starts, if any. A candidate needs a
/// known table tag and a matching CRC-32, so a false match is about one in 2^34.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(HEADER_LEN - 1)).find(|&pos| {
        if Table::from_tag(bytes[pos + 16]).is_none() {
            return false;
        }
        parse_record(bytes, pos).is_ok()
    })
}

/// What reading one segment found besides its intact records.
#[derive(Debug, Default)]
struct SegmentDamage {
    /// Where and why reading skipped, one line each.
    problems: Vec<String>,
    /// Bytes skipped over.
    skipped_bytes: u64,
}

/// Reads every intact record of one segment. A damaged record is skipped and reading goes on
/// at the next intact one (records carry their length and a CRC, so they can be found again);
/// only a torn tail, which no later record follows, ends it.
fn read_segment(path: &Path, records: &mut Vec<WalRecord>) -> Result<SegmentDamage, WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io(path))?
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    let mut damage = SegmentDamage::default();
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        damage.problems.push(format!(
            "{}: not a vigil WAL segment (bad magic)",
            path.display()
        ));
        damage.skipped_bytes = bytes.len() as u64;
        return Ok(damage);
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < bytes.len() {
        match parse_record(&bytes, pos) {
            Ok((record, next)) => {
                records.push(record);
                pos = next;
            }
            Err(Unreadable::Torn(what) | Unreadable::Bad(what)) => match resync(&bytes, pos) {
                Some(next) => {
                    damage.problems.push(format!(
                        "{}: {what}; skipped {} bytes to the next intact record at byte {next}",
                        path.display(),
                        next - pos
                    ));
                    damage.skipped_bytes += (next - pos) as u64;
                    pos = next;
                }
                None => {
                    damage.problems.push(format!(
                        "{}: {what}; no intact record after it ({} bytes skipped)",
                        path.display(),
                        bytes.len() - pos
                    ));
                    damage.skipped_bytes += (bytes.len() - pos) as u64;
                    break;
                }
            },
        }
    }
    Ok(damage)
}

/// Opens the log in `dir`: reads back what it holds and starts a fresh segment for new appends.
/// New records get LSNs from `min_next_lsn` on at least: the caller knows LSNs already used
/// elsewhere (flushed to Parquet, their WAL segments since deleted), which must never repeat.
pub fn open(
    dir: &Path,
    config: WalConfig,
    min_next_lsn: u64,
) -> Result<(WalWriter, Recovered), WalError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let segments = list_segments(dir)?;
    let mut records = Vec::new();
    let mut corrupt_segments = Vec::new();
    let mut skipped_bytes = 0;
    for segment in &segments {
        let damage = read_segment(&segment.path, &mut records)?;
        corrupt_segments.extend(damage.problems);
        skipped_bytes += damage.skipped_bytes;
    }
    records.sort_by_key(|r| r.lsn);
    let next_lsn = records
        .last()
        .map(|r| r.lsn + 1)
        .unwrap_or(1)
        .max(segments.last().map(|s| s.first_lsn).unwrap_or(1))
        .max(min_next_lsn);
    // An old segment that starts at `next_lsn` holds no record; the new segment replaces it.
    let segments: Vec<Segment> = segments
        .into_iter()
        .filter(|s| s.first_lsn != next_lsn)
        .collect();
    let (current, file) = create_segment(dir, next_lsn)?;
    let writer = WalWriter {
        dir: dir.to_path_buf(),
        config,
        file,
        current,
        current_bytes: SEGMENT_MAGIC.len() as u64,
        closed: segments,
        next_lsn,
        last_sync: Instant::now(),
        dirty: false,
    };
    Ok((
        writer,
        Recovered {
            records,
            corrupt_segments,
            skipped_bytes,
        },
    ))
}

fn create_segment(dir: &Path, first_lsn: u64) -> Result<(Segment, BufWriter<File>), WalError> {
    let path = dir.join(segment_name(first_lsn));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(SEGMENT_MAGIC).map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    // The new file's directory entry must be durable too, or a crash could lose the segment.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok((
        Segment { path, first_lsn },
        BufWriter::with_capacity(1 << 20, file),
    ))
}

impl WalWriter {
    /// Appends a group of records, writes them to the OS and syncs them as the policy says.
    /// Returns the LSN of each record, in order.
    pub fn append_group(&mut self, group: &[PendingRecord]) -> Result<Vec<u64>, WalError> {
        if self.current_bytes >= self.config.segment_bytes
            && self.current_bytes > SEGMENT_MAGIC.len() as u64
        {
            self.rotate()?;
        }
        let (good_bytes, good_lsn) = (self.current_bytes, self.next_lsn);
        let result = self.write_group(group);
        if result.is_err() {
            self.roll_back(good_bytes, good_lsn);
        }
        result
    }

    /// Undoes a group that failed part-way (a full disk, an I/O error): its records were refused,
    /// so none of their bytes may stay to be replayed later, and the bytes still buffered must
    /// not reach the file on a later write. The segment is cut back to its last whole group.
    fn roll_back(&mut self, good_bytes: u64, good_lsn: u64) {
        let path = self.current.path.clone();
        let reopened = OpenOptions::new().write(true).open(&path).and_then(|file| {
            file.set_len(good_bytes)?;
            let mut file = file;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(good_bytes))?;
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                // into_parts drops the buffered bytes of the failed group instead of writing them.
                let old = std::mem::replace(&mut self.file, BufWriter::new(file));
                let _ = old.into_parts();
                self.current_bytes = good_bytes;
                self.next_lsn = good_lsn;
            }
            Err(e) => {
                // The refused records may stay in this segment; start a new one for what follows
                // (their LSNs are not reused, and replay skips what does not verify).
                tracing::error!(path = %path.display(), error = %e, "could not cut the WAL segment back after a failed write");
                if let Ok(clone) = self.file.get_ref().try_clone() {
                    let old = std::mem::replace(&mut self.file, BufWriter::new(clone));
                    let _ = old.into_parts();
                }
                self.current_bytes = self.config.segment_bytes;
            }
        }
    }

    fn write_group(&mut self, group: &[PendingRecord]) -> Result<Vec<u64>, WalError> {
        let mut lsns = Vec::with_capacity(group.len());
        let path = self.current.path.clone();
        for record in group {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            let mut hasher = crc32fast::Hasher::new();
            let lsn_bytes = lsn.to_le_bytes();
            hasher.update(&lsn_bytes);
            hasher.update(&[record.table.tag()]);
            hasher.update(&record.payload);
            let len = u32::try_from(record.payload.len()).map_err(|_| WalError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "record over 4 GiB"),
            })?;
            self.file.write_all(&len.to_le_bytes()).map_err(io(&path))?;
            self.file
                .write_all(&hasher.finalize().to_le_bytes())
                .map_err(io(&path))?;
            self.file.write_all(&lsn_bytes).map_err(io(&path))?;
            self.file
                .write_all(&[record.table.tag()])
                .map_err(io(&path))?;
            self.file.write_all(&record.payload).map_err(io(&path))?;
            self.current_bytes += (HEADER_LEN + record.payload.len()) as u64;
            lsns.push(lsn);
        }
        self.file.flush().map_err(io(&path))?;
        self.dirty = true;
        match self.config.sync {
            SyncPolicy::Always => self.sync()?,
            SyncPolicy::Interval => {
                if self.last_sync.elapsed() >= Duration::from_millis(self.config.sync_interval_ms) {
                    self.sync()?;
                }
            }
            SyncPolicy::Never => {}
        }
        Ok(lsns)
    }

    /// fsyncs what was written, if anything was.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.dirty {
            let path = self.current.path.clone();
            self.file.get_ref().sync_data().map_err(io(&path))?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let (segment, file) = create_segment(&self.dir, self.next_lsn)?;
        let old = std::mem::replace(&mut self.current, segment);
        self.file = file;
        self.current_bytes = SEGMENT_MAGIC.len() as u64;
        self.closed.push(old);
        Ok(())
    }

    /// Deletes closed segments whose every record has an LSN at or below `durable_lsn`
    /// (that is, is safely in Parquet). Returns how many were deleted.
    pub fn truncate_through(&mut self, durable_lsn: u64) -> Result<usize, WalError> {
        let mut deleted = 0;
        // A closed segment ends where the next one begins.
        let starts: Vec<u64> = self
            .closed
            .iter()
            .skip(1)
            .map(|s| s.first_lsn)
            .chain([self.current.first_lsn])
            .collect();
        let mut keep = Vec::new();
        for (segment, next_start) in self.closed.drain(..).zip(starts) {
            if next_start.saturating_sub(1) <= durable_lsn {
                fs::remove_file(&segment.path).map_err(io(&segment.path))?;
                deleted += 1;
            } else {
                keep.push(segment);
            }
        }
        self.closed = keep;
        Ok(deleted)
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Number of segment files, open one included.
    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v, v + 1]))]).unwrap()
    }

    fn pending(v: i64) -> PendingRecord {
        PendingRecord {
            table: Table::Spans,
            payload: encode_batch(&batch(v)).unwrap(),
        }
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, rec) = open(dir.path(), WalConfig::default(), 0).unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(
            w.append_group(&[pending(1), pending(3)]).unwrap(),
            vec![1, 2]
        );
        assert_eq!(w.append_group(&[pending(5)]).unwrap(), vec![3]);
        drop(w);
        let (w, rec) = open(dir.path(), WalConfig::default(), 0).unwrap();
        let lsns: Vec<u64> = rec.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![1, 2, 3]);
        assert_eq!(rec.records[2].batch, batch(5));
        assert_eq!(w.next_lsn(), 4);
        assert!(rec.corrupt_segments.is_empty());
    }

    #[test]
    fn torn_tail_is_dropped_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = open(dir.path(), WalConfig::default(), 0).unwrap();
        w.append_group(&[pending(1), pending(2)]).unwrap();
        let path = w.current.path.clone();
        drop(w);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (_, rec) = open(dir.path(), WalConfig::default(), 0).unwrap();
        assert_eq!(rec.records.len(), 1);
        assert_eq!(rec.corrupt_segments.len(), 1);
        assert!(
            rec.corrupt_segments[0].contains("torn"),
            "{:?}",
            rec.corrupt_segments
        );
    }

    #[test]
    fn a_damaged_record_in_the_middle_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = open(dir.path(), WalConfig::default(), 0).unwrap();
        w.append_group(&[pending(1)]).unwrap();
        let path = w.current.path.clone();
        let after_first = fs::metadata(&path).unwrap().len() as usize;
        w.append_group(&[pending(2)]).unwrap();
        w.append_group(&[pending(3)]).unwrap();
        drop(w);
        let mut bytes = fs::read(&path).unwrap();
        // A byte inside the second record's payload, and its length field for good measure.
        bytes[after_first + 40] ^= 0x5a;
        bytes[after_first] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        let (_, rec) = open(dir.path(), WalConfig::default(), 0).unwrap();
        let lsns: Vec<u64> = rec.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![1, 3]);
        assert_eq!(rec.corrupt_segments.len(), 1, "{:?}", rec.corrupt_segments);
        assert!(rec.corrupt_segments[0].contains("next intact record"));
        assert!(rec.skipped_bytes > 0);
    }

    #[test]
    fn lsns_continue_past_what_the_caller_has_seen_even_with_no_segments_left() {
        let dir = tempfile::tempdir().unwrap();
        let (w, rec) = open(dir.path(), WalConfig::default(), 5_000).unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(w.next_lsn, 5_000);
    }

    #[test]
    fn flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = open(dir.path(), WalConfig::default(), 0).unwrap();
        w.append_group(&[pending(1)]).unwrap();
        let path = w.current.path.clone();
        drop(w);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (_, rec) = open(dir.path(), WalConfig::default(), 0).unwrap();
        assert!(rec.records.is_empty());
        assert!(rec.corrupt_segments[0].contains("checksum"));
    }

    #[test]
    fn rotation_and_truncation_keep_unflushed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            segment_bytes: 1,
            ..Default::default()
        };
        let (mut w, _) = open(dir.path(), config.clone(), 0).unwrap();
        for i in 0..4 {
            w.append_group(&[pending(i)]).unwrap();
        }
        // Segments: [1] [2] [3] closed (rotated before each append after the first), [4] open.
        assert_eq!(w.segment_count(), 4);
        assert_eq!(w.truncate_through(2).unwrap(), 2);
        drop(w);
        let (_, rec) = open(dir.path(), config, 0).unwrap();
        let lsns: Vec<u64> = rec.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![3, 4]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            /// Whatever the groups written and wherever a crash cuts the last segment, reopening
            /// yields exactly the records that were whole on disk, in order, with their contents.
            #[test]
            fn reopen_after_a_torn_write_yields_a_prefix(
                groups in prop::collection::vec(prop::collection::vec(0i64..1000, 1..4), 1..6),
                cut_fraction in 0.0f64..=1.0,
            ) {
                let dir = tempfile::tempdir().unwrap();
                let (mut w, _) = open(dir.path(), WalConfig { sync: SyncPolicy::Never, ..Default::default() }, 0).unwrap();
                let mut written = Vec::new();
                let mut ends = Vec::new();
                for group in &groups {
                    let records: Vec<PendingRecord> = group.iter().map(|v| pending(*v)).collect();
                    let lsns = w.append_group(&records).unwrap();
                    for (lsn, v) in lsns.into_iter().zip(group) {
                        written.push((lsn, *v));
                    }
                    w.file.flush().unwrap();
                    let size = fs::metadata(&w.current.path).unwrap().len();
                    ends.push((size, written.len()));
                }
                let path = w.current.path.clone();
                drop(w);
                let full = fs::metadata(&path).unwrap().len();
                let cut = SEGMENT_MAGIC.len() as u64 + ((full - SEGMENT_MAGIC.len() as u64) as f64 * cut_fraction) as u64;
                OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();

                let (_, recovered) = open(dir.path(), WalConfig::default(), 0).unwrap();
                // Records are whole exactly up to the last group end at or before the cut, or
                // further when the cut fell inside a later group after some of its records.
                let whole_groups = ends.iter().filter(|(end, _)| *end <= cut).map(|(_, n)| *n).max().unwrap_or(0);
                prop_assert!(recovered.records.len() >= whole_groups);
                prop_assert!(recovered.records.len() <= written.len());
                for (record, (lsn, v)) in recovered.records.iter().zip(&written) {
                    prop_assert_eq!(record.lsn, *lsn);
                    prop_assert_eq!(&record.batch, &batch(*v));
                }
            }
        }
    }
}
