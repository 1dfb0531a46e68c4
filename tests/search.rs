//! `GET /api/customers`: the agents' customer search against the real daemon, with a CSV
//! directory and with a PostgreSQL one kept in sync (an edit and a bulk reload show up).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use screenpop::resolve::{Directory, Index, Normaliser};
use serde_json::Value;
use support::pg::TestDb;

const TOKEN: &str = "alice-demo-token";

const CSV: &str = "id,name,company,account,crm_url,tags,numbers\n\
    m1,Anna Müller,Globex,AC-100,,vip,main:(415) 555-0102|mobile:+1 212 555 0111\n\
    m2,Bob Mull,Muller Logistics,AC-101,,,work:+44 20 7946 0018\n\
    m3,Carla Smullen,Initech,MUL-7,,,main:+1 312 555 0177\n\
    m4,Dan Roe,Acme Müllerei,AC-102,,,main:(415) 555-0199|main:611\n\
    m5,Aaron Muller,,,,,\n\
    m6,Zoë Ångström,Hooli,AC-103,,,mobile:+1 646 555 0123\n";

fn us() -> Normaliser {
    Normaliser::new(phonenumber::country::Id::US)
}

async fn search(http: SocketAddr, query: &str) -> (u16, Value) {
    let (status, body) =
        support::http_get(http, &format!("/api/customers?{query}"), Some(TOKEN)).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// The ids found for `q`, best first.
async fn ids(http: SocketAddr, q: &str) -> Vec<String> {
    let (status, json) = search(http, &format!("q={}", encode(q))).await;
    assert_eq!(status, 200, "{q}: {json}");
    json["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

fn encode(q: &str) -> String {
    percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn searches_rank_fold_accents_and_match_any_part_of_a_number() {
    let daemon = support::start_with(|s| {
        let directory = Directory::from_csv(CSV.as_bytes(), "search.csv", us(), 2).expect("csv");
        s.resolver = Arc::new(Index::new(directory));
    })
    .await;
    let http = daemon.bound.http.expect("http");

    // Exact name (by name), exact company, prefix company; accents folded both ways.
    assert_eq!(ids(http, "muller").await, ["m5", "m1", "m2", "m4"]);
    assert_eq!(ids(http, "MÜLLER").await, ["m5", "m1", "m2", "m4"]);
    // Exact account (`MUL-7`), prefix names by name, prefix company.
    assert_eq!(ids(http, "mul").await, ["m3", "m5", "m1", "m2", "m4"]);
    assert_eq!(ids(http, "zoe angstrom").await, ["m6"]);
    assert_eq!(ids(http, "ÅNG").await, ["m6"]);
    assert_eq!(ids(http, "anna globex").await, ["m1"]);
    assert_eq!(ids(http, "ac-10").await, ["m1", "m2", "m4", "m6"]);

    // The response carries what the pop shows of a customer, its numbers and why it matched.
    let (_, json) = search(http, "q=anna").await;
    let anna = &json["customers"][0];
    assert_eq!(anna["name"], "Anna Müller");
    assert_eq!(anna["company"], "Globex");
    assert_eq!(anna["account"], "AC-100");
    assert_eq!(anna["tags"], serde_json::json!(["vip"]));
    assert_eq!(
        anna["numbers"],
        serde_json::json!([{"number": "+14155550102", "kind": "main"},
                           {"number": "+12125550111", "kind": "mobile"}])
    );
    assert_eq!(
        anna["e164"],
        serde_json::json!(["+14155550102", "+12125550111"])
    );
    assert_eq!(
        anna["matched"],
        serde_json::json!({"field": "name", "kind": "exact"})
    );

    // Any part of a number, in any format; digits only are compared.
    for q in ["415 555", "(415) 555-01", "+1 415-555", "415.555"] {
        assert_eq!(ids(http, q).await, ["m1", "m4"], "{q}");
    }
    assert_eq!(ids(http, "5550102").await, ["m1"]);
    assert_eq!(ids(http, "555-0102").await, ["m1"]);
    assert_eq!(ids(http, "020 7946 0018").await, ["m2"], "trunk zero");
    assert_eq!(ids(http, "0044 20 7946").await, ["m2"], "00 prefix");
    assert_eq!(ids(http, "611").await, ["m4"]);
    let (_, json) = search(http, "q=4155550102").await;
    assert_eq!(
        json["customers"][0]["matched"],
        serde_json::json!({"field": "number", "kind": "exact"})
    );
    assert!(ids(http, "555 9999").await.is_empty());

    // The limit: default 10, clamped to 1..=20.
    let (_, json) = search(http, "q=mul&limit=2").await;
    assert_eq!(json["customers"].as_array().expect("array").len(), 2);
    let (_, json) = search(http, "q=mul&limit=0").await;
    assert_eq!(json["customers"].as_array().expect("array").len(), 1);
    let (status, _) = search(http, "q=mul&limit=500").await;
    assert_eq!(status, 200);

    // Bad queries: 400 with a JSON error, counted.
    for bad in [
        "",
        "q=",
        "q=%20a%20",
        &format!("q={}", "x".repeat(65)),
        "q=mul&limit=many",
    ] {
        let (status, json) = search(http, bad).await;
        assert_eq!(status, 400, "{bad}: {json}");
        assert!(json["error"].is_string(), "{bad}: {json}");
    }
    let (status, _) = search(http, &format!("q={}", "x".repeat(64))).await;
    assert_eq!(status, 200, "64 characters are fine");

    // No token, or a wrong one: 401.
    let (status, _) = support::http_get(http, "/api/customers?q=muller", None).await;
    assert_eq!(status, 401);
    let (status, _) = support::http_get(http, "/api/customers?q=muller", Some("nope")).await;
    assert_eq!(status, 401);

    let searches = |result: &'static str| async move {
        support::metric(
            http,
            "screenpop_customer_searches_total",
            &format!("result=\"{result}\""),
        )
        .await
    };
    assert!(searches("hit").await >= 20.0);
    assert_eq!(searches("bad").await, 5.0);
    assert!(searches("empty").await >= 1.0);
}

/// Waits until `q` finds `want` (the directory sync is asynchronous).
async fn eventually(http: SocketAddr, q: &str, want: &[&str]) {
    let started = Instant::now();
    loop {
        let got = ids(http, q).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{q}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn search_follows_the_postgres_directory() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO customers (id, name, company, account_number) VALUES
                 ('p1', 'Paula Fernández', 'Globex', 'G-1'),
                 ('p2', 'Piet Janssen', 'Initech', 'I-2');
             INSERT INTO customer_numbers (customer_id, raw, kind) VALUES
                 ('p1', '(415) 555-0142', 'main'), ('p2', '+1 212 555 0177', 'mobile');",
        )
        .await
        .expect("seed");
    let directory = screenpop::resolve::postgres::PgDirectory::load(&db.url, us(), 2)
        .await
        .expect("directory");
    let daemon = support::start_with(|s| {
        s.resolver = directory.clone();
        s.directory_sync = Some(directory.clone());
    })
    .await;
    let http = daemon.bound.http.expect("http");
    assert_eq!(ids(http, "fernandez").await, ["p1"]);
    assert_eq!(ids(http, "555 0177").await, ["p2"]);

    // One customer edited (a per-customer notification): the overlay.
    client
        .batch_execute(
            "UPDATE customers SET name = 'Paula Fernández-Núñez' WHERE id = 'p1';
             INSERT INTO customer_numbers (customer_id, raw, kind) VALUES ('p2', '(646) 555-0199', 'work');",
        )
        .await
        .expect("edit");
    eventually(http, "nunez", &["p1"]).await;
    eventually(http, "646 555", &["p2"]).await;
    assert_eq!(ids(http, "fernandez").await, ["p1"]);

    // A bulk load (one '*'): the whole directory and its search index are swapped.
    client
        .batch_execute(
            "BEGIN; SET LOCAL screenpop.bulk = 'on';
             DELETE FROM customers WHERE id = 'p2';
             INSERT INTO customers (id, name, company) VALUES ('p3', 'Quentin Ørsted', 'Vestas');
             INSERT INTO customer_numbers (customer_id, raw, kind) VALUES ('p3', '+1 303 555 0100', 'main');
             NOTIFY screenpop_customers, '*'; COMMIT;",
        )
        .await
        .expect("bulk");
    eventually(http, "orsted", &["p3"]).await;
    assert!(ids(http, "janssen").await.is_empty());
    assert!(ids(http, "646 555").await.is_empty());
    assert_eq!(ids(http, "303 555 0100").await, ["p3"]);
    assert_eq!(ids(http, "nunez").await, ["p1"]);
    drop(daemon);
    drop(client);
    db.drop_now().await;
}
