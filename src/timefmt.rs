//! Dates as mail and logs write them, without a calendar dependency: RFC 3339 for records,
//! RFC 5322 for the Received header, `YYYY-MM-DD` for daily file names. Always UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's civil_from_days.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn parts(t: SystemTime) -> (i64, i64) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    (secs.div_euclid(86_400), secs.rem_euclid(86_400))
}

/// `2026-11-24`
pub fn date(t: SystemTime) -> String {
    let (days, _) = parts(t);
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-11-24T13:05:09Z`
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `Tue, 24 Nov 2026 13:05:09 +0000`
pub fn rfc5322(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = parts(t);
    let (y, m, d) = civil(days);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parses `2026-11-24` or an RFC 3339 time.
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if s.len() == 10 {
        return humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok();
    }
    humantime::parse_rfc3339_weak(s).ok()
}

/// Parses what an operator types for `--since`/`--until`: a date or RFC 3339 time as
/// [`parse`] does, `today` or `yesterday` (midnight UTC), or an age such as `1h`, `30m`,
/// `7d` (that long before `now`).
pub fn parse_when(s: &str, now: SystemTime) -> Option<SystemTime> {
    let s = s.trim();
    let midnight = |t: SystemTime| parse(&date(t));
    match s.to_ascii_lowercase().as_str() {
        "now" => return Some(now),
        "today" => return midnight(now),
        "yesterday" => return midnight(now.checked_sub(std::time::Duration::from_secs(86_400))?),
        _ => {}
    }
    if let Some(t) = parse(s) {
        return Some(t);
    }
    let age = s.strip_suffix(" ago").unwrap_or(s);
    humantime::parse_duration(age)
        .ok()
        .and_then(|d| now.checked_sub(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_525_509);
        assert_eq!(date(t), "2026-11-24");
        assert_eq!(rfc5322(t), "Tue, 24 Nov 2026 13:05:09 +0000");
        assert_eq!(rfc3339(t), "2026-11-24T13:05:09Z");
        assert_eq!(parse("2026-11-24").map(date).as_deref(), Some("2026-11-24"));
    }

    #[test]
    fn operator_times_relative_to_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_525_509);
        let at = |s: &str| parse_when(s, now).map(rfc3339);
        assert_eq!(at("1h").as_deref(), Some("2026-11-24T12:05:09Z"));
        assert_eq!(at("2d ago").as_deref(), Some("2026-11-22T13:05:09Z"));
        assert_eq!(at("today").as_deref(), Some("2026-11-24T00:00:00Z"));
        assert_eq!(at("Yesterday").as_deref(), Some("2026-11-23T00:00:00Z"));
        assert_eq!(at("2026-11-01").as_deref(), Some("2026-11-01T00:00:00Z"));
        assert_eq!(at("soon"), None);
    }
}
