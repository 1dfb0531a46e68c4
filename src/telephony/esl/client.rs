//! The inbound event-socket connection loop: connect, `auth`, `event json …`,
//! `api show calls as json` resync, events; any traffic (HEARTBEAT every 20 s by default) proves
//! the connection alive, silence past `liveness_timeout` drops it; reconnect with exponential
//! backoff and resync again [PROTOCOLS.md §4 "Handshake", "Resync"].
//!
//! ```text
//!  connect ─▶ auth/request ─▶ auth ─▶ event json … ─▶ api show calls as json ─▶ events … ─┐
//!     ▲                                                                                   │
//!     └──────────── backoff ◀── EOF, -ERR, disconnect-notice, silence past the deadline ──┘
//! ```
//!
//! While subscribed, the connection is registered in [`Dialers`] and places call-backs:
//! `bgapi originate {origination_caller_id_…}<endpoint> <number> XML <context>`. The switch
//! answers every command with one `command/reply`, in order (`api` with `api/response`), so
//! the replies after the handshake answer the `bgapi`s in the order they were sent:
//! `+OK Job-UUID: …` queued the call, `-ERR …` refused it. The call's own outcome comes later
//! in a `BACKGROUND_JOB` event, which is not subscribed: the agent's phone rings or it does
//! not. The dial queue is read only while fewer than [`DIAL_QUEUE`] wait for a reply.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::frame::{Frame, Framer, Item};
use super::map::{EVENTS, Event, Mapper};
use crate::backoff::Backoff;
use crate::calls::CallEvent;
use crate::calls::dial::{DIAL_QUEUE, DialError, DialRequest, Dialers};
use crate::telephony::ami::client::{default_reconnect_max, default_reconnect_min};
use crate::telephony::cti::{self, Emitter, Secret};

/// The `input` label of the CTI metrics.
pub const INPUT: &str = "esl";
/// How long the handshake may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// `[[esl]]`: one FreeSWITCH server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EslConfig {
    /// A short unique name for this switch (`fs1`): the `peer` metrics label and call-key prefix.
    pub name: String,
    /// `host:port` of mod_event_socket (default port 8021).
    pub address: String,
    /// The event-socket password (`event_socket.conf.xml`). Prefer `password_env`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The environment variable holding the password, read at start-up.
    #[serde(default)]
    pub password_env: Option<String>,
    /// No traffic at all for this long → reconnect (HEARTBEAT comes every 20 s by default).
    #[serde(default = "default_liveness", with = "crate::serde_ext::duration")]
    pub liveness_timeout: Duration,
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
    /// The endpoint a call-back rings first, `{extension}` being the agent's own
    /// (`POST /api/callbacks/{id}/dial`; the event-socket user must be allowed `bgapi`).
    #[serde(default = "default_originate_endpoint")]
    pub originate_endpoint: String,
    /// The XML dialplan context the number is dialled in once the agent answers.
    #[serde(default = "default_originate_context")]
    pub originate_context: String,
}

fn default_originate_endpoint() -> String {
    "user/{extension}".into()
}
fn default_originate_context() -> String {
    "default".into()
}
fn default_liveness() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl EslConfig {
    /// Settings for a switch at `address` with everything else defaulted.
    pub fn new(name: &str, address: &str, password: &str) -> Self {
        EslConfig {
            name: name.into(),
            address: address.into(),
            password: Some(Secret::new(password)),
            password_env: None,
            liveness_timeout: default_liveness(),
            connect_timeout: default_connect_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            originate_endpoint: default_originate_endpoint(),
            originate_context: default_originate_context(),
        }
    }
}

/// Why an event-socket connection ended. Says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum EslError {
    /// The network.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The network or the switch: nothing came in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The switch closed the connection (or announced it would).
    #[error("the switch closed the connection")]
    Closed,
    /// Not an event socket (wrong port?).
    #[error("not an event socket: expected auth/request, got {0:?}")]
    Handshake(String),
    /// The operator's config: wrong password (or an ACL refusing us).
    #[error("auth refused ({0}); check the password and apply-inbound-acl")]
    Auth(String),
    /// The switch refused the event subscription.
    #[error("event subscription refused: {0}")]
    Subscribe(String),
    /// Nothing at all arrived within the liveness timeout.
    #[error("silent for {0:?}")]
    Silent(Duration),
}

/// Runs one switch's client until `cancel`.
pub async fn run(
    config: EslConfig,
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    events: mpsc::Sender<CallEvent>,
    dialers: Arc<Dialers>,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("esl", pbx = %config.name);
    async move {
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        let mut client = Client {
            mapper: Mapper::new(&config.name, known),
            emitter: Emitter::new(events),
            config: &config,
            dialers,
        };
        cti::reconnect(&mut client, &config.name, &config.address, backoff, &cancel).await;
    }
    .instrument(span)
    .await
}

