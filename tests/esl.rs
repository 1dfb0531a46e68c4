//! FreeSWITCH event-socket intake end to end: the real daemon connects to a fake
//! mod_event_socket on 127.0.0.1:0 that checks `auth` and the event subscription, answers
//! `api show calls as json` and `bgapi originate` (call-backs: `POST /api/callbacks/{id}/dial`),
//! sends HEARTBEATs, and replays the transcripts in `tests/fixtures/esl/` (reconstructions, see
//! its README).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use screenpop::agents::{Agent, Agents};
use screenpop::calls::{CallState, CallUpdate, Change, EndReason, Intake};
use screenpop::config::TokenHash;
use screenpop::telephony::esl::EslConfig;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

const PASSWORD: &str = "NotClueCon";
/// The fake switch's answer to a `bgapi originate` that closes the connection instead.
const HANG_UP: &str = "hang up";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/esl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

enum Cmd {
    Send(Vec<u8>),
    Drop,
    Silence,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    auths: usize,
    subscriptions: usize,
    resyncs: usize,
    /// Every `bgapi originate …` command, in order.
    originates: Vec<String>,
    violations: Vec<String>,
}

struct FakeEsl {
    addr: std::net::SocketAddr,
    cmds: mpsc::Sender<Cmd>,
    seen: watch::Receiver<Seen>,
    calls: Arc<Mutex<Vec<u8>>>,
    /// The `Reply-Text` to a `bgapi originate`.
    originated: Arc<Mutex<&'static str>>,
}

fn heartbeat() -> Vec<u8> {
    let body = r#"{"Event-Name":"HEARTBEAT","Core-UUID":"6d2a1b8e-0f1c-4a3e-9b44-2b1c0d9e7f10","Event-Info":"System Ready","Up-Time":"0 years, 0 days, 1 hour"}"#;
    format!(
        "Content-Length: {}\nContent-Type: text/event-json\n\n{body}",
        body.len()
    )
    .into_bytes()
}

