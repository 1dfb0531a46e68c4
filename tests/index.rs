//! The customer index in PostgreSQL mirrored in memory (`resolve::postgres`): real server, a
//! fresh database per test.

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::TestDb;
use screenpop::resolve::postgres::PgDirectory;
use screenpop::resolve::{Normaliser, Resolution, Resolver};
use tokio_util::sync::CancellationToken;

fn name_of(r: &Resolution) -> Option<String> {
    match r {
        Resolution::Customer { customer } => Some(customer.name().to_owned()),
        _ => None,
    }
}

/// Polls until `want` holds, for at most one second; returns how long it took.
async fn within_a_second(
    dir: &PgDirectory,
    number: &str,
    want: impl Fn(&Resolution) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = dir.resolve(number);
        if want(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not visible within 1 s: {number} -> {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn live(db: &TestDb) -> (Arc<PgDirectory>, CancellationToken) {
    let dir = PgDirectory::load(&db.url, Normaliser::new(phonenumber::country::Id::US), 2)
        .await
        .expect("load");
    let cancel = CancellationToken::new();
    tokio::spawn(dir.clone().run(cancel.clone()));
    // `load` returns with LISTEN already active: nothing to wait for.
    (dir, cancel)
}

#[tokio::test]
async fn numbers_stored_in_ten_formats_resolve_from_e164_and_back() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let formats = [
        "(415) 555-0101",
        "415.555.0102",
        "415-555-0103",
        "1-415-555-0104",
        "+1 415 555 0105",
        "+14155550106",
        "011 1 415 555 0107",
        "00 1 415 555 0108",
        "tel:+1-415-555-0109",
        "415 555 0110 x22",
    ];
    for (i, raw) in formats.iter().enumerate() {
        let id = format!("f{i}");
        client
            .execute("INSERT INTO customers (id, name) VALUES ($1, $1)", &[&id])
            .await
            .expect("customer");
        client
            .execute(
                "INSERT INTO customer_numbers (customer_id, raw) VALUES ($1, $2)",
                &[&id, raw],
            )
            .await
            .expect("number");
    }
    let (dir, cancel) = live(&db).await;
    for (i, stored) in formats.iter().enumerate() {
        let e164 = format!("+1415555{:04}", 101 + i);
        assert_eq!(
            name_of(&dir.resolve(&e164)),
            Some(format!("f{i}")),
            "{stored} from {e164}"
        );
        let national = format!("(415) 555-{:04}", 101 + i);
        assert_eq!(
            name_of(&dir.resolve(&national)),
            Some(format!("f{i}")),
            "{stored} from {national}"
        );
    }
    cancel.cancel();
    db.drop_now().await;
}

#[tokio::test]
async fn inserts_moves_and_deletes_are_seen_within_a_second() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO customers (id, name, company) VALUES ('acme', 'Acme Corporation', 'Acme')",
        )
        .await
        .expect("seed");
    client.batch_execute("INSERT INTO customer_numbers (customer_id, raw, kind) VALUES ('acme', '(415) 555-0100', 'main')").await.expect("seed");
    let (dir, cancel) = live(&db).await;
    assert_eq!(
        name_of(&dir.resolve("+14155550100")).as_deref(),
        Some("Acme Corporation")
    );

    client
        .batch_execute("INSERT INTO customers (id, name) VALUES ('globex', 'Globex')")
        .await
        .expect("insert");
    client
        .batch_execute(
            "INSERT INTO customer_numbers (customer_id, raw) VALUES ('globex', '312 555 0142')",
        )
        .await
        .expect("insert");
    let took = within_a_second(&dir, "+13125550142", |r| {
        name_of(r).as_deref() == Some("Globex")
    })
    .await;
    eprintln!("insert visible after {took:?}");

    client
        .batch_execute(
            "UPDATE customer_numbers SET customer_id = 'globex' WHERE raw = '(415) 555-0100'",
        )
        .await
        .expect("move");
    within_a_second(&dir, "+14155550100", |r| {
        name_of(r).as_deref() == Some("Globex")
    })
    .await;

    client
        .batch_execute("UPDATE customers SET name = 'Globex Inc.' WHERE id = 'globex'")
        .await
        .expect("rename");
    within_a_second(&dir, "+13125550142", |r| {
        name_of(r).as_deref() == Some("Globex Inc.")
    })
    .await;
    // screenpop filled in e164 for the numbers it re-read (silently: no notification loop).
    let e164: Option<String> = client
        .query_one(
            "SELECT e164 FROM customer_numbers WHERE raw = '312 555 0142'",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert_eq!(e164.as_deref(), Some("+13125550142"));

    client
        .batch_execute("DELETE FROM customers WHERE id = 'globex'")
        .await
        .expect("delete");
    within_a_second(&dir, "+13125550142", |r| *r == Resolution::Unknown).await;
    within_a_second(&dir, "+14155550100", |r| *r == Resolution::Unknown).await;

    cancel.cancel();
    db.drop_now().await;
}

#[tokio::test]
async fn shared_numbers_give_candidates_and_one_company_collapses() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO customers (id, name, company) VALUES ('a', 'Ann', 'Alpha'), ('b', 'Bob', 'Beta'), ('c1', 'Cy', 'Gamma'), ('c2', 'Cat', 'Gamma');
             INSERT INTO customer_numbers (customer_id, raw) VALUES ('a', '+1 212 555 0100'), ('b', '212-555-0100'),
                                                                    ('c1', '+1 646 555 0100'), ('c2', '(646) 555-0100');",
        )
        .await
        .expect("seed");
    let (dir, cancel) = live(&db).await;
    match dir.resolve("+12125550100") {
        Resolution::Candidates { candidates } => {
            let mut names: Vec<_> = candidates.iter().map(|c| c.customer.name()).collect();
            names.sort();
            assert_eq!(names, ["Ann", "Bob"]);
            assert!(candidates.iter().all(|c| !c.reason.is_empty()));
        }
        other => panic!("expected candidates, got {other:?}"),
    }
    match dir.resolve("+16465550100") {
        Resolution::Customer { customer } => assert_eq!(customer.company(), Some("Gamma")),
        other => panic!("same company should collapse, got {other:?}"),
    }
    cancel.cancel();
    db.drop_now().await;
}

