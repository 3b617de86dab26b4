//! Wall-clock time as the store keeps it: unix milliseconds, shown as RFC 3339.

use chrono::{DateTime, SecondsFormat};

/// Milliseconds since the unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats unix milliseconds as an RFC 3339 UTC timestamp, e.g.
/// `2026-11-23T09:05:01.042+00:00`.
pub(crate) fn rfc3339(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, false),
        // Beyond chrono's range (about 262,000 years): no stored time is.
        None => format!("{ms} ms after the unix epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123+00:00");
        assert_eq!(rfc3339(1_795_431_901_042), "2026-11-23T11:05:01.042+00:00");
    }
}
