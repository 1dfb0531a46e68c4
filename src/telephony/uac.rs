//! A minimal SIP user agent client: sends one INVITE and, after a hold, a CANCEL (optionally
//! with `Reason: SIP;cause=200`, "answered elsewhere") or a BYE. It is what `screenpop call`
//! uses so IT can check the wiring, and what the tests use as a real SIP peer.
//!
//! It speaks just enough RFC 3261 for that: UDP retransmits of the INVITE until a provisional
//! arrives (Timer A, T1 doubling), ACK for the non-2xx final [§17.1.1.3], TCP and TLS framing
//! by Content-Length. Over TLS [§26] the Via transport is `TLS` and the server's certificate is
//! checked against the WebPKI roots and a given CA, unless the caller explicitly accepts any
//! certificate (a demo's self-signed one); a client certificate can be presented (mutual TLS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::sip::scan::{Frame, Name, StartLine, Transport, frame, scan};

/// How the call attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// CANCEL: the caller hung up while it rang.
    Cancel,
    /// CANCEL with `Reason: SIP;cause=200`: another branch answered [RFC 3326].
    AnsweredElsewhere,
    /// BYE: the call was answered and is now over.
    Bye,
}

/// What the call travels over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CallTransport {
    /// UDP.
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls(TlsOptions),
}

impl CallTransport {
    /// The Via transport token.
    fn token(&self) -> &'static str {
        match self {
            CallTransport::Udp => "UDP",
            CallTransport::Tcp => "TCP",
            CallTransport::Tls(_) => "TLS",
        }
    }
}

/// How a TLS call checks the server and proves itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust anchors (PEM), besides the WebPKI roots.
    pub ca: Option<PathBuf>,
    /// Take any server certificate without checking it (a demo's self-signed one).
    pub accept_self_signed: bool,
    /// The name the certificate must carry; default: the target's IP address.
    pub server_name: Option<String>,
    /// A client certificate chain and its key (PEM files), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// One test call.
#[derive(Debug, Clone)]
pub struct TestCall {
    /// Where to send it.
    pub target: SocketAddr,
    /// UDP, TCP or TLS.
    pub transport: CallTransport,
    /// The extension to ring (Request-URI user).
    pub to: String,
    /// The caller's number (From and P-Asserted-Identity user).
    pub from: String,
    /// The caller's display name.
    pub display: Option<String>,
    /// How long to let it ring.
    pub hold: Duration,
    /// How it ends.
    pub ending: Ending,
}

/// What happened, for printing.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// The Call-ID used.
    pub call_id: String,
    /// Each response: status code, reason, CSeq method.
    pub responses: Vec<(u16, String, String)>,
}

/// Why a test call failed.
#[derive(Debug, thiserror::Error)]
pub enum UacError {
    /// Socket trouble.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing answered the INVITE.
    #[error(
        "no response to the INVITE from {0} within 4 s: is screenpop listening there, and is this host allowed?"
    )]
    NoResponse(SocketAddr),
    /// The TLS settings cannot be used (a CA or client-certificate file, the server name).
    #[error("tls: {0}")]
    TlsSettings(String),
    /// The TLS handshake failed (an untrusted certificate, a refused client certificate…).
    #[error("TLS handshake with {target} failed: {reason}{hint}")]
    Handshake {
        /// Where.
        target: SocketAddr,
        /// Why.
        reason: std::io::Error,
        /// What to try, for an untrusted certificate.
        hint: &'static str,
    },
}

/// A byte stream the call can run over: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, BytesMut),
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(bytes).await.map(|_| ()),
            Conn::Stream(s, _) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn recv(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        match self {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65_536];
                let n = timeout_at(deadline, s.recv(&mut buf)).await.ok()?.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Stream(s, buf) => loop {
                match frame(buf) {
                    Ok(Frame::Message(n)) => return Some(buf.split_to(n).to_vec()),
                    Ok(Frame::Skip { len, .. }) => buf.advance(len),
                    Ok(Frame::Incomplete) => {
                        let n = timeout_at(deadline, s.read_buf(buf)).await.ok()?.ok()?;
                        if n == 0 {
                            return None;
                        }
                    }
                    Err(_) => return None,
                }
            },
        }
    }
}

