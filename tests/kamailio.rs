//! Against real peers: a Kamailio started by the test (generated config, free loopback port,
//! its own run directory, ended by its PID) and SIPp scenarios (`tests/sipp/`) placing calls
//! through it to a SIPp phone.
//!
//! - Dialog-event subscriptions: Kamailio as presence server (`presence_dialoginfo`, with
//!   `pua_dialoginfo` publishing the dialogs of the calls it relays) challenging every SUBSCRIBE
//!   through `auth_db` (407, `qop=auth`); screenpop subscribes for extension 1001.
//! - HEP: Kamailio's `siptrace` mirrors every message as received and as sent (HEPv3 with an
//!   auth key) to screenpop's HEP listener.
//! - Parallel fork: Kamailio forks each INVITE to the phone and to screenpop's SIP listener
//!   (`append_branch`), and cancels screenpop's branch when the phone answers; also over TLS
//!   (Kamailio's `tls` module, `transport=tls`), with mutual TLS: Kamailio checks screenpop's
//!   certificate against the test CA and presents a client certificate of that CA.
//!
//! Each test skips itself when the tools are missing, except under CI (see `support::peers`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use screenpop::calls::{CallUpdate, Change, EndReason, Intake};
use screenpop::telephony::dialog::DialogConfig;
use support::peers::{self, Kamailio, Proc, Role, RunDir, Tools};
use support::*;
use tokio::sync::broadcast::Receiver;

const USER: &str = "screenpop";
const PASSWORD: &str = "s3cret-sub";

/// The SIPp phone for every extension; `calls` calls, then it exits.
async fn phone(tools: &Tools, dir: &RunDir, calls: u32) -> (Proc, u16) {
    let port = peers::free_port();
    let scenario = peers::scenario(dir.path(), "phone.xml", &[]);
    let mut proc = peers::sipp(tools, dir.path(), &scenario, port, calls, None);
    peers::until_bound(&mut proc, port).await;
    (proc, port)
}

/// Starts one SIPp call through Kamailio.
fn call(
    tools: &Tools,
    dir: &RunDir,
    how: &str,
    ext: &str,
    caller: &str,
    display: &str,
    proxy: SocketAddr,
) -> Proc {
    let scenario = peers::scenario(
        dir.path(),
        how,
        &[("EXT", ext), ("CALLER", caller), ("DISPLAY", display)],
    );
    peers::sipp(
        tools,
        dir.path(),
        &scenario,
        peers::free_port(),
        1,
        Some(proxy),
    )
}

