//! Profile composition benchmark: SIP INVITEs at a fixed rate to a daemon whose three sources
//! are the separate demo PostgreSQL databases (`screenpop demo-db`'s accounting, sales and
//! credit) on loopback; an authenticated WebSocket client records, per call, the time from the
//! INVITE sent to the `ringing` frame and to the `complete` frame (all three sections in). A
//! cold pass (every call a different customer: nothing cached) is followed by a warm pass (the
//! same customers again: sections from the per-source cache).
//!
//! Run: `cargo run --release --example profile_bench -- [--calls 1000] [--rate 200] [--keep]`
//! Uses postgres://postgres@127.0.0.1:5432 (databases `screenpop_bench_profile*`, dropped at the
//! end unless `--keep`). The daemon runs in-process on 127.0.0.1:0; everything is loopback,
//! bounded by `--calls` and 120 s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use screenpop::config::TokenHash;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    calls: usize,
    rate: u64,
    keep: bool,
    reuse: bool,
}

fn args() -> Args {
    let mut a = Args {
        calls: 1000,
        rate: 200,
        keep: false,
        reuse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--calls" => a.calls = it.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            "--rate" => a.rate = it.next().and_then(|v| v.parse().ok()).expect("--rate N"),
            "--keep" => a.keep = true,
            // Reuse the databases a `--keep` run left (no load on the server before the run).
            "--reuse" => a.reuse = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn invite(local: SocketAddr, caller: &str, n: usize, pass: &str) -> Vec<u8> {
    format!(
        "INVITE sip:1001@screenpop.bench SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK{pass}{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{caller}@pbx.bench>;tag=t{n}\r\nTo: <sip:1001@pbx.bench>\r\n\
         Call-ID: bench-{pass}-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<28} n={:<6} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let server = "postgres://postgres@127.0.0.1:5432";
    let prefix = "screenpop_bench_profile";
    let dbs = if a.reuse {
        let url = |suffix: &str| format!("{server}/{prefix}{suffix}");
        screenpop::demo::db::DemoDatabases {
            index: url(""),
            accounting: url("_accounting"),
            sales: url("_sales"),
            credit: url("_credit"),
            customers: 1202,
        }
    } else {
        println!("creating the demo databases…");
        screenpop::demo::db::create(server, prefix, 1202).await?
    };
    // Callers: one E.164 number per customer, unique.
    let n = screenpop::resolve::Normaliser::new(phonenumber::country::Id::US);
    let mut seen = HashMap::new();
    let mut reader = csv::Reader::from_reader(screenpop::demo::CUSTOMERS_CSV.as_bytes());
    for row in reader.records().flatten() {
        let numbers = row.get(6).unwrap_or_default();
        if let Some(raw) = numbers
            .split('|')
            .next()
            .and_then(|e| e.split_once(':'))
            .map(|(_, r)| r)
            && let screenpop::resolve::Key::E164(e164) = n.key(raw)
        {
            *seen.entry(e164).or_insert(0) += 1;
        }
    }
    let mut callers: Vec<String> = seen
        .into_iter()
        .filter(|(_, count)| *count == 1)
        .map(|(e164, _)| e164)
        .collect();
    callers.sort();
    let calls = a.calls.min(callers.len());
    use screenpop::demo::db::*;
    let sources = [
        source_toml(
            "balance",
            "Balance",
            &dbs.accounting,
            BALANCE_SQL,
            "one",
            "[]",
        ),
        source_toml(
            "purchases",
            "Recent purchases",
            &dbs.sales,
            PURCHASES_SQL,
            "many",
            "[]",
        ),
        source_toml(
            "credit",
            "Credit terms",
            &dbs.credit,
            CREDIT_SQL,
            "one",
            "[]",
        ),
    ]
    .join("\n")
    .replace(
        "timeout = \"800ms\"",
        "timeout = \"800ms\"\ncache_ttl = \"10m\"",
    );
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ndatabase_url = \"{}\"\n[call_log]\ndatabase_url = \"{}\"\n[push]\nqueue = 8192\n\
         [[agents]]\nid = \"bench\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n{sources}",
        dbs.index,
        dbs.index,
        TokenHash::of("bench").hex()
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("bench.toml"))?;
    let daemon =
        screenpop::daemon::Daemon::start(screenpop::daemon::settings_from(&config).await?).await?;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
    ws.send(Message::text(
        json!({"type":"auth","token":"bench"}).to_string(),
    ))
    .await?;
    for _ in 0..2 {
        ws.next().await; // ready, snapshot
    }
    // A daemon is up before calls come: give the sources' connection warm-up its moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    println!(
        "{calls} calls per pass at {} calls/s, three PostgreSQL sources (separate databases)",
        a.rate
    );
    for pass in ["cold", "warm"] {
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut ringing = Histogram::<u64>::new(3)?;
        let mut complete = Histogram::<u64>::new(3)?;
        let mut call_numbers: HashMap<String, String> = HashMap::new();
        let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
        let started = Instant::now();
        let mut next_send = Instant::now();
        let mut i = 0;
        let mut done = 0;
        let limit = Duration::from_secs(120);
        while done < calls && started.elapsed() < limit {
            if i < calls && Instant::now() >= next_send {
                let caller = &callers[i];
                sent.insert(caller.clone(), Instant::now());
                socket.send_to(&invite(local, caller, i, pass), sip).await?;
                i += 1;
                next_send += interval;
                continue;
            }
            let wait = next_send
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            let frame =
                match tokio::time::timeout(wait.max(Duration::from_micros(100)), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(_))) => continue,
                    Ok(_) => anyhow::bail!("websocket closed"),
                    Err(_) => continue,
                };
            let now = Instant::now();
            let v: Value = serde_json::from_str(&frame)?;
            let call_id = v["call_id"].as_str().unwrap_or_default().to_owned();
            match v["type"].as_str() {
                Some("ringing") => {
                    let number = v["caller"]["number"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(t) = sent.get(&number) {
                        ringing.record((now - *t).as_micros() as u64)?;
                    }
                    call_numbers.insert(call_id, number);
                }
                Some("complete") => {
                    if let Some(t) = call_numbers.get(&call_id).and_then(|n| sent.get(n)) {
                        complete.record((now - *t).as_micros() as u64)?;
                        if v["missing"].as_array().is_some_and(|m| !m.is_empty()) {
                            println!("  call {call_id}: missing {}", v["missing"]);
                        }
                    }
                    done += 1;
                }
                _ => {}
            }
        }
        println!("{pass} cache:");
        report("  INVITE → ringing", &ringing);
        report("  INVITE → complete (3 sections)", &complete);
        // Let the calls' ring timers and the call log settle between passes.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.stop().await;
    if !a.keep {
        let admin = screenpop::db::connect(&format!("{server}/postgres")).await?;
        for suffix in ["", "_accounting", "_sales", "_credit"] {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {prefix}{suffix} WITH (FORCE)"
                ))
                .await?;
        }
    }
    Ok(())
}
