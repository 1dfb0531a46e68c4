//! Realistic PBX INVITEs (`tests/corpus/pbx/`, see its README for what each imitates) with the
//! identity a correct parser must extract: caller number, display, source, withheld, ringing
//! extension and originally dialled number. Checked at the scanner level and through the real
//! daemon over UDP, TCP, TLS and HEP: every one pops, whatever it requires (`100rel`,
//! `precondition`), carries (ISUP, vendor XML) or accepts.

mod support;

use std::time::Duration;

use screenpop::calls::Change;
use screenpop::calls::IdentitySource as Source;
use screenpop::telephony::sip::identity::{self, Target};
use screenpop::telephony::sip::scan::{StartLine, Transport, scan};
use support::*;

#[derive(Debug, serde::Deserialize)]
struct Expected {
    invite: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    file: String,
    caller_number: Option<String>,
    caller_display: Option<String>,
    caller_source: Source,
    withheld: bool,
    extension: String,
    dialled: Option<String>,
}

fn cases() -> Vec<(Case, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/pbx");
    let expected: Expected =
        toml::from_str(&std::fs::read_to_string(dir.join("expected.toml")).expect("read"))
            .expect("toml");
    expected
        .invite
        .into_iter()
        .map(|c| {
            let bytes = std::fs::read(dir.join(&c.file)).expect("file");
            (c, bytes)
        })
        .collect()
}

#[test]
fn identity_of_every_invite() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (case, bytes) in &cases {
        let msg = scan(bytes, Transport::Datagram).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_eq!(msg.defect, None, "{}", case.file);
        let StartLine::Request { uri, .. } = msg.start else {
            panic!("{} is not a request", case.file)
        };
        let caller = identity::caller(&msg);
        let got = (
            caller.number.clone(),
            caller.display.clone(),
            caller.source,
            caller.withheld,
            Target::of(&msg, uri)
                .extension(|_| false)
                .map(str::to_owned),
            identity::dialled(&msg),
        );
        let want = (
            case.caller_number.clone(),
            case.caller_display.clone(),
            case.caller_source,
            case.withheld,
            Some(case.extension.clone()),
            case.dialled.clone(),
        );
        if got != want {
            failures.push(format!("{}:\n   got {got:?}\n  want {want:?}", case.file));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How a corpus INVITE reaches the daemon.
#[derive(Debug, Clone, Copy)]
enum Via {
    Udp,
    Tcp,
    Tls,
    Hep,
}

/// Sends one corpus INVITE on a PBX's connection and expects its 100 Trying back on it.
async fn trying_on<S>(peer: &mut StreamPeer<S>, bytes: &[u8], file: &str, via: Via)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    peer.send(bytes).await;
    let trying = peer
        .recv(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("{file}: no answer over {via:?}"));
    assert_eq!(trying.code, 100, "{file}: {}", trying.raw);
}

/// Sends every corpus INVITE over `via` and checks that each pops at its extension with the
/// right identity, whatever it requires, carries or accepts. Over UDP, TCP and TLS the daemon
/// must answer 100 Trying; a HEP capture agent gets nothing back.
async fn every_invite_pops(via: Via) {
    let pki = support::certs::Pki::new("corpus");
    let server = pki.server("server");
    let daemon = start_with(|s| s.sip_tls_identity = Some(pki.identity(&server, false))).await;
    let mut updates = daemon.calls.subscribe();
    let hep_socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // A PBX keeps one connection open for all its calls.
    let mut tcp = match via {
        Via::Tcp => Some(TcpPeer::connect(daemon.bound.sip_tcp[0]).await),
        _ => None,
    };
    let mut tls = match via {
        Via::Tls => Some(
            TlsPeer::connect_tls(daemon.bound.sip_tls[0], pki.client_config(None))
                .await
                .expect("handshake"),
        ),
        _ => None,
    };
    for (case, bytes) in cases() {
        match via {
            Via::Udp => {
                let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
                peer.send(&bytes).await;
                let trying = peer
                    .recv(Duration::from_secs(3))
                    .await
                    .unwrap_or_else(|| panic!("{}: no answer", case.file));
                assert_eq!(trying.code, 100, "{}: {}", case.file, trying.raw);
            }
            Via::Tcp => {
                trying_on(tcp.as_mut().expect("connected"), &bytes, &case.file, via).await;
            }
            Via::Tls => {
                trying_on(tls.as_mut().expect("connected"), &bytes, &case.file, via).await;
            }
            Via::Hep => {
                let packet = screenpop::telephony::hep::encode(
                    "198.51.100.1:5060".parse().expect("addr"),
                    "192.0.2.90:5060".parse().expect("addr"),
                    (1_700_000_000, 0),
                    7,
                    None,
                    &bytes,
                );
                hep_socket
                    .send_to(&packet, daemon.bound.hep_udp[0])
                    .await
                    .expect("send");
            }
        }
        let update = next_update(&mut updates, |u| {
            matches!(&u.change, Change::Ringing { .. })
        })
        .await;
        assert_eq!(
            update.change,
            Change::Ringing {
                extension: case.extension.clone()
            },
            "{} over {via:?}",
            case.file
        );
        assert_eq!(update.call.withheld, case.withheld, "{}", case.file);
        // A withheld caller's number stays in the daemon (for the call log), out of the call
        // agents are shown.
        let (shown, kept) = if case.withheld {
            (None, case.caller_number.clone())
        } else {
            (case.caller_number.clone(), None)
        };
        assert_eq!(update.call.caller_number, shown, "{}", case.file);
        assert_eq!(update.call.withheld_number, kept, "{}", case.file);
        if case.withheld {
            assert_eq!(update.call.caller_display, None, "{}", case.file);
            assert_eq!(
                update.call.resolution,
                screenpop::resolve::Resolution::Withheld,
                "{}: withheld means no lookup",
                case.file
            );
        }
    }
    if !matches!(via, Via::Hep) {
        // The classes a full UAS refuses were taken, and counted by class.
        let http = daemon.bound.http.expect("http");
        for class in ["require", "body_type", "accept"] {
            let n = metric(
                http,
                "screenpop_sip_invites_tolerated_total",
                &format!("class=\"{class}\""),
            )
            .await;
            assert!(n >= 1.0, "{class}: {n}");
        }
    }
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn every_invite_pops_through_the_daemon_over_udp() {
    every_invite_pops(Via::Udp).await;
}

#[tokio::test]
async fn every_invite_pops_through_the_daemon_over_tcp() {
    every_invite_pops(Via::Tcp).await;
}

#[tokio::test]
async fn every_invite_pops_through_the_daemon_over_tls() {
    every_invite_pops(Via::Tls).await;
}

#[tokio::test]
async fn every_invite_pops_through_the_daemon_over_hep() {
    every_invite_pops(Via::Hep).await;
}
