//! Profile composition end to end: real WebSocket clients, the embedded demo's sources, three
//! separate PostgreSQL databases (`screenpop demo-db`'s), and a real HTTP server on loopback.
//! Every message is checked against the protocol's JSON Schema.

#[path = "support/proxy.rs"]
mod proxy;
mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use screenpop::calls::{CallEvent, EndReason, Intake};
use screenpop::config::TokenHash;
use screenpop::daemon::Daemon;
use screenpop::demo::data;
use serde_json::{Value, json};
use support::ringing;
use ws::{Ws, expect, sign_in, until};

/// The messages of one pop: `ringing` first, then sections, ending with `complete`.
async fn pop(ws: &mut Ws) -> (Value, Vec<Value>, Value, Vec<String>) {
    let got = until(ws, "complete").await;
    let raws = got.iter().map(|(_, r)| r.clone()).collect();
    let values: Vec<Value> = got.into_iter().map(|(v, _)| v).collect();
    assert_eq!(
        values[0]["type"], "ringing",
        "the pop comes first: {values:?}"
    );
    let complete = values.last().cloned().expect("complete");
    let sections = values[1..values.len() - 1]
        .iter()
        .filter(|v| v["type"] == "section")
        .cloned()
        .collect();
    (values[0].clone(), sections, complete, raws)
}

