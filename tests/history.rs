//! The `history` profile section (issue 16, item 1): on every pop of a known customer, the
//! earlier calls attributed to them, from the journal (no database: the demo) and from
//! `call_log` in a real PostgreSQL, with outcomes, notes, counts and call-back links; a dead
//! database degrades the section to `partial`, never the pop.

#[path = "support/proxy.rs"]
mod proxy;
mod support;
#[path = "support/ws.rs"]
mod ws;

use std::time::Duration;

use screenpop::calls::{CallEvent, EndReason, Intake};
use screenpop::config::TokenHash;
use screenpop::daemon::Daemon;
use serde_json::{Value, json};
use support::pg::TestDb;
use support::{ended, ringing};
use ws::Ws;

const ACME: &str = "+14155550100";

fn answered(key: &str, by: &str) -> CallEvent {
    CallEvent::Answered {
        key: key.into(),
        intake: Intake::SIP,
        by: Some(by.into()),
    }
}

/// The `history` section of the next pop on `ws`, with the call's id.
async fn history(ws: &mut Ws) -> (String, Value) {
    let pop = ws::expect(ws, "ringing").await;
    let call_id = pop["call_id"].as_str().expect("call id").to_owned();
    loop {
        let section = ws::expect(ws, "section").await;
        if section["call_id"] == call_id.as_str() && section["name"] == "history" {
            assert_eq!(section["status"], "ok", "{section}");
            return (call_id, section["data"].clone());
        }
    }
}

/// Lets the ringing update reach the journal and the hub, then ends it as `how`.
async fn call(daemon: &Daemon, ws: &mut Ws, key: &str, ext: &str, how: &[CallEvent]) -> String {
    daemon.calls.apply(ringing(key, ext, ACME));
    let (id, _) = history(ws).await;
    for event in how {
        daemon.calls.apply(event.clone());
    }
    id
}

#[tokio::test]
async fn the_demo_shows_earlier_calls_with_outcomes_notes_and_counts() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;

    // The first call: nothing before it.
    daemon.calls.apply(ringing("c1", "1001", ACME));
    let (first, data) = history(&mut alice).await;
    assert_eq!(data["calls"], json!([]), "{data}");
    assert_eq!(
        (data["calls_24h"].as_u64(), data["repeat"].as_bool()),
        (Some(0), Some(false))
    );
    daemon.calls.apply(answered("c1", "1001"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    daemon.calls.apply(ended("c1", EndReason::Completed));
    let body = json!({"note": "Asked about the invoice", "disposition": "Resolved"}).to_string();
    let (status, _, _) = support::http_request(
        http,
        "POST",
        &format!("/api/calls/{first}/notes"),
        Some("alice-demo-token"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200);

    // A second, missed; a third rejected.
    let missed = call(
        &daemon,
        &mut alice,
        "c2",
        "1001",
        &[ended("c2", EndReason::Cancelled)],
    )
    .await;
    let rejected = call(
        &daemon,
        &mut alice,
        "c3",
        "1001",
        &[ended("c3", EndReason::Rejected)],
    )
    .await;

    // The fourth shows the three, newest first; itself is not in it.
    daemon.calls.apply(ringing("c4", "1001", ACME));
    let (now, data) = history(&mut alice).await;
    let calls = data["calls"].as_array().expect("calls");
    let ids: Vec<&str> = calls
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [rejected.as_str(), missed.as_str(), first.as_str()]);
    assert!(!ids.contains(&now.as_str()));
    assert_eq!(calls[0]["outcome"], "rejected");
    assert_eq!(calls[1]["outcome"], "missed");
    assert_eq!(calls[1]["reason"], "cancelled");
    let c1 = &calls[2];
    assert_eq!(c1["outcome"], "answered");
    assert_eq!(c1["answered_by"], "alice");
    assert_eq!(c1["answered_by_name"], "Alice Agent");
    assert_eq!(c1["answered_extension"], "1001");
    assert!(c1["duration_s"].as_u64().is_some_and(|d| d >= 1), "{c1}");
    assert!(
        calls[1].get("duration_s").is_none(),
        "no duration for a missed call"
    );
    assert_eq!(c1["note"], "Asked about the invoice");
    assert_eq!(c1["disposition"], "Resolved");
    assert_eq!(c1["noted_by"], "alice");
    assert_eq!(c1["call_back"], "tel:+14155550100");
    assert_eq!(c1["extensions"], json!(["1001"]));
    assert_eq!(data["calls_24h"], 3);
    assert_eq!(data["calls_7d"], 3);
    assert_eq!(data["repeat"], true);
    assert!(data.get("partial").is_none());
    daemon.shutdown();
}

#[tokio::test]
async fn the_list_is_bounded_by_limit_and_other_customers_are_not_in_it() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;
    for i in 0..7 {
        let key = format!("k{i}");
        call(
            &daemon,
            &mut alice,
            &key,
            "1001",
            &[ended(&key, EndReason::Timeout)],
        )
        .await;
    }
    // Another customer's call.
    daemon.calls.apply(ringing("other", "1001", "+17025551655"));
    let (_, other) = history(&mut alice).await;
    assert_eq!(other["calls"], json!([]), "{other}");
    daemon.calls.apply(ringing("last", "1001", ACME));
    let (_, data) = history(&mut alice).await;
    assert_eq!(
        data["calls"].as_array().map(Vec::len),
        Some(5),
        "default limit 5"
    );
    assert_eq!(data["calls_24h"], 7);
    daemon.shutdown();
}

