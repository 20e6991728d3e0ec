//! Parsing of the ProviderPlugin limit strings (`memory: 64Mi`, `deadline: 1m30s`).

use std::time::Duration;

/// A limit string that does not parse; the schema pattern normally rejects these earlier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    /// `spec.limits.memory` is not `<n>`, `<n>Ki`, `<n>Mi` or `<n>Gi`.
    #[error("spec.limits.memory {0:?} is not a quantity like 64Mi (allowed suffixes: Ki, Mi, Gi)")]
    Memory(String),
    /// `spec.limits.deadline` is not a duration.
    #[error("spec.limits.deadline {0:?} is not a duration like 30s, 2m or 1m30s (units: ms, s, m, h)")]
    Deadline(String),
}

/// Bytes of a memory quantity: `1024`, `64Ki`, `64Mi`, `1Gi`.
pub fn parse_memory(s: &str) -> Result<u64, LimitError> {
    let err = || LimitError::Memory(s.to_owned());
    let (digits, factor) = match s.find(|c: char| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some(i) => {
            let factor = match &s[i..] {
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                _ => return Err(err()),
            };
            (&s[..i], factor)
        }
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    match n.checked_mul(factor) {
        Some(0) | None => Err(err()),
        Some(v) => Ok(v),
    }
}

/// A Go-style duration made of `<n><unit>` parts: `500ms`, `30s`, `2m`, `1h`, `1m30s`.
pub fn parse_deadline(s: &str) -> Result<Duration, LimitError> {
    let err = || LimitError::Deadline(s.to_owned());
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits_end == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| err())?;
        rest = &rest[digits_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_end] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(part).ok_or_else(err)?;
        rest = &rest[unit_end..];
    }
    if total.is_zero() {
        return Err(err());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("64Ki"), Ok(64 * 1024));
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("2Gi"), Ok(2 << 30));
        for bad in [
            "",
            "Mi",
            "64M",
            "64mi",
            "0",
            "0Mi",
            "-1Mi",
            "1.5Gi",
            "99999999999999999999Gi",
        ] {
            assert_eq!(parse_memory(bad), Err(LimitError::Memory(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_memory("64M").expect_err("invalid").to_string(),
            "spec.limits.memory \"64M\" is not a quantity like 64Mi (allowed suffixes: Ki, Mi, Gi)"
        );
    }

    #[test]
    fn deadlines() {
        assert_eq!(parse_deadline("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_deadline("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_deadline("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_deadline("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_deadline("1h1ms"), Ok(Duration::from_millis(3_600_001)));
        for bad in ["", "30", "s", "1d", "1.5s", "0s", "30 s", "-1s"] {
            assert_eq!(
                parse_deadline(bad),
                Err(LimitError::Deadline(bad.into())),
                "{bad}"
            );
        }
    }
}
