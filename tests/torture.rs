//! RFC 4475 and RFC 5118 torture messages (byte-exact, `tests/torture/`), sent to the real daemon
//! over UDP, over TCP and wrapped in HEP. Each message has screenpop's expected outcome as a UAS
//! fork target (where the RFC's code depends on the element's role, the UAS answer is taken:
//! e.g. 405 for REGISTER, since screenpop is no registrar). After each whole set the daemon
//! still answers OPTIONS, and exactly the messages it held with 100 Trying popped, over SIP and
//! over HEP alike: one validity judgement for both.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use screenpop::telephony::hep;
use screenpop::telephony::sip::identity;
use screenpop::telephony::sip::scan::{Frame, Transport, frame, scan};
use support::*;

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    message: Vec<Entry>,
}

#[derive(Debug, serde::Deserialize)]
struct Entry {
    file: String,
    kind: String,
    valid: bool,
    line_endings: Option<String>,
    from_user: Option<String>,
    from_display: Option<String>,
}

/// What screenpop answers: a status code, or nothing (responses are never answered).
fn expected() -> HashMap<&'static str, Option<u16>> {
    HashMap::from([
        // RFC 4475 §3.1.1: valid messages.
        // wsinv's To carries a tag: a request inside a dialog we never made, so 481 [RFC 3261
        // §12.2.2]. Its syntax is checked by the identity test below.
        ("wsinv", Some(481)),
        ("intmeth", Some(501)),
        ("esc01", Some(100)),
        ("escnull", Some(405)),
        ("esc02", Some(501)),
        ("lwsdisp", Some(200)),
        ("longreq", Some(100)),
        ("dblreq", Some(405)),
        ("semiuri", Some(200)),
        ("transports", Some(200)),
        ("mpart01", Some(405)),
        ("unreason", None),
        ("noreason", None),
        // §3.1.2: invalid messages.
        ("badinv01", Some(400)),
        ("clerr", Some(400)),
        ("ncl", Some(400)),
        ("scalar02", Some(400)),
        ("scalarlg", None),
        ("quotbal", Some(400)),
        ("ltgtruri", Some(400)),
        ("lwsruri", Some(400)),
        ("lwsstart", Some(400)),
        ("trws", Some(400)),
        ("escruri", Some(400)),
        // The Date is not important to a fork target, so it is not read (RFC 4475 §3.1.2.13).
        ("baddate", Some(100)),
        ("regbadct", Some(400)),
        ("badaspec", Some(400)),
        ("baddn", Some(400)),
        ("badvers", Some(505)),
        ("mismatch01", Some(400)),
        ("mismatch02", Some(501)),
        ("bigcode", None),
        // §3.2 transaction layer: falls back to RFC 2543 matching; OPTIONS is answered.
        ("badbranch", Some(200)),
        // §3.3 application layer.
        ("insuf", Some(400)),
        ("unkscm", Some(416)),
        ("novelsc", Some(416)),
        ("unksm2", Some(405)),
        // An OPTIONS requiring an unknown extension is refused; an INVITE is not (below).
        ("bext01", Some(420)),
        // A fork target pops every well-formed INVITE whatever its body type or Accept: it
        // never reads the body and never answers with one (issue 17). RFC 4475 expects 415 and
        // 406 from a UAS that would answer.
        ("invut", Some(100)),
        ("regaut01", Some(405)),
        ("multi01", Some(400)),
        ("mcl01", Some(400)),
        ("bcast", None),
        ("zeromf", Some(200)),
        ("cparam01", Some(405)),
        ("cparam02", Some(405)),
        ("regescrt", Some(405)),
        ("sdp01", Some(100)),
        // §3.4 backward compatibility.
        ("inv2543", Some(100)),
        // RFC 5118.
        ("ipv6-good", Some(405)),
        ("ipv6-bad", Some(400)),
        ("port-ambiguous", Some(405)),
        ("port-unambiguous", Some(405)),
        // Robust implementations parse the top Via and go on: a BYE for no dialog gets 481.
        ("via-received-param-with-delim", Some(481)),
        ("via-received-param-no-delim", Some(200)),
        // As archived, ipv6-in-sdp declares Content-Length 268 for a 251-byte body (CRLF
        // restored): over UDP that is a 400 [RFC 3261 §18.3]. Over TCP it waits for the rest.
        ("ipv6-in-sdp", Some(400)),
        ("mult-ip-in-header", Some(481)),
        ("mult-ip-in-sdp", Some(100)),
        ("ipv4-mapped-ipv6", Some(100)),
        ("ipv6-bug-abnf-3-colons", Some(200)),
        ("ipv6-correct-abnf-2-colons", Some(200)),
    ])
}