/// A daemon on the database at `url`: alice (1001, role `supervisor`), bob (1002, none);
/// note text only for supervisors.
async fn pg_daemon(url: &str) -> Daemon {
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{url}\"\n[call_log]\nflush_interval = \"50ms\"\nspool_dir = \"{spool}\"\n\
         [history]\nnote_roles = [\"supervisor\"]\ndatabase_timeout = \"300ms\"\n\
         [calls]\ncall_back_url = \"sip:{{number}}@pbx.example.com\"\n\
         [[agents]]\nid = \"alice\"\nname = \"Alice\"\nextensions = [\"1001\"]\nroles = [\"supervisor\"]\ntoken_sha256 = \"{}\"\n\
         [[agents]]\nid = \"bob\"\nname = \"Bob\"\nextensions = [\"1002\"]\ntoken_sha256 = \"{}\"\n",
        TokenHash::of("alice-t").hex(),
        TokenHash::of("bob-t").hex(),
        spool = support::pg::spool_dir().display(),
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("history.toml"))
        .expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    Daemon::start(settings).await.expect("start")
}

const DAY: i64 = 24 * 3600;

/// Rows for `acme` as another node (or an earlier run) logged them, `age` seconds ago.
async fn logged(db: &TestDb, rows: &[(&str, i64, &str, Option<&str>)]) {
    let client = db.client().await;
    for (id, age, outcome, note) in rows {
        client
            .execute(
                "INSERT INTO call_log (call_id, caller_number, customer_id, ringing_extensions,
                     answered_by, answered_extension, started_at, answered_at, ended_at, outcome,
                     notes, disposition, noted_by, noted_at)
                 VALUES ($1, '+14155550100', 'acme', '{1001,1002}',
                     CASE WHEN $3 = 'completed' THEN 'alice' END,
                     CASE WHEN $3 = 'completed' THEN '1001' END,
                     now() - make_interval(secs => $2::float8),
                     CASE WHEN $3 = 'completed' THEN now() - make_interval(secs => $2::float8 - 5) END,
                     now() - make_interval(secs => $2::float8 - 65), $3,
                     $4::text, CASE WHEN $4::text IS NOT NULL THEN 'Callback' END,
                     CASE WHEN $4::text IS NOT NULL THEN 'alice' END,
                     CASE WHEN $4::text IS NOT NULL THEN now() END)",
                &[id, &(*age as f64), outcome, note],
            )
            .await
            .expect("insert");
    }
}

