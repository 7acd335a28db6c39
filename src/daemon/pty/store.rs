//! Sessions in the daemon's journal (`Record::Other`, kinds `pty` and `pty-key`), and bringing
//! them back after a restart: a session that was alive then is reported as ended (`lost`),
//! never as unknown, until its retention passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::persist::Record;
use super::super::{Daemon, Keyed};
use super::Session;
use super::session::Spec;
use crate::wire::{CreatePtyResponse, PtyEndReason, PtySessionInfo, now_ms};

const KIND_SESSION: &str = "pty";
const KIND_KEY: &str = "pty-key";

/// The journal's view of a session (never the token).
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    info: PtySessionInfo,
    retain_ms: u64,
    scrollback: u64,
    #[serde(default)]
    key: Option<String>,
}

/// An idempotency key of `POST /pty`. It has to hold the token: a replay after a restart must
/// answer exactly what the first request got.
#[derive(Debug, Serialize, Deserialize)]
struct StoredKey {
    fingerprint: u64,
    session_id: String,
    token: String,
}

impl Daemon {
    pub(crate) fn persist_session(&self, session: &Session) {
        let Some(journal) = &self.journal else { return };
        let stored = StoredSession {
            info: session.info(),
            retain_ms: session.spec.retain_ms,
            scrollback: session.spec.scrollback,
            key: session.spec.key.clone(),
        };
        journal.append(&Record::Other {
            kind: KIND_SESSION.into(),
            id: session.spec.id.clone(),
            value: serde_json::to_value(stored).unwrap_or_default(),
        });
    }

    pub(crate) fn persist_pty_key(
        &self,
        key: &str,
        fingerprint: u64,
        response: &CreatePtyResponse,
    ) {
        let Some(journal) = &self.journal else { return };
        let stored = StoredKey {
            fingerprint,
            session_id: response.session_id.clone(),
            token: response.token.clone(),
        };
        journal.append(&Record::Other {
            kind: KIND_KEY.into(),
            id: key.to_owned(),
            value: serde_json::to_value(stored).unwrap_or_default(),
        });
    }

    pub(crate) fn unpersist_session(&self, session: &Session) {
        let Some(journal) = &self.journal else { return };
        journal.append(&Record::Other {
            kind: KIND_SESSION.into(),
            id: session.spec.id.clone(),
            value: serde_json::Value::Null,
        });
        if let Some(key) = &session.spec.key {
            journal.append(&Record::Other {
                kind: KIND_KEY.into(),
                id: key.clone(),
                value: serde_json::Value::Null,
            });
        }
    }

    /// Brings back the sessions of an earlier run (from the journal's `Other` records) and
    /// returns their records as they are now, for the compacted journal. Records of other
    /// kinds are left alone. Must run before the daemon's keys are locked by the caller.
    pub(crate) fn restore_ptys(
        &self,
        other: &BTreeMap<(String, String), serde_json::Value>,
    ) -> Vec<Record> {
        let now = now_ms();
        let mut records = Vec::new();
        let stored_keys: BTreeMap<&str, StoredKey> = other
            .iter()
            .filter(|((kind, _), _)| kind == KIND_KEY)
            .filter_map(|((_, key), value)| {
                Some((key.as_str(), serde_json::from_value(value.clone()).ok()?))
            })
            .collect();
        let mut restored_keys = Vec::new();
        for ((kind, id), value) in other {
            if kind != KIND_SESSION {
                continue;
            }
            let forget = Record::Other {
                kind: KIND_SESSION.into(),
                id: id.clone(),
                value: serde_json::Value::Null,
            };
            let Ok(mut stored) = serde_json::from_value::<StoredSession>(value.clone()) else {
                records.push(forget);
                continue;
            };
            let info = &mut stored.info;
            if info.is_alive {
                // The program lived in the earlier daemon's terminal, which closed with it.
                info.is_alive = false;
                info.ended_at = Some(now);
                info.exit_code = None;
                info.signal = None;
                info.end_reason = Some(PtyEndReason::Lost);
            }
            info.client_count = 0;
            let ended_at = info.ended_at.unwrap_or(now);
            if ended_at.saturating_add(stored.retain_ms as i64) <= now {
                records.push(forget);
                continue;
            }
            // The token survives only through the key record of a keyed create.
            let key = stored
                .key
                .as_deref()
                .and_then(|name| Some((name, stored_keys.get(name)?)))
                .filter(|(_, k)| k.session_id == *id);
            let spec = Spec {
                id: id.clone(),
                token: key.map(|(_, k)| k.token.clone()),
                key: key.map(|(name, _)| name.to_owned()),
                command: info.command.clone(),
                args: info.args.clone(),
                labels: info.labels.clone(),
                created_at: info.created_at,
                idle_timeout_ms: None,
                ttl_deadline: None,
                retain_ms: stored.retain_ms,
                scrollback: stored.scrollback,
                kill_grace_ms: 0,
            };
            if let Some((name, k)) = key {
                restored_keys.push((name.to_owned(), k.fingerprint, k.token.clone(), id.clone()));
            }
            let session = Arc::new(Session::restored(spec, info));
            records.push(Record::Other {
                kind: KIND_SESSION.into(),
                id: id.clone(),
                value: serde_json::to_value(&stored).unwrap_or_default(),
            });
            self.ptys.insert(session);
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for (key, fingerprint, token, session_id) in restored_keys {
            let response = CreatePtyResponse { session_id, token };
            let body = serde_json::to_vec(&response).unwrap_or_default();
            keys.insert(
                key.clone(),
                (
                    fingerprint,
                    Keyed::Response {
                        status: 201,
                        body: body.into(),
                    },
                ),
            );
            records.push(Record::Other {
                kind: KIND_KEY.into(),
                id: key,
                value: serde_json::to_value(StoredKey {
                    fingerprint,
                    session_id: response.session_id,
                    token: response.token,
                })
                .unwrap_or_default(),
            });
        }
        for (kind, key) in other.keys() {
            if kind == KIND_KEY && !keys.contains_key(key) {
                records.push(Record::Other {
                    kind: KIND_KEY.into(),
                    id: key.clone(),
                    value: serde_json::Value::Null,
                });
            }
        }
        records
    }

    /// Forgets restored sessions as their retention passes (live sessions' own supervisors do
    /// this for them).
    pub async fn expire_restored_ptys(self: Arc<Self>) {
        let mut restored: Vec<Arc<Session>> = self
            .ptys
            .all()
            .into_iter()
            .filter(|s| s.master().is_none() && !s.is_alive())
            .collect();
        restored.sort_by_key(|s| expiry(s));
        for session in restored {
            let wait = (expiry(&session) - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.forget_session(&session);
        }
    }
}

fn expiry(session: &Session) -> i64 {
    let ended = session.state().ended_at.unwrap_or(0);
    ended.saturating_add(session.spec.retain_ms as i64)
}
