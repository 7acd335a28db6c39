//! One attached WebSocket client of a session.
//!
//! From the attach on, the session's reader queues each batch of output in the client's feed
//! (`feed.rs`), as one shared frame; the client's task sends whatever is queued, several frames
//! per socket flush under load and one at once when idle. After READY, the scrollback retained
//! at the attach is replayed first, then the feed: no gap, nothing twice. A client whose feed
//! overflows ([`FEED_LIMIT`](super::feed::FEED_LIMIT)) is cut off: with 1013 after READY (too slow), with 1008 before
//! (no READY frame before that much output). Input goes straight to the terminal; while the
//! terminal does not take it, the client's next frames wait (backpressure on that client
//! alone) but its output keeps flowing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::unix::AsyncFdReadyGuard;
use tokio::sync::watch;

use super::super::Daemon;
use super::feed::{Feed, Taken};
use super::session::{Lagged, Master, Replay, Session};
use super::term;
use crate::wire::pty::frame::{self, ClientFrame};
use crate::wire::{EventKind, now_ms};

/// Largest replay frame payload.
const MAX_FRAME: usize = 128 << 10;
/// Largest input message a client may send.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The WebSocket layer's read size. It zero-fills this much of its buffer before every read
/// attempt (even one that finds nothing), so the 128 KiB default cost more per keystroke than
/// all the rest of the input path; input is mostly a few bytes, and a large paste just takes
/// more reads.
pub const READ_BUFFER: usize = 8 << 10;
/// A client of an ended session that has not sent READY after this long is closed.
const READY_WAIT_AFTER_END: Duration = Duration::from_secs(30);
/// A send still blocked this long after the session ended is abandoned.
const SEND_WAIT_AFTER_END: Duration = Duration::from_secs(5);
/// How long to wait for the client's answer to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

const TOO_SLOW: &str = "client too slow: output was lost; reattach to resume";

/// How a client's connection ends.
#[derive(Debug)]
enum Outcome {
    /// The client went away (close frame, end of stream, error).
    Gone,
    /// We close with this code and reason.
    Close(u16, &'static str),
    /// The session ended and the client has all of its output.
    Ended,
}

/// Serves one attached client until it leaves or the session ends.
pub async fn serve(daemon: Arc<Daemon>, session: Arc<Session>, mut socket: WebSocket) {
    let attached = Attached::new(daemon.clone(), session.clone());
    let mut client = Client {
        feed: attached.feed.clone(),
        replay: Some(attached.replay),
        ready: false,
        pending: None,
        changes: session.subscribe_changes(),
        session,
    };
    let outcome = client.run(&daemon, &mut socket).await;
    // Nothing more is sent but the goodbye: stop feeding now (the drop of `attached` would
    // only do it after the close handshake).
    client.session.detach_output(&client.feed);
    client.finish(socket, outcome).await;
    drop(attached);
}

/// Counts the client in, and feeds it, for as long as it is attached.
struct Attached {
    daemon: Arc<Daemon>,
    session: Arc<Session>,
    feed: Arc<Feed>,
    replay: Replay,
}

impl Attached {
    fn new(daemon: Arc<Daemon>, session: Arc<Session>) -> Attached {
        let (feed, replay) = session.attach_output();
        session.update(|st| {
            st.client_count += 1;
            st.attach_count += 1;
            st.idle_since = None;
        });
        session.touch();
        daemon.persist_session(&session);
        daemon
            .events
            .publish_session(EventKind::PtyAttached, session.info());
        Attached {
            daemon,
            session,
            feed,
            replay,
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.detach_output(&self.feed);
        let now = now_ms();
        self.session.update(|st| {
            st.client_count = st.client_count.saturating_sub(1);
            if st.client_count == 0 && st.ended_at.is_none() {
                // The idle clock starts again.
                st.idle_since = Some(now);
            }
        });
        self.session.touch();
        self.daemon.persist_session(&self.session);
        self.daemon
            .events
            .publish_session(EventKind::PtyDetached, self.session.info());
    }
}

struct Client {
    session: Arc<Session>,
    feed: Arc<Feed>,
    /// The scrollback still to send once READY arrives (`None` once sent).
    replay: Option<Replay>,
    ready: bool,
    /// Input the terminal has not taken yet: the master, the bytes, how much was written.
    pending: Option<(Master, Bytes, usize)>,
    changes: watch::Receiver<u64>,
}

impl Client {
    async fn run(&mut self, daemon: &Daemon, socket: &mut WebSocket) -> Outcome {
        let mut ended_since: Option<tokio::time::Instant> = None;
        loop {
            if self.ready {
                // The scrollback first, one frame at a time (the feed keeps live output
                // meanwhile), then the feed.
                let frames = match self.replay.as_mut() {
                    Some(replay) => match self.session.replay_frame(replay, MAX_FRAME) {
                        Ok(Some(frame)) => VecDeque::from([frame]),
                        Ok(None) => {
                            self.replay = None;
                            continue;
                        }
                        Err(Lagged) => return Outcome::Close(frame::CLOSE_TOO_SLOW, TOO_SLOW),
                    },
                    None => match self.feed.take() {
                        Taken::Frames(frames) => frames,
                        Taken::CutOff => return Outcome::Close(frame::CLOSE_TOO_SLOW, TOO_SLOW),
                        Taken::Ended => return Outcome::Ended,
                        Taken::Empty => VecDeque::new(),
                    },
                };
                if !frames.is_empty() {
                    match self.send_output(socket, frames).await {
                        Ok(()) => continue,
                        Err(outcome) => return outcome,
                    }
                }
            } else if self.feed.is_cut_off() {
                return Outcome::Close(
                    frame::CLOSE_POLICY,
                    "no READY frame before 1 MiB of output",
                );
            }
            let ready_deadline = match (self.ready, self.session.is_alive()) {
                (false, false) => Some(
                    *ended_since.get_or_insert_with(tokio::time::Instant::now)
                        + READY_WAIT_AFTER_END,
                ),
                _ => None,
            };
            let pending_master = self.pending.as_ref().map(|(m, _, _)| m.clone());
            tokio::select! {
                biased;
                message = socket.recv(), if self.pending.is_none() => match message {
                    Some(Ok(Message::Binary(bytes))) => self.on_frame(daemon, bytes),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Outcome::Gone,
                    // Text frames are not part of the protocol; pings are answered by the
                    // WebSocket layer.
                    Some(Ok(_)) => {}
                },
                writable = writable(pending_master.as_ref()), if self.pending.is_some() => {
                    self.write_pending(writable);
                }
                _ = self.feed.changed() => {}
                _ = self.changes.changed() => {
                    // Input for a session that ended has nowhere to go.
                    if !self.session.is_alive() {
                        self.pending = None;
                    }
                }
                _ = sleep_until(ready_deadline), if ready_deadline.is_some() => {
                    return Outcome::Close(frame::CLOSE_POLICY, "no READY frame");
                }
            }
        }
    }

