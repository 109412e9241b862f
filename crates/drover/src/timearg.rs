//! The one parser for points in time the CLI takes (`--since`, `--until`):
//! a duration back from now (`30m`, `1h`, `2d`, `1d12h`) or a timestamp
//! (`2026-12-01`, `2026-12-01T10:00Z`, `2026-12-01T10:00:00.5+02:00`, full
//! RFC 3339). Used as a clap `value_parser`.

use drover_core::{clock, grammar};

/// A point in time, milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Time {
    /// The RFC 3339 form drover stores (`YYYY-MM-DDTHH:MM:SS.mmmZ`), which
    /// sorts as the times it names.
    pub fn rfc3339(self) -> String {
        clock::format_rfc3339(self.0.div_euclid(1000), self.0.rem_euclid(1000) as u32)
    }
}

/// clap's value parser: a duration ago, or a timestamp.
pub fn parse(s: &str) -> Result<Time, String> {
    parse_at(s, clock::now_ms())
}

fn parse_at(s: &str, now_ms: i64) -> Result<Time, String> {
    let s = s.trim();
    if s.as_bytes().get(4) == Some(&b'-') {
        return timestamp(s).ok_or_else(|| {
            format!(
                "{s:?} is not a timestamp (expected RFC 3339, e.g. 2026-12-01, \
                 2026-12-01T10:00Z or 2026-12-01T10:00:00+02:00)"
            )
        });
    }
    let ago = duration_ms(s).map_err(|_| {
        format!(
            "{s:?} is neither a duration (e.g. 30m, 1h, 2d, 1h30m) nor a timestamp \
             (e.g. 2026-12-01T10:00Z)"
        )
    })?;
    Ok(Time(now_ms.saturating_sub(ago)))
}

/// drover's duration grammar, with days in front (`2d`, `1d12h`); also
/// what `token create --expires` takes.
pub fn duration_ms(s: &str) -> Result<i64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (days, rest) = match s[digits..].strip_prefix('d') {
        Some(rest) if digits > 0 => (s[..digits].parse::<i64>().map_err(|e| e.to_string())?, rest),
        _ => (0, s),
    };
    let rest_ms = if rest.is_empty() && days > 0 {
        0
    } else {
        i64::try_from(grammar::duration_ms(rest)?).map_err(|e| e.to_string())?
    };
    Ok(days.saturating_mul(86_400_000).saturating_add(rest_ms))
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH:MM]`; no zone means UTC.
fn timestamp(s: &str) -> Option<Time> {
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, "00:00"),
    };
    if date.len() != 10 {
        return None;
    }
    // Split the zone off the end: Z, or +HH:MM / -HH:MM.
    let (time, offset_min) = if let Some(t) = time.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let zone = &time[i + 1..];
        let (h, m) = zone
            .split_once(':')
            .unwrap_or((zone.get(..2)?, zone.get(2..)?));
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        let sign = if &time[i..=i] == "-" { -1 } else { 1 };
        (&time[..i], sign * (h * 60 + m))
    } else {
        (time, 0)
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) => {
            (hms, frac)
        }
        Some(_) => return None,
        None => (time, ""),
    };
    let hms = match hms.len() {
        5 => format!("{hms}:00"),
        8 => hms.to_string(),
        _ => return None,
    };
    let secs = clock::parse_rfc3339_secs(&format!("{date}T{hms}Z"))?;
    let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some(Time((secs - offset_min * 60) * 1000 + millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_119_200_000; // 2026-12-01T10:00:00Z

    fn at(s: &str) -> String {
        parse_at(s, NOW).unwrap().rfc3339()
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(at("1h"), "2026-12-01T09:00:00.000Z");
        assert_eq!(at("30m"), "2026-12-01T09:30:00.000Z");
        assert_eq!(at("1h30m"), "2026-12-01T08:30:00.000Z");
        assert_eq!(at("2d"), "2026-11-29T10:00:00.000Z");
        assert_eq!(at("1d12h"), "2026-11-29T22:00:00.000Z");
        assert_eq!(at("0"), "2026-12-01T10:00:00.000Z");
    }

    #[test]
    fn timestamps_in_every_common_form() {
        assert_eq!(at("2026-12-01T10:00Z"), "2026-12-01T10:00:00.000Z");
        assert_eq!(at("2026-12-01T10:00:05Z"), "2026-12-01T10:00:05.000Z");
        assert_eq!(at("2026-12-01T10:00:05.25Z"), "2026-12-01T10:00:05.250Z");
        assert_eq!(at("2026-12-01T12:00:00+02:00"), "2026-12-01T10:00:00.000Z");
        assert_eq!(at("2026-12-01T05:30-04:30"), "2026-12-01T10:00:00.000Z");
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00.000Z");
        assert_eq!(at("2026-12-01 10:00"), "2026-12-01T10:00:00.000Z");
    }

    #[test]
    fn nonsense_is_refused_with_examples() {
        for bad in [
            "",
            "1x",
            "yesterday",
            "2026-13-01",
            "2026-12-01T25:00Z",
            "2026-12-01T10Z",
            "h1",
        ] {
            let e = parse_at(bad, NOW).unwrap_err();
            assert!(e.contains("e.g."), "{bad}: {e}");
        }
    }
}
