//! One PTY session: what it runs, its scrollback, its terminal state and its counters. The
//! supervisor task (`supervise.rs`) changes it; routes and WebSocket clients read it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use subtle::ConstantTimeEq;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::super::cgroup::Leaf;
use super::ring::{Read, Ring};
use crate::wire::{PtyEndReason, PtySessionInfo, now_ms};

/// The terminal master, shared by the reader and the writers of input.
pub type Master = Arc<AsyncFd<OwnedFd>>;

/// What does not change after creation.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    /// `None` for a session restored after a restart without its token: nobody can attach.
    pub token: Option<String>,
    /// The Idempotency-Key that created it, forgotten with the session.
    pub key: Option<String>,
    pub command: String,
    pub args: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    /// End after this long without a client (`None` = never).
    pub idle_timeout_ms: Option<u64>,
    /// Hard end (ms since the epoch).
    pub ttl_deadline: Option<i64>,
    /// How long the ended session stays queryable.
    pub retain_ms: u64,
    /// Output replayed to a client that attaches.
    pub scrollback: u64,
    pub kill_grace_ms: u64,
}

/// An end the daemon asked for (kill, idle timeout, TTL, shutdown).
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub reason: PtyEndReason,
    /// When SIGKILL follows the SIGHUP if the session is still alive.
    pub kill_at: i64,
    pub killed: bool,
}

/// What changes.
#[derive(Debug)]
pub struct State {
    pub pid: i32,
    pub rows: u16,
    pub cols: u16,
    pub ended_at: Option<i64>,
    /// The reaper has collected the program (the pid may be reused); `ended_at` follows once
    /// its last output is read.
    pub reaped: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub end_reason: Option<PtyEndReason>,
    pub client_count: u32,
    pub attach_count: u64,
    /// Since when no client has been attached (the idle clock), while alive.
    pub idle_since: Option<i64>,
    pub ending: Option<Ending>,
    pub leaf: Option<Leaf>,
}

/// Something the supervisor must do at a certain time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Idle,
    Ttl,
    Kill,
}

#[derive(Debug)]
pub struct Session {
    pub spec: Spec,
    ring: Mutex<Ring>,
    /// The ring's end offset, published after each batch of output, so clients wake up.
    output: watch::Sender<u64>,
    state: Mutex<State>,
    /// Bumped on every state change (end, attach, resize, kill request).
    changes: watch::Sender<u64>,
    master: Mutex<Option<Master>>,
    input_count: AtomicU64,
    last_activity: AtomicI64,
}

/// A client's cursor fell behind the oldest retained output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

/// The ring never goes below this, so live clients can lag a little even with no scrollback.
const MIN_RING: u64 = 64 << 10;

impl Session {
    pub fn new(spec: Spec, state: State, master: Option<Master>) -> Session {
        let capacity = spec.scrollback.max(MIN_RING) as usize;
        Session {
            last_activity: AtomicI64::new(spec.created_at),
            spec,
            ring: Mutex::new(Ring::new(capacity)),
            output: watch::Sender::new(0),
            state: Mutex::new(state),
            changes: watch::Sender::new(0),
            master: Mutex::new(master),
            input_count: AtomicU64::new(0),
        }
    }