#[tokio::test]
async fn a_killed_listen_connection_reconnects_reloads_and_sees_what_changed_meanwhile() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let (dir, cancel) = live(&db).await;
    // Kill every other connection to this database: the LISTEN one among them.
    client
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .await
        .expect("terminate");
    // An edit while nobody listens: its notification is lost.
    client
        .batch_execute("INSERT INTO customers (id, name) VALUES ('late', 'Late Edit')")
        .await
        .expect("insert");
    client
        .batch_execute(
            "INSERT INTO customer_numbers (customer_id, raw) VALUES ('late', '702 555 0199')",
        )
        .await
        .expect("insert");
    // Reconnect (backoff 100 ms) and reload make it visible anyway.
    let started = Instant::now();
    while name_of(&dir.resolve("+17025550199")).as_deref() != Some("Late Edit") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not reloaded after the reconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And it listens again afterwards.
    client
        .batch_execute("UPDATE customers SET name = 'Later Edit' WHERE id = 'late'")
        .await
        .expect("update");
    within_a_second(&dir, "+17025550199", |r| {
        name_of(r).as_deref() == Some("Later Edit")
    })
    .await;
    cancel.cancel();
    db.drop_now().await;
}

#[tokio::test]
async fn the_daemon_pops_customers_from_postgres_and_sees_edits_without_a_restart() {
    use screenpop::calls::Change;
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO customers (id, name, company) VALUES ('acme', 'Acme Corporation', 'Acme');
             INSERT INTO customer_numbers (customer_id, raw) VALUES ('acme', '(415) 555-0100');",
        )
        .await
        .expect("seed");
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{}\"\n[[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n[call_log]\n{}",
        db.url,
        screenpop::config::TokenHash::of("t").hex(),
        db.spool_line()
    );
    let config =
        screenpop::config::Config::parse(&toml, std::path::Path::new("pg.toml")).expect("config");
    let settings = screenpop::daemon::settings_from(&config)
        .await
        .expect("settings");
    let daemon = screenpop::daemon::Daemon::start(settings)
        .await
        .expect("start");
    let mut updates = daemon.calls.subscribe();
    let sip = daemon.bound.sip_udp[0];
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let invite = |n: u32| {
        format!(
            "INVITE sip:1001@h SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKpg{n}\r\nFrom: <sip:+14155550100@pbx>;tag=t{n}\r\n\
             To: <sip:1001@h>\r\nCall-ID: pg-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            socket.local_addr().expect("addr")
        )
    };
    let ringing = |u: &screenpop::calls::CallUpdate| matches!(u.change, Change::Ringing { .. });
    async fn next_ringing(
        rx: &mut tokio::sync::broadcast::Receiver<screenpop::calls::CallUpdate>,
        want: impl Fn(&screenpop::calls::CallUpdate) -> bool,
    ) -> screenpop::calls::CallUpdate {
        loop {
            let u = tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .expect("update")
                .expect("open");
            if want(&u) {
                return u;
            }
        }
    }
    socket
        .send_to(invite(1).as_bytes(), sip)
        .await
        .expect("send");
    let first = next_ringing(&mut updates, ringing).await;
    assert_eq!(
        name_of(&first.call.resolution).as_deref(),
        Some("Acme Corporation")
    );

    client
        .batch_execute("UPDATE customers SET name = 'Acme Corp (renamed)' WHERE id = 'acme'")
        .await
        .expect("edit");
    // The next call sees the edit (the index catches up within milliseconds; allow a second).
    let started = Instant::now();
    let mut n = 2;
    loop {
        socket
            .send_to(invite(n).as_bytes(), sip)
            .await
            .expect("send");
        let u = next_ringing(&mut updates, ringing).await;
        if name_of(&u.call.resolution).as_deref() == Some("Acme Corp (renamed)") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "edit not visible within 1 s"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.stop().await);
    db.drop_now().await;
}

