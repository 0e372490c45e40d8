//! Bearer tokens, checked once for every door: OTLP/gRPC and OTLP/HTTP take ingest tokens, the
//! query port and Flight SQL take query tokens. Without any token configured a door is open, as
//! before, and the log says so. Tokens come from the config and from files (one per line, `#`
//! comments), re-read when a file changes, so that a token can be rotated without a restart.
//!
//! A GPU-exporter token is an ingest token whose metrics are marked as coming from a GPU exporter
//! (`resource_attributes['vigil.sender'] = 'gpu-exporter'`; a sender cannot set it itself), so
//! that the GPU detectors can be told to trust nothing else (`analyzer.gpu.trusted_senders_only`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use vigil_schemas::attrs::{GPU_EXPORTER_SENDER, SENDER_ATTRIBUTE};

/// `[auth]` in the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens that may send telemetry (OTLP/gRPC, OTLP/HTTP).
    pub ingest_tokens: Vec<String>,
    pub ingest_tokens_file: Option<PathBuf>,
    /// Tokens that may send telemetry, whose metrics count as a GPU exporter's.
    pub gpu_exporter_tokens: Vec<String>,
    pub gpu_exporter_tokens_file: Option<PathBuf>,
    /// Tokens that may query (SQL over HTTP, Flight SQL, `/metrics`, the status endpoint).
    pub query_tokens: Vec<String>,
    pub query_tokens_file: Option<PathBuf>,
}

/// Who sent a request, as far as its token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// No token was needed (the door is open).
    Anyone,
    /// An ingest token.
    Ingest,
    /// A GPU-exporter token.
    GpuExporter,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this door needs a bearer token (Authorization: Bearer <token>) and the request had none"
    )]
    Missing,
    #[error("the token is not one this door accepts")]
    Wrong,
    #[error("the Authorization header is not \"Bearer <token>\" or \"Basic <base64 user:token>\"")]
    Malformed,
}

/// One set of tokens: the config's, and a file's as of its last change.
#[derive(Debug)]
struct TokenSet {
    fixed: Vec<String>,
    file: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    modified: Option<SystemTime>,
    checked: Option<Instant>,
    tokens: Vec<String>,
}

/// A file is looked at no more often than this.
const RECHECK: Duration = Duration::from_secs(1);

impl TokenSet {
    fn new(fixed: &[String], file: &Option<PathBuf>) -> Result<TokenSet, String> {
        let set = TokenSet {
            fixed: fixed
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            file: file.clone(),
            loaded: Mutex::new(Loaded::default()),
        };
        if let Some(path) = &set.file {
            // A missing or unreadable file at start is a configuration error, not an open door.
            std::fs::read_to_string(path)
                .map_err(|e| format!("token file {}: {e}", path.display()))?;
        }
        Ok(set)
    }

    fn is_configured(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    fn contains(&self, token: &str) -> bool {
        if self.fixed.iter().any(|t| same(t, token)) {
            return true;
        }
        let Some(path) = &self.file else {
            return false;
        };
        let mut loaded = self.loaded.lock().expect("token file");
        let due = loaded.checked.is_none_or(|at| at.elapsed() >= RECHECK);
        if due {
            loaded.checked = Some(Instant::now());
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != loaded.modified || loaded.modified.is_none() {
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        loaded.tokens = text
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string)
                            .collect();
                        loaded.modified = modified;
                    }
                    // Keep the last tokens read: a file being rewritten must not lock everyone out.
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot re-read a token file; keeping its last tokens")
                    }
                }
            }
        }
        loaded.tokens.iter().any(|t| same(t, token))
    }
}

/// Compares without stopping at the first difference, so that timing does not reveal a prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The token in an `Authorization` header: `Bearer <token>`, or `Basic` with the token as the
/// password (what Flight SQL clients send to the handshake, and what Grafana sends with a
/// username and password).
pub fn token_of(header: &str) -> Result<String, AuthError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (_, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
        return Ok(password.to_string());
    }
    Err(AuthError::Malformed)
}

/// The doors' tokens.
#[derive(Debug, Clone)]
pub struct Auth {
    ingest: Arc<TokenSet>,
    gpu_exporter: Arc<TokenSet>,
    query: Arc<TokenSet>,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        Ok(Auth {
            ingest: Arc::new(TokenSet::new(
                &config.ingest_tokens,
                &config.ingest_tokens_file,
            )?),
            gpu_exporter: Arc::new(TokenSet::new(
                &config.gpu_exporter_tokens,
                &config.gpu_exporter_tokens_file,
            )?),
            query: Arc::new(TokenSet::new(
                &config.query_tokens,
                &config.query_tokens_file,
            )?),
        })
    }

    /// Every door open (tests, `vigil demo`).
    pub fn open() -> Auth {
        Auth::new(&AuthConfig::default()).expect("no token files")
    }

    pub fn ingest_is_open(&self) -> bool {
        !self.ingest.is_configured() && !self.gpu_exporter.is_configured()
    }

    pub fn query_is_open(&self) -> bool {
        !self.query.is_configured()
    }

    /// Who may send, given the request's `Authorization` header.
    pub fn ingest(&self, authorization: Option<&str>) -> Result<Sender, AuthError> {
        let token = match authorization {
            Some(header) => Some(token_of(header)?),
            None => None,
        };
        if let Some(token) = &token
            && self.gpu_exporter.contains(token)
        {
            return Ok(Sender::GpuExporter);
        }
        if self.ingest_is_open() {
            return Ok(Sender::Anyone);
        }
        match token {
            None => Err(AuthError::Missing),
            Some(token) if self.ingest.contains(&token) => Ok(Sender::Ingest),
            Some(_) => Err(AuthError::Wrong),
        }
    }

    /// Whether a query may run, given the request's `Authorization` header.
    pub fn query(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        if self.query_is_open() {
            return Ok(());
        }
        let token = token_of(authorization.ok_or(AuthError::Missing)?)?;
        if self.query.contains(&token) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }

    /// Says in the log which doors are open.
    pub fn log_state(&self) {
        match (self.ingest_is_open(), self.query_is_open()) {
            (true, true) => tracing::warn!(
                "no tokens configured ([auth]): anyone who can reach the OTLP and query ports can send and query"
            ),
            (true, false) => tracing::warn!(
                "no ingest tokens configured ([auth] ingest_tokens): anyone who can reach the OTLP ports can send"
            ),
            (false, true) => tracing::warn!(
                "no query tokens configured ([auth] query_tokens): anyone who can reach the query and Flight SQL ports can query"
            ),
            (false, false) => tracing::info!("every door needs a bearer token"),
        }
    }
}