/// One PBX's event-socket client, as the shared reconnect loop runs it.
struct Client<'a> {
    config: &'a EslConfig,
    mapper: Mapper,
    emitter: Emitter,
    dialers: Arc<Dialers>,
}

impl cti::Session for Client<'_> {
    type Error = EslError;
    const INPUT: &'static str = INPUT;
    const WHAT: &'static str = "Event socket";

    fn refused(error: &EslError) -> bool {
        matches!(error, EslError::Auth(_))
    }

    async fn run_once(
        &mut self,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Result<(), EslError> {
        let config = self.config;
        let stream = cti::connect(
            &config.address,
            config.connect_timeout,
            EslError::Timeout("connecting"),
        )
        .await?;
        serve(
            stream,
            config,
            &mut self.mapper,
            &self.emitter,
            (backoff, &self.dialers),
            cancel,
        )
        .await
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, command: &str) -> Result<(), EslError> {
    // A line break in a command would inject another; configuration values never need one.
    let clean: String = command
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let text = format!("{clean}\n\n");
    tokio::time::timeout(WRITE_TIMEOUT, w.write_all(text.as_bytes()))
        .await
        .map_err(|_| EslError::Timeout("writing"))??;
    Ok(())
}

async fn next_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    framer: &mut Framer,
    deadline: Instant,
    what: &'static str,
) -> Result<Frame, EslError> {
    loop {
        match framer.next_item() {
            Some(Item::Frame(frame)) => return Ok(frame),
            Some(Item::Garbage) => {
                cti::count_garbage(INPUT);
                continue;
            }
            None => {}
        }
        framer.buffer().reserve(8192);
        let n = tokio::time::timeout_at(deadline, r.read_buf(framer.buffer()))
            .await
            .map_err(|_| EslError::Timeout(what))??;
        if n == 0 {
            return Err(EslError::Closed);
        }
    }
}

/// The next `command/reply`, skipping anything else (an event that raced the reply).
async fn next_reply<R: AsyncRead + Unpin>(
    r: &mut R,
    framer: &mut Framer,
    deadline: Instant,
    what: &'static str,
) -> Result<Frame, EslError> {
    loop {
        let frame = next_frame(r, framer, deadline, what).await?;
        match frame.content_type() {
            "command/reply" => return Ok(frame),
            "text/disconnect-notice" => return Err(EslError::Closed),
            _ => {}
        }
    }
}

/// The `bgapi originate` command for a call-back: the agent's endpoint first, then the number
/// in the XML dialplan's context; `None` when the request is not safe to write.
fn originate(config: &EslConfig, request: &DialRequest) -> Option<String> {
    if !request.is_safe() {
        return None;
    }
    // Channel variables: a value with spaces is single-quoted; the name has no quote or comma.
    Some(format!(
        "bgapi originate {{origination_caller_id_name='{name}',origination_caller_id_number={ext}}}{endpoint} {number} XML {context}",
        name = request.caller_name(),
        ext = request.extension,
        endpoint = config
            .originate_endpoint
            .replace("{extension}", &request.extension),
        number = request.number,
        context = config.originate_context,
    ))
}

/// The reply to a command: `+OK …` or the error text.
fn reply(frame: &Frame) -> Result<(), String> {
    let text = frame.get("Reply-Text").unwrap_or_default();
    if text.starts_with("+OK") {
        Ok(())
    } else {
        Err(text.chars().take(120).collect())
    }
}

/// `auth/request`, then `auth` with the configured password, and its reply, by `deadline`.
async fn auth<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    wr: &mut W,
    framer: &mut Framer,
    config: &EslConfig,
    deadline: Instant,
) -> Result<(), EslError> {
    let hello = next_frame(rd, framer, deadline, "waiting for auth/request").await?;
    if hello.content_type() != "auth/request" {
        return Err(EslError::Handshake(
            hello.content_type().chars().take(60).collect(),
        ));
    }
    let password = config.password.as_ref().map(Secret::expose).unwrap_or("");
    send(wr, &format!("auth {password}")).await?;
    let answer = next_reply(rd, framer, deadline, "waiting for the auth reply").await?;
    reply(&answer).map_err(EslError::Auth)
}

