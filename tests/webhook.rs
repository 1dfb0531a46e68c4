//! `POST /api/events` end to end over a real socket: a signed event pops, a bad or missing
//! signature gets 401 and changes nothing, a replayed event pops once.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use screenpop::calls::{Change, EndReason, Intake};
use screenpop::telephony::webhook::{WebhookConfig, sign};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "whsec-3cx-test";

fn config() -> WebhookConfig {
    toml::from_str(&format!(
        "max_skew = \"5m\"\n[[pbx]]\nname = \"3cx\"\nsecret = \"{SECRET}\"\n[[pbx]]\nname = \"other\"\nsecret = \"another\"\n"
    ))
    .expect("webhook config")
}

fn now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string()
}

/// Signs `body` as a PBX holding `secret` would, at `timestamp`.
fn headers(secret: &str, timestamp: &str, body: &str) -> String {
    format!(
        "X-Screenpop-Timestamp: {timestamp}\r\nX-Screenpop-Signature: sha256={}\r\n",
        sign(secret, timestamp, body.as_bytes())
    )
}

/// A real HTTP/1.1 POST: (status, body).
async fn post(http: SocketAddr, extra_headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(http).await.expect("connect");
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out))
        .await
        .expect("a response within 3 s")
        .expect("read");
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
    (status, body)
}

fn ringing_body(id: &str, call: &str) -> String {
    format!(
        r#"{{"event":"ringing","id":"{id}","call_id":"{call}","extension":"1001","caller":{{"number":"+14155550100","display":"Acme Front Desk","withheld":false}},"pbx":"3cx"}}"#
    )
}

#[tokio::test]
async fn a_signed_event_pops_and_the_call_follows() {
    let daemon = start_with(|s| s.intakes.webhook = config()).await;
    let http = daemon.bound.http.expect("http");
    let mut rx = daemon.calls.subscribe();
    let body = ringing_body("evt-1", "call-1");
    let (status, reply) = post(http, &headers(SECRET, &now(), &body), &body).await;
    assert_eq!(status, 202, "{reply}");
    let pop = next_update(&mut rx, is_ringing).await;
    assert_eq!(pop.call.intake, Intake::WEBHOOK);
    assert_eq!(
        pop.change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    assert_eq!(pop.call.caller_number.as_deref(), Some("+14155550100"));
    assert!(
        serde_json::to_string(&*pop.call)
            .expect("json")
            .contains("Acme Corporation")
    );
    for (body, want) in [
        (
            r#"{"event":"answered","id":"evt-2","call_id":"call-1","by":"1001"}"#,
            Change::Answered {
                by: Some("1001".into()),
            },
        ),
        (
            r#"{"event":"ended","id":"evt-3","call_id":"call-1","reason":"completed"}"#,
            Change::Ended {
                reason: EndReason::Completed,
            },
        ),
    ] {
        let (status, _) = post(http, &headers(SECRET, &now(), body), body).await;
        assert_eq!(status, 202);
        assert_eq!(next_update(&mut rx, |_| true).await.change, want);
    }
    assert!(metric(http, "screenpop_cti_events_total", "input=\"webhook\"").await >= 3.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_bad_or_missing_signature_gets_401_and_nothing_happens() {
    let daemon = start_with(|s| s.intakes.webhook = config()).await;
    let http = daemon.bound.http.expect("http");
    let mut rx = daemon.calls.subscribe();
    let body = ringing_body("evt-bad", "call-bad");
    let ts = now();
    let stale = (ts.parse::<u64>().expect("ts") - 3600).to_string();
    let tampered = body.replace("1001", "1002");
    for (what, extra, sent) in [
        ("wrong secret", headers("guess", &ts, &body), body.as_str()),
        ("no headers", String::new(), body.as_str()),
        (
            "timestamp not covered",
            headers(SECRET, &ts, &body).replace(&ts, &stale),
            body.as_str(),
        ),
        ("stale", headers(SECRET, &stale, &body), body.as_str()),
        (
            "body changed",
            headers(SECRET, &ts, &body),
            tampered.as_str(),
        ),
        (
            "another PBX's secret claiming 3cx",
            headers("another", &ts, &body),
            body.as_str(),
        ),
    ] {
        let (status, reply) = post(http, &extra, sent).await;
        assert_eq!(status, 401, "{what}: {reply}");
    }
    let nothing = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(nothing.is_err(), "no call event: {nothing:?}");
    assert!(daemon.calls.live(None).is_empty());
    assert!(
        metric(
            http,
            "screenpop_drops_total",
            "reason=\"webhook_unauthenticated\""
        )
        .await
            >= 6.0
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_replayed_event_pops_once() {
    let daemon = start_with(|s| s.intakes.webhook = config()).await;
    let http = daemon.bound.http.expect("http");
    let mut rx = daemon.calls.subscribe();
    let body = ringing_body("evt-once", "call-once");
    let signed = headers(SECRET, &now(), &body);
    let (first, _) = post(http, &signed, &body).await;
    assert_eq!(first, 202);
    next_update(&mut rx, is_ringing).await;
    // The call ends; then the PBX (or an attacker) sends the same ringing again.
    let end = r#"{"event":"ended","id":"evt-end","call_id":"call-once","reason":"cancelled"}"#;
    assert_eq!(post(http, &headers(SECRET, &now(), end), end).await.0, 202);
    next_update(&mut rx, |u| matches!(u.change, Change::Ended { .. })).await;
    let (again, reply) = post(http, &signed, &body).await;
    assert_eq!(again, 200, "{reply}");
    assert!(reply.contains("duplicate"), "{reply}");
    // A retry re-signed with a new timestamp carries the same event id: still one pop.
    let (retry, _) = post(http, &headers(SECRET, &now(), &body), &body).await;
    assert_eq!(retry, 200);
    let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(more.is_err(), "no second pop: {more:?}");
    assert!(daemon.calls.live(None).is_empty());
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_endpoint_is_off_without_pbxs() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let body = ringing_body("evt-off", "call-off");
    let (status, _) = post(http, &headers(SECRET, &now(), &body), &body).await;
    assert_eq!(status, 404);
    assert!(daemon.stop().await);
}
