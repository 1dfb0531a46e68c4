//! Missed calls become callbacks (issue 16, item 2): opened by a call that rang and ended
//! unanswered, one per caller while open, pushed live as `callback` messages and in the
//! snapshot, claimed by exactly one agent, released, done with a note, reached by a later
//! answered call; kept in a real PostgreSQL across restarts and between two daemons.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::time::Duration;

use screenpop::calls::{CallEvent, Caller, EndReason, IdentitySource, Intake};
use screenpop::config::TokenHash;
use screenpop::daemon::Daemon;
use serde_json::{Value, json};
use support::pg::TestDb;
use support::{ended, http_get, http_request, ringing};
use ws::Ws;

const ACME: &str = "+14155550100";

/// The next `callback` message on `ws`, its entry.
async fn callback(ws: &mut Ws) -> Value {
    ws::expect(ws, "callback").await["callback"].clone()
}

async fn list(http: std::net::SocketAddr, token: &str) -> Vec<Value> {
    let (status, body) = http_get(http, "/api/callbacks", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["callbacks"].as_array().expect("callbacks").clone()
}

async fn post(
    http: std::net::SocketAddr,
    token: &str,
    id: &str,
    action: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, _, text) = http_request(
        http,
        "POST",
        &format!("/api/callbacks/{id}/{action}"),
        Some(token),
        body.as_deref(),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A call from `number` that rings both demo agents and ends as `how`.
fn missed(daemon: &Daemon, key: &str, number: &str, how: EndReason) {
    daemon.calls.apply(ringing(key, "1001", number));
    daemon.calls.apply(ringing(key, "1002", number));
    daemon.calls.apply(ended(key, how));
}

#[tokio::test]
async fn a_missed_call_opens_one_callback_per_caller_that_one_agent_claims_and_closes() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;
    let (mut bob, _) = ws::sign_in(http, "bob-demo-token").await;

    missed(&daemon, "m1", ACME, EndReason::Cancelled);
    let opened = callback(&mut alice).await;
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["attempts"], 1);
    assert_eq!(opened["match"], "customer");
    assert_eq!(opened["customer"]["name"], "Acme Corporation");
    assert_eq!(opened["number"], ACME);
    assert_eq!(opened["e164"], ACME);
    assert_eq!(opened["extensions"], json!(["1001", "1002"]));
    assert_eq!(opened["call_back"], "tel:+14155550100");
    assert_eq!(callback(&mut bob).await["id"], opened["id"]);
    let id = opened["id"].as_str().expect("id").to_owned();

    // The same caller again: the same entry, one more attempt. A timeout counts too.
    missed(&daemon, "m2", ACME, EndReason::Timeout);
    let again = callback(&mut alice).await;
    assert_eq!(
        (again["id"].as_str(), again["attempts"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert_eq!(again["call_ids"].as_array().map(Vec::len), Some(2));

    // Not callbacks: a withheld caller, a call answered elsewhere, a call answered here.
    daemon.calls.apply(CallEvent::Ringing {
        key: "hidden".into(),
        intake: Intake::SIP,
        extension: "1001".into(),
        caller: Caller {
            number: Some("+14155550199".into()),
            display: None,
            source: IdentitySource::Pai,
            withheld: true,
        },
        dialled: None,
    });
    daemon.calls.apply(ended("hidden", EndReason::Cancelled));
    missed(
        &daemon,
        "elsewhere",
        "+17025551655",
        EndReason::AnsweredElsewhere,
    );
    let listed = list(http, "alice-demo-token").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());

    // Exactly one of two agents claiming at once wins; the other gets 409.
    let (a, b) = tokio::join!(
        post(http, "alice-demo-token", &id, "claim", None),
        post(http, "bob-demo-token", &id, "claim", None),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (winner, loser) = if a.0 == 200 {
        ("alice-demo-token", "bob-demo-token")
    } else {
        ("bob-demo-token", "alice-demo-token")
    };
    let winner_id = if a.0 == 200 { "alice" } else { "bob" };
    assert_eq!(list(http, loser).await[0]["claimed_by"], winner_id);
    let seen = callback(&mut alice).await;
    assert_eq!(
        (seen["state"].as_str(), seen["claimed_by"].as_str()),
        (Some("claimed"), Some(winner_id))
    );
    // The loser can neither release nor close it; the winner releases it.
    assert_eq!(post(http, loser, &id, "release", None).await.0, 409);
    assert_eq!(post(http, loser, &id, "done", None).await.0, 409);
    let (status, released) = post(http, winner, &id, "release", None).await;
    assert_eq!(
        (status, released["callback"]["state"].as_str()),
        (200, Some("open"))
    );

    // Done with a note and a disposition: closed for everyone, noted on the last missed call.
    let (status, done) = post(
        http,
        loser,
        &id,
        "done",
        Some(json!({"note": "Called back, all sorted", "disposition": "Resolved"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["callback"]["state"], "done");
    loop {
        let cb = callback(&mut bob).await;
        if cb["state"] == "done" {
            assert_eq!(cb["note"], "Called back, all sorted");
            break;
        }
    }
    assert!(list(http, "alice-demo-token").await.is_empty());
    let last_call = done["callback"]["call_ids"][1]
        .as_str()
        .expect("call id")
        .to_owned();
    let (_, recent) = http_get(http, "/api/calls?mine=1", Some("bob-demo-token")).await;
    let recent: Value = serde_json::from_str(&recent).expect("json");
    let noted = recent["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["call_id"] == last_call.as_str())
        .expect("the last missed call");
    assert_eq!(noted["disposition"], "Resolved");

    // Closed: nobody acts on it any more; unknown ids and strangers get 404.
    assert_eq!(post(http, winner, &id, "claim", None).await.0, 404);
    assert_eq!(
        post(http, winner, "0000000000000000", "claim", None)
            .await
            .0,
        404
    );
    assert_eq!(post(http, "wrong-token", &id, "claim", None).await.0, 401);
    let (status, _) = post(http, winner, &id, "dance", None).await;
    assert_eq!(status, 404);
    daemon.shutdown();
}

#[tokio::test]
async fn a_later_answered_call_reaches_the_caller_and_the_snapshot_lists_what_is_open() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;
    missed(&daemon, "m1", ACME, EndReason::Rejected);
    missed(&daemon, "other", "+17025551655", EndReason::Cancelled);
    let first = callback(&mut alice).await;
    callback(&mut alice).await;

    // A fresh sign-in gets both in its snapshot, newest first.
    let (_fresh, snapshot) = ws::sign_in(http, "alice-demo-token").await;
    let ids: Vec<&str> = snapshot["callbacks"]
        .as_array()
        .expect("callbacks")
        .iter()
        .map(|c| c["number"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["+17025551655", ACME]);

    // Acme calls again and gets through.
    daemon.calls.apply(ringing("back", "1001", ACME));
    daemon.calls.apply(CallEvent::Answered {
        key: "back".into(),
        intake: Intake::SIP,
        by: Some("1001".into()),
    });
    let reached = loop {
        let cb = callback(&mut alice).await;
        if cb["id"] == first["id"] {
            break cb;
        }
    };
    assert_eq!(reached["state"], "reached");
    assert!(reached["reached_call_id"].is_string());
    let open = list(http, "alice-demo-token").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["number"], "+17025551655");
    daemon.shutdown();
}

/// Calling back through the PBX needs a connected AMI or ESL client (tests/ami.rs and
/// tests/esl.rs dial through fake ones); without one the agent is told so, and nothing else
/// changes. The rules before it (the agent's entry, own extension) apply all the same.
#[tokio::test]
async fn dialling_without_a_pbx_connection_is_503_and_changes_nothing() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    missed(&daemon, "nd", ACME, EndReason::Cancelled);
    let id = support::callback_id(http, "alice-demo-token", ACME).await;
    let (status, _, body) = support::dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no AMI or ESL connection")),
        "{body}"
    );
    // Not rate-limited by a call that was never placed.
    let (status, _, _) = support::dial(http, "alice-demo-token", &id, None).await;
    assert_eq!(status, 503);
    let (status, _, _) = support::dial(
        http,
        "alice-demo-token",
        &id,
        Some(json!({"extension": "1002"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = support::dial(http, "alice-demo-token", "0123abcd", None).await;
    assert_eq!(status, 404);
    let (status, _, _) = support::dial(
        http,
        "alice-demo-token",
        &id,
        Some(json!({"extension": 1001})),
    )
    .await;
    assert_eq!(status, 400, "a malformed body");
    let open = list(http, "alice-demo-token").await;
    assert_eq!(open[0]["state"], "open");
    assert!(
        support::metric(
            http,
            "screenpop_callback_dials_total",
            "result=\"unavailable\""
        )
        .await
            >= 2.0
    );
    daemon.shutdown();
}

/// A daemon on the database at `url` with alice (1001) and bob (1002).
async fn pg_daemon(db: &TestDb) -> Daemon {
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{url}\"\n[call_log]\nflush_interval = \"50ms\"\n{spool}\
         [[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n\
         [[agents]]\nid = \"bob\"\nextensions = [\"1002\"]\ntoken_sha256 = \"{}\"\n",
        TokenHash::of("alice-t").hex(),
        TokenHash::of("bob-t").hex(),
        url = db.url,
        spool = db.spool_line(),
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("callbacks.toml"))
        .expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    Daemon::start(settings).await.expect("start")
}

async fn eventually_listed(http: std::net::SocketAddr, token: &str) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let listed = list(http, token).await;
        if !listed.is_empty() {
            return listed;
        }
        assert!(started.elapsed() < ws::WAIT, "a callback listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn callbacks_survive_a_restart_and_two_daemons_on_one_database_never_both_claim() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let first = pg_daemon(&db).await;
    let http = first.bound.http.expect("http");
    missed(&first, "pg-1", ACME, EndReason::Cancelled);
    let id = eventually_listed(http, "alice-t").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let client = db.client().await;
    let started = std::time::Instant::now();
    while client
        .query_opt("SELECT 1 FROM callbacks WHERE id = $1", &[&id])
        .await
        .expect("q")
        .is_none()
    {
        assert!(
            started.elapsed() < ws::WAIT,
            "the callback reaches PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second daemon on the same database (another node, or this one restarted) loads it.
    let second = pg_daemon(&db).await;
    let http2 = second.bound.http.expect("http");
    let loaded = eventually_listed(http2, "bob-t").await;
    assert_eq!(loaded[0]["id"], id.as_str());
    assert_eq!(loaded[0]["customer"]["name"], "Acme Corporation");
    assert_eq!(loaded[0]["attempts"], 1);

    // alice claims on the first; bob's claim on the second loses, and learns who holds it.
    assert_eq!(post(http, "alice-t", &id, "claim", None).await.0, 200);
    let (status, refused) = post(http2, "bob-t", &id, "claim", None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "claimed by alice");
    assert_eq!(list(http2, "bob-t").await[0]["claimed_by"], "alice");
    let (status, _) = post(http, "alice-t", &id, "done", Some(json!({"note": "Done"}))).await;
    assert_eq!(status, 200);
    let row = client
        .query_one(
            "SELECT state, closed_by, note FROM callbacks WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2)
        ),
        ("done".into(), Some("alice".into()), Some("Done".into()))
    );
    first.shutdown();
    second.shutdown();
}