    /// Writes more of the pending input once the terminal takes it.
    fn write_pending(&mut self, writable: std::io::Result<AsyncFdReadyGuard<'_, OwnedFd>>) {
        let (Ok(mut guard), Some((master, bytes, written))) = (writable, self.pending.as_mut())
        else {
            self.pending = None;
            return;
        };
        match guard.try_io(|_| term::write_nonblocking(master.get_ref(), &bytes[*written..])) {
            Ok(Ok(n)) => {
                *written += n;
                if *written >= bytes.len() {
                    self.pending = None;
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The terminal is gone: the input has nowhere to go.
            Ok(Err(_)) => self.pending = None,
            Err(_would_block) => {}
        }
    }

    fn on_frame(&mut self, daemon: &Daemon, bytes: Bytes) {
        match ClientFrame::parse(&bytes) {
            Ok(ClientFrame::Input(data)) => {
                self.session.count_input();
                if data.is_empty() {
                    return;
                }
                let Some(master) = self.session.master() else {
                    return;
                };
                let written = match term::write_nonblocking(master.get_ref(), data) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Err(_) => return,
                };
                if written < data.len() {
                    // Keep the rest; `bytes` still has the opcode in front.
                    self.pending = Some((master, bytes.slice(1..), written));
                }
            }
            Ok(ClientFrame::Resize { cols, rows }) => {
                if let Err(e) = daemon.resize_session(&self.session, rows.into(), cols.into()) {
                    tracing::debug!(session = %self.session.spec.id, error = %e, "resize frame ignored");
                }
            }
            Ok(ClientFrame::Ready) => self.ready = true,
            // Unknown or malformed frames are ignored, so newer clients keep working.
            Err(e) => {
                tracing::debug!(session = %self.session.spec.id, error = %e, "frame ignored")
            }
        }
    }

    /// Sends `frames` with one flush at the end (one write for a backlog, at once for a single
    /// frame); gives up when the client's feed overflows meanwhile, or when the send is still
    /// stuck a while after the session ended.
    async fn send_output(
        &mut self,
        socket: &mut WebSocket,
        frames: VecDeque<Bytes>,
    ) -> Result<(), Outcome> {
        let feed = &self.feed;
        let session = &self.session;
        let changes = &mut self.changes;
        let send = async {
            for frame in frames {
                socket.feed(Message::Binary(frame)).await?;
            }
            socket.flush().await
        };
        let overrun = async {
            loop {
                feed.changed().await;
                if feed.is_cut_off() {
                    return;
                }
            }
        };
        let stuck_after_end = async {
            let _ = changes.wait_for(|_| !session.is_alive()).await;
            tokio::time::sleep(SEND_WAIT_AFTER_END).await;
        };
        tokio::select! {
            biased;
            sent = send => sent.map_err(|_| Outcome::Gone),
            _ = overrun => Err(Outcome::Close(frame::CLOSE_TOO_SLOW, TOO_SLOW)),
            _ = stuck_after_end => Err(Outcome::Gone),
        }
    }

    /// Says goodbye: the exit frame and `exit:<code>`, or 1001 `session terminated`, or the
    /// close code the outcome carries; then waits briefly for the client's close.
    async fn finish(&mut self, mut socket: WebSocket, outcome: Outcome) {
        let (code, reason) = match outcome {
            Outcome::Gone => return,
            Outcome::Close(code, reason) => (code, reason.to_owned()),
            Outcome::Ended => {
                let (end_reason, exit_code) = {
                    let st = self.session.state();
                    (st.end_reason, st.exit_code)
                };
                match exit_code {
                    Some(code) if !end_reason.is_some_and(|r| r.terminated()) => {
                        let exit = frame::ServerFrame::Exit(code).encode();
                        let sent = tokio::time::timeout(
                            CLOSE_WAIT,
                            socket.send(Message::Binary(exit.into())),
                        )
                        .await;
                        if !matches!(sent, Ok(Ok(()))) {
                            return;
                        }
                        (1000, frame::exit_reason(code))
                    }
                    _ => (frame::CLOSE_TERMINATED, frame::TERMINATED_REASON.to_owned()),
                }
            }
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        if !matches!(
            tokio::time::timeout(CLOSE_WAIT, socket.send(close)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // Reading until the client's close means our close frame is not lost to a reset.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

async fn writable(master: Option<&Master>) -> std::io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
    match master {
        Some(master) => master.writable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
