//! The AMI connection loop: connect, banner, `Login`, `CoreShowChannels` resync, events, `Ping`
//! keepalive; on any failure reconnect with exponential backoff and resync again
//! [PROTOCOLS.md §3 "Login", "Resync", "Pitfalls"].
//!
//! ```text
//!  connect ─▶ banner ─▶ Login ─▶ CoreShowChannels ─▶ events … ─┐
//!     ▲        (10 s)   (10 s)    (events flow meanwhile)       │ EOF, error, Shutdown,
//!     └──────────── backoff (min … max, jittered) ◀────────────┘ no Pong by the deadline
//! ```
//!
//! A half-open TCP connection is only silence, so an `Action: Ping` goes out every
//! `ping_interval`; no response by `ping_timeout` drops the connection. Plain TCP only: AMI over
//! TLS (`tls = true`, Asterisk's port 5039): rustls with the WebPKI roots plus `tls_ca_file`
//! (the PBX's CA or self-signed certificate), verifying `tls_server_name` (default: the
//! address's host).
//!
//! While logged in, the connection is registered in [`Dialers`] and places call-backs:
//! `Action: Originate` (`Channel` from `originate_channel`, `Async: true`) with an `ActionID`
//! of its own; its `Response:` answers the waiting agent (Success: queued; Error: the PBX's
//! `Message`). The dial queue is read only while fewer than [`DIAL_QUEUE`] wait for their
//! response, and an `Originate` is one bounded write like a `Ping`: events never wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::frame::{Framer, Item, Message};
use super::map::{EVENTS, Mapper};
use crate::backoff::Backoff;
use crate::calls::CallEvent;
use crate::calls::dial::{DIAL_QUEUE, DialError, DialRequest, Dialers};
use crate::telephony::cti::{self, Emitter, Secret};

/// The `input` label of the CTI metrics.
pub const INPUT: &str = "ami";
/// How long the banner and the login response may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may take before the connection is considered stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// `[[ami]]`: one Asterisk server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmiConfig {
    /// A short unique name for this PBX (`pbx1`): the `peer` metrics label and the call-key prefix.
    pub name: String,
    /// `host:port` of the manager interface (Asterisk's default port is 5038).
    pub address: String,
    /// The `manager.conf` user (`screenpop ami-setup` prints the stanza).
    pub username: String,
    /// Its secret. Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The environment variable holding the secret, read at start-up.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The event classes asked for at login (`Events:`).
    #[serde(default = "default_events")]
    pub events: String,
    /// How often to send `Action: Ping`.
    #[serde(default = "default_ping_interval", with = "crate::serde_ext::duration")]
    pub ping_interval: Duration,
    /// No response to a ping within this → reconnect.
    #[serde(default = "default_ping_timeout", with = "crate::serde_ext::duration")]
    pub ping_timeout: Duration,
    /// TCP connect timeout.
    #[serde(
        default = "default_connect_timeout",
        with = "crate::serde_ext::duration"
    )]
    pub connect_timeout: Duration,
    /// First reconnect delay (each wait is half to all of it); it doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "crate::serde_ext::duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "crate::serde_ext::duration")]
    pub reconnect_max: Duration,
    /// Connect with TLS (Asterisk's `tlsenable = yes` in manager.conf; its port is usually
    /// 5039).
    #[serde(default)]
    pub tls: bool,
    /// The name the PBX's certificate must carry (default: the host part of `address`).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// PEM certificates to trust besides the WebPKI roots: the PBX's own CA, or its
    /// self-signed certificate; relative to the config file.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The channel a call-back rings first, `{extension}` being the agent's own
    /// (`POST /api/callbacks/{id}/dial`; the user needs `write = originate`).
    #[serde(default = "default_originate_channel")]
    pub originate_channel: String,
    /// The dialplan context the number is dialled in once the agent answers.
    #[serde(default = "default_originate_context")]
    pub originate_context: String,
}

