//! Timestamps: the one place drover turns the system clock into text and back.
//!
//! Every time drover records (ledger entries, tags, image `created` fields) is
//! RFC 3339 in UTC with a `Z` suffix, so timestamps from different hosts sort
//! and compare as plain strings. The calendar arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days` (proleptic Gregorian, exact for any
//! `i64` day count we can meet), which keeps us free of a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;

/// Days from 0000-03-01 to 1970-01-01. Counting from March puts the leap day
/// at the end of the shifted year, which is what makes the formulas below
/// branch-free.
const EPOCH_SHIFT_DAYS: i64 = 719_468;

/// Days in a 400-year Gregorian cycle (an "era").
const DAYS_PER_ERA: i64 = 146_097;

/// Milliseconds since the Unix epoch (0 for a clock set before it): the
/// form deadlines and leases are kept in.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The current UTC time with millisecond precision, e.g.
/// `2026-11-22T02:11:23.456Z`.
pub fn now_rfc3339() -> String {
    let (secs, millis) = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        // A clock set before 1970 is wrong, but a wrong timestamp is better
        // than refusing to record the event it belongs to.
        Err(e) => {
            let d = e.duration();
            let whole = -(d.as_secs() as i64);
            match d.subsec_millis() {
                0 => (whole, 0),
                m => (whole - 1, 1000 - m),
            }
        }
    };
    format_rfc3339(secs, millis)
}

/// Format `secs` since the Unix epoch plus `millis` as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// `millis` of 1000 or more carries into the seconds rather than producing an
/// invalid field. Years outside 0000–9999 cannot be written in RFC 3339; they
/// are formatted with more digits (or a sign) instead of being clamped, so the
/// value is at least not silently wrong.
pub fn format_rfc3339(secs: i64, millis: u32) -> String {
    let secs = secs.saturating_add(i64::from(millis / 1000));
    let millis = millis % 1000;
    let days = secs.div_euclid(SECS_PER_DAY);
    let secs_of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
    )
}

/// Parse an RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`) into
/// whole seconds since the Unix epoch; a fraction is truncated.
///
/// Only the `Z` form is accepted: that is all drover writes, and accepting
/// offsets would invite comparing strings that do not sort as times. The `T`
/// and `Z` may be lowercase (RFC 3339 §5.6 allows it). A leap second (`:60`)
/// is accepted and lands on the first second of the next minute.
pub fn parse_rfc3339_secs(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;

    let rest = &b[19..];
    let rest = match rest.split_first() {
        Some((b'.', frac)) => {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            &frac[n..]
        }
        _ => rest,
    };
    if !matches!(rest, [b'Z' | b'z']) {
        return None;
    }

    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let days = days_from_civil(year, month as u32, day as u32);
    Some(days * SECS_PER_DAY + hour * 3600 + minute * 60 + second)
}

/// Nanoseconds since the Unix epoch, now (what log lines are stamped with).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Format nanoseconds since the Unix epoch as
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (fixed width, so it sorts as text).
pub fn format_rfc3339_nanos(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let mut s = format_rfc3339(secs, 0);
    s.truncate(s.len() - 4);
    format!("{s}{frac:09}Z")
}

