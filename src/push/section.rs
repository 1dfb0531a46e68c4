//! The agent page's config section, `[page]`, with its defaults and checks.

use std::collections::HashSet;

use serde::Deserialize;

use std::time::Duration;

use crate::serde_ext::{duration, positive};

/// `[page]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// "Open in CRM" link template, `http(s)://…` with `{id}` and `{account}` placeholders
    /// (filled URL-encoded by the page); unset: the customer's own `crm_url`, if any.
    #[serde(default, deserialize_with = "crm_template")]
    pub crm_url: Option<String>,
    /// The dispositions an agent picks from after a call (each 1 to 64 characters).
    #[serde(default = "default_dispositions", deserialize_with = "dispositions")]
    pub dispositions: Vec<String>,
    /// Whether the page may play a ring tone while the tab is in the background.
    #[serde(default = "default_true")]
    pub ring_sound: bool,
    /// Most recent calls kept in memory for the page's journal (notes, "recent calls").
    #[serde(default = "default_journal", deserialize_with = "positive")]
    pub journal: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            crm_url: None,
            dispositions: default_dispositions(),
            ring_sound: true,
            journal: default_journal(),
        }
    }
}

/// The dispositions when none are configured.
pub fn default_dispositions() -> Vec<String> {
    ["Resolved", "Callback", "Escalated", "Sale", "Wrong number"]
        .map(String::from)
        .to_vec()
}
fn default_true() -> bool {
    true
}
fn default_journal() -> usize {
    10_000
}

fn crm_template<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.chars().any(char::is_whitespace) {
        return Err(serde::de::Error::custom(format!(
            "`{url}` is not an http(s) URL template (e.g. \"https://crm.example/customers/{{id}}\")"
        )));
    }
    Ok(Some(url))
}

fn dispositions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    let mut seen = HashSet::new();
    for item in &list {
        let len = item.trim().chars().count();
        if len == 0 || len > 64 || item.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(format!(
                "`{item}`: each disposition is 1 to 64 printable characters"
            )));
        }
        if !seen.insert(item.trim()) {
            return Err(serde::de::Error::custom(format!(
                "`{item}` is listed twice"
            )));
        }
    }
    if list.len() > 50 {
        return Err(serde::de::Error::custom("at most 50 dispositions"));
    }
    Ok(list.into_iter().map(|s| s.trim().to_owned()).collect())
}

/// `[push]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// Browser origins allowed to open `/ws`; the same as `[http] allowed_origins` (both lists
    /// apply), kept for configs written before that key.
    #[serde(default)]
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Most WebSocket connections at once.
    #[serde(default = "default_max_ws")]
    pub max_connections: usize,
    /// The client's auth frame must arrive within this.
    #[serde(default = "default_auth_timeout", with = "duration")]
    pub auth_timeout: Duration,
    /// Server ping interval.
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat: Duration,
    /// A client silent this long is disconnected.
    #[serde(default = "default_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// Messages queued per connection before it is closed as too slow.
    #[serde(default = "default_queue", deserialize_with = "positive")]
    pub queue: usize,
    /// Largest client message accepted, bytes.
    #[serde(default = "default_ws_message")]
    pub max_message_bytes: usize,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            allowed_origins: Vec::new(),
            max_connections: default_max_ws(),
            auth_timeout: default_auth_timeout(),
            heartbeat: default_heartbeat(),
            idle_timeout: default_idle(),
            queue: default_queue(),
            max_message_bytes: default_ws_message(),
        }
    }
}

fn default_max_ws() -> usize {
    20_000
}
fn default_auth_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(15)
}
fn default_idle() -> Duration {
    Duration::from_secs(45)
}
fn default_queue() -> usize {
    256
}
fn default_ws_message() -> usize {
    64 * 1024
}

/// A browser origin allowed to open `/ws` (`[http] allowed_origins`): `http` or `https`, a
/// host and an optional port, nothing else (no path, no trailing slash), compared
/// case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin(String);

impl AllowedOrigin {
    /// Checks and keeps an origin as a browser sends it (RFC 6454 §6.1).
    pub fn parse(text: &str) -> Result<AllowedOrigin, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| format!("`{text}`: an origin starts with http:// or https://"))?;
        let valid = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !valid {
            return Err(format!(
                "`{text}`: an origin is scheme://host[:port], with no path or trailing slash"
            ));
        }
        Ok(AllowedOrigin(text.to_ascii_lowercase()))
    }

    /// The origin, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for AllowedOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AllowedOrigin::parse(&text).map_err(serde::de::Error::custom)
    }
}
