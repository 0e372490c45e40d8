//! Alert delivery: webhooks in Alertmanager's webhook format (version 4), grouped and throttled as
//! Alertmanager groups them (`group_by`, `group_wait`, `group_interval`, `repeat_interval`),
//! signed (Standard Webhooks HMAC-SHA256 headers and a Grafana-style hex signature), sent from a
//! durable outbox with retries, backoff and jitter, and dead-lettered when a receiver refuses
//! them. Alerts can also be pushed to an Alertmanager's `/api/v2/alerts`.

pub mod outbox;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::AnalyzerError;
use crate::alert::{Alert, AlertStatus, format_time};
use crate::detectors::humantime_serde;
use outbox::{Envelope, Outbox, unix_ms};

/// `[alerting]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// Where the outbox lives [default: `<data_dir>/outbox`].
    pub outbox_dir: Option<PathBuf>,
    /// Sent as `externalURL`, and in `generatorURL` of each alert.
    pub external_url: String,
    pub webhooks: Vec<WebhookConfig>,
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            outbox_dir: None,
            external_url: "http://127.0.0.1:9470".to_string(),
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
        }
    }
}

/// `[[alerting.webhooks]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver's name (`receiver` in the payload).
    pub name: String,
    pub url: String,
    /// HMAC secrets: `whsec_<base64>` (Standard Webhooks) or any other string (used as bytes).
    /// Every secret signs, so that during a rotation receivers holding the old or the new one
    /// both verify.
    pub secrets: Vec<String>,
    pub group_by: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before a notification is dead-lettered.
    pub max_attempts: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: "webhook".to_string(),
            url: String::new(),
            secrets: Vec::new(),
            group_by: vec!["alertname".to_string()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            timeout: Duration::from_secs(10),
            max_attempts: 10,
        }
    }
}

/// `[[alerting.alertmanagers]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// How often firing alerts are re-sent (Alertmanager resolves alerts it stops hearing about).
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            url: String::new(),
            resend_interval: Duration::from_secs(30),
        }
    }
}

/// Delivery counters.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub alertmanager_errors: AtomicU64,
}

#[derive(Debug)]
struct Group {
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<String, Alert>,
    created: SystemTime,
    last_sent: Option<SystemTime>,
    changed: bool,
    sequence: u64,
}

/// Groups alerts per receiver and queues notifications in the outbox.
pub struct Notifier {
    config: AlertingConfig,
    outbox: Outbox,
    groups: HashMap<(usize, String), Group>,
    client: reqwest::Client,
    pub stats: Arc<DeliveryStats>,
    /// What the Alertmanagers are to be told, shared with the task that pushes to them.
    pushed: Arc<parking_lot::Mutex<PushState>>,
}

/// The alerts firing now and where each Alertmanager stands.
#[derive(Debug, Default)]
struct PushState {
    firing: BTreeMap<String, Alert>,
    alertmanagers: Vec<AlertmanagerState>,
}

/// Where pushing to one Alertmanager stands: each is backed off on its own, so that a failing
/// one is neither hit every tick nor makes the healthy ones be hit more often.
#[derive(Debug, Default)]
struct AlertmanagerState {
    last_ok: Option<SystemTime>,
    failures: u32,
    next_try: Option<SystemTime>,
    /// Resolved alerts this Alertmanager has not been told of yet.
    resolved: Vec<Alert>,
}