fn default_originate_channel() -> String {
    "PJSIP/{extension}".into()
}
fn default_originate_context() -> String {
    "from-internal".into()
}
fn default_events() -> String {
    "system,call,agent".into()
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_ping_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
/// First reconnect delay (shared with ESL).
pub fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
/// Longest reconnect delay (shared with ESL).
pub fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

impl AmiConfig {
    /// Settings for a PBX at `address` with everything else defaulted (tests, embedding).
    pub fn new(name: &str, address: &str, username: &str, secret: &str) -> Self {
        AmiConfig {
            name: name.into(),
            address: address.into(),
            username: username.into(),
            secret: Some(Secret::new(secret)),
            secret_env: None,
            events: default_events(),
            ping_interval: default_ping_interval(),
            ping_timeout: default_ping_timeout(),
            connect_timeout: default_connect_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            tls: false,
            tls_server_name: None,
            tls_ca_file: None,
            originate_channel: default_originate_channel(),
            originate_context: default_originate_context(),
        }
    }

    /// The TLS connector and the name to verify, when `tls` is on; the error names the
    /// problem for the operator (checked at start-up).
    pub fn tls_connector(
        &self,
    ) -> Result<
        Option<(
            tokio_rustls::TlsConnector,
            rustls_pki_types::ServerName<'static>,
        )>,
        String,
    > {
        if !self.tls {
            return Ok(None);
        }
        let host = match &self.tls_server_name {
            Some(name) => name.clone(),
            None => {
                let host = self
                    .address
                    .rsplit_once(':')
                    .map_or(self.address.as_str(), |(h, _)| h);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }
        };
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("`{host}` is not a TLS server name; set tls_server_name"))?;
        let config = crate::tls_client::client_config(self.tls_ca_file.as_deref())
            .map_err(|e| format!("tls_ca_file {e}"))?;
        Ok(Some((
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            name,
        )))
    }
}

/// Why an AMI connection ended. Says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    /// The network: connecting, reading or writing failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The network or the PBX: nothing answered in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The PBX closed the connection.
    #[error("the PBX closed the connection")]
    Closed,
    /// The peer is not an Asterisk manager interface (wrong port?).
    #[error("not an AMI banner: {0:?}")]
    Banner(String),
    /// The operator's config: Asterisk refused the username or secret.
    #[error("login refused ({0}); check username/secret and manager.conf `permit`")]
    Login(String),
    /// Asterisk is shutting down or restarting.
    #[error("Asterisk is shutting down")]
    Shutdown,
    /// Missed keepalive: a half-open connection or a stuck PBX.
    #[error("no response to Ping within {0:?}")]
    PingTimeout(Duration),
    /// The operator's config: the TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Runs one PBX's client until `cancel`: connects, and reconnects with backoff.
pub async fn run(
    config: AmiConfig,
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    events: mpsc::Sender<CallEvent>,
    dialers: Arc<Dialers>,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("ami", pbx = %config.name);
    async move {
        let tls = match config.tls_connector() {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!(%error, "AMI TLS set-up failed; not connecting.");
                return;
            }
        };
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        let mut client = Client {
            mapper: Mapper::new(&config.name, known),
            emitter: Emitter::new(events),
            config: &config,
            tls,
            dialers,
        };
        cti::reconnect(&mut client, &config.name, &config.address, backoff, &cancel).await;
    }
    .instrument(span)
    .await
}

/// One PBX's AMI client, as the shared reconnect loop runs it.
struct Client<'a> {
    config: &'a AmiConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    mapper: Mapper,
    emitter: Emitter,
    dialers: Arc<Dialers>,
}

impl cti::Session for Client<'_> {
    type Error = AmiError;
    const INPUT: &'static str = INPUT;
    const WHAT: &'static str = "AMI";

    fn refused(error: &AmiError) -> bool {
        matches!(error, AmiError::Login(_))
    }

    async fn run_once(
        &mut self,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Result<(), AmiError> {
        let config = self.config;
        let stream = cti::connect(
            &config.address,
            config.connect_timeout,
            AmiError::Timeout("connecting"),
        )
        .await?;
        let mut session = Session {
            config,
            mapper: &mut self.mapper,
            emitter: &self.emitter,
            backoff,
            dialers: &self.dialers,
        };
        match &self.tls {
            None => session.serve(stream, cancel).await,
            Some((connector, name)) => {
                let handshake = tokio::time::timeout(
                    config.connect_timeout,
                    connector.connect(name.clone(), stream),
                );
                match handshake.await {
                    Err(_) => Err(AmiError::Timeout("in the TLS handshake")),
                    Ok(Err(error)) => Err(AmiError::Io(error)),
                    Ok(Ok(stream)) => session.serve(stream, cancel).await,
                }
            }
        }
    }
}

struct Session<'a> {
    config: &'a AmiConfig,
    mapper: &'a mut Mapper,
    emitter: &'a Emitter,
    backoff: &'a mut Backoff,
    dialers: &'a Arc<Dialers>,
}

