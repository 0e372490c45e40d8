//! Fuzzing on stable, bounded in time: the files `vigil gpu-exporter` reads from NCCL (Inspector
//! JSON lines, nccl-tests text tables and `-J` JSON, `NCCL_DEBUG` logs) are written by other
//! programs and may be cut short, mixed up or hostile. Mutations of real outputs go through the
//! same read → parse → aggregate → render path the exporter runs, and must come back as metrics or
//! counted parse errors, never a panic. `PROPTEST_CASES` raises the case count for a longer run.

use std::time::SystemTime;

use proptest::prelude::*;
use vigil_gpu_exporter::nccl::{NcclConfig, NcclSources, inspector, probe};
use vigil_gpu_exporter::snapshot::Snapshot;

const INSPECTOR: &str = r#"{"header":{"id":"0x7f8c496ae9f661","rank":0,"n_ranks":2,"nnodes":1},"metadata":{"inspector_output_format_version":"v4.0","git_rev":"","rec_mechanism":"profiler_plugin","dump_timestamp_us":1748030377748202,"hostname":"gpu-node-1","pid":1639453},"coll_perf":{"coll":"AllReduce","coll_sn":1407,"coll_msg_size_bytes":17179869184,"coll_exec_time_us":61974,"coll_timing_source":"kernel_gpu","coll_algobw_gbs":277.210914,"coll_busbw_gbs":485.119099}}
{"header":{"id":"0x7f8c496ae9f661","rank":1,"n_ranks":2,"nnodes":1},"metadata":{"inspector_output_format_version":"v4.0","git_rev":"","rec_mechanism":"profiler_plugin","dump_timestamp_us":1748030377748302,"hostname":"gpu-node-1","pid":1639454},"coll_perf":{"coll":"AllGather","coll_sn":1408,"coll_msg_size_bytes":1024,"coll_exec_time_us":12,"coll_timing_source":"kernel_gpu","coll_algobw_gbs":0.08,"coll_busbw_gbs":0.07}}
"#;

const PROBE_TEXT: &str = "\
# nccl-tests version 2.17.1 nccl-headers=22703 nccl-library=22703
# Collective test starting: all_reduce_perf
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
           8             2     float     sum      -1    36.77    0.00    0.00      0    36.47    0.00    0.00      0
     1048576        262144     float     sum      -1    55.02   19.06   35.73      0    54.10   19.38   36.34      0
  8589934592    2147483648     float     sum      -1    44012  195.17  365.94      0    43990  195.27  366.13      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 134.0
";

const PROBE_JSON: &str = r#"{"version":2,"args":["./build/all_gather_perf"],"nccl_version":22703,"config":{"nthreads":1,"ngpus":8},"results":[{"size":1024,"count":32,"type":"float","redop":"none","root":"    -1","out_of_place":{"time":12.5,"alg_bw":0.08,"bus_bw":0.07,"nwrong":0.0},"in_place":{"time":12.1,"alg_bw":0.08,"bus_bw":0.07,"nwrong":0.0},"experiment_name":"AllGather"},{"size":1073741824,"count":33554432,"type":"float","redop":"none","root":"    -1","out_of_place":{"time":5120.0,"alg_bw":209.7,"bus_bw":"nan","nwrong":null},"in_place":null,"experiment_name":"AllGather"}]}"#;

const NCCL_LOG: &str = "\
gpu-node-1:1639453:1639453 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>
gpu-node-1:1639453:1639601 [0] transport/net_ib.cc:1295 NCCL WARN NET/IB : Got completion from peer 10.0.0.2<0> with error 12, opcode 0, len 0, vendor err 129 (Recv)
gpu-node-1:1639453:1639601 [0] NCCL WARN Watchdog caught collective operation timeout
";

type Edits = Vec<(u8, usize, u8)>;

/// Byte edits applied to a valid file: overwrite, insert, delete, truncate.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, at, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn edits(max: usize) -> impl Strategy<Value = Edits> {
    proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..max)
}