/// Checks that the switch can be reached and takes the password (`check-config --connect`):
/// connect, `auth`, its reply, `exit`. The caller bounds it in time; the password must be
/// resolved.
pub async fn probe(config: &EslConfig) -> Result<(), EslError> {
    let stream = cti::connect(
        &config.address,
        config.connect_timeout,
        EslError::Timeout("connecting"),
    )
    .await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = Framer::new();
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    auth(&mut rd, &mut wr, &mut framer, config, deadline).await?;
    send(&mut wr, "exit").await
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: &EslConfig,
    mapper: &mut Mapper,
    emitter: &Emitter,
    (backoff, dialers): (&mut Backoff, &Arc<Dialers>),
    cancel: &CancellationToken,
) -> Result<(), EslError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = Framer::new();
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    let handshake = async {
        auth(&mut rd, &mut wr, &mut framer, config, deadline).await?;
        send(&mut wr, &format!("event json {}", EVENTS.join(" "))).await?;
        let answer = next_reply(
            &mut rd,
            &mut framer,
            deadline,
            "waiting for the event reply",
        )
        .await?;
        reply(&answer).map_err(EslError::Subscribe)?;
        Ok::<(), EslError>(())
    };
    tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        done = handshake => done?,
    }
    cti::set_connected(INPUT, &config.name, true);
    backoff.reset();
    tracing::info!(address = %config.address, "Event socket connected.");
    send(&mut wr, "api show calls as json").await?;
    let mut resync_pending = true;
    // Places call-backs while this connection lasts; dropped (unregistered) on any return.
    let (_registration, mut dials) = dialers.register(&config.name);
    // The `bgapi`s sent and not yet answered, oldest first (replies come in order).
    let mut pending: VecDeque<oneshot::Sender<Result<(), DialError>>> = VecDeque::new();

    let mut silent_until = Instant::now() + config.liveness_timeout;
    loop {
        while let Some(item) = framer.next_item() {
            let frame = match item {
                Item::Frame(frame) => frame,
                Item::Garbage => {
                    cti::count_garbage(INPUT);
                    continue;
                }
            };
            match frame.content_type() {
                "text/event-json" => {
                    let Some(event) = Event::parse(&frame.body) else {
                        cti::count_garbage(INPUT);
                        continue;
                    };
                    let name = event.get("Event-Name").unwrap_or_default();
                    let Some(kind) = EVENTS.iter().find(|e| **e == name) else {
                        cti::count_event(INPUT, "other");
                        continue;
                    };
                    cti::count_event(INPUT, kind);
                    // Event-Date-Timestamp is in microseconds.
                    if let Some(us) = event
                        .get("Event-Date-Timestamp")
                        .and_then(|t| t.parse::<f64>().ok())
                    {
                        cti::record_lag(INPUT, us / 1e6);
                    }
                    emitter.emit(mapper.apply(&event));
                }
                "api/response" if resync_pending => {
                    resync_pending = false;
                    match mapper.resync(&frame.body) {
                        Ok(out) => {
                            cti::count_resync(INPUT);
                            tracing::info!(
                                calls = mapper.calls(),
                                ended = out.len(),
                                "Event socket resync complete."
                            );
                            emitter.emit(out);
                        }
                        Err(error) => {
                            cti::count_garbage(INPUT);
                            tracing::warn!(%error, "`show calls as json` unreadable: no resync.");
                        }
                    }
                }
                "text/disconnect-notice" => return Err(EslError::Closed),
                "command/reply" => match (pending.pop_front(), reply(&frame)) {
                    (Some(dial), result) => {
                        let _ = dial.send(result.map_err(DialError::Refused));
                    }
                    (None, Err(text)) => {
                        tracing::warn!(reply = %text, "Event socket command refused.");
                    }
                    (None, Ok(())) => {}
                },
                _ => {}
            }
        }
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = send(&mut wr, "exit").await;
                return Ok(());
            }
            read = async {
                framer.buffer().reserve(8192);
                rd.read_buf(framer.buffer()).await
            } => {
                if read? == 0 {
                    return Err(EslError::Closed);
                }
                silent_until = Instant::now() + config.liveness_timeout;
            }
            () = tokio::time::sleep_until(silent_until) => {
                return Err(EslError::Silent(config.liveness_timeout));
            }
            Some(dial) = dials.recv(), if pending.len() < DIAL_QUEUE => {
                match originate(config, &dial.request) {
                    None => {
                        let _ = dial.reply.send(Err(DialError::Refused(
                            "the extension or number cannot be dialled".into(),
                        )));
                    }
                    Some(command) => {
                        send(&mut wr, &command).await?;
                        pending.push_back(dial.reply);
                    }
                }
            }
        }
    }
}

