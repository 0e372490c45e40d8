//! Nothing acknowledged is lost: SIGKILL mid-stream, restart, count. And memory stays bounded
//! under overload while everything acknowledged is stored.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::{Collector, one, vigil_bin};

/// The acknowledged batches: batch id → spans, from loadgen's ack log.
fn read_ack_log(path: &Path) -> BTreeMap<u64, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Loadgen's JSON summary (its last stdout line), after checking that it succeeded.
fn loadgen_summary(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .expect("loadgen prints a JSON summary")
}

/// Spans stored per loadgen batch for one run.
async fn stored_per_batch(c: &Collector, run: &str) -> BTreeMap<u64, u64> {
    let rows = c
        .sql(&format!(
            "SELECT CAST(resource_attributes['loadgen.batch'] AS BIGINT) AS batch, count(*) AS n FROM spans \
             WHERE resource_attributes['loadgen.run'] = '{run}' GROUP BY 1"
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r["batch"].as_u64().unwrap(), r["n"].as_u64().unwrap()))
        .collect()
}

/// Starts loadgen against `endpoint` with an ack log; `extra` sets protocol, rate and sizes.
fn loadgen(endpoint: &str, run: &str, ack_log: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(vigil_bin())
        .args([
            "loadgen",
            "--quiet",
            "--endpoint",
            endpoint,
            "--run-id",
            run,
        ])
        .arg("--ack-log")
        .arg(ack_log)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ack_log = dir.path().join("acks.log");
    // Small flush thresholds so that the kill lands with data both in Parquet and only in the WAL.
    let mut c = Collector::start_with(
        &dir.path().join("data"),
        vec![],
        &[("VIGIL_STORAGE__FLUSH_ROWS", "20000")],
    )
    .unwrap();
    let mut sender = loadgen(
        &c.grpc_url(),
        "crash",
        &ack_log,
        &["--rate", "20000", "--duration", "30", "--batch", "200"],
    );
    // Let it run until some batches are acknowledged and at least one flush has committed a
    // file (on a busy machine the flush of the first 20,000 rows can still be writing when
    // 40,000 are acknowledged).
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans_dir = c.data_dir.join("tables/spans");
    while (read_ack_log(&ack_log).values().sum::<u64>() < 40_000 || walk_parquet(&spans_dir) == 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The manifest follows a flush's files within milliseconds; the stream goes on meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.kill();
    // Whatever loadgen did not get an answer for is unacknowledged; give answers already received
    // a moment to reach the ack log, then stop it rather than let it fail until its deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = sender.kill();
    let _ = sender.wait();
    let acked = read_ack_log(&ack_log);
    assert!(
        acked.values().sum::<u64>() >= 20_000,
        "too little was acknowledged before the kill: {acked:?}"
    );

    c.restart().unwrap();
    let stored = stored_per_batch(&c, "crash").await;
    let mut missing = Vec::new();
    for (batch, spans) in &acked {
        if stored.get(batch) != Some(spans) {
            missing.push((*batch, *spans, stored.get(batch).copied()));
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged batches not stored exactly once (batch, sent, stored): {missing:?}"
    );
    // Unacknowledged batches may or may not have landed, but never twice.
    let dupes = c
        .sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans WHERE resource_attributes['loadgen.run'] = 'crash'")
        .await
        .unwrap();
    assert_eq!(
        one(&dupes, "n"),
        one(&dupes, "d"),
        "duplicate spans after replay"
    );
    let files = walk_parquet(&c.data_dir.join("tables/spans"));
    assert!(
        files > 0,
        "the kill should have come after at least one flush"
    );

    // A second restart (clean this time) replays nothing twice.
    c.stop().unwrap();
    c.restart().unwrap();
    let again = stored_per_batch(&c, "crash").await;
    assert_eq!(again, stored);
}

fn walk_parquet(dir: &Path) -> usize {
    let mut count = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                count += walk_parquet(&p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_pushes_back_keeps_memory_bounded_and_stores_everything_acknowledged() {
    const LIMIT: u64 = 64 << 20;
    // Measured as anonymous memory: the binary's own pages mapped from disk are no allocation
    // (72 MiB of a debug build idle, 80 under this load) and only blurred the bound. The stated
    // margin over the limit: the process baseline (runtime, DataFusion, thread stacks) plus
    // glibc's slack around what is freed (heaptrack: the heap peaks at 63 MiB in this run while
    // RssAnon reaches 100-150), plus one more limit: buffers, requests in flight and flushes
    // live within the limit itself, but a query over buffered rows (the analyzer's, every round)
    // keeps the batches it reads until it ends, after a flush has released them from the limit.
    const MARGIN: u64 = (128 << 20) + LIMIT;
    let dir = tempfile::tempdir().unwrap();
    let ack_log = dir.path().join("acks.log");
    let c = Collector::start_with(
        &dir.path().join("data"),
        vec!["--memory-limit-bytes".into(), LIMIT.to_string()],
        // Slow flushes (fsync per group, big row groups) so that the sender outruns the collector.
        &[("VIGIL_STORAGE__FLUSH_INTERVAL_SECS", "3600")],
    )
    .unwrap();
    let sender = loadgen(
        &c.grpc_url(),
        "flood",
        &ack_log,
        &[
            "--rate",
            "0",
            "--duration",
            "15",
            "--batch",
            "1000",
            "--concurrency",
            "16",
        ],
    );
    let pid = c.pid();
    let mut peak = 0u64;
    let started = Instant::now();
    let sampler = std::thread::spawn(move || {
        let (mut peak, mut peak_total) = (0, 0);
        while started.elapsed() < Duration::from_secs(16) {
            peak = peak.max(vigil_tests::anon_rss_bytes(pid).unwrap_or(0));
            peak_total = peak_total.max(vigil_tests::rss_bytes(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "overload: peak RSS with the binary's pages {} MiB",
            peak_total >> 20
        );
        peak
    });
    let output = tokio::task::spawn_blocking(move || sender.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    peak = peak.max(sampler.join().unwrap());
    let summary = loadgen_summary(&output);
    assert!(
        summary["throttled_attempts"].as_u64().unwrap() > 0,
        "the sender never saw pushback: {summary}"
    );
    assert!(
        peak < LIMIT + MARGIN,
        "anonymous RSS peaked at {} MiB, over the {} MiB limit + {} MiB margin",
        peak >> 20,
        LIMIT >> 20,
        MARGIN >> 20
    );

    let acked = read_ack_log(&ack_log);
    let stored = stored_per_batch(&c, "flood").await;
    for (batch, spans) in &acked {
        assert_eq!(
            stored.get(batch),
            Some(spans),
            "acknowledged batch {batch} not stored whole"
        );
    }
    let metrics = c.own_metrics().await.unwrap();
    assert!(
        !metrics.contains("vigil_ingest_throttled_requests_total{signal=\"spans\"} 0\n"),
        "{metrics}"
    );
    eprintln!(
        "overload: peak anonymous RSS {} MiB, {} pushbacks, {} spans acknowledged",
        peak >> 20,
        summary["throttled_attempts"],
        acked.values().sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_over_http_answers_429_with_retry_after_and_stores_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let ack_log = dir.path().join("acks.log");
    // 8 MiB: 4 MiB of buffers, a flush due at 2 MiB, so 16 senders outrun it.
    let c = Collector::start(
        &dir.path().join("data"),
        &["--memory-limit-bytes", "8388608"],
    )
    .unwrap();
    let sender = loadgen(
        &c.http_url(),
        "http-flood",
        &ack_log,
        &[
            "--protocol",
            "http",
            "--rate",
            "0",
            "--duration",
            "6",
            "--batch",
            "300",
            "--concurrency",
            "16",
        ],
    );
    let summary = loadgen_summary(&sender.wait_with_output().unwrap());
    assert!(
        summary["throttled_attempts"].as_u64().unwrap() > 0,
        "no 429 seen: {summary}"
    );
    assert_eq!(summary["failed_spans"], 0, "{summary}");
    let acked = read_ack_log(&ack_log);
    let stored = stored_per_batch(&c, "http-flood").await;
    assert_eq!(stored, acked);

    // A single request bigger than the whole buffer budget is refused for good, not retried forever.
    let big = Command::new(vigil_bin())
        .args([
            "loadgen",
            "--quiet",
            "--protocol",
            "http",
            "--endpoint",
            &c.http_url(),
        ])
        .args(["--spans", "20000", "--batch", "20000", "--rate", "0"])
        .output()
        .unwrap();
    assert!(!big.status.success());
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(
        stderr.contains("413") && stderr.contains("smaller batches"),
        "{stderr}"
    );
}

/// Unmounts a tmpfs when the test ends, however it ends.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One export request of 200 spans with a 500-byte attribute each (about 120 KB in the WAL).
fn bulky_request(
    batch: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..200u64)
        .map(|i| {
            let id = batch * 1000 + i + 1;
            Span {
                trace_id: [id.to_be_bytes(), 7u64.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                name: "fill".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1,
                attributes: vec![KeyValue {
                    key: "padding".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("{id:0>500}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A full disk: with the data directory on a small tmpfs, a request that cannot reach the WAL is
/// refused (UNAVAILABLE, which exporters retry), never acknowledged; `/readyz` and `/metrics` say
/// the disk is full; once space returns the collector takes data again by itself; and after a
/// SIGKILL and a restart every acknowledged span is there exactly once and no refused one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_what_it_cannot_keep_and_recovers_when_space_returns() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    let _unmount = Tmpfs(mount.clone());
    // Leave about 3 MB free.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; 5 << 20]).unwrap();
    let data = mount.join("data");
    let mut c = Collector::start(&data, &[]).unwrap();
    let mut client = TraceServiceClient::connect(c.grpc_url()).await.unwrap();

    let (mut acked, mut refused, mut batch) = (0u64, 0u64, 0u64);
    while refused < 3 {
        batch += 1;
        assert!(batch < 200, "the disk never filled");
        match client.export(bulky_request(batch)).await {
            Ok(_) => acked += 200,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                refused += 1;
            }
        }
    }
    let ready = reqwest::get(format!("{}/readyz", c.query_url()))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().await.unwrap().contains("disk full"));
    assert!(
        c.own_metrics()
            .await
            .unwrap()
            .contains("vigil_storage_disk_full 1\n")
    );

    // Space returns: the collector takes data again with no one's help.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..5 {
        batch += 1;
        client.export(bulky_request(batch)).await.unwrap();
        acked += 200;
    }
    let ready = reqwest::get(format!("{}/readyz", c.query_url()))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert!(
        c.own_metrics()
            .await
            .unwrap()
            .contains("vigil_storage_disk_full 0\n")
    );

    // Everything acknowledged survives a SIGKILL, once; nothing refused comes back.
    c.kill();
    c.restart().unwrap();
    let rows = c
        .sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
        .await
        .unwrap();
    assert_eq!(one(&rows, "n"), acked, "{rows:?}");
    assert_eq!(one(&rows, "d"), acked, "{rows:?}");
    assert!(!c.log().contains("panicked"));
}
