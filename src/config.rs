//! The TOML configuration: what IT writes to wire screenpop to a PBX.
//!
//! Owns parsing and validation; every error names the file, line and key. Validation happens
//! while deserialising (addresses, networks, durations, hashes are typed), so serde's spans point
//! at the offending value; cross-field checks use [`toml::Spanned`]. Does not own what the
//! settings mean at run time: see `daemon`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// A configuration that cannot be used; the operator is at fault and the message says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value, key or table is wrong.
    #[error("{file}:{line}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The dotted key path (or the key as written).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Phone-number normalisation.
    #[serde(default)]
    pub numbers: Numbers,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// The SIP fork-target listener.
    #[serde(default)]
    pub sip: Sip,
    /// The HEPv3 listener.
    #[serde(default)]
    pub hep: Hep,
    /// The HTTP listener (agent page, API, health, metrics).
    #[serde(default)]
    pub http: HttpServerConfig,
    /// Call tracking.
    #[serde(default)]
    pub calls: CallsConfig,
    /// Where customers come from.
    #[serde(default)]
    pub directory: DirectoryConfig,
    /// The call log in PostgreSQL.
    #[serde(default)]
    pub call_log: CallLogConfig,
    /// Profile composition.
    #[serde(default)]
    pub compose: crate::compose::ComposeConfig,
    /// The data sources of the profile sections, asked in parallel for every popped customer.
    #[serde(default)]
    pub sources: Vec<Spanned<crate::compose::SourceConfig>>,
    /// The config file's folder: relative paths in sources are relative to it.
    #[serde(skip)]
    pub base: PathBuf,
    /// WebSocket push to the agents' pages.
    #[serde(default)]
    pub push: Push,
    /// The agent page: CRM link, dispositions, ring sound, the call journal.
    #[serde(default)]
    pub page: Page,
    /// Agents (small sites; larger ones keep agents in PostgreSQL).
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Asterisk Manager Interface connections, one `[[ami]]` per PBX.
    #[serde(default)]
    pub ami: Vec<Spanned<crate::telephony::ami::AmiConfig>>,
    /// FreeSWITCH event-socket connections, one `[[esl]]` per switch.
    #[serde(default)]
    pub esl: Vec<Spanned<crate::telephony::esl::EslConfig>>,
    /// `POST /api/events`: signed call events from a PBX (`[webhook]`, `[[webhook.pbx]]`).
    #[serde(default)]
    pub webhook: crate::telephony::webhook::WebhookConfig,
    /// RFC 4235 dialog-event subscriptions, one `[[dialog]]` per PBX.
    #[serde(default)]
    pub dialog: Vec<Spanned<crate::telephony::dialog::DialogConfig>>,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Log phone numbers and customer data in clear (off: numbers are masked).
    #[serde(default)]
    pub pii: bool,
    /// What to log, in `tracing` filter syntax (`info`, `screenpop=debug,warn`); the
    /// `SCREENPOP_LOG` environment variable, when set, wins. Applied again on a reload.
    #[serde(default, deserialize_with = "log_level")]
    pub level: Option<String>,
}

fn log_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let level = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| serde::de::Error::custom(format!("not a log filter: {e}")))?;
    Ok(Some(level))
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    /// UDP addresses to listen on.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// Source networks allowed to send SIP (the PBX); everything else is dropped and counted.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// How long a branch may ring before screenpop ends it with 480.
    #[serde(default = "default_ring_timeout", with = "duration")]
    pub ring_timeout: Duration,
    /// Most INVITE transactions held at once.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: usize,
    /// Most concurrent TCP connections; when full, a new one evicts the least useful (see
    /// `listener`).
    #[serde(default = "default_max_tcp", deserialize_with = "positive")]
    pub max_tcp_connections: usize,
    /// Most concurrent TCP connections from one source address.
    #[serde(default = "default_max_tcp_per_source", deserialize_with = "positive")]
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection without traffic for this long is closed (PBXs keep theirs alive with
    /// CRLF pings). Never shorter than `ring_timeout` + 32 s: a longer-ringing INVITE's final
    /// response must find its connection open, so a shorter value is raised to that (see
    /// [`Sip::tcp_idle_timeout_in_force`]).
    #[serde(default = "default_tcp_idle", with = "duration")]
    pub tcp_idle_timeout: Duration,
}

