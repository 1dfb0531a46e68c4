//! Idle agents at scale and the reconnect storm (issue 19): N agents sign in to one daemon over
//! real authenticated WebSockets and idle (the daemon's RSS per agent); then, with K calls
//! ringing at some of their extensions, every connection is reset at once and all N reconnect,
//! spread uniformly over a window. Each must get its `ready` and `snapshot` again, and an agent
//! with a call ringing at its extension must find the call in its snapshot.
//!
//! ```text
//!  raise RLIMIT_NOFILE ─▶ daemon ─▶ N sign-ins, idle ─▶ RSS ─▶ K INVITEs ─▶ reset all
//!                                   (256 at a time)          (no CANCEL)       │
//!     agent i reconnects at window × (perm(i) + ½) / N ◀──────────────────────┘
//!     (retrying as the page does) ─▶ ready, snapshot ─▶ holds until the end
//! ```
//!
//! Limits it works within, and says so:
//! - **File descriptors.** The daemon holds one per agent and the generator (a separate process
//!   with the same limit) one per agent too, each plus [`FD_RESERVE`]. The generator raises its
//!   own hard and soft `RLIMIT_NOFILE` to what N needs before it starts the daemon, which
//!   inherits them; where it may not (no `CAP_SYS_RESOURCE`), N is capped to what fits.
//! - **Ports.** Every client socket is bound before it connects, to 127.0.0.2, 127.0.0.3, …:
//!   a bound port is the address's alone, so each address takes at most [`PORT_SHARE`] of the
//!   ephemeral range (under half: see there), and other programs' connections from 127.0.0.1
//!   take nothing from it.
//! - **The reset.** Connections are aborted (`SO_LINGER` 0: an RST, as when a proxy or the
//!   network drops them), so the daemon learns of it at once and no `TIME_WAIT` holds the old
//!   ports while the new connections need them.
//!
//! The whole command is bounded ([`DEADLINE`]); the daemon is a child process ended by its PID.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::loadgen::{self, DaemonOptions};

/// File descriptors each process keeps beside one per agent. Each uses about 15 of its own (the
/// daemon's listeners, epoll and files; the generator's runtime, pipes, `/proc` reads and SIP
/// socket); the rest is room for the old sessions the daemon has not yet closed when the first
/// new ones arrive (≈ N / window a second; at 2,000 agents the daemon never held more than
/// N + 15).
pub const FD_RESERVE: u64 = 500;
/// Sign-ins in flight at once before the storm (as `loadgen::connect_agents`).
const SIGN_IN_CONCURRENCY: usize = 256;
/// Share of the ephemeral port range one source address may take. Linux's `bind(port 0)` looks
/// through one parity half of the range first; once that half is full every further bind scans
/// it in the kernel (5–10 ms each, measured here past 14,116 ports), which would stall the
/// generator's runtime and make sign-ins time out. So each address stays under half.
const PORT_SHARE: f64 = 0.45;
/// One sign-in attempt (connect, upgrade, auth, `ready`, `snapshot`) must finish within this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The agent page's reconnect backoff (`src/web/page/app.js`): exponential from 500 ms, capped
/// at 15 s, with equal jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// See [`BACKOFF_MIN`].
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long after the window's end an agent may still retry before it counts as missing.
const STORM_GRACE: Duration = Duration::from_secs(60);
/// Idle time before the RSS is read, after the last sign-in.
const SETTLE: Duration = Duration::from_secs(3);
/// INVITEs per second for the ringing calls.
const RING_RATE: u64 = 1000;
/// The whole command stops by itself after this.
pub const DEADLINE: Duration = Duration::from_secs(900);
/// The daemon's idle RSS target per agent (issue 19).
const TARGET_KIB_PER_AGENT: f64 = 12.0;

/// What to run.
pub struct Options {
    /// Agents asked for (capped by the file-descriptor limit).
    pub agents: usize,
    /// Calls ringing during the storm (capped at the agents).
    pub ringing: usize,
    /// All agents reconnect within this after the reset.
    pub window: Duration,
}

