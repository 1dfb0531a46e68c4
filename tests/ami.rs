//! Asterisk AMI intake end to end: the real daemon connects to a fake manager interface on
//! 127.0.0.1:0 that checks the login and the actions, answers Ping, CoreShowChannels and
//! Originate (call-backs: `POST /api/callbacks/{id}/dial`), and replays the transcripts in
//! `tests/fixtures/ami/` (reconstructions, see its README).

mod support;

use std::sync::Arc;
use std::time::Duration;

use screenpop::agents::{Agent, Agents};
use screenpop::calls::{CallState, CallUpdate, Change, EndReason, Intake};
use screenpop::config::TokenHash;
use screenpop::telephony::ami::AmiConfig;
use support::ami::*;
use support::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/ami/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Starts the daemon against the fake server and waits for its first resync.
async fn connected(
    server: &mut FakeAmi,
    tweak: impl FnOnce(&mut AmiConfig),
) -> screenpop::daemon::Daemon {
    let mut config = server.config();
    tweak(&mut config);
    let daemon = start_with(|s| s.intakes.ami = vec![config]).await;
    server.wait(|s| s.resyncs >= 1).await;
    daemon
}

fn acme(update: &CallUpdate) -> bool {
    serde_json::to_string(&*update.call)
        .expect("json")
        .contains("Acme Corporation")
}

async fn changes(
    rx: &mut tokio::sync::broadcast::Receiver<CallUpdate>,
    n: usize,
) -> Vec<CallUpdate> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_update(rx, |_| true).await);
    }
    out
}

async fn quiet(rx: &mut tokio::sync::broadcast::Receiver<CallUpdate>) {
    let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(more.is_err(), "no further update: {more:?}");
}