impl Sip {
    /// The idle timeout in force: `tcp_idle_timeout`, raised to `ring_timeout` + 32 s.
    pub fn tcp_idle_timeout_in_force(&self) -> Duration {
        self.tcp_idle_timeout
            .max(crate::telephony::sip::tcp::min_idle_timeout(
                self.ring_timeout,
            ))
    }
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            udp: Vec::new(),
            tcp: Vec::new(),
            allow: Vec::new(),
            ring_timeout: default_ring_timeout(),
            max_transactions: default_max_transactions(),
            max_tcp_connections: default_max_tcp(),
            max_tcp_connections_per_source: default_max_tcp_per_source(),
            tcp_idle_timeout: default_tcp_idle(),
        }
    }
}

fn default_ring_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_transactions() -> usize {
    50_000
}
fn default_max_tcp() -> usize {
    1024
}
fn default_max_tcp_per_source() -> usize {
    32
}
fn default_tcp_idle() -> Duration {
    Duration::from_secs(120)
}

/// `[hep]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hep {
    /// UDP addresses to listen on.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// Source networks allowed to send HEP (the capture agents).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// The capture password (HEP chunk 0x0e) every packet must carry, if set.
    #[serde(default)]
    pub password: Option<String>,
    /// Most concurrent TCP connections; when full, a new one evicts the least useful.
    #[serde(default = "default_max_tcp", deserialize_with = "positive")]
    pub max_tcp_connections: usize,
    /// Most concurrent TCP connections from one source address.
    #[serde(default = "default_max_tcp_per_source", deserialize_with = "positive")]
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection without a packet for this long is closed.
    #[serde(default = "default_tcp_idle", with = "duration")]
    pub tcp_idle_timeout: Duration,
}

impl Default for Hep {
    fn default() -> Self {
        Hep {
            udp: Vec::new(),
            tcp: Vec::new(),
            allow: Vec::new(),
            password: None,
            max_tcp_connections: default_max_tcp(),
            max_tcp_connections_per_source: default_max_tcp_per_source(),
            tcp_idle_timeout: default_tcp_idle(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address of the agent page, API, `/healthz` and `/metrics`.
    #[serde(default = "default_http")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS/WSS (with `tls_key`); relative to this file.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS/WSS (with `tls_cert`); relative to this file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Browser origins (`scheme://host[:port]`) allowed to open `/ws`, e.g. the page's public
    /// address `"https://screenpop.example.com"` or a CRM embedding it. Without it only the
    /// page's own origin is allowed, and only when the page was reached by IP address or
    /// `localhost`: an origin named by DNS must be listed, or a DNS-rebinding page could pass.
    #[serde(default)]
    pub allowed_origins: Vec<crate::web::AllowedOrigin>,
    /// Most connections at once (WebSockets included); when full, a new one evicts the least
    /// useful (see `listener`).
    #[serde(default = "default_http_max", deserialize_with = "positive")]
    pub max_connections: usize,
    /// Most connections at once from one client address.
    #[serde(
        default = "default_http_max_per_address",
        deserialize_with = "positive"
    )]
    pub max_connections_per_address: usize,
    /// A request's headers must be complete this long after its first byte (after the
    /// connection opened, for the first request); slower clients are disconnected.
    #[serde(default = "default_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed (WebSockets have
    /// their own heartbeat, `[push]`).
    #[serde(default = "default_keep_alive_timeout", with = "duration")]
    pub keep_alive_timeout: Duration,
}

impl HttpServerConfig {
    /// The listener's limits.
    pub fn limits(&self) -> crate::web::serve::HttpLimits {
        crate::web::serve::HttpLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            ..Default::default()
        }
    }
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            listen: default_http(),
            tls_cert: None,
            tls_key: None,
            allowed_origins: Vec::new(),
            max_connections: default_http_max(),
            max_connections_per_address: default_http_max_per_address(),
            header_read_timeout: default_header_read_timeout(),
            keep_alive_timeout: default_keep_alive_timeout(),
        }
    }
}