/// Runs the benchmark against `exe` (the daemon binary) and returns its figures as JSON.
pub async fn run(exe: PathBuf, opts: Options) -> anyhow::Result<Value> {
    match tokio::time::timeout(DEADLINE, storm(exe, opts)).await {
        Ok(figures) => figures,
        Err(_) => bail!("the storm passed its {} s bound", DEADLINE.as_secs()),
    }
}

async fn storm(exe: PathBuf, opts: Options) -> anyhow::Result<Value> {
    let fds = raise_fd_limit(opts.agents as u64)?;
    println!("file descriptors: {}", fds.said);
    let n = fds.agents as usize;
    anyhow::ensure!(n > 0, "no agent fits in the file-descriptor limit");
    let k = opts.ringing.min(n);
    let window = opts.window;
    println!(
        "storm: {n} agents, {k} calls ringing, all reconnect within {} s",
        window.as_secs_f64()
    );
    let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut w = s.split_whitespace().map(str::parse::<u64>);
            Some((w.next()?.ok()?, w.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    let per_source = (((ports.1 - ports.0 + 1) as f64 * PORT_SHARE) as usize).max(1);
    let sources = source_addresses(n.div_ceil(per_source))?;
    println!(
        "source addresses: {} ({} each at most: {:.0} % of the ephemeral ports {}–{})",
        list(&sources),
        per_source,
        PORT_SHARE * 100.0,
        ports.0,
        ports.1
    );

    // Old sessions live on in the daemon until it has read their resets, so the caps leave
    // room for two connections per agent; the file-descriptor limit is the real cap.
    let cap = 2 * n + 100;
    let set = vec![
        format!("http.max_connections={cap}"),
        format!("http.max_connections_per_address={cap}"),
        format!("push.max_connections={cap}"),
        "sip.ring_timeout=15m".to_owned(),
    ];
    println!(
        "daemon settings (run --set): {}; defaults otherwise ([push] auth_timeout 5 s, \
         heartbeat 15 s, idle_timeout 45 s). The sign-in throttle counts failed sign-ins only \
         (30 a minute per address; an auth timeout counts as one): valid tokens sent in time \
         never reach it",
        set.join(" ")
    );
    let dir = std::env::temp_dir().join(format!("screenpop-storm-{}", std::process::id()));
    let (target, guard) = loadgen::spawn_daemon(
        &exe,
        &DaemonOptions {
            agents: n,
            extra: String::new(),
            dir: dir.clone(),
            set: set.clone(),
        },
    )?;
    let pid = target.pid.context("the daemon's pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = loadgen::rss_kib(pid);

    // Which agents ring, and when each reconnects: a seeded shuffle spreads both evenly.
    let ringing: Vec<usize> = (0..k).map(|c| c * n / k.max(1)).collect();
    let mut rings = vec![false; n];
    for &a in &ringing {
        rings[a] = true;
    }
    let mut slots: Vec<usize> = (0..n).collect();
    slots.shuffle(&mut rand::rngs::StdRng::seed_from_u64(19));
    let offsets = slots
        .iter()
        .map(|&j| window.mul_f64((j as f64 + 0.5) / n as f64))
        .collect();
    let shared = Arc::new(Shared {
        url: format!("ws://{}/ws", target.http),
        http: target.http,
        sources: sources.clone(),
        rings,
        offsets,
        sign_in_slots: tokio::sync::Semaphore::new(SIGN_IN_CONCURRENCY),
        signed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        pops: AtomicUsize::new(0),
        reset: CancellationToken::new(),
        reset_at: OnceLock::new(),
        give_up_at: OnceLock::new(),
        done: AtomicUsize::new(0),
        stop: CancellationToken::new(),
        errors: Mutex::default(),
    });
    // Ends every agent's task however this function returns (their sockets are aborted).
    let _stop = shared.stop.clone().drop_guard();

    // Phase 1: sign in, idle, RSS.
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(agent(i, shared.clone())))
        .collect();
    while shared.signed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sign_in_secs = started.elapsed().as_secs_f64();
    if shared.failed.load(Ordering::Relaxed) > 0 {
        bail!(
            "{} of {n} agents could not sign in before the storm: {}",
            shared.failed.load(Ordering::Relaxed),
            errors_line(&shared.errors())
        );
    }
    tokio::time::sleep(SETTLE).await;
    let idle_rss = loadgen::rss_kib(pid);
    let per_agent = idle_rss.saturating_sub(base_rss) as f64 / n as f64;
    println!(
        "phase 1: {n} agents signed in in {sign_in_secs:.1} s; daemon RSS {base_rss} → \
         {idle_rss} KiB after {} s idle: {per_agent:.1} KiB per agent (target ≤ {TARGET_KIB_PER_AGENT} KiB: {}{})",
        SETTLE.as_secs(),
        if per_agent <= TARGET_KIB_PER_AGENT {
            "met"
        } else {
            "not met"
        },
        if n < 5000 {
            "; below ~5,000 agents the daemon's fixed costs weigh on the figure"
        } else {
            ""
        }
    );

    // The calls that ring through the storm.
    let trying = loadgen::ring(
        &target,
        n,
        &ringing,
        RING_RATE,
        &loadgen::callers(),
        Duration::from_secs(5),
    )
    .await?;
    let until = Instant::now() + Duration::from_secs(10);
    while shared.pops.load(Ordering::Relaxed) < k && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pops = shared.pops.load(Ordering::Relaxed);
    println!(
        "ringing: {k} INVITEs (no CANCEL), {trying} × 100 Trying, {pops} pops at their agents"
    );

    // Phase 2: reset every connection at once; the agents reconnect on their own schedules.
    let samples = Arc::new(Peaks::default());
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample(pid, samples.clone(), sampling.clone()));
    let cpu_before = loadgen::cpu_secs(pid);
    let own_cpu_before = loadgen::cpu_secs(std::process::id());
    let kernel_before = tcp_ext();
    let reset_at = Instant::now();
    let _ = shared.reset_at.set(reset_at);
    let _ = shared.give_up_at.set(reset_at + window + STORM_GRACE);
    shared.reset.cancel();
    while shared.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let storm_secs = reset_at.elapsed().as_secs_f64();
    let cpu = loadgen::cpu_secs(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let own_cpu = loadgen::cpu_secs(std::process::id())
        .zip(own_cpu_before)
        .map(|(after, before)| after - before);
    let kernel_after = tcp_ext();
    let kernel: BTreeMap<&str, u64> = KERNEL_COUNTERS
        .iter()
        .map(|&name| {
            let at = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
            (name, at(&kernel_after).saturating_sub(at(&kernel_before)))
        })
        .collect();
    sampling.cancel();
    let _ = sampler.await;
    let rss_after = loadgen::rss_kib(pid);
    let mut counters = serde_json::Map::new();
    for name in [
        "screenpop_accept_errors_total",
        "screenpop_connections_refused_total",
        "screenpop_connections_evicted_total",
        "screenpop_push_drops_total",
        "screenpop_auth_throttled_total",
    ] {
        let v = loadgen::metric(target.http, name).await.unwrap_or(f64::NAN);
        counters.insert(name.into(), json!(v));
    }

    // The end: every agent closes (aborted), then the daemon is ended by its PID.
    shared.stop.cancel();
    let mut reports = Vec::with_capacity(n);
    for t in tasks {
        reports.push(t.await?);
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);

    let figures = report(&Figures {
        n,
        k,
        window,
        sign_in_secs,
        base_rss,
        idle_rss,
        per_agent,
        trying,
        pops,
        storm_secs,
        cpu,
        own_cpu,
        rss_after,
        samples: &samples,
        counters,
        kernel,
        errors: shared.errors(),
        reports: &reports,
    });
    Ok(json!({
        "fds": {"hard_limit": fds.hard, "raised": fds.raised, "agents_asked": opts.agents, "agents": n, "note": fds.said},
        "sources": sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "daemon_settings": set,
        "machine": crate::machine(),
        "figures": figures,
    }))
}

/// What every agent's task shares.
struct Shared {
    url: String,
    http: SocketAddr,
    sources: Vec<Ipv4Addr>,
    /// Whether a call rings at agent i's extension.
    rings: Vec<bool>,
    /// When agent i reconnects, after the reset.
    offsets: Vec<Duration>,
    sign_in_slots: tokio::sync::Semaphore,
    /// Agents signed in before the storm, and those that could not.
    signed: AtomicUsize,
    failed: AtomicUsize,
    /// `ringing` frames for their own calls seen by agents before the storm.
    pops: AtomicUsize,
    /// Cancelled to reset every connection at once.
    reset: CancellationToken,
    reset_at: OnceLock<Instant>,
    /// No new attempt after this.
    give_up_at: OnceLock<Instant>,
    /// Agents through with the storm: snapshot received, or given up.
    done: AtomicUsize,
    /// Cancelled to end every agent.
    stop: CancellationToken,
    /// Failed attempts by kind.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One agent's storm, as its task saw it.
#[derive(Default)]
struct AgentReport {
    /// Its connection ended before the reset.
    lost_before: bool,
    /// Reset → this agent's snapshot.
    snapshot_at: Option<Duration>,
    /// Its first reconnect attempt's start → its snapshot (retries included).
    wait: Option<Duration>,
    /// Auth frame sent → snapshot, on the attempt that succeeded.
    auth_to_snapshot: Option<Duration>,
    /// Attempts it took (0: never tried, the storm's grace ran out first).
    attempts: u32,
    /// Whether the call ringing at its extension was in the snapshot (`None`: no call rings
    /// there).
    ringing_found: Option<bool>,
}

type Ws = WebSocketStream<TcpStream>;

/// One agent: signs in, idles, is reset, reconnects at its time until it has its snapshot,
/// then holds the connection until the end.
async fn agent(i: usize, sh: Arc<Shared>) -> AgentReport {
    let mut report = AgentReport::default();
    let mut ws = {
        let Ok(_slot) = sh.sign_in_slots.acquire().await else {
            return report;
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, sign_in(&sh, i)).await {
            Ok(Ok((ws, _))) => ws,
            failed => {
                sh.error(format!("before the storm: {}", attempt_error(failed)));
                sh.failed.fetch_add(1, Ordering::Relaxed);
                return report;
            }
        }
    };
    sh.signed.fetch_add(1, Ordering::Relaxed);
    let mark = format!("lgcall {i}");
    tokio::select! {
        () = sh.reset.cancelled() => {}
        () = sh.stop.cancelled() => {}
        why = idle(&mut ws, &mark, &sh.pops) => {
            sh.error(format!("lost before the storm: {why}"));
            report.lost_before = true;
        }
    }
    abort(ws);
    // Ended before the storm (another agent could not sign in), or waiting for the reset.
    tokio::select! {
        () = sh.reset.cancelled() => {}
        () = sh.stop.cancelled() => return report,
    }

    let (Some(&reset_at), Some(&give_up_at)) = (sh.reset_at.get(), sh.give_up_at.get()) else {
        return report;
    };
    tokio::time::sleep_until((reset_at + sh.offsets[i]).into()).await;
    let first_try = Instant::now();
    let mut held = None;
    while Instant::now() < give_up_at && !sh.stop.is_cancelled() {
        report.attempts += 1;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, sign_in(&sh, i)).await {
            Ok(Ok((ws, signed))) => {
                let now = Instant::now();
                report.snapshot_at = Some(now - reset_at);
                report.wait = Some(now - first_try);
                report.auth_to_snapshot = Some(now - signed.auth_sent);
                if sh.rings[i] {
                    report.ringing_found = Some(has_ringing_call(&signed.snapshot, &mark));
                }
                held = Some(ws);
                break;
            }
            failed => sh.error(attempt_error(failed)),
        }
        tokio::time::sleep(backoff(report.attempts)).await;
    }
    if held.is_none() && sh.rings[i] {
        report.ringing_found = Some(false);
    }
    sh.done.fetch_add(1, Ordering::Relaxed);
    if let Some(mut ws) = held {
        let ignored = AtomicUsize::new(0);
        tokio::select! {
            () = sh.stop.cancelled() => {}
            why = idle(&mut ws, &mark, &ignored) => {
                sh.error(format!("lost after reconnecting: {why}"));
            }
        }
        abort(ws);
    }
    sh.stop.cancelled().await;
    report
}

/// What a successful sign-in brought.
struct SignedIn {
    auth_sent: Instant,
    /// The `snapshot` frame.
    snapshot: String,
}

/// Connects agent `i` from its source address, authenticates, and reads `ready` and
/// `snapshot`. The error is the kind of failure, for the report.
async fn sign_in(sh: &Shared, i: usize) -> Result<(Ws, SignedIn), String> {
    let source = sh.sources[i % sh.sources.len()];
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| io_kind(&e))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {}", io_kind(&e)))?;
    let stream = socket.connect(sh.http).await.map_err(|e| io_kind(&e))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(&sh.url, stream, Some(config))
        .await
        .map_err(|e| ws_kind(&e))?;
    ws.send(Message::text(format!(
        "{{\"type\":\"auth\",\"token\":\"{}\"}}",
        loadgen::token(i)
    )))
    .await
    .map_err(|e| ws_kind(&e))?;
    let auth_sent = Instant::now();
    let mut ready = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if !ready {
                    if !t.starts_with("{\"type\":\"ready\"") {
                        return Err("first frame not `ready`".into());
                    }
                    ready = true;
                } else if t.starts_with("{\"type\":\"snapshot\"") {
                    let snapshot = t.as_str().to_owned();
                    return Ok((
                        ws,
                        SignedIn {
                            auth_sent,
                            snapshot,
                        },
                    ));
                } else {
                    return Err("second frame not `snapshot`".into());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(f) => format!("closed {} ({})", u16::from(f.code), f.reason),
                    None => "closed".into(),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_kind(&e)),
            None => return Err("closed before the snapshot".into()),
        }
    }
}