/// Marks every resource of a metrics request with who sent it, replacing whatever the request
/// said: only a GPU-exporter token makes metrics count as a GPU exporter's.
pub fn mark_sender(
    request: &mut opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    sender: Sender,
) {
    for resource_metrics in &mut request.resource_metrics {
        let resource = resource_metrics
            .resource
            .get_or_insert_with(Default::default);
        mark_resource(&mut resource.attributes, sender);
    }
}

/// Marks one resource's attributes with who sent them (see [`mark_sender`]).
pub fn mark_resource(
    attributes: &mut Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    sender: Sender,
) {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    attributes.retain(|attribute| attribute.key != SENDER_ATTRIBUTE);
    if sender == Sender::GpuExporter {
        attributes.push(KeyValue {
            key: SENDER_ATTRIBUTE.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(GPU_EXPORTER_SENDER.into())),
            }),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn open_doors_take_anyone_and_closed_ones_only_their_tokens() {
        let open = Auth::open();
        assert_eq!(open.ingest(None), Ok(Sender::Anyone));
        assert_eq!(open.query(None), Ok(()));

        let auth = Auth::new(&AuthConfig {
            ingest_tokens: vec!["in-1".into()],
            gpu_exporter_tokens: vec!["gpu-1".into()],
            query_tokens: vec!["q-1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(auth.ingest(None), Err(AuthError::Missing));
        assert_eq!(auth.ingest(Some("Bearer in-1")), Ok(Sender::Ingest));
        assert_eq!(auth.ingest(Some("bearer gpu-1")), Ok(Sender::GpuExporter));
        assert_eq!(auth.ingest(Some("Bearer q-1")), Err(AuthError::Wrong));
        assert_eq!(auth.ingest(Some("Token in-1")), Err(AuthError::Malformed));
        assert_eq!(auth.query(Some("Bearer in-1")), Err(AuthError::Wrong));
        assert_eq!(auth.query(Some(&basic("grafana", "q-1"))), Ok(()));
        assert_eq!(auth.query(Some("Basic !!!")), Err(AuthError::Malformed));

        // A GPU-exporter token alone closes the ingest doors to anonymous senders too.
        let gpu_only = Auth::new(&AuthConfig {
            gpu_exporter_tokens: vec!["gpu-1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(gpu_only.ingest(None), Err(AuthError::Missing));
        assert!(gpu_only.query_is_open());
    }

    #[test]
    fn a_token_file_is_re_read_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("query-tokens");
        std::fs::write(&path, "# rotated monthly\nold-token\n").unwrap();
        let auth = Auth::new(&AuthConfig {
            query_tokens_file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(auth.query(Some("Bearer old-token")), Ok(()));
        assert_eq!(
            auth.query(Some("Bearer # rotated monthly")),
            Err(AuthError::Wrong)
        );
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        std::fs::write(&path, "new-token\n").unwrap();
        // Some file systems keep whole-second modification times.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(auth.query(Some("Bearer new-token")), Ok(()));
        assert_eq!(auth.query(Some("Bearer old-token")), Err(AuthError::Wrong));
        // A missing file is a configuration error at start.
        let missing = Auth::new(&AuthConfig {
            ingest_tokens_file: Some(dir.path().join("nope")),
            ..Default::default()
        });
        assert!(missing.unwrap_err().contains("nope"));
    }

    #[test]
    fn only_a_gpu_exporter_token_marks_metrics_as_a_gpu_exporters() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let forged = || ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: SENDER_ATTRIBUTE.into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(GPU_EXPORTER_SENDER.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let senders = |request: &ExportMetricsServiceRequest| -> Vec<String> {
            request.resource_metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .filter(|a| a.key == SENDER_ATTRIBUTE)
                .map(|a| format!("{:?}", a.value))
                .collect()
        };
        let mut request = forged();
        mark_sender(&mut request, Sender::Ingest);
        assert!(senders(&request).is_empty(), "a forged mark is removed");
        let mut request = forged();
        mark_sender(&mut request, Sender::GpuExporter);
        assert_eq!(senders(&request).len(), 1);
    }
}
