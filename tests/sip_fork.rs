//! The SIP fork-target listener end to end: real UDP and TCP sockets on loopback, the real
//! daemon, the real call table.

mod support;

use std::time::Duration;

use screenpop::calls::{CallState, Change, EndReason};
use screenpop::resolve::Resolution;
use screenpop::telephony::uac::{self, CallTransport, Ending, TestCall};
use support::*;

#[tokio::test]
async fn invite_trying_then_cancel_gives_200_and_487_and_the_call_pops_and_ends() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    let local = peer.local();

    peer.send(&request(
        "INVITE",
        "1001",
        local,
        "UDP",
        "call-1@test",
        "z9hG4bKa1",
        1,
        "",
    ))
    .await;
    let trying = peer.expect().await;
    assert_eq!((trying.code, trying.cseq_method.as_str()), (100, "INVITE"));
    assert!(
        !trying.to.contains("tag="),
        "no To tag on 100: {}",
        trying.raw
    );
    // rport filled with our port, received added (RFC 3581).
    assert!(
        trying.raw.contains(&format!(";rport={}", local.port())),
        "{}",
        trying.raw
    );

    let ringing = next_update(&mut updates, is_ringing).await;
    assert_eq!(
        ringing.change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    match &ringing.call.resolution {
        Resolution::Customer { customer } => assert_eq!(customer.name(), "Acme Corporation"),
        other => panic!("expected Acme, got {other:?}"),
    }
    assert_eq!(
        ringing.call.caller_display.as_deref(),
        Some("Acme Front Desk")
    );

    // A retransmitted INVITE gets the 100 again and does not pop twice.
    peer.send(&request(
        "INVITE",
        "1001",
        local,
        "UDP",
        "call-1@test",
        "z9hG4bKa1",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100);

    peer.send(&request(
        "CANCEL",
        "1001",
        local,
        "UDP",
        "call-1@test",
        "z9hG4bKa1",
        1,
        "",
    ))
    .await;
    let mut got = [peer.expect().await, peer.expect().await];
    got.sort_by_key(|r| r.code);
    assert_eq!((got[0].code, got[0].cseq_method.as_str()), (200, "CANCEL"));
    assert_eq!((got[1].code, got[1].cseq_method.as_str()), (487, "INVITE"));
    assert!(got[1].to.contains(";tag="), "487 carries a To tag");
    let tag = got[1].to.split(";tag=").nth(1).expect("tag");
    assert!(
        got[0].to.contains(tag),
        "200 to CANCEL carries the same To tag"
    );

    let ended = next_update(&mut updates, |u| matches!(u.change, Change::Ended { .. })).await;
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    assert!(
        !matches!(
            updates.try_recv().map(|u| u.change),
            Ok(Change::Ringing { .. })
        ),
        "no second pop"
    );

    // Without an ACK the 487 is retransmitted (Timer G), then ACK stops it.
    let again = peer
        .recv(Duration::from_millis(1500))
        .await
        .expect("487 retransmitted");
    assert_eq!(again.code, 487);
    let to = again.to.clone();
    let ack = String::from_utf8(request(
        "ACK",
        "1001",
        local,
        "UDP",
        "call-1@test",
        "z9hG4bKa1",
        1,
        "",
    ))
    .expect("utf8")
    .replace("To: <sip:1001@pbx.test>", &format!("To: {to}"));
    peer.send(ack.as_bytes()).await;
    assert!(
        peer.recv(Duration::from_millis(2500)).await.is_none(),
        "no more retransmits after ACK"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn options_keepalive_and_method_errors() {
    let daemon = start().await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    let local = peer.local();
    peer.send(&request(
        "OPTIONS",
        "1001",
        local,
        "UDP",
        "o1",
        "z9hG4bKo1",
        1,
        "",
    ))
    .await;
    let ok = peer.expect().await;
    assert_eq!(ok.code, 200);
    assert!(
        ok.raw.contains("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE"),
        "{}",
        ok.raw
    );
    peer.send(&request(
        "REGISTER",
        "1001",
        local,
        "UDP",
        "r1",
        "z9hG4bKr1",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 405);
    peer.send(&request(
        "FROBNICATE",
        "1001",
        local,
        "UDP",
        "f1",
        "z9hG4bKf1",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 501);
    let bad = String::from_utf8(request(
        "OPTIONS",
        "1001",
        local,
        "UDP",
        "v1",
        "z9hG4bKv1",
        1,
        "",
    ))
    .expect("utf8")
    .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    peer.send(bad.as_bytes()).await;
    assert_eq!(peer.expect().await.code, 505);
    let no_call_id = String::from_utf8(request(
        "INVITE",
        "1001",
        local,
        "UDP",
        "x",
        "z9hG4bKn1",
        1,
        "",
    ))
    .expect("utf8")
    .replace("Call-ID: x\r\n", "");
    peer.send(no_call_id.as_bytes()).await;
    let r = peer.expect().await;
    assert_eq!(
        (r.code, r.reason.as_str()),
        (400, "Bad Request (missing Call-ID)")
    );
    // Garbage and a garbled response are dropped; the daemon still answers.
    peer.send(b"\x00\x01\x02 not sip at all").await;
    peer.send(b"SIP/2.0 999999 Nope\r\n\r\n").await;
    peer.send(&request(
        "OPTIONS",
        "1001",
        local,
        "UDP",
        "o2",
        "z9hG4bKo2",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 200);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn tcp_two_messages_in_one_segment_and_one_split_over_three() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let mut peer = TcpPeer::connect(daemon.bound.sip_tcp[0]).await;
    let local = peer.local();
    let mut both = request("OPTIONS", "1001", local, "TCP", "t1", "z9hG4bKt1", 1, "");
    both.extend(request(
        "INVITE",
        "1002",
        local,
        "TCP",
        "t2",
        "z9hG4bKt2",
        1,
        "",
    ));
    peer.send(&both).await;
    let a = peer.expect().await;
    let b = peer.expect().await;
    assert_eq!((a.code, a.cseq_method.as_str()), (200, "OPTIONS"));
    assert_eq!((b.code, b.cseq_method.as_str()), (100, "INVITE"));
    let ringing = next_update(&mut updates, is_ringing).await;
    assert_eq!(
        ringing.change,
        Change::Ringing {
            extension: "1002".into()
        }
    );

    let split = request("CANCEL", "1002", local, "TCP", "t2", "z9hG4bKt2", 1, "");
    let (one, rest) = split.split_at(20);
    let (two, three) = rest.split_at(rest.len() - 7);
    for part in [one, two, three] {
        peer.send(part).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut codes = vec![peer.expect().await.code, peer.expect().await.code];
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // A CRLFCRLF keep-alive ping is answered with a CRLF pong (RFC 5626 §3.5.1).
    peer.send(b"\r\n\r\n").await;
    let mut pong = [0u8; 2];
    tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_exact(&mut peer.stream, &mut pong),
    )
    .await
    .expect("pong")
    .expect("read");
    assert_eq!(&pong, b"\r\n");
    // No Content-Length on a stream: 400, then the connection is closed.
    let no_cl = String::from_utf8(request(
        "OPTIONS",
        "1001",
        local,
        "TCP",
        "t3",
        "z9hG4bKt3",
        1,
        "",
    ))
    .expect("utf8")
    .replace("Content-Length: 0\r\n", "");
    peer.send(no_cl.as_bytes()).await;
    let r = peer.expect().await;
    assert_eq!(r.code, 400, "{}", r.raw);
    assert!(
        peer.recv(Duration::from_secs(2)).await.is_none(),
        "closed after a framing error"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn answered_elsewhere_and_bye_and_the_call_tool_over_udp_and_tcp() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let sip = daemon.bound.sip_udp[0];
    assert_eq!(daemon.bound.sip_tcp[0], sip, "one address for UDP and TCP");
    let call = |tcp, ending| TestCall {
        target: sip,
        transport: if tcp {
            CallTransport::Tcp
        } else {
            CallTransport::Udp
        },
        to: "1001".into(),
        from: "(415) 555-0100".into(),
        display: Some("Acme \"HQ\"".into()),
        hold: Duration::from_millis(100),
        ending,
    };

    let t = uac::place(&call(false, Ending::AnsweredElsewhere))
        .await
        .expect("call");
    let codes: Vec<u16> = t.responses.iter().map(|r| r.0).collect();
    assert!(
        codes.starts_with(&[100]) && codes.contains(&200) && codes.contains(&487),
        "{codes:?}"
    );
    let ringing = next_update(&mut updates, is_ringing).await;
    assert_eq!(ringing.call.caller_display.as_deref(), Some("Acme \"HQ\""));
    let answered = next_update(&mut updates, |u| {
        matches!(u.change, Change::Answered { .. })
    })
    .await;
    assert_eq!(answered.call.state, CallState::Answered { by: None });
    assert_eq!(
        daemon.calls.live(Some(&["1001".into()])).len(),
        1,
        "an answered call stays live"
    );

    let t = uac::place(&call(true, Ending::Bye))
        .await
        .expect("call over TCP");
    let codes: Vec<u16> = t.responses.iter().map(|r| r.0).collect();
    assert!(
        codes.starts_with(&[100]) && codes.contains(&481) && codes.contains(&487),
        "{codes:?}"
    );
    let ended = next_update(&mut updates, |u| {
        matches!(u.change, Change::Ended { .. })
            && u.call.intake == screenpop::calls::Intake::SIP
            && u.call.caller_number.is_some()
    })
    .await;
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Completed
        }
    );

    let t = uac::place(&call(true, Ending::Cancel))
        .await
        .expect("call over TCP");
    assert_eq!(
        t.responses
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>()
            .iter()
            .filter(|c| **c == 487)
            .count(),
        1
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn ring_timeout_ends_the_branch_with_480() {
    let daemon = start_with(|s| s.ring_timeout = Duration::from_millis(300)).await;
    let mut updates = daemon.calls.subscribe();
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1002",
        peer.local(),
        "UDP",
        "rt@test",
        "z9hG4bKrt",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100);
    let last = peer.expect().await;
    assert_eq!(last.code, 480, "{}", last.raw);
    let ended = next_update(&mut updates, |u| matches!(u.change, Change::Ended { .. })).await;
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Timeout
        }
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn sources_outside_the_allow_list_are_dropped_and_counted() {
    let daemon = start_with(|s| {
        s.sip_allow = screenpop::telephony::allow::Allow::new(["10.0.0.0/8".parse().expect("net")])
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let before = metric(http, "screenpop_drops_total", "source_not_allowed").await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "OPTIONS",
        "1001",
        peer.local(),
        "UDP",
        "deny",
        "z9hG4bKd",
        1,
        "",
    ))
    .await;
    assert!(
        peer.recv(Duration::from_millis(500)).await.is_none(),
        "no answer to a stranger"
    );
    let after = metric(http, "screenpop_drops_total", "source_not_allowed").await;
    assert!(after >= before + 1.0, "{before} -> {after}");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn http_health_metrics_and_the_agents_view() {
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let mut updates = daemon.calls.subscribe();
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "1001",
        peer.local(),
        "UDP",
        "view@test",
        "z9hG4bKview",
        1,
        "",
    ))
    .await;
    next_update(&mut updates, is_ringing).await;

    let (status, body) = http_get(http, "/healthz", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert_eq!(http_get(http, "/api/calls", None).await.0, 401);
    assert_eq!(http_get(http, "/api/calls", Some("wrong")).await.0, 401);
    let (status, alice) = http_get(http, "/api/calls", Some("alice-demo-token")).await;
    assert_eq!(status, 200);
    let alice: serde_json::Value = serde_json::from_str(&alice).expect("json");
    assert_eq!(alice["calls"].as_array().map(Vec::len), Some(1), "{alice}");
    assert_eq!(
        alice["calls"][0]["resolution"]["customer"]["name"],
        "Acme Corporation"
    );
    let (_, bob) = http_get(http, "/api/calls", Some("bob-demo-token")).await;
    let bob: serde_json::Value = serde_json::from_str(&bob).expect("json");
    assert_eq!(
        bob["calls"].as_array().map(Vec::len),
        Some(0),
        "bob sees only his own calls"
    );

    let (_, metrics) = http_get(http, "/metrics", None).await;
    for name in [
        "screenpop_sip_messages_total",
        "screenpop_calls_total",
        "screenpop_sip_responses_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(!metrics.contains("4155550100"), "no numbers in metrics");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_merged_request_gets_482_but_a_fork_to_another_extension_rings() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    let local = peer.local();
    peer.send(&request(
        "INVITE",
        "1001",
        local,
        "UDP",
        "fork@test",
        "z9hG4bKb1",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100);
    // Same request, another branch (it came by a second path): merged.
    peer.send(&request(
        "INVITE",
        "1001",
        local,
        "UDP",
        "fork@test",
        "z9hG4bKb2",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 482);
    // Same Call-ID forked to another extension: a second leg of the same call.
    peer.send(&request(
        "INVITE",
        "1002",
        local,
        "UDP",
        "fork@test",
        "z9hG4bKb3",
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100);
    let first = next_update(&mut updates, is_ringing).await;
    let second = next_update(&mut updates, is_ringing).await;
    assert_eq!(first.call.id, second.call.id, "one call, two legs");
    assert_eq!(second.call.legs.len(), 2);
    assert!(daemon.stop().await);
}

/// A PBX that sends faster than it reads its answers (here: 3,000 INVITEs at once on a
/// connection with a 4 KiB receive window, read only a second later) gets every 100 Trying:
/// the daemon stops reading while its write queue is full instead of dropping answers.
#[tokio::test]
async fn tcp_a_peer_that_reads_slowly_loses_no_100_trying() {
    use bytes::BytesMut;
    use screenpop::telephony::sip::scan::{Frame, frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CALLS: usize = 3_000;
    let daemon = start().await;
    let http = daemon.bound.http.expect("http");
    let target = daemon.bound.sip_tcp[0];
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let stream = socket.connect(target).await.expect("connect");
    let local = stream.local_addr().expect("local");
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let mut all = Vec::new();
        for i in 0..CALLS {
            all.extend(request(
                "INVITE",
                "1002",
                local,
                "TCP",
                &format!("slow-reader-{i}"),
                &format!("z9hG4bKslow{i}"),
                1,
                "",
            ));
        }
        writer.write_all(&all).await.expect("write");
        writer
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut buf = BytesMut::new();
    let mut trying = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while trying < CALLS {
        match frame(&buf) {
            Ok(Frame::Message(n)) => {
                let response = parse_response(&buf.split_to(n)).expect("a response");
                assert_eq!(
                    (response.code, response.cseq_method.as_str()),
                    (100, "INVITE")
                );
                trying += 1;
            }
            Ok(Frame::Skip { len, .. }) => {
                let _ = buf.split_to(len);
            }
            Ok(Frame::Incomplete) => {
                let n = tokio::time::timeout_at(deadline, reader.read_buf(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("only {trying} of {CALLS} 100 Trying in 30 s"))
                    .expect("read");
                assert_ne!(n, 0, "closed after {trying} of {CALLS} 100 Trying");
            }
            Err(error) => panic!("unframable answer: {error}"),
        }
    }
    let _writer = sending.await.expect("sender");
    assert_eq!(
        metric(http, "screenpop_drops_total", "reply_not_sent").await,
        0.0
    );
    assert!(daemon.stop().await);
}
