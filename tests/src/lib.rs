//! vigil-tests: end-to-end tests that start real `vigil` processes on loopback ports they choose
//! and talk to them with real clients. Depends on the built `vigil` binary (`cargo build` first,
//! as `scripts/test.sh` does); it must never send traffic beyond 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// Makes ring this test process' TLS crypto provider, as `vigil` does for itself: reqwest's
/// clients panic when built without one. Every helper that starts something calls it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `vigil` binary: `$VIGIL_BIN`, or the one built next to this test executable.
pub fn vigil_bin() -> PathBuf {
    install_crypto_provider();
    if let Ok(path) = std::env::var("VIGIL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/vigil
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = profile_dir.join(format!("vigil{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace --bins` (scripts/test.sh does) before the end-to-end tests",
        bin.display()
    );
    bin
}

/// The Python interpreter with the OpenTelemetry SDK: `$VIGIL_PYTHON`, else `.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Ok(path) = std::env::var("VIGIL_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the OpenTelemetry SDK: run scripts/test.sh, which creates .venv"
    );
    venv
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    // cargo and nextest set it when they run a test; the compile-time value can name another
    // checkout whose build this target directory reused.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// `serve --data-dir <data_dir>` on ephemeral loopback ports: the arguments every test's
/// collector starts with.
pub fn serve_args(data_dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["serve".into(), "--data-dir".into()];
    args.push(data_dir.into());
    for flag in [
        "--otlp-grpc-addr",
        "--otlp-http-addr",
        "--query-addr",
        "--flight-sql-addr",
    ] {
        args.push(flag.into());
        args.push("127.0.0.1:0".into());
    }
    args
}

/// A `vigil serve` process on ephemeral loopback ports.
pub struct Collector {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub query: SocketAddr,
    pub flight_sql: SocketAddr,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
}

impl Collector {
    /// Starts a collector on `data_dir` with extra `vigil serve` flags.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Collector> {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::start_with(data_dir, extra_args, &[])
    }

    /// Starts a collector with extra flags and environment variables.
    pub fn start_with(
        data_dir: &Path,
        extra_args: Vec<String>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Collector> {
        std::fs::create_dir_all(data_dir)?;
        let log_path = data_dir.with_extension("log");
        let mut command = Command::new(vigil_bin());
        command
            .args(serve_args(data_dir))
            .args(&extra_args)
            .env_remove("VIGIL_CONFIG");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut collector = Collector::spawn(command, &log_path)?;
        collector.data_dir = data_dir.to_path_buf();
        collector.extra_args = extra_args;
        Ok(collector)
    }

    /// Starts `command`, which must run `vigil serve`, and waits for the line on which it says
    /// where it listens. Its stderr (the log) goes to `log_path`. `data_dir` is left empty and
    /// `restart` repeats the plain `start_with` launch; callers with their own command set both.
    pub fn spawn(mut command: Command, log_path: &Path) -> anyhow::Result<Collector> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().context("could not start vigil serve")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("vigil: listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                bail!("vigil serve did not report its ports within 60 s; its log:\n{log}");
            }
        };
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            let token = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix(&format!("{key}=")))
                .with_context(|| format!("no {key}= in {line:?}"))?;
            Ok(token.parse()?)
        };
        Ok(Collector {
            grpc: addr("otlp_grpc")?,
            http: addr("otlp_http")?,
            query: addr("query")?,
            flight_sql: addr("flight_sql")?,
            child: Some(child),
            data_dir: PathBuf::new(),
            log_path: log_path.to_path_buf(),
            extra_args: Vec::new(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn flight_sql_url(&self) -> String {
        format!("grpc://{}", self.flight_sql)
    }

    pub fn query_url(&self) -> String {
        format!("http://{}", self.query)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (buffers flushed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stop_with("TERM")
    }

    /// Sends `signal` (`TERM`, `INT` as Ctrl-C does) and waits for a clean exit.
    pub fn stop_with(&mut self, signal: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()?;
            anyhow::ensure!(status.success(), "kill -TERM failed");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait()? {
                    anyhow::ensure!(
                        status.success(),
                        "vigil serve exited with {status}; log:\n{}",
                        self.log()
                    );
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("vigil serve did not stop within 60 s of SIG{signal}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Starts a new collector on the same data directory and flags (after `kill` or `stop`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let fresh = Collector::start_with(&self.data_dir, self.extra_args.clone(), &[])?;
        *self = fresh;
        Ok(())
    }

    /// The collector's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs SQL through `POST /api/v1/sql` and returns the rows as JSON objects.
    pub async fn sql(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.sql_raw(sql).await?;
        if status != 200 {
            bail!("query {sql:?} failed with {status}: {body}");
        }
        Ok(body
            .get("rows")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// Runs SQL and returns the HTTP status with the JSON body, whatever the status.
    pub async fn sql_raw(&self, sql: &str) -> anyhow::Result<(u16, Value)> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/sql", self.query_url()))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        Ok((status, body))
    }

    /// The collector's own `/metrics` page.
    pub async fn own_metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.query_url()))
            .await?
            .text()
            .await?)
    }

    /// Waits until the query port answers `/readyz`.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.query_url())).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("collector not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident set size of a process, from /proc/<pid>/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Anonymous resident memory of a process (`RssAnon` + `RssShmem` from /proc/<pid>/status):
/// what it allocated itself, without the pages of its binary mapped from disk, which the kernel
/// may drop at will and which are ~80 MiB of a 600 MB debug build before any load arrives.
pub fn anon_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kb("RssAnon:")? + kb("RssShmem:")?) * 1024)
}

