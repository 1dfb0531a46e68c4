//! Nothing acknowledged is lost (issue 21, findings 3 and 5): the release binary, real
//! PostgreSQL behind a loopback proxy the test cuts, calls over real SIP/UDP, picks over a real
//! WebSocket and notes over HTTP. What the daemon acknowledged — a pop (its call row), a note
//! answered 200, a pick answered `picked` — must reach `call_log`/`customer_picks` across
//! SIGTERM and SIGKILL during an outage (after a restart on the same spool) and across a
//! minute-long outage without a restart.

#[path = "support/proxy.rs"]
mod proxy;
mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxy::Proxy;
use screenpop::config::TokenHash;
use serde_json::json;
use support::binary::Process;
use support::pg::TestDb;
use tokio::net::UdpSocket;

const PG: &str = "127.0.0.1:5432";
const ACME: &str = "+14155550100";
const SHARED: &str = "+13125550142";

/// A database with Acme and two customers sharing a number; a config on it through `proxy`
/// with its own spool; alice at 1001.
async fn setup(dir: &Path, proxy: &Proxy, db: &TestDb) -> PathBuf {
    db.seed_acme_and_shared().await;
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("screenpop.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [directory]\ndatabase_url = \"{}\"\n\
             [call_log]\nflush_interval = \"50ms\"\nspool_dir = \"spool\"\n\
             [[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n",
            proxy.url(&db.name),
            TokenHash::of("alice-t").hex()
        ),
    )
    .expect("config");
    config
}

fn run_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "screenpop-spool-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A SIP phone line into the daemon: INVITEs for 1001 and their CANCELs.
struct Line {
    socket: UdpSocket,
    target: SocketAddr,
}

impl Line {
    async fn new(target: SocketAddr) -> Line {
        Line {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            target,
        }
    }

