//! The one task per session: drains the terminal into the scrollback whether or not a client is
//! attached (so the program never blocks on a full terminal), notices the exit through the
//! reaper, runs the idle / TTL / SIGKILL timers, records the end, and forgets the session once
//! its retention has passed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::super::Daemon;
use super::super::reaper::WaitStatus;
use super::reader::Reader;
use super::session::{Session, Timer};
use super::term;
use crate::wire::{EventKind, PtyEndReason, now_ms};

/// After the program exits, how long to keep reading for output still in the terminal when
/// something else (a background job) keeps the terminal open.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Runs the session until it ends and its retention passes.
pub async fn supervise(
    daemon: Arc<Daemon>,
    session: Arc<Session>,
    mut reader: Reader,
    mut exit: oneshot::Receiver<WaitStatus>,
) {
    let mut changes = session.subscribe_changes();
    let mut status: Option<Option<WaitStatus>> = None;
    let mut eof = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // One timer, re-armed only when the deadline moves: output batches come by the thousand
    // per second and must not each register a timer.
    let timer_sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer_sleep);
    let mut armed: Option<(i64, Timer)> = None;
    loop {
        changes.borrow_and_update();
        let timer = session.next_timer();
        if timer != armed {
            if let Some((at, _)) = timer {
                timer_sleep.as_mut().reset(instant_at(at));
            }
            armed = timer;
        }
        tokio::select! {
            // Output last: a program that floods the terminal must not starve the exit and the
            // timers (a TTL has to end even a session that never stops printing).
            biased;
            result = &mut exit, if status.is_none() => {
                // From now on the pid may be reused: no more signals to it.
                session.update(|st| st.reaped = true);
                status = Some(result.ok());
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            _ = &mut timer_sleep, if armed.is_some() => {
                if let Some((_, timer)) = armed.take() {
                    daemon.fire_timer(&session, timer);
                }
            }
            _ = sleep_until(drain_deadline), if drain_deadline.is_some() => break,
            _ = changes.changed() => {}
            finished = reader.read(), if !eof => eof = finished,
        }
        if status.is_some() && eof {
            break;
        }
    }
    daemon.finish_session(&session, status.flatten());
    drop(reader);
    tokio::time::sleep(Duration::from_millis(session.spec.retain_ms)).await;
    daemon.forget_session(&session);
}

fn instant_at(at_ms: i64) -> tokio::time::Instant {
    // Deadlines are capped at creation (`MAX_MS`), so this cannot overflow.
    let wait = (at_ms - now_ms()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_millis(wait)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn fire_timer(&self, session: &Arc<Session>, timer: Timer) {
        match timer {
            Timer::Idle => self.end_session(session, PtyEndReason::IdleTimeout),
            Timer::Ttl => self.end_session(session, PtyEndReason::TtlExpired),
            Timer::Kill => {
                session.update(|st| {
                    if let Some(ending) = st.ending.as_mut() {
                        ending.killed = true;
                    }
                });
                let st = session.state();
                if !st.reaped {
                    term::signal_session(st.pid, st.leaf.as_ref(), libc::SIGKILL);
                }
            }
        }
    }

    /// Asks the session to end: SIGHUP (what a terminal sends when it hangs up) to the whole
    /// session now, SIGKILL after the grace period. The first reason wins.
    pub(crate) fn end_session(&self, session: &Arc<Session>, reason: PtyEndReason) {
        let now = now_ms();
        let acted = session.update(|st| {
            // Once reaped, the program ended on its own (its output is still being drained).
            if st.ended_at.is_some() || st.reaped || st.ending.is_some() {
                return false;
            }
            st.ending = Some(super::session::Ending {
                reason,
                kill_at: now.saturating_add(session.spec.kill_grace_ms as i64),
                killed: false,
            });
            true
        });
        if acted {
            let st = session.state();
            term::signal_session(st.pid, st.leaf.as_ref(), libc::SIGHUP);
        }
    }

    /// Records how the session ended and tells everyone.
    fn finish_session(&self, session: &Arc<Session>, status: Option<WaitStatus>) {
        let ended_at = now_ms();
        session.update(|st| {
            let oom = match (&st.leaf, status) {
                (Some(leaf), Some(WaitStatus::Signaled(libc::SIGKILL))) => leaf.oom_kills() > 0,
                _ => false,
            };
            let (exit_code, signal) = match status {
                Some(WaitStatus::Exited(code)) => (Some(code), None),
                // The shell convention, so that the exit frame always has a number.
                Some(WaitStatus::Signaled(sig)) => (Some(128 + sig), Some(sig)),
                None => (None, None),
            };
            st.ended_at = Some(ended_at);
            st.exit_code = exit_code;
            st.signal = signal;
            st.oom_killed = oom;
            st.idle_since = None;
            st.end_reason = Some(if oom {
                PtyEndReason::OomKilled
            } else if let Some(ending) = st.ending {
                ending.reason
            } else {
                match status {
                    Some(WaitStatus::Exited(_)) => PtyEndReason::Exited,
                    Some(WaitStatus::Signaled(_)) => PtyEndReason::Signaled,
                    None => PtyEndReason::Lost,
                }
            });
            if let Some(leaf) = st.leaf.take() {
                // Background jobs left behind get the terminal's hang-up below, as in any
                // terminal; the leaf goes once they are gone.
                if let Err(leaf) = self.cgroups.recycle(leaf) {
                    self.leftover_leaves
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(leaf);
                }
            }
        });
        // After the end is recorded: a client whose feed ends finds the exit code.
        session.end_output();
        // Closing the terminal hangs up on anything still holding it.
        session.take_master();
        self.persist_session(session);
        self.events
            .publish_session(EventKind::PtyExited, session.info());
    }
}