/// The `Originate` action for a call-back [PROTOCOLS.md §3]: the agent's channel first, then
/// `Exten` in the configured context; `None` when the request is not safe to write.
fn originate(config: &AmiConfig, request: &DialRequest, id: &str) -> Option<Vec<(&'static str, String)>> {
    if !request.is_safe() {
        return None;
    }
    let name = request.caller_name();
    Some(vec![
        ("Action", "Originate".into()),
        ("ActionID", id.into()),
        (
            "Channel",
            config
                .originate_channel
                .replace("{extension}", &request.extension),
        ),
        ("Context", config.originate_context.clone()),
        ("Exten", request.number.clone()),
        ("Priority", "1".into()),
        ("CallerID", format!("\"{name}\" <{}>", request.extension)),
        ("Async", "true".into()),
    ])
}

/// The prefix of the `ActionID` of every `Originate` this client sends.
const DIAL_ID: &str = "screenpop-dial-";

async fn send<W: AsyncWrite + Unpin>(w: &mut W, fields: &[(&str, &str)]) -> Result<(), AmiError> {
    let text = Message::render(fields);
    tokio::time::timeout(WRITE_TIMEOUT, w.write_all(text.as_bytes()))
        .await
        .map_err(|_| AmiError::Timeout("writing"))??;
    Ok(())
}

/// Reads more bytes into the framer; EOF is [`AmiError::Closed`].
async fn fill<R: AsyncRead + Unpin>(r: &mut R, framer: &mut Framer) -> Result<(), AmiError> {
    framer.buffer().reserve(8192);
    match r.read_buf(framer.buffer()).await? {
        0 => Err(AmiError::Closed),
        _ => Ok(()),
    }
}

/// The banner, then `Login` with the configured credentials, within [`LOGIN_TIMEOUT`]; the
/// banner on success. Events that arrive before the login's response are left in `framer`.
async fn login<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    wr: &mut W,
    framer: &mut Framer,
    config: &AmiConfig,
) -> Result<String, AmiError> {
    let login_deadline = Instant::now() + LOGIN_TIMEOUT;
    // Banner: one line, not a message.
    let banner = loop {
        if let Some(line) = framer.line() {
            break line;
        }
        tokio::time::timeout_at(login_deadline, fill(rd, framer))
            .await
            .map_err(|_| AmiError::Timeout("waiting for the banner"))??;
    };
    if !banner.starts_with("Asterisk Call Manager") {
        let shown: String = banner.chars().take(60).collect();
        return Err(AmiError::Banner(shown));
    }
    tracing::debug!(%banner, "AMI banner.");

    let secret = config.secret.as_ref().map(Secret::expose).unwrap_or("");
    send(
        wr,
        &[
            ("Action", "Login"),
            ("ActionID", "screenpop-login"),
            ("Username", &config.username),
            ("Secret", secret),
            ("Events", &config.events),
        ],
    )
    .await?;
    loop {
        let item = loop {
            if let Some(item) = framer.next_item() {
                break item;
            }
            tokio::time::timeout_at(login_deadline, fill(rd, framer))
                .await
                .map_err(|_| AmiError::Timeout("waiting for the login response"))??;
        };
        let Item::Message(msg) = item else {
            cti::count_garbage(INPUT);
            continue;
        };
        if msg.get("ActionID") != Some("screenpop-login") || msg.response().is_none() {
            continue; // events before the login response are not ours yet
        }
        if msg
            .response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
        {
            return Ok(banner);
        }
        let why = msg.get("Message").unwrap_or("no reason given");
        return Err(AmiError::Login(why.chars().take(120).collect()));
    }
}

/// Checks that the PBX can be reached and takes the credentials (`check-config --connect`):
/// connect (TLS when configured), banner, `Login`, `Logoff`; the banner. The caller bounds it
/// in time; the secret must be resolved.
pub async fn probe(config: &AmiConfig) -> Result<String, AmiError> {
    async fn on<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        config: &AmiConfig,
    ) -> Result<String, AmiError> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut framer = Framer::new();
        let banner = login(&mut rd, &mut wr, &mut framer, config).await?;
        send(
            &mut wr,
            &[("Action", "Logoff"), ("ActionID", "screenpop-logoff")],
        )
        .await?;
        Ok(banner)
    }
    let tls = config.tls_connector().map_err(AmiError::Tls)?;
    let stream = cti::connect(
        &config.address,
        config.connect_timeout,
        AmiError::Timeout("connecting"),
    )
    .await?;
    match tls {
        None => on(stream, config).await,
        Some((connector, name)) => {
            let stream = tokio::time::timeout(config.connect_timeout, connector.connect(name, stream))
                .await
                .map_err(|_| AmiError::Timeout("in the TLS handshake"))??;
            on(stream, config).await
        }
    }
}

