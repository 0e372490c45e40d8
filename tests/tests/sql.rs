//! SQL over the buffers and the Parquet files together, through the HTTP endpoint and `vigil query`.

use std::process::Command;

use vigil_tests::{Collector, one, run_vigil, run_vigil_with_env, vigil_bin};

fn loadgen(c: &Collector, spans: u64, run: &str) {
    let output = Command::new(vigil_bin())
        .args([
            "loadgen",
            "--quiet",
            "--rate",
            "0",
            "--batch",
            "250",
            "--endpoint",
            &c.grpc_url(),
            "--run-id",
            run,
        ])
        .args(["--spans", &spans.to_string(), "--metrics", "--logs"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_span_parquet_and_memory_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    loadgen(&c, 2000, "before");
    // A clean stop flushes everything to Parquet.
    c.stop().unwrap();
    c.restart().unwrap();
    c.wait_ready().await.unwrap();
    let metrics = c.own_metrics().await.unwrap();
    assert!(
        metrics.contains("vigil_buffered_rows{table=\"spans\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vigil_parquet_files{table=\"spans\"} 0"),
        "{metrics}"
    );
    loadgen(&c, 1000, "after");

    let rows = c
        .sql("SELECT resource_attributes['loadgen.run'] AS run, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0]["n"].as_u64().unwrap() >= 1000 && rows[1]["n"].as_u64().unwrap() >= 2000,
        "{rows:?}"
    );
    let total: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();

    // Time filters prune hour partitions but never change the answer.
    let recent = c
        .sql("SELECT count(*) AS n FROM spans WHERE time > now() - interval '1 hour'")
        .await
        .unwrap();
    assert_eq!(one(&recent, "n").as_u64(), Some(total));
    let ancient = c
        .sql("SELECT count(*) AS n FROM spans WHERE time < TIMESTAMP '2001-01-01T00:00:00Z'")
        .await
        .unwrap();
    assert_eq!(one(&ancient, "n"), 0);
    let between = c
        .sql("SELECT count(*) AS n FROM spans WHERE time BETWEEN now() - interval '2 hours' AND now() + interval '1 hour'")
        .await
        .unwrap();
    assert_eq!(one(&between, "n").as_u64(), Some(total));

    // The dashboard queries of BENCHMARKS.md run and give sane answers.
    let p95 = c
        .sql("SELECT response_model, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95 FROM spans \
              WHERE time > now() - interval '1 hour' AND response_model IS NOT NULL GROUP BY 1 ORDER BY 1")
        .await
        .unwrap();
    assert!(p95.len() >= 5, "{p95:?}");
    assert!(p95.iter().all(|r| r["p95"].as_f64().unwrap() > 0.0));
    let errors = c
        .sql("SELECT service_name, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate FROM spans GROUP BY 1")
        .await
        .unwrap();
    assert!(
        errors
            .iter()
            .all(|r| r["error_rate"].as_f64().unwrap() < 0.2),
        "{errors:?}"
    );
    let metrics = c.sql("SELECT count(*) AS n FROM metrics WHERE metric_name = 'gen_ai.client.operation.duration'").await.unwrap();
    assert!(one(&metrics, "n").as_u64().unwrap() > 0);
    let logs = c
        .sql("SELECT count(*) AS n FROM logs l JOIN spans s ON l.span_id = s.span_id")
        .await
        .unwrap();
    assert!(
        one(&logs, "n").as_u64().unwrap() > 0,
        "logs join to their spans"
    );

    // `vigil query`, in each format.
    let url = c.query_url();
    let (status, out, err) =
        run_vigil(&["query", "--url", &url, "SELECT count(*) AS n FROM spans"]).unwrap();
    assert!(status.success(), "{err}");
    assert!(
        out.contains("| n ") && out.contains(&total.to_string()),
        "{out}"
    );
    let (status, out, _) = run_vigil(&[
        "query",
        "--url",
        &url,
        "--format",
        "csv",
        "SELECT 1 AS a, 'x' AS b",
    ])
    .unwrap();
    assert!(status.success());
    assert_eq!(out.trim(), "a,b\n1,x");
    let (status, out, _) =
        run_vigil(&["query", "--url", &url, "--format", "json", "SELECT 2 AS a"]).unwrap();
    assert!(status.success());
    assert_eq!(out.trim(), "{\"a\":2}");
    // An empty result still names its columns, and says it has no rows.
    let (status, out, err) = run_vigil(&[
        "query",
        "--url",
        &url,
        "SELECT name, duration_ns FROM spans WHERE false",
    ])
    .unwrap();
    assert!(status.success(), "{err}");
    assert!(out.contains("| name | duration_ns |"), "{out}");
    assert_eq!(err.trim(), "0 rows");
    let (status, out, _) =
        run_vigil(&["query", "--url", &url, "--bench", "3", "SELECT 1"]).unwrap();
    assert!(status.success());
    assert!(out.contains("\"p95_ms\""), "{out}");
    let (status, _, err) = run_vigil(&["query", "--url", &url, "DROP TABLE spans"]).unwrap();
    assert!(!status.success());
    assert!(err.contains("read-only"), "{err}");

    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("{url}{path}")).await.unwrap();
        assert!(r.status().is_success(), "{path}");
    }
}

#[test]
fn serve_help_config_and_bad_config() {
    let (status, out, _) = run_vigil(&["serve", "--help"]).unwrap();
    assert!(status.success());
    assert!(out.contains("--data-dir") && out.contains("VIGIL_"));
    let (status, out, err) =
        run_vigil(&["serve", "--print-config", "--data-dir", "/tmp/somewhere"]).unwrap();
    assert!(status.success(), "{err}");
    assert!(out.contains("data_dir = \"/tmp/somewhere\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nflush_rowz = 5\n").unwrap();
    let (status, _, err) =
        run_vigil(&["serve", "--print-config", "--config", bad.to_str().unwrap()]).unwrap();
    assert!(!status.success());
    assert!(err.contains("flush_rowz"), "{err}");
    // A value that parses but cannot run (a zero interval would spin) is named at start.
    let (status, _, err) = run_vigil_with_env(
        &["serve", "--print-config"],
        &[("VIGIL_ANALYZER__INTERVAL", "0s")],
    )
    .unwrap();
    assert!(!status.success());
    assert!(err.contains("analyzer.interval = 0s"), "{err}");
    let example = vigil_tests::repo_root().join("vigil.example.toml");
    let (status, _, err) = run_vigil(&[
        "serve",
        "--print-config",
        "--config",
        example.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        status.success(),
        "the shipped example config must load: {err}"
    );
    let (status, _, err) =
        run_vigil(&["query", "--url", "http://127.0.0.1:9", "SELECT 1"]).unwrap();
    assert!(!status.success());
    assert!(err.contains("is `vigil serve` running?"), "{err}");
}
