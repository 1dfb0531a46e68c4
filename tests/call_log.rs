//! The call log and the agents' picks in PostgreSQL (`calls::log`): real server, a fresh
//! database per test. PostgreSQL "going away" is a loopback proxy in front of it that the test
//! cuts (connections reset, new ones refused) and restores; stopping the machine's server
//! would break the tests running beside this one.

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use proxy::Proxy;
use screenpop::calls::{CallEvent, CallUpdate, Change, EndReason, Intake};
use screenpop::config::TokenHash;
use screenpop::daemon::Daemon;
use screenpop::resolve::Resolution;
use serde_json::{Value, json};
use support::pg::TestDb;
use support::{ended, ringing};
use tokio_tungstenite::tungstenite::Message;

const PG: &str = "127.0.0.1:5432";

/// A daemon on the database at `url`, with agents alice (1001) and bob (1002).
async fn daemon(url: &str, call_log: &str) -> Daemon {
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{url}\"\n[call_log]\nflush_interval = \"50ms\"\nspool_dir = \"{spool}\"\n{call_log}\n\
         [[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n\
         [[agents]]\nid = \"bob\"\nextensions = [\"1002\"]\ntoken_sha256 = \"{}\"\n",
        TokenHash::of("alice-t").hex(),
        TokenHash::of("bob-t").hex(),
        spool = support::pg::spool_dir().display(),
    );
    let config =
        screenpop::config::Config::parse(&toml, std::path::Path::new("log.toml")).expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    Daemon::start(settings).await.expect("start")
}

async fn next_ringing(rx: &mut tokio::sync::broadcast::Receiver<CallUpdate>) -> CallUpdate {
    loop {
        let u = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("an update within 3 s")
            .expect("open");
        if matches!(u.change, Change::Ringing { .. }) {
            return u;
        }
    }
}

async fn rows(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM call_log", &[])
        .await
        .expect("count")
        .get(0)
}

