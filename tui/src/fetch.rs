//! The queries behind each view, run over Flight SQL, and their answers turned into [`state`]
//! rows. Every view is one refresh of a few SQL statements against the collector's one engine.
//!
//! [`state`]: crate::state

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::TuiError;
use crate::minutes;
use crate::state::{
    AlertRow, Counts, Data, DriftEvaluation, Golden, GpuDetail, GpuRow, ModelDetail, ModelRow,
    NcclRow, Open, StatusFilter, TREND_BUCKETS, Tab, TraceDetail, TraceRow, Trend,
};

/// A Flight SQL connection to the collector, with its token when one is configured. Clones
/// share the connection, so that one refresh can run its statements side by side.
#[derive(Clone)]
pub struct Client {
    inner: FlightSqlServiceClient<Channel>,
}

impl Client {
    /// Connects lazily: a collector that is down at start is a banner and a retry, not an exit.
    /// An `https://` URL speaks TLS, trusting the public roots and `ca_cert` (PEM) if given.
    /// Flight SQL's own schemes, as ADBC and Grafana's plugin take them, mean the same:
    /// `grpc+tls://` is `https://`, `grpc://` is `http://`.
    pub fn new(url: &str, token: Option<&str>, ca_cert: Option<&[u8]>) -> Result<Client, TuiError> {
        let bad = |message: String| TuiError::BadUrl {
            url: url.to_string(),
            message,
        };
        let url = if let Some(rest) = url.strip_prefix("grpc+tls://") {
            format!("https://{rest}")
        } else if let Some(rest) = url.strip_prefix("grpc://") {
            format!("http://{rest}")
        } else {
            url.to_string()
        };
        let tls = url.starts_with("https://");
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        if tls {
            let mut config = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = ca_cert {
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| bad(e.to_string()))?;
        } else if ca_cert.is_some() {
            return Err(bad(
                "a CA certificate was given for a plaintext (http://) collector; use its https:// address".into(),
            ));
        }
        let mut inner = FlightSqlServiceClient::new(endpoint.connect_lazy());
        if let Some(token) = token {
            inner.set_token(token.to_string());
        }
        Ok(Client { inner })
    }

    /// Runs one statement and reads every endpoint of its answer.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, TuiError> {
        let failed = |e: FlightError| TuiError::Query(flight_message(&e));
        let info = self
            .inner
            .execute(sql.to_string(), None)
            .await
            .map_err(failed)?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let stream = self.inner.do_get(ticket).await.map_err(failed)?;
            let mut part: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| TuiError::Query(e.to_string()))?;
            batches.append(&mut part);
        }
        Ok(batches)
    }
}

/// The useful part of a Flight error: the status's message (and why, for a refused token)
/// rather than tonic's debug dump.
fn flight_message(e: &FlightError) -> String {
    match e {
        FlightError::Tonic(status) => {
            let mut text = status.message().to_string();
            if status.code() == tonic::Code::Unauthenticated {
                text.push_str(" (pass the collector's query token with --token or VIGIL_TOKEN)");
            }
            if let Some(source) = std::error::Error::source(status.as_ref()) {
                text.push_str(&format!(": {source}"));
            }
            text
        }
        other => other.to_string(),
    }
}

/// What one refresh must fetch: the current tab's data, and its open detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub tab: Tab,
    pub range: Duration,
    /// The end of the range, in nanoseconds since the epoch.
    pub now_ns: i64,
    /// The model whose detail the Models tab shows.
    pub model: Option<(String, String)>,
    pub open: Option<Open>,
    /// The host of the open GPU (what its served-models lookup filters on).
    pub open_gpu_host: Option<String>,
    pub status_filter: StatusFilter,
}

impl Request {
    pub fn now(tab: Tab, range: Duration) -> Request {
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        Request {
            tab,
            range,
            now_ns,
            model: None,
            open: None,
            open_gpu_host: None,
            status_filter: StatusFilter::All,
        }
    }

    pub(crate) fn lo_ns(&self) -> i64 {
        self.now_ns
            .saturating_sub(self.range.as_nanos().min(i64::MAX as u128) as i64)
    }

    /// `time` within the range, as literals the catalog can prune files by.
    fn time_filter(&self) -> String {
        format!(
            "time >= {} AND time <= {}",
            literal_time(self.lo_ns()),
            literal_time(self.now_ns)
        )
    }

    /// `time` within the range for a per-minute rollup: from the minute the range starts in.
    pub(crate) fn minutes_filter(&self) -> String {
        let minute = 60_000_000_000i64;
        format!(
            "time >= {} AND time <= {}",
            literal_time(self.lo_ns().div_euclid(minute) * minute),
            literal_time(self.now_ns)
        )
    }

    pub(crate) fn bucket_secs(&self) -> u64 {
        (self.range.as_secs() / TREND_BUCKETS as u64).max(1)
    }

    fn bucket_expr(&self) -> String {
        format!(
            "CAST(date_bin(interval '{} seconds', time, timestamp '1970-01-01T00:00:00Z') AS BIGINT)",
            self.bucket_secs()
        )
    }

    /// The slot of each bucket start in a trend of [`TREND_BUCKETS`].
    pub(crate) fn slot(&self, bucket_ns: i64) -> Option<usize> {
        let width = self.bucket_secs() as i64 * 1_000_000_000;
        let last = self.now_ns - self.now_ns.rem_euclid(width);
        let back = (last - bucket_ns) / width;
        (0..TREND_BUCKETS as i64)
            .contains(&back)
            .then(|| TREND_BUCKETS - 1 - back as usize)
    }
}

