//! Serde helpers shared by every component's config section: durations written as `"30s"`
//! (zero refused), optional durations, counts of at least one. A leaf: it imports nothing of
//! ours, so any stage can own its section without importing `config`.

use serde::Deserialize;

/// Durations written as `"30s"`, `"2m"`, `"1h 30m"` (humantime).
pub mod duration {
    use serde::Deserialize;
    use std::time::Duration;

    /// Parses a duration; zero is refused (every duration here is a timeout or an interval).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration `{s}`: {e}")))?;
        if parsed.is_zero() {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is zero; give a duration such as \"200ms\" or \"5s\""
            )));
        }
        Ok(parsed)
    }
}

/// Optional durations (`"30s"`), zero refused like [`duration`].
pub mod duration_opt {
    use std::time::Duration;

    /// Parses an optional duration.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// A count that must be at least 1 (a queue or buffer of zero would hold nothing).
pub fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}