/// A single value from a one-row result: `rows[0][column]`.
pub fn one<'a>(rows: &'a [Value], column: &str) -> &'a Value {
    rows.first()
        .and_then(|r| r.get(column))
        .unwrap_or(&Value::Null)
}

/// Runs `vigil` with arguments and returns (status, stdout, stderr).
pub fn run_vigil(args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    run_vigil_with_env(args, &[])
}

/// As [`run_vigil`], with these environment variables set.
pub fn run_vigil_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    let output = Command::new(vigil_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Starts a child whose stdout announces itself with one line starting with `prefix`; returns
/// the child and that line. Stderr goes to `log_path`.
fn spawn_announcing(
    mut command: Command,
    prefix: &'static str,
    log_path: &Path,
) -> anyhow::Result<(Child, String)> {
    let log = std::fs::File::create(log_path)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => Ok((child, line)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("{prefix} did not announce itself within 60 s; its log:\n{log}")
        }
    }
}

/// A `vigil gpu-exporter` process.
pub struct GpuExporter {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    pub log_path: PathBuf,
}

/// `vigil gpu-exporter`'s arguments for a simulated node of 2 GPUs sampled every second.
pub const SMALL_FLEET: [&str; 7] = [
    "--simulate",
    "--nodes",
    "1",
    "--gpus-per-node",
    "2",
    "--interval",
    "1s",
];

impl GpuExporter {
    /// Starts `vigil gpu-exporter` with `args` and its page on an ephemeral loopback port.
    pub fn start(args: &[&str], log_path: &Path) -> anyhow::Result<GpuExporter> {
        Self::start_with_env(args, &[], log_path)
    }

    /// A simulated node of 2 GPUs sampled every second, sending to `grpc`, with `fault` (a
    /// `--fault` spec) if given.
    pub fn small_fleet(grpc: &str, fault: Option<&str>, log_path: &Path) -> GpuExporter {
        let mut args = SMALL_FLEET.to_vec();
        args.extend(["--otlp-endpoint", grpc]);
        if let Some(fault) = fault {
            args.extend(["--fault", fault]);
        }
        GpuExporter::start(&args, log_path).expect("the simulated fleet starts")
    }

    /// As [`GpuExporter::start`], with extra environment variables.
    pub fn start_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        log_path: &Path,
    ) -> anyhow::Result<GpuExporter> {
        let mut command = Command::new(vigil_bin());
        command
            .arg("gpu-exporter")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied());
        let (child, line) = spawn_announcing(command, "vigil gpu-exporter:", log_path)?;
        let metrics_url = line
            .split_whitespace()
            .find_map(|t| t.strip_prefix("metrics="))
            .with_context(|| format!("no metrics= in {line:?}"))?
            .to_string();
        Ok(GpuExporter {
            child: Some(child),
            metrics_url,
            log_path: log_path.to_path_buf(),
        })
    }

    /// `host:port` of the exporter's page, as a Prometheus scrape config names a target.
    pub fn target(&self) -> String {
        self.metrics_url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    }

    /// SIGTERM, and wait for the last round to be exported.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            if !status.success() {
                bail!("could not signal the exporter");
            }
            let exit = child.wait()?;
            if !exit.success() {
                bail!(
                    "gpu-exporter exited with {exit}; log:\n{}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for GpuExporter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port, for servers (Prometheus) that cannot bind port 0 and report it.
pub fn free_port() -> anyhow::Result<u16> {
    install_crypto_provider();
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary from a Debian package the end-to-end tests need; fails with what to install.
pub fn required_tool(name: &str, package: &str) -> PathBuf {
    install_crypto_provider();
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: install the Debian package {package} (scripts/test.sh does, with apt-get)"
    );
}

/// A real Prometheus server on loopback scraping `targets` every second.
pub struct Prometheus {
    child: Option<Child>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` every second as job `vigil-gpu`.
    pub fn start(targets: &[String]) -> anyhow::Result<Prometheus> {
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        Self::start_with(
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vigil-gpu\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ),
            &[],
        )
    }

    /// Starts with `config` as its prometheus.yml and extra flags (such as
    /// `--web.enable-remote-write-receiver`).
    pub fn start_with(config_text: &str, extra_args: &[&str]) -> anyhow::Result<Prometheus> {
        let binary = required_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("could not start prometheus")?;
        let prometheus = Prometheus {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = reqwest::blocking::get(format!("{}/-/ready", prometheus.url))
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(prometheus._dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                bail!("prometheus did not become ready within 60 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs an instant PromQL query and returns `data.result`.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let response: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()?
            .json()?;
        if response["status"] != "success" {
            bail!("PromQL {promql:?} failed: {response}");
        }
        Ok(response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `promtool check metrics` on a page: its exit code (0 clean, 1 unparsable, 3 lint findings) and
/// its report.
pub fn promtool_check_metrics(page: &str) -> (Option<i32>, String) {
    let mut child = Command::new(required_tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(page.as_bytes())
        .expect("page written to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), report)
}
