//! NCCL Inspector plugin output: one JSON object per collective per communicator, written by each
//! rank's process as JSON lines (`header`, `metadata`, `coll_perf`). Aggregated into exec-time
//! histograms, bandwidth gauges and a per-rank straggler score.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::Deserialize;

use crate::fields;
use crate::snapshot::{Histogram, Labels, Snapshot, Value};

/// One collective as one rank saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CollRecord {
    /// Communicator id (`header.id`).
    pub comm_id: String,
    pub rank: u32,
    pub n_ranks: u32,
    pub hostname: String,
    pub coll: String,
    pub coll_sn: u64,
    pub msg_size_bytes: u64,
    pub exec_time_us: f64,
    pub algobw_gbs: f64,
    pub busbw_gbs: f64,
    /// The writing process (`metadata.pid`).
    pub pid: Option<u32>,
    /// The rank's GPU (index, UUID): the Inspector's records do not say; the exporter finds it
    /// from the process id (NVML's compute processes), the simulator knows it.
    pub gpu: Option<(u32, String)>,
}

#[derive(Deserialize)]
struct RawRecord {
    header: RawHeader,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    coll_perf: Option<RawCollPerf>,
}

#[derive(Deserialize)]
struct RawHeader {
    id: String,
    rank: u32,
    n_ranks: u32,
}

#[derive(Deserialize)]
struct RawMetadata {
    hostname: Option<String>,
    pid: Option<u32>,
}

#[derive(Deserialize)]
struct RawCollPerf {
    coll: String,
    coll_sn: u64,
    coll_msg_size_bytes: u64,
    coll_exec_time_us: f64,
    coll_algobw_gbs: f64,
    coll_busbw_gbs: f64,
}

/// Parse one Inspector JSON object. `Ok(None)` for a well-formed record without `coll_perf` (the
/// plugin writes such records for communicators that have not run a collective yet).
pub fn parse_record(json: &[u8], default_hostname: &str) -> Result<Option<CollRecord>, String> {
    let raw: RawRecord =
        serde_json::from_slice(json).map_err(|e| format!("NCCL Inspector record: {e}"))?;
    let (hostname, pid) = match raw.metadata {
        Some(metadata) => (metadata.hostname, metadata.pid),
        None => (None, None),
    };
    Ok(raw.coll_perf.map(|perf| CollRecord {
        comm_id: raw.header.id,
        rank: raw.header.rank,
        n_ranks: raw.header.n_ranks,
        hostname: hostname.unwrap_or_else(|| default_hostname.to_string()),
        pid,
        coll: perf.coll,
        coll_sn: perf.coll_sn,
        msg_size_bytes: perf.coll_msg_size_bytes,
        exec_time_us: perf.coll_exec_time_us,
        algobw_gbs: perf.coll_algobw_gbs,
        busbw_gbs: perf.coll_busbw_gbs,
        gpu: None,
    }))
}

/// Message-size buckets for labels; few, so that series stay bounded.
pub fn size_bucket(bytes: u64) -> &'static str {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    match bytes {
        b if b < 64 * KIB => "<64KiB",
        b if b < MIB => "64KiB-1MiB",
        b if b < 16 * MIB => "1MiB-16MiB",
        b if b < 256 * MIB => "16MiB-256MiB",
        _ => ">=256MiB",
    }
}

/// Exec-time histogram bounds, seconds (Prometheus' base unit): roughly ×2.5 steps from 10 µs to
/// 10 s.
pub const EXEC_TIME_BOUNDS_SECONDS: [f64; 16] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0,
    10.0,
];

/// How many recent sequence numbers the straggler score looks at per communicator.
const STRAGGLER_WINDOW: usize = 64;
/// Sequence numbers kept while waiting for every rank to report.
const PENDING_LIMIT: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    hostname: String,
    comm_id: String,
    rank: u32,
    coll: String,
    size: &'static str,
    gpu: Option<(u32, String)>,
}

#[derive(Debug)]
struct SeriesState {
    exec_time: Histogram,
    total: u64,
    interval_busbw: f64,
    interval_algobw: f64,
    interval_count: u64,
    last_busbw: f64,
    last_algobw: f64,
}

#[derive(Debug, Default)]
struct CommState {
    n_ranks: u32,
    /// Exec times per sequence number until every rank has reported.
    pending: BTreeMap<u64, Vec<(u32, f64)>>,
    /// Per rank: its exec time over the peers' median, for recent sequence numbers.
    ratios: HashMap<u32, VecDeque<f64>>,
    rank_labels: HashMap<u32, (String, Option<(u32, String)>)>,
}

