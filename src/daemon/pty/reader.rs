//! The supervisor's read end of the terminal: a duplicate of the master descriptor, so that
//! it can leave the reactor without touching the master the clients write input to.
//!
//! While output trickles, the descriptor is registered with the reactor and read when it
//! becomes readable: one small read, one frame, at once. Under a flood that registration is
//! pure cost: the terminal wakes its waiters each time the kernel moves a few KiB into the line
//! discipline, and every wake-up became an epoll round trip and two context switches on a
//! parked worker, one per 4 KiB read, about a fifth of the daemon's CPU per MB. So once a read
//! fills a whole batch, the descriptor leaves the reactor and is read batch after batch (a read
//! that finds the terminal between two chunks waits in the kernel for the next one rather than
//! failing) until the terminal runs dry; then it is registered again, and epoll reports at
//! once anything that arrived in between.
//!
//! (Reading the flood on a blocking-pool thread, with the clients sending on the workers in
//! parallel, was measured too: 5 to 10% slower on two cores, because the sending then shares
//! the other core with the kernel's terminal worker and the writing program, which the reads
//! wait for.)

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::session::Session;
use super::term;
use crate::wire::pty::frame;

/// Output read in one go (one frame to the clients). A terminal read returns at most a few
/// KiB, so under a flood a batch is several reads and one frame; interactive output is one
/// small read and goes out at once. Far below [`FEED_LIMIT`](super::feed::FEED_LIMIT), so that
/// a client that keeps up is never cut off by a single batch.
const BATCH_LIMIT: usize = 64 << 10;
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub struct Reader {
    session: Arc<Session>,
    mode: Mode,
    /// Frames are split off this buffer and shared with the clients; once they have sent one
    /// its allocation is reused, so a steady flood does not allocate per batch.
    buf: BytesMut,
}

enum Mode {
    /// Registered with the reactor: read when it says so.
    Watched(AsyncFd<OwnedFd>),
    /// Out of the reactor: the last batch was full, so read again at once.
    Flooding(OwnedFd),
    /// The reactor would not take the descriptor back (out of memory or watches): read it
    /// every [`POLL_INTERVAL`] rather than leave the program blocked on a full terminal.
    Polled(OwnedFd),
    /// Finished (or failed): nothing more is read.
    Closed,
}

impl Reader {
    /// Reads `fd` (from [`watch`]) into `session`.
    pub fn new(session: Arc<Session>, fd: AsyncFd<OwnedFd>) -> Reader {
        Reader {
            session,
            mode: Mode::Watched(fd),
            buf: BytesMut::new(),
        }
    }

    /// Hands the session whatever output comes next; returns true once the terminal is
    /// finished (every process let go of it). Cancel-safe: the only waits come before the
    /// first read and after the output is handed over.
    pub async fn read(&mut self) -> bool {
        let buf = &mut self.buf;
        let outcome = match &self.mode {
            Mode::Watched(fd) => match fd.readable().await {
                Ok(mut guard) => {
                    let outcome = fill(fd.get_ref(), buf);
                    if outcome == Fill::Dry {
                        guard.clear_ready();
                    }
                    outcome
                }
                Err(_) => Fill::Finished,
            },
            Mode::Flooding(fd) => fill(fd, buf),
            Mode::Polled(fd) => {
                tokio::time::sleep(POLL_INTERVAL).await;
                fill(fd, buf)
            }
            Mode::Closed => std::future::pending().await,
        };
        if buf.len() > 1 {
            self.session.push_output(buf.split().freeze());
        }
        self.mode = match (std::mem::replace(&mut self.mode, Mode::Closed), outcome) {
            (_, Fill::Finished) => Mode::Closed,
            (Mode::Watched(fd), Fill::Full) => Mode::Flooding(fd.into_inner()),
            (Mode::Polled(fd), Fill::Full) => Mode::Flooding(fd),
            (Mode::Flooding(fd), Fill::Dry) => self.watch_or_poll(fd, false),
            (Mode::Polled(fd), Fill::Dry) => self.watch_or_poll(fd, true),
            (mode, _) => mode,
        };
        if outcome == Fill::Full {
            // More is waiting. The clients just woken sit in this worker's LIFO slot, which no
            // other worker may steal: let them send before reading on, or a flood would
            // overrun them without their being slow.
            tokio::task::yield_now().await;
        }
        matches!(self.mode, Mode::Closed)
    }

    fn watch_or_poll(&self, fd: OwnedFd, polled: bool) -> Mode {
        match register(fd) {
            Ok(fd) => Mode::Watched(fd),
            Err((fd, e)) => {
                if !polled {
                    tracing::warn!(session = %self.session.spec.id, error = %e, "cannot watch the terminal again; polling it every {POLL_INTERVAL:?} instead");
                }
                Mode::Polled(fd)
            }
        }
    }
}

/// Registers `fd` (non-blocking) for readability.
pub fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    register(fd).map_err(|(_, e)| e)
}

fn register(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, (OwnedFd, io::Error)> {
    // SAFETY: the OwnedFd keeps the descriptor open for as long as the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// The batch is full: more is probably waiting.
    Full,
    /// The terminal has nothing more for now.
    Dry,
    /// End of the terminal (EIO: every process let go of it) or a failure.
    Finished,
}

/// Reads into `buf` (cleared first) one output frame, the opcode then up to [`BATCH_LIMIT`]
/// bytes, until it is full or the terminal has nothing more.
fn fill(fd: &impl AsRawFd, buf: &mut BytesMut) -> Fill {
    buf.clear();
    buf.reserve(1 + BATCH_LIMIT);
    buf.put_u8(frame::DATA);
    while buf.len() <= BATCH_LIMIT {
        let room = 1 + BATCH_LIMIT - buf.len();
        match term::read_appending(fd, buf, room) {
            Ok(0) => return Fill::Finished,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::Dry,
            Err(_) => return Fill::Finished,
        }
    }
    Fill::Full
}
