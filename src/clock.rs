//! Wall-clock helpers. The queue stores Unix seconds; a clock before 1970 is
//! treated as 0 rather than a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stored time back to a SystemTime; a value too large for the platform
/// (a corrupt envelope) saturates instead of panicking.
pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(253_402_300_799))
}

/// `t` within 1970..=9999: httpdate (and so lettre's `Date`) panics outside
/// it, and a clock that far off is better clamped than fatal.
pub fn clamp(t: SystemTime) -> SystemTime {
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    t.clamp(UNIX_EPOCH, max)
}

/// An RFC 5322 date (`Mon, 23 Nov 2026 17:32:45 +0000`) for Received headers.
/// httpdate produces the RFC 7231 form, which differs only in its obsolete `GMT`.
pub fn rfc5322(t: SystemTime) -> String {
    let s = httpdate::fmt_http_date(clamp(t));
    match s.strip_suffix(" GMT") {
        Some(base) => format!("{base} +0000"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        assert_eq!(rfc5322(from_unix(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322(from_unix(u64::MAX)),
            "Fri, 31 Dec 9999 23:59:59 +0000"
        );
    }
}
