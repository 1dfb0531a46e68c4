//! Customer-index benchmark against the local PostgreSQL: imports N customers with two numbers
//! each (`screenpop import`'s code), then measures the index's start-up load and memory, lookup
//! latency, and how long an edit in PostgreSQL takes to reach lookups (LISTEN/NOTIFY).
//!
//! Run with: `cargo run --release --example index_bench -- [--customers 1000000]`
//! Uses a fresh database on postgres://postgres@127.0.0.1:5432 (dropped at the end).

use std::time::{Duration, Instant};

use screenpop::resolve::postgres::PgDirectory;
use screenpop::resolve::{Normaliser, Resolution, Resolver};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The i-th customer's two numbers: distinct, valid US numbers in mixed formats.
fn numbers(i: u64) -> (String, String) {
    const AREAS: [u32; 20] = [
        201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224,
        225, 228,
    ];
    let a = AREAS[(i % 20) as usize];
    let exchange = 200 + (i / 20 % 700) as u32;
    let line = (i / 14_000 % 10_000) as u32;
    (
        format!("({a}) {exchange}-{line:04}"),
        format!(
            "+1 {} {exchange} {line:04}",
            AREAS[((i + 7) % 20) as usize] + 100
        ),
    )
}

/// Imports N customers through `screenpop import`'s code.
async fn import(
    client: &mut tokio_postgres::Client,
    n: u64,
    normaliser: Normaliser,
) -> anyhow::Result<()> {
    client
        .batch_execute("TRUNCATE customers, customer_numbers")
        .await?;
    let mut csv = String::from("id,name,company,account,crm_url,tags,numbers\n");
    for i in 0..n {
        let (a, b) = numbers(i);
        csv.push_str(&format!(
            "c{i},Customer {i},Company {},A{i},,,main:{a}|mobile:{b}\n",
            i % 5000
        ));
    }
    let started = Instant::now();
    let summary = screenpop::resolve::import::import(
        client,
        csv.as_bytes(),
        screenpop::resolve::import::Format::Csv,
        "bench.csv",
        normaliser,
        &|_| {},
    )
    .await?;
    println!(
        "import: {} customers, {} numbers ({} not E.164), {} rejected, in {:.1} s",
        summary.customers,
        summary.numbers,
        summary.numbers_not_e164,
        summary.rejected.len(),
        started.elapsed().as_secs_f64()
    );

    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut n: u64 = 1_000_000;
    let mut keep: Option<String> = None;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--customers" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--customers N");
            }
            // Keep the database under this name, and reuse it if it already holds N customers.
            "--keep" => keep = Some(args.next().expect("--keep NAME")),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let server = "postgres://postgres@127.0.0.1:5432";
    let name = keep
        .clone()
        .unwrap_or_else(|| format!("screenpop_bench_{}", std::process::id()));
    let admin = screenpop::db::connect(&format!("{server}/postgres")).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
    }
    let url = format!("{server}/{name}");
    let mut client = screenpop::db::connect(&url).await?;
    screenpop::db::migrate(&mut client).await?;
    let normaliser = Normaliser::new(phonenumber::country::Id::US);
    let have: i64 = client
        .query_one("SELECT count(*) FROM customers", &[])
        .await?
        .get(0);
    if have as u64 != n {
        import(&mut client, n, normaliser).await?;
    } else {
        println!("reusing {name}: {n} customers already there");
    }

    let before = rss_kib();
    let started = Instant::now();
    let index = PgDirectory::load(&url, normaliser, 2).await?;
    let load = started.elapsed();
    let after = rss_kib();
    println!(
        "start-up load: {} customers in {:.2} s; index RSS +{} MiB",
        index.customers(),
        load.as_secs_f64(),
        (after.saturating_sub(before)) / 1024
    );

    // Lookups: half hits in the two formats, half misses, timed one by one.
    let mut lat = Vec::with_capacity(1_000_000);
    let mut hits = 0u64;
    for k in 0..1_000_000u64 {
        let i = k * 7919 % n;
        let (a, b) = numbers(i);
        let query = match k % 4 {
            0 => a,
            1 => b,
            2 => format!("+1 999 555 {:04}", k % 10_000),
            _ => format!("tel:+1-{}", &a.replace(['(', ')', ' '], "")),
        };
        let t = Instant::now();
        let r = index.resolve(&query);
        lat.push(t.elapsed().as_nanos() as u64);
        if !matches!(r, Resolution::Unknown) {
            hits += 1;
        }
    }
    lat.sort_unstable();
    println!(
        "lookup (normalise + probe), 1,000,000 lookups ({hits} hits): p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs",
        pct(&lat, 0.5) as f64 / 1000.0,
        pct(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );

    // Edits: rename a customer, poll until the index shows it.
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(index.clone().run(cancel.clone()));
    let mut edits = Vec::new();
    for e in 0..200u64 {
        let i = e * 4999 % n;
        let new_name = format!("Renamed {e}");
        let (a, _) = numbers(i);
        let t = Instant::now();
        client
            .execute(
                "UPDATE customers SET name = $1 WHERE id = $2",
                &[&new_name, &format!("c{i}")],
            )
            .await?;
        loop {
            let seen = match index.resolve(&a) {
                Resolution::Customer { customer } => customer.name() == new_name,
                Resolution::Candidates { candidates } => {
                    candidates.iter().any(|c| c.customer.name() == new_name)
                }
                _ => false,
            };
            if seen {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(5),
                "edit {e} not visible after 5 s"
            );
            tokio::task::yield_now().await;
        }
        edits.push(t.elapsed().as_micros() as u64);
    }
    edits.sort_unstable();
    println!(
        "edit in PostgreSQL → visible to lookups, 200 edits: p50 {:.2} ms, p99 {:.2} ms",
        pct(&edits, 0.5) as f64 / 1000.0,
        pct(&edits, 0.99) as f64 / 1000.0
    );
    cancel.cancel();
    drop(client);
    if keep.is_none() {
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await?;
    }
    Ok(())
}