fn load() -> Vec<(Entry, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml")).expect("manifest"))
            .expect("toml");
    manifest
        .message
        .into_iter()
        .map(|e| {
            let mut bytes = std::fs::read(dir.join(&e.file)).expect("message file");
            // The RFC 5118 archive stores its messages with bare LF, but its Content-Lengths count
            // CRLF line ends (e.g. ipv6-in-sdp declares 268 for a 242-byte LF body): restore CRLF.
            if e.line_endings.as_deref() == Some("LF") {
                bytes = String::from_utf8(bytes)
                    .expect("text")
                    .replace('\n', "\r\n")
                    .into_bytes();
            }
            (e, bytes)
        })
        .collect()
}

fn name(e: &Entry) -> &str {
    e.file
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".dat"))
        .unwrap_or(&e.file)
}

/// The Call-IDs of the messages that must pop: those the daemon holds with 100 Trying.
fn must_pop(messages: &[(Entry, Vec<u8>)]) -> std::collections::BTreeSet<String> {
    let expected = expected();
    messages
        .iter()
        .filter(|(e, _)| expected[name(e)] == Some(100))
        .map(|(_, bytes)| {
            let msg = scan(bytes, Transport::Datagram).expect("scans");
            let id = msg
                .headers
                .get(screenpop::telephony::sip::scan::Name::CallId)
                .expect("Call-ID");
            String::from_utf8_lossy(id).into_owned()
        })
        .collect()
}

/// The keys (Call-IDs) of every call that rang, until nothing more comes for a while.
async fn popped(
    updates: &mut tokio::sync::broadcast::Receiver<screenpop::calls::CallUpdate>,
) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    while let Ok(Ok(update)) = tokio::time::timeout(Duration::from_secs(1), updates.recv()).await {
        if is_ringing(&update) {
            keys.insert(update.call.key.clone());
        }
    }
    keys
}

async fn still_answers_options(udp: SocketAddr, tcp: SocketAddr) {
    let peer = UdpPeer::new(udp).await;
    peer.send(&request(
        "OPTIONS",
        "1001",
        peer.local(),
        "UDP",
        "after",
        "z9hG4bKafter",
        1,
        "",
    ))
    .await;
    assert_eq!(
        peer.expect().await.code,
        200,
        "the daemon still answers OPTIONS over UDP"
    );
    let mut tcp = TcpPeer::connect(tcp).await;
    let local = tcp.local();
    tcp.send(&request(
        "OPTIONS",
        "1001",
        local,
        "TCP",
        "after-tcp",
        "z9hG4bKaftert",
        1,
        "",
    ))
    .await;
    assert_eq!(
        tcp.expect().await.code,
        200,
        "the daemon still answers OPTIONS over TCP"
    );
}

