//! Drift checks: a committed file must be exactly what the code generates (or its source).
#![allow(dead_code)]

/// Panics unless `committed` equals `expected`, naming `what` and the first line that differs,
/// then saying how to fix it (`fix`).
pub fn assert_same(what: &str, committed: &[u8], expected: &[u8], fix: &str) {
    if committed == expected {
        return;
    }
    let (committed, expected) = (lines(committed), lines(expected));
    let line = committed
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.len().min(expected.len()));
    panic!("{what} (first difference at line {}); {fix}", line + 1);
}

fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split(|&b| b == b'\n').collect()
}
