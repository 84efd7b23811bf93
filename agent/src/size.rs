//! Sizes in bytes as flags take them (`--min-free-space 1GiB`) and as
//! messages show them, in powers of 1024.

/// The units, largest first, with their factors.
const UNITS: &[(&str, u64)] = &[("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];

/// Parses a whole number of bytes with an optional unit: `0`, `4096`,
/// `512MiB`, `10GiB`, `1TiB` (also `K`, `M`, `G`, `T`, and `B` for bytes).
pub fn parse(text: &str) -> Result<u64, String> {
    let err = || {
        format!(
            "{text:?} is not a size: write a whole number of bytes, optionally with KiB, MiB, GiB or TiB (512MiB, 10GiB)"
        )
    };
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits == 0 {
        return Err(err());
    }
    let number: u64 = text[..digits].parse().map_err(|_| err())?;
    let factor = match &text[digits..] {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return Err(err()),
    };
    number.checked_mul(factor).ok_or_else(err)
}

/// Shows a size in the largest unit it reaches, with one decimal:
/// `10.0 MiB`, `1.5 GiB`, `512 bytes`.
pub fn show(bytes: u64) -> String {
    for (unit, factor) in UNITS {
        if bytes >= *factor {
            return format!("{:.1} {unit}", bytes as f64 / *factor as f64);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_show() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("10B", 10),
            ("1K", 1024),
            ("512MiB", 512 << 20),
            ("10GiB", 10 << 30),
            ("1T", 1 << 40),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(*want), "{text}");
        }
        for bad in ["", "MiB", "1.5GiB", "-1", "10 GiB", "10gb", "10GB", "99999999999999999999", "20000000TiB"] {
            assert!(parse(bad).unwrap_err().contains("is not a size"), "{bad}");
        }
        assert_eq!(show(512), "512 bytes");
        assert_eq!(show(10 << 20), "10.0 MiB");
        assert_eq!(show(3 << 29), "1.5 GiB");
    }
}
