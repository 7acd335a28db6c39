//! Captured output of one process: both streams in one sequence, each stream with a bounded
//! retention (its first bytes and its last bytes are kept, the middle is dropped).
//!
//! Writers (the pipe readers) push complete lines under one lock, so a line's sequence number
//! and its place in the store are assigned together: a follower reading "everything after seq N"
//! can never miss a line that gets a smaller number later. Followers pull: they keep a cursor and
//! wait on a `Notify`, so a slow follower costs nothing but its cursor, never blocks the child
//! and never makes the store grow. A follower that falls behind the retained tail skips ahead.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wire::{OutputStats, StreamKind};

/// Bookkeeping bytes charged per retained line on top of its text, so the limit bounds memory
/// and not just text.
const LINE_OVERHEAD: u64 = 64;

/// One captured line, without its trailing newline.
#[derive(Debug, Clone)]
pub struct Line {
    pub seq: u64,
    pub timestamp: i64,
    pub stream: StreamKind,
    pub text: Bytes,
}

impl Line {
    fn cost(&self) -> u64 {
        self.text.len() as u64 + LINE_OVERHEAD
    }
}

/// Retention for one stream: a head that fills once and is kept, and a tail ring.
#[derive(Debug, Default)]
struct StreamBuf {
    head: Vec<Line>,
    head_cost: u64,
    head_full: bool,
    tail: VecDeque<Line>,
    tail_cost: u64,
    /// Highest sequence number ever evicted from the tail (0 = none).
    evicted_upto: u64,
    total_bytes: u64,
    closed: bool,
}

impl StreamBuf {
    fn push(&mut self, line: Line, half_limit: u64) {
        self.total_bytes += line.text.len() as u64 + 1;
        let cost = line.cost();
        if !self.head_full {
            if self.head_cost + cost <= half_limit {
                self.head_cost += cost;
                self.head.push(line);
                return;
            }
            self.head_full = true;
        }
        self.tail_cost += cost;
        self.tail.push_back(line);
        while self.tail_cost > half_limit {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_cost -= old.cost();
            self.evicted_upto = old.seq;
        }
    }

    fn truncated(&self) -> bool {
        self.evicted_upto != 0
    }

    /// Retained lines with `seq > after`, in order, calling `f` until it returns false.
    fn for_each_after(&self, after: u64, mut f: impl FnMut(&Line) -> bool) {
        let start = self.head.partition_point(|l| l.seq <= after);
        for line in &self.head[start..] {
            if !f(line) {
                return;
            }
        }
        let start = self.tail.partition_point(|l| l.seq <= after);
        for line in self.tail.range(start..) {
            if !f(line) {
                return;
            }
        }
    }

    fn first_after(&self, after: u64) -> Option<u64> {
        let mut first = None;
        self.for_each_after(after, |l| {
            first = Some(l.seq);
            false
        });
        first
    }

    /// True when lines this stream had after `after` were evicted before the reader saw them.
    fn missed_after(&self, after: u64) -> bool {
        self.evicted_upto > after && self.head.last().is_none_or(|l| l.seq <= self.evicted_upto)
    }
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    Only(StreamKind),
    Both,
}

impl Selector {
    fn wants(self, stream: StreamKind) -> bool {
        match self {
            Selector::Only(s) => s == stream,
            Selector::Both => true,
        }
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<Line>,
    /// Lines were dropped between the cursor and the first line returned.
    pub skipped: bool,
    /// Every wanted stream is closed and the reader has seen everything: the end.
    pub finished: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    stdout: StreamBuf,
    stderr: StreamBuf,
}

impl Inner {
    fn buf(&self, stream: StreamKind) -> &StreamBuf {
        match stream {
            StreamKind::Stdout => &self.stdout,
            StreamKind::Stderr => &self.stderr,
        }
    }
    fn buf_mut(&mut self, stream: StreamKind) -> &mut StreamBuf {
        match stream {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        }
    }
}

/// The output store of one process.
#[derive(Debug)]
pub struct Output {
    inner: Mutex<Inner>,
    /// Half of the per-stream limit: the head gets one half, the tail the other.
    half_limit: u64,
    changed: Notify,
}

impl Output {
    /// A store keeping at most `limit_bytes` (plus per-line bookkeeping) per stream.
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            half_limit: (limit_bytes / 2).max(1),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends complete lines read from `stream` at `timestamp`.
    pub fn push_lines(
        &self,
        stream: StreamKind,
        timestamp: i64,
        texts: impl IntoIterator<Item = Bytes>,
    ) {
        {
            let mut inner = self.lock();
            for text in texts {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                let half = self.half_limit;
                inner.buf_mut(stream).push(
                    Line {
                        seq,
                        timestamp,
                        stream,
                        text,
                    },
                    half,
                );
            }
        }
        self.changed.notify_waiters();
    }

