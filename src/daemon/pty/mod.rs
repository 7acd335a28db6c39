//! PTY sessions: programs on real pseudo-terminals that WebSocket clients attach to, detach
//! from and reattach to. One supervisor task per session owns the terminal's output (it reads
//! whether or not anyone is attached); it keeps the scrollback ring for clients that attach
//! later and hands each batch to the attached clients' bounded feeds as one shared frame.

mod feed;
mod reader;
mod ring;
mod session;
mod store;
mod supervise;
mod term;
pub(crate) mod ws;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use reader::Reader;

pub use session::Session;
use session::{Spec, State};

use super::cgroup::Leaf;
use super::lifecycle::check_command;
use super::spawn::{self, Credentials};
use super::{ApiError, Daemon, Keyed, random_id};
use crate::wire::pty::{
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_SCROLLBACK_BYTES, clamp_cols, clamp_rows,
};
use crate::wire::{CreatePtyRequest, CreatePtyResponse, ErrorCode, EventKind, now_ms};

/// Largest `scrollback_bytes` a session may ask for.
const MAX_SCROLLBACK: u64 = 64 << 20;
/// Longest timer the daemon schedules (about 30 years): larger requests mean "never" anyway,
/// and timestamps must not overflow.
const MAX_MS: u64 = 1 << 40;

fn secs_to_ms(secs: u64) -> u64 {
    secs.saturating_mul(1000).min(MAX_MS)
}

/// Every session the daemon knows: live ones and ended ones still within their retention.
#[derive(Debug, Default)]
pub struct PtyRegistry {
    sessions: RwLock<BTreeMap<String, Arc<Session>>>,
    /// Serialises "count the live sessions, spawn, insert", so the cap holds under concurrency.
    creating: Mutex<()>,
    next_leaf: AtomicU64,
}

impl PtyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every session, oldest first.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<Arc<Session>> = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.spec.created_at, &a.spec.id).cmp(&(b.spec.created_at, &b.spec.id)));
        all
    }

    /// Sessions whose program still runs.
    pub fn live(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.is_alive())
            .count()
    }

    fn insert(&self, session: Arc<Session>) {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.spec.id.clone(), session);
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

