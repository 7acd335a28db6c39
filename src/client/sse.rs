//! A small server-sent-events parser over a byte stream.

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};

/// One event as sent: `event:`, `id:` and the joined `data:` lines. Comments are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<u64>,
    pub data: String,
}

/// Incremental parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = find_blank_line(&self.buf)?;
            let block = self.buf.split_to(end.0);
            self.buf.advance(end.1);
            let text = String::from_utf8_lossy(&block);
            let mut event = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                // CRLF endings: `lines()` leaves the `\r` of the block's last line.
                let line = line.strip_suffix('\r').unwrap_or(line);
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "" => {} // a comment
                    "event" => event.event = Some(value.to_owned()),
                    "id" => event.id = value.trim().parse().ok(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if data.is_empty() && event.event.is_none() {
                continue; // comment-only block (keep-alive)
            }
            event.data = data.join("\n");
            return Some(event);
        }
    }
}

/// Position of the first blank line: (end of the block, length of the separator).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if buf[i] == b'\n' && buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, 3));
        }
        i += 1;
    }
    None
}

/// Turns a byte stream into a stream of events.
pub fn events<S, E>(bytes: S) -> impl Stream<Item = Result<SseEvent, E>>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    futures_util::stream::unfold(
        (bytes, SseParser::default(), false),
        |(mut bytes, mut parser, ended)| async move {
            loop {
                if let Some(event) = parser.next_event() {
                    return Some((Ok(event), (bytes, parser, ended)));
                }
                if ended {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => parser.feed(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, parser, true))),
                    None => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks_and_skips_comments() {
        let mut p = SseParser::default();
        p.feed(b": keep-alive\n\nevent: output\nid: 3\nda");
        assert_eq!(p.next_event(), None);
        p.feed(b"ta: {\"a\":1}\n\ndata: x\ndata: y\r\n\r\n");
        assert_eq!(
            p.next_event(),
            Some(SseEvent {
                event: Some("output".into()),
                id: Some(3),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(
            p.next_event(),
            Some(SseEvent {
                event: None,
                id: None,
                data: "x\ny".into()
            })
        );
        assert_eq!(p.next_event(), None);
    }
}
