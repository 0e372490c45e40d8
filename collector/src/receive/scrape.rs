//! Scraping `/metrics` pages: `[[scrape]]` jobs in the config, each target fetched every
//! `interval`, its Prometheus text exposition stored through the same ingest path as
//! remote-write (see [`super::remote_write`]), with the series Prometheus adds (`up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`) and staleness markers for series that
//! disappear or a target that goes down, so that PromQL sees a scraped page as Prometheus does.
//!
//! The page is parsed here rather than with the `prometheus-parse` crate: that crate skips lines
//! it cannot read without saying so and folds histogram buckets into floats (losing `le` as the
//! page wrote it), where Prometheus fails the scrape and keeps every label as written.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Ingest;
use super::remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest, prepare};
use crate::auth::Sender;
use crate::query::promql::api::parse_duration;

/// Prometheus' staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// HTTP basic credentials for a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// One `[[scrape]]` job: the same targets, labels and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    /// The `job` label of every series scraped.
    pub job_name: String,
    /// `host:port` of each target; the `instance` label.
    pub targets: Vec<String>,
    /// How often each target is scraped (Prometheus durations: `15s`, `1m`).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// How long a scrape may take before it counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default = "default_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// A CA certificate (PEM) to trust for an `https` job's targets, besides the system's roots
    /// (and `SSL_CERT_FILE`).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Labels added to every series of the job.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Keep the page's own `job`, `instance` and extra labels where they clash with the
    /// target's; otherwise the page's are kept as `exported_<name>`.
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
}

fn default_interval() -> String {
    "15s".into()
}
fn default_timeout() -> String {
    "10s".into()
}
fn default_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}

/// A scrape job the config describes wrongly.
#[derive(Debug, thiserror::Error)]
#[error("[[scrape]] job {job:?}: {message}")]
pub struct ScrapeConfigError {
    job: String,
    message: String,
}