#[tokio::test]
async fn the_call_log_gives_older_calls_counted_in_rolling_windows_and_notes_by_role() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    logged(
        &db,
        &[
            (
                "old-1h",
                3600,
                "completed",
                Some("Wants the new price list"),
            ),
            ("old-2d", 2 * DAY, "cancelled", None),
            ("old-6d", 6 * DAY, "rejected", None),
            ("old-10d", 10 * DAY, "timeout", None),
        ],
    )
    .await;
    let daemon = pg_daemon(&db.url).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-t").await;
    let (mut bob, _) = ws::sign_in(http, "bob-t").await;

    daemon.calls.apply(ringing("live", "1001", ACME));
    daemon.calls.apply(ringing("live", "1002", ACME));
    let (_, seen_by_alice) = history(&mut alice).await;
    let (_, seen_by_bob) = history(&mut bob).await;
    for data in [&seen_by_alice, &seen_by_bob] {
        let ids: Vec<&str> = data["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["call_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["old-1h", "old-2d", "old-6d", "old-10d"], "{data}");
        assert_eq!(data["calls_24h"], 1, "{data}");
        assert_eq!(data["calls_7d"], 3, "{data}");
        assert_eq!(data["repeat"], true);
        let first = &data["calls"][0];
        assert_eq!(first["outcome"], "answered");
        assert_eq!(first["duration_s"], 60);
        assert_eq!(first["answered_by_name"], "Alice");
        assert_eq!(first["disposition"], "Callback");
        assert_eq!(first["call_back"], "sip:+14155550100@pbx.example.com");
        assert_eq!(data["calls"][2]["outcome"], "rejected");
    }
    assert_eq!(
        seen_by_alice["calls"][0]["note"],
        "Wants the new price list"
    );
    assert!(
        seen_by_bob["calls"][0].get("note").is_none(),
        "bob's roles may not read notes: {seen_by_bob}"
    );

    // The live call is logged by now (and in the journal): the next call counts it once.
    daemon.calls.apply(ended("live", EndReason::Cancelled));
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.calls.apply(ringing("next", "1001", ACME));
    let (_, data) = history(&mut alice).await;
    assert_eq!(data["calls"][0]["outcome"], "missed", "{data}");
    assert_eq!(data["calls_24h"], 2, "{data}");
    assert_eq!(data["calls_7d"], 4, "{data}");
    daemon.shutdown();
}