/// Running aggregates over every Inspector record seen.
#[derive(Debug)]
pub struct InspectorAggregator {
    bounds: Arc<[f64]>,
    series: BTreeMap<SeriesKey, SeriesState>,
    comms: BTreeMap<String, CommState>,
}

impl Default for InspectorAggregator {
    fn default() -> Self {
        InspectorAggregator {
            bounds: Arc::from(EXEC_TIME_BOUNDS_SECONDS.to_vec()),
            series: BTreeMap::new(),
            comms: BTreeMap::new(),
        }
    }
}

impl InspectorAggregator {
    pub fn observe(&mut self, record: &CollRecord) {
        let key = SeriesKey {
            hostname: record.hostname.clone(),
            comm_id: record.comm_id.clone(),
            rank: record.rank,
            coll: record.coll.clone(),
            size: size_bucket(record.msg_size_bytes),
            gpu: record.gpu.clone(),
        };
        let state = self.series.entry(key).or_insert_with(|| SeriesState {
            exec_time: Histogram::new(self.bounds.clone()),
            total: 0,
            interval_busbw: 0.0,
            interval_algobw: 0.0,
            interval_count: 0,
            last_busbw: 0.0,
            last_algobw: 0.0,
        });
        let seconds = record.exec_time_us / 1e6;
        state.exec_time.observe(seconds);
        state.total += 1;
        state.interval_busbw += record.busbw_gbs;
        state.interval_algobw += record.algobw_gbs;
        state.interval_count += 1;

        let comm = self.comms.entry(record.comm_id.clone()).or_default();
        comm.n_ranks = comm.n_ranks.max(record.n_ranks);
        comm.rank_labels
            .entry(record.rank)
            .or_insert_with(|| (record.hostname.clone(), record.gpu.clone()));
        let peers = comm.pending.entry(record.coll_sn).or_default();
        peers.push((record.rank, record.exec_time_us));
        if peers.len() as u32 >= comm.n_ranks
            && let Some(peers) = comm.pending.remove(&record.coll_sn)
        {
            score_sequence(&mut comm.ratios, &peers);
        }
        // Ranks this exporter cannot see never complete a sequence number: score what arrived.
        while comm.pending.len() > PENDING_LIMIT {
            if let Some((_, peers)) = comm.pending.pop_first() {
                score_sequence(&mut comm.ratios, &peers);
            }
        }
    }

    /// Emit every series into `out` and start a new bandwidth interval.
    pub fn emit(&mut self, hostname_labels: &[String], out: &mut Snapshot) {
        for (key, state) in &mut self.series {
            let labels = series_labels(hostname_labels, key);
            if state.interval_count > 0 {
                state.last_busbw = state.interval_busbw / state.interval_count as f64;
                state.last_algobw = state.interval_algobw / state.interval_count as f64;
                state.interval_busbw = 0.0;
                state.interval_algobw = 0.0;
                state.interval_count = 0;
            }
            out.push(&fields::NCCL_BUSBW, labels.clone(), state.last_busbw);
            out.push(&fields::NCCL_ALGOBW, labels.clone(), state.last_algobw);
            out.push(
                &fields::NCCL_COLLECTIVES,
                labels.clone(),
                state.total as f64,
            );
            out.push_value(
                &fields::NCCL_EXEC_TIME,
                labels,
                Value::Histogram(state.exec_time.clone()),
            );
        }
        for (comm_id, comm) in &self.comms {
            for (rank, ratios) in &comm.ratios {
                if ratios.is_empty() {
                    continue;
                }
                let (hostname, gpu) = comm.rank_labels.get(rank).cloned().unwrap_or_default();
                let labels = nccl_labels(
                    hostname_labels,
                    &hostname,
                    gpu.as_ref(),
                    &[("comm", comm_id), ("rank", &rank.to_string())],
                );
                let mut sorted: Vec<f64> = ratios.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                out.push(&fields::NCCL_STRAGGLER, labels, median(&sorted) - 1.0);
            }
        }
    }
}

fn series_labels(hostname_labels: &[String], key: &SeriesKey) -> Labels {
    nccl_labels(
        hostname_labels,
        &key.hostname,
        key.gpu.as_ref(),
        &[
            ("comm", &key.comm_id),
            ("rank", &key.rank.to_string()),
            ("coll", &key.coll),
            ("msg_size", key.size),
        ],
    )
}