#[tokio::test]
async fn a_direct_call_rings_is_answered_and_ends() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |_| {}).await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("direct_call.ami"))).await;
    let got = changes(&mut rx, 3).await;
    let ringing = &got[0];
    assert_eq!(
        ringing.change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    assert_eq!(ringing.call.intake, Intake::AMI);
    assert_eq!(ringing.call.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(
        ringing.call.caller_display.as_deref(),
        Some("Acme Front Desk")
    );
    assert_eq!(ringing.call.dialled.as_deref(), Some("18005550199"));
    assert!(acme(ringing), "the caller resolves to Acme Corporation");
    assert_eq!(
        got[1].change,
        Change::Answered {
            by: Some("1001".into())
        }
    );
    assert_eq!(
        got[2].change,
        Change::Ended {
            reason: EndReason::Completed
        }
    );
    quiet(&mut rx).await;
    assert_eq!(server.seen.borrow().logins, 1, "one connection throughout");
    let http = daemon.bound.http.expect("http");
    assert_eq!(
        metric(
            http,
            "screenpop_cti_connected",
            "input=\"ami\",peer=\"pbx1\""
        )
        .await,
        1.0
    );
    assert!(metric(http, "screenpop_cti_events_total", "kind=\"Newstate\"").await >= 2.0);
    assert!(metric(http, "screenpop_cti_resyncs_total", "input=\"ami\"").await >= 1.0);
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_call_over_tls_pops_and_an_untrusted_certificate_is_refused() {
    let dir = std::env::temp_dir().join(format!("screenpop-ami-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["pbx.test".to_owned()]).expect("rcgen");
    std::fs::write(dir.join("pbx.pem"), certified.cert.pem()).expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let mut server = FakeAmi::start_with(Some(acceptor)).await;
    let ca = dir.join("pbx.pem");
    let daemon = connected(&mut server, |c| {
        // Its own peer name: the connected gauge of "pbx1" belongs to another test.
        c.name = "pbx-tls".into();
        c.tls = true;
        c.tls_server_name = Some("pbx.test".into());
        c.tls_ca_file = Some(ca.clone());
    })
    .await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("direct_call.ami"))).await;
    let got = changes(&mut rx, 3).await;
    assert!(acme(&got[0]), "the call popped over TLS");
    server.assert_clean();
    assert!(daemon.stop().await);

    // Without the PBX's certificate among the trusted ones, no login ever happens.
    let mut untrusted = FakeAmi::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
                .expect("key"),
        )
        .expect("server config"),
    ))))
    .await;
    let mut config = untrusted.config();
    config.name = "pbx-untrusted".into();
    config.tls = true;
    config.tls_server_name = Some("pbx.test".into());
    let daemon = start_with(|s| s.intakes.ami = vec![config]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        untrusted.seen.borrow().logins,
        0,
        "no login over an unverified connection"
    );
    untrusted.assert_clean();
    assert!(daemon.stop().await);
    let _ = untrusted.wait(|_| true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_queue_call_rung_to_three_agents_pops_each_and_the_losers_end_answered_elsewhere() {
    let mut server = FakeAmi::start().await;
    let mut config = server.config();
    config.name = "pbx-queue".into();
    let daemon = start_with(|s| {
        let agents = [("alice", "1001"), ("bob", "1002"), ("carol", "1003")].map(|(id, ext)| {
            (
                TokenHash::of(&format!("{id}-token")),
                Agent {
                    id: id.into(),
                    name: id.into(),
                    extensions: vec![ext.into()],
                    roles: Vec::new(),
                },
            )
        });
        s.agents = Arc::new(Agents::new(agents));
        s.intakes.ami = vec![config];
    })
    .await;
    server.wait(|s| s.resyncs >= 1).await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("queue_call.ami"))).await;
    let got = changes(&mut rx, 7).await;
    let kinds: Vec<Change> = got.iter().map(|u| u.change.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            Change::Ringing {
                extension: "1001".into()
            },
            Change::Ringing {
                extension: "1002".into()
            },
            Change::Ringing {
                extension: "1003".into()
            },
            Change::Answered {
                by: Some("1002".into())
            },
            Change::LegEnded {
                extension: "1001".into(),
                reason: EndReason::AnsweredElsewhere
            },
            Change::LegEnded {
                extension: "1003".into(),
                reason: EndReason::AnsweredElsewhere
            },
            Change::Ended {
                reason: EndReason::Completed
            },
        ]
    );
    assert!(got.iter().all(|u| u.call.id == got[0].call.id), "one call");
    assert!(acme(&got[0]));
    quiet(&mut rx).await;
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn an_abandoned_call_ends_cancelled() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| c.name = "pbx-abandon".into()).await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("abandoned.ami"))).await;
    let got = changes(&mut rx, 2).await;
    assert_eq!(
        got[0].change,
        Change::Ringing {
            extension: "1001".into()
        }
    );
    assert_eq!(
        got[1].change,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    quiet(&mut rx).await;
    assert!(daemon.calls.live(None).is_empty());
    server.assert_clean();
    assert!(daemon.stop().await);
}

