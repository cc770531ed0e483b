//! Durations as resources spell them: `30s`, `5m`, `1h30m`, `1d12h30m` — whole numbers of
//! days, hours, minutes and seconds, largest unit first, each unit at most once. Workflows
//! write their timeouts and `ttlAfterCompletion` this way; the control plane and the agent
//! read them with [`parse`].

use std::time::Duration;

/// Text that is not a duration, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: {why} (write e.g. 30s, 5m, 1h30m or 1d)")]
pub struct DurationError {
    /// The text read.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Reads `text` as a duration. Zero (`0s`) is a duration; callers that need a positive one
/// say so themselves.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |why: String| DurationError {
        text: text.to_string(),
        why,
    };
    if text.is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut seconds: u64 = 0;
    // Index into UNITS of the next unit allowed: each unit must be smaller than the last.
    let mut next_unit = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(fail(format!("expected a number at {rest:?}")));
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit = chars
            .next()
            .ok_or_else(|| fail(format!("{number} needs a unit: d, h, m or s")))?;
        let Some(offset) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
            let why = if UNITS.iter().any(|(u, _)| *u == unit) {
                format!(
                    "{unit:?} comes after a unit no larger than it; write units largest first, each once"
                )
            } else {
                format!("{unit:?} is not a unit: d, h, m or s")
            };
            return Err(fail(why));
        };
        let (_, length) = UNITS[next_unit + offset];
        next_unit += offset + 1;
        let amount = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(length))
            .and_then(|n| n.checked_add(seconds))
            .ok_or_else(|| fail("it is too long".into()))?;
        seconds = amount;
        rest = chars.as_str();
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse(text).unwrap().as_secs()
    }

    #[test]
    fn units_add_up_largest_first() {
        assert_eq!(secs("30s"), 30);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h30m"), 5_400);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("1d12h30m"), 131_400);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(
            secs("90m"),
            5_400,
            "a unit may hold more than the next one up"
        );
        assert_eq!(secs("0s"), 0);
        assert_eq!(secs("001m"), 60);
    }

    #[test]
    fn malformed_text_says_what_is_wrong() {
        let why = |text: &str| parse(text).unwrap_err().to_string();
        assert!(why("").contains("it is empty"), "{}", why(""));
        assert!(why("30").contains("30 needs a unit"), "{}", why("30"));
        assert!(why("5x").contains("'x' is not a unit"), "{}", why("5x"));
        assert!(why("30m1h").contains("largest first"), "{}", why("30m1h"));
        assert!(why("1m1m").contains("largest first"), "{}", why("1m1m"));
        assert!(why("h").contains("expected a number"), "{}", why("h"));
        assert!(
            why("1h 30m").contains("expected a number at \" 30m\""),
            "{}",
            why("1h 30m")
        );
        assert!(why("-5m").contains("expected a number"), "{}", why("-5m"));
        assert!(why("1.5h").contains("'.' is not a unit"), "{}", why("1.5h"));
        assert!(
            why("99999999999999999999d").contains("too long"),
            "{}",
            why("99999999999999999999d")
        );
        assert!(why("213503982334602d").contains("too long"));
    }
}
