//! The one timestamp format of the product: RFC 3339, UTC, milliseconds (`2026-11-25T10:00:00.000Z`).
//! Storage keeps Unix milliseconds; this converts at the edges.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats Unix milliseconds as RFC 3339 UTC with exactly three fractional digits.
pub fn format_millis(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => String::from("invalid-time"),
    }
}

/// Parses an RFC 3339 timestamp (any offset) to Unix milliseconds.
pub fn parse_millis(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_780_000_000_123;
        assert_eq!(parse_millis(&format_millis(ms)), Some(ms));
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_millis("2026-11-25T10:00:00+01:00"),
            parse_millis("2026-11-25T09:00:00Z")
        );
        assert_eq!(parse_millis("yesterday"), None);
    }
}