/// Reads frames (the library answers the daemon's pings) until the connection ends; counts the
/// agent's own calls' `ringing` frames in `pops`. Returns why it ended.
async fn idle(ws: &mut Ws, mark: &str, pops: &AtomicUsize) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.starts_with("{\"type\":\"ringing\"") && has_mark(&t, mark) {
                    pops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => format!("closed {} ({})", u16::from(f.code), f.reason),
                    None => "closed".into(),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return ws_kind(&e),
            None => return "closed".into(),
        }
    }
}

/// Whether a frame names the call whose caller display name is `mark` exactly (`lgcall 12`
/// must not match `lgcall 123`).
fn has_mark(frame: &str, mark: &str) -> bool {
    frame.contains(&format!("\"{mark}\""))
}

/// Whether the snapshot holds a ringing call from `mark` (the caller's display name).
fn has_ringing_call(snapshot: &str, mark: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(snapshot) else {
        return false;
    };
    v["calls"].as_array().is_some_and(|calls| {
        calls
            .iter()
            .any(|c| c["caller"]["display"] == mark && c["state"] == "ringing")
    })
}

/// Drops the connection with an RST (`SO_LINGER` 0): the daemon sees it at once, and the port
/// is free again without `TIME_WAIT`.
fn abort(ws: Ws) {
    let _ = socket2::SockRef::from(ws.get_ref()).set_linger(Some(Duration::ZERO));
    drop(ws);
}