impl Daemon {
    /// The session `id`, or 404 `SESSION_NOT_FOUND`.
    pub(crate) fn pty_session(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.ptys.get(id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::SessionNotFound,
                format!("PTY session `{id}` not found"),
            )
        })
    }

    /// `POST /pty`. With an idempotency key, a repeat of the same request answers the first
    /// response again (same session, same token; `true` = replayed) and another request under
    /// the same key is refused.
    pub(crate) fn create_pty(
        self: &Arc<Self>,
        key: Option<&str>,
        req: CreatePtyRequest,
    ) -> Result<(CreatePtyResponse, bool), ApiError> {
        let Some(key) = key else {
            let session = self.spawn_session(req, None)?;
            return Ok((response_of(&session), false));
        };
        let fingerprint = fingerprint(&serde_json::to_vec(&req).unwrap_or_default());
        // Held across the spawn, like process starts: two racing requests with one key must
        // not both start a session.
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fp, keyed)) = keys.get(key) {
            let replay = match keyed {
                Keyed::Response { status: 201, body } if *fp == fingerprint => {
                    serde_json::from_slice::<CreatePtyResponse>(body).ok()
                }
                _ => None,
            };
            return replay.map(|r| (r, true)).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was already used with a different request",
                )
            });
        }
        let session = self.spawn_session(req, Some(key))?;
        let response = response_of(&session);
        let body = serde_json::to_vec(&response).unwrap_or_default();
        keys.insert(
            key.to_owned(),
            (
                fingerprint,
                Keyed::Response {
                    status: 201,
                    body: body.into(),
                },
            ),
        );
        drop(keys);
        self.persist_pty_key(key, fingerprint, &response);
        Ok((response, false))
    }

    fn validate_pty(&self, req: &CreatePtyRequest) -> Result<Option<Credentials>, ApiError> {
        check_command(&req.command, &req.args, &req.env)?;
        if req.scrollback_bytes.is_some_and(|b| b > MAX_SCROLLBACK) {
            return Err(ApiError::invalid(format!(
                "`scrollback_bytes` must be at most {MAX_SCROLLBACK}"
            )));
        }
        if req.memory_limit_bytes.is_some_and(|m| m < 1 << 20) {
            return Err(ApiError::invalid(
                "`memory_limit_bytes` must be at least 1 MiB",
            ));
        }
        match &req.user {
            None => Ok(None),
            Some(user) => spawn::resolve_user(user)
                .map(Some)
                .map_err(|e| ApiError::new(ErrorCode::SpawnFailed, e)),
        }
    }

    /// Opens a terminal, starts the program on it and starts supervising it.
    fn spawn_session(
        self: &Arc<Self>,
        req: CreatePtyRequest,
        key: Option<&str>,
    ) -> Result<Arc<Session>, ApiError> {
        if self.shutting_down() {
            return Err(ApiError::new(
                ErrorCode::NotRunning,
                "the daemon is shutting down",
            ));
        }
        let creds = self.validate_pty(&req)?;
        let (rows, cols) = (clamp_rows(req.rows), clamp_cols(req.cols));
        let _creating = self.ptys.creating.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.config.max_pty_sessions;
        if self.ptys.live() >= max {
            return Err(ApiError::new(
                ErrorCode::TooManySessions,
                format!("at most {max} PTY sessions may be alive at once"),
            ));
        }
        let spawn_failed = |e: std::io::Error| {
            ApiError::new(
                ErrorCode::SpawnFailed,
                format!("failed to start `{}`: {e}", req.command),
            )
        };
        let (master, slave) = term::open(rows, cols)
            .map_err(|e| ApiError::internal(format!("cannot open a pseudo-terminal: {e}")))?;
        // Registered before the spawn, so nothing can fail between the spawn and supervision.
        // The supervisor reads through a duplicate of its own; the master is watched for
        // writability only (input to a full terminal waits for it).
        let cannot_watch = |e| ApiError::internal(format!("cannot watch the terminal: {e}"));
        let reader =
            reader::watch(master.try_clone().map_err(cannot_watch)?).map_err(cannot_watch)?;
        // SAFETY: the OwnedFd keeps the descriptor open for as long as the AsyncFd owns it.
        let master = Arc::new(
            unsafe { AsyncFd::register_with_interest(master, Interest::WRITABLE) }
                .map_err(|e| cannot_watch(e.into_parts().1))?,
        );
        let leaf = self
            .pty_leaf(req.memory_limit_bytes)
            .map_err(spawn_failed)?;
        let (pid, exit) =
            term::spawn(&self.reaper, &req, creds, leaf.as_ref(), slave).map_err(|e| {
                if let Some(leaf) = &leaf {
                    let _ = leaf.remove();
                }
                spawn_failed(e)
            })?;
        let now = now_ms();
        let idle = req.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
        let spec = Spec {
            id: random_id(12),
            token: Some(random_id(24)),
            key: key.map(str::to_owned),
            command: req.command,
            args: req.args,
            labels: req.labels,
            created_at: now,
            idle_timeout_ms: (idle > 0).then(|| secs_to_ms(idle)),
            ttl_deadline: req
                .ttl_secs
                .map(|ttl| now.saturating_add(secs_to_ms(ttl) as i64)),
            retain_ms: secs_to_ms(
                req.retain_after_exit_secs
                    .unwrap_or(self.config.pty_retain_after_exit_secs),
            ),
            scrollback: req.scrollback_bytes.unwrap_or(DEFAULT_SCROLLBACK_BYTES),
            kill_grace_ms: self.config.pty_kill_grace_ms,
        };
        let state = State {
            pid,
            rows,
            cols,
            ended_at: None,
            reaped: false,
            exit_code: None,
            signal: None,
            oom_killed: false,
            end_reason: None,
            client_count: 0,
            attach_count: 0,
            idle_since: Some(now),
            ending: None,
            leaf,
        };
        let session = Arc::new(Session::new(spec, state, Some(master.clone())));
        self.ptys.insert(session.clone());
        self.persist_session(&session);
        self.events
            .publish_session(EventKind::PtyCreated, session.info());
        tokio::spawn(supervise::supervise(
            self.clone(),
            session.clone(),
            Reader::new(session.clone(), reader),
            exit,
        ));
        Ok(session)
    }

    /// A cgroup leaf for a new session, as for processes: required only for a memory limit.
    fn pty_leaf(&self, memory_limit: Option<u64>) -> std::io::Result<Option<Leaf>> {
        if !self.cgroups.enabled() {
            return match memory_limit {
                Some(_) => Err(std::io::Error::other(
                    "memory limits need a writable cgroup, and this host has none",
                )),
                None => Ok(None),
            };
        }
        let n = self.ptys.next_leaf.fetch_add(1, Ordering::Relaxed);
        match self.cgroups.create_named(&format!("pty-{n}"), memory_limit) {
            Ok(leaf) => Ok(leaf),
            Err(e) if memory_limit.is_some() => Err(std::io::Error::other(format!(
                "cannot set the memory limit: {e}"
            ))),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup for this PTY session; OOM kills will not be detected");
                Ok(None)
            }
        }
    }

    /// Resizes the terminal (rows and cols clamped to the contract's ranges).
    pub(crate) fn resize_session(
        &self,
        session: &Session,
        rows: i64,
        cols: i64,
    ) -> Result<(), ApiError> {
        let (rows, cols) = (clamp_rows(Some(rows)), clamp_cols(Some(cols)));
        let master = session
            .master()
            .filter(|_| session.is_alive())
            .ok_or_else(|| ApiError::new(ErrorCode::NotRunning, "the session has ended"))?;
        term::set_size(master.get_ref(), rows, cols)
            .map_err(|e| ApiError::internal(format!("cannot resize the terminal: {e}")))?;
        let changed = session.update(|st| {
            let changed = (st.rows, st.cols) != (rows, cols);
            st.rows = rows;
            st.cols = cols;
            changed
        });
        if changed {
            self.persist_session(session);
            self.events
                .publish_session(EventKind::PtyResized, session.info());
        }
        Ok(())
    }

    /// `DELETE /pty/{id}`: SIGHUP now, SIGKILL after the grace period. Ended: nothing to do.
    pub(crate) fn kill_session(&self, session: &Arc<Session>) {
        self.end_session(session, crate::wire::PtyEndReason::Killed);
    }

    /// On shutdown: asks every live session to end (SIGHUP, SIGKILL after the grace period).
    pub fn end_all_ptys(&self) {
        for session in self.ptys.all() {
            self.end_session(&session, crate::wire::PtyEndReason::Shutdown);
        }
    }

    /// On shutdown, after [`Daemon::end_all_ptys`]: waits for the sessions to end and for their
    /// clients to receive their close frames (bounded by the grace period).
    pub async fn wait_ptys_ended(&self) {
        let live = self.ptys.all();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.pty_kill_grace_ms)
            + Duration::from_secs(2);
        for session in &live {
            let mut changes = session.subscribe_changes();
            let _ = tokio::time::timeout_at(
                deadline,
                changes.wait_for(|_| {
                    let st = session.state();
                    st.ended_at.is_some() && st.client_count == 0
                }),
            )
            .await;
        }
    }

    /// Drops an ended session whose retention has passed.
    fn forget_session(&self, session: &Session) {
        let removed = self.ptys.remove(&session.spec.id);
        if removed.is_none() {
            return;
        }
        if let Some(key) = &session.spec.key {
            self.keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
        self.unpersist_session(session);
    }
}

fn response_of(session: &Session) -> CreatePtyResponse {
    CreatePtyResponse {
        session_id: session.spec.id.clone(),
        token: session.spec.token.clone().unwrap_or_default(),
    }
}

fn fingerprint(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "pty".hash(&mut h);
    body.hash(&mut h);
    h.finish()
}
