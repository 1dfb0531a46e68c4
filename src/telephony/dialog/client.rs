//! `[[dialog]]` and the task that runs one PBX's subscriptions: resolves the PBX, works out the
//! address to advertise, then drives [`Subscriber`] from its own UDP socket until cancelled, when
//! it unsubscribes.
//!
//! The socket is bound by the daemon before any task starts (a bind error stops start-up with
//! the address in the message). Datagrams are matched by Call-ID and tags, random per
//! subscription, so a forged NOTIFY would have to guess 128 bits; nothing else is trusted.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::INPUT;
use super::subscriber::{Output, Subscriber, SubscriptionSettings};
use crate::backoff::Backoff;
use crate::calls::CallEvent;
use crate::telephony::cti::{self, Emitter, Secret};

/// `[[dialog]]`: RFC 4235 dialog-event subscriptions to one PBX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogConfig {
    /// A short unique name for this PBX (`kam1`): the `peer` metrics label and call-key prefix.
    pub name: String,
    /// `host:port` of the PBX's SIP (UDP); every SUBSCRIBE goes there.
    pub pbx: String,
    /// The domain of the extensions' addresses (`sip:2001@domain`); defaults to the PBX host.
    #[serde(default)]
    pub domain: Option<String>,
    /// Local UDP address for the subscriptions (its own socket; not the fork-target listener's).
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The address put in Via and Contact, where the PBX sends NOTIFYs (behind NAT); defaults
    /// to the bound address, or the interface that routes to the PBX when bound to `0.0.0.0`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The username to authenticate as (also the From user).
    pub username: String,
    /// Its password. Prefer `password_env`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The environment variable holding the password, read at start-up.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The extensions to watch: one subscription each.
    pub extensions: Vec<String>,
    /// `Expires` asked for; refreshed at 80 %.
    #[serde(default = "default_expires", with = "crate::serde_ext::duration")]
    pub expires: Duration,
    /// First delay before subscribing again after an error (each wait is half to all of it); it
    /// doubles up to `retry_max`.
    #[serde(default = "default_retry_min", with = "crate::serde_ext::duration")]
    pub retry_min: Duration,
    /// Longest delay before subscribing again.
    #[serde(default = "default_retry_max", with = "crate::serde_ext::duration")]
    pub retry_max: Duration,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
fn default_expires() -> Duration {
    Duration::from_secs(3600)
}
fn default_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

