//! HEPv3 intake end to end: a proxy mirroring a whole call (every message reported twice, as
//! received and as sent), a ring group, HEP over TCP framing, and the capture password.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use screenpop::calls::{CallState, Change, EndReason, Intake};
use screenpop::telephony::hep;
use support::*;
use tokio::io::AsyncWriteExt;

const CALLER: &str = "192.0.2.10:5060";
const PROXY: &str = "192.0.2.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// A request as a proxy at `via_top` would relay it; `extra_via` is the proxy's own Via on the
/// outgoing copy.
fn req(
    method: &str,
    ruri: &str,
    call_id: &str,
    cseq: &str,
    to_tag: Option<&str>,
    vias: &[&str],
    extra: &str,
) -> Vec<u8> {
    let vias: String = vias
        .iter()
        .map(|v| format!("Via: SIP/2.0/UDP {v}\r\n"))
        .collect();
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} {ruri} SIP/2.0\r\n{vias}Max-Forwards: 69\r\nFrom: \"Acme\" <sip:+14155550100@carrier.test>;tag=f1\r\n\
         To: <sip:600@pbx.test>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn resp(
    code: u16,
    reason: &str,
    call_id: &str,
    cseq: &str,
    to_tag: &str,
    vias: &[&str],
) -> Vec<u8> {
    let vias: String = vias
        .iter()
        .map(|v| format!("Via: SIP/2.0/UDP {v}\r\n"))
        .collect();
    format!(
        "SIP/2.0 {code} {reason}\r\n{vias}From: \"Acme\" <sip:+14155550100@carrier.test>;tag=f1\r\n\
         To: <sip:600@pbx.test>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Capture {
    socket: tokio::net::UdpSocket,
    target: SocketAddr,
    password: Option<&'static [u8]>,
}

impl Capture {
    async fn new(target: SocketAddr, password: Option<&'static [u8]>) -> Self {
        Capture {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            target,
            password,
        }
    }

    /// Reports one message as a capture agent on the proxy would.
    async fn report(&self, src: &str, dst: &str, sip: &[u8]) {
        let packet = hep::encode(
            addr(src),
            addr(dst),
            (1_700_000_000, 0),
            101,
            self.password,
            sip,
        );
        self.socket
            .send_to(&packet, self.target)
            .await
            .expect("send");
    }

    /// Reports a relayed message twice: as received and as sent.
    async fn mirror(&self, hops: [(&str, &str); 2], received: &[u8], sent: &[u8]) {
        self.report(hops[0].0, hops[0].1, received).await;
        self.report(hops[1].0, hops[1].1, sent).await;
    }
}

#[tokio::test]
async fn a_mirrored_ring_group_call_pops_once_per_leg_and_tracks_the_answer() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let http = daemon.bound.http.expect("http");
    let dups_before = metric(http, "screenpop_hep_packets_total", "result=\"duplicate\"").await;
    let cap = Capture::new(daemon.bound.hep_udp[0], None).await;
    let (p1001, p1002) = ("192.0.2.21:5062", "192.0.2.22:5062");
    let caller_via = "192.0.2.10:5060;branch=z9hG4bKcaller";
    let via_1001 = "192.0.2.1:5060;branch=z9hG4bKleg1001";
    let via_1002 = "192.0.2.1:5060;branch=z9hG4bKleg1002";
    let cid = "ringgroup-1@carrier.test";

    // INVITE to the group 600, forked by the proxy to two phones (R-URI rewritten to contacts).
    let inbound = req(
        "INVITE",
        "sip:600@pbx.test",
        cid,
        "1 INVITE",
        None,
        &[caller_via],
        "",
    );
    cap.report(CALLER, PROXY, &inbound).await;
    cap.report(CALLER, PROXY, &inbound).await; // the same copy twice: a duplicate
    for (ext, phone, via) in [("1001", p1001, via_1001), ("1002", p1002, via_1002)] {
        let out = req(
            "INVITE",
            &format!("sip:{ext}@{phone}"),
            cid,
            "1 INVITE",
            None,
            &[via, caller_via],
            "",
        );
        cap.report(PROXY, phone, &out).await;
    }
    // Both phones ring; 180s are mirrored back to the caller.
    for (phone, via, tag) in [(p1001, via_1001, "t1001"), (p1002, via_1002, "t1002")] {
        let ringing = resp(180, "Ringing", cid, "1 INVITE", tag, &[via, caller_via]);
        let relayed = resp(180, "Ringing", cid, "1 INVITE", tag, &[caller_via]);
        cap.mirror([(phone, PROXY), (PROXY, CALLER)], &ringing, &relayed)
            .await;
    }
    // 1002 answers; the proxy cancels 1001 with "answered elsewhere".
    let ok = resp(200, "OK", cid, "1 INVITE", "t1002", &[via_1002, caller_via]);
    let ok_relayed = resp(200, "OK", cid, "1 INVITE", "t1002", &[caller_via]);
    cap.mirror([(p1002, PROXY), (PROXY, CALLER)], &ok, &ok_relayed)
        .await;
    let cancel = req(
        "CANCEL",
        &format!("sip:1001@{p1001}"),
        cid,
        "1 CANCEL",
        None,
        &[via_1001],
        "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
    );
    cap.report(PROXY, p1001, &cancel).await;

    let mut rang = Vec::new();
    let answered = loop {
        let u = next_update(&mut updates, |_| true).await;
        assert_eq!(u.call.intake, Intake::HEP);
        match u.change {
            Change::Ringing { extension } => rang.push(extension),
            Change::Answered { .. } => break u,
            _ => {}
        }
    };
    rang.sort();
    assert_eq!(
        rang,
        vec!["1001", "1002", "600"],
        "one leg per extension, the group's own R-URI included"
    );
    assert_eq!(
        answered.call.state,
        CallState::Answered {
            by: Some("1002".into())
        }
    );
    let loser = next_update(&mut updates, |u| {
        matches!(u.change, Change::LegEnded { .. })
    })
    .await;
    assert!(matches!(
        loser.change,
        Change::LegEnded {
            reason: EndReason::AnsweredElsewhere,
            ..
        }
    ));

    // The caller hangs up: BYE, mirrored.
    let bye_in = req(
        "BYE",
        &format!("sip:1002@{p1002}"),
        cid,
        "2 BYE",
        Some("t1002"),
        &[caller_via],
        "",
    );
    let bye_out = req(
        "BYE",
        &format!("sip:1002@{p1002}"),
        cid,
        "2 BYE",
        Some("t1002"),
        &["192.0.2.1:5060;branch=z9hG4bKbye", caller_via],
        "",
    );
    cap.mirror([(CALLER, PROXY), (PROXY, p1002)], &bye_in, &bye_out)
        .await;
    let ended = next_update(&mut updates, |u| matches!(u.change, Change::Ended { .. })).await;
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Completed
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), updates.recv())
            .await
            .is_err(),
        "nothing more"
    );
    let dups_after = metric(http, "screenpop_hep_packets_total", "result=\"duplicate\"").await;
    // The repeated INVITE, two 180s, the 200 and the BYE: each a second copy of one message.
    assert!(
        dups_after >= dups_before + 5.0,
        "duplicates counted: {dups_before} -> {dups_after}"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn hep_over_tcp_frames_back_to_back_and_split_packets() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let mut stream = tokio::net::TcpStream::connect(daemon.bound.hep_tcp[0])
        .await
        .expect("connect");
    let mut both = Vec::new();
    for (cid, ext) in [("tcp-1", "1001"), ("tcp-2", "1002")] {
        let invite = req(
            "INVITE",
            &format!("sip:{ext}@192.0.2.21"),
            cid,
            "1 INVITE",
            None,
            &["192.0.2.1;branch=z9hG4bK-tcp"],
            "",
        );
        both.extend(hep::encode(
            addr(PROXY),
            addr("192.0.2.21:5060"),
            (0, 0),
            1,
            None,
            &invite,
        ));
    }
    stream.write_all(&both).await.expect("write");
    let third = req(
        "INVITE",
        "sip:1001@192.0.2.21",
        "tcp-3",
        "1 INVITE",
        None,
        &["192.0.2.1;branch=z9hG4bK-tcp3"],
        "",
    );
    let packet = hep::encode(
        addr(PROXY),
        addr("192.0.2.21:5060"),
        (0, 0),
        1,
        None,
        &third,
    );
    for part in [&packet[..3], &packet[3..40], &packet[40..]] {
        stream.write_all(part).await.expect("write");
        stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(next_update(&mut updates, is_ringing).await.change);
    }
    assert_eq!(keys.len(), 3);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_capture_password_is_enforced() {
    let daemon = start_with(|s| s.hep_password = Some("s3cret".into())).await;
    let mut updates = daemon.calls.subscribe();
    let http = daemon.bound.http.expect("http");
    let invite = |cid: &str| {
        req(
            "INVITE",
            "sip:1001@192.0.2.21",
            cid,
            "1 INVITE",
            None,
            &["192.0.2.1;branch=z9hG4bKpw"],
            "",
        )
    };
    let wrong = Capture::new(daemon.bound.hep_udp[0], Some(b"guess")).await;
    wrong
        .report(PROXY, "192.0.2.21:5060", &invite("pw-wrong"))
        .await;
    let none = Capture::new(daemon.bound.hep_udp[0], None).await;
    none.report(PROXY, "192.0.2.21:5060", &invite("pw-none"))
        .await;
    let right = Capture::new(daemon.bound.hep_udp[0], Some(b"s3cret")).await;
    right
        .report(PROXY, "192.0.2.21:5060", &invite("pw-right"))
        .await;
    let u = next_update(&mut updates, is_ringing).await;
    assert_eq!(
        daemon.calls.live(None).len(),
        1,
        "only the authenticated packet made a call"
    );
    assert!(u.call.caller_number.is_some());
    assert!(metric(http, "screenpop_hep_packets_total", "result=\"bad_auth\"").await >= 2.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_call_the_pbx_refuses_towards_the_caller_ends_at_once_every_leg_with_it() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let cap = Capture::new(daemon.bound.hep_udp[0], None).await;
    let (p1001, p1002) = ("192.0.2.21:5062", "192.0.2.22:5062");
    let caller_via = "192.0.2.10:5060;branch=z9hG4bKorigin";
    let via_1001 = "192.0.2.1:5060;branch=z9hG4bKr1001";
    let via_1002 = "192.0.2.1:5060;branch=z9hG4bKr1002";
    let cid = "refused-1@carrier.test";
    let inbound = req(
        "INVITE",
        "sip:+18005550100@pbx.test",
        cid,
        "1 INVITE",
        None,
        &[caller_via],
        "",
    );
    cap.report(CALLER, PROXY, &inbound).await;
    for (ext, phone, via) in [("1001", p1001, via_1001), ("1002", p1002, via_1002)] {
        let out = req(
            "INVITE",
            &format!("sip:{ext}@{phone}"),
            cid,
            "1 INVITE",
            None,
            &[via, caller_via],
            "",
        );
        cap.report(PROXY, phone, &out).await;
    }
    let mut rang = Vec::new();
    while rang.len() < 2 {
        if let Change::Ringing { extension } = next_update(&mut updates, is_ringing).await.change {
            rang.push(extension);
        }
    }
    // 1001 is busy: its own 486 ends its leg only.
    let busy = resp(
        486,
        "Busy Here",
        cid,
        "1 INVITE",
        "b1001",
        &[via_1001, caller_via],
    );
    cap.report(p1001, PROXY, &busy).await;
    let leg = next_update(&mut updates, |u| {
        matches!(u.change, Change::LegEnded { .. } | Change::Ended { .. })
    })
    .await;
    assert!(
        matches!(
            &leg.change,
            Change::LegEnded { extension, reason: EndReason::Rejected } if extension == "1001"
        ),
        "{:?}",
        leg.change
    );
    // The PBX gives up towards the caller (its own timer, a routing rule): 480 on the caller's
    // transaction. 1002's INVITE is never answered or cancelled on the wire we see; the call
    // ends anyway, at once.
    let refused = resp(
        480,
        "Temporarily Unavailable",
        cid,
        "1 INVITE",
        "pbx1",
        &[caller_via],
    );
    cap.report(PROXY, CALLER, &refused).await;
    let ended = next_update(&mut updates, |u| matches!(u.change, Change::Ended { .. })).await;
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Rejected
        }
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_mirrored_invite_the_sip_endpoint_would_refuse_pops_nothing() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let http = daemon.bound.http.expect("http");
    let cap = Capture::new(daemon.bound.hep_udp[0], None).await;
    let via = "192.0.2.10:5060;branch=z9hG4bKbad";
    // Two Call-IDs: which call is it? The PBX answered 400; nothing rang.
    let two_call_ids = req(
        "INVITE",
        "sip:1001@pbx.test",
        "bad-1@carrier.test",
        "1 INVITE",
        None,
        &[via],
        "Call-ID: bad-1b@carrier.test\r\n",
    );
    // A Via without a host.
    let broken_via = String::from_utf8(req(
        "INVITE",
        "sip:1001@pbx.test",
        "bad-2@carrier.test",
        "1 INVITE",
        None,
        &[via],
        "",
    ))
    .expect("text")
    .replace(
        &format!("Via: SIP/2.0/UDP {via}"),
        "Via: SIP/2.0/UDP ;branch=z9hG4bKbad",
    )
    .into_bytes();
    // Two CSeqs.
    let two_cseqs = req(
        "INVITE",
        "sip:1001@pbx.test",
        "bad-3@carrier.test",
        "1 INVITE",
        None,
        &[via],
        "CSeq: 2 INVITE\r\n",
    );
    let good = req(
        "INVITE",
        "sip:1001@pbx.test",
        "good-1@carrier.test",
        "1 INVITE",
        None,
        &[via],
        "Require: 100rel\r\n",
    );
    for sip in [&two_call_ids, &broken_via, &two_cseqs, &good] {
        cap.report(CALLER, PROXY, sip).await;
    }
    let first = next_update(&mut updates, is_ringing).await;
    assert_eq!(first.call.key, "good-1@carrier.test");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), updates.recv())
            .await
            .is_err(),
        "nothing else rang"
    );
    let invalid = metric(
        http,
        "screenpop_hep_packets_total",
        "result=\"invalid_request\"",
    )
    .await;
    assert_eq!(invalid, 3.0);
    assert!(daemon.stop().await);
}