fn default_http_max() -> usize {
    crate::web::serve::HttpLimits::default().max_connections
}
fn default_http_max_per_address() -> usize {
    crate::web::serve::HttpLimits::default().max_connections_per_address
}
fn default_header_read_timeout() -> Duration {
    crate::web::serve::HttpLimits::default().header_read_timeout
}
fn default_keep_alive_timeout() -> Duration {
    crate::web::serve::HttpLimits::default().keep_alive_timeout
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// Most calls tracked at once (the oldest is expired when full).
    #[serde(default = "default_max_calls", deserialize_with = "positive")]
    pub max_calls: usize,
    /// How long an answered call whose end is never seen stays live (SIP fork mode never sees
    /// the BYE).
    #[serde(default = "default_answered_ttl", with = "duration")]
    pub answered_ttl: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_calls: default_max_calls(),
            answered_ttl: default_answered_ttl(),
        }
    }
}

fn default_max_calls() -> usize {
    20_000
}
fn default_answered_ttl() -> Duration {
    Duration::from_secs(15 * 60)
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

/// `[[agents]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// A unique id (`alice`).
    pub id: Spanned<String>,
    /// The name shown on the page.
    #[serde(default)]
    pub name: Option<String>,
    /// The extensions whose calls this agent sees.
    pub extensions: Vec<String>,
    /// Roles that open restricted profile sections (a source's `roles`), e.g. `["credit"]`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// SHA-256 of the agent's token, hex (`screenpop hash-token` prints it).
    pub token_sha256: TokenHash,
}

pub use crate::agents::TokenHash;
pub use crate::push::section::{Page, Push, default_dispositions};
pub use crate::resolve::section::{DirectoryConfig, Numbers, Region};
use crate::serde_ext::{duration, positive};

mod assemble;
pub use assemble::{
    Intakes, composer_from, config_agents, intakes_from, page_settings, webhook_pbxs,
};

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.into(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        config.base = dir.to_owned();
        // Start every source once (checks its query or templates, reads its CSV): a source
        // that cannot start is an error at its line, not at the first call.
        for (i, source) in config.sources.iter().enumerate() {
            if let Err(message) = source.get_ref().adapter.build(dir) {
                return Err(ConfigError::Invalid {
                    file: path.into(),
                    line: line_of(&text, source.span().start),
                    key: format!("sources[{i}] ({})", source.get_ref().settings.name),
                    message: message.to_string(),
                });
            }
        }
        for file in [
            &mut config.directory.csv,
            &mut config.http.tls_cert,
            &mut config.http.tls_key,
        ] {
            if let Some(f) = file.as_mut()
                && f.is_relative()
            {
                *f = dir.join(&*f);
            }
        }
        Ok(config)
    }

    /// Parses and validates text; `file` labels errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| invalid(text, file, e))?;
        let at = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
            file: file.into(),
            line: line_of(text, span.start),
            key: key.into(),
            message,
        };
        let mut ids = HashSet::new();
        for (i, agent) in config.agents.iter().enumerate() {
            if agent.id.get_ref().is_empty() || !ids.insert(agent.id.get_ref().clone()) {
                return Err(at(
                    agent.id.span(),
                    &format!("agents[{i}].id"),
                    "agent ids must be unique and non-empty".into(),
                ));
            }
            if agent.extensions.is_empty() {
                return Err(at(
                    agent.id.span(),
                    &format!("agents[{i}].extensions"),
                    "an agent needs at least one extension".into(),
                ));
            }
        }
        if config.directory.csv.is_some() && config.directory.database_url.is_some() {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("database_url"))
                .map_or(1, |i| i + 1);
            return Err(ConfigError::Invalid {
                file: file.into(),
                line,
                key: "directory.database_url".into(),
                message: "set csv or database_url, not both".into(),
            });
        }
        if config.http.tls_cert.is_some() != config.http.tls_key.is_some() {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("tls_"))
                .map_or(1, |i| i + 1);
            return Err(ConfigError::Invalid {
                file: file.into(),
                line,
                key: "http.tls_cert".into(),
                message: "tls_cert and tls_key go together: set both or neither".into(),
            });
        }
        check_cti(&config, &at)?;
        let mut names = HashSet::new();
        for (i, source) in config.sources.iter().enumerate() {
            let name = &source.get_ref().settings.name;
            if name.is_empty() || !names.insert(name.clone()) {
                return Err(at(
                    source.span(),
                    &format!("sources[{i}].name"),
                    "source names must be unique and non-empty".into(),
                ));
            }
        }
        let listens = config.sip.udp.len()
            + config.sip.tcp.len()
            + config.hep.udp.len()
            + config.hep.tcp.len()
            + config.ami.len()
            + config.esl.len()
            + config.webhook.pbx.len()
            + config.dialog.len();
        if listens == 0 {
            return Err(ConfigError::Invalid {
                file: file.into(),
                line: 1,
                key: "sip".into(),
                message: "no call source: set sip.udp, sip.tcp, hep.udp, hep.tcp, [[ami]], [[esl]], [[webhook.pbx]] or [[dialog]]".into(),
            });
        }
        Ok(config)
    }
}