    /// Marks `stream` as finished (pipe closed or never captured).
    pub fn close(&self, stream: StreamKind) {
        self.lock().buf_mut(stream).closed = true;
        self.changed.notify_waiters();
    }

    /// Re-opens both streams for the next run of a managed process; sequence numbers go on.
    pub fn reopen(&self) {
        let mut inner = self.lock();
        inner.stdout.closed = false;
        inner.stderr.closed = false;
    }

    pub fn is_closed(&self, selector: Selector) -> bool {
        let inner = self.lock();
        [StreamKind::Stdout, StreamKind::Stderr]
            .into_iter()
            .filter(|s| selector.wants(*s))
            .all(|s| inner.buf(s).closed)
    }

    /// Counters for ProcessInfo.
    pub fn stats(&self) -> OutputStats {
        let inner = self.lock();
        OutputStats {
            stdout_bytes: inner.stdout.total_bytes,
            stderr_bytes: inner.stderr.total_bytes,
            truncated: inner.stdout.truncated() || inner.stderr.truncated(),
            last_seq: inner.next_seq - 1,
        }
    }

    /// Up to `max_bytes` (at least one line) of retained lines with `seq > after`, in order.
    pub fn read_after(&self, selector: Selector, after: u64, max_bytes: usize) -> Batch {
        let inner = self.lock();
        let streams: Vec<StreamKind> = [StreamKind::Stdout, StreamKind::Stderr]
            .into_iter()
            .filter(|s| selector.wants(*s))
            .collect();
        let mut batch = Batch {
            skipped: streams.iter().any(|s| inner.buf(*s).missed_after(after)),
            ..Batch::default()
        };
        let mut bytes = 0usize;
        match streams.as_slice() {
            [one] => inner.buf(*one).for_each_after(after, |l| {
                bytes += l.text.len();
                batch.lines.push(l.clone());
                bytes < max_bytes
            }),
            _ => {
                // Merge the two streams by sequence number.
                let mut cursor = after;
                loop {
                    let next_out = inner.stdout.first_after(cursor);
                    let next_err = inner.stderr.first_after(cursor);
                    let (stream, seq) = match (next_out, next_err) {
                        (None, None) => break,
                        (Some(o), None) => (StreamKind::Stdout, o),
                        (None, Some(e)) => (StreamKind::Stderr, e),
                        (Some(o), Some(e)) if o < e => (StreamKind::Stdout, o),
                        (_, Some(e)) => (StreamKind::Stderr, e),
                    };
                    // Take the run of lines of `stream` up to the other stream's next line.
                    let limit = match stream {
                        StreamKind::Stdout => next_err.unwrap_or(u64::MAX),
                        StreamKind::Stderr => next_out.unwrap_or(u64::MAX),
                    };
                    let mut more = true;
                    inner.buf(stream).for_each_after(seq - 1, |l| {
                        if l.seq > limit {
                            return false;
                        }
                        cursor = l.seq;
                        bytes += l.text.len();
                        batch.lines.push(l.clone());
                        more = bytes < max_bytes;
                        more
                    });
                    if !more {
                        break;
                    }
                }
            }
        }
        batch.finished = batch.lines.is_empty() && streams.iter().all(|s| inner.buf(*s).closed);
        batch
    }

    /// Every retained line of the selected streams (for the non-follow routes).
    pub fn snapshot(&self, selector: Selector) -> (Vec<Line>, bool) {
        let truncated = {
            let inner = self.lock();
            [StreamKind::Stdout, StreamKind::Stderr]
                .into_iter()
                .filter(|s| selector.wants(*s))
                .any(|s| inner.buf(s).truncated())
        };
        let mut lines = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.read_after(selector, after, usize::MAX);
            let Some(last) = batch.lines.last() else {
                break;
            };
            after = last.seq;
            lines.extend(batch.lines);
        }
        (lines, truncated)
    }

