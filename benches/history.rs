//! The `history` section from PostgreSQL: 1,000,000 `call_log` rows over 100,000 customers
//! (90 days, notes on a fifth of them), migrations applied (the index on customer and start
//! time), then the section fetched once for each of 5,000 customers never asked before, as a
//! pop does: the newest 5 calls and the 24-hour and 7-day counts, in one round trip each.
//! Percentiles of the whole `fetch` (pool, two pipelined statements, JSON), then the same with
//! the journal alone (no database) for comparison.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), like the tests; makes its own
//! database and drops it. Run with: `cargo bench --bench history` (figures in
//! docs/performance.md).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use screenpop::calls::history::{History, HistoryConfig, Store};
use screenpop::resolve::{Customer, CustomerFields};
use screenpop::sources::{Source, Who};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const ROWS: i64 = 1_000_000;
const CUSTOMERS: i64 = 100_000;
const ASKED: usize = 5_000;

fn who(id: &str) -> Who {
    Who {
        customer: Customer::new(CustomerFields {
            id,
            name: "Customer",
            ..Default::default()
        }),
        numbers: vec!["+14155550100".into()],
        call_id: Some("the-call-ringing-now".into()),
    }
}

fn report(what: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what:<44} n={:<6} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>7.3} ms",
        h.len(),
        us(0.50) / 1.0,
        us(0.90),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0,
    );
}

async fn measure(history: &History, ids: &[String]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for id in ids {
        let who = who(id);
        let started = Instant::now();
        let section = history.fetch(&who).await.expect("history");
        let took = started.elapsed();
        assert!(
            section.get("partial").is_none(),
            "the database answered: {section}"
        );
        h.record(took.as_micros().max(1) as u64).expect("record");
    }
    h
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let name = format!("screenpop_bench_history_{:08x}", rand::random::<u32>());
    let admin = screenpop::db::connect(&format!("{SERVER}/postgres"))
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let url = format!("{SERVER}/{name}");
    let mut client = screenpop::db::connect(&url).await.expect("connect");
    screenpop::db::migrate(&mut client).await.expect("migrate");
    let loading = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO call_log (call_id, caller_number, customer_id, ringing_extensions,
                 answered_by, answered_extension, started_at, answered_at, ended_at, outcome,
                 notes, disposition, noted_by, noted_at)
             SELECT 'c' || i, '+1415555' || lpad((i % 10000)::text, 4, '0'),
                 'cust-' || ((i * 7919) % {CUSTOMERS}), ARRAY['1001', '1002'],
                 CASE WHEN i % 3 <> 0 THEN 'alice' END, CASE WHEN i % 3 <> 0 THEN '1001' END,
                 t, CASE WHEN i % 3 <> 0 THEN t + interval '8 seconds' END,
                 t + interval '3 minutes',
                 CASE WHEN i % 3 <> 0 THEN 'completed' ELSE 'cancelled' END,
                 CASE WHEN i % 5 = 0 THEN 'Asked about invoice ' || i END,
                 CASE WHEN i % 5 = 0 THEN 'Resolved' END,
                 CASE WHEN i % 5 = 0 THEN 'alice' END,
                 CASE WHEN i % 5 = 0 THEN t + interval '4 minutes' END
             FROM (SELECT i, now() - (random() * interval '90 days') AS t
                   FROM generate_series(1::bigint, {ROWS}) AS i) AS s;
             ANALYZE call_log;"
        ))
        .await
        .expect("load call_log");
    println!(
        "call_log: {ROWS} rows over {CUSTOMERS} customers loaded in {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    let config = HistoryConfig {
        database_timeout: Duration::from_secs(5),
        ..HistoryConfig::default()
    };
    let store = Store::new(Some(&url)).expect("store");
    let history = History::new(store, &config, "tel:{number}");
    // The pool's first connection and the prepared statements: paid once per daemon.
    history.fetch(&who("cust-0")).await.expect("warm");

    // Customers never asked before, spread over the key space.
    let ids: Vec<String> = (0..ASKED)
        .map(|i| format!("cust-{}", (i as i64 * 19 + 1) % CUSTOMERS))
        .collect();
    let h = measure(&history, &ids).await;
    report("PostgreSQL, 1M rows, each customer once", &h);
    let again = measure(&history, &ids[..1000]).await;
    report("PostgreSQL, the same customers again", &again);

    let alone = History::new(Store::new(None).expect("store"), &config, "tel:{number}");
    let journal = measure(&alone, &ids[..1000]).await;
    report("no database (journal only, empty)", &journal);

    drop(client);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}
