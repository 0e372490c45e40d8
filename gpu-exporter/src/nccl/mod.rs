//! NCCL telemetry on the node: the Inspector plugin's JSON lines, nccl-tests results and
//! `NCCL WARN` log lines, read incrementally from files and turned into metrics.

pub mod inspector;
pub mod probe;
pub mod warn;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::fields;
use crate::snapshot::Snapshot;
use inspector::{InspectorAggregator, nccl_labels};

/// Reads what was appended to a file since the last call; starts over if the file was truncated
/// or replaced.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    offset: u64,
    /// An unfinished last line, kept until the writer completes it.
    partial: Vec<u8>,
}

impl FileTail {
    pub fn new(path: PathBuf) -> Self {
        FileTail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Complete lines appended since the last call.
    pub fn read_lines(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut file = File::open(&self.path)?;
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::with_capacity((len - self.offset) as usize);
        file.take(len - self.offset).read_to_end(&mut fresh)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        let mut start = 0;
        for (index, byte) in self.partial.iter().enumerate() {
            if *byte == b'\n' {
                let line = &self.partial[start..index];
                if !line.iter().all(u8::is_ascii_whitespace) {
                    lines.push(line.to_vec());
                }
                start = index + 1;
            }
        }
        self.partial.drain(..start);
        Ok(lines)
    }
}

/// Where NCCL telemetry is read from.
#[derive(Debug, Clone, Default)]
pub struct NcclConfig {
    /// Directories (every file in them, recursively one level) or files of Inspector output.
    pub inspector_paths: Vec<PathBuf>,
    /// nccl-tests outputs (text or `-J` JSON); re-read when they change.
    pub probe_paths: Vec<PathBuf>,
    /// Logs written with `NCCL_DEBUG=WARN` or `INFO`.
    pub log_paths: Vec<PathBuf>,
}

/// Every NCCL source of one node.
#[derive(Debug)]
pub struct NcclSources {
    config: NcclConfig,
    hostname: String,
    inspector_tails: BTreeMap<PathBuf, FileTail>,
    log_tails: BTreeMap<PathBuf, FileTail>,
    probes: BTreeMap<PathBuf, (SystemTime, Vec<probe::ProbeResult>)>,
    pub aggregator: InspectorAggregator,
    warnings: BTreeMap<&'static str, u64>,
    parse_errors: BTreeMap<&'static str, u64>,
    /// This node's GPU (index, UUID) per process id, as NVML last listed their compute processes.
    /// Kept after a process exits: its last records may still be unread.
    gpu_of_pid: HashMap<u32, (u32, String)>,
}

/// Process ids remembered at most (pids are reused; a long-lived node sees many).
const PIDS_REMEMBERED: usize = 4096;

impl NcclSources {
    pub fn new(config: NcclConfig, hostname: String) -> Self {
        NcclSources {
            config,
            hostname,
            inspector_tails: BTreeMap::new(),
            log_tails: BTreeMap::new(),
            probes: BTreeMap::new(),
            aggregator: InspectorAggregator::default(),
            warnings: BTreeMap::new(),
            parse_errors: BTreeMap::new(),
            gpu_of_pid: HashMap::new(),
        }
    }

    /// Which GPU each process runs on, from this round's NVML process lists. A process on more
    /// than one GPU names none of them.
    pub fn learn_gpus(&mut self, pids: Vec<(u32, (u32, String))>) {
        let mut seen: HashMap<u32, Option<(u32, String)>> = HashMap::new();
        for (pid, gpu) in pids {
            seen.entry(pid)
                .and_modify(|known| {
                    if known.as_ref() != Some(&gpu) {
                        *known = None;
                    }
                })
                .or_insert(Some(gpu));
        }
        if self.gpu_of_pid.len() + seen.len() > PIDS_REMEMBERED {
            self.gpu_of_pid.clear();
        }
        for (pid, gpu) in seen {
            match gpu {
                Some(gpu) => {
                    self.gpu_of_pid.insert(pid, gpu);
                }
                None => {
                    self.gpu_of_pid.remove(&pid);
                }
            }
        }
    }