impl FakeEsl {
    async fn start() -> FakeEsl {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cmds, mut rx) = mpsc::channel::<Cmd>(16);
        let (seen_tx, seen) = watch::channel(Seen::default());
        let calls = Arc::new(Mutex::new(br#"{"row_count":0}"#.to_vec()));
        let listed = calls.clone();
        let originated = Arc::new(Mutex::new(
            "+OK Job-UUID: 9a1c3e52-5b8f-4d0e-8c71-0f2b6d4e1a90",
        ));
        let answer = originated.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                wr.write_all(b"Content-Type: auth/request\n\n")
                    .await
                    .expect("hello");
                let mut authed = false;
                let mut subscribed = false;
                let mut silent = false;
                let mut beat = tokio::time::interval(Duration::from_millis(100));
                let mut command = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(Cmd::Send(bytes)) => { let _ = wr.write_all(&bytes).await; }
                            Some(Cmd::Drop) | None => break,
                            Some(Cmd::Silence) => silent = true,
                        },
                        _ = beat.tick(), if subscribed && !silent => {
                            if wr.write_all(&heartbeat()).await.is_err() { break; }
                        }
                        read = rd.read_line(&mut line) => {
                            if read.unwrap_or(0) == 0 {
                                break;
                            }
                            let l = line.trim_end_matches(['\r', '\n']);
                            if !l.is_empty() {
                                command = l.to_owned();
                                continue;
                            }
                            if command.is_empty() {
                                continue;
                            }
                            let reply = |text: &str| format!("Content-Type: command/reply\nReply-Text: {text}\n\n");
                            let out = if let Some(pw) = command.strip_prefix("auth ") {
                                let ok = pw == PASSWORD;
                                seen_tx.send_modify(|s| {
                                    s.auths += 1;
                                    if !ok { s.violations.push("bad password".into()); }
                                });
                                if ok { authed = true; reply("+OK accepted") } else { reply("-ERR invalid") }
                            } else if !authed {
                                seen_tx.send_modify(|s| s.violations.push(format!("{command} before auth")));
                                reply("-ERR command not found")
                            } else if let Some(list) = command.strip_prefix("event json ") {
                                let names: Vec<&str> = list.split_whitespace().collect();
                                let needed = ["CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE", "HEARTBEAT"];
                                let ok = needed.iter().all(|n| names.contains(n));
                                seen_tx.send_modify(|s| {
                                    s.subscriptions += 1;
                                    if !ok { s.violations.push(format!("subscription {list}")); }
                                });
                                subscribed = true;
                                reply("+OK event listener enabled json")
                            } else if command == "api show calls as json" {
                                let body = listed.lock().expect("lock").clone();
                                seen_tx.send_modify(|s| s.resyncs += 1);
                                let mut out = format!("Content-Type: api/response\nContent-Length: {}\n\n", body.len()).into_bytes();
                                out.extend_from_slice(&body);
                                String::from_utf8_lossy(&out).into_owned()
                            } else if command.starts_with("bgapi originate ") {
                                seen_tx.send_modify(|s| s.originates.push(command.clone()));
                                let text = *answer.lock().expect("lock");
                                if text == HANG_UP {
                                    break;
                                }
                                reply(text)
                            } else if command == "exit" {
                                "Content-Type: command/reply\nReply-Text: +OK bye\n\nContent-Type: text/disconnect-notice\nContent-Length: 0\n\n".into()
                            } else {
                                seen_tx.send_modify(|s| s.violations.push(format!("unexpected {command}")));
                                reply("-ERR command not found")
                            };
                            command.clear();
                            if wr.write_all(out.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        FakeEsl {
            addr,
            cmds,
            seen,
            calls,
            originated,
        }
    }

    fn config(&self, name: &str) -> EslConfig {
        let mut c = EslConfig::new(name, &self.addr.to_string(), PASSWORD);
        c.reconnect_min = Duration::from_millis(50);
        c.reconnect_max = Duration::from_millis(200);
        c
    }

    async fn send(&self, bytes: Vec<u8>) {
        self.cmds.send(Cmd::Send(bytes)).await.expect("server");
    }

    async fn wait(&mut self, done: impl Fn(&Seen) -> bool) -> Seen {
        let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.wait_for(done))
            .await
            .expect("the fake event socket saw it within 5 s")
            .expect("server alive");
        seen.clone()
    }

    fn assert_clean(&self) {
        let seen = self.seen.borrow();
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    }
}

async fn connected(server: &mut FakeEsl, name: &str) -> screenpop::daemon::Daemon {
    let config = server.config(name);
    connected_with(server, config).await
}

async fn connected_with(server: &mut FakeEsl, config: EslConfig) -> screenpop::daemon::Daemon {
    let daemon = start_with(|s| s.intakes.esl = vec![config]).await;
    server.wait(|s| s.resyncs >= 1).await;
    daemon
}

fn acme(update: &CallUpdate) -> bool {
    serde_json::to_string(&*update.call)
        .expect("json")
        .contains("Acme Corporation")
}

async fn changes(rx: &mut broadcast::Receiver<CallUpdate>, n: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_update(rx, |_| true).await.change);
    }
    out
}

async fn quiet(rx: &mut broadcast::Receiver<CallUpdate>) {
    let more = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(more.is_err(), "no further update: {more:?}");
}

fn ringing(ext: &str) -> Change {
    Change::Ringing {
        extension: ext.into(),
    }
}

fn answered(ext: &str) -> Change {
    Change::Answered {
        by: Some(ext.into()),
    }
}

fn ended(reason: EndReason) -> Change {
    Change::Ended { reason }
}