/// A blind transfer: 1001's call ends (completed) when it hangs up after transferring, and 1002
/// gets a fresh pop for the same caller, answered and ended in turn.
#[tokio::test]
async fn a_blind_transfer_pops_the_second_agent_with_the_same_caller() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| c.name = "pbx-xfer".into()).await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("blind_transfer.ami"))).await;
    let got = changes(&mut rx, 6).await;
    let kinds: Vec<Change> = got.iter().map(|u| u.change.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            Change::Ringing {
                extension: "1001".into()
            },
            Change::Answered {
                by: Some("1001".into())
            },
            Change::Ended {
                reason: EndReason::Completed
            },
            Change::Ringing {
                extension: "1002".into()
            },
            Change::Answered {
                by: Some("1002".into())
            },
            Change::Ended {
                reason: EndReason::Completed
            },
        ]
    );
    assert_ne!(
        got[0].call.id, got[3].call.id,
        "the transferred call is a new pop"
    );
    assert!(acme(&got[3]), "bob sees the original caller");
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_reconnect_mid_ring_resyncs_recovering_the_ringing_call_and_ending_the_vanished_one() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| c.name = "pbx-reconnect".into()).await;
    let http = daemon.bound.http.expect("http");
    let reconnects = metric(http, "screenpop_cti_reconnects_total", "input=\"ami\"").await;
    let mut rx = daemon.calls.subscribe();
    server.send(crlf(&fixture("reconnect_before.ami"))).await;
    let before = changes(&mut rx, 2).await;
    assert!(
        before
            .iter()
            .all(|u| matches!(u.change, Change::Ringing { .. }))
    );
    let vanished = before
        .iter()
        .find(|u| {
            u.change
                == Change::Ringing {
                    extension: "1002".into(),
                }
        })
        .expect("1002 rang")
        .call
        .id
        .clone();
    // While the connection is down, the 1002 call ends and a new one rings at 1002.
    *server.channels.lock().expect("lock") = fixture("reconnect_channels.ami");
    server.cmds.send(Cmd::Drop).await.expect("server");
    server.wait(|s| s.logins >= 2 && s.resyncs >= 2).await;
    let after = changes(&mut rx, 2).await;
    let ended = after
        .iter()
        .find(|u| matches!(u.change, Change::Ended { .. }))
        .expect("the vanished call ended");
    assert_eq!(ended.call.id, vanished);
    assert_eq!(
        ended.change,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    let recovered = after
        .iter()
        .find(|u| matches!(u.change, Change::Ringing { .. }))
        .expect("the call that rang meanwhile popped");
    assert_eq!(
        recovered.change,
        Change::Ringing {
            extension: "1002".into()
        }
    );
    assert!(acme(recovered));
    quiet(&mut rx).await;
    let live = daemon.calls.live(None);
    assert_eq!(
        live.len(),
        2,
        "the 1001 call rings on, the new one too: {live:?}"
    );
    assert!(live.iter().all(|c| c.state == CallState::Ringing));
    assert!(
        metric(http, "screenpop_cti_reconnects_total", "input=\"ami\"").await >= reconnects + 1.0
    );
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_silent_connection_is_noticed_by_the_keepalive_and_replaced() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| {
        c.name = "pbx-silent".into();
        c.ping_interval = Duration::from_millis(100);
        c.ping_timeout = Duration::from_millis(200);
    })
    .await;
    server.wait(|s| s.pings >= 2).await;
    // The socket stays open, but the server stops answering: a half-open connection.
    server.cmds.send(Cmd::Silence).await.expect("server");
    let seen = server.wait(|s| s.logins >= 2 && s.resyncs >= 2).await;
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    let http = daemon.bound.http.expect("http");
    assert!(metric(http, "screenpop_cti_reconnects_total", "input=\"ami\"").await >= 1.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn garbage_lines_are_skipped_and_counted_and_the_stream_goes_on() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| c.name = "pbx-garbage".into()).await;
    let http = daemon.bound.http.expect("http");
    let garbage = metric(http, "screenpop_cti_garbage_total", "input=\"ami\"").await;
    let mut rx = daemon.calls.subscribe();
    // Sent as stored: bare LF line ends.
    server.send(fixture("garbage.ami")).await;
    let got = changes(&mut rx, 2).await;
    assert_eq!(
        got[0].change,
        Change::Ringing {
            extension: "1002".into()
        }
    );
    assert_eq!(
        got[1].change,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    // Then a whole call with CRLF on the same connection: it still works.
    server.send(crlf(&fixture("direct_call.ami"))).await;
    let got = changes(&mut rx, 3).await;
    assert_eq!(
        got[2].change,
        Change::Ended {
            reason: EndReason::Completed
        }
    );
    let after = metric(http, "screenpop_cti_garbage_total", "input=\"ami\"").await;
    assert!(
        after >= garbage + 6.0,
        "six defects counted: {garbage} -> {after}"
    );
    server.assert_clean();
    assert!(daemon.stop().await);
}

/// The fields of the server's `n`th `Originate`.
fn originate(server: &FakeAmi, n: usize) -> std::collections::HashMap<String, String> {
    server.seen.borrow().originates[n].iter().cloned().collect()
}