impl Session<'_> {
    /// One connection: `Ok` only when cancelled.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        cancel: &CancellationToken,
    ) -> Result<(), AmiError> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut framer = Framer::new();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            done = login(&mut rd, &mut wr, &mut framer, self.config) => { done?; }
        }
        cti::set_connected(INPUT, &self.config.name, true);
        self.backoff.reset();
        tracing::info!(address = %self.config.address, "AMI connected.");
        // Places call-backs while this connection lasts; dropped (unregistered) on any return.
        let (_registration, mut dials) = self.dialers.register(&self.config.name);
        let mut pending: HashMap<String, oneshot::Sender<Result<(), DialError>>> = HashMap::new();
        let mut dial_seq = 0u64;

        // Resync: what is live now, after a start or a gap.
        let resync_id = format!("screenpop-resync-{}", rand::random::<u32>());
        self.mapper.begin_resync();
        send(
            &mut wr,
            &[("Action", "CoreShowChannels"), ("ActionID", &resync_id)],
        )
        .await?;

        let mut ping_seq = 0u64;
        let mut next_ping = Instant::now() + self.config.ping_interval;
        let mut pong_deadline: Option<Instant> = None;
        loop {
            while let Some(item) = framer.next_item() {
                let msg = match item {
                    Item::Message(msg) => msg,
                    Item::Garbage => {
                        cti::count_garbage(INPUT);
                        continue;
                    }
                };
                // `OriginateResponse` is an event with a `Response` field: not an answer.
                if msg.response().is_some() && msg.event().is_none() {
                    let id = msg.get("ActionID").unwrap_or_default();
                    if id.starts_with("screenpop-ping-") {
                        pong_deadline = None;
                    } else if let Some(reply) = pending.remove(id) {
                        let result = if msg
                            .response()
                            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
                        {
                            Ok(())
                        } else {
                            let why = msg.get("Message").unwrap_or("no reason given");
                            Err(DialError::Refused(why.chars().take(200).collect()))
                        };
                        let _ = reply.send(result);
                    } else if id == resync_id
                        && !msg
                            .response()
                            .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
                    {
                        tracing::warn!(
                            reason = msg.get("Message").unwrap_or_default(),
                            "CoreShowChannels refused: no resync (grant `write = reporting`)."
                        );
                        self.mapper.abort_resync();
                    }
                    continue;
                }
                let Some(event) = msg.event() else {
                    cti::count_garbage(INPUT);
                    continue;
                };
                if event == "OriginateResponse"
                    && msg.get("ActionID").is_some_and(|id| id.starts_with(DIAL_ID))
                {
                    // How the call-back went once queued: `Reason` 4 answered, 3 no answer,
                    // 5 busy, 0 failed.
                    tracing::debug!(
                        response = msg.get("Response").unwrap_or_default(),
                        reason = msg.get("Reason").unwrap_or_default(),
                        "Call-back origination finished."
                    );
                }
                let Some(kind) = EVENTS.iter().find(|e| **e == event) else {
                    cti::count_event(INPUT, "other");
                    continue;
                };
                cti::count_event(INPUT, kind);
                if let Some(ts) = msg.get("Timestamp").and_then(|t| t.parse::<f64>().ok()) {
                    cti::record_lag(INPUT, ts);
                }
                let ours = msg.get("ActionID") == Some(resync_id.as_str());
                let out = match *kind {
                    "Shutdown" => return Err(AmiError::Shutdown),
                    "CoreShowChannel" if ours => self.mapper.resync_channel(&msg),
                    "CoreShowChannelsComplete" if ours => {
                        cti::count_resync(INPUT);
                        let out = self.mapper.finish_resync();
                        tracing::info!(
                            calls = self.mapper.calls(),
                            ended = out.len(),
                            "AMI resync complete."
                        );
                        out
                    }
                    "CoreShowChannel" | "CoreShowChannelsComplete" => Vec::new(),
                    _ => self.mapper.apply(&msg),
                };
                self.emitter.emit(out);
            }
            // Dials whose agent stopped waiting (timed out) free their place.
            pending.retain(|_, reply| !reply.is_closed());
            let wake = pong_deadline.map_or(next_ping, |d| d.min(next_ping));
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = send(&mut wr, &[("Action", "Logoff")]).await;
                    return Ok(());
                }
                read = fill(&mut rd, &mut framer) => read?,
                Some(dial) = dials.recv(), if pending.len() < DIAL_QUEUE => {
                    dial_seq += 1;
                    let id = format!("{DIAL_ID}{dial_seq}");
                    match originate(self.config, &dial.request, &id) {
                        None => {
                            let _ = dial.reply.send(Err(DialError::Refused(
                                "the extension or number cannot be dialled".into(),
                            )));
                        }
                        Some(fields) => {
                            let fields: Vec<(&str, &str)> =
                                fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                            send(&mut wr, &fields).await?;
                            pending.insert(id, dial.reply);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if pong_deadline.is_some_and(|d| d <= now) {
                        return Err(AmiError::PingTimeout(self.config.ping_timeout));
                    }
                    if next_ping <= now {
                        ping_seq += 1;
                        let ping_id = format!("screenpop-ping-{ping_seq}");
                        send(&mut wr, &[("Action", "Ping"), ("ActionID", &ping_id)]).await?;
                        next_ping = now + self.config.ping_interval;
                        if pong_deadline.is_none() {
                            pong_deadline = Some(now + self.config.ping_timeout);
                        }
                    }
                }
            }
        }
    }
}