/// A timestamp literal for SQL.
pub(crate) fn literal_time(ns: i64) -> String {
    let time = DateTime::<Utc>::from_timestamp_nanos(ns);
    format!("'{}'", time.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// A string literal for SQL.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What a refresh brought back; `None` parts were not asked for this time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fetched {
    pub golden: Option<Golden>,
    pub trend: Option<Trend>,
    pub models: Option<Vec<ModelRow>>,
    pub gpus: Option<Vec<GpuRow>>,
    pub alerts: Option<Vec<AlertRow>>,
    pub traces: Option<Vec<TraceRow>>,
    pub model_detail: Option<Option<ModelDetail>>,
    pub gpu_detail: Option<Option<GpuDetail>>,
    pub trace_detail: Option<Option<TraceDetail>>,
    pub took: Duration,
}

impl Fetched {
    pub fn apply(self, data: &mut Data) {
        if let Some(v) = self.golden {
            data.golden = v;
        }
        if let Some(v) = self.trend {
            data.trend = v;
        }
        if let Some(v) = self.models {
            data.models = v;
        }
        if let Some(v) = self.alerts {
            data.alerts = v;
        }
        if let Some(mut v) = self.gpus {
            mark_degraded(&mut v, &data.alerts);
            data.gpus = v;
        }
        if let Some(v) = self.traces {
            data.traces = v;
        }
        if let Some(v) = self.model_detail {
            data.model_detail = v;
        }
        if let Some(v) = self.gpu_detail {
            data.gpu_detail = v;
        }
        if let Some(v) = self.trace_detail {
            data.trace_detail = v;
        }
    }
}

/// Names on each GPU the alerts firing on it (by UUID).
fn mark_degraded(gpus: &mut [GpuRow], alerts: &[AlertRow]) {
    for gpu in gpus {
        gpu.alerts = alerts
            .iter()
            .filter(|a| a.firing() && a.labels.get("UUID") == Some(&gpu.uuid))
            .map(|a| a.alertname.clone())
            .collect();
        gpu.alerts.sort();
        gpu.alerts.dedup();
    }
}

/// Runs the queries `request` needs. Alerts are fetched on every refresh: the tab bar counts
/// the firing ones and the GPU list marks degraded GPUs by them.
pub async fn fetch(client: &mut Client, request: &Request) -> Result<Fetched, TuiError> {
    let started = Instant::now();
    // A view's statements are independent: run them side by side, as many as the collector
    // lets one client run at once.
    let mut alerts_client = client.clone();
    let alerts_answer = async {
        let batches = alerts_client.query(&alerts_sql(request)).await?;
        alerts(&batches)
    };
    let mut out = Fetched::default();
    match request.tab {
        Tab::Overview => {
            let (mut c1, mut c2) = (client.clone(), client.clone());
            let (found_alerts, minutes, fleet) = futures::try_join!(
                alerts_answer,
                async {
                    minutes::parse(
                        &c1.query(&minutes::minutes_sql(request, None, false))
                            .await?,
                    )
                },
                async { fleet(&c2.query(&gpus_sql(request)).await?) },
            )?;
            out.alerts = Some(found_alerts);
            out.golden = Some(minutes::golden(request, &minutes));
            out.trend = Some(minutes::trend(request, &minutes));
            out.models = Some(minutes::models(request, &minutes));
            out.gpus = Some(fleet.gpus);
        }
        Tab::Models => {
            let mut c1 = client.clone();
            let (found_alerts, minutes, detail) = futures::try_join!(
                alerts_answer,
                async {
                    minutes::parse(
                        &c1.query(&minutes::minutes_sql(request, None, false))
                            .await?,
                    )
                },
                async {
                    match &request.model {
                        Some((service, model)) => {
                            Ok(Some(model_detail(client, request, service, model).await?))
                        }
                        None => Ok(None),
                    }
                },
            )?;
            out.alerts = Some(found_alerts);
            out.models = Some(minutes::models(request, &minutes));
            out.model_detail = Some(detail);
        }
        Tab::Gpus => {
            let mut c1 = client.clone();
            let (found_alerts, fleet, mut detail) = futures::try_join!(
                alerts_answer,
                async { fleet(&c1.query(&gpus_sql(request)).await?) },
                async {
                    match (&request.open, &request.open_gpu_host) {
                        (Some(Open::Gpu { uuid }), host) => Ok(Some(
                            gpu_detail(client, request, uuid, host.as_deref()).await?,
                        )),
                        _ => Ok(None),
                    }
                },
            )?;
            // The open GPU's NCCL bandwidth against its peers', from the fleet's answer.
            if let Some(detail) = &mut detail {
                detail.nccl = nccl_against_peers(&fleet.ranks, &detail.uuid);
            }
            out.alerts = Some(found_alerts);
            out.gpus = Some(fleet.gpus);
            out.gpu_detail = Some(detail);
        }
        Tab::Traces => {
            let mut c1 = client.clone();
            let (found_alerts, traces, detail) = futures::try_join!(
                alerts_answer,
                async {
                    // The newest minutes that hold a screenful of calls, from the rollup, so
                    // that the list reads those minutes' spans and not the whole range's.
                    let per_minute = c1.query(&recent_minutes_sql(request)).await?;
                    let wanted = match request.status_filter {
                        StatusFilter::All => "calls",
                        StatusFilter::Errors => "errors",
                        StatusFilter::Ok => "ok",
                    };
                    let minute = i64s(&per_minute, "minute")?;
                    let calls = i64s(&per_minute, wanted)?;
                    let minutes: Vec<(i64, u64)> = minute
                        .iter()
                        .zip(&calls)
                        .filter_map(|(m, c)| Some((((*m)?), c.unwrap_or(0).max(0) as u64)))
                        .collect();
                    let from = minutes::recent_window(request, &minutes, TRACE_ROWS as u64);
                    traces(&c1.query(&traces_sql(request, from)).await?)
                },
                async {
                    match &request.open {
                        Some(Open::Trace { trace_id, time_ns }) => {
                            Ok(Some(find_trace(client, trace_id, *time_ns).await?))
                        }
                        _ => Ok(None),
                    }
                },
            )?;
            out.alerts = Some(found_alerts);
            out.traces = Some(traces);
            out.trace_detail = Some(detail);
        }
        Tab::Alerts => out.alerts = Some(alerts_answer.await?),
    }
    out.took = started.elapsed();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SQL

const LLM: &str = "request_model IS NOT NULL";
const FAILED: &str = "(status_code = 'error' OR error_type IS NOT NULL)";

const GPU_METRICS: [&str; 10] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "vigil_gpu_clock_throttle_active",
    "vigil_gpu_up",
];

/// Throttle reasons that say nothing is wrong.
const BENIGN_THROTTLE: [&str; 3] = [
    "gpu_idle",
    "applications_clocks_setting",
    "display_clock_setting",
];

/// The NCCL series whose ranks the GPU detail sets against their peers'.
const NCCL_BUSBW: &str = "vigil_nccl_coll_busbw_gbs";

/// Every GPU series of the range, from `gpu_minutes` (the collector's per-minute rollup of
/// GPU series): its last value, mean and increase; and every NCCL rank's mean bandwidth (for
/// the GPU detail's peers' median: one read of the rollup serves both).
pub fn gpus_sql(r: &Request) -> String {
    let names: Vec<String> = GPU_METRICS
        .iter()
        .chain([&NCCL_BUSBW])
        .map(|m| quote(m))
        .collect();
    format!(
        "SELECT coalesce(hostname, '') AS host, coalesce(gpu, '') AS gpu, uuid, \
         coalesce(model_name, '') AS model_name, metric_name, coalesce(reason, '') AS reason, \
         coalesce(comm, '') AS comm, coalesce(rank, '') AS rank, \
         last_value(last ORDER BY last_time) AS last, sum(sum) / sum(count) AS mean, \
         max(max) - min(min) AS increase \
         FROM gpu_minutes WHERE {time} AND metric_name IN ({names}) GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
        time = r.minutes_filter(),
        names = names.join(", "),
    )
}

pub fn alerts_sql(r: &Request) -> String {
    format!(
        "SELECT CAST(time AS BIGINT) AS time, state, severity, detector, subject, score, threshold, \
         split_part(message, ' | evidence: ', 1) AS summary, split_part(message, ' | evidence: ', 2) AS evidence, \
         fingerprint, labels FROM (SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY time DESC) AS latest \
         FROM alerts) WHERE latest = 1 AND (state = 'firing' OR time >= {lo}) \
         ORDER BY CASE WHEN state = 'firing' THEN 0 ELSE 1 END, time DESC LIMIT 1000",
        lo = literal_time(r.lo_ns()),
    )
}

/// The most calls the trace list shows.
const TRACE_ROWS: usize = 500;

/// Calls per minute of the range, for where the recent-calls list should start.
pub fn recent_minutes_sql(r: &Request) -> String {
    format!(
        "SELECT CAST(time AS BIGINT) AS minute, sum(calls) AS calls, sum(errors) AS errors, \
         sum(calls) - sum(errors) AS ok FROM llm_minutes WHERE time >= {lo} AND time <= {hi} GROUP BY 1",
        lo = literal_time(r.lo_ns()),
        hi = literal_time(r.now_ns),
    )
}

/// The newest calls of the range, from `from_ns` on.
pub fn traces_sql(r: &Request, from_ns: i64) -> String {
    let status = match r.status_filter {
        StatusFilter::All => String::new(),
        StatusFilter::Errors => format!(" AND {FAILED}"),
        StatusFilter::Ok => format!(" AND NOT {FAILED}"),
    };
    format!(
        "SELECT CAST(time AS BIGINT) AS time, trace_id, span_id, coalesce(service_name, '') AS service, \
         request_model AS model, name, duration_ns, input_tokens, output_tokens, status_code, error_type, cost_usd \
         FROM spans WHERE {LLM} AND time >= {lo} AND time <= {hi}{status} ORDER BY time DESC LIMIT {TRACE_ROWS}",
        lo = literal_time(from_ns.max(r.lo_ns())),
        hi = literal_time(r.now_ns),
    )
}

/// Where a trace's spans are looked for first, either side of the call that opened it: most
/// traces are over within it, and a narrow range lets the lookup skip the row groups (and their
/// bloom filters) of the rest of the hour.
const TRACE_NEAR_NS: i64 = 5 * 60 * 1_000_000_000;
/// Where they are looked for when the narrow range did not hold the whole trace.
const TRACE_FAR_NS: i64 = 60 * 60 * 1_000_000_000;
/// The most spans of a trace shown.
const TRACE_SPANS: usize = 2000;

/// A trace's spans, looked for within `reach_ns` either side of the call that opened it, so
/// that the lookup reads those minutes' files and not the whole store.
pub fn trace_sql(trace_id: &str, time_ns: i64, reach_ns: i64) -> String {
    format!(
        "SELECT CAST(time AS BIGINT) AS time, span_id, parent_span_id, name, coalesce(service_name, '') AS service, \
         duration_ns, status_code, status_message, request_model AS model, input_tokens, output_tokens, cost_usd, \
         attributes, input_messages, output_messages \
         FROM spans WHERE trace_id = {id} AND time >= {lo} AND time <= {hi} ORDER BY time LIMIT {TRACE_SPANS}",
        id = quote(trace_id),
        lo = literal_time(time_ns.saturating_sub(reach_ns)),
        hi = literal_time(time_ns.saturating_add(reach_ns)),
    )
}

/// A trace's spans: those near the call first, and over the wider range when they show that
/// the trace reaches beyond the narrow one.
async fn find_trace(
    client: &mut Client,
    trace_id: &str,
    time_ns: i64,
) -> Result<TraceDetail, TuiError> {
    let near = trace_detail(
        trace_id,
        &client
            .query(&trace_sql(trace_id, time_ns, TRACE_NEAR_NS))
            .await?,
    )?;
    let (lo, hi) = (
        time_ns.saturating_sub(TRACE_NEAR_NS),
        time_ns.saturating_add(TRACE_NEAR_NS),
    );
    if near.spans.len() < TRACE_SPANS && closed_within(&near.spans, lo, hi) {
        return Ok(near);
    }
    trace_detail(
        trace_id,
        &client
            .query(&trace_sql(trace_id, time_ns, TRACE_FAR_NS))
            .await?,
    )
}

/// Whether spans found in `[lo, hi]` are plausibly the whole trace: it has a root, every
/// span's parent is among them (a span that started before `lo` is an ancestor of some found
/// span), and none ends after `hi` (a child starts within its parent, so one that started
/// after `hi` has a found ancestor still running then). A child that outlives its parent and
/// starts after `hi` would be missed; the wider lookup has the same limit an hour out.
fn closed_within(spans: &[crate::state::SpanRow], lo: i64, hi: i64) -> bool {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let rooted = spans.iter().any(|s| s.parent_span_id.is_none());
    rooted
        && spans.iter().all(|s| {
            s.start_ns >= lo
                && s.start_ns.saturating_add(s.duration_ns.max(0)) <= hi
                && s.parent_span_id
                    .as_deref()
                    .is_none_or(|parent| ids.contains(parent))
        })
}

async fn model_detail(
    client: &mut Client,
    r: &Request,
    service: &str,
    model: &str,
) -> Result<ModelDetail, TuiError> {
    let scope = minutes::model_scope(service, model);
    let mut verdicts = client.clone();
    let (rows, drift) = futures::try_join!(
        async {
            minutes::parse(
                &client
                    .query(&minutes::minutes_sql(r, Some(&scope), true))
                    .await?,
            )
        },
        async {
            match verdicts.query(&drift_evaluation_sql(service, model)).await {
                Ok(batches) => drift_evaluation(&batches, service, model),
                // Only a collector that runs the analyzer has the table; without it there is
                // no verdict to show, and the view falls back to the latest drift alert.
                Err(TuiError::Query(message)) if message.contains("evaluations' not found") => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        },
    )?;
    let trend = minutes::trend(r, &rows);
    let sums = minutes::model_sums(&rows);
    Ok(ModelDetail {
        service: service.to_string(),
        model: model.to_string(),
        latency: log2_counts(minutes::octaves(&sums.duration_ms), "ms"),
        ttft: log2_counts(minutes::octaves(&sums.ttft_ms), "ms"),
        output_tokens: log2_counts(minutes::octaves(&sums.output_tokens), "tok"),
        calls_trend: trend.calls,
        p95_trend_ms: trend.p95_ms,
        finish_reasons: sums.finish_reasons,
        errors: sums.errors,
        drift,
    })
}

/// The drift detector's latest verdicts on one model and on the scopes that contain it (the
/// model across services, the service across models, all traffic), which it judges as well.
pub fn drift_evaluation_sql(service: &str, model: &str) -> String {
    format!(
        "SELECT CAST(time AS BIGINT) AS time, active, score, threshold, evidence, subject, \
         labels['service'] AS service, labels['model'] AS model FROM evaluations \
         WHERE alertname = 'ModelDrift' AND labels['service'] IN ({}, '*') \
         AND labels['model'] IN ({}, '*')",
        quote(service),
        quote(model)
    )
}

/// The verdict on the narrowest scope judged: the model in its service, else the model, else
/// the service, else all traffic; a scope not judged (a model with few calls, a reference
/// still filling) only when none is.
fn drift_evaluation(
    batches: &[RecordBatch],
    service: &str,
    model: &str,
) -> Result<Option<DriftEvaluation>, TuiError> {
    let time = i64s(batches, "time")?;
    let services = strings(batches, "service")?;
    let models = strings(batches, "model")?;
    let evidence_texts = strings(batches, "evidence")?;
    let narrowest = (0..time.len()).max_by_key(|&i| {
        (
            !evidence_texts[i]
                .as_deref()
                .unwrap_or("")
                .contains("\"not_judged\""),
            models[i].as_deref() == Some(model),
            services[i].as_deref() == Some(service),
        )
    });
    let Some(i) = narrowest else {
        return Ok(None);
    };
    let Some(time_ns) = time[i] else {
        return Ok(None);
    };
    let active = strings(batches, "active")?[i].as_deref() == Some("true");
    let score = f64s(batches, "score")?[i].unwrap_or(0.0);
    let threshold = f64s(batches, "threshold")?[i].unwrap_or(0.0);
    let evidence: serde_json::Value = strings(batches, "evidence")?[i]
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    let mut evaluation = read_drift_evidence(time_ns, active, score, threshold, &evidence);
    let exact = models[i].as_deref() == Some(model) && services[i].as_deref() == Some(service);
    if !exact {
        evaluation.subject = strings(batches, "subject")?[i].clone().unwrap_or_default();
    }
    Ok(Some(evaluation))
}

/// The tests, moves and reference of a drift verdict's evidence, as short lines.
pub fn read_drift_evidence(
    time_ns: i64,
    active: bool,
    score: f64,
    threshold: f64,
    evidence: &serde_json::Value,
) -> DriftEvaluation {
    let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_f64());
    let moved = evidence["moved"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut tests = Vec::new();
    if let Some(map) = evidence.as_object() {
        for (feature, test) in map {
            let Some(p) = number(test, "p_adjusted") else {
                continue;
            };
            let change = if let (Some(a), Some(b)) = (
                number(test, "reference_median"),
                number(test, "current_median"),
            ) {
                let shift = number(test, "median_shift").unwrap_or(0.0) * 100.0;
                format!("median {} → {} ({shift:+.0}%)", human(a), human(b))
            } else if let (Some(a), Some(b)) =
                (number(test, "reference_rate"), number(test, "current_rate"))
            {
                format!("{:.1}% → {:.1}%", a * 100.0, b * 100.0)
            } else if let Some(js) = number(test, "jensen_shannon") {
                format!("JS {js:.3}")
            } else if let Some(d) = number(test, "ks_distance") {
                format!("KS {d:.2}")
            } else {
                String::new()
            };
            let p = if p >= 0.01 {
                format!("{p:.2}")
            } else {
                format!("{p:.1e}")
            };
            tests.push(format!("{feature} p {p} {change}").trim_end().to_string());
        }
    }
    let reference = &evidence["reference"];
    // Times of day read faster than RFC 3339; the date is today's or yesterday's.
    let clock = |t: Option<&str>| {
        t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc).format("%H:%M:%S").to_string())
    };
    let reference = match (
        clock(reference["from"].as_str()),
        clock(reference["to"].as_str()),
    ) {
        (Some(from), Some(to)) => format!(
            "the reference {from}–{to} UTC ({:.0}% covered)",
            reference["coverage"].as_f64().unwrap_or(0.0) * 100.0
        ),
        _ => String::new(),
    };
    DriftEvaluation {
        time_ns,
        subject: String::new(),
        active,
        score,
        threshold,
        moved,
        tests,
        reference,
        not_judged: evidence["not_judged"].as_str().map(String::from),
    }
}

