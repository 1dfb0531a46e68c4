//! RFC 3339 timestamps for JSON (`at`, `started`), UTC with millisecond precision.

/// Serde helpers for `SystemTime` as RFC 3339.
pub mod rfc3339 {
    use std::time::SystemTime;

    /// Serialises as `2026-11-23T10:54:17.123Z`.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
}

/// Serde helpers for `Option<SystemTime>` as RFC 3339 (or null).
pub mod rfc3339_opt {
    use std::time::SystemTime;

    /// Serialises as `2026-11-23T10:54:17.123Z`, or null.
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
}

/// Serde helpers for `SystemTime` as RFC 3339, both ways (for records kept as JSON).
pub mod rfc3339_serde {
    use std::time::SystemTime;

    use serde::Deserialize;

    pub use super::rfc3339::serialize;

    /// Parses `2026-11-23T10:54:17.123Z` (any precision).
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}