/// The rustls client config and server name for `options`.
fn tls_client(
    options: &TlsOptions,
    target: SocketAddr,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    UacError,
> {
    use crate::tls_client::{Verify, client_config_with};
    let verify = if options.accept_self_signed {
        Verify::AcceptAnyCertificate
    } else {
        Verify::Roots(options.ca.clone())
    };
    let identity = options
        .identity
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let config =
        client_config_with(&verify, identity).map_err(|e| UacError::TlsSettings(e.to_string()))?;
    let name = match &options.server_name {
        Some(name) => rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| UacError::TlsSettings(format!("server name `{name}`: {e}")))?,
        None => rustls_pki_types::ServerName::IpAddress(target.ip().into()),
    };
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// What to try when the server's certificate was not trusted.
fn handshake_hint(reason: &std::io::Error) -> &'static str {
    let text = reason.to_string();
    if text.contains("UnknownIssuer") {
        " (trust its CA with --ca FILE; a demo's self-signed certificate needs --accept-self-signed)"
    } else if text.contains("NotValidForName") {
        " (name the certificate's host with --server-name)"
    } else {
        ""
    }
}

/// Places the call and returns the responses seen.
pub async fn place(call: &TestCall) -> Result<Transcript, UacError> {
    // Settings first: a bad file is reported before anything is sent.
    let tls = match &call.transport {
        CallTransport::Tls(options) => Some(tls_client(options, call.target)?),
        _ => None,
    };
    let mut local = None;
    let mut conn = if call.transport != CallTransport::Udp {
        let stream = TcpStream::connect(call.target).await?;
        stream.set_nodelay(true)?;
        local = Some(stream.local_addr()?);
        let stream: Box<dyn Stream> = match tls {
            Some((connector, name)) => {
                Box::new(connector.connect(name, stream).await.map_err(|reason| {
                    UacError::Handshake {
                        target: call.target,
                        hint: handshake_hint(&reason),
                        reason,
                    }
                })?)
            }
            None => Box::new(stream),
        };
        Conn::Stream(stream, BytesMut::new())
    } else {
        let bind: SocketAddr = if call.target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad bind address"))?;
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(call.target).await?;
        Conn::Udp(socket)
    };
    let local = match (&conn, local) {
        (Conn::Udp(s), _) => s.local_addr()?,
        (Conn::Stream(..), Some(local)) => local,
        (Conn::Stream(..), None) => {
            return Err(UacError::Io(std::io::Error::other("no local address")));
        }
    };
    let reliable = call.transport != CallTransport::Udp;
    let ids = Ids::new();
    let mut transcript = Transcript {
        call_id: ids.call_id.clone(),
        responses: Vec::new(),
    };
    let invite = request(call, &ids, local, "INVITE", &ids.branch, None);

    // INVITE, retransmitted over UDP until any response (Timer A).
    let give_up = Instant::now() + Duration::from_secs(4);
    let mut interval = Duration::from_millis(500);
    conn.send(&invite).await?;
    loop {
        let next = (Instant::now() + interval).min(give_up);
        if let Some(bytes) = conn.recv(next).await {
            record(&bytes, &mut transcript);
            break;
        }
        if Instant::now() >= give_up {
            return Err(UacError::NoResponse(call.target));
        }
        if !reliable {
            conn.send(&invite).await?;
            interval *= 2;
        }
    }
    tokio::time::sleep(call.hold).await;

    let (method, branch, reason) = match call.ending {
        Ending::Cancel => ("CANCEL", ids.branch.clone(), None),
        Ending::AnsweredElsewhere => (
            "CANCEL",
            ids.branch.clone(),
            Some("SIP;cause=200;text=\"Call completed elsewhere\""),
        ),
        Ending::Bye => (
            "BYE",
            format!("z9hG4bK{:016x}", rand::random::<u64>()),
            None,
        ),
    };
    let end = request(call, &ids, local, method, &branch, reason);
    conn.send(&end).await?;
    // Collect responses for a moment: 200 to CANCEL and 487 to the INVITE, or 481 to BYE.
    let quiet = Instant::now() + Duration::from_millis(if reliable { 1500 } else { 1000 });
    let mut acked = false;
    while let Some(bytes) = conn.recv(quiet).await {
        let final_to_invite = record(&bytes, &mut transcript);
        if let Some(to) = final_to_invite.filter(|_| !acked) {
            conn.send(&ack(call, &ids, local, &to)).await?;
            acked = true;
        }
        if transcript
            .responses
            .iter()
            .any(|(c, _, m)| *c >= 200 && m == "INVITE")
            && transcript
                .responses
                .iter()
                .any(|(c, _, m)| *c >= 200 && m != "INVITE")
        {
            break;
        }
    }
    Ok(transcript)
}

