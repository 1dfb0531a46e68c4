//! Normalising caller IDs: national and international formats, `00`/`011` prefixes, visual
//! separators, extensions, `tel:`/`sip:` forms with user parameters, all to E.164.
//!
//! Only numbers libphonenumber calls *valid* become E.164 keys; short codes and invalid strings
//! fall back to their bare digits, matched exactly [PROTOCOLS.md §6 phonenumber].

use phonenumber::country;

/// An index key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A valid number, as E.164 (`+14155550100`).
    E164(String),
    /// Anything else: its digits (and a leading `+`), for an exact match.
    Digits(String),
}

impl Key {
    /// The key's text.
    pub fn as_str(&self) -> &str {
        match self {
            Key::E164(s) | Key::Digits(s) => s,
        }
    }
}

/// Normalises numbers for one default region.
#[derive(Debug, Clone, Copy)]
pub struct Normaliser {
    region: country::Id,
    /// The region's country calling code (1 for US), for the fast path.
    country_code: u16,
    /// The region's national (trunk) prefix is `0` (most of the world outside NANP).
    trunk_zero: bool,
}

impl Normaliser {
    /// A normaliser for `region` (ISO 3166 alpha-2, e.g. `US`); warms the metadata (the first
    /// parse costs ~90 ms) so that no call pays for it.
    pub fn new(region: country::Id) -> Self {
        let meta = phonenumber::metadata::DATABASE.by_id(region.as_ref());
        let n = Normaliser {
            region,
            country_code: meta.map_or(0, |m| m.country_code()),
            trunk_zero: meta.and_then(|m| m.national_prefix()) == Some("0"),
        };
        let _ = n.key("+1 415 555 0100");
        n
    }

    /// The default region's country calling code (1 for US; 0 if unknown).
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// Parses a region code.
    pub fn region(code: &str) -> Option<country::Id> {
        code.to_ascii_uppercase().parse().ok()
    }

    /// The E.164 forms a raw number most likely has, as integers, cheaply, without validation
    /// and without allocating: for probing an index whose keys were validated when they went
    /// in (so a hit is right, and a miss falls back to [`Normaliser::key`]). `+` and digits as
    /// they are; national digits with the region's country code (after its `0` trunk prefix),
    /// and, when they already start with it (NANP's `1…`), as they are.
    pub fn fast_e164(&self, raw: &str) -> [Option<u64>; 2] {
        let mut s = raw.trim();
        for scheme in ["tel:", "sip:", "sips:"] {
            if s.len() >= scheme.len()
                && s.is_char_boundary(scheme.len())
                && s[..scheme.len()].eq_ignore_ascii_case(scheme)
            {
                s = &s[scheme.len()..];
            }
        }
        // User part only; an extension (`x12`, `ext. 12`, `#12`) is not part of the number.
        let end = s.find(['@', ';', 'x', 'X', '#']).unwrap_or(s.len());
        let s = &s[..end];
        let plus = s.trim_start().starts_with('+');
        let (mut value, mut len, mut leading_zero) = (0u64, 0u32, false);
        for b in s.bytes().filter(u8::is_ascii_digit) {
            if len == 0 {
                leading_zero = b == b'0';
            }
            if len == 17 {
                return [None, None];
            }
            value = value * 10 + u64::from(b - b'0');
            len += 1;
        }
        if plus {
            return [
                (len > 0 && len <= 15 && !leading_zero).then_some(value),
                None,
            ];
        }
        if len < 6 || self.country_code == 0 {
            return [None, None];
        }
        let national_len = if self.trunk_zero && leading_zero {
            len - 1
        } else {
            len
        };
        let cc = u64::from(self.country_code);
        let national = cc
            .checked_mul(10u64.pow(national_len))
            .and_then(|v| v.checked_add(value));
        let cc_len = cc.ilog10() + 1;
        let with_cc =
            (len > 10 && !leading_zero && value / 10u64.pow(len - cc_len) == cc).then_some(value);
        [national.filter(|v| v.ilog10() < 15), with_cc]
    }

