//! Server-sent events, written by hand: a follow stream of a chatty process emits millions of
//! events, so many events go into one body chunk instead of one chunk per event.

use bytes::{Bytes, BytesMut};

use super::output::Line;

/// Response headers shared by every SSE route.
pub fn headers() -> [(axum::http::header::HeaderName, &'static str); 3] {
    use axum::http::header;
    [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ]
}

/// Appends one event. `event` None = a data-only event (the `/run` stream).
pub fn write_event(buf: &mut BytesMut, event: Option<&str>, id: Option<u64>, data: &[u8]) {
    if let Some(event) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(event.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    if let Some(id) = id {
        buf.extend_from_slice(b"id: ");
        buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        buf.extend_from_slice(b"\n");
    }
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\n\n");
}

/// Appends one output line as `{"line","timestamp","stream"}`, written straight into `buf`:
/// a busy follow stream formats millions of these a second.
pub fn write_line(buf: &mut BytesMut, event: Option<&str>, line: &Line) {
    buf.reserve(line.text.len() + 128);
    if let Some(event) = event {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(event.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    buf.extend_from_slice(b"id: ");
    buf.extend_from_slice(itoa::Buffer::new().format(line.seq).as_bytes());
    buf.extend_from_slice(b"\ndata: {\"line\":");
    write_json_string(buf, &line.text);
    buf.extend_from_slice(b",\"timestamp\":");
    buf.extend_from_slice(itoa::Buffer::new().format(line.timestamp).as_bytes());
    buf.extend_from_slice(b",\"stream\":\"");
    buf.extend_from_slice(line.stream.as_str().as_bytes());
    buf.extend_from_slice(b"\"}\n\n");
}

/// A comment line: ignored by every SSE client, used for keep-alives and notes.
pub fn write_comment(buf: &mut BytesMut, text: &str) {
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(text.as_bytes());
    buf.extend_from_slice(b"\n\n");
}

pub fn take(buf: &mut BytesMut) -> Bytes {
    buf.split().freeze()
}

/// Writes `text` as a JSON string, decoding invalid UTF-8 lossily (U+FFFD).
pub fn write_json_string(out: &mut BytesMut, text: &[u8]) {
    let clean = !text
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b >= 0x80);
    if clean {
        // The common case (ASCII without escapes) needs no encoder.
        out.extend_from_slice(b"\"");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\"");
    } else {
        let decoded = String::from_utf8_lossy(text);
        let encoded = serde_json::to_vec(decoded.as_ref()).unwrap_or_default();
        out.extend_from_slice(&encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::StreamKind;

    #[test]
    fn line_events_are_valid_json_for_any_bytes() {
        for text in [
            &b"plain"[..],
            b"quote \" and \\ and \t",
            b"bad \xff utf8",
            "é".as_bytes(),
        ] {
            let mut buf = BytesMut::new();
            let line = Line {
                seq: 7,
                timestamp: 5,
                stream: StreamKind::Stderr,
                text: Bytes::copy_from_slice(text),
            };
            write_line(&mut buf, Some("output"), &line);
            let s = String::from_utf8(buf.to_vec()).unwrap();
            assert!(s.starts_with("event: output\nid: 7\ndata: "), "{s}");
            let json = s
                .trim_end()
                .strip_prefix("event: output\nid: 7\ndata: ")
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["stream"], "stderr");
            assert_eq!(v["timestamp"], 5);
            assert_eq!(v["line"], String::from_utf8_lossy(text).as_ref());
        }
    }
}
