//! Durations as written in the config: `"250ms"`, `"30s"`, `"5m"`, `"1h"`,
//! and compounds such as `"1m30s"`.

use std::time::Duration;

/// Units, longest suffix first so that `ms` is not read as `m`.
const UNITS: [(&str, u64); 4] = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)];

/// Parses a duration string into a [`Duration`]; the error says what is
/// wrong and what is accepted.
///
/// Grammar: one or more `<integer><unit>` parts, units `h`, `m`, `s`, `ms`,
/// largest first, each unit at most once (`"1h30m"`, `"1m30s"`, `"1s500ms"`).
/// A bare number is refused: `"30"` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HELP: &str = "use e.g. \"250ms\", \"30s\", \"5m\", \"1h\" or \"1m30s\"";
    if text.is_empty() {
        return Err(format!("empty duration; {HELP}"));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}; {HELP}"
            ));
        }
        let (num, tail) = rest.split_at(digits);
        let Some((rank, (unit, ms_per))) = UNITS
            .iter()
            .enumerate()
            .find(|(_, (u, _))| tail.starts_with(u))
        else {
            return Err(format!(
                "invalid duration {text:?}: missing or unknown unit after {num}; {HELP}"
            ));
        };
        // Order h < m < s < ms; `UNITS` lists ms first for suffix matching.
        let order = if rank == 0 { 3 } else { rank - 1 };
        if last_rank.is_some_and(|r| order <= r) {
            return Err(format!("invalid duration {text:?}: units must go from largest to smallest, each once; {HELP}"));
        }
        last_rank = Some(order);
        let value: u64 = num
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        total_ms = value
            .checked_mul(*ms_per)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = &tail[unit.len()..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Renders a duration the way the config writes it: `"1m30s"`, `"250ms"`,
/// `"0s"`; `parse_duration(&format_duration(d))` gives back `d` to the
/// millisecond.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= per {
            out.push_str(&format!("{}{unit}", ms / per));
            ms %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_compounds() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h0m5s"), Ok(Duration::from_secs(3605)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn formats_round_trip() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (90_000, "1m30s"),
            (3_600_500, "1h500ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let err = |s: &str| parse_duration(s).err().unwrap_or_default();
        assert!(err("").starts_with("empty duration"));
        assert!(err("30").contains("missing or unknown unit after 30"));
        assert!(err("10 s").contains("missing or unknown unit"));
        assert!(err("5d").contains("missing or unknown unit"));
        assert!(err("s").contains("expected a number"));
        assert!(err("-1s").contains("expected a number"));
        assert!(err("1.5s").contains("missing or unknown unit after 1"));
        assert!(err("30s1m").contains("largest to smallest"));
        assert!(err("1s1s").contains("largest to smallest"));
        assert!(err("99999999999999999999s").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
    }
}