/// The pause before attempt `attempt + 1`, as the page's `scheduleReconnect`.
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(10)))
        .min(BACKOFF_MAX);
    cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
}

/// The kind of a failed attempt, timed out or not.
fn attempt_error<T>(failed: Result<Result<T, String>, tokio::time::error::Elapsed>) -> String {
    match failed {
        Ok(Ok(_)) => "none".into(),
        Ok(Err(kind)) => kind,
        Err(_) => format!(
            "timeout (no snapshot within {} s)",
            ATTEMPT_TIMEOUT.as_secs()
        ),
    }
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::TimedOut => "timeout (TCP)".into(),
        K::AddrNotAvailable | K::AddrInUse => "no free local port".into(),
        _ if e.raw_os_error() == Some(24) => "generator out of file descriptors (EMFILE)".into(),
        kind => format!("io: {kind:?}"),
    }
}

fn ws_kind(e: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match e {
        E::Http(response) => match response.status().as_u16() {
            503 => "503 (too many connections)".into(),
            429 => "429 (rate-limited)".into(),
            code => format!("HTTP {code}"),
        },
        E::Io(e) => io_kind(e),
        E::ConnectionClosed | E::AlreadyClosed => "closed".into(),
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            "reset".into()
        }
        other => format!("websocket: {other}"),
    }
}