#[test]
fn every_message_has_an_expectation_and_valid_invites_yield_the_right_caller() {
    let expected = expected();
    let messages = load();
    assert_eq!(messages.len(), 61, "49 RFC 4475 + 12 RFC 5118 messages");
    for (entry, bytes) in &messages {
        assert!(
            expected.contains_key(name(entry)),
            "no expectation for {}",
            entry.file
        );
        // Valid requests scan without a defect; their From identity is right.
        if entry.valid && entry.kind == "request" {
            let msg =
                scan(bytes, Transport::Datagram).unwrap_or_else(|e| panic!("{}: {e}", entry.file));
            if let Some(from_user) = &entry.from_user {
                let caller = identity::caller(&msg);
                let want = screenpop::telephony::sip::grammar::percent_decode(from_user.as_bytes());
                assert_eq!(caller.number.as_deref(), Some(&*want), "{}", entry.file);
                assert_eq!(caller.display, entry.from_display, "{}", entry.file);
            }
        }
    }
}

#[tokio::test]
async fn the_whole_set_over_udp() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let sip = daemon.bound.sip_udp[0];
    let expected = expected();
    let mut failures = Vec::new();
    let messages = load();
    for (entry, bytes) in messages.iter() {
        let peer = UdpPeer::new(sip).await;
        peer.send(bytes).await;
        let want = expected[name(entry)];
        let wait = if want.is_some() {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(300)
        };
        let got = peer.recv(wait).await.map(|r| r.code);
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", entry.file));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        popped(&mut updates).await,
        must_pop(&messages),
        "exactly the INVITEs held with 100 Trying popped"
    );
    still_answers_options(daemon.bound.sip_udp[0], daemon.bound.sip_tcp[0]).await;
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_whole_set_over_tcp() {
    let daemon = start().await;
    let sip = daemon.bound.sip_tcp[0];
    let expected = expected();
    let mut failures = Vec::new();
    for (entry, bytes) in load() {
        let mut peer = TcpPeer::connect(sip).await;
        peer.send(&bytes).await;
        let got = peer.recv(Duration::from_millis(1500)).await.map(|r| r.code);
        // On a stream the framing decides: a message that frames gets the same first answer as
        // over UDP (dblreq's Content-Length 0 makes its trailing INVITE a second message); one
        // whose Content-Length runs past the bytes sent (or whose header block never ends) is
        // waited for; one that cannot be framed (no Content-Length) gets a 400 and a close.
        let want = match frame(&bytes) {
            Ok(Frame::Message(_)) => expected[name(&entry)],
            Ok(Frame::Incomplete) => None,
            Ok(Frame::Skip { .. }) => unreachable!("no torture message starts with CRLF"),
            Err(_) if entry.kind == "response" => None,
            Err(_) => Some(400),
        };
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", entry.file));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    still_answers_options(daemon.bound.sip_udp[0], daemon.bound.sip_tcp[0]).await;
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_whole_set_wrapped_in_hep_is_taken_silently() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let hep_addr = daemon.bound.hep_udp[0];
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (src, dst): (SocketAddr, SocketAddr) = (
        "192.0.2.1:5060".parse().expect("a"),
        "192.0.2.2:5060".parse().expect("a"),
    );
    let messages = load();
    for (_, bytes) in &messages {
        let packet = hep::encode(src, dst, (1_700_000_000, 0), 7, None, bytes);
        socket.send_to(&packet, hep_addr).await.expect("send");
    }
    // Nothing is ever sent back to a capture agent.
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf))
            .await
            .is_err()
    );
    // The HEP path pops exactly what the SIP endpoint holds with 100 Trying: nothing it would
    // refuse as malformed (the PBX refused it too; nothing rang).
    assert_eq!(
        popped(&mut updates).await,
        must_pop(&messages),
        "HEP judges requests like the SIP endpoint"
    );
    still_answers_options(daemon.bound.sip_udp[0], daemon.bound.sip_tcp[0]).await;
    let http = daemon.bound.http.expect("http");
    let taken = metric(http, "screenpop_hep_packets_total", "result=\"sip\"").await;
    let refused = metric(
        http,
        "screenpop_hep_packets_total",
        "result=\"invalid_request\"",
    )
    .await;
    assert!(taken + refused >= 40.0, "{taken} taken, {refused} refused");
    assert!(
        refused >= 10.0,
        "the malformed requests were refused: {refused}"
    );
    assert!(daemon.stop().await);
}
