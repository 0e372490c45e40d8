//! The models served from a GPU's host while its fault held: a GPU alert that names the LLM
//! services and models running on that host, with their latency against the hour before, tells
//! the on-call whether users feel the fault (spans carry `host.name`; GPU metrics carry the
//! host label).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::AnalyzerError;
use crate::alert::{Alert, AlertStatus};
use crate::source::{QuerySource, floats, quote, strings, ts};

/// How far back "before the fault" reaches.
pub const BEFORE: Duration = Duration::from_secs(3600);
/// Hosts looked up per round at most: a fleet-wide event must not turn into a query storm.
pub const MAX_HOSTS_PER_ROUND: usize = 8;
/// Models named per alert at most (the busiest)...
const MAX_MODELS: usize = 10;
/// ...and in its one-line annotation.
const MAX_ANNOTATED: usize = 5;

/// One service and model served from the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    pub service: String,
    pub model: String,
    /// LLM calls while the fault held, and their latency.
    pub calls: u64,
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
    /// The same in the hour before the fault.
    pub calls_before: u64,
    pub p95_before_s: Option<f64>,
}

/// The services and models with LLM spans from `host` between `from` and `to`, busiest first,
/// each with its latency then and in the hour before `from`.
pub async fn served_from(
    source: &dyn QuerySource,
    host: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<Vec<ServedModel>, AnalyzerError> {
    let sql = format!(
        "SELECT service_name AS service, request_model AS model, time >= {from} AS during, count(*) AS calls, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) / 1e9 AS p50, \
         approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e9 AS p95 \
         FROM spans WHERE request_model IS NOT NULL AND resource_attributes['host.name'] = {host} \
         AND time >= {before} AND time <= {to} GROUP BY 1, 2, 3",
        from = ts(from),
        to = ts(to),
        before = ts(from - BEFORE),
        host = quote(host),
    );
    let batches = source.sql(&sql).await?;
    let services = strings(&batches, "service")?;
    let models = strings(&batches, "model")?;
    let during = strings(&batches, "during")?;
    let calls = floats(&batches, "calls")?;
    let p50 = floats(&batches, "p50")?;
    let p95 = floats(&batches, "p95")?;
    let mut served: BTreeMap<(String, String), ServedModel> = BTreeMap::new();
    for i in 0..services.len() {
        let service = services[i].clone().unwrap_or_default();
        let model = models[i].clone().unwrap_or_default();
        let entry = served
            .entry((service.clone(), model.clone()))
            .or_insert_with(|| ServedModel {
                service,
                model,
                calls: 0,
                p50_s: None,
                p95_s: None,
                calls_before: 0,
                p95_before_s: None,
            });
        let n = calls[i].unwrap_or(0.0) as u64;
        if during[i].as_deref() == Some("true") {
            entry.calls = n;
            entry.p50_s = p50[i];
            entry.p95_s = p95[i];
        } else {
            entry.calls_before = n;
            entry.p95_before_s = p95[i];
        }
    }
    let mut served: Vec<ServedModel> = served.into_values().filter(|s| s.calls > 0).collect();
    served.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.model.cmp(&b.model)));
    served.truncate(MAX_MODELS);
    Ok(served)
}

/// The window the fault held, as far as this alert knows it: from its start (or, while it is
/// still firing, from `lookback` before it fired, when the detector first saw it) to its end.
pub fn fault_window(alert: &Alert, lookback: Duration) -> (SystemTime, SystemTime) {
    match alert.status {
        AlertStatus::Firing => (alert.starts_at - lookback, alert.at),
        AlertStatus::Resolved => (alert.starts_at, alert.ends_at.unwrap_or(alert.at)),
    }
}