impl Notifier {
    pub fn new(config: AlertingConfig, outbox_dir: PathBuf) -> Result<Notifier, AnalyzerError> {
        crate::install_crypto_provider();
        for webhook in &config.webhooks {
            reqwest::Url::parse(&webhook.url).map_err(|e| {
                AnalyzerError::Config(format!(
                    "alerting.webhooks {:?}: url {:?}: {e}",
                    webhook.name, webhook.url
                ))
            })?;
            for secret in &webhook.secrets {
                secret_key(secret).map_err(|e| {
                    AnalyzerError::Config(format!("alerting.webhooks {:?}: {e}", webhook.name))
                })?;
            }
        }
        for manager in &config.alertmanagers {
            reqwest::Url::parse(&manager.url).map_err(|e| {
                AnalyzerError::Config(format!("alerting.alertmanagers url {:?}: {e}", manager.url))
            })?;
        }
        let outbox = Outbox::open(&outbox_dir)?;
        let alertmanagers = config.alertmanagers.len();
        let mut notifier = Notifier {
            config,
            outbox,
            groups: HashMap::new(),
            // Built, not `Client::new()`, which panics where this returns an error.
            client: reqwest::Client::builder().build().map_err(|e| {
                AnalyzerError::Config(format!("alerting: cannot build the HTTP client: {e}"))
            })?,
            stats: Arc::default(),
            pushed: Arc::new(parking_lot::Mutex::new(PushState {
                firing: BTreeMap::new(),
                alertmanagers: (0..alertmanagers)
                    .map(|_| AlertmanagerState::default())
                    .collect(),
            })),
        };
        // Alerts that were waiting in a group when the process stopped: group them again.
        let now = SystemTime::now();
        for (receiver, alert) in notifier.outbox.held() {
            match notifier
                .config
                .webhooks
                .iter()
                .position(|w| Outbox::receiver_key(&w.name) == receiver)
            {
                Some(index) => notifier.group(index, &alert, now),
                None => {
                    let _ = notifier.outbox.release(&receiver, &alert);
                }
            }
        }
        Ok(notifier)
    }

