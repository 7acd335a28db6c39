//! The scrollback ring of one session: the last `capacity` bytes of terminal output, addressed
//! by absolute offsets (bytes since the session started), so each client keeps only a cursor.
//! Offset `o` lives at `buf[o % buf.len()]`: while filling, `buf.len()` is the number of bytes
//! so far (no wrap yet); once full it is the capacity.
//! A client whose cursor falls behind the oldest retained byte has lost output and is cut off;
//! that makes the ring the only per-session output buffer, whatever the number of clients.
//!
//! Memory grows with the output actually produced (doubling up to `capacity`), so an idle
//! session with a prompt on screen costs a few KiB, not the full ring.

/// Smallest allocation once the first byte arrives.
const FIRST_ALLOCATION: usize = 4 << 10;

#[derive(Debug)]
pub struct Ring {
    buf: Vec<u8>,
    capacity: usize,
    /// Offset one past the newest byte (= total bytes ever pushed).
    end: u64,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many bytes were appended to the output buffer; the cursor moved past them.
    Data(usize),
    /// The cursor is at the newest byte.
    Empty,
    /// Bytes after the cursor were already overwritten.
    Lagged,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: Vec::new(),
            capacity: capacity.max(1),
            end: 0,
        }
    }

    /// Offset one past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the oldest retained byte.
    pub fn start(&self) -> u64 {
        self.end - self.end.min(self.buf.len() as u64)
    }

    /// Bytes allocated right now.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    pub fn push(&mut self, mut data: &[u8]) {
        if self.buf.len() < self.capacity {
            // Still filling: grow the allocation geometrically, never past the capacity.
            let n = data.len().min(self.capacity - self.buf.len());
            let needed = self.buf.len() + n;
            if needed > self.buf.capacity() {
                let target = needed
                    .max(self.buf.capacity() * 2)
                    .max(FIRST_ALLOCATION)
                    .min(self.capacity);
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.buf.extend_from_slice(&data[..n]);
            self.end += n as u64;
            data = &data[n..];
            if data.is_empty() {
                return;
            }
        }
        // Full: overwrite the oldest bytes. More than a whole ring at once keeps only its tail.
        let cap = self.capacity;
        if data.len() > cap {
            let skip = data.len() - cap;
            self.end += skip as u64;
            data = &data[skip..];
        }
        let pos = (self.end % cap as u64) as usize;
        let first = data.len().min(cap - pos);
        self.buf[pos..pos + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.end += data.len() as u64;
    }

    /// Appends up to `max` bytes from `*cursor` to `out` and advances the cursor.
    pub fn read_into(&self, cursor: &mut u64, max: usize, out: &mut bytes::BytesMut) -> Read {
        let start = self.start();
        if *cursor < start {
            return Read::Lagged;
        }
        if *cursor >= self.end || max == 0 {
            return Read::Empty;
        }
        let n = ((self.end - *cursor) as usize).min(max);
        let len = self.buf.len();
        let pos = (*cursor % len as u64) as usize;
        let first = n.min(len - pos);
        out.extend_from_slice(&self.buf[pos..pos + first]);
        out.extend_from_slice(&self.buf[..n - first]);
        *cursor += n as u64;
        Read::Data(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(ring: &Ring, from: u64) -> (Read, Vec<u8>) {
        let mut cursor = from;
        let mut out = bytes::BytesMut::new();
        let r = ring.read_into(&mut cursor, usize::MAX, &mut out);
        (r, out.to_vec())
    }

    #[test]
    fn keeps_everything_until_full_and_grows_lazily() {
        let mut ring = Ring::new(1 << 20);
        assert_eq!(ring.allocated(), 0);
        ring.push(b"hello ");
        ring.push(b"world");
        assert!(ring.allocated() <= FIRST_ALLOCATION);
        assert_eq!((ring.start(), ring.end()), (0, 11));
        assert_eq!(all(&ring, 0), (Read::Data(11), b"hello world".to_vec()));
        assert_eq!(all(&ring, 6), (Read::Data(5), b"world".to_vec()));
        assert_eq!(all(&ring, 11).0, Read::Empty);
    }

    #[test]
    fn wraps_and_reports_lagging_cursors() {
        let mut ring = Ring::new(8);
        ring.push(b"abcdef");
        ring.push(b"ghij");
        assert_eq!((ring.start(), ring.end()), (2, 10));
        assert_eq!(all(&ring, 2), (Read::Data(8), b"cdefghij".to_vec()));
        assert_eq!(all(&ring, 1).0, Read::Lagged);
        ring.push(b"klmnopqrstuvwxyz0123");
        assert_eq!(ring.end(), 30);
        assert_eq!(all(&ring, 22), (Read::Data(8), b"wxyz0123".to_vec()));
        assert_eq!(ring.allocated(), 8);
    }

    #[test]
    fn bounded_reads_advance_the_cursor_across_the_seam() {
        let mut ring = Ring::new(5);
        for chunk in [&b"12"[..], b"345", b"67"] {
            ring.push(chunk);
        }
        let mut cursor = ring.start();
        let mut out = bytes::BytesMut::new();
        assert_eq!(ring.read_into(&mut cursor, 2, &mut out), Read::Data(2));
        assert_eq!(ring.read_into(&mut cursor, 9, &mut out), Read::Data(3));
        assert_eq!(&out[..], b"34567");
        assert_eq!(ring.read_into(&mut cursor, 9, &mut out), Read::Empty);
    }

    #[test]
    fn matches_a_naive_model_for_any_push_sizes() {
        let mut ring = Ring::new(37);
        let mut model: Vec<u8> = Vec::new();
        let mut x = 7u32;
        for i in 0..500 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (x >> 16) as usize % 90;
            let chunk: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            ring.push(&chunk);
            model.extend_from_slice(&chunk);
            let keep = model.len().min(37);
            let (r, got) = all(&ring, ring.start());
            assert_eq!(&got[..], &model[model.len() - keep..]);
            assert_eq!(r == Read::Empty, keep == 0);
        }
    }
}
