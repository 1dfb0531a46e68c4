//! `[calls]` and `[call_log]`: the call table's and the call log's sections, with their
//! defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::serde_ext::{duration, positive};

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Most calls tracked at once (the oldest is expired when full).
    #[serde(default = "default_max_calls", deserialize_with = "positive")]
    pub max_calls: usize,
    /// How long an answered call stays live when no intake can see it end: a SIP fork target
    /// leaves the call at the CANCEL and never sees the BYE. Its card stops counting at the
    /// answer (`hangup_seen: false`) and stays on the agent's page; this only bounds how long it
    /// is in the table (and in a new session's snapshot). Pair the fork with HEP or dialog
    /// subscriptions to see hang-ups.
    #[serde(default = "default_answered_ttl", with = "duration")]
    pub answered_ttl: Duration,
    /// How long an answered call whose end an intake reports (HEP, AMI, ESL, dialog, webhook)
    /// may last before it is expired anyway: a safety net for a lost hang-up, longer than any
    /// real call.
    #[serde(default = "default_max_call_duration", with = "duration")]
    pub max_call_duration: Duration,
    /// The call-back link on history items and callbacks: `{number}` is replaced by the
    /// number to call (`+` and digits), e.g. `"sip:{number}@pbx.example.com"` for a softphone
    /// that takes SIP URIs.
    #[serde(default = "default_call_back_url", deserialize_with = "call_back_url")]
    pub call_back_url: String,
}

fn default_call_back_url() -> String {
    "tel:{number}".into()
}

fn call_back_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let schemes = ["tel:", "sip:", "sips:", "callto:", "https://", "http://"];
    if !url.contains("{number}")
        || !schemes.iter().any(|s| url.starts_with(s))
        || url
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>')
    {
        return Err(serde::de::Error::custom(format!(
            "`{url}` is not a call-back link template: give a tel:, sip:, sips:, callto: or \
             http(s) URI with {{number}} in it, e.g. \"tel:{{number}}\""
        )));
    }
    Ok(url)
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_calls: default_max_calls(),
            answered_ttl: default_answered_ttl(),
            max_call_duration: default_max_call_duration(),
            call_back_url: default_call_back_url(),
        }
    }
}

fn default_max_calls() -> usize {
    20_000
}
fn default_answered_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_call_duration() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// `[call_log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallLogConfig {
    /// Where the call log (and the agents' picks) are written; defaults to
    /// `[directory] database_url`. Neither set: no call log in PostgreSQL.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Most calls waiting to be written while PostgreSQL is slow or away; beyond it new calls
    /// are dropped from the log and counted.
    #[serde(default = "default_log_buffer", deserialize_with = "positive")]
    pub buffer: usize,
    /// Most rows per write.
    #[serde(default = "default_log_batch", deserialize_with = "positive")]
    pub batch: usize,
    /// How often pending rows are written.
    #[serde(default = "default_log_interval", with = "duration")]
    pub flush_interval: Duration,
    /// The local spool every row, note and pick goes through before PostgreSQL (relative to
    /// this file). Default: `$STATE_DIRECTORY/spool` (systemd's `StateDirectory=`), else
    /// `/var/lib/screenpop/spool`. One directory per daemon: a second process is refused.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold while PostgreSQL is away (default 1 GiB, about a
    /// million calls); beyond it new rows are refused and counted, notes answered 503.
    #[serde(default = "default_spool_max_bytes", deserialize_with = "positive")]
    pub spool_max_bytes: usize,
}

impl CallLogConfig {
    /// The spool directory, with relative paths taken from `base` (the config file's folder).
    pub fn spool_dir(&self, base: &Path) -> PathBuf {
        match &self.spool_dir {
            Some(dir) => base.join(dir),
            None => match std::env::var_os("STATE_DIRECTORY") {
                // systemd may pass several, colon-separated: the first is ours.
                Some(dirs) => {
                    PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or_default())
                        .join("spool")
                }
                None => PathBuf::from("/var/lib/screenpop/spool"),
            },
        }
    }
}

impl Default for CallLogConfig {
    fn default() -> Self {
        CallLogConfig {
            database_url: None,
            buffer: default_log_buffer(),
            batch: default_log_batch(),
            flush_interval: default_log_interval(),
            spool_dir: None,
            spool_max_bytes: default_spool_max_bytes(),
        }
    }
}

fn default_spool_max_bytes() -> usize {
    1 << 30
}

fn default_log_buffer() -> usize {
    100_000
}
fn default_log_batch() -> usize {
    500
}
fn default_log_interval() -> Duration {
    Duration::from_millis(200)
}