impl crate::telephony::intake::Section for AmiConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), crate::telephony::intake::Invalid> {
        use crate::telephony::intake::check;
        check::address("address", &self.address)?;
        check::one_secret("secret", self.secret.is_some(), self.secret_env.is_some())?;
        check::nonzero("ping_interval", self.ping_interval)?;
        check::nonzero("ping_timeout", self.ping_timeout)?;
        if self.username.is_empty() {
            return Err(("username".into(), "must not be empty".into()));
        }
        check::originate(
            ("originate_channel", &self.originate_channel),
            ("originate_context", &self.originate_context),
        )
    }

    fn secret_env(&self) -> Option<(&'static str, &str)> {
        self.secret_env.as_deref().map(|var| ("secret_env", var))
    }

    fn resolve(&mut self, base: &std::path::Path) -> anyhow::Result<()> {
        crate::telephony::intake::check::secret_env(
            "secret_env",
            self.secret_env.as_deref(),
            &mut self.secret,
        )?;
        if let Some(ca) = &self.tls_ca_file
            && ca.is_relative()
        {
            self.tls_ca_file = Some(base.join(ca));
        }
        self.tls_connector().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("AMI  {} → {}", self.name, self.address)
    }
}

impl crate::telephony::intake::Client for AmiConfig {
    fn key(&self) -> String {
        format!("ami {}", self.name)
    }

    fn digest(&self) -> [u8; 32] {
        crate::telephony::intake::digest(self, self.secret.as_ref().map(Secret::expose))
    }