    /// Waits until something changes. Create the future with [`Output::changed`] *before*
    /// checking the store, then await it, so no wake-up is lost in between.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// Splits a pipe's byte stream into lines. Bytes after the last newline are carried into the
/// next read; a carried partial line longer than `max_line` is emitted as a line of its own so a
/// child that never writes a newline cannot grow memory.
#[derive(Debug)]
pub struct LineSplitter {
    carry: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            carry: Vec::new(),
            max_line,
        }
    }

    /// Feeds one read; returns the complete lines it finished.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Bytes> {
        let mut lines = Vec::new();
        match memchr::memrchr(b'\n', data) {
            None => {
                self.carry.extend_from_slice(data);
            }
            Some(last_nl) => {
                // One allocation per read: the lines are slices of it.
                let chunk = if self.carry.is_empty() {
                    Bytes::copy_from_slice(&data[..last_nl])
                } else {
                    self.carry.extend_from_slice(&data[..last_nl]);
                    Bytes::from(std::mem::take(&mut self.carry))
                };
                let mut start = 0;
                for nl in memchr::memchr_iter(b'\n', &chunk) {
                    lines.push(chunk.slice(start..nl));
                    start = nl + 1;
                }
                lines.push(chunk.slice(start..));
                self.carry.extend_from_slice(&data[last_nl + 1..]);
            }
        }
        while self.carry.len() > self.max_line {
            let rest = self.carry.split_off(self.max_line);
            lines.push(Bytes::from(std::mem::replace(&mut self.carry, rest)));
        }
        lines
    }

    /// The unterminated last line at end of stream, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.carry.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.carry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn splitter_handles_partial_and_long_lines() {
        let mut s = LineSplitter::new(8);
        assert!(s.feed(b"ab").is_empty());
        let lines = s.feed(b"c\nde\nf");
        assert_eq!(lines, vec![Bytes::from("abc"), Bytes::from("de")]);
        assert_eq!(s.feed(b"0123456789"), vec![Bytes::from("f0123456")]);
        assert_eq!(s.finish(), Some(Bytes::from("789")));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn retention_keeps_head_and_tail_and_says_truncated() {
        let out = Output::new(2 * (LINE_OVERHEAD + 2) * 3);
        for i in 0..100 {
            out.push_lines(StreamKind::Stdout, 0, [Bytes::from(format!("{i:02}"))]);
        }
        let (lines, truncated) = out.snapshot(Selector::Only(StreamKind::Stdout));
        assert!(truncated);
        assert_eq!(texts(&lines), vec!["00", "01", "02", "97", "98", "99"]);
        assert!(out.stats().truncated);
        assert_eq!(out.stats().stdout_bytes, 300);
    }

    #[test]
    fn merged_read_follows_sequence_and_resumes_exactly() {
        let out = Output::new(1 << 20);
        out.push_lines(
            StreamKind::Stdout,
            1,
            [Bytes::from("o1"), Bytes::from("o2")],
        );
        out.push_lines(StreamKind::Stderr, 2, [Bytes::from("e1")]);
        out.push_lines(StreamKind::Stdout, 3, [Bytes::from("o3")]);
        let all = out.read_after(Selector::Both, 0, usize::MAX);
        assert_eq!(texts(&all.lines), vec!["o1", "o2", "e1", "o3"]);
        let seqs: Vec<u64> = all.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        let rest = out.read_after(Selector::Both, 2, usize::MAX);
        assert_eq!(texts(&rest.lines), vec!["e1", "o3"]);
        let small = out.read_after(Selector::Both, 0, 1);
        assert_eq!(small.lines.len(), 1);
        let err = out.read_after(Selector::Only(StreamKind::Stderr), 0, usize::MAX);
        assert_eq!(texts(&err.lines), vec!["e1"]);
        assert!(!err.finished);
        out.close(StreamKind::Stderr);
        assert!(
            out.read_after(Selector::Only(StreamKind::Stderr), 3, usize::MAX)
                .finished
        );
        assert!(!out.read_after(Selector::Both, 4, usize::MAX).finished);
    }

    #[test]
    fn a_reader_behind_the_tail_is_told_it_skipped() {
        let out = Output::new(2 * (LINE_OVERHEAD + 1) * 2);
        for i in 0..10 {
            out.push_lines(StreamKind::Stdout, 0, [Bytes::from(format!("{i}"))]);
        }
        let batch = out.read_after(Selector::Both, 2, usize::MAX);
        assert!(batch.skipped);
        assert_eq!(texts(&batch.lines), vec!["8", "9"]);
        let caught_up = out.read_after(Selector::Both, 8, usize::MAX);
        assert!(!caught_up.skipped);
    }
}
