//! Loads the customer index from a database once and reports time and RSS (profiling aid for
//! `index_bench`). Run: `cargo run --release --example index_load -- postgres://…/db`
use std::time::Instant;
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
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::args().nth(1).expect("URL");
    let n = screenpop::resolve::Normaliser::new(phonenumber::country::Id::US);
    let before = rss_kib();
    let t = Instant::now();
    let d = screenpop::resolve::postgres::PgDirectory::load(&url, n, 2).await?;
    println!(
        "{} customers in {:.2} s, +{} MiB",
        d.customers(),
        t.elapsed().as_secs_f64(),
        (rss_kib() - before) / 1024
    );
    Ok(())
}