struct Ids {
    call_id: String,
    from_tag: String,
    branch: String,
}

impl Ids {
    fn new() -> Self {
        Ids {
            call_id: format!("{:016x}@screenpop-call", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            branch: format!("z9hG4bK{:016x}", rand::random::<u64>()),
        }
    }
}

/// What a URI user part escapes: all but `unreserved` and `user-unreserved` [RFC 3261 §25.1].
const USER_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b',')
    .remove(b';')
    .remove(b'?')
    .remove(b'/');

/// Escapes a URI user part: what is not `unreserved` or `user-unreserved` becomes `%XX`
/// [RFC 3261 §25.1], so `(415) 555-0100` travels as `(415)%20555-0100`.
fn escape_user(user: &str) -> String {
    utf8_percent_encode(user, USER_ESCAPED).to_string()
}

fn host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

fn request(
    call: &TestCall,
    ids: &Ids,
    local: SocketAddr,
    method: &str,
    branch: &str,
    reason: Option<&str>,
) -> Vec<u8> {
    let transport = call.transport.token();
    let target = host(call.target);
    let display = call
        .display
        .as_deref()
        .map(|d| format!("\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\"")))
        .unwrap_or_default();
    let body = if method == "INVITE" {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            ip = local.ip()
        )
    } else {
        String::new()
    };
    let cseq = if method == "BYE" { 2 } else { 1 };
    let mut out = format!(
        "{method} sip:{to}@{target} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};rport;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: {display}<sip:{from}@{local_ip}>;tag={tag}\r\n\
         To: <sip:{to}@{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:{from}@{local};transport={t}>\r\n\
         User-Agent: screenpop-call/{version}\r\n",
        to = call.to,
        local = host(local),
        local_ip = host(local),
        from = escape_user(&call.from),
        tag = ids.from_tag,
        call_id = ids.call_id,
        t = transport.to_ascii_lowercase(),
        version = env!("CARGO_PKG_VERSION"),
    );
    if method == "INVITE" {
        out.push_str(&format!(
            "P-Asserted-Identity: {display}<sip:{}@{}>\r\n",
            escape_user(&call.from),
            host(local)
        ));
        out.push_str("Content-Type: application/sdp\r\n");
    }
    if let Some(reason) = reason {
        out.push_str(&format!("Reason: {reason}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn ack(call: &TestCall, ids: &Ids, local: SocketAddr, to: &str) -> Vec<u8> {
    let transport = call.transport.token();
    format!(
        "ACK sip:{ext}@{target} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};rport;branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:{from}@{local}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        ext = call.to,
        target = host(call.target),
        local = host(local),
        branch = ids.branch,
        from = escape_user(&call.from),
        tag = ids.from_tag,
        call_id = ids.call_id,
    )
    .into_bytes()
}

/// Records a response; returns the To header when it is a final response to the INVITE.
fn record(bytes: &[u8], transcript: &mut Transcript) -> Option<String> {
    let msg = scan(bytes, Transport::Datagram).ok()?;
    let StartLine::Response { code, reason } = msg.start else {
        return None;
    };
    let method = msg
        .headers
        .get(Name::CSeq)
        .and_then(|c| super::sip::grammar::parse_cseq(c).ok())
        .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    transcript.responses.push((
        code,
        String::from_utf8_lossy(reason).into_owned(),
        method.clone(),
    ));
    (code >= 200 && method == "INVITE")
        .then(|| {
            msg.headers
                .get(Name::To)
                .map(|t| String::from_utf8_lossy(t).into_owned())
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts_escape_what_rfc_3261_does_not_allow() {
        assert_eq!(escape_user("(415) 555-0100"), "(415)%20555-0100");
        assert_eq!(escape_user("a@b:c%\"ü"), "a%40b%3Ac%25%22%C3%BC");
        assert_eq!(escape_user("-_.!~*'()&=+$,;?/"), "-_.!~*'()&=+$,;?/");
    }
}