#[tokio::test]
async fn a_direct_call_rings_is_answered_and_ends() {
    let mut server = FakeEsl::start().await;
    let daemon = connected(&mut server, "fs1").await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("direct_call.esl")).await;
    let first = next_update(&mut rx, |_| true).await;
    assert_eq!(first.change, ringing("1001"));
    assert_eq!(first.call.intake, Intake::ESL);
    assert_eq!(first.call.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(first.call.dialled.as_deref(), Some("18005550199"));
    assert!(acme(&first), "the caller resolves to Acme Corporation");
    assert_eq!(
        changes(&mut rx, 2).await,
        vec![answered("1001"), ended(EndReason::Completed)]
    );
    quiet(&mut rx).await;
    assert_eq!(server.seen.borrow().auths, 1, "one connection throughout");
    let http = daemon.bound.http.expect("http");
    assert_eq!(
        metric(
            http,
            "screenpop_cti_connected",
            "input=\"esl\",peer=\"fs1\""
        )
        .await,
        1.0
    );
    assert!(
        metric(
            http,
            "screenpop_cti_events_total",
            "kind=\"CHANNEL_ANSWER\""
        )
        .await
            >= 2.0
    );
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_ring_group_of_three_pops_each_and_the_losers_end_answered_elsewhere() {
    let mut server = FakeEsl::start().await;
    let config = server.config("fs-group");
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
        s.intakes.esl = vec![config];
    })
    .await;
    server.wait(|s| s.resyncs >= 1).await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("ring_group.esl")).await;
    assert_eq!(
        changes(&mut rx, 7).await,
        vec![
            ringing("1001"),
            ringing("1002"),
            ringing("1003"),
            answered("1002"),
            Change::LegEnded {
                extension: "1001".into(),
                reason: EndReason::AnsweredElsewhere
            },
            Change::LegEnded {
                extension: "1003".into(),
                reason: EndReason::AnsweredElsewhere
            },
            ended(EndReason::Completed),
        ]
    );
    quiet(&mut rx).await;
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn an_abandoned_call_ends_cancelled() {
    let mut server = FakeEsl::start().await;
    let daemon = connected(&mut server, "fs-abandon").await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("abandoned.esl")).await;
    assert_eq!(
        changes(&mut rx, 2).await,
        vec![ringing("1001"), ended(EndReason::Cancelled)]
    );
    quiet(&mut rx).await;
    server.assert_clean();
    assert!(daemon.stop().await);
}

