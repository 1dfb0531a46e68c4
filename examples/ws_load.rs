//! Push benchmark: N authenticated agents hold idle WebSockets on one daemon; measures the
//! daemon's RSS per connection, then rings calls at a fixed rate (each to a different agent's
//! extension, over SIP/UDP) and measures INVITE sent → `ringing` received at the agent, plus
//! the daemon's own fan-out histogram (`screenpop_push_fanout_seconds`).
//!
//! Run with (the daemon binary must be built; raise the open-files limit first):
//!   cargo build --release && ulimit -n 200000 &&
//!   cargo run --release --example ws_load -- --agents 10000 --calls 2000 --rate 200
//!
//! It writes a config with N agents to a temporary directory, starts `screenpop run` on
//! 127.0.0.1 port 0 as a child process, and ends it (by its PID) when done. Loopback only;
//! bounded by --agents, --calls and a 10-minute deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

struct Args {
    agents: usize,
    calls: usize,
    rate: u64,
}

fn args() -> Args {
    let mut a = Args {
        agents: 10_000,
        calls: 2_000,
        rate: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--agents" => a.agents = value as usize,
            "--calls" => a.calls = value as usize,
            "--rate" => a.rate = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn extension(i: usize) -> String {
    format!("{}", 200_000 + i)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let deadline = Instant::now() + Duration::from_secs(600);
    let dir = std::env::temp_dir().join(format!("screenpop-ws-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let customers = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/customers.csv");
    let mut config = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [push]\nmax_connections = {}\n[calls]\nmax_calls = 100000\n[directory]\ncsv = \"{customers}\"\n",
        a.agents + 100
    );
    for i in 0..a.agents {
        let hash = screenpop::config::TokenHash::of(&format!("load-token-{i}")).hex();
        config.push_str(&format!(
            "[[agents]]\nid = \"a{i}\"\nextensions = [\"{}\"]\ntoken_sha256 = \"{hash}\"\n",
            extension(i)
        ));
    }
    let config_path = dir.join("ws-load.toml");
    std::fs::write(&config_path, config)?;

    let exe = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("screenpop"))
        .expect("target dir");
    let mut daemon = Command::new(&exe)
        .args(["run", "--config"])
        .arg(&config_path)
        .env("SCREENPOP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "starting {} (build it with `cargo build --release`): {e}",
                exe.display()
            )
        })?;
    let pid = daemon.id();
    let stdout = daemon.stdout.take().expect("stdout");
    let (mut sip, mut http) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.trim().strip_prefix("SIP  udp ") {
            sip = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<SocketAddr>().ok());
        }
        if let Some(rest) = line.trim().strip_prefix("HTTP ") {
            http = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<SocketAddr>().ok());
            break;
        }
    }
    let (sip, http) = (sip.expect("SIP address"), http.expect("HTTP address"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = rss_kib(pid);

    // Connect and authenticate every agent, 256 at a time.
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let client_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let started = Instant::now();
    let mut readers = Vec::with_capacity(a.agents);
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut connecting = Vec::new();
    for i in 0..a.agents {
        let permit = sem.clone().acquire_owned().await?;
        connecting.push(tokio::spawn(async move {
            let url = format!("ws://{http}/ws");
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(client_config), false)
                    .await?;
            ws.send(Message::text(format!(
                "{{\"type\":\"auth\",\"token\":\"load-token-{i}\"}}"
            )))
            .await?;
            for _ in 0..2 {
                ws.next()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("closed during sign-in"))??;
            }
            drop(permit);
            anyhow::Ok((i, ws))
        }));
    }
    for c in connecting {
        let (i, ws) = c.await??;
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        let ext = extension(i);
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg
                    && t.contains("\"type\":\"ringing\"")
                    && let Some(at) = sent_at.lock().expect("lock").get(&ext).copied()
                {
                    latencies
                        .lock()
                        .expect("lock")
                        .push(at.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);
    let per_conn = (idle_rss.saturating_sub(base_rss)) as f64 * 1024.0 / a.agents as f64;
    println!(
        "{} agents connected and authenticated in {connect_secs:.1} s; daemon RSS {base_rss} KiB → {idle_rss} KiB: {:.1} KiB per idle connection",
        a.agents,
        per_conn / 1024.0
    );

    // Ring calls at the fixed rate, each to another agent.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let interval = Duration::from_nanos(1_000_000_000 / a.rate.max(1));
    let mut tick = tokio::time::interval(interval);
    for n in 0..a.calls {
        if Instant::now() > deadline {
            break;
        }
        tick.tick().await;
        let ext = extension(n % a.agents);
        let invite = format!(
            "INVITE sip:{ext}@screenpop.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKws{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:+14155550100@pbx.test>;tag=w{n}\r\nTo: <sip:{ext}@pbx.test>\r\nCall-ID: ws-load-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        sent_at.lock().expect("lock").insert(ext, Instant::now());
        socket.send_to(invite.as_bytes(), sip).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} calls at {}/s: {} pops received; INVITE sent → ringing received p50 {} µs, p99 {} µs, max {} µs",
        a.calls,
        a.rate,
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    let metrics = reqwest_metrics(http).await.unwrap_or_default();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("screenpop_push_fanout_seconds"))
    {
        println!("  daemon {line}");
    }
    println!("daemon RSS after the calls: {} KiB", rss_kib(pid));

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = daemon.wait();
    for r in readers {
        r.abort();
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

async fn reqwest_metrics(http: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