/// Checks the CTI inputs: names unique across `[[ami]]`, `[[esl]]`, `[[webhook.pbx]]` and `[[dialog]]`
/// (they prefix call keys and label metrics), `host:port` addresses, exactly one of a secret and
/// its environment variable, non-zero timers.
fn check_cti(
    config: &Config,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut name = |n: &str, span: std::ops::Range<usize>, key: String| {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(at(
                span,
                &key,
                "use 1 to 64 letters, digits, `.`, `_` or `-`".into(),
            ));
        }
        if !names.insert(n.to_owned()) {
            return Err(at(
                span,
                &key,
                format!(
                    "`{n}` is used twice: names are unique across ami, esl, webhook.pbx and dialog"
                ),
            ));
        }
        Ok(())
    };
    let address = |a: &str, span: std::ops::Range<usize>, key: String| {
        let valid = a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if valid {
            Ok(())
        } else {
            Err(at(span, &key, format!("`{a}` is not host:port")))
        }
    };
    let one_secret = |given: bool, env: bool, span: std::ops::Range<usize>, key: String| {
        if given == env {
            Err(at(
                span,
                &key,
                "set exactly one of the secret and its `_env` variable".into(),
            ))
        } else {
            Ok(())
        }
    };
    let nonzero = |d: Duration, span: std::ops::Range<usize>, key: String| {
        if d.is_zero() {
            Err(at(span, &key, "must be more than zero".into()))
        } else {
            Ok(())
        }
    };
    for (i, ami) in config.ami.iter().enumerate() {
        let (c, span) = (ami.get_ref(), ami.span());
        name(&c.name, span.clone(), format!("ami[{i}].name"))?;
        address(&c.address, span.clone(), format!("ami[{i}].address"))?;
        one_secret(
            c.secret.is_some(),
            c.secret_env.is_some(),
            span.clone(),
            format!("ami[{i}].secret"),
        )?;
        nonzero(
            c.ping_interval,
            span.clone(),
            format!("ami[{i}].ping_interval"),
        )?;
        nonzero(
            c.ping_timeout,
            span.clone(),
            format!("ami[{i}].ping_timeout"),
        )?;
        if c.username.is_empty() {
            return Err(at(
                span,
                &format!("ami[{i}].username"),
                "must not be empty".into(),
            ));
        }
    }
    for (i, esl) in config.esl.iter().enumerate() {
        let (c, span) = (esl.get_ref(), esl.span());
        name(&c.name, span.clone(), format!("esl[{i}].name"))?;
        address(&c.address, span.clone(), format!("esl[{i}].address"))?;
        one_secret(
            c.password.is_some(),
            c.password_env.is_some(),
            span.clone(),
            format!("esl[{i}].password"),
        )?;
        nonzero(
            c.liveness_timeout,
            span,
            format!("esl[{i}].liveness_timeout"),
        )?;
    }
    for (i, pbx) in config.webhook.pbx.iter().enumerate() {
        let (c, span) = (pbx.get_ref(), pbx.span());
        name(&c.name, span.clone(), format!("webhook.pbx[{i}].name"))?;
        one_secret(
            c.secret.is_some(),
            c.secret_env.is_some(),
            span,
            format!("webhook.pbx[{i}].secret"),
        )?;
    }
    for (i, dialog) in config.dialog.iter().enumerate() {
        let (c, span) = (dialog.get_ref(), dialog.span());
        name(&c.name, span.clone(), format!("dialog[{i}].name"))?;
        address(&c.pbx, span.clone(), format!("dialog[{i}].pbx"))?;
        one_secret(
            c.password.is_some(),
            c.password_env.is_some(),
            span.clone(),
            format!("dialog[{i}].password"),
        )?;
        check_dialog(c, i, span, at)?;
    }
    Ok(())
}

