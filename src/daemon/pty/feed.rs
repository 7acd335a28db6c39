//! The output queue of one attached client. The session's reader hands each batch of terminal
//! output to every client's feed as a shared [`Bytes`] frame (no copy per client); the client's
//! task takes everything queued at once and sends it. A feed holds at most [`FEED_LIMIT`] bytes:
//! a client that lets more pile up is cut off (its queue is freed at once), so a slow or absent
//! reader costs bounded memory and never slows the session.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Output a client may have queued and not yet handed to its socket. Also the output a client
/// may let pass before it sends READY (everything since the attach is queued until then).
pub const FEED_LIMIT: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Feed {
    queue: Mutex<Queue>,
    /// Woken on every push, on the cut-off and on the end.
    notify: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames (opcode included), oldest first.
    frames: VecDeque<Bytes>,
    /// Payload bytes in `frames`.
    bytes: usize,
    cut_off: bool,
    /// The session's output is complete: nothing follows what is queued.
    ended: bool,
}

/// What [`Feed::take`] found.
#[derive(Debug)]
pub enum Taken {
    Frames(VecDeque<Bytes>),
    /// Nothing queued yet.
    Empty,
    /// Nothing queued and nothing will come.
    Ended,
    /// The client fell [`FEED_LIMIT`] behind: output was lost.
    CutOff,
}

impl Feed {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` (the opcode byte then the output); returns false when the client is (now)
    /// cut off and should no longer be fed.
    pub fn push(&self, frame: &Bytes) -> bool {
        let mut queue = self.queue();
        if queue.cut_off {
            return false;
        }
        let payload = frame.len() - 1;
        if queue.bytes + payload > FEED_LIMIT {
            queue.cut_off = true;
            // Freed now, not when the client's task gets round to it.
            queue.frames = VecDeque::new();
            queue.bytes = 0;
        } else {
            queue.frames.push_back(frame.clone());
            queue.bytes += payload;
        }
        let fed = !queue.cut_off;
        drop(queue);
        self.notify.notify_one();
        fed
    }

    /// Marks the output complete.
    pub fn end(&self) {
        self.queue().ended = true;
        self.notify.notify_one();
    }

    /// Everything queued, at once.
    pub fn take(&self) -> Taken {
        let mut queue = self.queue();
        if queue.cut_off {
            return Taken::CutOff;
        }
        if queue.frames.is_empty() {
            return if queue.ended {
                Taken::Ended
            } else {
                Taken::Empty
            };
        }
        queue.bytes = 0;
        Taken::Frames(std::mem::take(&mut queue.frames))
    }

    pub fn is_cut_off(&self) -> bool {
        self.queue().cut_off
    }

    /// Payload bytes queued.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue().bytes
    }

    /// Resolves after the next push, cut-off or end (or at once if one happened since the last
    /// wait: the permit of [`Notify::notify_one`] is kept).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: usize) -> Bytes {
        Bytes::from(vec![0u8; payload + 1])
    }

    #[test]
    fn queues_in_order_and_cuts_off_past_the_limit() {
        let feed = Feed::default();
        assert!(matches!(feed.take(), Taken::Empty));
        assert!(feed.push(&Bytes::from_static(b"\0ab")));
        assert!(feed.push(&Bytes::from_static(b"\0c")));
        match feed.take() {
            Taken::Frames(f) => assert_eq!(f, [&b"\0ab"[..], &b"\0c"[..]]),
            other => panic!("{other:?}"),
        }
        assert_eq!(feed.queued(), 0);
        assert!(feed.push(&frame(FEED_LIMIT)));
        assert!(!feed.push(&frame(1)), "one byte past the limit");
        assert!(feed.is_cut_off());
        assert_eq!(feed.queued(), 0, "a cut-off feed holds nothing");
        assert!(matches!(feed.take(), Taken::CutOff));
        assert!(!feed.push(&frame(1)));
    }

    #[test]
    fn the_end_comes_after_what_is_queued() {
        let feed = Feed::default();
        feed.push(&frame(3));
        feed.end();
        assert!(matches!(feed.take(), Taken::Frames(_)));
        assert!(matches!(feed.take(), Taken::Ended));
    }
}