impl DialogConfig {
    /// Settings for a PBX at `pbx` with everything else defaulted (tests, embedding).
    pub fn new(name: &str, pbx: &str, username: &str, password: &str, extensions: &[&str]) -> Self {
        DialogConfig {
            name: name.into(),
            pbx: pbx.into(),
            domain: None,
            bind: default_bind(),
            advertise: None,
            username: username.into(),
            password: Some(Secret::new(password)),
            password_env: None,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
            expires: default_expires(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
        }
    }

    /// The PBX's host (without the port).
    pub fn pbx_host(&self) -> &str {
        let host = self
            .pbx
            .rsplit_once(':')
            .map_or(self.pbx.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Why the subscriptions of a PBX could not run. Says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    /// The network (or DNS): the PBX address does not resolve.
    #[error("cannot resolve the PBX address {0:?}")]
    Resolve(String),
    /// The network: the socket failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

impl DialogConfig {
    /// The values that go into SIP URIs, and the timers.
    fn check_uris(&self) -> Result<(), crate::telephony::intake::Invalid> {
        if !uri_safe(&self.username, false) {
            return Err((
                "username".into(),
                "use 1 to 128 letters, digits or URI-safe marks (no spaces, `@`, `:` or `<>`)"
                    .into(),
            ));
        }
        if let Some(domain) = &self.domain
            && !uri_safe(domain, true)
        {
            return Err((
                "domain".into(),
                format!("`{domain}` is not a host name or address"),
            ));
        }
        if self.extensions.is_empty() {
            return Err((
                "extensions".into(),
                "list at least one extension to watch".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (j, ext) in self.extensions.iter().enumerate() {
            if !uri_safe(ext, false) || !seen.insert(ext) {
                return Err((
                    format!("extensions[{j}]"),
                    format!("`{ext}`: extensions are unique, without spaces, `@`, `:` or `<>`"),
                ));
            }
        }
        if self.expires > Duration::from_secs(86_400) {
            return Err((
                "expires".into(),
                "at most 1 day (the PBX may grant less; screenpop refreshes at 80 %)".into(),
            ));
        }
        if self.retry_min > self.retry_max {
            return Err(("retry_min".into(), "must not exceed retry_max".into()));
        }
        Ok(())
    }
}

/// Characters allowed in an extension, a username or a domain as screenpop writes them into
/// SIP URIs: RFC 3261 `unreserved` plus a few `user-unreserved`, and `[]:` for IPv6 domains.
pub fn uri_safe(s: &str, domain: bool) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || b"-_.!~*'()+".contains(&b)
                || (!domain && b"&=$,;?/".contains(&b))
                || (domain && b"[]:".contains(&b))
        })
}

async fn resolve(pbx: &str, v6: bool) -> Result<SocketAddr, DialogError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(pbx)
        .await
        .map_err(|_| DialogError::Resolve(pbx.to_owned()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv6() == v6)
        .or(addrs.first())
        .copied()
        .ok_or_else(|| DialogError::Resolve(pbx.to_owned()))
}

/// Checks that the PBX answers SIP (`check-config --connect`): one `OPTIONS` over UDP from an
/// ephemeral socket, resent every 500 ms (RFC 3261 §17.1.2's T1); any response to it counts,
/// `401` and `404` included. Its status line. The caller bounds it in time.
pub async fn probe(config: &DialogConfig) -> Result<String, DialogError> {
    let pbx = resolve(&config.pbx, false).await?;
    let unspecified = if pbx.is_ipv6() {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    };
    let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?;
    socket.connect(pbx).await?;
    let local = contact(
        &DialogConfig {
            advertise: None,
            ..config.clone()
        },
        socket.local_addr()?,
        pbx,
    );
    let token = || format!("{:016x}", rand::random::<u64>());
    let call_id = format!("{}@screenpop", token());
    let domain = config
        .domain
        .clone()
        .unwrap_or_else(|| config.pbx_host().to_owned());
    let local = super::subscriber::host_port(local);
    let request = format!(
        "OPTIONS sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{domain}>;tag={tag}\r\n\
         To: <sip:{domain}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:{user}@{local}>\r\n\
         Accept: application/sdp\r\n\
         User-Agent: {agent}\r\n\
         Content-Length: 0\r\n\r\n",
        branch = token(),
        user = config.username,
        tag = token(),
        agent = crate::telephony::sip::reply::SERVER,
    );
    let mut buf = vec![0u8; 65_535];
    loop {
        socket.send(request.as_bytes()).await?;
        let Ok(read) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await
        else {
            continue;
        };
        let answer = &buf[..read?];
        let text = String::from_utf8_lossy(answer);
        if text.starts_with("SIP/2.0 ") && text.contains(&call_id) {
            let status = text.lines().next().unwrap_or_default();
            return Ok(status.trim_start_matches("SIP/2.0 ").chars().take(80).collect());
        }
    }
}

/// The address the PBX should use for us: `advertise`, else the bound address, else (bound to
/// the unspecified address) the local address of the route to the PBX.
fn contact(config: &DialogConfig, bound: SocketAddr, pbx: SocketAddr) -> SocketAddr {
    if let Some(a) = config.advertise {
        return a;
    }
    if !bound.ip().is_unspecified() {
        return bound;
    }
    // connect() on UDP sends nothing: it only asks the kernel for the route.
    let probe = std::net::UdpSocket::bind(SocketAddr::new(
        if pbx.is_ipv6() {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0u8; 4])
        },
        0,
    ))
    .and_then(|s| s.connect(pbx).and_then(|()| s.local_addr()));
    match probe {
        Ok(local) => SocketAddr::new(local.ip(), bound.port()),
        Err(_) => bound,
    }
}

/// Runs one PBX's subscriptions on `socket` until `cancel`.
pub async fn run(
    config: DialogConfig,
    socket: UdpSocket,
    events: mpsc::Sender<CallEvent>,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("dialog", pbx = %config.name);
    async move {
        let emitter = Emitter::new(events);
        let bound = match socket.local_addr() {
            Ok(a) => a,
            Err(error) => {
                tracing::error!(%error, "Dialog subscription socket unusable.");
                return;
            }
        };
        let mut backoff = Backoff::new(config.retry_min, config.retry_max);
        let pbx = loop {
            match resolve(&config.pbx, bound.is_ipv6()).await {
                Ok(a) => break a,
                Err(error) => tracing::warn!(%error, "Retrying."),
            }
            if !cti::pause(backoff.next_delay(), &cancel).await {
                return;
            }
        };
        let settings = SubscriptionSettings {
            name: config.name.clone(),
            domain: config
                .domain
                .clone()
                .unwrap_or_else(|| config.pbx_host().to_owned()),
            username: config.username.clone(),
            password: config.password.clone().unwrap_or_else(|| Secret::new("")),
            extensions: config.extensions.clone(),
            expires: config.expires,
            retry_min: config.retry_min,
            retry_max: config.retry_max,
            contact: contact(&config, bound, pbx),
            pbx,
        };
        tracing::info!(
            %pbx,
            contact = %settings.contact,
            extensions = settings.extensions.len(),
            "Subscribing to dialog events."
        );
        let mut subscriber = Subscriber::new(settings, Instant::now());
        let mut buf = vec![0u8; 65_535];
        loop {
            flush(&socket, &mut subscriber, &emitter).await;
            let deadline = subscriber
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = cancel.cancelled() => {
                    subscriber.shutdown(Instant::now());
                    flush(&socket, &mut subscriber, &emitter).await;
                    cti::set_connected(INPUT, &config.name, false);
                    return;
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        subscriber.on_datagram(buf.get(..n).unwrap_or_default(), from, Instant::now());
                    }
                    Err(error) => {
                        // ICMP unreachable surfaces here on some systems; the timers retry.
                        tracing::debug!(%error, "Dialog socket receive error.");
                    }
                },
                () = tokio::time::sleep_until(deadline) => subscriber.on_timer(Instant::now()),
            }
        }
    }
    .instrument(span)
    .await
}