/// Writes the three kinds of file, polls twice (the second poll sees an appended tail, as a live
/// file would give it), and renders the metrics both ways the exporter publishes them.
fn read_as_the_exporter_does(inspector: &[u8], probe: &[u8], log: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let inspector_file = dir.path().join("inspector.log");
    let probe_file = dir.path().join("all_reduce.txt");
    let log_file = dir.path().join("nccl.log");
    let (first, rest) = inspector.split_at(inspector.len() / 2);
    std::fs::write(&inspector_file, first).unwrap();
    std::fs::write(&probe_file, probe).unwrap();
    std::fs::write(&log_file, log).unwrap();
    let mut sources = NcclSources::new(
        NcclConfig {
            inspector_paths: vec![inspector_file.clone()],
            probe_paths: vec![probe_file],
            log_paths: vec![log_file],
        },
        "gpu-node-1".into(),
    );
    sources.learn_gpus(vec![(1639453, (0, "GPU-0".into()))]);
    sources.poll();
    let mut appended = std::fs::OpenOptions::new()
        .append(true)
        .open(&inspector_file)
        .unwrap();
    std::io::Write::write_all(&mut appended, rest).unwrap();
    sources.poll();
    let mut snapshot = Snapshot::new(SystemTime::now());
    sources.emit(&["Hostname".into()], &mut snapshot);
    let page = snapshot.render_prometheus();
    // Every sample line of the page parses as `name{labels} value`: hostile label values are
    // escaped, not spliced into the format.
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "{line}"
        );
    }
    let resource = opentelemetry_proto::tonic::resource::v1::Resource::default();
    let _ = vigil_gpu_exporter::export::otlp::requests(&snapshot, &resource, SystemTime::now());
    page
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_nccl_files_never_panic_the_exporter(
        inspector_edits in edits(12),
        probe_edits in edits(12),
        json_probe in any::<bool>(),
        log_edits in edits(8),
    ) {
        let probe = if json_probe { PROBE_JSON } else { PROBE_TEXT };
        let _ = read_as_the_exporter_does(
            &mutate(INSPECTOR.as_bytes().to_vec(), &inspector_edits),
            &mutate(probe.as_bytes().to_vec(), &probe_edits),
            &mutate(NCCL_LOG.as_bytes().to_vec(), &log_edits),
        );
    }

    #[test]
    fn mutated_records_parse_or_fail_with_a_message(
        edits in edits(16),
        json_probe in any::<bool>(),
    ) {
        let line = INSPECTOR.lines().next().unwrap();
        if let Err(message) = inspector::parse_record(&mutate(line.as_bytes().to_vec(), &edits), "h") {
            prop_assert!(!message.is_empty());
        }
        let probe = if json_probe { PROBE_JSON } else { PROBE_TEXT };
        let text = String::from_utf8_lossy(&mutate(probe.as_bytes().to_vec(), &edits)).into_owned();
        if let Err(message) = probe::parse(&text) {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn noise_as_nccl_files_never_panics(
        inspector in proptest::collection::vec(any::<u8>(), 0..512),
        probe in proptest::collection::vec(any::<u8>(), 0..512),
        log in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = read_as_the_exporter_does(&inspector, &probe, &log);
    }
}

/// Values a parser must hold without overflow or a huge allocation: sizes at the edge of u64,
/// negative and non-finite times, ranks past `n_ranks`, deep nesting, control characters and
/// quotes in names that become label values.
#[test]
fn hostile_values_are_refused_or_held() {
    let hostile = [
        r#"{"header":{"id":"0x1","rank":4294967295,"n_ranks":2,"nnodes":1},"metadata":{"hostname":"h","pid":1},"coll_perf":{"coll":"AllReduce","coll_sn":1,"coll_msg_size_bytes":18446744073709551615,"coll_exec_time_us":-5,"coll_timing_source":"kernel_gpu","coll_algobw_gbs":1e308,"coll_busbw_gbs":-1e308}}"#.to_string(),
        r#"{"header":{"id":"0x1","rank":0,"n_ranks":18446744073709551615,"nnodes":1},"metadata":{"hostname":"h"},"coll_perf":{"coll":"","coll_sn":1,"coll_msg_size_bytes":0,"coll_exec_time_us":0,"coll_busbw_gbs":0}}"#.to_string(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        format!(
            r#"{{"header":{{"id":"{}","rank":0,"n_ranks":1}},"metadata":{{"hostname":"a\"b\\c\nd"}},"coll_perf":{{"coll":"x\"}} 1\nfake_metric 2","coll_sn":1,"coll_msg_size_bytes":8,"coll_exec_time_us":1,"coll_busbw_gbs":1}}}}"#,
            "x".repeat(100_000)
        ),
    ];
    let lines = hostile.join("\n") + "\n";
    let probe = "  18446744073709551615  1  float  sum  -1  inf  nan  -0  0  1  1  1  0\n";
    let _ = read_as_the_exporter_does(lines.as_bytes(), probe.as_bytes(), b"");
}

/// The harness reaches the parsers: unmutated files give every kind of NCCL metric.
#[test]
fn unmutated_files_give_every_kind_of_metric() {
    for probe in [PROBE_TEXT, PROBE_JSON] {
        let page =
            read_as_the_exporter_does(INSPECTOR.as_bytes(), probe.as_bytes(), NCCL_LOG.as_bytes());
        for name in [
            "vigil_nccl_coll_exec_time_seconds_bucket",
            "vigil_nccl_probe_busbw",
            "vigil_nccl_warnings",
        ] {
            assert!(page.contains(name), "{name} missing from:\n{page}");
        }
    }
}
