//! The README's own path, as a newcomer follows it: its shell commands verbatim (only `cargo run
//! --release --` becomes the built binary), run by bash in a fresh working directory, so `vigil
//! serve` keeps its data in the default relative `./vigil-data`. Only the listen ports differ,
//! through the documented `VIGIL_*` and `OTEL_EXPORTER_OTLP_ENDPOINT` variables, so that tests can
//! run side by side; flushes come sooner through `VIGIL_STORAGE__FLUSH_INTERVAL_SECS`. It runs
//! long enough for several flushes, asks the README's queries over flushed Parquet, restarts with
//! Ctrl-C as a user would, asks again, and requires that no detector failed a round throughout.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vigil_tests::{Collector, free_port, repo_root, vigil_bin};

const PREFIX: &str = "cargo run --release -- ";

/// The README's `sh` blocks, one string per command (continuation lines kept, as bash reads them).
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let (mut in_block, mut is_sh) = (false, false);
    let mut current = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            if in_block {
                in_block = false;
            } else {
                in_block = true;
                is_sh = line.trim() == "```sh";
            }
            continue;
        }
        if !(in_block && is_sh) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if !line.ends_with('\\') {
            if !current.trim().is_empty() {
                commands.push(current.trim().to_string());
            }
            current.clear();
        }
    }
    commands
}

/// The README's commands for one `vigil` subcommand, with the binary in place of cargo.
fn commands_for(all: &[String], subcommand: &str) -> Vec<String> {
    let bin = vigil_bin();
    let quoted = format!("'{}' ", bin.display());
    all.iter()
        .filter(|c| c.starts_with(&format!("{PREFIX}{subcommand}")))
        .map(|c| c.replacen(PREFIX, &quoted, 1))
        .collect()
}

struct Readme<'a> {
    cwd: &'a Path,
    env: Vec<(String, String)>,
    /// The collector's ports, the same across the restart, so the fleet reconnects.
    ports: [u16; 4],
}

impl Readme<'_> {
    fn bash(&self, command: &str) -> Command {
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(command)
            .current_dir(self.cwd)
            .env_remove("VIGIL_CONFIG")
            .env_remove("VIGIL_QUERY_URL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            bash.env(k, v);
        }
        bash
    }

    /// Runs a command to its end; returns stdout and stderr, or fails with both.
    fn run(&self, command: &str) -> anyhow::Result<(String, String)> {
        let output = self.bash(command).output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            bail!(
                "`{command}` failed ({}):\n{stdout}\n{stderr}",
                output.status
            );
        }
        Ok((stdout, stderr))
    }

    /// Starts a long-running command in the background, its output in `log`.
    fn spawn(&self, command: &str, log: &Path) -> anyhow::Result<Child> {
        let file = std::fs::File::create(log)?;
        Ok(self
            .bash(&format!("exec {command}"))
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?)
    }

    /// Starts `vigil serve` as the README says, on ports of its own.
    fn serve(&self, command: &str) -> anyhow::Result<Collector> {
        let mut bash = self.bash(&format!("exec {command}"));
        let [grpc, http, query, flight_sql] = self.ports;
        bash.env("VIGIL_OTLP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("VIGIL_OTLP_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("VIGIL_QUERY_ADDR", format!("127.0.0.1:{query}"))
            .env("VIGIL_FLIGHT_SQL_ADDR", format!("127.0.0.1:{flight_sql}"))
            .env("VIGIL_STORAGE__FLUSH_INTERVAL_SECS", "4");
        Collector::spawn(bash, &self.cwd.join("serve.log"))
    }
}

