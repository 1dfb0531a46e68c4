//! Hostile input against the running daemon (issue 21): each test reproduces one finding of the
//! attack-and-fault campaign over real sockets on loopback and asserts the fixed behaviour.
//!
//! - another agent's call: bob can neither pick nor dismiss a call that rang only at alice,
//!   and cannot tell it from a call that does not exist;
//! - token guessing: wrong tokens from one address are throttled (API, WebSocket, webhook),
//!   and refused webhook requests do not flood the log;
//! - an oversize WebSocket message is closed with 1009;
//! - DNS rebinding: an `Origin` equal to a DNS-named `Host` is refused unless configured;
//! - `Authorization: bearer` in any case;
//! - control characters in a caller's display name never reach an agent.
//!
//! The listener budgets (slow clients, idle TCP connections) are in `tests/listeners.rs`; the
//! durable spool (notes and rows across SIGTERM, SIGKILL and a database outage) in
//! `tests/spool.rs`.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use screenpop::calls::{CallEvent, Intake};
use screenpop::calls::{Caller, IdentitySource as Source};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use ws::{Ws, expect, send, sign_in};

/// The close code a socket ends with (skipping messages), within 5 s.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("closed within 5 s");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

fn ring_from(key: &str, extension: &str, number: &str, display: &str) -> CallEvent {
    CallEvent::Ringing {
        key: key.into(),
        intake: Intake::SIP,
        extension: extension.into(),
        caller: Caller {
            number: Some(number.into()),
            display: Some(display.into()),
            source: Source::From,
            withheld: false,
        },
        dialled: None,
    }
}

#[tokio::test]
async fn an_agent_cannot_pick_or_dismiss_a_call_that_did_not_ring_at_it() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-demo-token").await;
    let (mut bob, _) = sign_in(http, "bob-demo-token").await;
    // A shared number: the pop offers two candidates, at alice's extension only.
    daemon
        .calls
        .apply(ring_from("shared-1", "1001", "+13125550142", "Shared"));
    let ringing = expect(&mut alice, "ringing").await;
    let call_id = ringing["call_id"].as_str().expect("call_id").to_owned();
    let candidate = ringing["candidates"][0]["id"]
        .as_str()
        .expect("a candidate")
        .to_owned();

    send(
        &mut bob,
        json!({"type": "pick", "call_id": call_id, "customer_id": candidate}),
    )
    .await;
    let not_yours = reply(&mut bob).await;
    assert_eq!(not_yours["type"], "error", "{not_yours}");
    send(&mut bob, json!({"type": "dismiss", "call_id": call_id})).await;
    let dismissed = reply(&mut bob).await;
    assert_eq!(dismissed["type"], "error", "{dismissed}");
    send(
        &mut bob,
        json!({"type": "pick", "call_id": "0000000000000000", "customer_id": candidate}),
    )
    .await;
    let missing = reply(&mut bob).await;
    assert_eq!(
        not_yours["message"], missing["message"],
        "\"not yours\" and \"does not exist\" read the same"
    );
    assert_eq!(dismissed["message"], missing["message"]);
    // Bob's attempts changed nothing: alice's journal entry has no customer yet, and her pick
    // and dismissal still work.
    let (_, _, recent) = http_request(
        http,
        "GET",
        "/api/calls?mine=1",
        Some("alice-demo-token"),
        None,
    )
    .await;
    let recent: Value = serde_json::from_str(&recent).expect("json");
    assert_eq!(recent["calls"][0]["call_id"], call_id.as_str());
    assert!(recent["calls"][0]["customer"].is_null(), "{recent}");

    send(
        &mut alice,
        json!({"type": "pick", "call_id": call_id, "customer_id": candidate}),
    )
    .await;
    assert_eq!(reply(&mut alice).await["type"], "picked");
    send(&mut alice, json!({"type": "dismiss", "call_id": call_id})).await;
    assert_eq!(reply(&mut alice).await["type"], "dismissed");
    assert!(daemon.stop().await);
}

/// The reply to one client message: `picked`, `dismissed` or `error`.
async fn reply(ws: &mut Ws) -> Value {
    loop {
        let (v, _) = ws::next_raw(ws, ws::WAIT).await.expect("a reply");
        if matches!(v["type"].as_str(), Some("picked" | "dismissed" | "error")) {
            return v;
        }
    }
}

