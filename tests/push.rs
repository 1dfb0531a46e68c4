//! The push channel end to end: real WebSocket clients (tokio-tungstenite) against the real
//! daemon. Every server message received in these tests is validated against
//! `schema/push-protocol.schema.json`.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use screenpop::agents::{Agent, Agents};
use screenpop::calls::{CallEvent, EndReason, Intake};
use screenpop::calls::{Caller, IdentitySource as Source};
use screenpop::config::TokenHash;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use ws::{Ws, validator};

async fn connect(http: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("websocket connects")
        .0
}

/// The next server message (JSON, schema-checked), or the close code; `None` on timeout.
#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<u16>),
}

async fn next(ws: &mut Ws, wait: Duration) -> Option<Got> {
    loop {
        let frame = tokio::time::timeout(wait, ws.next()).await.ok()?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(&text).expect("server sends JSON");
                let errors: Vec<String> = validator()
                    .iter_errors(&v)
                    .map(|e| format!("{e} at {}", e.instance_path()))
                    .collect();
                assert!(errors.is_empty(), "schema violations {errors:?} in {v}");
                return Some(Got::Json(v));
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(Got::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Some(Got::Closed(None)),
        }
    }
}

async fn json(ws: &mut Ws) -> Value {
    match next(ws, Duration::from_secs(3)).await {
        Some(Got::Json(v)) => v,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn closed_with(ws: &mut Ws) -> Option<u16> {
    loop {
        match next(ws, Duration::from_secs(5)).await {
            Some(Got::Closed(code)) => return code,
            Some(Got::Json(_)) => continue,
            None => panic!("no close within 5 s"),
        }
    }
}

/// Connects and signs in; returns the socket after `ready` and `snapshot`.
async fn sign_in(http: SocketAddr, token: &str) -> (Ws, Value, Value) {
    let mut ws = connect(http).await;
    ws.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .expect("send");
    let ready = json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let snapshot = json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (ws, ready, snapshot)
}

/// Waits for the next message of a type, skipping others.
async fn expect_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn silent(ws: &mut Ws, wait: Duration) -> bool {
    next(ws, wait).await.is_none()
}

fn three_agents() -> Agents {
    Agents::new(
        [
            ("alice", "1001", "alice-demo-token"),
            ("bob", "1002", "bob-demo-token"),
            ("carol", "1003", "carol-token"),
        ]
        .map(|(id, ext, token)| {
            (
                TokenHash::of(token),
                Agent {
                    id: id.into(),
                    name: id.into(),
                    extensions: vec![ext.into()],
                    roles: Vec::new(),
                },
            )
        }),
    )
}

#[tokio::test]
async fn wrong_missing_and_late_tokens_are_closed_with_4401() {
    let daemon = start_with(|s| s.push.session.auth_timeout = Duration::from_millis(300)).await;
    let http = daemon.bound.http.expect("http");

    let mut wrong = connect(http).await;
    wrong
        .send(Message::text(r#"{"type":"auth","token":"guess"}"#))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut wrong).await, Some(4401));

    let mut before_auth = connect(http).await;
    before_auth
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    assert_eq!(
        closed_with(&mut before_auth).await,
        Some(4401),
        "no frame before auth is accepted"
    );

    let mut garbage = connect(http).await;
    garbage.send(Message::text("not json")).await.expect("send");
    assert_eq!(closed_with(&mut garbage).await, Some(4401));

    let mut late = connect(http).await;
    assert_eq!(
        closed_with(&mut late).await,
        Some(4401),
        "auth must arrive within the timeout"
    );
    assert!(daemon.stop().await);
}

/// Clients that stay silent until the auth timeout (a slow network, a daemon busy with a
/// reconnect storm) are closed, but are not failed sign-ins: more of them than the throttle's
/// 30 failures do not lock their address out.
#[tokio::test]
async fn silence_before_auth_is_not_a_failed_sign_in() {
    let daemon = start_with(|s| s.push.session.auth_timeout = Duration::from_millis(300)).await;
    let http = daemon.bound.http.expect("http");
    let mut silent = Vec::new();
    for _ in 0..31 {
        silent.push(connect(http).await);
    }
    for mut ws in silent {
        assert_eq!(closed_with(&mut ws).await, Some(4401), "auth timeout");
    }
    let (_ws, ready, _snapshot) = sign_in(http, "alice-demo-token").await;
    assert_eq!(ready["agent"], "alice");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn ready_snapshot_ping_and_token_replaced_in_session() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut ws, ready, snapshot) = sign_in(http, "alice-demo-token").await;
    assert_eq!(
        (ready["seq"].as_u64(), ready["agent"].as_str()),
        (Some(0), Some("alice"))
    );
    assert_eq!(ready["extensions"], json!(["1001"]));
    assert_eq!(snapshot["seq"], 1);
    assert_eq!(snapshot["calls"], json!([]));
    ws.send(Message::text(r#"{"type":"ping"}"#))
        .await
        .expect("send");
    let pong = json(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["seq"].as_u64()),
        (Some("pong"), Some(2))
    );
    ws.send(Message::text(r#"{"type":"frobnicate"}"#))
        .await
        .expect("send");
    assert_eq!(
        json(&mut ws).await["type"],
        "error",
        "an unknown message is an error, not a disconnect"
    );
    // Replace the token on the live connection.
    ws.send(Message::text(
        r#"{"type":"auth","token":"alice-demo-token"}"#,
    ))
    .await
    .expect("send");
    let again = json(&mut ws).await;
    assert_eq!(
        (again["type"].as_str(), again["seq"].as_u64()),
        (Some("ready"), Some(4))
    );
    // Another agent's token on this connection is refused.
    ws.send(Message::text(r#"{"type":"auth","token":"bob-demo-token"}"#))
        .await
        .expect("send");
    assert_eq!(closed_with(&mut ws).await, Some(4401));
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn each_agent_gets_only_its_own_pops_on_every_connection() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice1, _, _) = sign_in(http, "alice-demo-token").await;
    let (mut alice2, _, _) = sign_in(http, "alice-demo-token").await;
    let (mut bob, _, _) = sign_in(http, "bob-demo-token").await;

    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "route@test",
        "z9hG4bKroute",
        1,
        "",
    ))
    .await;
    for ws in [&mut alice1, &mut alice2] {
        let pop = expect_type(ws, "ringing").await;
        assert_eq!(pop["extension"], "1001");
        assert_eq!(pop["customer"]["name"], "Acme Corporation");
        assert_eq!(pop["caller"]["number"], "+14155550100");
        assert_eq!(pop["caller"]["e164"], "+14155550100");
        assert_eq!(pop["caller"]["withheld"], false);
    }
    assert!(
        silent(&mut bob, Duration::from_millis(400)).await,
        "bob sees nothing of alice's call"
    );

    peer.send(&request(
        "CANCEL",
        "1001",
        peer.local(),
        "UDP",
        "route@test",
        "z9hG4bKroute",
        1,
        "",
    ))
    .await;
    for ws in [&mut alice1, &mut alice2] {
        let ended = expect_type(ws, "ended").await;
        assert_eq!(ended["reason"], "cancelled");
    }
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_ring_group_of_three_all_ring_and_the_losers_end_answered_elsewhere() {
    let daemon = start_with(|s| s.agents = Arc::new(three_agents())).await;
    let http = daemon.bound.http.expect("http");
    let mut sockets = Vec::new();
    for token in ["alice-demo-token", "bob-demo-token", "carol-token"] {
        sockets.push(sign_in(http, token).await.0);
    }
    let caller = Caller {
        number: Some("(312) 555-0142".into()),
        display: None,
        source: Source::Pai,
        withheld: false,
    };
    for ext in ["1001", "1002", "1003"] {
        daemon.calls.apply(CallEvent::Ringing {
            key: "group".into(),
            intake: Intake::HEP,
            extension: ext.into(),
            caller: caller.clone(),
            dialled: Some("600".into()),
        });
    }
    for ws in &mut sockets {
        let pop = expect_type(ws, "ringing").await;
        assert_eq!(
            pop["candidates"].as_array().map(Vec::len),
            Some(2),
            "a shared number offers candidates: {pop}"
        );
        assert_eq!(pop["dialled"], "600");
    }
    daemon.calls.apply(CallEvent::Answered {
        key: "group".into(),
        intake: Intake::HEP,
        by: Some("1002".into()),
    });
    for (i, ws) in sockets.iter_mut().enumerate() {
        let answered = expect_type(ws, "answered").await;
        assert_eq!(answered["by"], "1002");
        assert_eq!(
            answered["hangup_seen"], true,
            "HEP sees the BYE: {answered}"
        );
        assert!(answered["answered_at"].is_string(), "{answered}");
        if i != 1 {
            let ended = expect_type(ws, "ended").await;
            assert_eq!(ended["reason"], "answered_elsewhere");
        }
    }
    daemon.calls.apply(CallEvent::Ended {
        key: "group".into(),
        intake: Intake::HEP,
        extension: None,
        reason: EndReason::Completed,
    });
    let ended = expect_type(&mut sockets[1], "ended").await;
    assert_eq!(ended["reason"], "completed");
    assert!(
        silent(&mut sockets[0], Duration::from_millis(300)).await,
        "a loser's pop ends once"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_refresh_mid_ring_gets_the_call_back_in_the_snapshot() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut ws, _, _) = sign_in(http, "alice-demo-token").await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "refresh@test",
        "z9hG4bKrefresh",
        1,
        "",
    ))
    .await;
    let pop = expect_type(&mut ws, "ringing").await;
    drop(ws);
    let (_, _, snapshot) = sign_in(http, "alice-demo-token").await;
    let calls = snapshot["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{snapshot}");
    assert_eq!(calls[0]["call_id"], pop["call_id"]);
    assert_eq!(calls[0]["state"], "ringing");
    assert_eq!(calls[0]["customer"]["name"], "Acme Corporation");
    let (_, _, bobs) = sign_in(http, "bob-demo-token").await;
    assert_eq!(bobs["calls"], json!([]));

    // A dismissed pop stays dismissed for that agent across refreshes.
    let (mut ws, _, _) = sign_in(http, "alice-demo-token").await;
    ws.send(Message::text(
        json!({"type": "dismiss", "call_id": "no-such-call"}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(json(&mut ws).await["type"], "error");
    ws.send(Message::text(
        json!({"type": "dismiss", "call_id": pop["call_id"]}).to_string(),
    ))
    .await
    .expect("send");
    let ack = json(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), &ack["call_id"]),
        (Some("dismissed"), &pop["call_id"])
    );
    let (_, _, after) = sign_in(http, "alice-demo-token").await;
    assert_eq!(
        after["calls"],
        json!([]),
        "dismissed: not in the snapshot any more"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_for_backpressure_and_others_are_unaffected() {
    let daemon = start_with(|s| {
        s.push.session.queue = 8;
        s.tracker.max_calls = 100_000;
        // Push backpressure alone: no profile sections in this flood.
        s.composer = None;
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let (mut stuck, _, _) = sign_in(http, "alice-demo-token").await;
    let (mut bob, _, _) = sign_in(http, "bob-demo-token").await;
    let caller = Caller {
        number: Some("+14155550100".into()),
        display: Some("x".repeat(200)),
        source: Source::Pai,
        withheld: false,
    };
    // Far more pops than the socket buffers and the queue can hold, to a client that reads none.
    for i in 0..40_000 {
        daemon.calls.apply(CallEvent::Ringing {
            key: format!("flood-{i}"),
            intake: Intake::SIP,
            extension: "1001".into(),
            caller: caller.clone(),
            dialled: None,
        });
        if i % 2000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    daemon.calls.apply(CallEvent::Ringing {
        key: "for-bob".into(),
        intake: Intake::SIP,
        extension: "1002".into(),
        caller,
        dialled: None,
    });
    let pop = expect_type(&mut bob, "ringing").await;
    assert_eq!(pop["extension"], "1002", "bob is unaffected");
    // The close frame reaches it only if its socket buffers have room left; either way the
    // connection ends and the close is counted.
    let code = closed_with(&mut stuck).await;
    assert!(
        matches!(code, Some(4429) | None),
        "closed for not reading: {code:?}"
    );
    assert!(metric(http, "screenpop_push_drops_total", "slow_consumer").await >= 1.0);
    assert!(metric(http, "screenpop_push_drops_total", "closed_too_slow").await >= 1.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_foreign_origins_are_refused() {
    let daemon = start_with(|s| {
        s.push.session.heartbeat = Duration::from_millis(100);
        s.push.session.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let http = daemon.bound.http.expect("http");
    // tungstenite answers pings only while it is read; this client stops reading after sign-in.
    let (mut ws, _, _) = sign_in(http, "alice-demo-token").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let code = closed_with(&mut ws).await;
    assert_eq!(code, Some(4408));

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{http}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().expect("header"));
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("foreign origin refused");
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = format!("ws://{http}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Origin", format!("http://{http}").parse().expect("header"));
    assert!(
        tokio_tungstenite::connect_async(req).await.is_ok(),
        "the page's own origin is allowed"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_caller_carries_e164_beside_the_number_as_presented() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _, _) = sign_in(http, "alice-demo-token").await;
    for (key, presented, e164) in [
        ("e1", "+1-415-555-0102", Some("+14155550102")),
        ("e2", "(415) 555-0103", Some("+14155550103")),
        ("e3", "+44 20 7946 0958", Some("+442079460958")),
        ("e4", "1234", None),
        ("e5", "anonymous", None),
    ] {
        daemon.calls.apply(ringing(key, "1001", presented));
        let pop = expect_type(&mut alice, "ringing").await;
        assert_eq!(pop["caller"]["number"], presented, "{pop}");
        match e164 {
            Some(e164) => assert_eq!(pop["caller"]["e164"], e164, "{pop}"),
            None => assert!(pop["caller"].get("e164").is_none(), "{pop}"),
        }
    }
    // A withheld caller has no number to normalise.
    daemon.calls.apply(CallEvent::Ringing {
        key: "e6".into(),
        intake: Intake::SIP,
        extension: "1001".into(),
        caller: Caller {
            number: Some("+14155550104".into()),
            display: None,
            source: Source::Pai,
            withheld: true,
        },
        dialled: None,
    });
    let pop = expect_type(&mut alice, "ringing").await;
    assert!(pop["caller"].get("e164").is_none(), "{pop}");
    // The snapshot says the same.
    let (_, _, snapshot) = sign_in(http, "alice-demo-token").await;
    let first = snapshot["calls"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["caller"]["number"] == "+1-415-555-0102")
        })
        .cloned()
        .expect("e1 in the snapshot");
    assert_eq!(first["caller"]["e164"], "+14155550102");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_withheld_callers_number_and_name_reach_no_agent_from_any_intake() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _, _) = sign_in(http, "alice-demo-token").await;
    // Every intake's events enter the call table the same way: one choke point.
    for (n, intake) in [
        Intake::SIP,
        Intake::HEP,
        Intake::AMI,
        Intake::ESL,
        Intake::WEBHOOK,
        Intake::DIALOG,
    ]
    .into_iter()
    .enumerate()
    {
        daemon.calls.apply(CallEvent::Ringing {
            key: format!("w{n}"),
            intake,
            extension: "1001".into(),
            caller: Caller {
                number: Some("+14155550100".into()),
                display: Some("Acme Front Desk".into()),
                source: Source::Pai,
                withheld: true,
            },
            dialled: None,
        });
        let (pop, raw) = loop {
            let (v, raw) = ws::next_raw(&mut alice, ws::WAIT).await.expect("ringing");
            if v["type"] == "ringing" {
                break (v, raw);
            }
        };
        assert_eq!(pop["caller"]["withheld"], true, "{pop}");
        assert!(
            !raw.contains("4155550100") && !raw.contains("Acme"),
            "{intake:?}: {raw}"
        );
    }
    // Over the wire: an INVITE with Privacy: id and an asserted identity.
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "withheld@test",
        "z9hG4bKwh",
        1,
        "P-Asserted-Identity: \"Acme Front Desk\" <sip:+14155550100@pbx.test>\r\nPrivacy: id\r\n",
    ))
    .await;
    let raw = loop {
        let (v, raw) = ws::next_raw(&mut alice, ws::WAIT).await.expect("ringing");
        if v["type"] == "ringing" {
            break raw;
        }
    };
    assert!(raw.contains("\"withheld\":true"), "{raw}");
    assert!(!raw.contains("4155550100"), "{raw}");
    // Nor in a snapshot, nor in the API.
    let (_, _, snapshot) = sign_in(http, "alice-demo-token").await;
    assert!(!snapshot.to_string().contains("4155550100"), "{snapshot}");
    let (status, body) = http_get(http, "/api/calls", Some("alice-demo-token")).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("4155550100") && body.contains("withheld"),
        "{body}"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_fork_target_answered_call_says_its_hang_up_will_not_be_seen() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let (mut ws, _, _) = sign_in(http, "alice-demo-token").await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "fork-answered@test",
        "z9hG4bKforkans",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100);
    expect_type(&mut ws, "ringing").await;
    // The phone answered: the proxy cancels screenpop's branch with cause 200. Nothing of the
    // call reaches screenpop after this.
    peer.send(&request(
        "CANCEL",
        "1001",
        peer.local(),
        "UDP",
        "fork-answered@test",
        "z9hG4bKforkans",
        1,
        "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
    ))
    .await;
    let answered = expect_type(&mut ws, "answered").await;
    assert_eq!(answered["hangup_seen"], false, "{answered}");
    assert!(answered["answered_at"].is_string(), "{answered}");
    // A page that reconnects gets the same in its snapshot.
    let (_again, _, snapshot) = sign_in(http, "alice-demo-token").await;
    let entry = &snapshot["calls"][0];
    assert_eq!(entry["state"], "answered", "{snapshot}");
    assert_eq!(entry["hangup_seen"], false, "{snapshot}");
    assert_eq!(entry["answered_at"], answered["answered_at"], "{snapshot}");
    assert!(daemon.stop().await);
}