    /// Read whatever is new in every source.
    pub fn poll(&mut self) {
        for path in expand(&self.config.inspector_paths) {
            self.inspector_tails
                .entry(path.clone())
                .or_insert_with(|| FileTail::new(path));
        }
        for tail in self.inspector_tails.values_mut() {
            match tail.read_lines() {
                Ok(lines) => {
                    for line in lines {
                        match inspector::parse_record(&line, &self.hostname) {
                            Ok(Some(mut record)) => {
                                // Only this node's processes are in NVML's lists.
                                if record.gpu.is_none() && record.hostname == self.hostname {
                                    record.gpu = record
                                        .pid
                                        .and_then(|pid| self.gpu_of_pid.get(&pid).cloned());
                                }
                                self.aggregator.observe(&record);
                            }
                            Ok(None) => {}
                            Err(message) => {
                                tracing::warn!(path = %tail.path.display(), %message, "skipping a line of NCCL Inspector output");
                                *self.parse_errors.entry("inspector").or_default() += 1;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(path = %tail.path.display(), error = %e, "cannot read NCCL Inspector output")
                }
            }
        }
        for path in expand(&self.config.log_paths) {
            self.log_tails
                .entry(path.clone())
                .or_insert_with(|| FileTail::new(path));
        }
        for tail in self.log_tails.values_mut() {
            if let Ok(lines) = tail.read_lines() {
                for line in lines {
                    if let Some(kind) = warn::classify(&String::from_utf8_lossy(&line)) {
                        *self.warnings.entry(kind).or_default() += 1;
                    }
                }
            }
        }
        for path in expand(&self.config.probe_paths) {
            let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            if self
                .probes
                .get(&path)
                .is_some_and(|(seen, _)| *seen == modified)
            {
                continue;
            }
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| probe::parse(&text))
            {
                Ok(results) => {
                    self.probes.insert(path, (modified, results));
                }
                Err(message) => {
                    tracing::warn!(path = %path.display(), %message, "cannot read nccl-tests output");
                    *self.parse_errors.entry("nccl_tests").or_default() += 1;
                    // Remember the version so that one bad file is reported once, not every round.
                    self.probes.insert(path, (modified, Vec::new()));
                }
            }
        }
    }

    /// Emit every NCCL metric into `out`.
    pub fn emit(&mut self, hostname_labels: &[String], out: &mut Snapshot) {
        self.aggregator.emit(hostname_labels, out);
        for (_, results) in self.probes.values() {
            for result in results {
                let labels = nccl_labels(
                    hostname_labels,
                    &self.hostname,
                    None,
                    &[
                        ("coll", &result.op),
                        ("size_bytes", &result.size_bytes.to_string()),
                    ],
                );
                out.push(&fields::NCCL_PROBE_BUSBW, labels.clone(), result.busbw_gbs);
                out.push(&fields::NCCL_PROBE_TIME, labels, result.time_us / 1e6);
            }
        }
        for (kind, count) in &self.warnings {
            let labels = nccl_labels(hostname_labels, &self.hostname, None, &[("kind", kind)]);
            out.push(&fields::NCCL_WARNINGS, labels, *count as f64);
        }
        for (source, count) in &self.parse_errors {
            let labels = nccl_labels(hostname_labels, &self.hostname, None, &[("source", source)]);
            out.push(&fields::NCCL_PARSE_ERRORS, labels, *count as f64);
        }
    }
}

/// Files named directly, and the files inside named directories (and their subdirectories, one
/// level deep: the Inspector writes one directory per job).
fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, 2, &mut files);
    }
    files
}