/// Polls until `check` holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_call_is_logged_and_none_is_lost_while_postgres_is_away() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let proxy = Proxy::start(PG.parse().expect("addr")).await;
    let daemon = daemon(&proxy.url(&db.name), "").await;
    let mut updates = daemon.calls.subscribe();
    let log = daemon.call_log.clone().expect("a call log with a database");

    // One answered call, logged with everything the issue lists.
    daemon.calls.apply(ringing("first", "1001", "+14155550100"));
    daemon.calls.apply(ringing("first", "1002", "+14155550100"));
    daemon.calls.apply(CallEvent::Answered {
        key: "first".into(),
        intake: Intake::SIP,
        by: Some("1001".into()),
    });
    daemon.calls.apply(ended("first", EndReason::Completed));
    let first = next_ringing(&mut updates).await.call.id.clone();
    let client = db.client().await;
    eventually(Duration::from_secs(15), "first call logged", || async {
        client
            .query_opt(
                "SELECT 1 FROM call_log WHERE call_id = $1 AND outcome IS NOT NULL",
                &[&first],
            )
            .await
            .expect("q")
            .is_some()
    })
    .await;
    let row = client
        .query_one(
            "SELECT caller_number, withheld, customer_id, ringing_extensions, answered_by,
                    answered_extension, answered_at IS NOT NULL, ended_at IS NOT NULL, outcome,
                    started_at <= answered_at AND answered_at <= ended_at
             FROM call_log WHERE call_id = $1",
            &[&first],
        )
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("+14155550100")
    );
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, Vec<String>>(3), ["1001", "1002"]);
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("alice"));
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("1001"));
    assert!(row.get::<_, bool>(6) && row.get::<_, bool>(7) && row.get::<_, bool>(9));
    assert_eq!(
        row.get::<_, Option<String>>(8).as_deref(),
        Some("completed")
    );

    // PostgreSQL goes away while calls arrive: the pops still come from memory.
    proxy.cut();
    for n in 0..20 {
        let key = format!("away-{n}");
        daemon.calls.apply(ringing(&key, "1001", "(415) 555-0100"));
        let pop = next_ringing(&mut updates).await;
        assert!(
            matches!(&pop.call.resolution, Resolution::Customer { customer } if customer.id() == "acme"),
            "pop {n} resolved from memory: {:?}",
            pop.call.resolution
        );
        daemon.calls.apply(ended(&key, EndReason::Cancelled));
    }
    // The rows wait (the writer is failing meanwhile), none are written, none dropped.
    eventually(Duration::from_secs(15), "20 rows pending", || async {
        log.pending() == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.pending(), 20, "still waiting while PostgreSQL is away");
    assert_eq!(rows(&db).await, 1);
    // Back: every row arrives.
    proxy.restore();
    eventually(
        Duration::from_secs(15),
        "21 rows after the return",
        || async { rows(&db).await == 21 },
    )
    .await;
    let outcomes: i64 = client
        .query_one(
            "SELECT count(*) FROM call_log WHERE outcome = 'cancelled' AND customer_id = 'acme'",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert_eq!(outcomes, 20);
    assert_eq!(log.dropped(), 0);
    assert_eq!(log.pending(), 0);
    assert!(daemon.stop().await);
    drop(proxy);
    db.drop_now().await;
}

#[tokio::test]
async fn a_full_buffer_drops_new_calls_and_counts_them() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let proxy = Proxy::start(PG.parse().expect("addr")).await;
    let daemon = daemon(&proxy.url(&db.name), "buffer = 3").await;
    let log = daemon.call_log.clone().expect("call log");
    proxy.cut();
    for n in 0..5 {
        let key = format!("c{n}");
        daemon.calls.apply(ringing(&key, "1001", "+14155550100"));
        daemon.calls.apply(ended(&key, EndReason::Cancelled));
    }
    eventually(
        Duration::from_secs(3),
        "two calls counted as dropped",
        || async { log.dropped() == 2 },
    )
    .await;
    assert_eq!(log.pending(), 3);
    proxy.restore();
    eventually(
        Duration::from_secs(15),
        "the three kept rows written",
        || async { rows(&db).await == 3 },
    )
    .await;
    assert_eq!(log.dropped(), 2);
    assert!(daemon.stop().await);
    drop(proxy);
    db.drop_now().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn sign_in(http: SocketAddr, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws");
    ws.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .expect("auth");
    for want in ["ready", "snapshot"] {
        assert_eq!(expect(&mut ws, want).await["type"], want);
    }
    ws
}

async fn expect(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("a message within 3 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).expect("json");
            if v["type"] == kind {
                return v;
            }
        }
    }
}

fn candidate_ids(pop: &Value) -> Vec<String> {
    pop["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_agents_pick_ranks_first_for_that_agent_and_survives_a_restart() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let daemon1 = daemon(&db.url, "").await;
    let http = daemon1.bound.http.expect("http");
    let mut alice = sign_in(http, "alice-t").await;
    daemon1
        .calls
        .apply(ringing("shared-1", "1001", "+1 312 555 0142"));
    let pop = expect(&mut alice, "ringing").await;
    // Same kind (main) for both: by name.
    assert_eq!(candidate_ids(&pop), ["pat", "sam"]);
    let call_id = pop["call_id"].as_str().expect("call id").to_owned();
    // A customer not in the directory is refused, and nothing is recorded.
    alice
        .send(Message::text(
            json!({"type": "pick", "call_id": call_id, "customer_id": "nobody"}).to_string(),
        ))
        .await
        .expect("pick");
    let refused = expect(&mut alice, "error").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such customer")),
        "{refused}"
    );
    alice
        .send(Message::text(
            json!({"type": "pick", "call_id": call_id, "customer_id": "sam"}).to_string(),
        ))
        .await
        .expect("pick");
    expect(&mut alice, "picked").await;
    daemon1.calls.apply(ended("shared-1", EndReason::Cancelled));
    let client = db.client().await;
    eventually(Duration::from_secs(15), "pick and picked customer logged", || async {
        let pick = client
            .query_opt(
                "SELECT customer_id FROM customer_picks WHERE agent_id = 'alice' AND caller_key = '+13125550142'",
                &[],
            )
            .await
            .expect("q")
            .map(|r| r.get::<_, String>(0));
        let logged = client
            .query_opt("SELECT customer_id FROM call_log WHERE call_id = $1", &[&call_id])
            .await
            .expect("q")
            .and_then(|r| r.get::<_, Option<String>>(0));
        pick.as_deref() == Some("sam") && logged.as_deref() == Some("sam")
    })
    .await;
    // The same caller, presented in another format, on the same daemon: alice's pick first.
    daemon1
        .calls
        .apply(ringing("shared-2", "1001", "(312) 555-0142"));
    let pop = expect(&mut alice, "ringing").await;
    assert_eq!(candidate_ids(&pop), ["sam", "pat"]);
    assert!(
        pop["candidates"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("you picked")),
        "{pop}"
    );
    drop(alice);
    assert!(daemon1.stop().await);

    // After a restart the pick is still there, for alice only.
    let daemon2 = daemon(&db.url, "").await;
    let http = daemon2.bound.http.expect("http");
    let mut alice = sign_in(http, "alice-t").await;
    let mut bob = sign_in(http, "bob-t").await;
    daemon2
        .calls
        .apply(ringing("shared-3", "1001", "+13125550142"));
    daemon2
        .calls
        .apply(ringing("shared-3", "1002", "+13125550142"));
    assert_eq!(
        candidate_ids(&expect(&mut alice, "ringing").await),
        ["sam", "pat"]
    );
    assert_eq!(
        candidate_ids(&expect(&mut bob, "ringing").await),
        ["pat", "sam"]
    );
    assert!(daemon2.stop().await);
    db.drop_now().await;
}

