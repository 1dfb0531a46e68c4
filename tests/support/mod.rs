//! Starts the real daemon on 127.0.0.1:0 with the demo data and gives tests its addresses,
//! plus small real-socket SIP and HEP clients. No fixed ports, no sleeps for readiness: the
//! listeners are bound before `start` returns.

#![allow(dead_code)]

pub mod ami;
pub mod binary;
pub mod certs;
pub mod nats;
pub mod peers;
pub mod pg;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use screenpop::calls::{CallUpdate, Change};
use screenpop::daemon::{Daemon, Settings};
use screenpop::demo::{self, DemoAddrs};
use screenpop::telephony::sip::scan::{Frame, Name, StartLine, Transport, frame, scan};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::broadcast;

/// Demo settings on ephemeral loopback ports.
pub fn settings() -> Settings {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    demo::settings(DemoAddrs {
        sip: any,
        hep: any,
        http: any,
        sip_tls: Some(any),
    })
    .expect("demo settings")
}

/// Starts a daemon with the demo settings, adjusted by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Daemon {
    let mut s = settings();
    tweak(&mut s);
    Daemon::start(s).await.expect("daemon starts")
}

/// Starts a daemon with the demo settings.
pub async fn start() -> Daemon {
    start_with(|_| {}).await
}

/// A SIP response as seen by a client.
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub cseq_method: String,
    pub to: String,
    pub raw: String,
}

