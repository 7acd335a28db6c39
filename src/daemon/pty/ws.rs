//! One attached WebSocket client of a session.
//!
//! The client reads the session's scrollback ring through its own cursor: nothing is queued
//! per client, so a slow client costs no memory. It is cut off (close 1013) when the output it
//! has not read yet is overwritten, i.e. when it falls a whole ring behind. Output is held until
//! the client's READY frame; a client that lets more than [`READY_LIMIT`] bytes of output pass
//! without sending READY is cut off (close 1008). Input goes straight to the terminal; while
//! the terminal does not take it, the client's next frames wait (backpressure on that client
//! alone) but its output keeps flowing.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use tokio::io::unix::AsyncFdReadyGuard;
use tokio::sync::watch;

use super::super::Daemon;
use super::session::{Lagged, Master, Session};
use super::term;
use crate::wire::pty::frame::{self, ClientFrame};
use crate::wire::{EventKind, now_ms};

/// Largest output frame payload.
const MAX_FRAME: usize = 128 << 10;
/// Output a client may let pass before it has sent READY.
pub const READY_LIMIT: u64 = 1 << 20;
/// Largest input message a client may send.
pub const MAX_MESSAGE: usize = 1 << 20;
/// A client of an ended session that has not sent READY after this long is closed.
const READY_WAIT_AFTER_END: Duration = Duration::from_secs(30);
/// A send still blocked this long after the session ended is abandoned.
const SEND_WAIT_AFTER_END: Duration = Duration::from_secs(5);
/// How long to wait for the client's answer to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
    let _attached = Attached::new(daemon.clone(), session.clone());
    let mut client = Client {
        cursor: session.replay_start(),
        attach_end: session.output_bounds().1,
        ready: false,
        pending: None,
        out_rx: session.subscribe_output(),
        changes: session.subscribe_changes(),
        session,
    };
    let outcome = client.run(&daemon, &mut socket).await;
    client.finish(socket, outcome).await;
}

/// Counts the client in for as long as it is attached.
struct Attached {
    daemon: Arc<Daemon>,
    session: Arc<Session>,
}

impl Attached {
    fn new(daemon: Arc<Daemon>, session: Arc<Session>) -> Attached {
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
        Attached { daemon, session }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
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
    /// Next output offset to send.
    cursor: u64,
    /// Output end when the client attached (for the READY limit).
    attach_end: u64,
    ready: bool,
    /// Input the terminal has not taken yet: the master, the bytes, how much was written.
    pending: Option<(Master, Bytes, usize)>,
    out_rx: watch::Receiver<u64>,
    changes: watch::Receiver<u64>,
}

impl Client {
    async fn run(&mut self, daemon: &Daemon, socket: &mut WebSocket) -> Outcome {
        let mut ended_since: Option<tokio::time::Instant> = None;
        loop {
            // Seen before reading: an ended session has all of its output in the ring.
            let ended = !self.session.is_alive();
            if self.ready {
                self.out_rx.borrow_and_update();
                match self
                    .session
                    .read_frame(&mut self.cursor, MAX_FRAME, frame::DATA)
                {
                    Ok(Some(data)) => match self.send_output(socket, Message::Binary(data)).await {
                        Ok(()) => continue,
                        Err(outcome) => return outcome,
                    },
                    Err(Lagged) => {
                        return Outcome::Close(
                            frame::CLOSE_TOO_SLOW,
                            "client too slow: output was lost; reattach to resume",
                        );
                    }
                    Ok(None) if ended => return Outcome::Ended,
                    Ok(None) => {}
                }
            } else {
                let (_, end) = self.session.output_bounds();
                if end.saturating_sub(self.attach_end) > READY_LIMIT {
                    return Outcome::Close(
                        frame::CLOSE_POLICY,
                        "no READY frame before 1 MiB of output",
                    );
                }
            }
            let ready_deadline = match (ended, self.ready) {
                (true, false) => Some(
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
                _ = self.out_rx.changed() => {}
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
            Ok(ClientFrame::Ready) => {
                if !self.ready {
                    self.ready = true;
                    // Scrollback that was overwritten while waiting for READY is not the
                    // client's fault: start at what is still there.
                    self.cursor = self.cursor.max(self.session.output_bounds().0);
                }
            }
            // Unknown or malformed frames are ignored, so newer clients keep working.
            Err(e) => {
                tracing::debug!(session = %self.session.spec.id, error = %e, "frame ignored")
            }
        }
    }

    /// Sends one output frame; gives up when the client falls a whole ring behind meanwhile,
    /// or when the send is still stuck a while after the session ended.
    async fn send_output(
        &mut self,
        socket: &mut WebSocket,
        message: Message,
    ) -> Result<(), Outcome> {
        let cursor = self.cursor;
        let session = &self.session;
        let out_rx = &mut self.out_rx;
        let changes = &mut self.changes;
        let overrun = async {
            loop {
                if out_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if session.output_bounds().0 > cursor {
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
            sent = socket.send(message) => sent.map_err(|_| Outcome::Gone),
            _ = overrun => Err(Outcome::Close(
                frame::CLOSE_TOO_SLOW,
                "client too slow: output was lost; reattach to resume",
            )),
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