/// A page line that is not Prometheus' text format.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// One sample of a page: its labels (name included, as `__name__`), value and own timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct PageSample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// A parsed page: its samples, and the `# HELP` of each metric family.
#[derive(Debug, Default)]
pub struct Page {
    pub samples: Vec<PageSample>,
    pub help: BTreeMap<String, String>,
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses Prometheus' text exposition format (0.0.4); OpenMetrics' `# EOF` is accepted.
pub fn parse_page(text: &str) -> Result<Page, ParseError> {
    let mut page = Page::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let error = |message: String| ParseError {
            line: n + 1,
            message,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            if words.next() == Some("HELP")
                && let (Some(name), Some(help)) = (words.next(), words.next())
            {
                page.help.insert(
                    name.to_string(),
                    help.replace("\\n", "\n").replace("\\\\", "\\"),
                );
            }
            continue;
        }
        let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
        let name = &line[..name_end];
        if !name.starts_with(is_name_start) {
            return Err(error(format!("{line:?} does not start with a metric name")));
        }
        let mut labels = vec![("__name__".to_string(), name.to_string())];
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut consumed = None;
            loop {
                while chars
                    .peek()
                    .is_some_and(|(_, c)| c.is_whitespace() || *c == ',')
                {
                    chars.next();
                }
                match chars.peek() {
                    Some((i, '}')) => {
                        consumed = Some(i + 1);
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                while let Some((_, c)) = chars.peek().copied() {
                    if is_name_char(c) {
                        key.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    chars.next();
                }
                if key.is_empty() || chars.next().map(|(_, c)| c) != Some('=') {
                    return Err(error(format!(
                        "bad label in {line:?}: expected name=\"value\""
                    )));
                }
                while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(error(format!(
                        "label {key} in {line:?}: its value is not quoted"
                    )));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some(other) => {
                                value.push('\\');
                                value.push(other);
                            }
                            None => break,
                        },
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err(error(format!(
                        "label {key} in {line:?}: unterminated value"
                    )));
                }
                if labels.iter().any(|(k, _)| *k == key) {
                    return Err(error(format!("label {key} appears twice in {line:?}")));
                }
                labels.push((key, value));
            }
            let Some(consumed) = consumed else {
                return Err(error(format!(
                    "{line:?}: the label set is not closed with }}"
                )));
            };
            rest = &after[consumed..];
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or_else(|| error(format!("{line:?} has no value")))?;
        let value = parse_value(value)
            .ok_or_else(|| error(format!("{value:?} is not a number in {line:?}")))?;
        let timestamp_ms = match fields.next() {
            Some(ts) => Some(
                ts.parse::<i64>()
                    .map_err(|_| error(format!("{ts:?} is not a timestamp in {line:?}")))?,
            ),
            None => None,
        };
        if fields.next().is_some() {
            return Err(error(format!("{line:?} has text after its timestamp")));
        }
        page.samples.push(PageSample {
            labels,
            value,
            timestamp_ms,
        });
    }
    Ok(page)
}

/// The labels a scraped sample is stored under: the page's, then the target's (`job`,
/// `instance`, the job's extra labels), with Prometheus' `honor_labels` rule for clashes.
fn target_labels(
    mut labels: Vec<(String, String)>,
    target: &[(String, String)],
    honor_labels: bool,
) -> Vec<(String, String)> {
    for (name, value) in target {
        match labels.iter().position(|(k, _)| k == name) {
            Some(_) if honor_labels => {}
            Some(i) => {
                let exported = std::mem::take(&mut labels[i].1);
                labels[i].0 = format!("exported_{name}");
                labels[i].1 = exported;
                labels.push((name.clone(), value.clone()));
            }
            None => labels.push((name.clone(), value.clone())),
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort();
    labels
}

fn series(labels: &[(String, String)], timestamp: i64, value: f64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        samples: vec![Sample { value, timestamp }],
    }
}

/// One target's scraping state: the series its last scrape gave, to mark stale the ones that
/// are gone.
struct Target {
    /// The job's client (its CA, when it names one).
    client: reqwest::Client,
    job: ScrapeJob,
    url: String,
    labels: Vec<(String, String)>,
    interval: Duration,
    timeout: Duration,
    previous: HashSet<Vec<(String, String)>>,
}

impl Target {
    /// Scrapes once and returns what to store.
    async fn scrape(&mut self) -> WriteRequest {
        let started = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let result = self.fetch().await;
        let duration = started.elapsed().as_secs_f64();
        let mut timeseries = Vec::new();
        let mut metadata = Vec::new();
        let mut current = HashSet::new();
        let (up, scraped) = match result {
            Ok(page) => {
                let count = page.samples.len();
                for sample in page.samples {
                    let labels = target_labels(sample.labels, &self.labels, self.job.honor_labels);
                    timeseries.push(series(
                        &labels,
                        sample.timestamp_ms.unwrap_or(now_ms),
                        sample.value,
                    ));
                    current.insert(labels);
                }
                metadata = page
                    .help
                    .into_iter()
                    .map(|(name, help)| MetricMetadata {
                        r#type: 0,
                        metric_family_name: name,
                        help,
                        unit: String::new(),
                    })
                    .collect();
                (1.0, count)
            }
            Err(message) => {
                tracing::warn!(job = %self.job.job_name, target = %self.url, %message, "scrape failed");
                (0.0, 0)
            }
        };
        // Series the last scrape had and this one has not are stale from now.
        for gone in self.previous.difference(&current) {
            timeseries.push(series(gone, now_ms, f64::from_bits(STALE_NAN)));
        }
        self.previous = current;
        for (name, value) in [
            ("up", up),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
        ] {
            let labels = target_labels(
                vec![("__name__".to_string(), name.to_string())],
                &self.labels,
                false,
            );
            timeseries.push(series(&labels, now_ms, value));
        }
        WriteRequest {
            timeseries,
            metadata,
        }
    }

    async fn fetch(&self) -> Result<Page, String> {
        let mut request = self
            .client
            .get(&self.url)
            .timeout(self.timeout)
            .header(
                reqwest::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.timeout.as_secs_f64()),
            );
        if let Some(token) = &self.job.bearer_token {
            request = request.bearer_auth(token);
        }
        if let Some(basic) = &self.job.basic_auth {
            request = request.basic_auth(&basic.username, Some(&basic.password));
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("server returned HTTP status {status}"));
        }
        let body = response.text().await.map_err(|e| e.to_string())?;
        parse_page(&body).map_err(|e| e.to_string())
    }
}