    async fn send(&self, method: &str, call: &str, number: &str) {
        let local = self.socket.local_addr().expect("local");
        let message = format!(
            "{method} sip:1001@screenpop.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{number}@pbx.test>;tag=t-{call}\r\n\
             To: <sip:1001@pbx.test>\r\n\
             Call-ID: {call}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:{number}@{local}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        self.socket
            .send_to(message.as_bytes(), self.target)
            .await
            .expect("send");
    }
}

/// What one run acknowledged.
#[derive(Default)]
struct Acked {
    calls: Vec<String>,
    cancelled: Vec<String>,
    notes: Vec<(String, String)>,
    picks: Vec<(String, String)>,
}

/// Rings `calls` from Acme and `shared` from the shared number at alice, cancels the first
/// `cancel` Acme calls, notes every other call and picks a candidate on every shared one:
/// each acknowledged before this returns.
async fn traffic(p: &Process, tag: &str, calls: usize, cancel: usize, shared: usize) -> Acked {
    let (mut alice, _) = ws::sign_in(p.http, "alice-t").await;
    let line = Line::new(p.sip).await;
    let mut acked = Acked::default();
    for i in 0..calls + shared {
        let (sip_id, number) = if i < calls {
            (format!("{tag}-acme-{i}"), ACME)
        } else {
            (format!("{tag}-shared-{i}"), SHARED)
        };
        line.send("INVITE", &sip_id, number).await;
        let pop = ws::expect(&mut alice, "ringing").await;
        let id = pop["call_id"].as_str().expect("call id").to_owned();
        if i >= calls {
            let pick = if i % 2 == 0 { "pat" } else { "sam" };
            ws::send(
                &mut alice,
                json!({"type": "pick", "call_id": id, "customer_id": pick}),
            )
            .await;
            let picked = ws::expect(&mut alice, "picked").await;
            assert_eq!(picked["call_id"], id.as_str());
            acked.picks.push((id.clone(), pick.to_owned()));
        } else if i < cancel {
            line.send("CANCEL", &sip_id, number).await;
            ws::expect(&mut alice, "ended").await;
            acked.cancelled.push(id.clone());
        }
        if i % 2 == 0 {
            let text = format!("note on {id}: call back after five");
            let (status, _, body) = tokio::time::timeout(
                ws::WAIT,
                support::http_request(
                    p.http,
                    "POST",
                    &format!("/api/calls/{id}/notes"),
                    Some("alice-t"),
                    Some(&json!({ "note": text }).to_string()),
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("note not answered; log:\n{}", p.log()));
            assert_eq!(status, 200, "{body}");
            acked.notes.push((id.clone(), text));
        }
        acked.calls.push(id);
    }
    acked
}

/// A `call_log` row's outcome, note text and customer.
type Logged = (Option<String>, Option<String>, Option<String>);

/// Polls `call_log` until every acknowledged row, note and pick is there (at most `limit`),
/// then returns the outcomes by call id.
async fn landed(
    db: &TestDb,
    acked: &Acked,
    limit: Duration,
) -> std::collections::HashMap<String, Option<String>> {
    let client = db.client().await;
    let started = Instant::now();
    loop {
        let rows = client
            .query(
                "SELECT call_id, outcome, notes, customer_id FROM call_log",
                &[],
            )
            .await
            .expect("rows");
        let by_id: std::collections::HashMap<String, Logged> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let picks: i64 = client
            .query_one(
                "SELECT count(*) FROM customer_picks WHERE agent_id = 'alice'",
                &[],
            )
            .await
            .expect("picks")
            .get(0);
        let calls = acked
            .calls
            .iter()
            .filter(|c| by_id.contains_key(*c))
            .count();
        let notes = acked
            .notes
            .iter()
            .filter(|(c, text)| by_id.get(c).and_then(|r| r.1.as_ref()) == Some(text))
            .count();
        let picked = acked
            .picks
            .iter()
            .filter(|(c, who)| by_id.get(c).and_then(|r| r.2.as_deref()) == Some(who.as_str()))
            .count();
        // The shared number is one caller key: the latest pick is the one remembered.
        let remembered = usize::from(picks > 0 || acked.picks.is_empty());
        if calls == acked.calls.len()
            && notes == acked.notes.len()
            && picked == acked.picks.len()
            && remembered == 1
        {
            eprintln!(
                "landed: {calls}/{} call rows, {notes}/{} notes, {picked}/{} picks",
                acked.calls.len(),
                acked.notes.len(),
                acked.picks.len()
            );
            return by_id.into_iter().map(|(id, r)| (id, r.0)).collect();
        }
        assert!(
            started.elapsed() < limit,
            "lost: {calls}/{} call rows, {notes}/{} notes, {picked}/{} picks after {limit:?}",
            acked.calls.len(),
            acked.notes.len(),
            acked.picks.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_loses_nothing_and_reports_its_flush() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(PG.parse().expect("addr")).await;
    let dir = run_dir("term");
    let config = setup(&dir, &proxy, &db).await;
    let mut first = Process::start(&config, &[]);
    proxy.cut();
    let acked = traffic(&first, "term", 10, 5, 2).await;
    first.signal("-TERM");
    assert_eq!(first.exited().await, Some(0), "{}", first.log());
    let log = first.log();
    assert!(
        log.contains("Call log not fully written at shutdown") && log.contains("left_in_spool"),
        "shutdown must say what it left in the spool:\n{log}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM call_log").await, 0);

    // PostgreSQL back, the daemon restarted on the same spool: everything lands.
    proxy.restore();
    let mut second = Process::start(&config, &[]);
    let outcomes = landed(&db, &acked, Duration::from_secs(15)).await;
    for id in &acked.calls {
        let want = if acked.cancelled.contains(id) {
            "cancelled"
        } else {
            "shutdown"
        };
        assert_eq!(outcomes[id].as_deref(), Some(want), "call {id}");
    }
    second.signal("-TERM");
    assert_eq!(second.exited().await, Some(0));
    assert!(
        second.log().contains("Call log flushed at shutdown"),
        "{}",
        second.log()
    );
    let spool: Vec<_> = std::fs::read_dir(dir.join("spool"))
        .expect("spool")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
        .collect();
    assert!(spool.is_empty(), "written segments are deleted: {spool:?}");
    db.drop_now().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_outage_loses_nothing() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(PG.parse().expect("addr")).await;
    let dir = run_dir("kill");
    let config = setup(&dir, &proxy, &db).await;
    let mut first = Process::start(&config, &[]);
    proxy.cut();
    let acked = traffic(&first, "kill", 10, 5, 2).await;
    first.signal("-KILL");
    assert_eq!(first.exited().await, None);

    proxy.restore();
    let mut second = Process::start(&config, &[]);
    let outcomes = landed(&db, &acked, Duration::from_secs(15)).await;
    for id in &acked.cancelled {
        assert_eq!(outcomes[id].as_deref(), Some("cancelled"), "call {id}");
    }
    assert!(second.log().contains("Spool replayed"), "{}", second.log());
    second.signal("-TERM");
    assert_eq!(second.exited().await, Some(0));
    db.drop_now().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_postgres_loses_nothing() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(PG.parse().expect("addr")).await;
    let dir = run_dir("outage");
    let config = setup(&dir, &proxy, &db).await;
    let mut daemon = Process::start(&config, &[]);
    proxy.cut();
    let outage = Instant::now();
    let mut acked = Acked::default();
    let mut round = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        let more = traffic(&daemon, &format!("outage{round}"), 4, 4, 1).await;
        acked.calls.extend(more.calls);
        acked.cancelled.extend(more.cancelled);
        acked.notes.extend(more.notes);
        acked.picks.extend(more.picks);
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        metric_value(daemon.http, "screenpop_spool_bytes").await > 0.0,
        "the outage's rows are in the spool"
    );
    proxy.restore();
    landed(&db, &acked, Duration::from_secs(30)).await;
    daemon.signal("-TERM");
    assert_eq!(daemon.exited().await, Some(0));
    db.drop_now().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn metric_value(http: SocketAddr, name: &str) -> f64 {
    support::metric(http, name, "").await
}