/// Puts `served` into the alert's evidence (`served_models`) and its annotations (one line per
/// model, as a webhook shows it).
pub fn annotate(alert: &mut Alert, served: &[ServedModel]) {
    let ms = |s: Option<f64>| s.map(|s| (s * 1000.0).round());
    alert.evidence.insert(
        "served_models".into(),
        json!(
            served
                .iter()
                .map(|s| json!({
                    "service": s.service,
                    "model": s.model,
                    "calls": s.calls,
                    "p50_ms": ms(s.p50_s),
                    "p95_ms": ms(s.p95_s),
                    "calls_hour_before": s.calls_before,
                    "p95_ms_hour_before": ms(s.p95_before_s),
                }))
                .collect::<Vec<_>>()
        ),
    );
    let text = if served.is_empty() {
        "no LLM spans from this host while the fault held".to_string()
    } else {
        let mut lines: Vec<String> = served
            .iter()
            .take(MAX_ANNOTATED)
            .map(|s| {
                let before = match s.p95_before_s {
                    Some(p) => format!("{:.0} ms the hour before", p * 1000.0),
                    None => "no calls the hour before".to_string(),
                };
                format!(
                    "{}/{}: {} calls, p95 {} ({before})",
                    s.service,
                    s.model,
                    s.calls,
                    s.p95_s
                        .map(|p| format!("{:.0} ms", p * 1000.0))
                        .unwrap_or_else(|| "-".into()),
                )
            })
            .collect();
        if served.len() > MAX_ANNOTATED {
            lines.push(format!(
                "and {} more (evidence)",
                served.len() - MAX_ANNOTATED
            ));
        }
        lines.join("; ")
    };
    alert.annotations.insert("served_models".into(), text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    fn alert(status: AlertStatus) -> Alert {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        Alert {
            labels: Default::default(),
            annotations: Default::default(),
            status,
            severity: Severity::Warning,
            subject: "GPU 1 on node-a".into(),
            score: 1.0,
            threshold: 0.5,
            starts_at: t,
            ends_at: (status == AlertStatus::Resolved).then(|| t + Duration::from_secs(300)),
            at: t + Duration::from_secs(300),
            fingerprint: "f".into(),
            evidence: Default::default(),
        }
    }

    #[test]
    fn a_firing_alert_looks_back_to_when_the_detector_saw_it_a_resolved_one_at_its_span() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let firing = alert(AlertStatus::Firing);
        assert_eq!(
            fault_window(&firing, Duration::from_secs(60)),
            (t - Duration::from_secs(60), t + Duration::from_secs(300))
        );
        let resolved = alert(AlertStatus::Resolved);
        assert_eq!(
            fault_window(&resolved, Duration::from_secs(60)),
            (t, t + Duration::from_secs(300))
        );
    }

    #[test]
    fn annotations_name_each_model_with_its_latency_then_and_before() {
        let mut a = alert(AlertStatus::Firing);
        annotate(
            &mut a,
            &[
                ServedModel {
                    service: "chat-api".into(),
                    model: "llama".into(),
                    calls: 120,
                    p50_s: Some(0.8),
                    p95_s: Some(2.4),
                    calls_before: 900,
                    p95_before_s: Some(1.2),
                },
                ServedModel {
                    service: "batch".into(),
                    model: "mistral".into(),
                    calls: 3,
                    p50_s: Some(0.1),
                    p95_s: Some(0.2),
                    calls_before: 0,
                    p95_before_s: None,
                },
            ],
        );
        assert_eq!(
            a.annotations["served_models"],
            "chat-api/llama: 120 calls, p95 2400 ms (1200 ms the hour before); \
             batch/mistral: 3 calls, p95 200 ms (no calls the hour before)"
        );
        assert_eq!(a.evidence["served_models"][0]["p95_ms_hour_before"], 1200.0);
        assert_eq!(a.evidence["served_models"][1]["calls_hour_before"], 0);

        let many: Vec<ServedModel> = (0..7)
            .map(|i| ServedModel {
                service: "svc".into(),
                model: format!("m{i}"),
                calls: 10 - i,
                p50_s: None,
                p95_s: None,
                calls_before: 0,
                p95_before_s: None,
            })
            .collect();
        let mut busy = alert(AlertStatus::Firing);
        annotate(&mut busy, &many);
        assert!(busy.annotations["served_models"].ends_with("; and 2 more (evidence)"));
        assert_eq!(busy.evidence["served_models"].as_array().unwrap().len(), 7);

        let mut quiet = alert(AlertStatus::Firing);
        annotate(&mut quiet, &[]);
        assert_eq!(
            quiet.annotations["served_models"],
            "no LLM spans from this host while the fault held"
        );
    }
}