fn collect(path: &Path, depth: u32, files: &mut Vec<PathBuf>) {
    if path.is_file() {
        files.push(path.to_path_buf());
    } else if depth > 0
        && path.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        let mut children: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        children.sort();
        for child in children {
            collect(&child, depth - 1, files);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tails_inspector_files_logs_and_probes_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("nccl-inspector-4242");
        std::fs::create_dir(&job).unwrap();
        let inspector_file = job.join("rank0.log");
        let record = |sn: u64, rank: u32, time: f64| {
            format!(
                r#"{{"header":{{"id":"0xabc","rank":{rank},"n_ranks":2,"nnodes":1}},"metadata":{{"hostname":"n1","pid":1}},"coll_perf":{{"coll":"AllReduce","coll_sn":{sn},"coll_msg_size_bytes":1048576,"coll_exec_time_us":{time},"coll_algobw_gbs":10.0,"coll_busbw_gbs":17.5}}}}"#
            )
        };
        let mut file = File::create(&inspector_file).unwrap();
        writeln!(file, "{}", record(1, 0, 100.0)).unwrap();
        writeln!(file, "this is not json").unwrap();
        // Half a line: the writer has not finished it.
        let second = record(1, 1, 150.0);
        write!(file, "{}", &second[..40]).unwrap();
        file.flush().unwrap();
        let log = dir.path().join("nccl.log");
        std::fs::write(&log, "n1:1:2 [0] NCCL WARN NET/IB : Got completion from peer with status=12\nn1:1:2 [0] NCCL INFO fine\n").unwrap();
        let probe_file = dir.path().join("probe.txt");
        std::fs::write(&probe_file, "# Collective test starting: all_reduce_perf\n 1048576 262144 float sum -1 55.02 19.06 35.73 0 54.10 19.38 36.34 0\n").unwrap();

        let mut sources = NcclSources::new(
            NcclConfig {
                inspector_paths: vec![job.clone()],
                probe_paths: vec![probe_file],
                log_paths: vec![log],
            },
            "n1".into(),
        );
        sources.poll();
        writeln!(file, "{}", &second[40..]).unwrap();
        file.flush().unwrap();
        sources.poll();
        let mut out = Snapshot::default();
        sources.emit(&["Hostname".into()], &mut out);
        assert_eq!(
            out.value("vigil_nccl_collectives_total", &[("rank", "0")]),
            Some(1.0)
        );
        assert_eq!(
            out.value("vigil_nccl_collectives_total", &[("rank", "1")]),
            Some(1.0)
        );
        let score = out
            .value("vigil_nccl_straggler_score", &[("rank", "1")])
            .unwrap();
        assert!((score - 0.5).abs() < 1e-9);
        assert_eq!(
            out.value("vigil_nccl_parse_errors_total", &[("source", "inspector")]),
            Some(1.0)
        );
        assert_eq!(
            out.value("vigil_nccl_warnings_total", &[("kind", "net_ib")]),
            Some(1.0)
        );
        assert_eq!(
            out.value(
                "vigil_nccl_probe_busbw_gbs",
                &[("coll", "AllReduce"), ("size_bytes", "1048576")]
            ),
            Some(35.73)
        );
    }

    #[test]
    fn ranks_get_their_gpu_from_the_process_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inspector.log");
        let record = |rank: u32, host: &str, pid: u32| {
            format!(
                r#"{{"header":{{"id":"0xabc","rank":{rank},"n_ranks":4,"nnodes":2}},"metadata":{{"hostname":"{host}","pid":{pid}}},"coll_perf":{{"coll":"AllReduce","coll_sn":1,"coll_msg_size_bytes":1048576,"coll_exec_time_us":100.0,"coll_algobw_gbs":10.0,"coll_busbw_gbs":17.5}}}}"#
            )
        };
        let lines = [
            record(0, "n1", 100), // on GPU 0
            record(1, "n1", 101), // on GPUs 1 and 2: ambiguous
            record(2, "n1", 102), // not in NVML's lists
            record(3, "n2", 100), // another node's pid 100, in a shared dump directory
        ];
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let mut sources = NcclSources::new(
            NcclConfig {
                inspector_paths: vec![file],
                ..NcclConfig::default()
            },
            "n1".into(),
        );
        sources.learn_gpus(vec![
            (100, (0, "GPU-a".to_string())),
            (101, (1, "GPU-b".to_string())),
            (101, (2, "GPU-c".to_string())),
        ]);
        sources.poll();
        let mut out = Snapshot::default();
        sources.emit(&["Hostname".into()], &mut out);
        let uuid_of = |rank: &str| {
            let matching = [("rank", rank)];
            out.series("vigil_nccl_collectives_total", &matching)
                .next()
                .and_then(|series| {
                    series
                        .labels
                        .iter()
                        .find(|(k, _)| &**k == "UUID")
                        .map(|(_, v)| v.to_string())
                })
        };
        assert!(
            out.value("vigil_nccl_collectives_total", &[("rank", "3")])
                .is_some()
        );
        assert_eq!(uuid_of("0").as_deref(), Some("GPU-a"));
        assert_eq!(uuid_of("1"), None);
        assert_eq!(uuid_of("2"), None);
        assert_eq!(uuid_of("3"), None);
    }
}
