//! Several nodes (issue 15): a three-server NATS JetStream cluster and screenpop nodes as child
//! processes on loopback, ended by their PIDs. Measures, side by side in one run: INVITE →
//! `ringing` on one node alone (no cluster), on a cluster node for its own agents, across
//! nodes (INVITEs at node a, agents at node b), and at node a with every NATS server down;
//! then how long an agent moving to node b waits for its snapshot of the live calls, and how
//! long node b takes to see node a gone after a SIGKILL.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::loadgen::{self, ChildGuard, DaemonOptions, Outcome, Scenario, Target};

/// The NATS servers of a run.
pub struct Nats {
    servers: Vec<Option<ChildGuard>>,
    ports: Vec<(u16, u16, u16)>,
    dir: PathBuf,
    binary: PathBuf,
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The NATS server binary: `$SCREENPOP_NATS_SERVER` (what `.ci/run` exports), else
/// `nats-server` on PATH (2.10 or newer; Debian's 2.9 is too old).
fn nats_binary() -> PathBuf {
    std::env::var_os("SCREENPOP_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl Nats {
    /// Three clustered servers with JetStream, ready.
    pub async fn start(dir: PathBuf) -> anyhow::Result<Nats> {
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let mut nats = Nats {
            servers: (0..3).map(|_| None).collect(),
            ports,
            dir,
            binary: nats_binary(),
        };
        for i in 0..3 {
            nats.spawn(i)?;
        }
        nats.ready().await?;
        Ok(nats)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let (client, cluster, monitor) = self.ports[i];
        let routes: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.ports[j].1))
            .collect();
        let store = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&store)?;
        let child = Command::new(&self.binary)
            .args(["-n", &format!("n{i}"), "-a", "127.0.0.1", "-p"])
            .arg(client.to_string())
            .args(["-js", "-sd"])
            .arg(&store)
            .args(["-m", &monitor.to_string(), "--cluster_name", "bench"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
            .args(["--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.servers[i] = Some(ChildGuard(child));
        Ok(())
    }

    /// Waits (30 s at most) until every server's `/healthz` is ok (JetStream current).
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &(_, _, monitor) in &self.ports {
            loop {
                if http_get(SocketAddr::from(([127, 0, 0, 1], monitor)), "/healthz")
                    .await
                    .is_some_and(|b| b.contains("\"ok\""))
                {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "NATS not ready in 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i].0)
    }

    /// SIGKILL of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(guard) = self.servers[i].take() {
            guard.kill();
        }
    }

    /// Starts server `i` again (same ports and store) without waiting for it.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// SIGKILL of every server.
    pub fn kill_all(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A tiny HTTP/1.0 GET on loopback: the body, or `None`.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

async fn health(http: SocketAddr) -> Value {
    match http_get(http, "/healthz").await {
        Some(body) => serde_json::from_str(&body).unwrap_or_default(),
        None => Value::Null,
    }
}

/// Waits until `http`'s `/healthz` satisfies `want` (`limit` at most): the time it took.
async fn until(
    http: SocketAddr,
    limit: Duration,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if want(&health(http).await) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(
    exe: &std::path::Path,
    name: &str,
    agents: usize,
    nats: Option<String>,
) -> anyhow::Result<(Target, ChildGuard)> {
    let extra = match nats {
        Some(url) => format!(
            "[cluster]\nnode = \"{name}\"\nnats = [\"{url}\"]\nprefix = \"bench{}\"\nheartbeat = \"500ms\"\n",
            std::process::id()
        ),
        None => String::new(),
    };
    loadgen::spawn_daemon(
        exe,
        &DaemonOptions {
            agents,
            extra,
            dir: std::env::temp_dir().join(format!(
                "screenpop-cluster-bench-{}-{name}",
                std::process::id()
            )),
            set: Vec::new(),
        },
    )
}

/// One scenario: INVITEs to `calls_at`'s SIP, agents at `agents_at`'s HTTP.
async fn scenario(
    calls_at: &Target,
    agents_at: &Target,
    agents: usize,
    rate: u64,
    calls: usize,
) -> anyhow::Result<Outcome> {
    let target = Target {
        name: "screenpop",
        udp: calls_at.udp,
        tcp: None,
        hep: None,
        http: agents_at.http,
        floor: false,
        pid: calls_at.pid,
    };
    let mut conns = loadgen::connect_agents(&target, agents).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scenario = Scenario {
        rate,
        calls,
        ..Scenario::default()
    };
    loadgen::run(&target, &mut conns, &scenario, &loadgen::callers()).await
}

/// The whole comparison; prints a table and returns it as JSON.
pub async fn run(exe: PathBuf, agents: usize, rate: u64, calls: usize) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("screenpop-cluster-bench-{}", std::process::id()));
    let mut nats = Nats::start(dir.join("nats")).await?;
    let (single, _single) = node(&exe, "single", agents, None)?;
    let (a, a_guard) = node(&exe, "a", agents, Some(nats.url(0)))?;
    let (b, b_guard) = node(&exe, "b", agents, Some(nats.url(1)))?;
    until(b.http, Duration::from_secs(20), |h| {
        h["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rows = Vec::new();
    let mut record = |label: &str, o: &Outcome| {
        println!(
            "{label:<28} sent {:>6}  popped {:>6}  lost {:>4}  ringing {}",
            o.sent,
            o.popped,
            o.lost(),
            loadgen::summary(&o.ringing)
        );
        rows.push(json!({
            "scenario": label,
            "sent": o.sent,
            "popped": o.popped,
            "lost": o.lost(),
            "p50_us": o.ringing.value_at_quantile(0.5),
            "p99_us": o.ringing.value_at_quantile(0.99),
            "p999_us": o.ringing.value_at_quantile(0.999),
        }));
    };
    let o = scenario(&single, &single, agents, rate, calls).await?;
    record("single node (no cluster)", &o);
    let o = scenario(&a, &a, agents, rate, calls).await?;
    record("cluster, same node", &o);
    let o = scenario(&a, &b, agents, rate, calls).await?;
    record("cluster, cross node", &o);

    // An agent moving to node b while 200 calls ring at node a: sign-in → full snapshot.
    let live = 200.min(agents);
    let ring = Scenario {
        rate: 1000,
        calls: live,
        hold: None,
        ..Scenario::default()
    };
    let target = Target {
        name: "screenpop",
        udp: a.udp,
        tcp: None,
        hep: None,
        http: a.http,
        floor: false,
        pid: a.pid,
    };
    let mut conns = loadgen::connect_agents(&target, live).await?;
    loadgen::run(&target, &mut conns, &ring, &loadgen::callers()).await?;
    let mut snapshot_ms = Vec::new();
    for i in 0..live.min(50) {
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", b.http)).await?;
        ws.send(Message::text(format!(
            "{{\"type\":\"auth\",\"token\":\"{}\"}}",
            loadgen::token(i)
        )))
        .await?;
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                anyhow::bail!("closed before the snapshot");
            };
            let v: Value = serde_json::from_str(&t)?;
            if v["type"] == "snapshot" {
                anyhow::ensure!(
                    v["calls"].as_array().is_some_and(|c| !c.is_empty()),
                    "agent {i}'s snapshot at node b holds no call"
                );
                break;
            }
        }
        snapshot_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    snapshot_ms.sort_by(f64::total_cmp);
    let snap_p50 = snapshot_ms[snapshot_ms.len() / 2];
    let snap_max = *snapshot_ms.last().unwrap_or(&0.0);
    println!(
        "{:<28} p50 {snap_p50:.1} ms, max {snap_max:.1} ms ({} agents, {live} calls ringing at node a)",
        "move to node b → snapshot",
        snapshot_ms.len()
    );

    // Node a SIGKILLed: how long node b takes to list it gone (3 heartbeats of 500 ms).
    a_guard.kill();
    let gone = until(b.http, Duration::from_secs(20), |h| {
        h["cluster"]["nodes"].as_array().map(Vec::len) == Some(1)
    })
    .await?;
    println!(
        "{:<28} {:.2} s (heartbeat 500 ms, expiry after 3)",
        "node a killed → b sees it gone",
        gone.as_secs_f64()
    );

    // Every NATS server down: node b pops its own agents alone.
    nats.kill_all();
    until(b.http, Duration::from_secs(20), |h| {
        h["status"] == "degraded"
    })
    .await?;
    let o = scenario(&b, &b, agents, rate, calls).await?;
    record("cluster node, NATS down", &o);
    drop(b_guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "agents": agents,
        "rate": rate,
        "calls": calls,
        "scenarios": rows,
        "snapshot_after_move_ms": { "p50": snap_p50, "max": snap_max, "live_calls": live },
        "node_gone_after_kill_s": gone.as_secs_f64(),
    }))
}

/// With every NATS server down, a cluster node against a single node, interleaved: both
/// started fresh, the cluster node connected to its NATS server and then cut off (every
/// server SIGKILLed, `/healthz` degraded), then `pairs` times one scenario on each, in turn,
/// so that both have seen as many calls and the machine's drift touches both alike. Prints
/// each pair and the medians; returns them as JSON.
pub async fn nats_down(
    exe: PathBuf,
    agents: usize,
    rate: u64,
    calls: usize,
    pairs: usize,
) -> anyhow::Result<Value> {
    let dir =
        std::env::temp_dir().join(format!("screenpop-nats-down-bench-{}", std::process::id()));
    let mut nats = Nats::start(dir.join("nats")).await?;
    let (single, _single) = node(&exe, "single", agents, None)?;
    let (down, _down) = node(&exe, "down", agents, Some(nats.url(0)))?;
    until(down.http, Duration::from_secs(20), |h| {
        h["cluster"]["connected"] == true
    })
    .await?;
    nats.kill_all();
    until(down.http, Duration::from_secs(20), |h| {
        h["status"] == "degraded"
    })
    .await?;
    let mut rows = Vec::new();
    let (mut single_p99, mut down_p99) = (Vec::new(), Vec::new());
    for pair in 1..=pairs {
        let mut pair_row = json!({"pair": pair});
        for (label, target, p99s) in [
            ("single node", &single, &mut single_p99),
            ("NATS down", &down, &mut down_p99),
        ] {
            let o = scenario(target, target, agents, rate, calls).await?;
            println!(
                "pair {pair} {label:<12} sent {:>6}  popped {:>6}  lost {:>4}  ringing {}",
                o.sent,
                o.popped,
                o.lost(),
                loadgen::summary(&o.ringing)
            );
            let p99 = o.ringing.value_at_quantile(0.99);
            p99s.push(p99);
            pair_row[label] = json!({
                "lost": o.lost(),
                "p50_us": o.ringing.value_at_quantile(0.5),
                "p99_us": p99,
            });
        }
        rows.push(pair_row);
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (s, d) = (median(&mut single_p99), median(&mut down_p99));
    println!(
        "median p99 over {pairs} pairs: single node {s} µs, NATS down {d} µs ({:+.0} %)",
        (d as f64 / s as f64 - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "agents": agents, "rate": rate, "calls": calls, "pairs": rows,
        "median_p99_us": {"single": s, "nats_down": d},
    }))
}
