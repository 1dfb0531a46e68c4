//! Listener budgets against the running daemon (issue 21, findings 1 and 4), over real
//! sockets on loopback:
//!
//! - 1,100 slowloris connections to HTTP cannot starve `/healthz` or a WebSocket sign-in, and
//!   are closed by the header-read timeout, trickling or not;
//! - 1,000 idle SIP/TCP connections from the PBX's own address do not stop a call over TCP;
//! - 1,000 idle HEP/TCP connections do not stop a capture agent's packet;
//! - an idle SIP/TCP or HEP/TCP connection is closed after the idle timeout;
//! - a TLS client that never handshakes is closed, and HTTPS requests carry the client's
//!   address (the sign-in throttle works over TLS);
//! - `/metrics` reports the open-files limit.
//!
//! The test process holds both ends of every connection: it raises its own open-files limit
//! first, as the daemon's binary does.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use screenpop::calls::Change;
use screenpop::telephony::hep;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connections each flood opens.
const FLOOD: usize = 1_000;

fn raise_open_files_limit() {
    let limit = screenpop::listener::raise_open_files_limit().unwrap_or(0);
    // Both ends of 1,100 connections, plus the daemon's own files.
    assert!(
        limit >= 2_600,
        "open-files hard limit {limit} is too low for this test"
    );
}

/// Whether the server closes `stream` within `wait` (EOF or reset; bytes are skipped).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens `n` connections to `target` and writes `first` on each (errors ignored: an evicted
/// connection may already be closed).
async fn flood(target: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(target).await.expect("connect");
        if !first.is_empty() {
            let _ = stream.write_all(first).await;
        }
        held.push(stream);
    }
    held
}