/// `count` loopback addresses from 127.0.0.2 on, checked by binding each.
fn source_addresses(count: usize) -> anyhow::Result<Vec<Ipv4Addr>> {
    anyhow::ensure!(count <= 250 * 256, "{count} source addresses");
    (0..count)
        .map(|k| {
            let k = k + 2;
            let ip = Ipv4Addr::new(127, 0, (k / 256) as u8, (k % 256) as u8);
            std::net::TcpListener::bind((ip, 0))
                .with_context(|| format!("binding {ip}: is 127.0.0.0/8 routed to lo?"))?;
            Ok(ip)
        })
        .collect()
}

fn list(ips: &[Ipv4Addr]) -> String {
    match ips {
        [one] => one.to_string(),
        [first, .., last] => format!("{first} … {last} ({})", ips.len()),
        [] => "none".into(),
    }
}

/// The file-descriptor limit, after trying to raise it for `agents`.
struct FdBudget {
    /// The hard limit in force.
    hard: u64,
    /// Whether the hard limit was raised.
    raised: bool,
    /// The agents that fit.
    agents: u64,
    /// What happened, in a sentence.
    said: String,
}

/// Raises this process's `RLIMIT_NOFILE` (soft and hard; the daemon, a child, inherits it) to
/// what `agents` need, capping them when the hard limit cannot be raised.
fn raise_fd_limit(agents: u64) -> anyhow::Result<FdBudget> {
    use rlimit::Resource;
    let need = agents + FD_RESERVE;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if need <= hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
        return Ok(FdBudget {
            hard,
            raised: false,
            agents,
            said: format!(
                "hard limit {hard} is enough for {agents} agents (each process needs N + \
                 {FD_RESERVE} = {need}); soft limit {soft} → {hard}"
            ),
        });
    }
    let want = need.min(nr_open);
    match rlimit::setrlimit(Resource::NOFILE, want, want) {
        Ok(()) => {
            let fit = want - FD_RESERVE;
            let capped = if fit < agents {
                format!("; fs.nr_open is {nr_open}: N capped at {fit}")
            } else {
                String::new()
            };
            Ok(FdBudget {
                hard: want,
                raised: true,
                agents: agents.min(fit),
                said: format!("raised hard limit to {want} (was {hard}){capped}"),
            })
        }
        Err(e) => {
            rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
            let fit = hard.saturating_sub(FD_RESERVE);
            let why = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "no CAP_SYS_RESOURCE".to_owned()
            } else {
                e.to_string()
            };
            Ok(FdBudget {
                hard,
                raised: false,
                agents: fit,
                said: format!(
                    "cannot raise hard limit above {hard}: {why}; N capped at {fit} \
                     (each process needs N + {FD_RESERVE})"
                ),
            })
        }
    }
}

