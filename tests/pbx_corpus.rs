//! Realistic PBX INVITEs (`tests/corpus/pbx/`, see its README for what each imitates) with the
//! identity a correct parser must extract: caller number, display, source, withheld, ringing
//! extension and originally dialled number. Checked at the scanner level and through the real
//! daemon over UDP.

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

#[tokio::test]
async fn every_invite_pops_through_the_daemon() {
    let daemon = start().await;
    let mut updates = daemon.calls.subscribe();
    let sip = daemon.bound.sip_udp[0];
    for (case, bytes) in cases() {
        let peer = UdpPeer::new(sip).await;
        peer.send(&bytes).await;
        let trying = peer
            .recv(Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{}: no answer", case.file));
        assert_eq!(trying.code, 100, "{}: {}", case.file, trying.raw);
        let update = next_update(&mut updates, |u| {
            matches!(&u.change, Change::Ringing { .. })
        })
        .await;
        assert_eq!(
            update.change,
            Change::Ringing {
                extension: case.extension.clone()
            },
            "{}",
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
        }
        if case.withheld {
            assert_eq!(
                update.call.resolution,
                screenpop::resolve::Resolution::Withheld,
                "{}: withheld means no lookup",
                case.file
            );
        }
    }
    assert!(daemon.stop().await);
}