fn by_name<'a>(sections: &'a [Value], name: &str) -> &'a Value {
    sections
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` section in {sections:?}"))
}

#[tokio::test]
async fn the_demo_pops_identity_then_three_sections_and_credit_only_for_its_role() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-demo-token").await;
    let (mut bob, _) = sign_in(http, "bob-demo-token").await;
    // A real INVITE, as the PBX forks it, to alice; the same call to bob as a second leg.
    let sip = daemon.bound.sip_udp[0];
    let uac = support::UdpPeer::new(sip).await;
    uac.send(&support::request(
        "INVITE",
        "1001",
        uac.local(),
        "UDP",
        "prof-1",
        "z9hG4bKp1",
        1,
        "",
    ))
    .await;
    let (pop_a, sections, complete, _) = pop(&mut alice).await;
    assert_eq!(pop_a["customer"]["name"], "Acme Corporation");
    let want = data::account("ACME-001");
    // balance, purchases, credit, and the built-in history (tests/history.rs).
    assert_eq!(sections.len(), 4, "{sections:?}");
    let balance = by_name(&sections, "balance");
    assert_eq!(balance["status"], "ok");
    assert_eq!(balance["data"]["currency"], want.currency);
    assert_eq!(
        balance["data"]["balance"].as_f64(),
        Some(want.balance_cents() as f64 / 100.0)
    );
    assert_eq!(balance["data"]["overdue_days"], want.overdue().1);
    assert_eq!(
        balance["data"]["invoices"].as_array().map(Vec::len),
        Some(want.invoices.len())
    );
    let purchases = by_name(&sections, "purchases");
    assert_eq!(
        purchases["data"].as_array().map(Vec::len),
        Some(want.orders.len())
    );
    assert_eq!(purchases["data"][0]["order"], want.orders[0].id);
    let credit = by_name(&sections, "credit");
    assert_eq!(credit["status"], "ok");
    assert_eq!(
        credit["data"]["limit"].as_f64(),
        Some(want.credit.limit_cents as f64 / 100.0)
    );
    assert_eq!(credit["data"]["terms"], want.credit.terms);
    assert_eq!(complete["missing"], json!([]));
    assert_eq!(complete["customer_id"], "c-0001");

    // Bob, rung a moment later on the same call: the sections composed so far, credit as
    // `forbidden` (bob has no credit role) and not one byte of it on the wire.
    uac.send(&support::request(
        "INVITE",
        "1002",
        uac.local(),
        "UDP",
        "prof-1",
        "z9hG4bKp2",
        1,
        "",
    ))
    .await;
    let (pop_b, sections_b, complete_b, raws) = pop(&mut bob).await;
    assert_eq!(pop_b["call_id"], pop_a["call_id"]);
    let credit_b = by_name(&sections_b, "credit");
    assert_eq!(credit_b["status"], "forbidden");
    assert_eq!(credit_b["data"], Value::Null);
    let limit = format!("{}", want.credit.limit_cents / 100);
    assert!(
        raws.iter()
            .all(|r| !r.contains("\"limit\"") && !r.contains(want.credit.terms)),
        "credit data reached bob: {raws:?} ({limit})"
    );
    assert_eq!(complete_b["missing"], json!(["credit"]));
    assert_eq!(by_name(&sections_b, "balance")["status"], "ok");

    // A refresh mid-ring: the snapshot rebuilds the whole card, sections included.
    drop(alice);
    let (_alice, snapshot) = sign_in(http, "alice-demo-token").await;
    let entry = &snapshot["calls"][0];
    assert_eq!(entry["customer"]["name"], "Acme Corporation");
    assert_eq!(entry["complete"], true);
    assert_eq!(entry["sections"].as_array().map(Vec::len), Some(4));
    drop(bob);
    let (_bob, snapshot) = sign_in(http, "bob-demo-token").await;
    let entry = &snapshot["calls"][0];
    assert!(!entry.to_string().contains("\"limit\""), "{entry}");
    assert!(daemon.stop().await);
}

#[tokio::test]
async fn a_pick_among_candidates_composes_the_picked_customer_for_that_agent() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-demo-token").await;
    daemon
        .calls
        .apply(ringing("shared", "1001", "+1 312 555 0142"));
    let pop = expect(&mut alice, "ringing").await;
    assert!(pop["candidates"].is_array());
    // No customer yet: nothing is fetched (only when each candidate last called, from the
    // history).
    while let Some((msg, _)) = ws::next_raw(&mut alice, Duration::from_millis(300)).await {
        assert_eq!(
            msg["type"], "last_contacts",
            "no sections before a pick: {msg}"
        );
    }
    ws::send(
        &mut alice,
        json!({"type": "pick", "call_id": pop["call_id"], "customer_id": "c-1202"}),
    )
    .await;
    let got = until(&mut alice, "complete").await;
    let sections: Vec<&Value> = got
        .iter()
        .map(|(v, _)| v)
        .filter(|v| v["type"] == "section")
        .collect();
    assert_eq!(sections.len(), 4, "the demo's three and the history");
    assert!(sections.iter().all(|s| s["customer_id"] == "c-1202"));
    assert!(got.iter().any(|(v, _)| v["type"] == "picked"));
    assert!(daemon.stop().await);
}

/// A daemon on the demo databases with these `[[sources]]` (and agents alice with the credit
/// role, bob without).
async fn pg_daemon(index: &str, sources: &str) -> Daemon {
    pg_daemon_with(index, "", sources).await
}

/// [`pg_daemon`] with more `[compose]` keys.
async fn pg_daemon_with(index: &str, compose: &str, sources: &str) -> Daemon {
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [call_log]\nspool_dir = \"{spool}\"\n\
         [history]\nenabled = false\n\
         [directory]\ndatabase_url = \"{index}\"\n[compose]\ndeadline = \"3s\"\n{compose}\n\
         [[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\nroles = [\"credit\"]\ntoken_sha256 = \"{}\"\n\
         [[agents]]\nid = \"bob\"\nextensions = [\"1002\"]\ntoken_sha256 = \"{}\"\n{sources}",
        TokenHash::of("alice-t").hex(),
        TokenHash::of("bob-t").hex(),
        spool = support::pg::spool_dir().display(),
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("profile.toml"))
        .expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    Daemon::start(settings).await.expect("start")
}

fn demo_sources(dbs: &screenpop::demo::db::DemoDatabases) -> String {
    screenpop::demo::db::sources_toml(dbs, "[\"credit\"]")
}

async fn demo_dbs() -> (screenpop::demo::db::DemoDatabases, String) {
    let prefix = format!("screenpop_test_{:012x}", rand::random::<u64>() >> 16);
    let dbs = screenpop::demo::db::create("postgres://postgres@127.0.0.1:5432", &prefix, 1202)
        .await
        .expect("demo databases");
    (dbs, prefix)
}

async fn drop_dbs(prefix: &str) {
    let admin = screenpop::db::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("admin");
    for suffix in ["", "_accounting", "_sales", "_credit"] {
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {prefix}{suffix} WITH (FORCE)"
            ))
            .await;
    }
}

#[tokio::test]
async fn three_separate_databases_a_slow_one_and_a_hostile_account() {
    let (dbs, prefix) = demo_dbs().await;
    // A fourth source that sleeps past its timeout. (No timing is asserted beyond the logic:
    // the others come first, and the pop is complete long before the sleep would end.)
    let slow = format!(
        "[[sources]]\nname = \"slow\"\ntype = \"postgres\"\ndatabase_url = \"{}\"\ntimeout = \"1s\"\nquery = \"SELECT pg_sleep(8) IS NULL AS slept, $account AS account\"\n",
        dbs.credit
    );
    let daemon = pg_daemon(&dbs.index, &format!("{}\n{slow}", demo_sources(&dbs))).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-t").await;
    let started = std::time::Instant::now();
    daemon.calls.apply(ringing("pg-1", "1001", "+14155550100"));
    let (pop, sections, complete, _) = pop(&mut alice).await;
    assert_eq!(pop["customer"]["name"], "Acme Corporation");
    // The three answer; the slow one is reported last, as a timeout.
    let order: Vec<&str> = sections.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(order.len(), 4);
    assert_eq!(order[3], "slow", "{order:?}");
    for name in ["balance", "purchases", "credit"] {
        let s = by_name(&sections, name);
        assert_eq!(s["status"], "ok", "{s}");
    }
    assert_eq!(by_name(&sections, "slow")["status"], "timeout");
    assert_eq!(complete["missing"], json!(["slow"]));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "never waited for pg_sleep(8)"
    );
    let want = data::account("ACME-001");
    let balance = by_name(&sections, "balance");
    assert_eq!(balance["data"]["currency"], want.currency);
    assert_eq!(
        balance["data"]["balance"].as_f64(),
        Some(want.balance_cents() as f64 / 100.0)
    );
    assert_eq!(
        balance["data"]["invoices"].as_array().map(Vec::len),
        Some(want.invoices.len())
    );
    assert_eq!(
        by_name(&sections, "purchases")["data"]
            .as_array()
            .map(Vec::len),
        Some(want.orders.len().min(5))
    );
    assert_eq!(
        by_name(&sections, "credit")["data"]["terms"],
        want.credit.terms
    );

    // A customer whose account is an injection attempt: bound as a parameter, nothing runs.
    let index = screenpop::db::connect(&dbs.index).await.expect("index");
    index
        .batch_execute(
            "INSERT INTO customers (id, name, account_number) VALUES ('evil', 'Mallory', '''; DROP TABLE credit_terms; --');
             INSERT INTO customer_numbers (customer_id, raw) VALUES ('evil', '(702) 555-0166');",
        )
        .await
        .expect("evil customer");
    let credit_db = screenpop::db::connect(&dbs.credit).await.expect("credit");
    let before: i64 = credit_db
        .query_one("SELECT count(*) FROM credit_terms", &[])
        .await
        .expect("count")
        .get(0);
    let started = std::time::Instant::now();
    loop {
        daemon.calls.apply(ringing(
            &format!("evil-{}", started.elapsed().as_millis()),
            "1001",
            "+17025550166",
        ));
        let p = expect(&mut alice, "ringing").await;
        if p["customer"]["id"] == "evil" {
            let got = until(&mut alice, "complete").await;
            let credit = got
                .iter()
                .map(|(v, _)| v)
                .find(|v| v["name"] == "credit")
                .cloned()
                .expect("credit section");
            assert_eq!(credit["status"], "ok");
            assert_eq!(
                credit["data"],
                Value::Null,
                "no such account: nothing on file"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new customer not indexed"
        );
        // Not indexed yet: an unknown caller has no profile, so no `complete` to wait for.
        if p["customer"].is_object() {
            until(&mut alice, "complete").await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after: i64 = credit_db
        .query_one("SELECT count(*) FROM credit_terms", &[])
        .await
        .expect("the table is still there")
        .get(0);
    assert_eq!(before, after);
    assert!(daemon.stop().await);
    drop_dbs(&prefix).await;
}

#[tokio::test]
async fn a_dead_database_errors_then_is_skipped_then_recovers() {
    let (dbs, prefix) = demo_dbs().await;
    let proxy = proxy::Proxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let credit_via_proxy = dbs
        .credit
        .replace("127.0.0.1:5432", &proxy.addr.to_string());
    let source = format!(
        "[[sources]]\nname = \"credit\"\ntype = \"postgres\"\ndatabase_url = \"{credit_via_proxy}\"\ntimeout = \"3s\"\nconnect_timeout = \"2s\"\nbreaker_failures = 2\nbreaker_cooldown = \"700ms\"\nquery = '''{}'''\n",
        screenpop::demo::db::CREDIT_SQL
    );
    let daemon = pg_daemon(&dbs.index, &source).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-t").await;
    let mut n = 0;
    let mut call = |ws_alice: &mut Ws| {
        n += 1;
        daemon
            .calls
            .apply(ringing(&format!("dead-{n}"), "1001", "+14155550100"));
        let _ = ws_alice;
    };
    let status = |got: Vec<(Value, String)>| -> (String, Option<String>) {
        let s = got
            .into_iter()
            .map(|(v, _)| v)
            .find(|v| v["type"] == "section")
            .expect("a section");
        (
            s["status"].as_str().unwrap_or_default().to_owned(),
            s["error"].as_str().map(str::to_owned),
        )
    };
    call(&mut alice);
    assert_eq!(status(until(&mut alice, "complete").await).0, "ok");
    proxy.cut();
    call(&mut alice);
    let (first, why) = status(until(&mut alice, "complete").await);
    assert!(first == "error" || first == "timeout", "{first}");
    assert!(why.is_some());
    call(&mut alice);
    let (second, _) = status(until(&mut alice, "complete").await);
    assert!(second == "error" || second == "timeout", "{second}");
    call(&mut alice);
    let (third, why) = status(until(&mut alice, "complete").await);
    assert_eq!(third, "skipped", "the breaker opened after two failures");
    assert!(why.is_some_and(|w| w.contains("skipped")));
    // Back, and after the cool-down the trial call succeeds and closes the breaker.
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(800)).await;
    call(&mut alice);
    assert_eq!(status(until(&mut alice, "complete").await).0, "ok");
    call(&mut alice);
    assert_eq!(status(until(&mut alice, "complete").await).0, "ok");
    assert!(daemon.stop().await);
    drop(proxy);
    drop_dbs(&prefix).await;
}

/// A loyalty-points API on loopback: checks the bearer token, counts requests, answers slowly
/// enough for concurrent calls to overlap.
async fn loyalty_api() -> (SocketAddr, Arc<AtomicUsize>) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/v1/members/{account}",
            axum::routing::get(
                |State(hits): State<Arc<AtomicUsize>>,
                 Path(account): Path<String>,
                 headers: HeaderMap| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer s3cret")
                    {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({}))).into_response();
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    if account != "ACME-001" {
                        return (StatusCode::NOT_FOUND, axum::Json(json!({}))).into_response();
                    }
                    axum::Json(
                        json!({"member": {"tier": "gold", "points": 12_400}, "meta": {"v": 1}}),
                    )
                    .into_response()
                },
            ),
        )
        .with_state(hits.clone());
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

#[tokio::test]
async fn an_http_source_is_cached_with_its_age_and_concurrent_calls_share_one_request() {
    let (api, hits) = loyalty_api().await;
    let sources = format!(
        "[[sources]]\nname = \"loyalty\"\ntype = \"http\"\nurl = \"http://{api}/v1/members/{{account}}\"\npointer = \"/member\"\nbearer = \"s3cret\"\ntimeout = \"1s\"\ncache_ttl = \"60s\"\n"
    );
    let db = support::pg::TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO customers (id, name, account_number) VALUES ('acme', 'Acme', 'ACME-001');
             INSERT INTO customer_numbers (customer_id, raw) VALUES ('acme', '(415) 555-0100');",
        )
        .await
        .expect("seed");
    let daemon = pg_daemon(&db.url, &sources).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-t").await;
    // Five calls at once from the same customer: one request to the API.
    for n in 0..5 {
        daemon
            .calls
            .apply(ringing(&format!("burst-{n}"), "1001", "+14155550100"));
    }
    let mut completes = 0;
    let mut sections = Vec::new();
    while completes < 5 {
        let (v, _) = ws::next_raw(&mut alice, ws::WAIT).await.expect("message");
        match v["type"].as_str() {
            Some("section") => sections.push(v),
            Some("complete") => completes += 1,
            _ => {}
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "concurrent calls share one fetch"
    );
    assert!(
        sections
            .iter()
            .all(|s| s["status"] == "ok" && s["data"] == json!({"tier": "gold", "points": 12_400}))
    );
    // A later call within the TTL: from the cache, with its age, no request.
    daemon.calls.apply(ringing("later", "1001", "+14155550100"));
    let (_, got, _, _) = pop(&mut alice).await;
    let loyalty = by_name(&got, "loyalty");
    assert!(
        loyalty["age"].as_f64().is_some_and(|a| a >= 0.0),
        "{loyalty}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(daemon.stop().await);
    db.drop_now().await;
}

#[tokio::test]
async fn a_burst_beyond_the_composition_cap_gets_skipped_sections_and_its_pops_at_once() {
    let (api, hits) = loyalty_api().await;
    let db = support::pg::TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO customers (id, name, account_number) VALUES ('acme', 'Acme', 'ACME-001');
             INSERT INTO customer_numbers (customer_id, raw) VALUES ('acme', '(415) 555-0100');",
        )
        .await
        .expect("seed");
    let sources = format!(
        "[[sources]]\nname = \"loyalty\"\ntype = \"http\"\nurl = \"http://{api}/v1/members/{{account}}\"\nbearer = \"s3cret\"\ntimeout = \"1s\"\n"
    );
    let daemon = pg_daemon_with(&db.url, "max_in_flight = 1", &sources).await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-t").await;
    daemon
        .calls
        .apply(ringing("burst-a", "1001", "+14155550100"));
    daemon
        .calls
        .apply(ringing("burst-b", "1001", "+14155550100"));
    let mut statuses = Vec::new();
    let mut completes = 0;
    while completes < 2 {
        let (v, _) = ws::next_raw(&mut alice, ws::WAIT).await.expect("message");
        match v["type"].as_str() {
            Some("section") => statuses.push(v["status"].as_str().unwrap_or_default().to_owned()),
            Some("complete") => completes += 1,
            _ => {}
        }
    }
    statuses.sort();
    assert_eq!(statuses, ["ok", "skipped"], "one fetched, one over the cap");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(daemon.stop().await);
    db.drop_now().await;
}

#[tokio::test]
async fn ended_calls_forget_their_profiles() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (mut alice, _) = sign_in(http, "alice-demo-token").await;
    daemon.calls.apply(ringing("gone", "1001", "+14155550100"));
    until(&mut alice, "complete").await;
    daemon.calls.apply(CallEvent::Ended {
        key: "gone".into(),
        intake: Intake::SIP,
        extension: None,
        reason: EndReason::Cancelled,
    });
    expect(&mut alice, "ended").await;
    let (_again, snapshot) = sign_in(http, "alice-demo-token").await;
    assert_eq!(snapshot["calls"], json!([]));
    assert!(daemon.stop().await);
}
