//! Wall-clock helpers shared by the server and the worker: times are kept
//! as milliseconds since the Unix epoch and shown as RFC 3339 (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, e.g. `2026-11-25T01:29:40.123Z`.
pub fn rfc3339(ms: i64) -> String {
    // RFC 3339 has four-digit years: later times are written as the last
    // millisecond of 9999 rather than not at all.
    const LAST: i64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses what [`rfc3339`] wrote back into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}
