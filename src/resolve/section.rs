//! The resolve stage's config sections, `[numbers]` and `[directory]`, with their defaults.

use std::path::PathBuf;

use serde::Deserialize;

/// `[numbers]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numbers {
    /// Region for numbers written in national format (ISO 3166 alpha-2).
    #[serde(default = "default_region")]
    pub default_region: Region,
    /// How many trailing digits of a company's main number may differ for an unknown caller to
    /// be offered that company as an approximate match (a DID block behind a switchboard);
    /// 0 turns the fallback off. At most 6.
    #[serde(
        default = "default_switchboard_digits",
        deserialize_with = "switchboard_digits"
    )]
    pub switchboard_digits: u8,
}

impl Default for Numbers {
    fn default() -> Self {
        Numbers {
            default_region: default_region(),
            switchboard_digits: default_switchboard_digits(),
        }
    }
}

fn default_switchboard_digits() -> u8 {
    2
}

fn switchboard_digits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if n > 6 {
        return Err(serde::de::Error::custom(format!(
            "{n} is too many: at most 6 trailing digits (0 turns the fallback off)"
        )));
    }
    Ok(n)
}

fn default_region() -> Region {
    Region(phonenumber::country::Id::US)
}

/// A validated region code.
#[derive(Debug, Clone, Copy)]
pub struct Region(pub phonenumber::country::Id);

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        super::Normaliser::region(&code).map(Region).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown region `{code}` (use ISO 3166 alpha-2, e.g. \"US\")"
            ))
        })
    }
}

/// `[directory]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// A customers CSV (`id,name,company,account,crm_url,tags,numbers`), relative to this file.
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// The customer index in PostgreSQL (`schema/`), mirrored in memory and kept fresh by
    /// LISTEN/NOTIFY. Exclusive with `csv`.
    #[serde(default)]
    pub database_url: Option<String>,
}