#[tokio::test]
async fn a_call_back_rings_the_agents_own_extension_then_the_caller_and_is_refused_otherwise() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| {
        c.name = "pbx-dial".into();
        c.originate_context = "callbacks".into();
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let accepted = metric(
        http,
        "screenpop_callback_dials_total",
        "result=\"accepted\"",
    )
    .await;
    // Acme rang at alice (1001) and bob (1002); another caller at bob only.
    missed_at(&daemon, "dial-1", "+14155550100", &["1001", "1002"]);
    missed_at(&daemon, "dial-2", "+17025551655", &["1002"]);
    let acme = callback_id(http, "alice-demo-token", "+14155550100").await;
    let bobs = callback_id(http, "bob-demo-token", "+17025551655").await;

    // Alice calls Acme back: her phone first, then Acme's number in the configured context.
    let (status, _, body) = dial(http, "alice-demo-token", &acme, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["dialled"]["pbx"], "pbx-dial");
    assert_eq!(body["dialled"]["extension"], "1001");
    assert_eq!(body["dialled"]["number"], "+14155550100");
    assert_eq!(
        body["callback"]["state"], "open",
        "dialling does not close it"
    );
    let sent = originate(&server, 0);
    assert_eq!(sent["Channel"], "PJSIP/1001");
    assert_eq!(sent["Exten"], "+14155550100");
    assert_eq!(sent["Context"], "callbacks");
    assert_eq!(sent["Priority"], "1");
    assert_eq!(sent["Async"], "true");
    assert_eq!(sent["CallerID"], "\"Call back Acme Corporation\" <1001>");
    assert!(sent["ActionID"].starts_with("screenpop-dial-"));

    // Within dial_interval (10 s): refused, with when to try again.
    let (status, head, body) = dial(http, "alice-demo-token", &acme, None).await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("retry-after: 10"), "{head}");
    // Not the agent's entry: 404, as for every other action; nothing reaches the PBX.
    let (status, _, body) = dial(http, "alice-demo-token", &bobs, None).await;
    assert_eq!(status, 404, "{body}");
    // Only ever from the agent's own extension.
    let (status, _, body) = dial(
        http,
        "bob-demo-token",
        &acme,
        Some(serde_json::json!({"extension": "1001"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(server.seen.borrow().originates.len(), 1);

    // The PBX refuses: 502 with its message; nothing was placed, so bob may try again at once.
    *server.originated.lock().expect("lock") = Originated::Error("Extension does not exist.");
    let (status, _, body) = dial(
        http,
        "bob-demo-token",
        &acme,
        Some(serde_json::json!({"extension": "1002"})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Extension does not exist.")),
        "{body}"
    );
    assert_eq!(originate(&server, 1)["Channel"], "PJSIP/1002");
    *server.originated.lock().expect("lock") = Originated::Success;

    // Bob claims Acme: alice may no longer call it back.
    let (status, _, body) = http_request(
        http,
        "POST",
        &format!("/api/callbacks/{acme}/claim"),
        Some("bob-demo-token"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = dial(http, "alice-demo-token", &acme, None).await;
    assert_eq!(status, 409, "{body}");
    let (status, _, body) = dial(http, "bob-demo-token", &acme, None).await;
    assert_eq!(status, 202, "the claimer may: {body}");
    assert_eq!(originate(&server, 2)["Channel"], "PJSIP/1002");

    assert!(
        metric(
            http,
            "screenpop_callback_dials_total",
            "result=\"accepted\""
        )
        .await
            >= accepted + 2.0
    );
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_pbx_that_drops_the_connection_with_a_dial_pending_answers_503_at_once() {
    let mut server = FakeAmi::start().await;
    let daemon = connected(&mut server, |c| {
        c.name = "pbx-dial-drop".into();
        // Reconnects slowly: the registry is empty meanwhile.
        c.reconnect_min = Duration::from_secs(30);
        c.reconnect_max = Duration::from_secs(30);
    })
    .await;
    let http = daemon.bound.http.expect("http");
    missed_at(&daemon, "drop-1", "+14155550100", &["1001"]);
    let id = callback_id(http, "alice-demo-token", "+14155550100").await;
    *server.originated.lock().expect("lock") = Originated::Hangup;
    let started = std::time::Instant::now();
    let (status, _, body) = dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not after the 5 s dial timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(server.seen.borrow().originates.len(), 1);
    // Disconnected: refused at once, and the slot was given back (nothing was placed).
    let (status, _, body) = dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no AMI or ESL connection")),
        "{body}"
    );
    assert_eq!(server.seen.borrow().originates.len(), 1);
    server.assert_clean();
    assert!(daemon.stop().await);
}
