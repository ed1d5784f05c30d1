//! Capture file names: a UTC timestamp, a sequence number and the session
//! id made safe for any file system.

use std::time::{SystemTime, UNIX_EPOCH};

use super::MAX_ID_CHARS;

/// `session_id` as a file-name part: only `[A-Za-z0-9._-]` (anything else
/// becomes `_`), at most [`MAX_ID_CHARS`], never empty. It always follows a
/// timestamp prefix, so it can never form `.`, `..` or a hidden file.
pub(super) fn sanitize_id(session_id: &str) -> String {
    let id: String = session_id
        .chars()
        .take(MAX_ID_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "session".into()
    } else {
        id
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC), so names sort by start time. Hand-written
/// (Hinnant's `civil_from_days`) rather than adding a date crate for one
/// file-name part.
pub(super) fn utc_stamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
