//! Durations ("90s", "15m", "8h") and sizes ("256MiB", "20GiB") as written in the config.

use std::time::Duration;

/// The longest duration a config may give: 100 years. Far beyond any sensible timeout,
/// and far enough below the limits of `Instant` that `now + d` can never overflow (a
/// `handshake_timeout` near jiff's maximum made every admin connection panic).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A positive duration such as `90s`, `15m`, `8h`, `1h30m`, at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        s.trim().parse().map_err(|_| format!("{s:?} is not a duration (write e.g. \"90s\", \"15m\", \"8h\")"))?;
    if d.is_negative() || d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    match Duration::try_from(d) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => Err(format!("{s:?} is too long (at most 876000h, 100 years)")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// A size in bytes such as `512`, `64KiB`, `256MiB`, `20GiB`, `1TiB` (also kB/MB/GB/TB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (write e.g. \"256MiB\", \"20GiB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{s:?} must be larger than zero")),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        // Regression (fuzz_config): near jiff's maximum, `Instant::now() + d` panicked.
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        assert!(parse_duration("876001h").unwrap_err().contains("too long"));
        assert!(parse_duration("2562047788015215h").unwrap_err().contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert!(parse_size("0MiB").is_err());
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
        assert!(parse_size("lots").is_err());
    }
}