    /// Puts an alert in its group of one webhook.
    fn group(&mut self, index: usize, alert: &Alert, now: SystemTime) {
        let webhook = &self.config.webhooks[index];
        let group_labels: BTreeMap<String, String> = webhook
            .group_by
            .iter()
            .filter_map(|name| alert.labels.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        let key = group_key(&group_labels);
        let group = self.groups.entry((index, key)).or_insert_with(|| Group {
            labels: group_labels,
            alerts: BTreeMap::new(),
            created: now,
            last_sent: None,
            changed: false,
            sequence: 0,
        });
        group
            .alerts
            .insert(alert.fingerprint.clone(), alert.clone());
        group.changed = true;
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Take back alerts that were firing before a restart. They are re-sent to the Alertmanagers,
    /// which would otherwise let them expire while they still fire; the webhooks were notified
    /// before the restart (the outbox saw to that) and are not notified again.
    pub fn resume_firing(&mut self, alerts: &[Alert]) {
        let mut pushed = self.pushed.lock();
        for alert in alerts {
            if alert.status == AlertStatus::Firing {
                pushed
                    .firing
                    .insert(alert.fingerprint.clone(), alert.clone());
            }
        }
    }

    /// Take alerts that fired or resolved.
    pub fn submit(&mut self, alerts: &[Alert], now: SystemTime) {
        for alert in alerts {
            {
                let mut pushed = self.pushed.lock();
                match alert.status {
                    AlertStatus::Firing => {
                        pushed
                            .firing
                            .insert(alert.fingerprint.clone(), alert.clone());
                    }
                    AlertStatus::Resolved => {
                        pushed.firing.remove(&alert.fingerprint);
                        for manager in &mut pushed.alertmanagers {
                            manager.resolved.push(alert.clone());
                        }
                    }
                }
            }
            for index in 0..self.config.webhooks.len() {
                // On disk first: a crash within group_wait must not lose the notification.
                if let Err(e) = self.outbox.hold(&self.config.webhooks[index].name, alert) {
                    tracing::error!(error = %e, alert = alert.name(), "could not keep the alert in the outbox; it is notified only if the process lives through group_wait");
                }
                self.group(index, alert, now);
            }
        }
    }

    /// Queue the notifications that are due (by group_wait, group_interval, repeat_interval).
    pub fn flush_due(&mut self, now: SystemTime) -> Result<usize, AnalyzerError> {
        let mut queued = 0;
        let mut emptied = Vec::new();
        for ((index, key), group) in self.groups.iter_mut() {
            let webhook = &self.config.webhooks[*index];
            let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
            let due = match group.last_sent {
                None => since(group.created) >= webhook.group_wait,
                Some(last) => {
                    (group.changed && since(last) >= webhook.group_interval)
                        || (since(last) >= webhook.repeat_interval
                            && group
                                .alerts
                                .values()
                                .any(|a| a.status == AlertStatus::Firing))
                }
            };
            if !due || group.alerts.is_empty() {
                continue;
            }
            group.sequence += 1;
            let body = payload(webhook, &self.config.external_url, key, group);
            let envelope = Envelope {
                // A receiver's name may hold any character; the id is a file name and a header.
                id: format!(
                    "{}-{}-{}",
                    Outbox::receiver_key(&webhook.name),
                    &crate::alert::fingerprint(&group.labels),
                    unix_ms(now) * 1000 + group.sequence % 1000
                ),
                receiver: webhook.name.clone(),
                body,
                attempts: 0,
                next_attempt_ms: unix_ms(now),
                created_ms: unix_ms(now),
                last_error: None,
            };
            self.outbox.put(&envelope)?;
            for alert in group.alerts.values() {
                self.outbox.release(&webhook.name, alert)?;
            }
            queued += 1;
            group.last_sent = Some(now);
            group.changed = false;
            // Resolved alerts are told once.
            group
                .alerts
                .retain(|_, alert| alert.status == AlertStatus::Firing);
            if group.alerts.is_empty() {
                emptied.push((*index, key.clone()));
            }
        }
        for key in emptied {
            self.groups.remove(&key);
        }
        Ok(queued)
    }

    /// Try every due envelope once. Returns how many were delivered.
    pub async fn deliver_due(&self, now: SystemTime) -> Result<usize, AnalyzerError> {
        self.deliverer().deliver_due(now).await
    }

    /// Push firing (and newly resolved) alerts to every configured Alertmanager when due.
    pub async fn push_alertmanagers(&mut self, now: SystemTime) {
        self.pusher().push_due(now).await;
    }

    /// What pushes to the Alertmanagers; it runs apart from the evaluation loop.
    pub fn pusher(&self) -> Pusher {
        Pusher {
            config: self.config.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            pushed: self.pushed.clone(),
        }
    }

    /// What delivers the outbox's notifications; it runs apart from the evaluation loop.
    pub fn deliverer(&self) -> Deliverer {
        Deliverer {
            config: self.config.clone(),
            outbox: self.outbox.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            gates: Arc::default(),
        }
    }
}

/// Sends queued webhook notifications, each receiver on its own, so that one that never answers
/// delays neither detection nor the other receivers.
#[derive(Clone)]
pub struct Deliverer {
    config: AlertingConfig,
    outbox: Outbox,
    client: reqwest::Client,
    stats: Arc<DeliveryStats>,
    /// When each receiver that failed may be tried again: a failing receiver waits out its
    /// backoff as a whole, not once per queued notification.
    gates: Arc<parking_lot::Mutex<HashMap<String, SystemTime>>>,
}

impl Deliverer {
    /// Try every due envelope once, the receivers side by side. Returns how many were delivered.
    pub async fn deliver_due(&self, now: SystemTime) -> Result<usize, AnalyzerError> {
        let mut by_receiver: BTreeMap<String, Vec<Envelope>> = BTreeMap::new();
        let gates = self.gates.lock().clone();
        for envelope in self.outbox.pending()? {
            let gated = gates.get(&envelope.receiver).is_some_and(|at| now < *at);
            if envelope.next_attempt_ms <= unix_ms(now) && !gated {
                by_receiver
                    .entry(envelope.receiver.clone())
                    .or_default()
                    .push(envelope);
            }
        }
        let results = futures::future::join_all(
            by_receiver
                .into_values()
                .map(|envelopes| self.deliver_to_one(envelopes, now)),
        )
        .await;
        let mut delivered = 0;
        for result in results {
            delivered += result?;
        }
        Ok(delivered)
    }

    /// One receiver's due envelopes, oldest first; the first that fails to arrive stops the
    /// rest until its retry (they would fail the same way).
    async fn deliver_to_one(
        &self,
        envelopes: Vec<Envelope>,
        now: SystemTime,
    ) -> Result<usize, AnalyzerError> {
        let mut delivered = 0;
        for mut envelope in envelopes {
            let Some(webhook) = self
                .config
                .webhooks
                .iter()
                .find(|w| w.name == envelope.receiver)
            else {
                envelope.last_error = Some(format!(
                    "no webhook named {:?} in the config any more",
                    envelope.receiver
                ));
                self.outbox.dead_letter(&envelope)?;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            envelope.attempts += 1;
            match send(&self.client, webhook, &envelope).await {
                Ok(()) => {
                    self.outbox.remove(&envelope.id)?;
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    self.gates.lock().remove(&webhook.name);
                    delivered += 1;
                }
                Err(SendError::Permanent(message)) => {
                    tracing::warn!(receiver = %webhook.name, id = %envelope.id, %message, "webhook refused the notification; dead-lettered");
                    envelope.last_error = Some(message);
                    self.outbox.dead_letter(&envelope)?;
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Err(SendError::Retry(message, asked)) => {
                    envelope.last_error = Some(message.clone());
                    if envelope.attempts >= webhook.max_attempts {
                        tracing::warn!(receiver = %webhook.name, id = %envelope.id, %message, attempts = envelope.attempts, "webhook still failing; dead-lettered");
                        self.outbox.dead_letter(&envelope)?;
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let wait = asked.unwrap_or_default().max(backoff(envelope.attempts));
                        envelope.next_attempt_ms = unix_ms(now) + wait.as_millis() as u64;
                        self.gates.lock().insert(webhook.name.clone(), now + wait);
                        tracing::debug!(receiver = %webhook.name, id = %envelope.id, %message, "webhook delivery will be retried");
                        self.outbox.put(&envelope)?;
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        Ok(delivered)
    }
}

/// Pushes to the Alertmanagers, each on its own and backed off on its own, so that a failing or
/// slow one delays neither detection nor the others.
#[derive(Clone)]
pub struct Pusher {
    config: AlertingConfig,
    client: reqwest::Client,
    stats: Arc<DeliveryStats>,
    pushed: Arc<parking_lot::Mutex<PushState>>,
}

impl Pusher {
    /// Push to every Alertmanager that is due, side by side.
    pub async fn push_due(&self, now: SystemTime) {
        let pushes = self
            .config
            .alertmanagers
            .iter()
            .enumerate()
            .filter_map(|(index, manager)| {
                let body = self.due_body(index, manager, now)?;
                Some(self.push_one(index, manager, body, now))
            });
        futures::future::join_all(pushes).await;
    }

    /// The alerts to send to one Alertmanager now, if it is due.
    fn due_body(
        &self,
        index: usize,
        manager: &AlertmanagerConfig,
        now: SystemTime,
    ) -> Option<(Vec<serde_json::Value>, usize)> {
        let pushed = self.pushed.lock();
        let state = pushed.alertmanagers.get(index)?;
        if state.next_try.is_some_and(|at| now < at) {
            return None;
        }
        let due = state.last_ok.is_none_or(|last| {
            now.duration_since(last).unwrap_or_default() >= manager.resend_interval
        }) || !state.resolved.is_empty();
        if !due || (pushed.firing.is_empty() && state.resolved.is_empty()) {
            return None;
        }
        let ends_at_firing = now + manager.resend_interval * 4;
        let alerts = pushed
            .firing
            .values()
            .chain(state.resolved.iter())
            .map(|alert| {
                json!({
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": format_time(alert.starts_at),
                    "endsAt": format_time(alert.ends_at.unwrap_or(ends_at_firing)),
                    "generatorURL": generator_url(&self.config.external_url, alert),
                })
            })
            .collect();
        Some((alerts, state.resolved.len()))
    }

    async fn push_one(
        &self,
        index: usize,
        manager: &AlertmanagerConfig,
        (alerts, resolved_sent): (Vec<serde_json::Value>, usize),
        now: SystemTime,
    ) {
        let url = format!("{}/api/v2/alerts", manager.url.trim_end_matches('/'));
        let outcome = match self
            .client
            .post(&url)
            .json(&alerts)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err((
                format!("HTTP {}", response.status()),
                retry_after(response.headers(), now),
            )),
            Err(e) => Err((e.to_string(), None)),
        };
        let mut pushed = self.pushed.lock();
        let Some(state) = pushed.alertmanagers.get_mut(index) else {
            return;
        };
        match outcome {
            Ok(()) => {
                state.last_ok = Some(now);
                state.failures = 0;
                state.next_try = None;
                // Only those sent: more may have resolved while the push was under way.
                state
                    .resolved
                    .drain(..resolved_sent.min(state.resolved.len()));
            }
            Err((message, asked)) => {
                state.failures += 1;
                let wait = asked.unwrap_or_default().max(backoff(state.failures));
                state.next_try = Some(now + wait);
                self.stats
                    .alertmanager_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%url, error = %message, retry_in = ?wait, "cannot push alerts to Alertmanager; will retry");
            }
        }
    }
}

/// A `Retry-After` header (seconds, or an HTTP date), capped at an hour.
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at: SystemTime = chrono::DateTime::parse_from_rfc2822(value).ok()?.into();
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(wait.min(Duration::from_secs(3600)))
}

fn group_key(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(", "))
}

fn generator_url(external_url: &str, alert: &Alert) -> String {
    format!(
        "{}/api/v1/sql#alerts/{}",
        external_url.trim_end_matches('/'),
        alert.fingerprint
    )
}

/// Alertmanager's webhook payload (version 4) with vigil's evidence in `x_` fields.
fn payload(webhook: &WebhookConfig, external_url: &str, group_key: &str, group: &Group) -> String {
    let alerts: Vec<&Alert> = group.alerts.values().collect();
    let common = |pick: &dyn Fn(&Alert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let Some(first) = alerts.first() else {
            return BTreeMap::new();
        };
        pick(first)
            .iter()
            .filter(|(k, v)| alerts.iter().all(|a| pick(a).get(*k) == Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        "firing"
    } else {
        "resolved"
    };
    let body = json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": webhook.name,
        "groupLabels": group.labels,
        "commonLabels": common(&|a| &a.labels),
        "commonAnnotations": common(&|a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts.iter().map(|alert| json!({
            "status": alert.status.as_str(),
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": format_time(alert.starts_at),
            "endsAt": alert.ends_at.map(format_time).unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
            "generatorURL": generator_url(external_url, alert),
            "fingerprint": alert.fingerprint,
            "x_detector": alert.labels.get("detector"),
            "x_severity": alert.severity.as_str(),
            "x_subject": alert.subject,
            "x_score": alert.score,
            "x_threshold": alert.threshold,
            "x_gpu_uuid": alert.labels.get("UUID"),
            "x_model": alert.labels.get("model"),
            "x_service": alert.labels.get("service"),
            "x_trace_ids": alert.evidence.get("example_trace_ids"),
            "x_evidence": alert.evidence,
        })).collect::<Vec<_>>(),
    });
    body.to_string()
}

/// The HMAC key of a configured secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("secret starting whsec_ must be base64 after the prefix: {e}")),
        None if secret.is_empty() => Err("empty secret".to_string()),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Signature headers for `body`: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature` with one `v1,<base64>` per secret) and `X-Grafana-Alerting-Signature`
/// (hex HMAC-SHA256 of the body with the first secret).
pub fn signature_headers(
    secrets: &[String],
    id: &str,
    timestamp: u64,
    body: &str,
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("webhook-id".to_string(), id.to_string()),
        ("webhook-timestamp".to_string(), timestamp.to_string()),
    ];
    let keys: Vec<Vec<u8>> = secrets.iter().filter_map(|s| secret_key(s).ok()).collect();
    if keys.is_empty() {
        return headers;
    }
    let timestamp = timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            let mac = hmac_sha256(
                key,
                &[
                    id.as_bytes(),
                    b".",
                    timestamp.as_bytes(),
                    b".",
                    body.as_bytes(),
                ],
            );
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        })
        .collect();
    headers.push(("webhook-signature".to_string(), signatures.join(" ")));
    headers.push((
        "X-Grafana-Alerting-Signature".to_string(),
        hex::encode(hmac_sha256(&keys[0], &[body.as_bytes()])),
    ));
    headers
}

/// Verify a Standard Webhooks signature header against any of `secrets` (what a receiver does).
pub fn verify(secrets: &[String], id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    secrets
        .iter()
        .filter_map(|s| secret_key(s).ok())
        .any(|key| {
            let mac = hmac_sha256(
                &key,
                &[
                    id.as_bytes(),
                    b".",
                    timestamp.as_bytes(),
                    b".",
                    body.as_bytes(),
                ],
            );
            let expected = format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            );
            header.split(' ').any(|candidate| candidate == expected)
        })
}

enum SendError {
    Permanent(String),
    /// Worth another try; the receiver may say when (`Retry-After`).
    Retry(String, Option<Duration>),
}

async fn send(
    client: &reqwest::Client,
    webhook: &WebhookConfig,
    envelope: &Envelope,
) -> Result<(), SendError> {
    let timestamp = unix_ms(SystemTime::now()) / 1000;
    let mut request = client
        .post(&webhook.url)
        .timeout(webhook.timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", &envelope.id)
        .body(envelope.body.clone());
    for (name, value) in
        signature_headers(&webhook.secrets, &envelope.id, timestamp, &envelope.body)
    {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                Err(SendError::Permanent(format!("HTTP {status}")))
            } else {
                Err(SendError::Retry(
                    format!("HTTP {status}"),
                    retry_after(response.headers(), SystemTime::now()),
                ))
            }
        }
        Err(e) => Err(SendError::Retry(e.to_string(), None)),
    }
}

/// Exponential backoff with full jitter: up to 1 s × 2^(attempt-1), at most 5 minutes.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(9))
        .min(Duration::from_secs(300));
    let fraction: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    ceiling.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_either_secret_during_rotation() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let new = "a-plain-new-secret".to_string();
        let headers = signature_headers(
            &[new.clone(), old.clone()],
            "msg_1",
            1_700_000_000,
            "{\"a\":1}",
        );
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let signature = get("webhook-signature");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(verify(
            std::slice::from_ref(&old),
            "msg_1",
            "1700000000",
            "{\"a\":1}",
            &signature
        ));
        assert!(verify(
            std::slice::from_ref(&new),
            "msg_1",
            "1700000000",
            "{\"a\":1}",
            &signature
        ));
        assert!(
            !verify(&[old], "msg_1", "1700000000", "{\"a\":2}", &signature),
            "body tampered"
        );
        assert_eq!(get("X-Grafana-Alerting-Signature").len(), 64);
        assert!(secret_key("whsec_***").is_err());
    }

    /// The process dies inside group_wait, after the alert fired (it is in the alerts table)
    /// but before its notification was queued: after the restart it is still notified.
    #[test]
    fn an_alert_grouped_when_the_process_died_is_notified_after_the_restart() {
        use crate::alert::{Finding, Severity};
        use crate::state::{AlertStates, Timing};
        let dir = tempfile::tempdir().unwrap();
        let config = AlertingConfig {
            webhooks: vec![WebhookConfig {
                name: "on call/primary".to_string(),
                url: "http://127.0.0.1:9/hook".to_string(),
                group_wait: Duration::from_secs(30),
                ..WebhookConfig::default()
            }],
            ..AlertingConfig::default()
        };
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "GpuPcieReplays".to_string());
        labels.insert("UUID".to_string(), "GPU-1".to_string());
        let finding = Finding {
            labels,
            severity: Severity::Warning,
            subject: "GPU 1".to_string(),
            score: 9.0,
            threshold: 3.0,
            active: true,
            clear: false,
            message: "PCIe replays".to_string(),
            evidence: Default::default(),
        };
        let timing = Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(60),
        };
        let now = SystemTime::now();
        let fired = AlertStates::default().apply("gpu_counters", vec![finding], timing, now);
        let mut notifier = Notifier::new(config.clone(), dir.path().to_path_buf()).unwrap();
        notifier.submit(&fired, now);
        assert_eq!(notifier.flush_due(now + Duration::from_secs(2)).unwrap(), 0);
        drop(notifier);

        let mut restarted = Notifier::new(config, dir.path().to_path_buf()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(31);
        assert_eq!(restarted.flush_due(later).unwrap(), 1);
        let queued = restarted.outbox().pending().unwrap();
        assert_eq!(queued.len(), 1);
        assert!(
            queued[0].body.contains("GpuPcieReplays"),
            "{}",
            queued[0].body
        );
        // Queued once: nothing is left waiting to be queued again.
        assert!(restarted.outbox().held().is_empty());
    }

    /// A receiver that never answers delays no other; one that says 429 with Retry-After is
    /// retried when it asked, not dead-lettered, and not hit again before.
    #[tokio::test]
    async fn receivers_are_delivered_side_by_side_and_retry_after_is_honoured() {
        use std::sync::Mutex;
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung_addr = hung.local_addr().unwrap();
        // Accepts connections and never answers.
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = hung.accept().await {
                open.push(socket);
            }
        });
        let received = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
        let busy_hits = Arc::new(Mutex::new(0u32));
        let app = axum::Router::new()
            .route(
                "/ok",
                axum::routing::post({
                    let received = received.clone();
                    move || async move {
                        received.lock().unwrap().push(std::time::Instant::now());
                        "ok"
                    }
                }),
            )
            .route(
                "/busy",
                axum::routing::post({
                    let hits = busy_hits.clone();
                    move || async move {
                        *hits.lock().unwrap() += 1;
                        (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "120")],
                            "slow down",
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move { axum::serve(listener, app).await });

        let webhook = |name: &str, url: String| WebhookConfig {
            name: name.to_string(),
            url,
            group_wait: Duration::ZERO,
            timeout: Duration::from_secs(5),
            ..WebhookConfig::default()
        };
        let config = AlertingConfig {
            webhooks: vec![
                webhook("hung", format!("http://{hung_addr}/hook")),
                webhook("ok", format!("http://{addr}/ok")),
                webhook("busy", format!("http://{addr}/busy")),
            ],
            ..AlertingConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut notifier = Notifier::new(config, dir.path().to_path_buf()).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "GpuLost".to_string());
        let finding = crate::alert::Finding {
            labels,
            severity: crate::alert::Severity::Critical,
            subject: "GPU 0".to_string(),
            score: 1.0,
            threshold: 0.5,
            active: true,
            clear: false,
            message: "lost".to_string(),
            evidence: Default::default(),
        };
        let timing = crate::state::Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(60),
        };
        let now = SystemTime::now();
        let fired = crate::state::AlertStates::default().apply(
            "gpu_conditions",
            vec![finding],
            timing,
            now,
        );
        notifier.submit(&fired, now);
        assert_eq!(notifier.flush_due(now).unwrap(), 3);

        let deliverer = notifier.deliverer();
        let started = std::time::Instant::now();
        let delivered = deliverer.deliver_due(SystemTime::now()).await.unwrap();
        assert_eq!(delivered, 1);
        let at = received.lock().unwrap()[0];
        assert!(
            at.duration_since(started) < Duration::from_secs(2),
            "the healthy receiver waited {:?} for the hung one",
            at.duration_since(started)
        );
        assert_eq!(*busy_hits.lock().unwrap(), 1);
        let pending = notifier.outbox().pending().unwrap();
        let busy = pending.iter().find(|e| e.receiver == "busy").unwrap();
        assert!(
            busy.next_attempt_ms >= unix_ms(SystemTime::now()) + 110_000,
            "Retry-After: 120 is honoured"
        );
        assert_eq!(
            notifier.outbox().dead_count(),
            0,
            "429 is retried, not dead-lettered"
        );
        // Within its Retry-After the busy receiver is left alone.
        deliverer.deliver_due(SystemTime::now()).await.unwrap();
        assert_eq!(*busy_hits.lock().unwrap(), 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs(1) && backoff(1) >= Duration::from_millis(500));
        assert!(backoff(4) >= Duration::from_secs(4));
        assert!(backoff(30) <= Duration::from_secs(300));
    }
}
