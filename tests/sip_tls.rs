//! SIP over TLS (RFC 3261 §26) through the real daemon on loopback: an INVITE over TLS pops the
//! agent's page, and its 100 Trying and final response come back on the same connection with
//! the client's `Via: SIP/2.0/TLS`; mutual TLS refuses a client without a certificate of the
//! configured CA and pops one with; a client that never handshakes is closed after the
//! handshake timeout without holding up another; SIGHUP gives new connections the new
//! certificate (the release binary), and a broken one is refused while the old one keeps
//! serving. The corpus over TLS is in `tests/pbx_corpus.rs`, Kamailio forking over TLS in
//! `tests/kamailio.rs`.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::binary::Process;
use support::certs::{Pki, fingerprint};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn invite(peer_local: SocketAddr, call_id: &str, branch: &str) -> Vec<u8> {
    request(
        "INVITE",
        "1001",
        peer_local,
        "TLS",
        call_id,
        branch,
        1,
        "Contact: <sip:pbx@pbx.test;transport=tls>\r\n",
    )
}

/// Whether the peer closes the connection (EOF or error) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn an_invite_over_tls_pops_and_is_answered_on_its_connection() {
    let pki = Pki::new("sip-tls");
    let server = pki.server("server");
    let daemon = start_with(|s| s.sip_tls_identity = Some(pki.identity(&server, false))).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;

    let mut pbx = TlsPeer::connect_tls(daemon.bound.sip_tls[0], pki.client_config(None))
        .await
        .expect("handshake");
    assert_eq!(
        fingerprint(&pbx.server_certificate()),
        server.fingerprint(),
        "the configured certificate"
    );
    pbx.send(&invite(pbx.local(), "tls-1@pbx", "z9hG4bKtls1"))
        .await;
    let trying = pbx.expect().await;
    assert_eq!(trying.code, 100, "{}", trying.raw);
    assert!(
        trying.raw.contains("Via: SIP/2.0/TLS "),
        "the client's Via, transport TLS: {}",
        trying.raw
    );
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["customer"]["name"], "Acme Corporation", "{pop}");

    // The caller gives up: 200 to the CANCEL and 487 to the INVITE, on the same connection.
    pbx.send(&request(
        "CANCEL",
        "1001",
        pbx.local(),
        "TLS",
        "tls-1@pbx",
        "z9hG4bKtls1",
        1,
        "",
    ))
    .await;
    let mut finals = [pbx.expect().await, pbx.expect().await];
    finals.sort_by_key(|r| r.code);
    assert_eq!(
        (finals[0].code, finals[0].cseq_method.as_str()),
        (200, "CANCEL")
    );
    assert_eq!(
        (finals[1].code, finals[1].cseq_method.as_str()),
        (487, "INVITE")
    );
    assert!(
        finals[1].raw.contains("Via: SIP/2.0/TLS "),
        "{}",
        finals[1].raw
    );
    let ended = ws::expect(&mut alice, "ended").await;
    assert_eq!(ended["call_id"], pop["call_id"]);
    pbx.send(&request(
        "ACK",
        "1001",
        pbx.local(),
        "TLS",
        "tls-1@pbx",
        "z9hG4bKtls1",
        1,
        "",
    ))
    .await;

    // OPTIONS keepalive on the same connection; counted under transport="tls".
    pbx.send(&request(
        "OPTIONS",
        "1001",
        pbx.local(),
        "TLS",
        "tls-ping@pbx",
        "z9hG4bKtlsping",
        1,
        "",
    ))
    .await;
    assert_eq!(pbx.expect().await.code, 200);
    assert!(
        metric(
            http,
            "screenpop_sip_messages_total",
            "transport=\"tls\",method=\"INVITE\""
        )
        .await
            >= 1.0
    );
    assert!(metric(http, "screenpop_connections", "listener=\"sip_tls\"").await >= 1.0);
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let pki = Pki::new("sip-mtls");
    let server = pki.server("server");
    let daemon = start_with(|s| s.sip_tls_identity = Some(pki.identity(&server, true))).await;
    let http = daemon.bound.http.expect("http");
    let tls = daemon.bound.sip_tls[0];
    let mut updates = daemon.calls.subscribe();
    let before = metric(
        http,
        "screenpop_drops_total",
        "reason=\"tls_handshake_failed\"",
    )
    .await;

    // No client certificate, then one from another CA: refused, nothing pops. Under TLS 1.3
    // the client finishes its side first and learns of the refusal on its first read.
    let stranger = Pki::new("sip-mtls-stranger");
    let foreign = stranger.client("pbx", "pbx.example");
    for (what, identity) in [("no certificate", None), ("another CA's", Some(&foreign))] {
        let config = support::certs::client_config(&pki.ca_der, identity);
        if let Ok(mut peer) = TlsPeer::connect_tls(tls, config).await {
            peer.send(&invite(peer.local(), "mtls-refused@pbx", "z9hG4bKno"))
                .await;
            let reply = peer.recv(Duration::from_secs(2)).await;
            assert!(reply.is_none(), "{what}: refused, got {reply:?}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = metric(
            http,
            "screenpop_drops_total",
            "reason=\"tls_handshake_failed\"",
        )
        .await;
        if after >= before + 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshake failures counted: {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.calls.live(None).is_empty(), "nothing popped");

    // A certificate from the configured CA: it pops.
    let client = pki.client("pbx", "pbx.example");
    let mut pbx = TlsPeer::connect_tls(tls, pki.client_config(Some(&client)))
        .await
        .expect("handshake");
    pbx.send(&invite(pbx.local(), "mtls-ok@pbx", "z9hG4bKok"))
        .await;
    assert_eq!(pbx.expect().await.code, 100);
    next_update(&mut updates, is_ringing).await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout_and_blocks_no_one() {
    let pki = Pki::new("sip-tls-silent");
    let server = pki.server("server");
    let daemon = start_with(|s| {
        s.sip_tls_identity = Some(pki.identity(&server, false));
        s.sip_tls_handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let tls = daemon.bound.sip_tls[0];
    // Connected, never says a word.
    let mut silent = TcpStream::connect(tls).await.expect("connect");
    // Meanwhile another client handshakes and is served at once.
    let started = Instant::now();
    let mut pbx = TlsPeer::connect_tls(tls, pki.client_config(None))
        .await
        .expect("handshake");
    pbx.send(&invite(pbx.local(), "beside-silent@pbx", "z9hG4bKbeside"))
        .await;
    assert_eq!(pbx.expect().await.code, 100);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not held up by the silent client: {:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "the silent client is closed"
    );
    assert!(
        metric(
            http,
            "screenpop_connections_closed_total",
            "listener=\"sip_tls\",reason=\"handshake_timeout\""
        )
        .await
            >= 1.0
    );
    // The served connection is still open after the silent one went.
    pbx.send(&request(
        "OPTIONS",
        "1001",
        pbx.local(),
        "TLS",
        "after-silent@pbx",
        "z9hG4bKafter",
        1,
        "",
    ))
    .await;
    assert_eq!(pbx.expect().await.code, 200);
}

/// The server certificate a new connection sees.
async fn served_fingerprint(tls: SocketAddr, pki: &Pki) -> String {
    let peer = TlsPeer::connect_tls(tls, pki.client_config(None))
        .await
        .expect("handshake");
    fingerprint(&peer.server_certificate())
}

/// Waits (at most 5 s) until the daemon's log holds `needle` `count` times.
async fn logged(daemon: &Process, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` ×{count} in the log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_gives_new_connections_the_new_certificate_and_keeps_it_on_a_bad_one() {
    let pki = Pki::new("sip-tls-hup");
    let first = pki.server("server");
    let config = pki.dir.join("screenpop.toml");
    std::fs::write(
        &config,
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntls = [\"127.0.0.1:0\"]\ntls_cert = \"server.pem\"\n\
         tls_key = \"server.key\"\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("config");
    let daemon = Process::start(&config, &[]);
    let tls = daemon.sip_tls.expect("the banner names the TLS listener");
    assert_eq!(served_fingerprint(tls, &pki).await, first.fingerprint());
    // A connection open across the reload keeps working.
    let mut open = TlsPeer::connect_tls(tls, pki.client_config(None))
        .await
        .expect("handshake");

    let second = pki.server("server");
    assert_ne!(second.fingerprint(), first.fingerprint());
    daemon.signal("-HUP");
    logged(&daemon, "TLS certificate reloaded", 1).await;
    assert!(daemon.log().contains("sip_tls"), "{}", daemon.log());
    assert_eq!(
        served_fingerprint(tls, &pki).await,
        second.fingerprint(),
        "new connections get the new certificate"
    );
    open.send(&request(
        "OPTIONS",
        "1001",
        open.local(),
        "TLS",
        "open@pbx",
        "z9hG4bKopen",
        1,
        "",
    ))
    .await;
    assert_eq!(open.expect().await.code, 200, "the open connection stays");

    // A broken certificate: refused and logged; the previous one keeps serving.
    std::fs::write(&second.cert, "not a certificate").expect("break");
    daemon.signal("-HUP");
    logged(&daemon, "TLS reload failed", 1).await;
    assert_eq!(served_fingerprint(tls, &pki).await, second.fingerprint());
}
