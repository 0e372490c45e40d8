//! A durable outbox: every notification is written to disk (fsync, then an atomic rename) before
//! the first attempt to send it, and removed only once a receiver has taken it or it was
//! dead-lettered. An alert raised just before a crash is delivered after the restart, at least
//! once; its idempotency key lets a receiver drop the duplicate.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// One notification waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Idempotency key, also the Standard Webhooks `webhook-id`.
    pub id: String,
    /// The receiver's name in the config.
    pub receiver: String,
    /// The exact body to send (signatures are over these bytes).
    pub body: String,
    pub attempts: u32,
    /// Unix milliseconds of the next attempt.
    pub next_attempt_ms: u64,
    /// Unix milliseconds when it was first queued.
    pub created_ms: u64,
    pub last_error: Option<String>,
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The outbox directory: `pending/` and `dead/` hold notifications; `grouping/` holds alerts
/// that fired or resolved and wait in a receiver's group (`group_wait`) to become one.
#[derive(Debug, Clone)]
pub struct Outbox {
    pending: PathBuf,
    dead: PathBuf,
    grouping: PathBuf,
}

/// A file-name-safe form of a receiver's name.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Outbox {
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        let pending = dir.join("pending");
        let dead = dir.join("dead");
        let grouping = dir.join("grouping");
        fs::create_dir_all(&pending)?;
        fs::create_dir_all(&dead)?;
        fs::create_dir_all(&grouping)?;
        // A crash between writing a temporary file and renaming it leaves the temporary behind;
        // its envelope was never acknowledged to anyone, and the next evaluation re-raises it.
        for entry in fs::read_dir(&pending)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Outbox {
            pending,
            dead,
            grouping,
        })
    }

    fn held_path(&self, receiver: &str, alert: &Alert) -> PathBuf {
        self.grouping.join(format!(
            "{}.{}.{}.json",
            safe(receiver),
            alert.fingerprint,
            alert.status.as_str()
        ))
    }

    /// Keeps an alert durably while it waits in `receiver`'s group, so that a crash within
    /// `group_wait` does not lose the notification it is to become.
    pub fn hold(&self, receiver: &str, alert: &Alert) -> std::io::Result<()> {
        let path = self.held_path(receiver, alert);
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(alert).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.grouping)?.sync_all()
    }

    /// The alert is in a queued notification now.
    pub fn release(&self, receiver: &str, alert: &Alert) -> std::io::Result<()> {
        match fs::remove_file(self.held_path(receiver, alert)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Alerts still waiting in a group when the process stopped, as (receiver file name, alert).
    pub fn held(&self) -> Vec<(String, Alert)> {
        let mut held = Vec::new();
        for entry in fs::read_dir(&self.grouping).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(receiver) = name.split('.').next() else {
                continue;
            };
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Alert>(&b).map_err(|e| e.to_string()))
            {
                Ok(alert) => held.push((receiver.to_string(), alert)),
                Err(message) => {
                    tracing::warn!(path = %path.display(), %message, "unreadable grouped alert moved to dead/");
                    let _ = fs::rename(&path, self.dead.join(entry.file_name()));
                }
            }
        }
        held
    }

    /// The file-name form of a receiver's name, as [`Outbox::held`] reports it.
    pub fn receiver_key(name: &str) -> String {
        safe(name)
    }

    fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{}.json", safe(id)))
    }

    fn write(dir: &Path, envelope: &Envelope) -> std::io::Result<()> {
        let path = Self::path(dir, &envelope.id);
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(envelope).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// Queue (or update) an envelope durably.
    pub fn put(&self, envelope: &Envelope) -> std::io::Result<()> {
        Self::write(&self.pending, envelope)
    }

    /// Delivered: forget it.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_file(Self::path(&self.pending, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Undeliverable: keep it for an operator to inspect, out of the retry loop.
    pub fn dead_letter(&self, envelope: &Envelope) -> std::io::Result<()> {
        Self::write(&self.dead, envelope)?;
        self.remove(&envelope.id)
    }

    /// Every pending envelope, oldest first. Unreadable files are moved to `dead/` with a warning.
    pub fn pending(&self) -> std::io::Result<Vec<Envelope>> {
        let mut envelopes = Vec::new();
        for entry in fs::read_dir(&self.pending)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Envelope>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(envelope) => envelopes.push(envelope),
                Err(message) => {
                    tracing::warn!(path = %path.display(), %message, "unreadable outbox entry moved to dead/");
                    let _ = fs::rename(&path, self.dead.join(entry.file_name()));
                }
            }
        }
        envelopes.sort_by_key(|e| (e.created_ms, e.id.clone()));
        Ok(envelopes)
    }

    /// How many envelopes were dead-lettered.
    pub fn dead_count(&self) -> usize {
        fs::read_dir(&self.dead)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let envelope = |id: &str, created| Envelope {
            id: id.into(),
            receiver: "ops".into(),
            body: "{}".into(),
            attempts: 0,
            next_attempt_ms: 0,
            created_ms: created,
            last_error: None,
        };
        outbox.put(&envelope("b", 2)).unwrap();
        outbox.put(&envelope("a", 1)).unwrap();
        std::fs::write(dir.path().join("pending/garbage.json"), b"{not json").unwrap();
        std::fs::write(dir.path().join("pending/half.tmp"), b"{").unwrap();
        let reopened = Outbox::open(dir.path()).unwrap();
        let pending = reopened.pending().unwrap();
        assert_eq!(
            pending.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(reopened.dead_count(), 1, "the unreadable file");
        reopened.dead_letter(&pending[0]).unwrap();
        reopened.remove("b").unwrap();
        reopened.remove("b").unwrap();
        assert!(reopened.pending().unwrap().is_empty());
        assert_eq!(reopened.dead_count(), 2);
    }
}