async fn flush(socket: &UdpSocket, subscriber: &mut Subscriber, emitter: &Emitter) {
    for output in subscriber.take() {
        match output {
            Output::Send { to, bytes } => {
                if let Err(error) = socket.send_to(&bytes, to).await {
                    metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "dialog_send_failed")
                        .increment(1);
                    tracing::debug!(%error, %to, "Dialog datagram not sent.");
                }
            }
            Output::Events(events) => {
                emitter.emit(events);
            }
        }
    }
}

impl crate::telephony::intake::Section for DialogConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), crate::telephony::intake::Invalid> {
        use crate::telephony::intake::check;
        check::address("pbx", &self.pbx)?;
        check::one_secret(
            "password",
            self.password.is_some(),
            self.password_env.is_some(),
        )?;
        self.check_uris()
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
        format!(
            "SUBSCRIBE  {} → {} ({} extensions)",
            self.name,
            self.pbx,
            self.extensions.len()
        )
    }
}

impl crate::telephony::intake::Client for DialogConfig {
    fn key(&self) -> String {
        format!("dialog {}", self.name)
    }

    fn digest(&self) -> [u8; 32] {
        crate::telephony::intake::digest(self, self.password.as_ref().map(|s| s.expose()))
    }

    fn start<'a>(
        &'a self,
        ctx: &'a crate::telephony::intake::Context,
        stop: CancellationToken,
    ) -> crate::telephony::intake::Started<'a> {
        Box::pin(async move {
            // A changed subscription on the same address: the old task lets go of the socket
            // as soon as it sees its stop.
            let mut tries = 0;
            let socket = loop {
                match UdpSocket::bind(self.bind).await {
                    Ok(socket) => break socket,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 40 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("binding dialog `{}` UDP {}", self.name, self.bind)));
                    }
                }
            };
            let bound = socket.local_addr()?;
            ctx.tasks
                .spawn(run(self.clone(), socket, ctx.events.clone(), stop));
            Ok(Some(bound))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_safe_values() {
        let mut c = DialogConfig::new("k", "pbx.example:5060", "u", "p", &["1001"]);
        assert_eq!(c.pbx_host(), "pbx.example");
        c.pbx = "[2001:db8::1]:5060".into();
        assert_eq!(c.pbx_host(), "2001:db8::1");
        assert!(uri_safe("+1001", false));
        assert!(!uri_safe("10 01", false));
        assert!(!uri_safe("a@b", false));
        assert!(uri_safe("[2001:db8::1]", true));
        assert!(!uri_safe("pbx.example;evil", true));
        assert!(!uri_safe("", true));
    }

    #[test]
    fn contact_prefers_advertise_then_bound() {
        let pbx: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let mut c = DialogConfig::new("k", "127.0.0.1:5060", "u", "p", &["1"]);
        let bound: SocketAddr = "127.0.0.2:5070".parse().expect("addr");
        assert_eq!(contact(&c, bound, pbx), bound);
        let any: SocketAddr = "0.0.0.0:5070".parse().expect("addr");
        assert_eq!(
            contact(&c, any, pbx),
            "127.0.0.1:5070".parse::<SocketAddr>().expect("addr")
        );
        c.advertise = Some("203.0.113.9:5999".parse().expect("addr"));
        assert_eq!(contact(&c, any, pbx), c.advertise.expect("set"));
    }
}