/// The `[[dialog]]` values that go into SIP URIs, and its timers.
fn check_dialog(
    c: &crate::telephony::dialog::DialogConfig,
    i: usize,
    span: std::ops::Range<usize>,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    use crate::telephony::dialog::client::uri_safe;
    if !uri_safe(&c.username, false) {
        return Err(at(
            span,
            &format!("dialog[{i}].username"),
            "use 1 to 128 letters, digits or URI-safe marks (no spaces, `@`, `:` or `<>`)".into(),
        ));
    }
    if let Some(domain) = &c.domain
        && !uri_safe(domain, true)
    {
        return Err(at(
            span,
            &format!("dialog[{i}].domain"),
            format!("`{domain}` is not a host name or address"),
        ));
    }
    if c.extensions.is_empty() {
        return Err(at(
            span,
            &format!("dialog[{i}].extensions"),
            "list at least one extension to watch".into(),
        ));
    }
    let mut seen = HashSet::new();
    for (j, ext) in c.extensions.iter().enumerate() {
        if !uri_safe(ext, false) || !seen.insert(ext) {
            return Err(at(
                span,
                &format!("dialog[{i}].extensions[{j}]"),
                format!("`{ext}`: extensions are unique, without spaces, `@`, `:` or `<>`"),
            ));
        }
    }
    if c.expires > Duration::from_secs(86_400) {
        return Err(at(
            span,
            &format!("dialog[{i}].expires"),
            "at most 1 day (the PBX may grant less; screenpop refreshes at 80 %)".into(),
        ));
    }
    if c.retry_min > c.retry_max {
        return Err(at(
            span,
            &format!("dialog[{i}].retry_min"),
            "must not exceed retry_max".into(),
        ));
    }
    Ok(())
}