#[tokio::test]
async fn slow_clients_cannot_starve_health_or_sign_in_and_time_out() {
    raise_open_files_limit();
    let daemon = start_with(|s| s.http_limits.header_read_timeout = Duration::from_secs(2)).await;
    let http = daemon.bound.http.expect("http");
    let mut slow = flood(http, FLOOD + 100, b"GET / HTTP/1.1\r\n").await;
    // The newest 20 trickle a header byte every half second for 3 s, past the header-read
    // timeout; the rest send nothing more.
    let mut trickling = slow.split_off(slow.len() - 20);
    let trickle = tokio::spawn(async move {
        for _ in 0..6 {
            for stream in &mut trickling {
                let _ = stream.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        trickling
    });

    let (status, body) =
        tokio::time::timeout(Duration::from_secs(5), http_get(http, "/healthz", None))
            .await
            .expect("/healthz answers within 5 s");
    assert_eq!(status, 200, "{body}");
    let (_alice, snapshot) = tokio::time::timeout(
        Duration::from_secs(5),
        ws::sign_in(http, "alice-demo-token"),
    )
    .await
    .expect("a WebSocket sign-in within 5 s");
    assert_eq!(snapshot["type"], "snapshot");

    // Past the cap per address, the oldest silent connections made room.
    let evicted = metric(
        http,
        "screenpop_connections_evicted_total",
        "listener=\"http\",reason=\"unproven\"",
    )
    .await;
    assert!(evicted >= 100.0, "evicted {evicted}");
    // The others are closed by the header-read timeout (2 s here), trickling or not.
    let last = slow.last_mut().expect("a slow connection");
    assert!(
        closed_within(last, Duration::from_secs(10)).await,
        "a silent slow client is closed"
    );
    let mut trickling = trickle.await.expect("trickle");
    assert!(
        closed_within(&mut trickling[19], Duration::from_secs(10)).await,
        "a trickling slow client is closed"
    );
    let timed_out = metric(
        http,
        "screenpop_connections_closed_total",
        "listener=\"http\",reason=\"header_timeout\"",
    )
    .await;
    assert!(
        timed_out >= 900.0,
        "closed by the header timeout: {timed_out}"
    );
    // The signed-in agent was never a candidate: it is still served.
    assert_eq!(http_get(http, "/healthz", None).await.0, 200);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_thousand_idle_sip_tcp_connections_do_not_stop_a_call() {
    raise_open_files_limit();
    let daemon = start().await;
    let (sip, http) = (daemon.bound.sip_tcp[0], daemon.bound.http.expect("http"));
    let _idle = flood(sip, FLOOD, b"").await;

    let mut updates = daemon.calls.subscribe();
    let mut peer = TcpPeer::connect(sip).await;
    let local = peer.local();
    let invite = request(
        "INVITE",
        "1001",
        local,
        "TCP",
        "flood@test",
        "z9hG4bKflood",
        1,
        "",
    );
    peer.send(&invite).await;
    assert_eq!(peer.expect().await.code, 100);
    let ringing = next_update(&mut updates, is_ringing).await;
    assert_eq!(
        ringing.change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    let cancel = request(
        "CANCEL",
        "1001",
        local,
        "TCP",
        "flood@test",
        "z9hG4bKflood",
        1,
        "",
    );
    peer.send(&cancel).await;
    let mut codes = vec![peer.expect().await.code, peer.expect().await.code];
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 487]);

    // All from 127.0.0.1, the PBX's address: past 32 the oldest idle ones were evicted.
    let evicted = metric(
        http,
        "screenpop_connections_evicted_total",
        "listener=\"sip\",reason=\"unproven\"",
    )
    .await;
    assert!(evicted >= (FLOOD - 32) as f64, "evicted {evicted}");
    assert!(daemon.stop().await);
}

/// A HEP packet carrying an INVITE to extension `ext`, as a capture agent reports it.
fn hep_invite(call_id: &str, ext: &str) -> Vec<u8> {
    let sip = format!(
        "INVITE sip:{ext}@192.0.2.21 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 69\r\nFrom: \"Acme\" <sip:+14155550100@carrier.test>;tag=f1\r\n\
         To: <sip:{ext}@pbx.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    hep::encode(
        "192.0.2.1:5060".parse().expect("addr"),
        "192.0.2.21:5060".parse().expect("addr"),
        (1_700_000_000, 0),
        1,
        None,
        sip.as_bytes(),
    )
}

#[tokio::test]
async fn a_thousand_idle_hep_tcp_connections_do_not_stop_a_packet() {
    raise_open_files_limit();
    let daemon = start().await;
    let (hep_tcp, http) = (daemon.bound.hep_tcp[0], daemon.bound.http.expect("http"));
    let _idle = flood(hep_tcp, FLOOD, b"").await;

    let mut updates = daemon.calls.subscribe();
    let mut capture = TcpStream::connect(hep_tcp).await.expect("connect");
    capture
        .write_all(&hep_invite("hep-flood", "1001"))
        .await
        .expect("write");
    let ringing = next_update(&mut updates, is_ringing).await;
    assert_eq!(
        ringing.change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    let evicted = metric(
        http,
        "screenpop_connections_evicted_total",
        "listener=\"hep\",reason=\"unproven\"",
    )
    .await;
    assert!(evicted >= (FLOOD - 32) as f64, "evicted {evicted}");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn idle_sip_and_hep_tcp_connections_are_closed() {
    let idle = Some(Duration::from_millis(500));
    let daemon = start_with(|s| {
        s.sip_tcp_budget.idle_timeout = idle;
        s.hep_tcp_budget.idle_timeout = idle;
    })
    .await;
    let http = daemon.bound.http.expect("http");
    // A SIP peer that proved itself (an OPTIONS answered), then fell silent.
    let mut sip = TcpPeer::connect(daemon.bound.sip_tcp[0]).await;
    let local = sip.local();
    sip.send(&request(
        "OPTIONS",
        "1001",
        local,
        "TCP",
        "idle@test",
        "z9hG4bKidle",
        1,
        "",
    ))
    .await;
    assert_eq!(sip.expect().await.code, 200);
    let mut hep = TcpStream::connect(daemon.bound.hep_tcp[0])
        .await
        .expect("connect");
    hep.write_all(&hep_invite("hep-idle", "1002"))
        .await
        .expect("write");

    assert!(
        closed_within(&mut sip.stream, Duration::from_secs(5)).await,
        "the idle SIP connection is closed"
    );
    assert!(
        closed_within(&mut hep, Duration::from_secs(5)).await,
        "the idle HEP connection is closed"
    );
    for listener in ["sip", "hep"] {
        let closed = metric(
            http,
            "screenpop_connections_closed_total",
            &format!("listener=\"{listener}\",reason=\"idle_timeout\""),
        )
        .await;
        assert!(closed >= 1.0, "{listener}: {closed}");
    }
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn metrics_report_the_open_files_limit() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let limit = metric(http, "screenpop_open_files_limit", "").await;
    assert!(limit > 0.0, "screenpop_open_files_limit = {limit}");
    assert!(daemon.stop().await);
}

/// A self-signed certificate for 127.0.0.1 in a fresh folder: (cert.pem, key.pem, DER).
fn certificate(name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("screenpop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("key");
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        certified.cert.der().to_vec(),
    )
}

/// One HTTPS GET with a bearer token; the status.
async fn https_get(http: SocketAddr, der: &[u8], path: &str, token: &str) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der.to_vec()))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(http).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn over_tls_a_silent_client_is_closed_and_guesses_are_throttled() {
    let (cert, key, der) = certificate("listeners-tls");
    let daemon = start_with(|s| {
        s.tls = Some((cert, key));
        s.http_limits.tls_handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let http = daemon.bound.http.expect("https");
    let mut silent = TcpStream::connect(http).await.expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "no handshake: closed"
    );
    // The throttle needs the client's address: over TLS too, 30 wrong tokens, then 429.
    let mut statuses = Vec::new();
    for i in 0..31 {
        statuses.push(https_get(http, &der, "/api/calls", &format!("guess-{i}")).await);
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[30], 429, "{statuses:?}");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn shutdown_closes_half_sent_and_idle_connections_at_once() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let mut slow = TcpStream::connect(http).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // A keep-alive connection that got its answer and now waits between requests.
    let mut idle = TcpStream::connect(http).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.expect("response");
    assert_eq!(&head, b"HTTP/1.1 200");

    let started = Instant::now();
    assert!(daemon.stop().await, "every task stopped within the grace");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut slow, Duration::from_secs(1)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(1)).await);
}