/// A blind transfer (the a-leg transferred to 1002 after 1001 answered): 1001's pop ends
/// completed and 1002 gets a fresh pop for the same caller.
#[tokio::test]
async fn a_blind_transfer_pops_the_second_agent_with_the_same_caller() {
    let mut server = FakeEsl::start().await;
    let daemon = connected(&mut server, "fs-xfer").await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("blind_transfer.esl")).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next_update(&mut rx, |_| true).await);
    }
    let kinds: Vec<Change> = got.iter().map(|u| u.change.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            ringing("1001"),
            answered("1001"),
            ended(EndReason::Completed),
            ringing("1002"),
            answered("1002"),
            ended(EndReason::Completed),
        ]
    );
    assert!(acme(&got[3]), "bob sees the original caller");
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_reconnect_mid_ring_resyncs_recovering_the_ringing_call_and_ending_the_vanished_one() {
    let mut server = FakeEsl::start().await;
    let daemon = connected(&mut server, "fs-reconnect").await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("reconnect_before.esl")).await;
    let before: Vec<CallUpdate> = vec![
        next_update(&mut rx, |_| true).await,
        next_update(&mut rx, |_| true).await,
    ];
    let vanished = before
        .iter()
        .find(|u| u.change == ringing("1002"))
        .expect("1002 rang")
        .call
        .id
        .clone();
    *server.calls.lock().expect("lock") = fixture("reconnect_show_calls.json");
    server.cmds.send(Cmd::Drop).await.expect("server");
    server.wait(|s| s.auths >= 2 && s.resyncs >= 2).await;
    let after = [
        next_update(&mut rx, |_| true).await,
        next_update(&mut rx, |_| true).await,
    ];
    let gone = after
        .iter()
        .find(|u| matches!(u.change, Change::Ended { .. }))
        .expect("the vanished call ended");
    assert_eq!(gone.call.id, vanished);
    let new = after
        .iter()
        .find(|u| matches!(u.change, Change::Ringing { .. }))
        .expect("the call that rang meanwhile popped");
    assert_eq!(new.change, ringing("1002"));
    assert!(acme(new));
    quiet(&mut rx).await;
    let live = daemon.calls.live(None);
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|c| c.state == CallState::Ringing));
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_silent_connection_is_noticed_and_replaced() {
    let mut server = FakeEsl::start().await;
    let mut config = server.config("fs-silent");
    config.liveness_timeout = Duration::from_millis(300);
    let daemon = connected_with(&mut server, config).await;
    // Heartbeats every 100 ms keep it alive past several liveness periods…
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.seen.borrow().auths,
        1,
        "heartbeats count as liveness"
    );
    // …until the switch goes silent without closing the socket.
    server.cmds.send(Cmd::Silence).await.expect("server");
    server.wait(|s| s.auths >= 2 && s.resyncs >= 2).await;
    let http = daemon.bound.http.expect("http");
    assert!(metric(http, "screenpop_cti_reconnects_total", "input=\"esl\"").await >= 1.0);
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn garbage_is_skipped_and_counted_and_the_stream_goes_on() {
    let mut server = FakeEsl::start().await;
    let daemon = connected(&mut server, "fs-garbage").await;
    let http = daemon.bound.http.expect("http");
    let before = metric(http, "screenpop_cti_garbage_total", "input=\"esl\"").await;
    let mut rx = daemon.calls.subscribe();
    server.send(fixture("garbage.esl")).await;
    assert_eq!(
        changes(&mut rx, 2).await,
        vec![ringing("1002"), ended(EndReason::Cancelled)]
    );
    server.send(fixture("direct_call.esl")).await;
    assert_eq!(
        changes(&mut rx, 3).await,
        vec![
            ringing("1001"),
            answered("1001"),
            ended(EndReason::Completed)
        ]
    );
    let after = metric(http, "screenpop_cti_garbage_total", "input=\"esl\"").await;
    assert!(
        after >= before + 4.0,
        "four defects counted: {before} -> {after}"
    );
    server.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_call_back_is_a_bgapi_originate_from_the_agents_own_endpoint_through_the_chosen_switch() {
    let mut first = FakeEsl::start().await;
    let mut second = FakeEsl::start().await;
    let mut via = second.config("fs-dial-b");
    via.originate_endpoint = "sofia/internal/{extension}%pbx.example.com".into();
    via.originate_context = "callbacks".into();
    let configs = vec![first.config("fs-dial-a"), via];
    let daemon = start_with(|s| {
        s.intakes.esl = configs;
        s.callbacks = screenpop::callbacks::Callbacks::new(
            screenpop::callbacks::CallbacksConfig {
                dial_via: Some("fs-dial-b".into()),
                ..Default::default()
            },
            "tel:{number}",
            None,
        );
    })
    .await;
    first.wait(|s| s.resyncs >= 1).await;
    second.wait(|s| s.resyncs >= 1).await;
    let http = daemon.bound.http.expect("http");
    missed_at(&daemon, "esl-dial", "+14155550100", &["1001", "1002"]);
    let id = callback_id(http, "alice-demo-token", "+14155550100").await;

    // `+OK Job-UUID`: queued, 202; through dial_via, never the other switch.
    let (status, _, body) = dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["dialled"]["pbx"], "fs-dial-b");
    assert_eq!(
        second.seen.borrow().originates,
        [
            "bgapi originate {origination_caller_id_name='Call back Acme Corporation',\
          origination_caller_id_number=1001}sofia/internal/1001%pbx.example.com \
          +14155550100 XML callbacks"
        ]
    );
    assert!(first.seen.borrow().originates.is_empty());

    // `-ERR`: refused, 502 with the switch's text.
    *second.originated.lock().expect("lock") = "-ERR permission denied";
    let (status, _, body) = dial(http, "bob-demo-token", &id, None).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("-ERR permission denied")),
        "{body}"
    );
    assert!(second.seen.borrow().originates[1].contains("origination_caller_id_number=1002}"));
    first.assert_clean();
    second.assert_clean();
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn the_default_endpoint_and_context_and_a_switch_that_hangs_up_is_503_at_once() {
    let mut server = FakeEsl::start().await;
    let mut config = server.config("fs-dial-default");
    // Reconnects slowly: the registry is empty meanwhile.
    config.reconnect_min = Duration::from_secs(30);
    config.reconnect_max = Duration::from_secs(30);
    let daemon = connected_with(&mut server, config).await;
    let http = daemon.bound.http.expect("http");
    missed_at(&daemon, "esl-dial-2", "+17025551655", &["1001", "1002"]);
    let id = callback_id(http, "bob-demo-token", "+17025551655").await;
    let (status, _, body) = dial(http, "bob-demo-token", &id, None).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        server.seen.borrow().originates[0].ends_with("}user/1002 +17025551655 XML default"),
        "{:?}",
        server.seen.borrow().originates
    );
    // The switch reads the bgapi and closes the socket: 503 at once, not after the timeout.
    *server.originated.lock().expect("lock") = HANG_UP;
    let started = std::time::Instant::now();
    let (status, _, body) = dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (status, _, body) = dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no AMI or ESL connection")),
        "{body}"
    );
    assert_eq!(server.seen.borrow().originates.len(), 2);
    server.assert_clean();
    assert!(daemon.stop().await);
}
