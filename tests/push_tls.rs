//! The push channel over WSS: HTTPS with rustls and a certificate made in the test (rcgen). The
//! same auth and routing as over plain WebSocket, and a certificate reload that keeps open
//! connections while new ones get the new certificate.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Wss = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Writes a fresh self-signed certificate for 127.0.0.1 and localhost; returns its DER.
fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("rcgen");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
    certified.cert.der().to_vec()
}

fn trusting(der: &[u8]) -> Connector {
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
    Connector::Rustls(Arc::new(config))
}

async fn connect(
    http: std::net::SocketAddr,
    der: &[u8],
) -> Result<Wss, tokio_tungstenite::tungstenite::Error> {
    let url = format!("wss://127.0.0.1:{}/ws", http.port());
    tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(trusting(der)))
        .await
        .map(|(ws, _)| ws)
}

async fn next_json(ws: &mut Wss) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn close_code(ws: &mut Wss) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

async fn sign_in(http: std::net::SocketAddr, der: &[u8], token: &str) -> Wss {
    let mut ws = connect(http, der).await.expect("wss connects");
    ws.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(next_json(&mut ws).await.expect("ready")["type"], "ready");
    assert_eq!(
        next_json(&mut ws).await.expect("snapshot")["type"],
        "snapshot"
    );
    ws
}

#[tokio::test]
async fn auth_routing_and_certificate_reload_over_wss() {
    let dir: PathBuf = std::env::temp_dir().join(format!("screenpop-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let first = write_cert(&dir);
    let daemon = start_with(|s| s.tls = Some((dir.join("cert.pem"), dir.join("key.pem")))).await;
    let http = daemon.bound.http.expect("https");

    // Auth: a wrong token is refused with 4401, as over plain WebSocket.
    let mut wrong = connect(http, &first).await.expect("wss connects");
    wrong
        .send(Message::text(r#"{"type":"auth","token":"guess"}"#))
        .await
        .expect("send");
    assert_eq!(close_code(&mut wrong).await, Some(4401));

    // Routing: alice gets her pop, bob does not.
    let mut alice = sign_in(http, &first, "alice-demo-token").await;
    let mut bob = sign_in(http, &first, "bob-demo-token").await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "wss@test",
        "z9hG4bKwss",
        1,
        "",
    ))
    .await;
    let pop = next_json(&mut alice).await.expect("pop");
    assert_eq!(
        (pop["type"].as_str(), pop["customer"]["name"].as_str()),
        (Some("ringing"), Some("Acme Corporation"))
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bob.next())
            .await
            .is_err(),
        "bob sees nothing"
    );

    // A new certificate: reload keeps open connections; new ones get the new certificate.
    let second = write_cert(&dir);
    daemon
        .tls
        .as_ref()
        .expect("tls on")
        .reload()
        .expect("reload");
    alice
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send on the open connection");
    // (Profile sections of the ringing call may come first.)
    let mut reply = next_json(&mut alice).await.expect("a message");
    while reply["type"] == "section" || reply["type"] == "complete" {
        reply = next_json(&mut alice).await.expect("a message");
    }
    assert_eq!(reply["type"], "pong", "open connections survive a reload");
    assert!(
        connect(http, &first).await.is_err(),
        "the old certificate is no longer served"
    );
    let mut fresh = sign_in(http, &second, "alice-demo-token").await;
    fresh
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(next_json(&mut fresh).await.expect("pong")["type"], "pong");

    // A broken key file: the reload fails with a reason and the current certificate stays.
    std::fs::write(dir.join("key.pem"), "not a key").expect("write");
    let error = daemon
        .tls
        .as_ref()
        .expect("tls on")
        .reload()
        .expect_err("a bad key is refused");
    assert!(error.to_string().contains("key.pem"), "{error}");
    assert!(
        connect(http, &second).await.is_ok(),
        "still serving the last good certificate"
    );

    assert!(daemon.stop().await);
    let _ = std::fs::remove_dir_all(dir);
}