/// Peaks sampled during the storm.
#[derive(Default)]
struct Peaks {
    daemon_rss_kib: AtomicU64,
    daemon_fds: AtomicU64,
    generator_fds: AtomicU64,
}

/// Samples the daemon's RSS and open files, and the generator's, every 250 ms until `stop`.
async fn sample(pid: u32, peaks: Arc<Peaks>, stop: CancellationToken) {
    let fds = |dir: &str| std::fs::read_dir(dir).map_or(0, |d| d.count() as u64);
    let daemon_fds = format!("/proc/{pid}/fd");
    loop {
        peaks
            .daemon_rss_kib
            .fetch_max(loadgen::rss_kib(pid), Ordering::Relaxed);
        peaks
            .daemon_fds
            .fetch_max(fds(&daemon_fds), Ordering::Relaxed);
        peaks
            .generator_fds
            .fetch_max(fds("/proc/self/fd"), Ordering::Relaxed);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Everything measured, for the report.
struct Figures<'a> {
    n: usize,
    k: usize,
    window: Duration,
    sign_in_secs: f64,
    base_rss: u64,
    idle_rss: u64,
    per_agent: f64,
    trying: usize,
    pops: usize,
    storm_secs: f64,
    cpu: Option<f64>,
    own_cpu: Option<f64>,
    rss_after: u64,
    samples: &'a Peaks,
    counters: serde_json::Map<String, Value>,
    kernel: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    reports: &'a [AgentReport],
}

/// Prints the storm's figures and returns them as JSON.
fn report(f: &Figures) -> Value {
    let histogram = |pick: &dyn Fn(&AgentReport) -> Option<Duration>| {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        for r in f.reports {
            if let Some(d) = pick(r) {
                h.saturating_record((d.as_micros() as u64).max(1));
            }
        }
        h
    };
    let wait = histogram(&|r| r.wait);
    let auth = histogram(&|r| r.auth_to_snapshot);
    let delivered = f.reports.iter().filter(|r| r.snapshot_at.is_some()).count();
    let first_try = f
        .reports
        .iter()
        .filter(|r| r.snapshot_at.is_some() && r.attempts == 1)
        .count();
    let retried = f
        .reports
        .iter()
        .map(|r| r.attempts.saturating_sub(1) as u64)
        .sum::<u64>();
    let lost_before = f.reports.iter().filter(|r| r.lost_before).count();
    let ringing_expected = f
        .reports
        .iter()
        .filter(|r| r.ringing_found.is_some())
        .count();
    let ringing_found = f
        .reports
        .iter()
        .filter(|r| r.ringing_found == Some(true))
        .count();
    let last = f
        .reports
        .iter()
        .filter_map(|r| r.snapshot_at)
        .max()
        .unwrap_or_default();
    // Sign-ins slower than SLOW, and when after the reset they began.
    let slow: Vec<Duration> = f
        .reports
        .iter()
        .filter_map(|r| Some((r.snapshot_at?, r.wait?)))
        .filter(|&(_, wait)| wait > SLOW)
        .map(|(at, wait)| at - wait)
        .collect();
    let slow_line = match (slow.iter().min(), slow.iter().max()) {
        (Some(first), Some(last)) => format!(
            "{} sign-ins over {} ms, begun {:.2}–{:.2} s after the reset",
            slow.len(),
            SLOW.as_millis(),
            first.as_secs_f64(),
            last.as_secs_f64()
        ),
        _ => format!("no sign-in over {} ms", SLOW.as_millis()),
    };
    let peak_rss = f.samples.daemon_rss_kib.load(Ordering::Relaxed);
    let peak_fds = f.samples.daemon_fds.load(Ordering::Relaxed);
    let own_fds = f.samples.generator_fds.load(Ordering::Relaxed);
    let ms = |us: u64| us as f64 / 1000.0;
    let line = |h: &Histogram<u64>| {
        if h.is_empty() {
            "no samples".to_owned()
        } else {
            format!(
                "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            )
        }
    };
    let secs = |s: Option<f64>| s.map_or("?".to_owned(), |s| format!("{s:.2} s"));
    println!(
        "phase 2: every connection reset at once; reconnects spread over {} s",
        f.window.as_secs_f64()
    );
    println!(
        "  reconnected {delivered} / {} ({first_try} at the first attempt, {retried} retries), \
         snapshots delivered {delivered}, missing {}",
        f.n,
        f.n - delivered
    );
    println!(
        "  ringing calls in their agents' snapshots: {ringing_found} / {ringing_expected}{}",
        if lost_before > 0 {
            format!("; {lost_before} connections lost before the reset")
        } else {
            String::new()
        }
    );
    println!("  reset → last snapshot {:.2} s", last.as_secs_f64());
    println!(
        "  sign-in → snapshot (first attempt's connect, retries included): {}",
        line(&wait)
    );
    println!(
        "  auth frame → snapshot (the attempt that succeeded):            {}",
        line(&auth)
    );
    println!(
        "  daemon during the storm ({:.1} s): CPU {}, RSS {} → peak {} → {} KiB, open files \
         peak {peak_fds}; generator CPU {}, open files peak {own_fds}",
        f.storm_secs,
        secs(f.cpu),
        f.idle_rss,
        peak_rss,
        f.rss_after,
        secs(f.own_cpu)
    );
    println!("  {slow_line}");
    println!("  errors: {}", errors_line(&f.errors));
    println!(
        "  kernel, whole machine (/proc/net/netstat): {}",
        f.kernel
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  daemon counters: {}",
        f.counters
            .iter()
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches("screenpop_")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let quantiles = |h: &Histogram<u64>| {
        if h.is_empty() {
            return Value::Null;
        }
        json!({"n": h.len(), "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max()})
    };
    json!({
        "agents": f.n,
        "calls_ringing": f.k,
        "window_s": f.window.as_secs_f64(),
        "idle": {
            "sign_in_s": (f.sign_in_secs * 10.0).round() / 10.0,
            "rss_base_kib": f.base_rss,
            "rss_kib": f.idle_rss,
            "per_agent_kib": (f.per_agent * 10.0).round() / 10.0,
            "target_kib": TARGET_KIB_PER_AGENT,
        },
        "ringing": {"invites": f.k, "trying": f.trying, "pops": f.pops},
        "storm": {
            "reconnected": delivered,
            "snapshots_delivered": delivered,
            "missing": f.n - delivered,
            "first_attempt": first_try,
            "retries": retried,
            "lost_before_reset": lost_before,
            "ringing_expected": ringing_expected,
            "ringing_found": ringing_found,
            "last_snapshot_s": last.as_secs_f64(),
            "sign_in_to_snapshot": quantiles(&wait),
            "auth_to_snapshot": quantiles(&auth),
            "daemon_cpu_s": f.cpu,
            "generator_cpu_s": f.own_cpu,
            "daemon_rss_kib": {"before": f.idle_rss, "peak": peak_rss, "after": f.rss_after},
            "daemon_open_files_peak": peak_fds,
            "generator_open_files_peak": own_fds,
            "slow_sign_ins": slow.len(),
            "slow_ms": SLOW.as_millis() as u64,
            "errors": f.errors,
            "daemon_counters": f.counters,
            "kernel": f.kernel,
        },
    })
}

/// A sign-in slower than this is listed with when it began (a SYN retransmitted after a full
/// listen queue costs 1 s).
const SLOW: Duration = Duration::from_millis(500);

/// The kernel's TCP counters that tell why a connect was slow: the listen queue overflowing
/// (the daemon not accepting fast enough) and the client's SYNs retransmitted as a result.
const KERNEL_COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "TCPSynRetrans"];

/// The `TcpExt` counters of `/proc/net/netstat` (the whole network namespace).
fn tcp_ext() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(kind, n)| format!("{kind} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