async fn gpu_detail(
    client: &mut Client,
    r: &Request,
    uuid: &str,
    host: Option<&str>,
) -> Result<GpuDetail, TuiError> {
    let names = "'DCGM_FI_DEV_GPU_UTIL', 'DCGM_FI_DEV_SM_CLOCK', 'DCGM_FI_DEV_POWER_USAGE', \
                 'DCGM_FI_DEV_GPU_TEMP', 'DCGM_FI_DEV_FB_USED'";
    // Slots of a minute or more from the rollup; shorter ones (the 5- and 15-minute ranges)
    // need the points themselves.
    let sql = if r.bucket_secs() >= 60 {
        format!(
            "SELECT {bucket} AS bucket, metric_name, sum(sum) / sum(count) AS value FROM gpu_minutes \
             WHERE {time} AND uuid = {uuid} AND metric_name IN ({names}) GROUP BY 1, 2",
            bucket = r.bucket_expr(),
            time = r.minutes_filter(),
            uuid = quote(uuid),
        )
    } else {
        format!(
            "SELECT {bucket} AS bucket, metric_name, avg(value) AS value FROM metrics \
             WHERE {time} AND attributes['UUID'] = {uuid} AND metric_name IN ({names}) GROUP BY 1, 2",
            bucket = r.bucket_expr(),
            time = r.time_filter(),
            uuid = quote(uuid),
        )
    };
    // The two statements side by side (the NCCL ranks come with the fleet's answer).
    let mut served_client = client.clone();
    let (series, served) = futures::try_join!(client.query(&sql), async {
        match host.filter(|h| !h.is_empty()) {
            Some(host) => {
                let scope = minutes::host_scope(host);
                let rows = minutes::parse(
                    &served_client
                        .query(&minutes::minutes_sql(r, Some(&scope), false))
                        .await?,
                )?;
                Ok(minutes::served(r, &rows))
            }
            None => Ok(Vec::new()),
        }
    },)?;
    let mut detail = GpuDetail {
        uuid: uuid.to_string(),
        util: vec![0; TREND_BUCKETS],
        sm_clock: vec![0; TREND_BUCKETS],
        power: vec![0; TREND_BUCKETS],
        temp: vec![0; TREND_BUCKETS],
        mem_used: vec![0; TREND_BUCKETS],
        ..GpuDetail::default()
    };
    let buckets = i64s(&series, "bucket")?;
    let names = strings(&series, "metric_name")?;
    let values = f64s(&series, "value")?;
    for i in 0..buckets.len() {
        let Some(slot) = buckets[i].and_then(|b| r.slot(b)) else {
            continue;
        };
        let target = match names[i].as_deref() {
            Some("DCGM_FI_DEV_GPU_UTIL") => &mut detail.util,
            Some("DCGM_FI_DEV_SM_CLOCK") => &mut detail.sm_clock,
            Some("DCGM_FI_DEV_POWER_USAGE") => &mut detail.power,
            Some("DCGM_FI_DEV_GPU_TEMP") => &mut detail.temp,
            Some("DCGM_FI_DEV_FB_USED") => &mut detail.mem_used,
            _ => continue,
        };
        target[slot] = values[i].unwrap_or(0.0).max(0.0).round() as u64;
    }
    detail.served = served;
    Ok(detail)
}