/// The HTTP client of one job's targets.
fn job_client(job: &ScrapeJob) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &job.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Checks the jobs and starts scraping every target until `shutdown` turns true.
pub fn start(
    jobs: &[ScrapeJob],
    ingest: Arc<Ingest>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ScrapeConfigError> {
    let mut targets = Vec::new();
    for job in jobs {
        let error = |message: String| ScrapeConfigError {
            job: job.job_name.clone(),
            message,
        };
        if job.job_name.is_empty() {
            return Err(error("job_name is empty".into()));
        }
        let interval =
            parse_duration(&job.interval).map_err(|e| error(format!("interval: {e}")))?;
        let timeout = parse_duration(&job.timeout).map_err(|e| error(format!("timeout: {e}")))?;
        if interval <= 0 || timeout <= 0 {
            return Err(error("interval and timeout must be positive".into()));
        }
        if job.scheme != "http" && job.scheme != "https" {
            return Err(error(format!(
                "scheme {:?}: give http or https",
                job.scheme
            )));
        }
        if job.ca_file.is_some() && job.scheme != "https" {
            return Err(error("ca_file is for scheme = \"https\"".into()));
        }
        let client = job_client(job).map_err(error)?;
        for target in &job.targets {
            if target.is_empty() || target.contains('/') {
                return Err(error(format!(
                    "target {target:?}: give host:port (the path is metrics_path)"
                )));
            }
            let mut labels = vec![
                ("job".to_string(), job.job_name.clone()),
                ("instance".to_string(), target.clone()),
            ];
            labels.extend(job.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            targets.push(Target {
                client: client.clone(),
                url: format!("{}://{}{}", job.scheme, target, job.metrics_path),
                job: job.clone(),
                labels,
                interval: Duration::from_millis(interval as u64),
                timeout: Duration::from_millis(timeout.min(interval) as u64),
                previous: HashSet::new(),
            });
        }
    }
    Ok(targets
        .into_iter()
        .map(|mut target| {
            let ingest = ingest.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(target.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = shutdown.changed() => break,
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    let write = target.scrape().await;
                    // Targets are the operator's own config: trusted as a GPU exporter is.
                    let converted = prepare(&write, Sender::GpuExporter);
                    if let Err(e) = ingest.gauge_series(&converted.resources).await {
                        tracing::warn!(job = %target.job.job_name, target = %target.url, error = %e, "scraped samples not stored");
                    }
                }
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_with_escapes_timestamps_and_special_values() {
        let page = parse_page(
            "# HELP up_total Whether \\\\ it is up.\n# TYPE up_total counter\n\
             up_total 1\n\
             DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"GPU-1\",modelName=\"NVIDIA \\\"H100\\\"\",} 45 1700000000000\n\
             lat_bucket{le=\"+Inf\"} +Inf\n\
             weird{ a = \"x,y}\" } NaN\n\
             # EOF\n",
        )
        .unwrap();
        assert_eq!(page.samples.len(), 4);
        assert_eq!(page.help["up_total"], "Whether \\ it is up.");
        let gpu = &page.samples[1];
        assert_eq!(gpu.timestamp_ms, Some(1_700_000_000_000));
        assert!(
            gpu.labels
                .contains(&("modelName".into(), "NVIDIA \"H100\"".into()))
        );
        assert_eq!(page.samples[2].value, f64::INFINITY);
        assert!(
            page.samples[3]
                .labels
                .contains(&("a".into(), "x,y}".into()))
        );
        assert!(page.samples[3].value.is_nan());
    }

    #[test]
    fn malformed_pages_name_the_line() {
        for (page, what) in [
            ("ok 1\n{a=\"b\"} 1\n", "line 2"),
            ("x{a=b} 1\n", "not quoted"),
            ("x{a=\"b\" 1\n", "bad label"),
            ("x{a=\"b\"\n", "not closed"),
            ("x 1 2 3\n", "after its timestamp"),
            ("x one\n", "not a number"),
            ("x{a=\"1\",a=\"2\"} 1\n", "twice"),
        ] {
            let error = parse_page(page).unwrap_err().to_string();
            assert!(error.contains(what), "{page:?}: {error}");
        }
    }

    #[test]
    fn target_labels_win_unless_the_page_is_honored() {
        let page = vec![
            ("__name__".to_string(), "m".to_string()),
            ("job".to_string(), "inner".to_string()),
        ];
        let target = vec![
            ("job".to_string(), "outer".to_string()),
            ("instance".to_string(), "h:1".to_string()),
        ];
        let kept = target_labels(page.clone(), &target, false);
        assert!(kept.contains(&("job".into(), "outer".into())));
        assert!(kept.contains(&("exported_job".into(), "inner".into())));
        let honored = target_labels(page, &target, true);
        assert!(honored.contains(&("job".into(), "inner".into())));
        assert!(honored.contains(&("instance".into(), "h:1".into())));
    }
}