#[tokio::test]
async fn an_agents_note_and_disposition_land_on_the_call_log_row() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let daemon = daemon(&db.url, "").await;
    let http = daemon.bound.http.expect("http");
    let mut updates = daemon.calls.subscribe();
    daemon.calls.apply(ringing("noted", "1001", "+14155550100"));
    let id = next_ringing(&mut updates).await.call.id.clone();
    daemon.calls.apply(ended("noted", EndReason::Cancelled));
    // Posted at once: the call's own row may still be waiting in the buffer; the note is
    // written after it either way.
    let body = json!({"note": "Called back: wants the <b>blue</b> one", "disposition": "Sale"});
    let (status, _, reply) = support::http_request(
        http,
        "POST",
        &format!("/api/calls/{id}/notes"),
        Some("alice-t"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, _, _) = support::http_request(
        http,
        "POST",
        &format!("/api/calls/{id}/notes"),
        Some("bob-t"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 404, "bob's extension never rang");
    let client = db.client().await;
    eventually(Duration::from_secs(5), "note written", || async {
        client
            .query_opt(
                "SELECT 1 FROM call_log WHERE call_id = $1 AND notes IS NOT NULL",
                &[&id],
            )
            .await
            .expect("q")
            .is_some()
    })
    .await;
    let row = client
        .query_one(
            "SELECT notes, disposition, noted_by, noted_at IS NOT NULL, outcome, customer_id
             FROM call_log WHERE call_id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, String>(0),
        "Called back: wants the <b>blue</b> one"
    );
    assert_eq!(row.get::<_, String>(1), "Sale");
    assert_eq!(row.get::<_, String>(2), "alice");
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "cancelled");
    assert_eq!(row.get::<_, String>(5), "acme");

    // A later edit replaces it; clearing the disposition is allowed.
    let edit = json!({"note": "Sale confirmed", "disposition": null});
    let (status, _, _) = support::http_request(
        http,
        "POST",
        &format!("/api/calls/{id}/notes"),
        Some("alice-t"),
        Some(&edit.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "edit written", || async {
        client
            .query_opt(
                "SELECT 1 FROM call_log WHERE call_id = $1 AND notes = 'Sale confirmed' AND disposition IS NULL",
                &[&id],
            )
            .await
            .expect("q")
            .is_some()
    })
    .await;
    daemon.stop().await;

    // After a restart the page's recent calls come back from call_log, and can be noted.
    let daemon = self::daemon(&db.url, "").await;
    let http = daemon.bound.http.expect("http");
    let mine = || async {
        let (_, _, body) =
            support::http_request(http, "GET", "/api/calls?mine=1", Some("alice-t"), None).await;
        serde_json::from_str::<Value>(&body).expect("json")
    };
    eventually(Duration::from_secs(5), "history loaded", || async {
        mine().await["calls"][0]["call_id"] == id.as_str()
    })
    .await;
    let recent = mine().await;
    let call = &recent["calls"][0];
    assert_eq!(call["note"], "Sale confirmed", "{call}");
    assert_eq!(call["outcome"], "cancelled");
    assert_eq!(call["customer"]["name"], "Acme Corporation");
    assert_eq!(call["state"], "ended");
    let (_, _, body) =
        support::http_request(http, "GET", "/api/calls?mine=1", Some("bob-t"), None).await;
    assert!(!body.contains(&id), "not bob's call: {body}");
    let (status, _, _) = support::http_request(
        http,
        "POST",
        &format!("/api/calls/{id}/notes"),
        Some("alice-t"),
        Some(&json!({"note": "after the restart", "disposition": "Resolved"}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "edit after restart", || async {
        client
            .query_opt(
                "SELECT 1 FROM call_log WHERE call_id = $1 AND notes = 'after the restart'",
                &[&id],
            )
            .await
            .expect("q")
            .is_some()
    })
    .await;
    daemon.stop().await;
    db.drop_now().await;
}

/// One call's row: (extensions, outcome, answered by, started, ended).
async fn row(
    db: &TestDb,
    call_id: &str,
) -> Option<(
    Vec<String>,
    Option<String>,
    Option<String>,
    std::time::SystemTime,
    Option<std::time::SystemTime>,
)> {
    db.client()
        .await
        .query_opt(
            "SELECT ringing_extensions, outcome, answered_by, started_at, ended_at
             FROM call_log WHERE call_id = $1",
            &[&call_id],
        )
        .await
        .expect("select")
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

#[tokio::test]
async fn nodes_that_each_saw_part_of_a_call_write_one_row_that_says_all_of_it() {
    // Two daemons on one call log, as two nodes of a cluster that each hold the call: the
    // first saw it ring at 1001 and then stopped; the second saw both legs, the answer and the
    // hang-up. Whatever order their writes land in, the row is the whole call.
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let a = daemon(&db.url, "").await;
    let b = daemon(&db.url, "").await;
    let mut a_updates = a.calls.subscribe();
    a.calls.apply(ringing("fork", "1001", "+14155550100"));
    let call_id = next_ringing(&mut a_updates).await.call.id.clone();
    eventually(Duration::from_secs(10), "a's row", || async {
        row(&db, &call_id).await.is_some()
    })
    .await;
    let (_, _, _, started_by_a, _) = row(&db, &call_id).await.expect("row");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut b_updates = b.calls.subscribe();
    b.calls.apply(ringing("fork", "1002", "+14155550100"));
    b.calls.apply(ringing("fork", "1001", "+14155550100"));
    assert_eq!(
        next_ringing(&mut b_updates).await.call.id,
        call_id,
        "the same key names the same call on every node"
    );
    b.calls.apply(CallEvent::Answered {
        key: "fork".into(),
        intake: Intake::SIP,
        by: Some("1002".into()),
    });
    b.calls.apply(ended("fork", EndReason::Completed));
    eventually(Duration::from_secs(10), "b's end", || async {
        row(&db, &call_id)
            .await
            .is_some_and(|r| r.1.as_deref() == Some("completed"))
    })
    .await;
    let (_, _, _, _, ended_by_b) = row(&db, &call_id).await.expect("row");
    // a stops later, with the call still live there: its last word is `shutdown`.
    assert!(a.stop().await, "a stops cleanly");
    let (extensions, outcome, answered_by, started, ended) = row(&db, &call_id).await.expect("row");
    assert_eq!(
        extensions,
        ["1001", "1002"],
        "every leg, in first-rung order"
    );
    assert_eq!(
        outcome.as_deref(),
        Some("completed"),
        "a real end outranks a shutdown"
    );
    assert_eq!(answered_by.as_deref(), Some("bob"));
    assert_eq!(started, started_by_a, "the earliest sighting");
    assert_eq!(ended, ended_by_b, "the end b saw, not a's shutdown");
    assert_eq!(rows(&db).await, 1);
    b.stop().await;
}