#[tokio::test]
async fn token_guesses_from_one_address_are_throttled() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let (status, _, _) =
            http_request(http, "GET", "/api/calls", Some(&format!("guess-{i}")), None).await;
        statuses.push(status);
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(unauthorized, 30, "{statuses:?}");
    assert_eq!(throttled, 10, "{statuses:?}");
    // While throttled even the right token is refused: a guesser learns nothing.
    let (status, head, _) =
        http_request(http, "GET", "/api/calls", Some("alice-demo-token"), None).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after"), "{head}");
    // The WebSocket sign-in from the same address too.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws");
    assert_eq!(close_code(&mut ws).await, Some(4430));
    assert_eq!(
        metric(http, "screenpop_auth_failures_total", "api").await,
        30.0
    );
    assert!(metric(http, "screenpop_auth_throttled_total", "websocket").await >= 1.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn wrong_websocket_tokens_are_throttled() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let mut codes = Vec::new();
    for i in 0..32 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .expect("ws");
        send(
            &mut ws,
            json!({"type": "auth", "token": format!("guess-{i}")}),
        )
        .await;
        codes.push(close_code(&mut ws).await);
    }
    assert!(codes[..30].iter().all(|c| *c == Some(4401)), "{codes:?}");
    assert!(codes[30..].iter().all(|c| *c == Some(4430)), "{codes:?}");
    assert!(daemon.stop().await);
}

/// Log lines written by the daemon under test (a subscriber for this test's thread: the
/// current-thread runtime runs the daemon's tasks there too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn refused_webhook_requests_are_throttled_and_logged_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let daemon = start_with(|s| {
        s.intakes.webhook = toml::from_str("[[pbx]]\nname = \"3cx\"\nsecret = \"whsec-test\"\n")
            .expect("webhook config");
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = r#"{"event":"ringing","call_id":"c-1","extension":"1001"}"#;
    let mut statuses = Vec::new();
    for i in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let request = format!(
            "POST /api/events HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nX-Screenpop-Timestamp: {now}\r\nX-Screenpop-Signature: sha256={i:064x}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        statuses.push(
            text.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0),
        );
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 30);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20);
    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert_eq!(
        log.matches("Webhook request refused.").count(),
        1,
        "one line for 30 refusals:\n{log}"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn an_oversize_message_is_closed_with_1009() {
    let daemon = start_with(|s| s.push.max_message_bytes = 1024).await;
    let http = daemon.bound.http.expect("http");
    // Before signing in.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws");
    ws.send(Message::text("x".repeat(4096)))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1009));
    // And after.
    let (mut ws, _) = sign_in(http, "alice-demo-token").await;
    ws.send(Message::text(
        json!({"type": "ping", "pad": "x".repeat(4096)}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1009));
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_rebinding_origin_is_refused_unless_configured() {
    let daemon = start_with(|s| {
        s.push.allowed_origins = vec!["http://screenpop.example.com:8080".into()];
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let open = |host: String, origin: String| async move {
        let mut req = format!("ws://{http}/ws")
            .into_client_request()
            .expect("req");
        req.headers_mut()
            .insert("Host", host.parse().expect("host header"));
        req.headers_mut()
            .insert("Origin", origin.parse().expect("origin header"));
        tokio_tungstenite::connect_async(req).await.map(|_| ())
    };
    // An attacker's name resolving to the daemon: Origin equals Host, by DNS name.
    let port = http.port();
    let rebinding = open(
        format!("evil.example:{port}"),
        format!("http://evil.example:{port}"),
    )
    .await
    .expect_err("refused");
    assert!(rebinding.to_string().contains("403"), "{rebinding}");
    // The page reached by address still works, and a configured name too.
    open(http.to_string(), format!("http://{http}"))
        .await
        .expect("own origin by address");
    open(
        "screenpop.example.com:8080".into(),
        "http://screenpop.example.com:8080".into(),
    )
    .await
    .expect("configured origin");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let request = format!(
            "GET /api/calls HTTP/1.1\r\nHost: {http}\r\nAuthorization: {scheme} alice-demo-token\r\nConnection: close\r\n\r\n"
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{scheme}: {text}");
    }
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn control_characters_in_display_names_never_reach_agents() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-demo-token").await;
    daemon.calls.apply(ring_from(
        "ctl-1",
        "1001",
        "+14155550100",
        "Acme\r\n\u{1b}[2J\u{7}Front\u{202e}Desk\u{0}",
    ));
    let (ringing, raw) = loop {
        let (v, raw) = ws::next_raw(&mut alice, ws::WAIT).await.expect("ringing");
        if v["type"] == "ringing" {
            break (v, raw);
        }
    };
    assert_eq!(ringing["caller"]["display"], "Acme [2J Front Desk");
    assert!(
        !raw.contains("\\u001b") && !raw.contains("\\r") && !raw.contains("\\u202e"),
        "{raw}"
    );
    assert!(daemon.stop().await);
}
