//! The cluster's fault campaign (issue 15): three screenpop nodes (the release binary) on a
//! three-server NATS JetStream cluster, all child processes on loopback ended by their PIDs;
//! calls at a fixed rate, each forked to two random nodes and cancelled after a ring time;
//! agents that reconnect to the next node when theirs goes away (as the page does); and every
//! `fault_every` a random node or NATS server SIGKILLed and started again `down_for` later.
//! Prints calls, pops, duplicate `ringing`, pops lost for calls a surviving node witnessed,
//! and call-log rows against calls (every node writes to one PostgreSQL call log).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::Nats;
use crate::loadgen::{self, ChildGuard};

const DB: &str = "screenpop_bench_campaign";
const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// One node: its config file, its addresses, its process while up.
struct Node {
    config: PathBuf,
    sip: SocketAddr,
    http: SocketAddr,
    child: Option<ChildGuard>,
}

fn start_node(exe: &Path, node: &mut Node) -> anyhow::Result<()> {
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&node.config)
        .env("SCREENPOP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    node.child = Some(ChildGuard(child));
    Ok(())
}

fn kill(guard: Option<ChildGuard>) {
    if let Some(guard) = guard {
        guard.kill();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from((
        [127, 0, 0, 1],
        crate::cluster::free_port()?,
    )))
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// What the agents saw.
#[derive(Default)]
struct Seen {
    /// (call, agent) pairs popped, by `ringing` or a snapshot entry.
    pops: HashSet<(usize, usize)>,
    /// `ringing` frames beyond the first for a call on one connection.
    duplicates: usize,
}

/// The call number in a frame's caller display name (`cmp 123`).
fn call_of(v: &Value) -> Option<usize> {
    v["caller"]["display"]
        .as_str()?
        .strip_prefix("cmp ")?
        .parse()
        .ok()
}

/// An agent as the page behaves: signed in at one node, and on any loss at the next one.
async fn agent(
    i: usize,
    nodes: Vec<SocketAddr>,
    seen: Arc<Mutex<Seen>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut at = i % nodes.len();
    while !stop.is_cancelled() {
        let url = format!("ws://{}/ws", nodes[at]);
        at = (at + 1) % nodes.len();
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let auth = format!("{{\"type\":\"auth\",\"token\":\"{}\"}}", loadgen::token(i));
        if ws.send(Message::text(auth)).await.is_err() {
            continue;
        }
        // The calls this connection has shown, by number: a second `ringing` for one (under
        // any call id) is a duplicate pop.
        let mut rung: HashSet<usize> = HashSet::new();
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                msg = ws.next() => msg,
            };
            let Some(Ok(Message::Text(text))) = msg else {
                break;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let mut seen = seen.lock().expect("lock");
            match v["type"].as_str() {
                Some("ringing") => {
                    if let Some(n) = call_of(&v) {
                        seen.pops.insert((n, i));
                        if !rung.insert(n) {
                            seen.duplicates += 1;
                        }
                    }
                }
                Some("snapshot") => {
                    for entry in v["calls"].as_array().into_iter().flatten() {
                        if let Some(n) = call_of(entry) {
                            seen.pops.insert((n, i));
                            rung.insert(n);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn request(
    method: &str,
    ext: &str,
    local: SocketAddr,
    n: usize,
    branch: &str,
    caller: &str,
) -> Vec<u8> {
    format!(
        "{method} sip:{ext}@screenpop.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: \"cmp {n}\" <sip:{caller}@pbx.test>;tag=c{n}\r\n\
         To: <sip:{ext}@pbx.test>\r\n\
         Call-ID: campaign-{n}-{}@pbx.test\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n",
        std::process::id()
    )
    .into_bytes()
}

/// The campaign; prints its figures and returns them as JSON.
pub async fn run(
    exe: PathBuf,
    minutes: u64,
    rate: u64,
    agents: usize,
    fault_every: Duration,
    down_for: Duration,
) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("screenpop-campaign-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A fresh call log every node writes to.
    let admin = screenpop::db::connect(&format!("{SERVER}/postgres")).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await?;
    let db_url = format!("{SERVER}/{DB}");
    let mut client = screenpop::db::connect(&db_url).await?;
    screenpop::db::migrate(&mut client).await?;

    let mut nats = Nats::start(dir.join("nats")).await?;
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let (sip, http) = (free_udp()?, free_addr()?);
        let mut config = format!(
            "[sip]\nudp = [\"{sip}\"]\nallow = [\"127.0.0.0/8\"]\nring_timeout = \"60s\"\n\
             [http]\nlisten = \"{http}\"\n\
             [directory]\ncsv = \"{}\"\n\
             [call_log]\ndatabase_url = \"{db_url}\"\nspool_dir = \"{}\"\n\
             [cluster]\nnode = \"{name}\"\nnats = [\"{}\", \"{}\", \"{}\"]\nprefix = \"campaign{}\"\nheartbeat = \"1s\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/customers.csv"),
            dir.join(format!("spool-{name}")).display(),
            nats.url(i % 3),
            nats.url((i + 1) % 3),
            nats.url((i + 2) % 3),
            std::process::id()
        );
        for a in 0..agents {
            let hash = screenpop::config::TokenHash::of(&loadgen::token(a)).hex();
            config.push_str(&format!(
                "[[agents]]\nid = \"a{a}\"\nextensions = [\"{}\"]\ntoken_sha256 = \"{hash}\"\n",
                loadgen::extension(a)
            ));
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let mut node = Node {
            config: path,
            sip,
            http,
            child: None,
        };
        start_node(&exe, &mut node)?;
        nodes.push(node);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    for i in 0..agents {
        tokio::spawn(agent(i, http.clone(), seen.clone(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let local = socket.local_addr()?;
    {
        // Answers are read and dropped (the 487s are never ACKed: the daemon gives up on them).
        let socket = socket.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = socket.recv_from(&mut buf) => {}
                }
            }
        });
    }
    let callers = loadgen::callers();
    let sips: Vec<SocketAddr> = nodes.iter().map(|n| n.sip).collect();
    // A request of call `num` (to agent `ag`) to both nodes of its fork, one branch each.
    let send =
        |socket: &Arc<UdpSocket>, method: &'static str, num: usize, ag: usize, pair: [usize; 2]| {
            let socket = socket.clone();
            let caller = callers[num % callers.len()].clone();
            let targets = pair.map(|node| sips[node]);
            async move {
                for (k, target) in targets.iter().enumerate() {
                    let bytes = request(
                        method,
                        &loadgen::extension(ag),
                        local,
                        num,
                        &format!("{num}x{k}"),
                        &caller,
                    );
                    let _ = socket.send_to(&bytes, target).await;
                }
            }
        };
    let hold = Duration::from_secs(3);
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    // Node i was down over these windows (start, end); NATS faults are logged, not judged.
    let mut down: Vec<(usize, Instant, Option<Instant>)> = Vec::new();
    let mut faults = Vec::new();
    let mut next_fault = started + fault_every;
    let mut revive: Option<(Instant, bool, usize)> = None;
    // Calls: (number, agent, the two nodes, sent at).
    let mut calls: Vec<(usize, usize, [usize; 2], Instant)> = Vec::new();
    let mut pending_cancels: Vec<(Instant, usize, usize, [usize; 2])> = Vec::new();
    let mut next = started;
    let mut rng = rand::rng();
    let mut n = 0usize;
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_fault && revive.is_none() {
            let node = rng.random_bool(0.5);
            let which = rng.random_range(0..3);
            if node {
                kill(nodes[which].child.take());
                down.push((which, now, None));
            } else {
                nats.kill(which);
            }
            let what = format!("{} {}", if node { "node" } else { "nats" }, which);
            println!("{:>5.0} s  SIGKILL {what}", started.elapsed().as_secs_f64());
            faults.push(json!({ "at_s": started.elapsed().as_secs(), "killed": what }));
            revive = Some((now + down_for, node, which));
            next_fault = now + fault_every;
        }
        if let Some((at, node, which)) = revive
            && now >= at
        {
            if node {
                start_node(&exe, &mut nodes[which])?;
                if let Some(w) = down.iter_mut().rev().find(|w| w.0 == which) {
                    w.2 = Some(now);
                }
            } else {
                nats.restart(which)?;
            }
            revive = None;
        }
        while let Some(&(at, num, ag, pair)) = pending_cancels.first() {
            if at > now {
                break;
            }
            pending_cancels.remove(0);
            send(&socket, "CANCEL", num, ag, pair).await;
        }
        if now >= next {
            let ag = rng.random_range(0..agents);
            let first = rng.random_range(0..3);
            let second = (first + rng.random_range(1..3)) % 3;
            let pair = [first, second];
            send(&socket, "INVITE", n, ag, pair).await;
            calls.push((n, ag, pair, now));
            pending_cancels.push((now + hold, n, ag, pair));
            n += 1;
            next += interval;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The last cancels, and everything back up before counting.
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    for (_, num, ag, pair) in pending_cancels.drain(..) {
        send(&socket, "CANCEL", num, ag, pair).await;
    }
    if let Some((_, node, which)) = revive {
        if node {
            start_node(&exe, &mut nodes[which])?;
        } else {
            nats.restart(which)?;
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();

    // A call was witnessed by a surviving node when one of its two nodes was up from its
    // INVITE to its CANCEL.
    let windows = down;
    let up_through = |node: usize, from: Instant, to: Instant| {
        !windows
            .iter()
            .any(|&(w, start, end)| w == node && start <= to && end.is_none_or(|e| e >= from))
    };
    let rows: i64 = client
        .query_one("SELECT count(*) FROM call_log", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let seen = seen.lock().expect("lock");
    let mut witnessed = 0;
    let mut lost = Vec::new();
    for &(num, ag, pair, at) in &calls {
        if pair.iter().any(|&node| up_through(node, at, at + hold)) {
            witnessed += 1;
            if !seen.pops.contains(&(num, ag)) {
                lost.push(num);
            }
        }
    }
    let popped = calls
        .iter()
        .filter(|(num, ag, _, _)| seen.pops.contains(&(*num, *ag)))
        .count();
    let figures = json!({
        "minutes": minutes,
        "rate": rate,
        "agents": agents,
        "calls": calls.len(),
        "pops": popped,
        "duplicate_ringing": seen.duplicates,
        "witnessed": witnessed,
        "lost_witnessed": lost.len(),
        "call_log_rows": rows,
        "faults": faults,
    });
    println!(
        "calls {}  pops {popped}  duplicate ringing {}  witnessed {witnessed}  lost (witnessed) {}  call-log rows {rows}",
        calls.len(),
        seen.duplicates,
        lost.len()
    );
    if !lost.is_empty() {
        println!("  lost: {:?}", &lost[..lost.len().min(20)]);
    }
    drop(seen);
    for node in &mut nodes {
        kill(node.child.take());
    }
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}