#[tokio::test]
async fn switchboard_blocks_rank_by_kind_and_stored_keys_never_go_stale() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO customers (id, name, company) VALUES
                 ('acme', 'Acme Corporation', 'Acme'), ('jo', 'Jo Doe', NULL), ('al', 'Al Roe', 'Roe Ltd');
             INSERT INTO customer_numbers (customer_id, raw, kind) VALUES
                 ('acme', '(415) 555-0100', 'main'),
                 ('jo', '212 555 0111', 'work'), ('al', '+1 212 555 0111', 'mobile'),
                 ('jo', '611', 'main');",
        )
        .await
        .expect("seed");
    let (dir, cancel) = live(&db).await;
    // An extension behind Acme's switchboard: approximate, with the reason.
    match dir.resolve("+14155550142") {
        Resolution::Approximate { customer, reason } => {
            assert_eq!(customer.id(), "acme");
            assert!(reason.contains("Acme"), "{reason}");
        }
        other => panic!("expected an approximate match, got {other:?}"),
    }
    assert_eq!(dir.resolve("+14155550242"), Resolution::Unknown);
    // A mobile is one person's: it ranks before a work line.
    match dir.resolve("+12125550111") {
        Resolution::Candidates { candidates } => {
            assert_eq!(candidates[0].customer.id(), "al");
            assert!(candidates[0].reason.contains("mobile"));
            assert!(candidates[1].reason.contains("work"));
        }
        other => panic!("expected candidates, got {other:?}"),
    }
    // The load stored the keys it computed: E.164 for valid numbers, digits for the short code.
    let keys: Vec<(String, Option<String>, Option<String>)> = client
        .query(
            "SELECT raw, e164, digits FROM customer_numbers ORDER BY id",
            &[],
        )
        .await
        .expect("q")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(keys[0].1.as_deref(), Some("+14155550100"));
    assert_eq!(
        (keys[3].1.as_deref(), keys[3].2.as_deref()),
        (None, Some("611"))
    );
    assert!(matches!(dir.resolve("611"), Resolution::Customer { .. }));
    // A CRM rewrites a raw number: the stored key is cleared by the schema at once, so neither
    // this index nor the next start-up can use the old one.
    client
        .batch_execute(
            "UPDATE customer_numbers SET raw = '(415) 555-0199' WHERE customer_id = 'acme'",
        )
        .await
        .expect("edit raw");
    within_a_second(
        &dir,
        "+14155550199",
        |r| matches!(r, Resolution::Customer { customer } if customer.id() == "acme"),
    )
    .await;
    within_a_second(&dir, "+14155550100", |r| {
        // Still in the same block: approximate now, no longer exact.
        matches!(r, Resolution::Approximate { .. })
    })
    .await;
    let restarted = PgDirectory::load(&db.url, Normaliser::new(phonenumber::country::Id::US), 2)
        .await
        .expect("reload");
    assert!(matches!(
        restarted.resolve("+14155550199"),
        Resolution::Customer { .. }
    ));
    assert!(matches!(
        restarted.resolve("+14155550100"),
        Resolution::Approximate { .. }
    ));
    cancel.cancel();
    db.drop_now().await;
}