/// Waits for the SIPp caller to finish its call successfully.
async fn done(mut uac: Proc) {
    let code = uac.wait(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{} failed:\n{}", uac.name, uac.tail(30));
}

fn dialog_config(name: &str, kamailio: &Kamailio, password: &str) -> DialogConfig {
    let mut c = DialogConfig::new(name, &kamailio.addr.to_string(), USER, password, &["1001"]);
    c.domain = Some(peers::DOMAIN.into());
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.retry_min = Duration::from_millis(200);
    c.retry_max = Duration::from_secs(2);
    c
}

/// Polls a metric (at most 10 s) until `want` holds.
async fn until_metric(http: SocketAddr, name: &str, labels: &str, want: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(http, name, labels).await;
        if want(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{labels}}} = {value} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next update of the call ringing at `ext`, skipping others (3 s at most each).
async fn next_for(rx: &mut Receiver<CallUpdate>, call: &str) -> Change {
    next_update(rx, |u| u.call.id == call).await.change
}

async fn ringing(rx: &mut Receiver<CallUpdate>, ext: &str) -> CallUpdate {
    next_update(rx, |u| {
        u.change
            == Change::Ringing {
                extension: ext.into(),
            }
    })
    .await
}

#[tokio::test]
async fn dialog_subscription_through_kamailio_pops_answered_and_cancelled_calls() {
    let tools = peers::tools();
    let dir = RunDir::new("dialog-calls");
    let (_phone, phone_port) = phone(&tools, &dir, 2).await;
    let kamailio = Kamailio::start(
        &tools,
        phone_port,
        Role::Presence {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .await;
    let config = dialog_config("kam-calls", &kamailio, PASSWORD);
    let daemon = start_with(|s| s.intakes.dialog = vec![config]).await;
    let http = daemon.bound.http.expect("http");
    until_metric(
        http,
        "screenpop_cti_subscribed",
        "input=\"dialog\",peer=\"kam-calls\"",
        |v| v == 1.0,
    )
    .await;
    assert!(
        kamailio.seen("SUBSCRIBE") >= 2,
        "the first SUBSCRIBE was challenged (407) and answered"
    );
    let mut rx = daemon.calls.subscribe();

    // Answered: rings at 1001 for 1.5 s, talks for 1 s, the caller hangs up.
    let uac = call(
        &tools,
        &dir,
        "call-answered.xml",
        "1001",
        "+14155550100",
        "Acme Front Desk",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1001").await;
    assert_eq!(pop.call.intake, Intake::DIALOG);
    assert_eq!(pop.call.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(
        pop.call.caller_display, None,
        "Kamailio's dialog-info carries no display name"
    );
    let json = serde_json::to_string(&*pop.call).expect("json");
    assert!(json.contains("Acme Corporation"), "{json}");
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Answered {
            by: Some("1001".into())
        }
    );
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Completed
        }
    );
    done(uac).await;

    // Cancelled while ringing.
    let uac = call(
        &tools,
        &dir,
        "call-cancelled.xml",
        "1001",
        "+13125550142",
        "Globex",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1001").await;
    assert_eq!(pop.call.caller_number.as_deref(), Some("+13125550142"));
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    done(uac).await;
    assert!(daemon.calls.live(None).is_empty());
    assert!(metric(http, "screenpop_cti_events_total", "kind=\"early\"").await >= 2.0);
    assert_eq!(
        metric(http, "screenpop_cti_garbage_total", "input=\"dialog\"").await,
        0.0
    );
    assert!(daemon.stop().await);
    // Stopping unsubscribed (Expires: 0) before the task ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !std::fs::read_to_string(&kamailio.proc.log)
        .unwrap_or_default()
        .contains("REQ SUBSCRIBE sip:127.0.0.1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no in-dialog SUBSCRIBE (the unsubscribe) reached Kamailio"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refreshes_keep_the_subscription_and_a_kamailio_restart_is_survived() {
    let tools = peers::tools();
    let dir = RunDir::new("dialog-refresh");
    let (_phone, phone_port) = phone(&tools, &dir, 8).await;
    let mut kamailio = Kamailio::start(
        &tools,
        phone_port,
        Role::Presence {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .await;
    let mut config = dialog_config("kam-refresh", &kamailio, PASSWORD);
    config.expires = Duration::from_secs(3);
    let daemon = start_with(|s| s.intakes.dialog = vec![config]).await;
    let http = daemon.bound.http.expect("http");
    until_metric(
        http,
        "screenpop_cti_subscribed",
        "input=\"dialog\",peer=\"kam-refresh\"",
        |v| v == 1.0,
    )
    .await;
    // Granted 3 s: the in-dialog refresh (Request-URI = Kamailio's Contact) comes at 2.4 s;
    // wait for two of them, past the first grant's expiry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while kamailio.seen("SUBSCRIBE sip:127.0.0.1") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh within 8 s:\n{}",
            kamailio.proc.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rx = daemon.calls.subscribe();
    let uac = call(
        &tools,
        &dir,
        "call-cancelled.xml",
        "1001",
        "+14155550100",
        "Acme",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1001").await;
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Cancelled
        },
        "still subscribed after the first grant ran out"
    );
    done(uac).await;

    // Kamailio restarts and forgets the subscription: the next refresh gets 481 and screenpop
    // subscribes anew. Calls placed meanwhile do not pop; keep calling (at most 6) until one does.
    kamailio.restart().await;
    let mut popped = None;
    for _ in 0..6 {
        let uac = call(
            &tools,
            &dir,
            "call-cancelled.xml",
            "1001",
            "+14155550100",
            "Acme",
            kamailio.addr,
        );
        let pop = tokio::time::timeout(Duration::from_millis(1500), ringing(&mut rx, "1001")).await;
        done(uac).await;
        if let Ok(pop) = pop {
            popped = Some(pop);
            break;
        }
    }
    let pop = popped.expect("calls pop again after the restart");
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    assert!(metric(http, "screenpop_cti_reconnects_total", "input=\"dialog\"").await >= 1.0);
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_retried_with_backoff_not_in_a_loop() {
    let tools = peers::tools();
    let kamailio = Kamailio::start(
        &tools,
        peers::free_port(),
        Role::Presence {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .await;
    let mut config = dialog_config("kam-refused", &kamailio, "wrong");
    config.retry_min = Duration::from_millis(500);
    config.retry_max = Duration::from_secs(4);
    let daemon = start_with(|s| s.intakes.dialog = vec![config]).await;
    let http = daemon.bound.http.expect("http");
    // Each attempt is a SUBSCRIBE and one answer to the challenge; then the backoff
    // (0.5 s, 1 s, 2 s…). Within 2 s: a few attempts, not hundreds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kamailio.seen("SUBSCRIBE") < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no second attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = kamailio.seen("SUBSCRIBE");
    assert!(attempts <= 10, "{attempts} SUBSCRIBEs: hammering the PBX");
    assert_eq!(
        metric(
            http,
            "screenpop_cti_subscribed",
            "input=\"dialog\",peer=\"kam-refused\""
        )
        .await,
        0.0
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn kamailio_siptrace_hep_pops_every_relayed_call_once() {
    let tools = peers::tools();
    let dir = RunDir::new("hep-calls");
    let daemon = start_with(|s| s.hep_password = Some("hep-key".into())).await;
    let http = daemon.bound.http.expect("http");
    let (_phone, phone_port) = phone(&tools, &dir, 3).await;
    let kamailio = Kamailio::start(
        &tools,
        phone_port,
        Role::Hep {
            hep: daemon.bound.hep_udp[0],
            auth_key: "hep-key".into(),
        },
    )
    .await;
    let hep_calls = metric(http, "screenpop_calls_total", "intake=\"hep\"").await;
    let duplicates = metric(http, "screenpop_hep_packets_total", "result=\"duplicate\"").await;
    let mut rx = daemon.calls.subscribe();
    let calls = [
        (
            "call-answered.xml",
            "1001",
            "+14155550100",
            "Acme Front Desk",
        ),
        (
            "call-cancelled.xml",
            "1002",
            "+13125550142",
            "Globex Billing",
        ),
        (
            "call-answered.xml",
            "1002",
            "+14155550177",
            "Switchboard Caller",
        ),
    ];
    for (how, ext, caller, display) in calls {
        let uac = call(&tools, &dir, how, ext, caller, display, kamailio.addr);
        let pop = ringing(&mut rx, ext).await;
        assert_eq!(pop.call.intake, Intake::HEP);
        assert_eq!(pop.call.caller_number.as_deref(), Some(caller));
        assert_eq!(pop.call.caller_display.as_deref(), Some(display));
        let mut changes = Vec::new();
        loop {
            let change = next_for(&mut rx, &pop.call.id).await;
            let end = matches!(change, Change::Ended { .. });
            changes.push(change);
            if end {
                break;
            }
        }
        let want = if how == "call-answered.xml" {
            vec![
                Change::Answered {
                    by: Some(ext.into()),
                },
                Change::Ended {
                    reason: EndReason::Completed,
                },
            ]
        } else {
            vec![Change::Ended {
                reason: EndReason::Cancelled,
            }]
        };
        assert_eq!(changes, want, "{how} to {ext}");
        done(uac).await;
    }
    // Nothing popped twice: no further ringing for the mirrored copies.
    let more = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(u) = rx.recv().await
                && matches!(u.change, Change::Ringing { .. })
            {
                return u;
            }
        }
    })
    .await;
    assert!(more.is_err(), "a second pop: {more:?}");
    assert_eq!(
        metric(http, "screenpop_calls_total", "intake=\"hep\"").await,
        hep_calls + 3.0,
        "three calls, three pops"
    );
    assert!(
        metric(http, "screenpop_hep_packets_total", "result=\"duplicate\"").await
            >= duplicates + 10.0,
        "Kamailio reported each relayed message twice"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn kamailio_forks_calls_to_screenpop_which_never_answers_them() {
    let tools = peers::tools();
    let dir = RunDir::new("fork-calls");
    let daemon = start().await;
    let (_phone, phone_port) = phone(&tools, &dir, 2).await;
    let kamailio = Kamailio::start(
        &tools,
        phone_port,
        Role::Fork {
            screenpop: daemon.bound.sip_udp[0],
        },
    )
    .await;
    let mut rx = daemon.calls.subscribe();

    // The phone answers: the caller is connected to it (the SIPp caller checks the 200 is the
    // phone's and hangs up on it), and Kamailio cancels screenpop's branch with
    // `Reason: SIP;cause=200` (answered elsewhere).
    let uac = call(
        &tools,
        &dir,
        "call-answered.xml",
        "1001",
        "+14155550100",
        "Acme Front Desk",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1001").await;
    assert_eq!(pop.call.intake, Intake::SIP);
    assert_eq!(pop.call.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(pop.call.caller_display.as_deref(), Some("Acme Front Desk"));
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Answered { by: None },
        "CANCEL with Reason cause=200: answered at the phone"
    );
    done(uac).await;

    // The caller gives up: Kamailio cancels both branches.
    let uac = call(
        &tools,
        &dir,
        "call-cancelled.xml",
        "1002",
        "+13125550142",
        "Globex",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1002").await;
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    done(uac).await;
    let http = daemon.bound.http.expect("http");
    assert!(metric(http, "screenpop_sip_responses_total", "code=\"487\"").await >= 2.0);
    assert_eq!(
        metric(http, "screenpop_sip_responses_total", "code=\"200\"").await
            - metric(http, "screenpop_sip_messages_total", "method=\"CANCEL\"").await,
        0.0,
        "every 200 screenpop sent answered a CANCEL, none an INVITE"
    );
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn kamailio_forks_calls_to_screenpop_over_mutual_tls() {
    let tools = peers::tools();
    let dir = RunDir::new("fork-tls");
    let pki = support::certs::Pki::new("kamailio");
    let server = pki.server("screenpop");
    let client = pki.client("kamailio", "kamailio.pbx.test");
    let daemon = start_with(|s| s.sip_tls_identity = Some(pki.identity(&server, true))).await;
    let http = daemon.bound.http.expect("http");
    let before = metric(
        http,
        "screenpop_sip_messages_total",
        "transport=\"tls\",method=\"INVITE\"",
    )
    .await;
    let (_phone, phone_port) = phone(&tools, &dir, 2).await;
    let kamailio = Kamailio::start(
        &tools,
        phone_port,
        Role::ForkTls {
            screenpop: daemon.bound.sip_tls[0],
            cert: client.cert.clone(),
            key: client.key.clone(),
            ca: pki.ca.clone(),
        },
    )
    .await;
    let mut rx = daemon.calls.subscribe();

    // Answered at the phone: screenpop's TLS branch is cancelled with cause=200.
    let uac = call(
        &tools,
        &dir,
        "call-answered.xml",
        "1001",
        "+14155550100",
        "Acme Front Desk",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1001").await;
    assert_eq!(pop.call.intake, Intake::SIP);
    assert_eq!(pop.call.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Answered { by: None },
        "CANCEL with Reason cause=200 over TLS: answered at the phone"
    );
    done(uac).await;

    // The caller gives up: Kamailio cancels both branches, the same TLS connection carrying it.
    let uac = call(
        &tools,
        &dir,
        "call-cancelled.xml",
        "1002",
        "+13125550142",
        "Globex",
        kamailio.addr,
    );
    let pop = ringing(&mut rx, "1002").await;
    assert_eq!(
        next_for(&mut rx, &pop.call.id).await,
        Change::Ended {
            reason: EndReason::Cancelled
        }
    );
    done(uac).await;
    assert_eq!(
        metric(
            http,
            "screenpop_sip_messages_total",
            "transport=\"tls\",method=\"INVITE\""
        )
        .await
            - before,
        2.0,
        "both INVITEs came over TLS"
    );
    assert!(
        metric(http, "screenpop_connections", "listener=\"sip_tls\"").await >= 1.0,
        "Kamailio keeps its TLS connection open"
    );
    assert!(daemon.stop().await);
}