/// Parse an RFC 3339 UTC timestamp (as [`parse_rfc3339_secs`]) into
/// nanoseconds since the Unix epoch, its fraction kept to the nanosecond.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    let secs = parse_rfc3339_secs(s)?;
    let frac = match s.as_bytes().get(19) {
        Some(b'.') => {
            let digits: Vec<u8> = s.as_bytes()[20..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .copied()
                .collect();
            let mut ns = 0i64;
            for i in 0..9 {
                ns = ns * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            ns
        }
        _ => 0,
    };
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

/// A fixed-width run of ASCII digits as a number.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + EPOCH_SHIFT_DAYS;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z.rem_euclid(DAYS_PER_ERA); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month 1–12, day 1–31) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seconds since epoch, the same instant as text) — checked against
    /// `date -u -d @<secs>`.
    const KNOWN: &[(i64, &str)] = &[
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.000Z"),
        (951_782_400, "2000-02-29T00:00:00.000Z"), // 2000 is a leap year (÷400)
        (951_868_800, "2000-03-01T00:00:00.000Z"),
        (1_078_099_199, "2004-02-29T23:59:59.000Z"),
        (4_107_499_200, "2100-02-28T12:00:00.000Z"),
        (4_107_542_400, "2100-03-01T00:00:00.000Z"), // 2100 is not (÷100)
        (1_709_164_800, "2024-02-29T00:00:00.000Z"),
        (1_798_761_599, "2026-12-31T23:59:59.000Z"),
        (1_795_314_683, "2026-11-22T02:31:23.000Z"),
        (253_402_300_799, "9999-12-31T23:59:59.000Z"),
        (-62_167_219_200, "0000-01-01T00:00:00.000Z"),
        (-2_208_988_800, "1900-01-01T00:00:00.000Z"),
        (-2_203_891_200, "1900-03-01T00:00:00.000Z"), // 1900 is not a leap year
    ];

    #[test]
    fn formats_known_instants() {
        for &(secs, text) in KNOWN {
            assert_eq!(format_rfc3339(secs, 0), text, "secs={secs}");
        }
    }

    #[test]
    fn parses_known_instants() {
        for &(secs, text) in KNOWN {
            assert_eq!(parse_rfc3339_secs(text), Some(secs), "{text}");
        }
    }

    #[test]
    fn milliseconds_are_zero_padded_and_carry() {
        assert_eq!(format_rfc3339(0, 7), "1970-01-01T00:00:00.007Z");
        assert_eq!(format_rfc3339(0, 456), "1970-01-01T00:00:00.456Z");
        assert_eq!(format_rfc3339(59, 1_250), "1970-01-01T00:01:00.250Z");
    }

    #[test]
    fn every_day_round_trips_across_leap_cycles() {
        // 1600-01-01 .. 2400-12-31 covers two full 400-year eras, both
        // century exceptions and the era boundary at 2000-03-01.
        let start = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        let mut expected = (1600, 1, 1);
        for days in start..=end {
            let got = civil_from_days(days);
            assert_eq!(got, expected, "day {days}");
            assert_eq!(days_from_civil(got.0, got.1, got.2), days);
            let (y, m, d) = expected;
            expected = if i64::from(d) < days_in_month(y, i64::from(m)) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn parse_accepts_fractions_lowercase_and_leap_seconds() {
        assert_eq!(parse_rfc3339_secs("1970-01-01T00:00:01.999Z"), Some(1));
        assert_eq!(parse_rfc3339_secs("1970-01-01T00:00:01.5Z"), Some(1));
        assert_eq!(
            parse_rfc3339_secs("1970-01-01T00:00:01.123456789Z"),
            Some(1)
        );
        assert_eq!(parse_rfc3339_secs("1970-01-01t00:00:01z"), Some(1));
        assert_eq!(
            parse_rfc3339_secs("2016-12-31T23:59:60Z"),
            parse_rfc3339_secs("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn parse_rejects_malformed_input() {
        for bad in [
            "",
            "1970-01-01",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00+00:00",
            "1970-01-01T00:00:00.Z",
            "1970-01-01T00:00:00.000ZZ",
            "1970-01-01 00:00:00Z",
            "1970/01/01T00:00:00Z",
            "1970-1-01T00:00:00Z",
            "197a-01-01T00:00:00Z",
            "+970-01-01T00:00:00Z",
            "1970-00-01T00:00:00Z",
            "1970-13-01T00:00:00Z",
            "1970-01-00T00:00:00Z",
            "1970-01-32T00:00:00Z",
            "1970-04-31T00:00:00Z",
            "2023-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // century, not a leap year
            "1970-01-01T24:00:00Z",
            "1970-01-01T00:60:00Z",
            "1970-01-01T00:00:61Z",
        ] {
            assert_eq!(parse_rfc3339_secs(bad), None, "{bad:?} parsed");
        }
        assert!(parse_rfc3339_secs("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339_secs("2000-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn now_is_well_formed_and_recent() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-22T02:11:23.456Z".len(), "{now}");
        assert!(now.ends_with('Z'));
        let secs = parse_rfc3339_secs(&now).expect("now parses");
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((sys - secs).abs() <= 2, "{now} vs {sys}");
    }

    #[test]
    fn text_order_is_time_order() {
        let a = format_rfc3339(1_700_000_000, 999);
        let b = format_rfc3339(1_700_000_001, 0);
        assert!(a < b);
    }
}
