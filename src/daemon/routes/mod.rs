//! HTTP routes, one module per area.

pub mod files;
pub mod processes;
pub mod pty;
pub mod system;

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Parses a JSON body, with errors a caller can act on. Content-Type is not required: the
/// Tensorlake clients do not always send one.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("a JSON request body is required"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// The `Idempotency-Key` header, if present and usable.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(crate::wire::IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
            if key.is_empty() || key.len() > 256 {
                return Err(ApiError::invalid(
                    "Idempotency-Key must be 1 to 256 characters",
                ));
            }
            Ok(Some(key))
        }
    }
}

/// Parses `key=value` pairs of a raw query string (repeated keys kept), percent-decoded.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_and_keep_repeats() {
        let pairs = query_pairs(Some("label=a%3Db&label=c=d&x=%zz&y=1+2&z=%41"));
        assert_eq!(
            pairs,
            vec![
                ("label".into(), "a=b".into()),
                ("label".into(), "c=d".into()),
                ("x".into(), "%zz".into()),
                ("y".into(), "1 2".into()),
                ("z".into(), "A".into()),
            ]
        );
    }
}