#[tokio::test]
async fn without_the_database_the_history_is_partial_and_the_pop_still_goes_out() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    logged(&db, &[("long-ago", 30 * DAY, "completed", None)]).await;
    let proxy = proxy::Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let daemon = pg_daemon(&proxy.url(&db.name)).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-t").await;
    // Once the journal has loaded the recent calls (long-ago), a call logged by another node:
    // only the call log knows it.
    let started = std::time::Instant::now();
    while daemon.journal.is_empty() {
        assert!(
            started.elapsed() < ws::WAIT,
            "the journal loads the call log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    logged(&db, &[("elsewhere", 3600, "completed", None)]).await;
    daemon.calls.apply(ringing("before", "1001", ACME));
    let (before, data) = history(&mut alice).await;
    assert_eq!(data["calls"][0]["call_id"], "elsewhere", "{data}");
    daemon.calls.apply(ended("before", EndReason::Timeout));

    proxy.cut();
    daemon.calls.apply(ringing("during", "1001", ACME));
    let (_, data) = history(&mut alice).await;
    assert_eq!(data["partial"], true, "{data}");
    let ids: Vec<&str> = data["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [before.as_str(), "long-ago"],
        "the journal's calls only: {data}"
    );
    assert_eq!(data["calls"][0]["outcome"], "missed");
    proxy.restore();
    daemon.shutdown();
}

#[tokio::test]
async fn a_customer_found_for_an_unknown_caller_gets_its_sections_and_history() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;
    let (mut bob, _) = ws::sign_in(http, "bob-demo-token").await;
    // Acme called before, from its own number.
    call(
        &daemon,
        &mut alice,
        "known",
        "1001",
        &[ended("known", EndReason::Cancelled)],
    )
    .await;
    // Now from a number nobody knows, ringing both agents.
    daemon
        .calls
        .apply(ringing("stranger", "1001", "+19995550123"));
    daemon
        .calls
        .apply(ringing("stranger", "1002", "+19995550123"));
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["unknown"], true, "{pop}");
    ws::expect(&mut bob, "ringing").await;
    let call_id = pop["call_id"].as_str().expect("id").to_owned();
    ws::send(
        &mut alice,
        json!({"type": "pick", "call_id": call_id, "customer_id": "nobody"}),
    )
    .await;
    let refused = ws::expect(&mut alice, "error").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such customer"))
    );
    ws::send(
        &mut alice,
        json!({"type": "pick", "call_id": call_id, "customer_id": "c-0001"}),
    )
    .await;
    ws::expect(&mut alice, "picked").await;
    let mut names = Vec::new();
    let mut history = Value::Null;
    for (v, _) in ws::until(&mut alice, "complete").await {
        if v["type"] == "section" {
            assert_eq!(v["customer_id"], "c-0001");
            names.push(v["name"].as_str().unwrap_or_default().to_owned());
            if v["name"] == "history" {
                history = v["data"].clone();
            }
        }
    }
    names.sort();
    assert_eq!(names, ["balance", "credit", "history", "purchases"]);
    assert_eq!(history["calls"][0]["outcome"], "missed", "{history}");
    assert_eq!(history["calls_24h"], 1);
    // Only the agent who attached the customer gets its profile.
    while let Some((v, _)) = ws::next_raw(&mut bob, Duration::from_millis(300)).await {
        assert_ne!(v["type"], "section", "bob got a section: {v}");
    }
    // A matched caller keeps its match: attaching another customer is refused.
    daemon.calls.apply(ringing("matched", "1001", ACME));
    let pop = ws::expect(&mut alice, "ringing").await;
    ws::send(
        &mut alice,
        json!({"type": "pick", "call_id": pop["call_id"], "customer_id": "c-0002"}),
    )
    .await;
    let refused = ws::expect(&mut alice, "error").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("already identified"))
    );
    daemon.shutdown();
}

const SHARED: &str = "+13125550142";

/// The next `last_contacts` on `ws` for `call_id`, as customer id → (last contact, outcome).
async fn last_contacts(
    ws: &mut Ws,
    call_id: &str,
) -> std::collections::BTreeMap<String, (Option<String>, Option<String>)> {
    loop {
        let msg = ws::expect(ws, "last_contacts").await;
        if msg["call_id"] == call_id {
            return contacts_of(&msg);
        }
    }
}

fn contacts_of(v: &Value) -> std::collections::BTreeMap<String, (Option<String>, Option<String>)> {
    v["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().map(str::to_owned);
            (
                s("customer_id").expect("customer_id"),
                (s("last_contact"), s("outcome")),
            )
        })
        .collect()
}