fn score_sequence(ratios: &mut HashMap<u32, VecDeque<f64>>, peers: &[(u32, f64)]) {
    if peers.len() < 2 {
        return;
    }
    for (index, (rank, exec_time)) in peers.iter().enumerate() {
        let mut others: Vec<f64> = peers
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, (_, time))| *time)
            .collect();
        others.sort_by(f64::total_cmp);
        let reference = median(&others);
        if reference > 0.0 {
            let history = ratios.entry(*rank).or_default();
            history.push_back(exec_time / reference);
            if history.len() > STRAGGLER_WINDOW {
                history.pop_front();
            }
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Labels of an NCCL series: the host, the GPU when known, then `extra`.
pub fn nccl_labels(
    hostname_labels: &[String],
    hostname: &str,
    gpu: Option<&(u32, String)>,
    extra: &[(&str, &str)],
) -> Labels {
    let mut labels: Labels = Vec::with_capacity(hostname_labels.len() + extra.len() + 2);
    if let Some((index, uuid)) = gpu {
        labels.push((Arc::from("gpu"), Arc::from(index.to_string())));
        labels.push((Arc::from("UUID"), Arc::from(uuid.as_str())));
    }
    for name in hostname_labels {
        labels.push((Arc::from(name.as_str()), Arc::from(hostname)));
    }
    labels.extend(extra.iter().map(|(k, v)| (Arc::from(*k), Arc::from(*v))));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped as the plugin writes them (format v4.0), one object per line.
    const LINES: &str = r#"{"header":{"id":"0x7f8c496ae9f661","rank":0,"n_ranks":2,"nnodes":1},"metadata":{"inspector_output_format_version":"v4.0","git_rev":"","rec_mechanism":"profiler_plugin","dump_timestamp_us":1748030377748202,"hostname":"gpu-node-1","pid":1639453},"coll_perf":{"coll":"AllReduce","coll_sn":1407,"coll_msg_size_bytes":17179869184,"coll_exec_time_us":61974,"coll_timing_source":"kernel_gpu","coll_algobw_gbs":277.210914,"coll_busbw_gbs":485.119099}}
{"header":{"id":"0x7f8c496ae9f661","rank":1,"n_ranks":2,"nnodes":1},"metadata":{"inspector_output_format_version":"v4.0","git_rev":"","rec_mechanism":"profiler_plugin","dump_timestamp_us":1748030377748302,"hostname":"gpu-node-1","pid":1639454},"coll_perf":{"coll":"AllReduce","coll_sn":1407,"coll_msg_size_bytes":17179869184,"coll_exec_time_us":74368.8,"coll_timing_source":"kernel_gpu","coll_algobw_gbs":231.0,"coll_busbw_gbs":404.26}}"#;

    #[test]
    fn parses_inspector_records_and_scores_the_slow_rank() {
        let mut aggregator = InspectorAggregator::default();
        for line in LINES.lines() {
            let record = parse_record(line.as_bytes(), "fallback").unwrap().unwrap();
            assert_eq!(record.hostname, "gpu-node-1");
            assert_eq!(record.coll, "AllReduce");
            aggregator.observe(&record);
        }
        let mut out = Snapshot::default();
        aggregator.emit(&["Hostname".to_string()], &mut out);
        let score = |rank| {
            out.value("vigil_nccl_straggler_score", &[("rank", rank)])
                .unwrap()
        };
        assert!((score("1") - 0.2).abs() < 1e-9, "{}", score("1"));
        assert!((score("0") - (61974.0 / 74368.8 - 1.0)).abs() < 1e-9);
        let busbw = out.value(
            "vigil_nccl_coll_busbw_gbs",
            &[("rank", "0"), ("msg_size", ">=256MiB")],
        );
        assert_eq!(busbw, Some(485.119099));
        let text = out.render_prometheus();
        assert!(text.contains(r#"vigil_nccl_coll_exec_time_seconds_bucket{Hostname="gpu-node-1",comm="0x7f8c496ae9f661",rank="1",coll="AllReduce",msg_size=">=256MiB",le="0.1"} 1"#), "{text}");
    }

    #[test]
    fn records_without_coll_perf_are_skipped_and_garbage_is_an_error() {
        let no_perf = r#"{"header":{"id":"0x1","rank":0,"n_ranks":8,"nnodes":1},"metadata":{"hostname":"h"}}"#;
        assert_eq!(parse_record(no_perf.as_bytes(), "x").unwrap(), None);
        let error = parse_record(br#"{"header":{"id":"0x1"}}"#, "x").unwrap_err();
        assert!(error.contains("missing field `rank`"), "{error}");
    }
}
