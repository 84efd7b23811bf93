//! Durations as people write them: whole numbers each followed by a unit,
//! largest unit first and each unit at most once (`90s`, `10m`, `1h30m`).
//! Which units are allowed is the caller's: pipeline files take `h`, `m`
//! and `s` ([`PIPELINE_UNITS`]); the flags of `drover-coordinator` and
//! `drover-agent` also take days and milliseconds ([`FLAG_UNITS`]). Pure; zero and huge values parse, and the
//! caller judges them.

use std::time::Duration;

/// A unit's suffix and length, largest first.
pub type Units = [(&'static str, Duration)];

pub const PIPELINE_UNITS: &Units =
    &[("h", Duration::from_secs(3600)), ("m", Duration::from_secs(60)), ("s", Duration::from_secs(1))];

pub const FLAG_UNITS: &Units = &[
    ("d", Duration::from_secs(24 * 3600)),
    ("h", Duration::from_secs(3600)),
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
    ("ms", Duration::from_millis(1)),
];

/// Parses `text` with the given units, or says nothing: the caller knows
/// what the text was for and words the error.
pub fn parse(text: &str, units: &Units) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    // The units not yet used, largest first, so that `30m1h` and `1m1m` fail.
    let mut units = units;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let letters = rest[digits..].find(|c: char| !c.is_ascii_alphabetic()).map_or(rest.len(), |n| digits + n);
        if digits == 0 || letters == digits {
            return None;
        }
        let number: u32 = rest[..digits].parse().ok()?;
        let at = units.iter().position(|&(u, _)| u == &rest[digits..letters])?;
        total = total.checked_add(units[at].1.checked_mul(number)?)?;
        units = &units[at + 1..];
        rest = &rest[letters..];
    }
    Some(total)
}

/// Writes `d` in the same grammar, for messages: the largest units first,
/// zero parts left out, whole seconds (`10m`, `1h30m`, `45s`); below a
/// second, milliseconds (`250ms`). `parse(format(d), FLAG_UNITS)` gives `d`
/// back to the second.
pub fn format(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 24 * 3600), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Writes `d` with `units` only, largest first and zero parts left out,
/// so that it reads back with the same units: `48h` in [`PIPELINE_UNITS`]
/// where [`format`] says `2d`. What is below the smallest unit is dropped;
/// less than it is `0` of it (`0s`).
pub fn format_in(d: Duration, units: &Units) -> String {
    let mut rest = d.as_nanos();
    let mut out = String::new();
    for &(unit, len) in units {
        let len = len.as_nanos();
        if len > 0 && rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    if out.is_empty() {
        out = format!("0{}", units.last().map_or("s", |&(unit, _)| unit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_written_for_messages() {
        let s = Duration::from_secs;
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (s(45), "45s"),
            (Duration::from_millis(90_500), "1m30s"),
            (s(600), "10m"),
            (s(5400), "1h30m"),
            (s(3605), "1h5s"),
            (s(30 * 24 * 3600 + 60), "30d1m"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want, "{d:?}");
            assert_eq!(parse(want, FLAG_UNITS).map(|p| p.as_secs()), Some(d.as_secs()), "{want}");
        }
    }

    #[test]
    fn durations_written_in_a_unit_set() {
        let s = Duration::from_secs;
        let cases: &[(Duration, &Units, &str)] = &[
            (s(48 * 3600), PIPELINE_UNITS, "48h"),
            (s(48 * 3600), FLAG_UNITS, "2d"),
            (s(5400), PIPELINE_UNITS, "1h30m"),
            (s(90), PIPELINE_UNITS, "1m30s"),
            (Duration::from_millis(1500), PIPELINE_UNITS, "1s"),
            (Duration::from_millis(1500), FLAG_UNITS, "1s500ms"),
            (Duration::from_millis(500), PIPELINE_UNITS, "0s"),
        ];
        for (d, units, want) in cases {
            assert_eq!(format_in(*d, units), *want, "{d:?}");
        }
    }

    #[test]
    fn durations_by_unit_set() {
        let s = Duration::from_secs;
        let ok: &[(&str, &Units, Duration)] = &[
            ("90s", PIPELINE_UNITS, s(90)),
            ("10m", PIPELINE_UNITS, s(600)),
            ("1h", PIPELINE_UNITS, s(3600)),
            ("1h30m", PIPELINE_UNITS, s(5400)),
            ("1h0m5s", PIPELINE_UNITS, s(3605)),
            ("2m30s", PIPELINE_UNITS, s(150)),
            ("30d", FLAG_UNITS, s(30 * 24 * 3600)),
            ("1d12h", FLAG_UNITS, s(36 * 3600)),
            ("200ms", FLAG_UNITS, Duration::from_millis(200)),
            ("1s500ms", FLAG_UNITS, Duration::from_millis(1500)),
            ("0s", FLAG_UNITS, s(0)),
        ];
        for (text, units, want) in ok {
            assert_eq!(parse(text, units), Some(*want), "{text}");
        }
        let bad: &[(&str, &Units)] = &[
            ("", FLAG_UNITS),
            ("10", FLAG_UNITS),
            ("m", FLAG_UNITS),
            ("10 m", FLAG_UNITS),
            ("1.5h", FLAG_UNITS),
            ("30m1h", FLAG_UNITS),
            ("1m1m", FLAG_UNITS),
            ("500ms1s", FLAG_UNITS),
            ("5d", PIPELINE_UNITS),
            ("200ms", PIPELINE_UNITS),
            ("-1m", FLAG_UNITS),
            ("+1m", FLAG_UNITS),
            ("1H", FLAG_UNITS),
            ("10x", FLAG_UNITS),
            ("99999999999999999999s", FLAG_UNITS),
        ];
        for (text, units) in bad {
            assert_eq!(parse(text, units), None, "{text:?}");
        }
    }
}