pub fn parse_response(bytes: &[u8]) -> Option<Response> {
    let msg = scan(bytes, Transport::Datagram).ok()?;
    let StartLine::Response { code, reason } = msg.start else {
        return None;
    };
    let cseq =
        String::from_utf8_lossy(msg.headers.get(Name::CSeq).unwrap_or_default()).into_owned();
    Some(Response {
        code,
        reason: String::from_utf8_lossy(reason).into_owned(),
        cseq_method: cseq
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned(),
        to: String::from_utf8_lossy(msg.headers.get(Name::To).unwrap_or_default()).into_owned(),
        raw: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// A UDP SIP peer bound to loopback.
pub struct UdpPeer {
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

impl UdpPeer {
    pub async fn new(target: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        UdpPeer { socket, target }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("local")
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.target).await.expect("send");
    }

    /// The next response within `wait`, or `None`.
    pub async fn recv(&self, wait: Duration) -> Option<Response> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        parse_response(&buf[..n])
    }

    pub async fn expect(&self) -> Response {
        self.recv(Duration::from_secs(3))
            .await
            .expect("a response within 3 s")
    }
}

/// A SIP peer on a byte stream (TCP, or TLS over TCP): messages framed by Content-Length.
pub struct StreamPeer<S = TcpStream> {
    pub stream: S,
    local: SocketAddr,
    buf: BytesMut,
}

/// A TCP SIP peer.
pub type TcpPeer = StreamPeer<TcpStream>;
/// A SIP-over-TLS peer.
pub type TlsPeer = StreamPeer<tokio_rustls::client::TlsStream<TcpStream>>;

impl StreamPeer<TcpStream> {
    pub async fn connect(target: SocketAddr) -> Self {
        let stream = TcpStream::connect(target).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        StreamPeer {
            local: stream.local_addr().expect("local"),
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl TlsPeer {
    /// Connects and completes the TLS handshake (the server checked as 127.0.0.1); the
    /// handshake's error, if it fails. Under TLS 1.3 a client certificate the server refuses
    /// fails the first read instead.
    pub async fn connect_tls(
        target: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
        Ok(StreamPeer {
            stream,
            local,
            buf: BytesMut::new(),
        })
    }

    /// The server's certificate (DER), as seen in the handshake.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamPeer<S> {
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next framed response within `wait`; `None` on timeout or close.
    pub async fn recv(&mut self, wait: Duration) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match frame(&self.buf) {
                Ok(Frame::Message(n)) => return parse_response(&self.buf.split_to(n)),
                Ok(Frame::Skip { len, .. }) => {
                    let _ = self.buf.split_to(len);
                }
                Ok(Frame::Incomplete) => {
                    let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub async fn expect(&mut self) -> Response {
        self.recv(Duration::from_secs(3))
            .await
            .expect("a response within 3 s")
    }
}

#[allow(clippy::too_many_arguments)]
/// Builds a request. `transport` is "UDP" or "TCP"; `local` goes into Via.
pub fn request(
    method: &str,
    ext: &str,
    local: SocketAddr,
    transport: &str,
    call_id: &str,
    branch: &str,
    cseq: u32,
    extra: &str,
) -> Vec<u8> {
    format!(
        "{method} sip:{ext}@screenpop.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};rport;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Acme Front Desk\" <sip:+14155550100@pbx.test>;tag=caller1\r\n\
         To: <sip:{ext}@pbx.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Waits for the next update matching `want`, skipping others; panics after 3 s.
pub async fn next_update(
    rx: &mut broadcast::Receiver<CallUpdate>,
    want: impl Fn(&CallUpdate) -> bool,
) -> CallUpdate {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let update = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("an update within 3 s")
            .expect("update channel open");
        if want(&update) {
            return update;
        }
    }
}

pub fn is_ringing(update: &CallUpdate) -> bool {
    matches!(update.change, Change::Ringing { .. })
}

/// Scrapes one sample from `/metrics` (sum over label sets containing `labels`).
pub async fn metric(http: SocketAddr, name: &str, labels: &str) -> f64 {
    let body = http_get(http, "/metrics", None).await.1;
    body.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 GET over a real socket: (status, body).
pub async fn http_get(http: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(http).await.expect("connect http");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Undo chunked encoding if present.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A plain HTTP/1.1 request with an optional bearer token and JSON body over a real socket:
/// (status, headers lower-cased, body).
pub async fn http_request(
    http: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(http).await.expect("connect http");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json.unwrap_or_default();
    let content = if json.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_ascii_lowercase(), body)
}

/// A SIP `Ended` event for the whole call, as an intake would report it.
pub fn ended(key: &str, reason: screenpop::calls::EndReason) -> screenpop::calls::CallEvent {
    screenpop::calls::CallEvent::Ended {
        key: key.into(),
        intake: screenpop::calls::Intake::SIP,
        extension: None,
        reason,
    }
}

/// A SIP `Ringing` event for `number` calling `extension`, as an intake would report it.
pub fn ringing(key: &str, extension: &str, number: &str) -> screenpop::calls::CallEvent {
    screenpop::calls::CallEvent::Ringing {
        key: key.into(),
        intake: screenpop::calls::Intake::SIP,
        extension: extension.into(),
        caller: screenpop::calls::Caller {
            number: Some(number.into()),
            display: None,
            source: screenpop::calls::IdentitySource::From,
            withheld: false,
        },
        dialled: None,
    }
}

/// A call from `number` that rings `extensions` and ends unanswered: a callback entry.
pub fn missed_at(daemon: &Daemon, key: &str, number: &str, extensions: &[&str]) {
    for ext in extensions {
        daemon.calls.apply(ringing(key, ext, number));
    }
    daemon.calls.apply(screenpop::calls::CallEvent::Ended {
        key: key.into(),
        intake: screenpop::calls::Intake::SIP,
        extension: None,
        reason: screenpop::calls::EndReason::Cancelled,
    });
}

/// The id of the open callback for `number` in the agent's list (observers run in line with
/// `Calls::apply`, so a missed call's entry is there at once).
pub async fn callback_id(http: SocketAddr, token: &str, number: &str) -> String {
    let (status, body) = http_get(http, "/api/callbacks", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["callbacks"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["number"] == number))
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no callback for {number}: {body}"))
}

/// `POST /api/callbacks/{id}/dial` with an optional body: (status, headers, JSON body).
pub async fn dial(
    http: SocketAddr,
    token: &str,
    id: &str,
    body: Option<serde_json::Value>,
) -> (u16, String, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let (status, head, text) = http_request(
        http,
        "POST",
        &format!("/api/callbacks/{id}/dial"),
        Some(token),
        body.as_deref(),
    )
    .await;
    (
        status,
        head,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}