    /// A session of an earlier daemon run, as it was last recorded.
    pub fn restored(spec: Spec, info: &PtySessionInfo) -> Session {
        let session = Session::new(
            spec,
            State {
                pid: info.pid,
                rows: info.rows,
                cols: info.cols,
                ended_at: info.ended_at,
                reaped: true,
                exit_code: info.exit_code,
                signal: info.signal,
                oom_killed: info.oom_killed,
                end_reason: info.end_reason,
                client_count: 0,
                attach_count: info.attach_count,
                idle_since: None,
                ending: None,
                leaf: None,
            },
            None,
        );
        session
            .input_count
            .store(info.input_count, Ordering::Relaxed);
        session
            .last_activity
            .store(info.last_activity_at, Ordering::Relaxed);
        session
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` and wakes everyone watching the session.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.state());
        self.changes.send_modify(|v| *v += 1);
        result
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn subscribe_output(&self) -> watch::Receiver<u64> {
        self.output.subscribe()
    }

    pub fn is_alive(&self) -> bool {
        self.state().ended_at.is_none()
    }

    /// Constant-time comparison with the session's token.
    pub fn token_matches(&self, presented: &str) -> bool {
        match &self.spec.token {
            Some(token) => bool::from(presented.as_bytes().ct_eq(token.as_bytes())),
            None => false,
        }
    }

    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    pub fn count_input(&self) {
        self.input_count.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    // ---- output ----

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends output; clients see it after [`Session::publish_output`].
    pub fn push_output(&self, data: &[u8]) {
        self.ring().push(data);
    }

    /// Wakes clients waiting for output.
    pub fn publish_output(&self) {
        let end = self.ring().end();
        self.output.send_replace(end);
        self.touch();
    }

    /// Output after `*cursor` (at most `max` bytes) as one frame: `prefix` then the bytes.
    /// The frame is allocated at its exact size: most frames are a few bytes of echo.
    pub fn read_frame(
        &self,
        cursor: &mut u64,
        max: usize,
        prefix: u8,
    ) -> Result<Option<Bytes>, Lagged> {
        let ring = self.ring();
        if *cursor < ring.start() {
            return Err(Lagged);
        }
        let available = ring.end().saturating_sub(*cursor).min(max as u64) as usize;
        if available == 0 {
            return Ok(None);
        }
        let mut frame = BytesMut::with_capacity(available + 1);
        frame.put_u8(prefix);
        match ring.read_into(cursor, max, &mut frame) {
            Read::Data(_) => Ok(Some(frame.freeze())),
            Read::Empty => Ok(None),
            Read::Lagged => Err(Lagged),
        }
    }

    /// `(oldest retained, newest)` output offsets.
    pub fn output_bounds(&self) -> (u64, u64) {
        let ring = self.ring();
        (ring.start(), ring.end())
    }

    /// Where a client that attaches now starts reading: the retained scrollback, at most
    /// `scrollback` bytes of it.
    pub fn replay_start(&self) -> u64 {
        let ring = self.ring();
        ring.start()
            .max(ring.end().saturating_sub(self.spec.scrollback))
    }

    // ---- the terminal ----

    pub fn master(&self) -> Option<Master> {
        self.master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the master: once the reader lets go too, the terminal closes and whatever still
    /// holds the slave gets a hang-up.
    pub fn take_master(&self) -> Option<Master> {
        self.master.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    // ---- timers ----

    /// The next thing the supervisor must do, and when (ms since the epoch).
    pub fn next_timer(&self) -> Option<(i64, Timer)> {
        self.timer_of(&self.state())
    }

    fn timer_of(&self, st: &State) -> Option<(i64, Timer)> {
        if st.ended_at.is_some() || st.reaped {
            return None;
        }
        if let Some(ending) = st.ending {
            return (!ending.killed).then_some((ending.kill_at, Timer::Kill));
        }
        let idle = match (self.spec.idle_timeout_ms, st.idle_since) {
            (Some(timeout), Some(since)) if st.client_count == 0 => {
                Some((since.saturating_add(timeout as i64), Timer::Idle))
            }
            _ => None,
        };
        let ttl = self.spec.ttl_deadline.map(|at| (at, Timer::Ttl));
        match (idle, ttl) {
            (Some(a), Some(b)) => Some(if b.0 <= a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The wire view. Never includes the token.
    pub fn info(&self) -> PtySessionInfo {
        let st = self.state();
        // When the daemon will end the session (or, once ended, forget it) unless something
        // changes; a pending SIGKILL is not an expiry.
        let expires_at = match st.ended_at {
            Some(ended) => Some(ended.saturating_add(self.spec.retain_ms as i64)),
            None => self
                .timer_of(&st)
                .filter(|(_, timer)| *timer != Timer::Kill)
                .map(|(at, _)| at),
        };
        PtySessionInfo {
            session_id: self.spec.id.clone(),
            pid: st.pid,
            command: self.spec.command.clone(),
            args: self.spec.args.clone(),
            rows: st.rows,
            cols: st.cols,
            created_at: self.spec.created_at,
            ended_at: st.ended_at,
            exit_code: st.exit_code,
            is_alive: st.ended_at.is_none(),
            oom_killed: st.oom_killed,
            labels: self.spec.labels.clone(),
            client_count: st.client_count,
            last_activity_at: self.last_activity.load(Ordering::Relaxed),
            expires_at,
            attach_count: st.attach_count,
            input_count: self.input_count.load(Ordering::Relaxed),
            signal: st.signal,
            end_reason: st.end_reason,
        }
    }
}