#[tokio::test]
async fn candidates_say_when_each_last_called_from_the_journal() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-demo-token").await;

    // The shared number's first call: neither candidate ever called.
    daemon.calls.apply(ringing("s1", "1001", SHARED));
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["candidates"].as_array().map(Vec::len), Some(2), "{pop}");
    let first = pop["call_id"].as_str().expect("id").to_owned();
    let seen = last_contacts(&mut alice, &first).await;
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            ("c-1201".to_owned(), (None, None)),
            ("c-1202".to_owned(), (None, None))
        ]
    );
    // Alice says it is Sam; the caller hangs up before anyone answers.
    ws::send(
        &mut alice,
        json!({"type": "pick", "call_id": first, "customer_id": "c-1202"}),
    )
    .await;
    ws::expect(&mut alice, "picked").await;
    daemon.calls.apply(ended("s1", EndReason::Cancelled));
    ws::expect(&mut alice, "ended").await;

    // The next call from that number: Sam called (missed), Pat never did.
    daemon.calls.apply(ringing("s2", "1001", SHARED));
    let pop = ws::expect(&mut alice, "ringing").await;
    let second = pop["call_id"].as_str().expect("id").to_owned();
    let seen = last_contacts(&mut alice, &second).await;
    assert_eq!(seen["c-1201"], (None, None), "{seen:?}");
    let (at, outcome) = &seen["c-1202"];
    assert_eq!(outcome.as_deref(), Some("missed"), "{seen:?}");
    let at = humantime::parse_rfc3339(at.as_deref().expect("last contact")).expect("time");
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .expect("in the past");
    assert!(
        age < Duration::from_secs(60),
        "the first call's start: {age:?}"
    );

    // A leg rung later gets it right after its `ringing`; a snapshot carries it.
    let (mut bob, _) = ws::sign_in(http, "bob-demo-token").await;
    daemon.calls.apply(ringing("s2", "1002", SHARED));
    let pop = ws::expect(&mut bob, "ringing").await;
    assert_eq!(pop["call_id"], second.as_str());
    assert_eq!(
        last_contacts(&mut bob, &second).await["c-1202"]
            .1
            .as_deref(),
        Some("missed")
    );
    let (_, snapshot) = ws::sign_in(http, "alice-demo-token").await;
    let entry = &snapshot["calls"][0];
    assert_eq!(entry["call_id"], second.as_str(), "{snapshot}");
    assert_eq!(
        contacts_of(&entry["last_contacts"])["c-1202"].1.as_deref(),
        Some("missed"),
        "{snapshot}"
    );
    // A known customer's pop has none.
    daemon.calls.apply(ringing("k", "1001", ACME));
    let (known, _) = history(&mut alice).await;
    daemon.calls.apply(ended("k", EndReason::Cancelled));
    let trail = ws::until(&mut alice, "ended").await;
    assert!(
        !trail
            .iter()
            .any(|(v, _)| v["type"] == "last_contacts" && v["call_id"] == known.as_str()),
        "{trail:?}"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn candidates_last_contacts_come_from_the_call_log_and_follow_the_history_roles() {
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO call_log (call_id, caller_number, customer_id, started_at, answered_at,
                 answered_extension, outcome)
             VALUES ('pat-old', '+13125550142', 'pat', now() - interval '3 days',
                     now() - interval '3 days', '1001', 'completed'),
                    ('pat-older', '+13125550142', 'pat', now() - interval '9 days', NULL, NULL,
                     'cancelled'),
                    ('sam-old', '+13125550142', 'sam', now() - interval '20 days', NULL, NULL,
                     'rejected')",
        )
        .await
        .expect("insert");
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{url}\"\n[call_log]\nflush_interval = \"50ms\"\n{spool}\
         [history]\nroles = [\"supervisor\"]\n\
         [[agents]]\nid = \"alice\"\nname = \"Alice\"\nextensions = [\"1001\"]\nroles = [\"supervisor\"]\ntoken_sha256 = \"{}\"\n\
         [[agents]]\nid = \"bob\"\nname = \"Bob\"\nextensions = [\"1002\"]\ntoken_sha256 = \"{}\"\n",
        TokenHash::of("alice-t").hex(),
        TokenHash::of("bob-t").hex(),
        url = db.url,
        spool = db.spool_line(),
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("history.toml"))
        .expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    let daemon = Daemon::start(settings).await.expect("start");
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = ws::sign_in(http, "alice-t").await;
    let (mut bob, _) = ws::sign_in(http, "bob-t").await;

    daemon.calls.apply(ringing("now", "1001", SHARED));
    daemon.calls.apply(ringing("now", "1002", SHARED));
    let pop = ws::expect(&mut alice, "ringing").await;
    let call_id = pop["call_id"].as_str().expect("id").to_owned();
    let seen = last_contacts(&mut alice, &call_id).await;
    assert_eq!(seen["pat"].1.as_deref(), Some("answered"), "{seen:?}");
    assert_eq!(seen["sam"].1.as_deref(), Some("rejected"), "{seen:?}");
    let pat = humantime::parse_rfc3339(seen["pat"].0.as_deref().unwrap()).expect("time");
    let days = std::time::SystemTime::now()
        .duration_since(pat)
        .expect("past")
        .as_secs_f64()
        / 86_400.0;
    assert!(
        (2.9..3.1).contains(&days),
        "the newest of pat's calls: {days} days"
    );

    // Bob may not see the history: no last contacts, on the wire or in his snapshot.
    ws::expect(&mut bob, "ringing").await;
    let (_, snapshot) = ws::sign_in(http, "bob-t").await;
    assert_eq!(
        snapshot["calls"][0]["call_id"],
        call_id.as_str(),
        "{snapshot}"
    );
    assert!(
        snapshot["calls"][0].get("last_contacts").is_none(),
        "{snapshot}"
    );
    let (_, snapshot) = ws::sign_in(http, "alice-t").await;
    assert!(
        snapshot["calls"][0].get("last_contacts").is_some(),
        "{snapshot}"
    );
    daemon.calls.apply(ended("now", EndReason::Cancelled));
    let trail = ws::until(&mut bob, "ended").await;
    assert!(
        !trail.iter().any(|(v, _)| v["type"] == "last_contacts"),
        "{trail:?}"
    );
    daemon.shutdown();
}