fn invalid(text: &str, file: &Path, mut error: toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim().to_owned();
    // The key path is only in the context-free rendering ("in `a.b`").
    error.set_input(None);
    let rendered = error.to_string();
    let path = rendered
        .lines()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    let at_span = text
        .get(span.clone())
        .unwrap_or_default()
        .trim()
        .trim_matches('"');
    let mut line = line_of(text, span.start);
    let key = match path {
        // An error inside an array table whose keys are flattened (`[[sources]]`) is reported
        // at its header: name the element, and for an unknown key find its own line.
        Some(path) if at_span.starts_with("[[") => {
            let header = format!("[[{path}]]");
            let index = text[..span.start.min(text.len())].matches(&header).count();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next());
            match unknown {
                Some(field) => {
                    let body = &text[span.end.min(text.len())..];
                    let body = &body[..body.find("\n[").unwrap_or(body.len())];
                    if let Some(at) = body.lines().position(|l| {
                        l.trim_start()
                            .strip_prefix(field)
                            .is_some_and(|r| r.trim_start().starts_with('='))
                    }) {
                        line += at;
                    }
                    format!("{path}[{index}].{field}")
                }
                None => format!("{path}[{index}]"),
            }
        }
        // For an unknown key the path names its table and the span the key itself.
        Some(path) if message.starts_with("unknown field") => format!("{path}.{at_span}"),
        Some(path) => path.to_owned(),
        None => at_span.to_owned(),
    };
    ConfigError::Invalid {
        file: file.into(),
        line,
        key,
        message,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String, String) {
        match Config::parse(text, Path::new("site.toml")) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let (line, key, msg) = err("[sip]\nudp = [\"0.0.0.0:5060\"]\nallow = [\"10.0.0.0/33\"]\n");
        assert_eq!((line, key.as_str()), (3, "sip.allow"), "{msg}");
        let (line, key, _) = err("[sip]\nudp = [\"0.0.0.0:5060\"]\nring_timeout = \"soon\"\n");
        assert_eq!((line, key.as_str()), (3, "sip.ring_timeout"));
        let (line, key, msg) = err("[sip]\nudp = [\"0.0.0.0:5060\"]\nring_timout = \"3s\"\n");
        assert_eq!((line, key.as_str()), (3, "sip.ring_timout"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
        let (line, key, _) = err(
            "[sip]\nudp = [\"0.0.0.0:5060\"]\n\n[[agents]]\nid = \"a\"\nextensions = [\"1\"]\ntoken_sha256 = \"beef\"\n",
        );
        assert_eq!((line, key.as_str()), (7, "agents.token_sha256"));
        let dup = format!(
            "[sip]\nudp = [\"0.0.0.0:5060\"]\n[[agents]]\nid = \"a\"\nextensions = [\"1\"]\ntoken_sha256 = \"{h}\"\n[[agents]]\nid = \"a\"\nextensions = [\"2\"]\ntoken_sha256 = \"{h}\"\n",
            h = TokenHash::of("x").hex()
        );
        let (line, key, _) = err(&dup);
        assert_eq!((line, key.as_str()), (8, "agents[1].id"));
        let (_, key, _) = err("[numbers]\ndefault_region = \"XX\"\n");
        assert_eq!(key, "numbers.default_region");
        let (line, key, msg) =
            err("[sip]\nudp = [\"0.0.0.0:5060\"]\n[call_log]\nflush_interval = \"0s\"\n");
        assert_eq!(
            (line, key.as_str()),
            (4, "call_log.flush_interval"),
            "{msg}"
        );
        let (line, key, msg) = err("[sip]\nudp = [\"0.0.0.0:5060\"]\n[call_log]\nbuffer = 0\n");
        assert_eq!((line, key.as_str()), (4, "call_log.buffer"), "{msg}");
        assert!(msg.contains("at least 1"), "{msg}");
        let (_, key, _) = err("[numbers]\nswitchboard_digits = 9\n");
        assert_eq!(key, "numbers.switchboard_digits");
        let sources = "[sip]\nudp = [\"0.0.0.0:5060\"]\n\n[[sources]]\nname = \"a\"\ntype = \"csv\"\npath = \"a.csv\"\nkey_column = \"k\"\n\n[[sources]]\nname = \"b\"\ntype = \"postgres\"\ndatabase_url = \"postgres://x/y\"\nquery = \"SELECT 1\"\ntimout = \"1s\"\n";
        let (line, key, msg) = err(sources);
        assert_eq!((line, key.as_str()), (15, "sources[1].timout"), "{msg}");
        let (line, key, msg) = err(&sources
            .replace("timout = \"1s\"\n", "")
            .replace("type = \"postgres\"", "type = \"ldap\""));
        assert_eq!((line, key.as_str()), (10, "sources[1]"), "{msg}");
        assert!(msg.contains("unknown variant `ldap`"), "{msg}");
        let (line, key, _) = err(&sources
            .replace("name = \"b\"", "name = \"a\"")
            .replace("timout = \"1s\"\n", ""));
        assert_eq!((line, key.as_str()), (10, "sources[1].name"));
    }

    #[test]
    fn page_section() {
        let sip = "[sip]\nudp = [\"0.0.0.0:5060\"]\n";
        let config = Config::parse(
            &format!("{sip}[page]\ncrm_url = \"https://crm.example/c/{{id}}?acct={{account}}\"\ndispositions = [\"Resolved\", \" Callback \"]\nring_sound = false\n"),
            Path::new("site.toml"),
        )
        .expect("valid");
        assert_eq!(config.page.dispositions, ["Resolved", "Callback"]);
        assert!(!config.page.ring_sound);
        let defaults = Config::parse(sip, Path::new("site.toml")).expect("valid");
        assert!(defaults.page.crm_url.is_none() && defaults.page.ring_sound);
        assert_eq!(defaults.page.dispositions, default_dispositions());
        let (line, key, msg) = err(&format!("{sip}[page]\ncrm_url = \"javascript:alert(1)\"\n"));
        assert_eq!((line, key.as_str()), (4, "page.crm_url"), "{msg}");
        let (_, key, msg) = err(&format!("{sip}[page]\ndispositions = [\"A\", \"A\"]\n"));
        assert_eq!(key, "page.dispositions", "{msg}");
        let (_, key, _) = err(&format!("{sip}[page]\ndispositions = [\"\"]\n"));
        assert_eq!(key, "page.dispositions");
        let (_, key, _) = err(&format!("{sip}[page]\njournal = 0\n"));
        assert_eq!(key, "page.journal");
    }

    #[test]
    fn cti_sections() {
        let good = "[[ami]]\nname = \"pbx1\"\naddress = \"10.0.0.5:5038\"\nusername = \"screenpop\"\nsecret_env = \"AMI_SECRET\"\nping_interval = \"5s\"\n\n\
            [[esl]]\nname = \"fs1\"\naddress = \"fs.example:8021\"\npassword = \"ClueCon2\"\n\n\
            [webhook]\nmax_skew = \"2m\"\n[[webhook.pbx]]\nname = \"3cx\"\nsecret = \"k\"\n";
        let config = Config::parse(good, Path::new("site.toml")).expect("valid");
        assert_eq!(
            config.ami[0].get_ref().ping_interval,
            Duration::from_secs(5)
        );
        assert_eq!(config.ami[0].get_ref().events, "system,call,agent");
        assert!(
            !format!("{:?}", config.esl[0]).contains("ClueCon2"),
            "secrets never shown"
        );
        let (line, key, _) =
            err("[[ami]]\nname = \"a\"\naddress = \"nohost\"\nusername = \"u\"\nsecret = \"s\"\n");
        assert_eq!((line, key.as_str()), (1, "ami[0].address"));
        let (_, key, _) = err(
            "[[ami]]\nname = \"a\"\naddress = \"h:1\"\nusername = \"u\"\nsecret = \"s\"\nsecret_env = \"X\"\n",
        );
        assert_eq!(key, "ami[0].secret");
        let (line, key, msg) = err(
            "[[ami]]\nname = \"a\"\naddress = \"h:1\"\nusername = \"u\"\nsecret = \"s\"\n\n[[esl]]\nname = \"a\"\naddress = \"h:2\"\npassword = \"p\"\n",
        );
        assert_eq!((line, key.as_str()), (7, "esl[0].name"), "{msg}");
        let (line, key, _) = err("[[esl]]\nname = \"f\"\naddress = \"h:2\"\npasword = \"p\"\n");
        assert_eq!((line, key.as_str()), (4, "esl.pasword"));
        let (_, key, _) = err("[[webhook.pbx]]\nname = \"w\"\n");
        assert_eq!(key, "webhook.pbx[0].secret");
    }

    #[test]
    fn dialog_sections() {
        let good = "[[dialog]]\nname = \"kam1\"\npbx = \"10.0.0.7:5060\"\ndomain = \"pbx.example\"\nbind = \"0.0.0.0:5070\"\nusername = \"screenpop\"\npassword_env = \"SCREENPOP_SIP_PASSWORD\"\nextensions = [\"1001\", \"1002\"]\nexpires = \"10m\"\n";
        let config = Config::parse(good, Path::new("site.toml")).expect("valid");
        let d = config.dialog[0].get_ref();
        assert_eq!(d.expires, Duration::from_secs(600));
        assert_eq!(d.extensions, ["1001", "1002"]);
        let defaults = Config::parse(
            "[[dialog]]\nname = \"k\"\npbx = \"pbx:5060\"\nusername = \"u\"\npassword = \"hunter2\"\nextensions = [\"1\"]\n",
            Path::new("site.toml"),
        )
        .expect("valid");
        let d = defaults.dialog[0].get_ref();
        assert_eq!(d.expires, Duration::from_secs(3600));
        assert!(d.bind.ip().is_unspecified() && d.bind.port() == 0);
        assert!(!format!("{d:?}").contains("hunter2"), "secrets never shown");
        for (edit, line, key) in [
            (
                ("pbx = \"10.0.0.7:5060\"", "pbx = \"10.0.0.7\""),
                1,
                "dialog[0].pbx",
            ),
            (
                ("extensions = [\"1001\", \"1002\"]", "extensions = []"),
                1,
                "dialog[0].extensions",
            ),
            (("\"1002\"]", "\"10 02\"]"), 1, "dialog[0].extensions[1]"),
            (("\"1002\"]", "\"1001\"]"), 1, "dialog[0].extensions[1]"),
            (
                ("username = \"screenpop\"", "username = \"a@b\""),
                1,
                "dialog[0].username",
            ),
            (
                ("domain = \"pbx.example\"", "domain = \"pbx;x\""),
                1,
                "dialog[0].domain",
            ),
            (
                ("expires = \"10m\"", "expires = \"2d\""),
                1,
                "dialog[0].expires",
            ),
            (
                ("expires = \"10m\"", "expires = \"0s\""),
                9,
                "dialog.expires",
            ),
            (("expires = \"10m\"", "expirs = \"1h\""), 9, "dialog.expirs"),
            (
                (
                    "password_env = \"SCREENPOP_SIP_PASSWORD\"",
                    "password_env = \"X\"\npassword = \"y\"",
                ),
                1,
                "dialog[0].password",
            ),
        ] {
            let text = good.replace(edit.0, edit.1);
            let (l, k, msg) = err(&text);
            assert_eq!((l, k.as_str()), (line, key), "{text}: {msg}");
        }
        let clash =
            format!("{good}\n[[esl]]\nname = \"kam1\"\naddress = \"h:2\"\npassword = \"p\"\n");
        let (_, key, msg) = err(&clash);
        assert_eq!(key, "dialog[0].name", "{msg}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config/screenpop.example.toml");
        let config = Config::parse(text, Path::new("config/screenpop.example.toml"))
            .expect("example config is valid");
        assert!(!config.sip.udp.is_empty());
        assert!(!config.agents.is_empty());
    }

    #[test]
    fn listener_budgets() {
        let sip = "[sip]\nudp = [\"0.0.0.0:5060\"]\n";
        let defaults = Config::parse(sip, Path::new("site.toml")).expect("valid");
        assert_eq!(defaults.sip.max_tcp_connections_per_source, 32);
        // 2 min asked, but the 120 s ring timeout needs 152 s.
        assert_eq!(
            defaults.sip.tcp_idle_timeout_in_force(),
            Duration::from_secs(152)
        );
        assert_eq!(
            defaults.hep.max_tcp_connections,
            defaults.sip.max_tcp_connections
        );
        assert_eq!(defaults.hep.tcp_idle_timeout, Duration::from_secs(120));
        assert_eq!(
            defaults.http.limits(),
            crate::web::serve::HttpLimits::default()
        );
        let config = Config::parse(
            "[sip]\nudp = [\"0.0.0.0:5060\"]\nring_timeout = \"30s\"\nmax_tcp_connections_per_source = 4\ntcp_idle_timeout = \"5m\"\n\
             [hep]\nmax_tcp_connections = 8\ntcp_idle_timeout = \"30s\"\n\
             [http]\nmax_connections = 100\nmax_connections_per_address = 10\nheader_read_timeout = \"2s\"\nkeep_alive_timeout = \"1m\"\n",
            Path::new("site.toml"),
        )
        .expect("valid");
        assert_eq!(config.sip.max_tcp_connections_per_source, 4);
        assert_eq!(
            config.sip.tcp_idle_timeout_in_force(),
            Duration::from_secs(300)
        );
        assert_eq!(config.hep.max_tcp_connections, 8);
        assert_eq!(config.hep.tcp_idle_timeout, Duration::from_secs(30));
        let limits = config.http.limits();
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_address),
            (100, 10)
        );
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.keep_alive_timeout, Duration::from_secs(60));
        let (line, key, msg) = err(&format!("{sip}max_tcp_connections_per_source = 0\n"));
        assert_eq!(
            (line, key.as_str()),
            (3, "sip.max_tcp_connections_per_source"),
            "{msg}"
        );
        let (line, key, _) = err(&format!("{sip}[hep]\ntcp_idle_timeout = \"0s\"\n"));
        assert_eq!((line, key.as_str()), (4, "hep.tcp_idle_timeout"));
        let (line, key, _) = err(&format!("{sip}[http]\nheader_read_timeout = \"soon\"\n"));
        assert_eq!((line, key.as_str()), (4, "http.header_read_timeout"));
    }
}
