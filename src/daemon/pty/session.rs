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
use super::feed::Feed;
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
    output: Mutex<Output>,
    state: Mutex<State>,
    /// Bumped on every state change (end, attach, resize, kill request).
    changes: watch::Sender<u64>,
    master: Mutex<Option<Master>>,
    input_count: AtomicU64,
    last_activity: AtomicI64,
}

/// The terminal's output: the scrollback for clients that attach later, and the feeds of the
/// clients attached now. One lock for both, so that a client's replay (from the ring) and its
/// live output (from its feed) meet exactly: nothing missing, nothing twice.
#[derive(Debug)]
struct Output {
    ring: Ring,
    feeds: Vec<Arc<Feed>>,
    /// The reader is done: the ring holds all the output there will be.
    ended: bool,
}

/// Where an attached client's scrollback replay starts and ends (output offsets); its feed
/// has everything after `end`.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    start: u64,
    end: u64,
    started: bool,
}

/// A replay fell behind the oldest retained output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

impl Session {
    pub fn new(spec: Spec, state: State, master: Option<Master>) -> Session {
        let capacity = spec.scrollback as usize;
        Session {
            last_activity: AtomicI64::new(spec.created_at),
            spec,
            output: Mutex::new(Output {
                ring: Ring::new(capacity),
                feeds: Vec::new(),
                ended: false,
            }),
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
        // No reader will ever run for it: a client that attaches gets the (empty) replay and
        // the end.
        session.end_output();
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

    fn output(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one batch of output: `frame` is the output frame (opcode, then the bytes), handed
    /// as it is to every attached client's feed and copied into the scrollback.
    pub fn push_output(&self, frame: Bytes) {
        let mut output = self.output();
        output.ring.push(&frame[1..]);
        // A feed that overflows is cut off here and dropped; its client closes with 1013.
        output.feeds.retain(|feed| feed.push(&frame));
        drop(output);
        self.touch();
    }

    /// Marks the output complete (the reader has stopped): feeds end after what they hold.
    pub fn end_output(&self) {
        let mut output = self.output();
        output.ended = true;
        for feed in output.feeds.drain(..) {
            feed.end();
        }
    }

    /// Attaches a client: a feed of all output from now on, and the scrollback to replay
    /// before it (at most `scrollback` bytes).
    pub fn attach_output(&self) -> (Arc<Feed>, Replay) {
        let mut output = self.output();
        let feed = Arc::new(Feed::default());
        if output.ended {
            feed.end();
        } else {
            output.feeds.push(feed.clone());
        }
        let end = output.ring.end();
        let start = output
            .ring
            .start()
            .max(end.saturating_sub(self.spec.scrollback));
        let replay = Replay {
            start,
            end,
            started: false,
        };
        (feed, replay)
    }

    /// Stops feeding a client that leaves.
    pub fn detach_output(&self, feed: &Arc<Feed>) {
        self.output().feeds.retain(|f| !Arc::ptr_eq(f, feed));
    }

    /// The next frame (at most `max` bytes) of `replay`, which it advances.
    /// Scrollback overwritten before the replay starts is skipped (the scrollback is simply
    /// shorter); once started, falling behind the ring would leave a gap: `Lagged`.
    pub fn replay_frame(&self, replay: &mut Replay, max: usize) -> Result<Option<Bytes>, Lagged> {
        let output = self.output();
        if !replay.started {
            replay.started = true;
            replay.start = replay.start.max(output.ring.start());
        }
        if replay.start >= replay.end {
            return Ok(None);
        }
        let n = ((replay.end - replay.start) as usize).min(max);
        let mut frame = BytesMut::with_capacity(n + 1);
        frame.put_u8(crate::wire::pty::frame::DATA);
        match output.ring.read_into(&mut replay.start, n, &mut frame) {
            Read::Data(_) => Ok(Some(frame.freeze())),
            Read::Empty => Ok(None),
            Read::Lagged => Err(Lagged),
        }
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