#[tokio::test]
async fn a_note_saved_at_another_node_is_in_the_history_here() {
    // Two daemons on one call log, as two nodes that both held a call: alice notes it at a;
    // the customer's next call, popped at b, shows that note although b's own journal has
    // the call without it.
    let db = TestDb::new().await;
    db.seed_acme_and_shared().await;
    let a = pg_daemon(&db.url).await;
    let b = pg_daemon(&db.url).await;
    let (mut alice_a, _) = ws::sign_in(a.bound.http.expect("http"), "alice-t").await;
    let (mut alice_b, _) = ws::sign_in(b.bound.http.expect("http"), "alice-t").await;
    for node in [&a, &b] {
        node.calls.apply(ringing("both", "1001", ACME));
    }
    let (call_id, _) = history(&mut alice_a).await;
    assert_eq!(history(&mut alice_b).await.0, call_id, "one call, one id");
    for node in [&a, &b] {
        node.calls.apply(answered("both", "1001"));
        node.calls.apply(ended("both", EndReason::Completed));
    }
    let body =
        json!({"note": "Promised a refund by Friday", "disposition": "Resolved"}).to_string();
    let (status, _, _) = support::http_request(
        a.bound.http.expect("http"),
        "POST",
        &format!("/api/calls/{call_id}/notes"),
        Some("alice-t"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200);
    let client = db.client().await;
    let started = std::time::Instant::now();
    loop {
        let noted: Option<String> = client
            .query_one("SELECT notes FROM call_log WHERE call_id = $1", &[&call_id])
            .await
            .map(|r| r.get(0))
            .unwrap_or(None);
        if noted.is_some() {
            break;
        }
        assert!(started.elapsed() < ws::WAIT, "a writes the note");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.calls.apply(ringing("again", "1001", ACME));
    let (_, data) = history(&mut alice_b).await;
    let first = &data["calls"][0];
    assert_eq!(first["call_id"], call_id.as_str(), "{data}");
    assert_eq!(first["note"], "Promised a refund by Friday", "{data}");
    assert_eq!(first["disposition"], "Resolved");
    assert_eq!(first["noted_by"], "alice");
    assert_eq!(first["outcome"], "answered");
    assert_eq!(
        data["calls"].as_array().map(Vec::len),
        Some(1),
        "once: {data}"
    );
    assert_eq!(data["calls_24h"], 1, "counted once: {data}");
    a.shutdown();
    b.shutdown();
}