    /// The index key for a raw number.
    pub fn key(&self, raw: &str) -> Key {
        let cleaned = clean(raw);
        let candidate = match cleaned
            .strip_prefix("00")
            .or_else(|| cleaned.strip_prefix("011"))
        {
            // International prefixes, whatever the default region's own prefix is.
            Some(rest) if !rest.is_empty() && !raw.trim_start().starts_with('+') => {
                format!("+{rest}")
            }
            _ => cleaned.clone(),
        };
        for attempt in [candidate.as_str(), cleaned.as_str()] {
            if let Ok(number) = phonenumber::parse(Some(self.region), attempt)
                && phonenumber::is_valid(&number)
            {
                return Key::E164(number.format().mode(phonenumber::Mode::E164).to_string());
            }
        }
        Key::Digits(cleaned)
    }
}

/// Normalisation memoised per raw number (`moka`): the same caller ID is parsed once, and
/// concurrent misses for one number share one computation. Normalisation is deterministic,
/// so entries never go stale; the cache is bounded by count.
#[derive(Clone)]
pub struct KeyCache {
    normaliser: Normaliser,
    memo: moka::sync::Cache<String, Key>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.memo.entry_count())
            .finish()
    }
}

impl KeyCache {
    /// Raw numbers remembered.
    pub const CAPACITY: u64 = 200_000;

    /// A cache over one normaliser.
    pub fn new(normaliser: Normaliser) -> Self {
        KeyCache {
            normaliser,
            memo: moka::sync::Cache::new(Self::CAPACITY),
        }
    }

    /// The key for a raw number.
    pub fn key(&self, raw: &str) -> Key {
        self.memo.get_with_by_ref(raw, || self.normaliser.key(raw))
    }
}

/// Strips URI scheme, user parameters, extensions and visual separators: `+` and digits remain.
fn clean(raw: &str) -> String {
    let mut s = raw.trim();
    for scheme in ["tel:", "sip:", "sips:"] {
        if s.len() >= scheme.len() && s[..scheme.len()].eq_ignore_ascii_case(scheme) {
            s = &s[scheme.len()..];
        }
    }
    // User part only, without parameters (`;npdi;rn=…`, `;ext=…`) or host.
    s = s.split(['@', ';']).next().unwrap_or_default();
    // An extension written `x123`, `ext. 123` or `#123` is not part of the number.
    let lower = s.to_ascii_lowercase();
    if let Some(i) = lower.find(['x', '#']).or_else(|| lower.find("ext")) {
        s = &s[..i];
    }
    let plus = s.trim_start().starts_with('+');
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if plus { format!("+{digits}") } else { digits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_reach_one_key() {
        let n = Normaliser::new(country::Id::US);
        let want = Key::E164("+14155550100".into());
        for raw in [
            "+1 415 555 0100",
            "(415) 555-0100",
            "415.555.0100",
            "1-415-555-0100",
            "011 1 415 555 0100",
            "0014155550100",
            "tel:+1-415-555-0100;npdi;rn=+14155559999",
            "sip:+14155550100@pbx.example.com;user=phone",
            "415-555-0100 x123",
            "+1 (415) 555-0100 ext. 7",
        ] {
            assert_eq!(n.key(raw), want, "{raw}");
        }
        assert_eq!(n.key("911"), Key::Digits("911".into()));
        assert_eq!(n.key("1001"), Key::Digits("1001".into()));
        assert_eq!(n.fast_e164("(415) 555-0100")[0], Some(14_155_550_100));
        assert_eq!(n.fast_e164("1-415-555-0100")[1], Some(14_155_550_100));
        assert_eq!(
            n.fast_e164("tel:+1-415-555-0100;npdi"),
            [Some(14_155_550_100), None]
        );
        assert_eq!(
            n.fast_e164("sip:+14155550100@pbx;user=phone")[0],
            Some(14_155_550_100)
        );
        assert_eq!(n.fast_e164("415-555-0100 x123")[0], Some(14_155_550_100));
        assert_eq!(n.fast_e164("+0123456"), [None, None]);
        assert_eq!(n.fast_e164("911"), [None, None]);
        assert_eq!(n.fast_e164("123456789012345678"), [None, None]);
        let uk = Normaliser::new(country::Id::GB);
        assert_eq!(uk.fast_e164("020 7946 0018")[0], Some(442_079_460_018));
        let cache = KeyCache::new(n);
        assert_eq!(cache.key("(415) 555-0100"), want);
        assert_eq!(cache.key("(415) 555-0100"), want, "memoised");
        let gb = Normaliser::new(country::Id::GB);
        assert_eq!(gb.key("020 7946 0018"), Key::E164("+442079460018".into()));
        assert_eq!(
            gb.key("00 44 20 7946 0018"),
            Key::E164("+442079460018".into())
        );
    }
}