impl crate::telephony::intake::Section for EslConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), crate::telephony::intake::Invalid> {
        use crate::telephony::intake::check;
        check::address("address", &self.address)?;
        check::one_secret(
            "password",
            self.password.is_some(),
            self.password_env.is_some(),
        )?;
        check::nonzero("liveness_timeout", self.liveness_timeout)?;
        check::originate(
            ("originate_endpoint", &self.originate_endpoint),
            ("originate_context", &self.originate_context),
        )
    }

    fn secret_env(&self) -> Option<(&'static str, &str)> {
        self.password_env.as_deref().map(|var| ("password_env", var))
    }

    fn resolve(&mut self, _base: &std::path::Path) -> anyhow::Result<()> {
        crate::telephony::intake::check::secret_env(
            "password_env",
            self.password_env.as_deref(),
            &mut self.password,
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("ESL  {} → {}", self.name, self.address)
    }
}

impl crate::telephony::intake::Client for EslConfig {
    fn key(&self) -> String {
        format!("esl {}", self.name)
    }

    fn digest(&self) -> [u8; 32] {
        crate::telephony::intake::digest(self, self.password.as_ref().map(|s| s.expose()))
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

    async fn command(server: &mut DuplexStream) -> String {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while !text.ends_with(b"\n\n") {
            server.read_exact(&mut byte).await.expect("read");
            text.push(byte[0]);
        }
        String::from_utf8(text)
            .expect("utf-8")
            .trim_end()
            .to_owned()
    }

    fn event(json: &str) -> String {
        format!(
            "Content-Length: {}\nContent-Type: text/event-json\n\n{json}",
            json.len()
        )
    }

    #[tokio::test]
    async fn handshake_tolerates_a_racing_event_then_resyncs_and_maps() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (tx, mut rx) = mpsc::channel(16);
        let config = EslConfig::new("fs", "unused:1", "pw");
        let mut mapper = Mapper::new("fs", Arc::new(|e: &str| e == "2001"));
        let emitter = Emitter::new(tx);
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let cancel = CancellationToken::new();
        let dialers = Dialers::new();
        let script = async {
            server
                .write_all(b"Content-Type: auth/request\n\n")
                .await
                .expect("hello");
            assert_eq!(command(&mut server).await, "auth pw");
            server
                .write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
                .await
                .expect("auth");
            let subscribe = command(&mut server).await;
            assert!(subscribe.starts_with("event json "), "{subscribe}");
            assert!(
                subscribe.contains(" CHANNEL_HANGUP_COMPLETE "),
                "{subscribe}"
            );
            // A heartbeat races the reply.
            let racing = event(r#"{"Event-Name":"HEARTBEAT"}"#)
                + "Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n";
            server.write_all(racing.as_bytes()).await.expect("reply");
            assert_eq!(command(&mut server).await, "api show calls as json");
            let rows = r#"{"row_count":1,"rows":[{"uuid":"a1","direction":"inbound","cid_num":"+14155550100","dest":"600","callstate":"ACTIVE","b_uuid":"b1","b_direction":"outbound","b_dest":"2001","b_callstate":"RINGING"}]}"#;
            let reply = format!(
                "Content-Type: api/response\nContent-Length: {}\n\n{rows}",
                rows.len()
            );
            server.write_all(reply.as_bytes()).await.expect("rows");
            let first = rx.recv().await.expect("ringing from the resync");
            server
                .write_all(event(r#"{"Event-Name":"CHANNEL_ANSWER","Call-Direction":"outbound","Unique-ID":"b1","Other-Leg-Unique-ID":"a1","Event-Date-Timestamp":"1731000104123456"}"#).as_bytes())
                .await
                .expect("answer");
            let second = rx.recv().await.expect("answered");
            cancel.cancel();
            assert_eq!(command(&mut server).await, "exit");
            (first, second)
        };
        let (result, (first, second)) = tokio::join!(
            serve(
                client,
                &config,
                &mut mapper,
                &emitter,
                (&mut backoff, &dialers),
                &cancel
            ),
            script
        );
        assert!(result.is_ok(), "{result:?}");
        assert!(
            matches!(&first, CallEvent::Ringing { key, extension, .. } if key == "fs:a1" && extension == "2001"),
            "{first:?}"
        );
        assert!(
            matches!(&second, CallEvent::Answered { by: Some(b), .. } if b == "2001"),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_password_is_an_auth_error_that_hides_it() {
        let (client, mut server) = tokio::io::duplex(4096);
        server
            .write_all(b"Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: -ERR invalid\n\n")
            .await
            .expect("write");
        let (tx, _rx) = mpsc::channel(1);
        let config = EslConfig::new("fs", "unused:1", "hunter2");
        let mut mapper = Mapper::new("fs", Arc::new(|_: &str| true));
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let error = serve(
            client,
            &config,
            &mut mapper,
            &Emitter::new(tx),
            (&mut backoff, &Dialers::new()),
            &CancellationToken::new(),
        )
        .await
        .expect_err("refused");
        assert!(matches!(error, EslError::Auth(_)), "{error}");
        assert!(!error.to_string().contains("hunter2"));
    }
}