/// `name{detector="x"} value` lines of one family on a `/metrics` page.
fn per_detector(page: &str, family: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix("{detector=\"")?;
            let (detector, value) = rest.split_once("\"} ")?;
            Some((detector.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn gauge(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until every detector has run `rounds` more times than in `before`, then requires that
/// none has failed since the collector started.
async fn detectors_ran_cleanly(
    collector: &Collector,
    before: &BTreeMap<String, f64>,
    rounds: f64,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = collector.own_metrics().await?;
        let runs = per_detector(&page, "vigil_analyzer_detector_runs_total");
        let failures = per_detector(&page, "vigil_analyzer_detector_failures_total");
        let failed: Vec<_> = failures.iter().filter(|(_, n)| **n > 0.0).collect();
        if !failed.is_empty() {
            bail!(
                "detectors failed rounds: {failed:?}; the collector's log:\n{}",
                collector.log()
            );
        }
        let done = !runs.is_empty()
            && runs
                .iter()
                .all(|(d, n)| *n >= before.get(d).copied().unwrap_or(0.0) + rounds);
        if done {
            return Ok(runs);
        }
        if Instant::now() > deadline {
            bail!("the detectors did not run {rounds} more rounds within 60 s: {runs:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the spans buffer is empty and both tables have Parquet files: from then on the
/// README's queries read flushed files.
async fn flushed(collector: &Collector, metric_files: f64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = collector.own_metrics().await?;
        let span_files = gauge(&page, "vigil_parquet_files{table=\"spans\"}");
        let metrics_files = gauge(&page, "vigil_parquet_files{table=\"metrics\"}");
        let buffered_spans = gauge(&page, "vigil_buffered_rows{table=\"spans\"}");
        if span_files >= 1.0 && metrics_files >= metric_files && buffered_spans == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not flushed within 60 s (span files {span_files}, metric files {metrics_files}, buffered spans {buffered_spans})"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the README's queries; each must succeed and return rows. Returns their outputs.
fn ask(readme: &Readme, queries: &[String]) -> anyhow::Result<Vec<String>> {
    let mut outputs = Vec::new();
    for query in queries {
        let (stdout, stderr) = readme.run(query)?;
        let rows: usize = stderr
            .lines()
            .find_map(|l| l.strip_suffix(" rows").or_else(|| l.strip_suffix(" row")))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no row count from `{query}`: {stderr}"))?;
        anyhow::ensure!(rows > 0, "`{query}` returned no rows:\n{stdout}");
        outputs.push(stdout);
    }
    Ok(outputs)
}

/// A printed table without its last column.
fn without_last_column(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            let separator = if line.starts_with('+') { '+' } else { '|' };
            let mut cells: Vec<&str> = line.split(separator).collect();
            if cells.len() > 2 {
                cells.remove(cells.len() - 2);
            }
            cells.join(&separator.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn span_count(collector: &Collector) -> anyhow::Result<i64> {
    let rows = collector.sql("SELECT count(*) AS n FROM spans").await?;
    vigil_tests::one(&rows, "n")
        .as_i64()
        .context("count(*) is not a number")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_path_works_verbatim_across_flushes_and_a_restart() -> anyhow::Result<()> {
    let all = readme_commands();
    let serve = commands_for(&all, "serve");
    let loadgen = commands_for(&all, "loadgen");
    let exporters = commands_for(&all, "gpu-exporter");
    let queries = commands_for(&all, "query");
    anyhow::ensure!(
        serve.len() == 1 && !loadgen.is_empty() && !exporters.is_empty() && queries.len() >= 2,
        "the README's commands changed shape: serve {serve:?}, loadgen {loadgen:?}, exporters {exporters:?}, queries {queries:?}"
    );
    anyhow::ensure!(
        !serve[0].contains("--data-dir"),
        "the README's serve must use the default data directory"
    );

    // A fresh working directory whose name has a space and non-ASCII letters, as home
    // directories and project folders often do.
    let root = tempfile::tempdir()?;
    let cwd = root.path().join("my prøject");
    std::fs::create_dir(&cwd)?;
    let mut readme = Readme {
        cwd: &cwd,
        env: Vec::new(),
        ports: [free_port()?, free_port()?, free_port()?, free_port()?],
    };

    let mut collector = readme.serve(&serve[0])?;
    collector.wait_ready().await?;
    readme.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.grpc_url()),
        ("VIGIL_QUERY_URL".into(), collector.query_url()),
        ("VIGIL_GPU_EXPORTER_LISTEN".into(), "127.0.0.1:0".into()),
    ];
    let mut fleet = Vec::new();
    for (i, exporter) in exporters.iter().enumerate() {
        fleet.push(readme.spawn(exporter, &cwd.join(format!("exporter-{i}.log")))?);
    }
    for command in &loadgen {
        readme.run(command)?;
    }
    flushed(&collector, 2.0).await?;
    assert!(
        cwd.join("vigil-data/tables/spans").is_dir(),
        "the data is in ./vigil-data of the working directory"
    );
    detectors_ran_cleanly(&collector, &BTreeMap::new(), 2.0).await?;
    let before = ask(&readme, &queries)?;
    let spans_before = span_count(&collector).await?;
    assert!(spans_before >= 10_000, "{spans_before} spans stored");
    let (alerts, _) = readme.run(&format!("'{}' alerts", vigil_bin().display()))?;
    assert!(alerts.contains("Analyzer: ok"), "{alerts}");

    // Ctrl-C, then the same command again: everything that was there is there.
    collector.stop_with("INT")?;
    let collector = readme.serve(&serve[0])?;
    collector.wait_ready().await?;
    let after = ask(&readme, &queries)?;
    assert_eq!(span_count(&collector).await?, spans_before);
    // Equal but for the last column, an approximate percentile whose t-digest depends on the
    // order in which partitions are merged.
    assert_eq!(
        without_last_column(&before[0]),
        without_last_column(&after[0]),
        "the README's first query answers the same after a restart"
    );
    // The fleet reconnected: its new samples flush to new files, and the detectors read them.
    let page = collector.own_metrics().await?;
    let files = gauge(&page, "vigil_parquet_files{table=\"metrics\"}");
    flushed(&collector, files + 1.0).await?;
    detectors_ran_cleanly(&collector, &BTreeMap::new(), 2.0).await?;
    ask(&readme, &queries)?;

    for mut exporter in fleet {
        let _ = exporter.kill();
        let _ = exporter.wait();
    }
    Ok(())
}
