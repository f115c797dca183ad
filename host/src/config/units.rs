//! Human-friendly quantities in the team file: byte sizes (`64MiB`) and
//! durations (`1m30s`). Both also accept a plain integer (bytes, seconds).

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A byte count written as `65536`, `64KiB`, `64MiB`, `1GiB`, `10MB` or `1.5GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// A wall-clock duration written as `30`, `30s`, `500ms`, `5m`, `1h` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

const SIZE_HINT: &str = "a size such as 65536, 512KiB, 64MiB or 1GiB";
const DURATION_HINT: &str = "a duration such as 30, 30s, 500ms, 5m or 1h30m";

/// Parses a byte size; see [`ByteSize`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not {SIZE_HINT}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit; write {SIZE_HINT}")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a duration; see [`HumanDuration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let invalid = || format!("`{text}` is not {DURATION_HINT}");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Accepts an unsigned integer or a string for `parse`.
struct IntOrText<F> {
    parse: F,
    expecting: &'static str,
}

impl<'de, T, F: Fn(&str) -> Result<T, String>> Visitor<'de> for IntOrText<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        (self.parse)(&value.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        if value < 0 {
            return Err(E::custom(format!(
                "{value} is negative; expected {}",
                self.expecting
            )));
        }
        self.visit_u64(value as u64)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        (self.parse)(value).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(IntOrText {
                parse: parse_size,
                expecting: SIZE_HINT,
            })
            .map(ByteSize)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(IntOrText {
                parse: parse_duration,
                expecting: DURATION_HINT,
            })
            .map(HumanDuration)
    }
}

/// Counts such as fuel: an integer, or a string with `_` separators (`10_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(IntOrText {
                parse: |text: &str| {
                    text.trim().replace('_', "").parse::<u64>().map_err(|_| {
                        format!("`{text}` is not a whole number such as 1000000 or 1_000_000")
                    })
                },
                expecting: "a whole number such as 1000000",
            })
            .map(Count)
    }
}

/// Formats bytes the way the docs write them: `64 MiB`, `512 KiB`, `100 B`.
pub fn format_size(bytes: u64) -> String {
    let (number, unit) = scale_bytes(bytes);
    format!("{number} {}", ["B", "KiB", "MiB", "GiB"][unit])
}

/// `bytes` in the largest binary unit (1024-based) it reaches: the number,
/// whole or to one decimal, and the unit (0 bytes, 1 Ki, 2 Mi, 3 Gi). Every
/// size a person reads is written from this; only the unit names differ.
pub fn scale_bytes(bytes: u64) -> (String, usize) {
    for unit in (1..=3).rev() {
        let size = 1u64 << (10 * unit);
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return match value.fract() == 0.0 {
                true => (format!("{value}"), unit),
                false => (format!("{value:.1}"), unit),
            };
        }
    }
    (bytes.to_string(), 0)
}

/// A duration rounded to whole seconds: `0s`, `42s`, `1m5s`, `1h2m3s`.
pub fn format_duration(duration: Duration) -> String {
    let total = (duration.as_millis() + 500) / 1000;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("64 parsecs").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(10 << 20), "10 MiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 minutes").is_err());
    }
}