// ---------------------------------------------------------------------------------------------
// Answers into rows

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::ArrayRef, TuiError> {
    batch.column_by_name(name).ok_or_else(|| {
        TuiError::Query(format!(
            "the answer has no column {name:?} (the collector's schema is not the one this dashboard knows)"
        ))
    })
}

fn cast_err(name: &str, e: arrow::error::ArrowError) -> TuiError {
    TuiError::Query(format!("column {name:?}: {e}"))
}

/// A column as text, whatever its type (dictionaries included).
pub fn strings(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<String>>, TuiError> {
    let mut out = Vec::new();
    for batch in batches {
        let array = arrow::compute::cast(column(batch, name)?, &DataType::Utf8)
            .map_err(|e| cast_err(name, e))?;
        let array = array.as_string::<i32>();
        out.extend((0..array.len()).map(|i| array.is_valid(i).then(|| array.value(i).to_string())));
    }
    Ok(out)
}

pub fn f64s(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<f64>>, TuiError> {
    let mut out = Vec::new();
    for batch in batches {
        let array = arrow::compute::cast(column(batch, name)?, &DataType::Float64)
            .map_err(|e| cast_err(name, e))?;
        let array = array.as_primitive::<arrow::datatypes::Float64Type>();
        out.extend(array.iter().map(|v| v.filter(|v| v.is_finite())));
    }
    Ok(out)
}

pub fn i64s(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<i64>>, TuiError> {
    let mut out = Vec::new();
    for batch in batches {
        let array = arrow::compute::cast(column(batch, name)?, &DataType::Int64)
            .map_err(|e| cast_err(name, e))?;
        out.extend(array.as_primitive::<arrow::datatypes::Int64Type>().iter());
    }
    Ok(out)
}

/// A `Map<Utf8, Utf8>` column as sorted pairs per row.
pub fn maps(batches: &[RecordBatch], name: &str) -> Result<Vec<Vec<(String, String)>>, TuiError> {
    let mut out = Vec::new();
    for batch in batches {
        let array = column(batch, name)?;
        let map = array.as_any().downcast_ref::<MapArray>().ok_or_else(|| {
            TuiError::Query(format!(
                "column {name:?} is {}, not a map",
                array.data_type()
            ))
        })?;
        let keys =
            arrow::compute::cast(map.keys(), &DataType::Utf8).map_err(|e| cast_err(name, e))?;
        let values =
            arrow::compute::cast(map.values(), &DataType::Utf8).map_err(|e| cast_err(name, e))?;
        let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
        let offsets = map.value_offsets();
        for row in 0..map.len() {
            let mut pairs = Vec::new();
            if map.is_valid(row) {
                for j in offsets[row] as usize..offsets[row + 1] as usize {
                    if keys.is_valid(j) {
                        let value = if values.is_valid(j) {
                            values.value(j)
                        } else {
                            ""
                        };
                        pairs.push((keys.value(j).to_string(), value.to_string()));
                    }
                }
            }
            pairs.sort();
            out.push(pairs);
        }
    }
    Ok(out)
}

/// One NCCL rank's mean bus bandwidth over the range.
#[derive(Clone, Debug, PartialEq)]
struct RankBandwidth {
    uuid: String,
    comm: String,
    rank: String,
    busbw_gbs: f64,
}

/// The fleet's answer: its GPUs, and the NCCL ranks' bandwidth.
struct Fleet {
    gpus: Vec<GpuRow>,
    ranks: Vec<RankBandwidth>,
}

/// `uuid`'s ranks (up to 16, by communicator) with the median of every rank of the same
/// communicator, itself included. Minutes written before the rollup kept ranks apart have no
/// `comm`, and are left out.
fn nccl_against_peers(ranks: &[RankBandwidth], uuid: &str) -> Vec<NcclRow> {
    let mut mine: Vec<&RankBandwidth> = ranks
        .iter()
        .filter(|r| r.uuid == uuid && !r.comm.is_empty())
        .collect();
    mine.sort_by(|a, b| a.comm.cmp(&b.comm).then(a.rank.cmp(&b.rank)));
    mine.truncate(16);
    mine.into_iter()
        .map(|own| {
            let mut peers: Vec<f64> = ranks
                .iter()
                .filter(|r| r.comm == own.comm)
                .map(|r| r.busbw_gbs)
                .collect();
            peers.sort_by(f64::total_cmp);
            let mid = peers.len() / 2;
            let peer_median_gbs = if peers.len().is_multiple_of(2) {
                (peers[mid - 1] + peers[mid]) / 2.0
            } else {
                peers[mid]
            };
            NcclRow {
                comm: own.comm.clone(),
                rank: own.rank.clone(),
                busbw_gbs: own.busbw_gbs,
                peer_median_gbs,
            }
        })
        .collect()
}

fn fleet(batches: &[RecordBatch]) -> Result<Fleet, TuiError> {
    let host = strings(batches, "host")?;
    let gpu = strings(batches, "gpu")?;
    let uuid = strings(batches, "uuid")?;
    let model_name = strings(batches, "model_name")?;
    let metric = strings(batches, "metric_name")?;
    let reason = strings(batches, "reason")?;
    let last = f64s(batches, "last")?;
    let mean = f64s(batches, "mean")?;
    let increase = f64s(batches, "increase")?;
    let comm = strings(batches, "comm")?;
    let rank = strings(batches, "rank")?;
    let mut by_uuid: BTreeMap<String, GpuRow> = BTreeMap::new();
    let mut ranks = Vec::new();
    for i in 0..uuid.len() {
        let Some(id) = uuid[i].clone() else { continue };
        if metric[i].as_deref() == Some(NCCL_BUSBW) {
            ranks.push(RankBandwidth {
                uuid: id,
                comm: comm[i].clone().unwrap_or_default(),
                rank: rank[i].clone().unwrap_or_default(),
                busbw_gbs: mean[i].unwrap_or(0.0),
            });
            continue;
        }
        let row = by_uuid.entry(id.clone()).or_insert_with(|| GpuRow {
            host: host[i].clone().unwrap_or_default(),
            gpu: gpu[i].clone().unwrap_or_default(),
            uuid: id,
            model_name: model_name[i].clone().unwrap_or_default(),
            up: true,
            ..GpuRow::default()
        });
        match metric[i].as_deref() {
            Some("DCGM_FI_DEV_GPU_UTIL") => row.util_pct = last[i],
            Some("DCGM_FI_DEV_FB_USED") => row.mem_used_mib = last[i],
            Some("DCGM_FI_DEV_FB_FREE") => row.mem_free_mib = last[i],
            Some("DCGM_FI_DEV_GPU_TEMP") => row.temp_c = last[i],
            Some("DCGM_FI_DEV_POWER_USAGE") => row.power_w = last[i],
            Some("DCGM_FI_DEV_SM_CLOCK") => {
                row.sm_clock_mhz = last[i];
                row.sm_clock_baseline_mhz = mean[i];
            }
            Some("DCGM_FI_DEV_XID_ERRORS") => row.last_xid = last[i].unwrap_or(0.0).max(0.0) as u64,
            Some("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") => {
                row.ecc_dbe = increase[i].unwrap_or(0.0).max(0.0) as u64
            }
            Some("vigil_gpu_up") => row.up = last[i] != Some(0.0),
            Some("vigil_gpu_clock_throttle_active") => {
                let name = reason[i].clone().unwrap_or_default();
                if last[i].unwrap_or(0.0) > 0.0 && !BENIGN_THROTTLE.contains(&name.as_str()) {
                    row.throttle_reasons.push(name);
                    row.throttle_reasons.sort();
                }
            }
            _ => {}
        }
    }
    Ok(Fleet {
        gpus: by_uuid.into_values().collect(),
        ranks,
    })
}

fn alerts(batches: &[RecordBatch]) -> Result<Vec<AlertRow>, TuiError> {
    let time = i64s(batches, "time")?;
    let state = strings(batches, "state")?;
    let severity = strings(batches, "severity")?;
    let detector = strings(batches, "detector")?;
    let subject = strings(batches, "subject")?;
    let score = f64s(batches, "score")?;
    let threshold = f64s(batches, "threshold")?;
    let summary = strings(batches, "summary")?;
    let evidence = strings(batches, "evidence")?;
    let fingerprint = strings(batches, "fingerprint")?;
    let labels = maps(batches, "labels")?;
    Ok((0..time.len())
        .map(|i| {
            let labels: BTreeMap<String, String> = labels[i].iter().cloned().collect();
            AlertRow {
                time_ns: time[i].unwrap_or(0),
                state: state[i].clone().unwrap_or_default(),
                severity: severity[i].clone().unwrap_or_default(),
                alertname: labels.get("alertname").cloned().unwrap_or_default(),
                detector: detector[i].clone().unwrap_or_default(),
                subject: subject[i].clone().unwrap_or_default(),
                score: score[i],
                threshold: threshold[i],
                summary: summary[i].clone().unwrap_or_default(),
                evidence: evidence[i].clone().unwrap_or_default(),
                fingerprint: fingerprint[i].clone().unwrap_or_default(),
                labels,
            }
        })
        .collect())
}

fn traces(batches: &[RecordBatch]) -> Result<Vec<TraceRow>, TuiError> {
    let time = i64s(batches, "time")?;
    let trace_id = strings(batches, "trace_id")?;
    let span_id = strings(batches, "span_id")?;
    let service = strings(batches, "service")?;
    let model = strings(batches, "model")?;
    let name = strings(batches, "name")?;
    let duration = i64s(batches, "duration_ns")?;
    let input = i64s(batches, "input_tokens")?;
    let output = i64s(batches, "output_tokens")?;
    let status = strings(batches, "status_code")?;
    let error_type = strings(batches, "error_type")?;
    let cost = f64s(batches, "cost_usd")?;
    Ok((0..time.len())
        .map(|i| TraceRow {
            time_ns: time[i].unwrap_or(0),
            trace_id: trace_id[i].clone().unwrap_or_default(),
            span_id: span_id[i].clone().unwrap_or_default(),
            service: service[i].clone().unwrap_or_default(),
            model: model[i].clone().unwrap_or_default(),
            name: name[i].clone().unwrap_or_default(),
            duration_s: duration[i].unwrap_or(0) as f64 / 1e9,
            input_tokens: input[i],
            output_tokens: output[i],
            status: status[i].clone().unwrap_or_default(),
            error_type: error_type[i].clone(),
            cost_usd: cost[i],
        })
        .collect())
}

fn trace_detail(trace_id: &str, batches: &[RecordBatch]) -> Result<TraceDetail, TuiError> {
    let time = i64s(batches, "time")?;
    let span_id = strings(batches, "span_id")?;
    let parent = strings(batches, "parent_span_id")?;
    let name = strings(batches, "name")?;
    let service = strings(batches, "service")?;
    let duration = i64s(batches, "duration_ns")?;
    let status = strings(batches, "status_code")?;
    let status_message = strings(batches, "status_message")?;
    let model = strings(batches, "model")?;
    let input = i64s(batches, "input_tokens")?;
    let output = i64s(batches, "output_tokens")?;
    let cost = f64s(batches, "cost_usd")?;
    let attributes = maps(batches, "attributes")?;
    let input_messages = strings(batches, "input_messages")?;
    let output_messages = strings(batches, "output_messages")?;
    let spans = (0..time.len())
        .map(|i| crate::state::SpanRow {
            span_id: span_id[i].clone().unwrap_or_default(),
            parent_span_id: parent[i].clone().filter(|p| !p.is_empty()),
            name: name[i].clone().unwrap_or_default(),
            service: service[i].clone().unwrap_or_default(),
            start_ns: time[i].unwrap_or(0),
            duration_ns: duration[i].unwrap_or(0),
            status: status[i].clone().unwrap_or_default(),
            status_message: status_message[i].clone().filter(|m| !m.is_empty()),
            model: model[i].clone(),
            input_tokens: input[i],
            output_tokens: output[i],
            cost_usd: cost[i],
            attributes: attributes[i].clone(),
            input_messages: input_messages[i].clone(),
            output_messages: output_messages[i].clone(),
            depth: 0,
        })
        .collect();
    Ok(TraceDetail::from_spans(trace_id.to_string(), spans))
}

/// Counts per power of two, every bucket from the lowest to the highest seen.
fn log2_counts(seen: BTreeMap<i64, u64>, unit: &str) -> Counts {
    let seen: BTreeMap<i64, u64> = seen.into_iter().map(|(b, c)| (b.clamp(0, 62), c)).fold(
        BTreeMap::new(),
        |mut acc, (b, c)| {
            *acc.entry(b).or_default() += c;
            acc
        },
    );
    let (Some(lo), Some(hi)) = (
        seen.keys().next().copied(),
        seen.keys().next_back().copied(),
    ) else {
        return Vec::new();
    };
    (lo..=hi)
        .map(|b| (bucket_label(b, unit), seen.get(&b).copied().unwrap_or(0)))
        .collect()
}

/// The label of the bucket `[2^b, 2^(b+1))`, short enough for a bar chart.
fn bucket_label(b: i64, unit: &str) -> String {
    let lo = 1u64 << b;
    if unit == "ms" {
        if lo >= 1000 {
            return format!("{}s", human(lo as f64 / 1000.0));
        }
        return format!("{lo}ms");
    }
    human(lo as f64)
}

/// 1, 10, 1.5k, 12k, 1.2M: numbers in a few characters.
pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || a == a.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPU's ranks against the median of every rank of their communicator, as the peers'
    /// statement this replaced gave (DataFusion's `median` averages the middle two).
    #[test]
    fn a_rank_is_set_against_the_median_of_its_communicator() {
        let rank = |uuid: &str, comm: &str, rank: &str, busbw_gbs: f64| RankBandwidth {
            uuid: uuid.into(),
            comm: comm.into(),
            rank: rank.into(),
            busbw_gbs,
        };
        let ranks = [
            rank("gpu-a", "c1", "0", 10.0),
            rank("gpu-b", "c1", "1", 40.0),
            rank("gpu-c", "c1", "2", 30.0),
            rank("gpu-d", "c1", "3", 20.0),
            rank("gpu-a", "c0", "5", 7.0),
            rank("gpu-b", "c0", "6", 9.0),
            rank("gpu-e", "c0", "7", 8.0),
            // Minutes from before the rollup kept ranks apart: no communicator.
            rank("gpu-a", "", "", 1.0),
        ];
        let rows = nccl_against_peers(&ranks, "gpu-a");
        let seen: Vec<(&str, &str, f64, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r.comm.as_str(),
                    r.rank.as_str(),
                    r.busbw_gbs,
                    r.peer_median_gbs,
                )
            })
            .collect();
        assert_eq!(seen, [("c0", "5", 7.0, 8.0), ("c1", "0", 10.0, 25.0)]);
        assert!(nccl_against_peers(&ranks, "gpu-z").is_empty());
    }

    /// The narrow lookup is taken only when what it found is a whole tree inside its range.
    #[test]
    fn a_trace_is_closed_within_a_range_only_when_rooted_complete_and_ended() {
        use crate::state::SpanRow;
        let span = |id: &str, parent: Option<&str>, start_ns: i64, duration_ns: i64| SpanRow {
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            start_ns,
            duration_ns,
            ..SpanRow::default()
        };
        let root = span("root", None, 100, 50);
        let call = span("call", Some("root"), 110, 20);
        assert!(closed_within(&[root.clone(), call.clone()], 0, 200));
        // The root began before the range: its child's parent is missing.
        assert!(!closed_within(std::slice::from_ref(&call), 105, 200));
        // The root runs past the range: a child may have started after it.
        assert!(!closed_within(&[root.clone(), call.clone()], 0, 140));
        // A span whose parent is elsewhere, next to a root.
        let stray = span("stray", Some("gone"), 120, 1);
        assert!(!closed_within(&[root, call, stray], 0, 200));
        assert!(!closed_within(&[], 0, 200));
    }

    /// The model's own scope is not judged yet (few calls) while all traffic is: the TUI shows
    /// the judged verdict, not "not judged yet".
    #[test]
    fn a_judged_scope_is_preferred_to_a_narrower_one_not_judged() {
        use std::sync::Arc;

        use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
        let column = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            ("time", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("active", Arc::new(BooleanArray::from(vec![false, true]))),
            ("score", Arc::new(Float64Array::from(vec![0.0, 9.0]))),
            ("threshold", Arc::new(Float64Array::from(vec![3.0, 3.0]))),
            (
                "evidence",
                column(vec![
                    r#"{"not_judged": "too few calls"}"#,
                    r#"{"moved": ["output_tokens"]}"#,
                ]),
            ),
            (
                "subject",
                column(vec!["model gpt-4o in service chat", "all LLM traffic"]),
            ),
            ("service", column(vec!["chat", "*"])),
            ("model", column(vec!["gpt-4o", "*"])),
        ])
        .unwrap();
        let chosen = drift_evaluation(std::slice::from_ref(&batch), "chat", "gpt-4o")
            .unwrap()
            .unwrap();
        assert!(chosen.active && chosen.not_judged.is_none(), "{chosen:?}");
        assert_eq!(chosen.subject, "all LLM traffic");
        // Only the one not judged: shown as such.
        let only = drift_evaluation(&[batch.slice(0, 1)], "chat", "gpt-4o")
            .unwrap()
            .unwrap();
        assert_eq!(only.not_judged.as_deref(), Some("too few calls"));
    }

    #[test]
    fn buckets_fall_into_the_trend_slots_of_the_range() {
        let mut r = Request::now(Tab::Overview, Duration::from_secs(300));
        r.now_ns = 1_000_000 * 1_000_000_000 + 2_500_000_000;
        assert_eq!(r.bucket_secs(), 5);
        let width = 5_000_000_000;
        let last = 1_000_000 * 1_000_000_000;
        assert_eq!(r.slot(last), Some(TREND_BUCKETS - 1));
        assert_eq!(r.slot(last - width), Some(TREND_BUCKETS - 2));
        assert_eq!(r.slot(last - 59 * width), Some(0));
        assert_eq!(r.slot(last - 60 * width), None);
        assert_eq!(r.slot(last + width), None);
    }

    #[test]
    fn literals_are_quoted_and_times_are_rfc3339() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(
            literal_time(1_500_000_000),
            "'1970-01-01T00:00:01.500000000Z'"
        );
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_labelled() {
        assert_eq!(bucket_label(0, "ms"), "1ms");
        assert_eq!(bucket_label(10, "ms"), "1.02s");
        assert_eq!(bucket_label(4, "tok"), "16");
        let counts = log2_counts(BTreeMap::from([(1, 3), (3, 1), (-2, 1)]), "ms");
        assert_eq!(
            counts,
            vec![
                ("1ms".to_string(), 1),
                ("2ms".to_string(), 3),
                ("4ms".to_string(), 0),
                ("8ms".to_string(), 1)
            ]
        );
        assert_eq!(human(1234.0), "1.2k");
        assert_eq!(human(0.5), "0.50");
    }

    #[test]
    fn flight_errors_keep_the_status_message() {
        let e = FlightError::Tonic(Box::new(tonic::Status::unauthenticated("missing token")));
        assert_eq!(
            flight_message(&e),
            "missing token (pass the collector's query token with --token or VIGIL_TOKEN)"
        );
    }
}