    fn start<'a>(
        &'a self,
        ctx: &'a crate::telephony::intake::Context,
        stop: CancellationToken,
    ) -> crate::telephony::intake::Started<'a> {
        crate::telephony::intake::spawned(
            ctx,
            run(
                self.clone(),
                ctx.known.clone(),
                ctx.events.clone(),
                ctx.dialers.clone(),
                stop,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// Reads one action (up to its blank line) from the client's side of the pipe.
    async fn action(server: &mut DuplexStream) -> String {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while !text.ends_with(b"\r\n\r\n") {
            server.read_exact(&mut byte).await.expect("read");
            text.push(byte[0]);
        }
        String::from_utf8(text).expect("utf-8")
    }

    fn action_id(action: &str) -> String {
        action
            .lines()
            .find_map(|l| l.strip_prefix("ActionID: "))
            .expect("ActionID")
            .to_owned()
    }

    #[tokio::test]
    async fn events_interleaved_with_responses_over_a_pipe() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (tx, mut rx) = mpsc::channel(16);
        let mut config = AmiConfig::new("p", "unused:1", "u", "s");
        config.ping_interval = Duration::from_millis(10);
        config.ping_timeout = Duration::from_secs(5);
        let mut mapper = Mapper::new("p", Arc::new(|e: &str| e == "2001"));
        let emitter = Emitter::new(tx);
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let cancel = CancellationToken::new();
        let dialers = Dialers::new();
        let mut session = Session {
            config: &config,
            mapper: &mut mapper,
            emitter: &emitter,
            backoff: &mut backoff,
            dialers: &dialers,
        };
        let script = async {
            server
                .write_all(b"Asterisk Call Manager/9.0.0\r\n")
                .await
                .expect("banner");
            let login = action(&mut server).await;
            assert!(login.starts_with("Action: Login\r\n"), "{login}");
            assert!(login.contains("Username: u\r\nSecret: s\r\nEvents: system,call,agent\r\n"));
            // An event before the login response, then the response.
            server
                .write_all(b"Event: FullyBooted\r\nPrivilege: system,all\r\n\r\nResponse: Success\r\nActionID: screenpop-login\r\nMessage: Authentication accepted\r\n\r\n")
                .await
                .expect("login");
            let resync = action(&mut server).await;
            assert!(
                resync.starts_with("Action: CoreShowChannels\r\n"),
                "{resync}"
            );
            let id = action_id(&resync);
            // The list response, with a call's events interleaved between its items, and bare LF.
            let reply = format!(
                "Response: Success\r\nActionID: {id}\r\nEventList: start\r\n\r\n\
                 Event: Newchannel\nChannel: PJSIP/trunk-1\nChannelState: 4\nCallerIDNum: +14155550100\nUniqueid: 9.1\nLinkedid: 9.1\n\n\
                 Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
            );
            server.write_all(reply.as_bytes()).await.expect("resync");
            // A Ping arrives; answer it between two events of the call.
            let ping = action(&mut server).await;
            assert!(ping.starts_with("Action: Ping\r\n"), "{ping}");
            let pong = format!(
                "Event: Newchannel\r\nChannel: PJSIP/2001-2\r\nChannelState: 0\r\nUniqueid: 9.2\r\nLinkedid: 9.1\r\n\r\n\
                 Response: Success\r\nActionID: {}\r\nPing: Pong\r\n\r\n\
                 Event: Newstate\r\nChannel: PJSIP/2001-2\r\nChannelState: 5\r\nUniqueid: 9.2\r\nLinkedid: 9.1\r\n\r\n",
                action_id(&ping)
            );
            server.write_all(pong.as_bytes()).await.expect("pong");
            let event = tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .expect("an event within 3 s")
                .expect("open");
            cancel.cancel();
            // Draining the pipe lets the client's Logoff through.
            let mut logoff = false;
            for _ in 0..100 {
                if action(&mut server).await.contains("Action: Logoff") {
                    logoff = true;
                    break;
                }
            }
            assert!(logoff, "a Logoff after the Pings");
            event
        };
        let (result, event) = tokio::join!(session.serve(client, &cancel), script);
        assert!(result.is_ok(), "{result:?}");
        let CallEvent::Ringing {
            key,
            extension,
            caller,
            ..
        } = event
        else {
            panic!("ringing, got {event:?}")
        };
        assert_eq!((key.as_str(), extension.as_str()), ("p:9.1", "2001"));
        assert_eq!(caller.number.as_deref(), Some("+14155550100"));
    }

    #[tokio::test]
    async fn a_refused_login_and_a_wrong_banner_are_errors() {
        let config = AmiConfig::new("p", "unused:1", "u", "wrong");
        for (wire, want) in [
            (
                &b"Asterisk Call Manager/9.0.0\r\nResponse: Error\r\nActionID: screenpop-login\r\nMessage: Authentication failed\r\n\r\n"[..],
                "login refused",
            ),
            (&b"SSH-2.0-OpenSSH_9.6\r\n"[..], "not an AMI banner"),
        ] {
            let (client, mut server) = tokio::io::duplex(4096);
            server.write_all(wire).await.expect("write");
            let (tx, _rx) = mpsc::channel(1);
            let mut mapper = Mapper::new("p", Arc::new(|_: &str| true));
            let emitter = Emitter::new(tx);
            let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
            let dialers = Dialers::new();
            let mut session = Session {
                config: &config,
                mapper: &mut mapper,
                emitter: &emitter,
                backoff: &mut backoff,
                dialers: &dialers,
            };
            let error = session
                .serve(client, &CancellationToken::new())
                .await
                .expect_err("an error");
            assert!(error.to_string().contains(want), "{error}");
            assert!(!error.to_string().contains("wrong"), "the secret is never shown");
        }
    }
}
