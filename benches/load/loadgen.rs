//! The load generator's core: N authenticated agents hold WebSockets on a target (the daemon, or
//! the floor relay), calls arrive over SIP/UDP, SIP/TCP or as HEP copies at a fixed rate, each to
//! the next agent's extension with the next seeded customer as the caller, and every call's time
//! from the INVITE leaving the generator to its `ringing` frame (and `complete` frame, when the
//! daemon composes a profile) arriving at the agent is recorded in HDR histograms.
//!
//! A call is what a parallel fork delivers: INVITE, 100 Trying, then after `hold` a CANCEL (200,
//! 487, ACK), as when another phone answers. Shared by `benches/load/main.rs` and the CI smoke test
//! (`tests/load_smoke.rs`). Loopback only; every run is bounded by its call count and a deadline.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How the calls reach the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// SIP over UDP: the daemon as a parallel-fork target (answers 100, holds the call).
    Udp,
    /// SIP over one TCP connection.
    Tcp,
    /// HEPv3 copies over UDP (passive: no answers).
    Hep,
}

impl std::str::FromStr for Transport {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Transport> {
        Ok(match s {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "hep" => Transport::Hep,
            other => bail!("transport {other:?}: udp, tcp or hep"),
        })
    }
}

impl Transport {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Hep => "hep",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// How INVITEs travel.
    pub transport: Transport,
    /// Calls per second (open loop: the schedule does not wait for answers).
    pub rate: u64,
    /// Calls in the run.
    pub calls: usize,
    /// Ring time before the CANCEL; `None`: no CANCEL (INVITEs only; the calls stay ringing
    /// until the daemon's ring timeout).
    pub hold: Option<Duration>,
    /// How long to wait for the last frames after the last INVITE.
    pub settle: Duration,
    /// Wait for `complete` frames too (the daemon composes profiles).
    pub complete: bool,
    /// Offset into the callers, so a second pass can repeat (warm) or avoid (cold) the first's.
    pub caller_offset: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            transport: Transport::Udp,
            rate: 200,
            calls: 2000,
            hold: Some(Duration::from_millis(500)),
            settle: Duration::from_secs(2),
            complete: false,
            caller_offset: 0,
        }
    }
}

/// What a run measured. Latencies in microseconds.
pub struct Outcome {
    /// INVITEs sent.
    pub sent: usize,
    /// Calls whose `ringing` frame arrived.
    pub popped: usize,
    /// INVITE sent → `ringing` received.
    pub ringing: Histogram<u64>,
    /// INVITE sent → `complete` received (empty unless the scenario asked for it).
    pub complete: Histogram<u64>,
    /// The send rate achieved (calls / time from first to last INVITE).
    pub achieved_rate: f64,
    /// 100 Trying answers seen (SIP transports against the daemon).
    pub trying: usize,
    /// INVITE sent → 100 Trying received (SIP transports against the daemon).
    pub trying_latency: Histogram<u64>,
    /// The target's CPU time (user + system) per call over the run, µs, when it is a child
    /// process.
    pub cpu_per_call_us: Option<f64>,
}

impl Outcome {
    /// Calls sent whose pop never came.
    pub fn lost(&self) -> usize {
        self.sent - self.popped
    }
}

/// What is listening: the daemon or the floor relay.
pub struct Target {
    /// Human name for reports.
    pub name: &'static str,
    /// SIP over UDP (daemon) or the relay's UDP port (floor).
    pub udp: SocketAddr,
    /// SIP over TCP (daemon only).
    pub tcp: Option<SocketAddr>,
    /// HEP over UDP (daemon only).
    pub hep: Option<SocketAddr>,
    /// The HTTP/WebSocket listener.
    pub http: SocketAddr,
    /// The floor relay takes datagrams with a 4-byte agent index in front and answers nothing.
    pub floor: bool,
    /// The process to read RSS from, when the target is a child process.
    pub pid: Option<u32>,
}

/// The child process behind a target, ended by its PID when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL, and reaped: no signal can reach a PID the system may hand out again.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::mem::forget(self);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The agents' connections.
pub struct Agents {
    conns: Vec<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    /// Seconds to connect and authenticate all of them.
    pub connect_secs: f64,
}

/// The extension of agent `i`.
pub fn extension(i: usize) -> String {
    format!("{}", 200_000 + i)
}

/// The token of agent `i`.
pub fn token(i: usize) -> String {
    format!("load-token-{i}")
}

/// CPU time (user + system) a process has used, seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

/// Resident set size of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The seeded customers' numbers as callers: one E.164 number per demo customer, each number
/// belonging to exactly one customer (so every call is a plain match), in a fixed order.
pub fn callers() -> Vec<String> {
    let n = screenpop::resolve::Normaliser::new(phonenumber::country::Id::US);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
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
            let count = seen.entry(e164.clone()).or_insert(0);
            if *count == 0 {
                order.push(e164);
            }
            *count += 1;
        }
    }
    order.retain(|e| seen[e] == 1);
    order
}

/// Options for the daemon under test.
pub struct DaemonOptions {
    /// Agents to configure (extension `200000 + i`, token `load-token-i`).
    pub agents: usize,
    /// TOML appended to the generated config (sources, directory, call log).
    pub extra: String,
    /// Directory for the generated config.
    pub dir: PathBuf,
    /// `KEY=VALUE` settings passed as `run --set`, over the generated file's (which cannot
    /// name a section twice): e.g. `sip.ring_timeout=15m`.
    pub set: Vec<String>,
}

/// Writes a config for `opts` and starts `exe run --config …` as a child process; returns the
/// target once the daemon has printed its addresses.
pub fn spawn_daemon(exe: &Path, opts: &DaemonOptions) -> anyhow::Result<(Target, ChildGuard)> {
    std::fs::create_dir_all(&opts.dir)?;
    let has_directory = opts.extra.contains("[directory]");
    let mut config = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n\
         max_transactions = 400000\nmax_tcp_connections = 64\n\
         [hep]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n\
         [http]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_address = {0}\n\
         [push]\nmax_connections = {0}\n[calls]\nmax_calls = 400000\nanswered_ttl = \"60s\"\n",
        opts.agents + 100
    );
    if !has_directory {
        config.push_str(&format!(
            "[directory]\ncsv = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/customers.csv")
        ));
    }
    config.push_str(&opts.extra);
    config.push('\n');
    for i in 0..opts.agents {
        let hash = screenpop::config::TokenHash::of(&token(i)).hex();
        config.push_str(&format!(
            "[[agents]]\nid = \"a{i}\"\nextensions = [\"{}\"]\ntoken_sha256 = \"{hash}\"\n",
            extension(i)
        ));
    }
    let path = opts.dir.join("load.toml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&path)
        .args(opts.set.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .env("SCREENPOP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let guard = ChildGuard(child);
    let lines = read_banner(stdout, "HTTP ")?;
    let first = |prefix: &str, nth: usize| -> Option<SocketAddr> {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().nth(nth)?.parse().ok())
    };
    let target = Target {
        name: "screenpop",
        udp: first("SIP  udp ", 0).context("SIP udp address")?,
        tcp: first("SIP  udp ", 2),
        hep: first("HEP  udp ", 0),
        http: first("HTTP ", 0).context("HTTP address")?,
        floor: false,
        pid: Some(pid),
    };
    Ok((target, guard))
}

/// Starts `exe floor-relay` (the floor relay as a child process of the bench binary).
pub fn spawn_floor(exe: &Path) -> anyhow::Result<(Target, ChildGuard)> {
    let mut child = Command::new(exe)
        .arg("floor-relay")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} floor-relay", exe.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let guard = ChildGuard(child);
    let lines = read_banner(stdout, "FLOOR ")?;
    let line = lines.last().context("banner")?;
    let mut words = line.split_whitespace().skip(1);
    let udp = words.next().context("udp")?.parse()?;
    let http = words.next().context("ws")?.parse()?;
    Ok((floor_target(udp, http, Some(pid)), guard))
}

/// The floor relay's target description.
pub fn floor_target(udp: SocketAddr, http: SocketAddr, pid: Option<u32>) -> Target {
    Target {
        name: "floor relay",
        udp,
        tcp: None,
        hep: None,
        http,
        floor: true,
        pid,
    }
}

fn read_banner(stdout: std::process::ChildStdout, last: &str) -> anyhow::Result<Vec<String>> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("the target did not print its addresses")?;
        let done = line.trim().starts_with(last);
        lines.push(line);
        if done {
            return Ok(lines);
        }
    }
}

/// Connects and authenticates `n` agents, 256 at a time; returns once every one is signed in.
pub async fn connect_agents(target: &Target, n: usize) -> anyhow::Result<Agents> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let frames = if target.floor { 1 } else { 2 }; // ready (+ snapshot)
    let url = format!("ws://{}/ws", target.http);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
            ws.send(Message::text(format!(
                "{{\"type\":\"auth\",\"token\":\"{}\"}}",
                token(i)
            )))
            .await?;
            for _ in 0..frames {
                ws.next()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("closed during sign-in"))??;
            }
            drop(permit);
            anyhow::Ok(ws)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        conns.push(t.await??);
    }
    Ok(Agents {
        conns,
        connect_secs: started.elapsed().as_secs_f64(),
    })
}

/// The marker in the From display name that carries the call's number through the daemon.
const MARK: &[u8] = b"lgcall ";

fn parse_mark(frame: &[u8]) -> Option<usize> {
    number_after(frame, MARK)
}

/// The decimal number right after the first `marker` in `hay`.
fn number_after(hay: &[u8], marker: &[u8]) -> Option<usize> {
    let at = memchr_find(hay, marker)? + marker.len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn json_str<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = frame.find(key)? + key.len();
    let rest = &frame[at..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

const SDP: &str = "v=0\r\no=- 3894742110 3894742110 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 16384 RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

/// What every message of one run shares. A call's number picks its agent (round robin) and
/// its caller (from `offset`).
struct Plan {
    run: u64,
    via: &'static str,
    local: SocketAddr,
    n_agents: usize,
    callers: Arc<[String]>,
    offset: usize,
}

impl Plan {
    fn call(&self, n: usize) -> Call<'_> {
        Call {
            n,
            ext: extension(n % self.n_agents),
            caller: &self.callers[(self.offset + n) % self.callers.len()],
            run: self.run,
            via: self.via,
            local: self.local,
        }
    }
}

struct Call<'a> {
    run: u64,
    n: usize,
    ext: String,
    caller: &'a str,
    via: &'a str,
    local: SocketAddr,
}

impl Call<'_> {
    fn headers(&self, method: &str, to_tag: Option<&str>) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:{ext}@10.20.30.5:5060 SIP/2.0\r\n\
             Via: SIP/2.0/{via} {local};rport;branch=z9hG4bK-lg-{run}-{n}\r\n\
             Max-Forwards: 69\r\n\
             From: \"lgcall {n}\" <sip:{caller}@pbx.example.com>;tag=lg{run}-{n}\r\n\
             To: <sip:{ext}@pbx.example.com>{to_tag}\r\n\
             Call-ID: lg-{n}-{run}-{pid}@127.0.0.1\r\n\
             CSeq: 102 {method}\r\n",
            ext = self.ext,
            via = self.via,
            local = self.local,
            n = self.n,
            run = self.run,
            caller = self.caller,
            pid = std::process::id(),
        )
    }

    /// A realistic PBX fork INVITE with SDP, about 950 bytes.
    fn invite(&self) -> Vec<u8> {
        let mut m = self.headers("INVITE", None);
        m.push_str(&format!(
            "Contact: <sip:{caller}@{local};transport={t}>\r\n\
             P-Asserted-Identity: \"lgcall {n}\" <sip:{caller}@pbx.example.com>\r\n\
             Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
             Supported: replaces, timer, path\r\nSession-Expires: 1800\r\nMin-SE: 90\r\n\
             User-Agent: screenpop-loadgen\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{SDP}",
            caller = self.caller,
            local = self.local,
            t = self.via.to_ascii_lowercase(),
            n = self.n,
            len = SDP.len()
        ));
        m.into_bytes()
    }

    fn cancel(&self) -> Vec<u8> {
        let mut m = self.headers("CANCEL", None);
        m.push_str(
            "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\nContent-Length: 0\r\n\r\n",
        );
        m.into_bytes()
    }

    fn ack(&self, to_tag: &str) -> Vec<u8> {
        let mut m = self.headers("ACK", Some(to_tag));
        m.push_str("Content-Length: 0\r\n\r\n");
        m.into_bytes()
    }
}

/// The sending side of one run.
enum Wire {
    Udp(Arc<tokio::net::UdpSocket>, SocketAddr),
    Tcp(Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>),
    /// Socket, collector, the PBX address the copies claim to come from.
    Hep(Arc<tokio::net::UdpSocket>, SocketAddr, SocketAddr),
    Floor(Arc<tokio::net::UdpSocket>, SocketAddr),
}

impl Wire {
    async fn send(&self, msg: &[u8], agent: usize) -> anyhow::Result<()> {
        match self {
            Wire::Udp(s, to) => {
                s.send_to(msg, to).await?;
            }
            Wire::Tcp(w) => w.lock().await.write_all(msg).await?,
            Wire::Hep(s, to, pbx) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let pbx = *pbx;
                let phone: SocketAddr = (IpAddr::from([127, 0, 0, 1]), 5060).into();
                let packet = screenpop::telephony::hep::encode(
                    pbx,
                    phone,
                    (now.as_secs() as u32, now.subsec_micros()),
                    2001,
                    None,
                    msg,
                );
                s.send_to(&packet, to).await?;
            }
            Wire::Floor(s, to) => {
                let mut packet = Vec::with_capacity(msg.len() + 4);
                packet.extend_from_slice(&(agent as u32).to_be_bytes());
                packet.extend_from_slice(msg);
                s.send_to(&packet, to).await?;
            }
        }
        Ok(())
    }
}

/// Every run's Call-IDs, branches and tags are its own: the run's number is in each.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Rings agents: one INVITE over UDP to each agent in `to` (the call's number is the agent's
/// index, so its `From` display name is `lgcall <agent>`), at most `rate` a second, and no
/// CANCEL: each call rings until the daemon's `[sip] ring_timeout`. Returns how many 100 Trying
/// came back, waiting at most `wait` after the last INVITE.
pub async fn ring(
    target: &Target,
    n_agents: usize,
    to: &[usize],
    rate: u64,
    callers: &[String],
    wait: Duration,
) -> anyhow::Result<usize> {
    ensure!(
        target.udp.ip().is_loopback() && !target.floor,
        "the daemon on loopback only"
    );
    ensure!(!callers.is_empty(), "no callers");
    ensure!(to.iter().all(|&a| a < n_agents), "no such agent");
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    set_buffers(&socket);
    let wire = Arc::new(Wire::Udp(socket.clone(), target.udp));
    let plan = Arc::new(Plan {
        run: RUNS.fetch_add(1, Ordering::Relaxed),
        via: "UDP",
        local: socket.local_addr()?,
        n_agents,
        callers: callers.into(),
        offset: 0,
    });
    let trying = Arc::new(AtomicUsize::new(0));
    let answers = tokio::spawn(
        Answers {
            plan: plan.clone(),
            wire: wire.clone(),
            trying: trying.clone(),
            trying_at: Arc::new((0..n_agents).map(|_| AtomicU64::new(0)).collect()),
            epoch: Instant::now(),
        }
        .udp(socket),
    );
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = tokio::time::Instant::now();
    for (k, &agent) in to.iter().enumerate() {
        tokio::time::sleep_until(started + interval.mul_f64(k as f64)).await;
        wire.send(&plan.call(agent).invite(), agent).await?;
    }
    let until = tokio::time::Instant::now() + wait;
    while trying.load(Ordering::Relaxed) < to.len() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answers.abort();
    Ok(trying.load(Ordering::Relaxed))
}

/// Runs one scenario against `target` with the agents connected; the agents are kept for the
/// next scenario.
pub async fn run(
    target: &Target,
    agents: &mut Agents,
    scenario: &Scenario,
    callers: &[String],
) -> anyhow::Result<Outcome> {
    ensure!(
        target.udp.ip().is_loopback() && target.http.ip().is_loopback(),
        "loopback targets only"
    );
    ensure!(!agents.conns.is_empty(), "no agents");
    ensure!(!callers.is_empty(), "no callers");
    let n_agents = agents.conns.len();
    let calls = scenario.calls;
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let cpu_before = target.pid.and_then(cpu_secs);
    let epoch = Instant::now();
    let stamp = move || epoch.elapsed().as_nanos() as u64;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..calls).map(|_| AtomicU64::new(0)).collect());
    let ringing_at: Arc<Vec<AtomicU64>> = Arc::new((0..calls).map(|_| AtomicU64::new(0)).collect());
    let complete_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..calls).map(|_| AtomicU64::new(0)).collect());
    let popped = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));

    // One reader per agent: frames are matched to calls by the marker in the caller's display
    // name (the relay forwards the INVITE itself, which carries it too).
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::with_capacity(n_agents);
    for ws in agents.conns.drain(..) {
        let (ringing_at, complete_at) = (ringing_at.clone(), complete_at.clone());
        let (popped, completed, stop) = (popped.clone(), completed.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut ws = ws;
            let mut ids: HashMap<String, usize> = HashMap::new();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = ws.next() => msg,
                };
                let Some(Ok(msg)) = msg else { break };
                let now = stamp();
                match &msg {
                    Message::Binary(b) => {
                        if let Some(n) = parse_mark(b).filter(|n| *n < ringing_at.len())
                            && ringing_at[n].swap(now, Ordering::Relaxed) == 0
                        {
                            popped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Message::Text(t) => {
                        let t = t.as_str();
                        if t.starts_with("{\"type\":\"ringing\"") {
                            if let Some(n) =
                                parse_mark(t.as_bytes()).filter(|n| *n < ringing_at.len())
                            {
                                if ringing_at[n].swap(now, Ordering::Relaxed) == 0 {
                                    popped.fetch_add(1, Ordering::Relaxed);
                                }
                                if let Some(id) = json_str(t, "\"call_id\":\"") {
                                    ids.insert(id.to_owned(), n);
                                }
                            }
                        } else if t.starts_with("{\"type\":\"complete\"")
                            && let Some(n) =
                                json_str(t, "\"call_id\":\"").and_then(|id| ids.remove(id))
                            && complete_at[n].swap(now, Ordering::Relaxed) == 0
                        {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            ws
        }));
    }

    // The wire, and for SIP a reader of the answers that ACKs each 487.
    let trying = Arc::new(AtomicUsize::new(0));
    let trying_at: Arc<Vec<AtomicU64>> = Arc::new((0..calls).map(|_| AtomicU64::new(0)).collect());
    let (wire, local, reader) = match (scenario.transport, target.floor) {
        (Transport::Udp, floor) => {
            let s = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
            set_buffers(&s);
            let local = s.local_addr()?;
            let wire = if floor {
                Wire::Floor(s.clone(), target.udp)
            } else {
                Wire::Udp(s.clone(), target.udp)
            };
            let read = floor || std::env::var_os("LOADGEN_NO_ANSWERS").is_none();
            (wire, local, read.then_some(Reader::Udp(s)))
        }
        (_, true) => bail!("the floor relay takes UDP only"),
        (Transport::Tcp, false) => {
            let stream = tokio::net::TcpStream::connect(target.tcp.context("no SIP TCP")?).await?;
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?;
            let (r, w) = stream.into_split();
            let wire = Wire::Tcp(Arc::new(tokio::sync::Mutex::new(w)));
            (wire, local, Some(Reader::Tcp(r)))
        }
        (Transport::Hep, false) => {
            let s = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
            let local = s.local_addr()?;
            let to = target.hep.context("no HEP address")?;
            (Wire::Hep(s, to, (local.ip(), 5060).into()), local, None)
        }
    };
    let wire = Arc::new(wire);
    let plan = Arc::new(Plan {
        run,
        via: if scenario.transport == Transport::Tcp {
            "TCP"
        } else {
            "UDP"
        },
        local,
        n_agents,
        callers: callers.into(),
        offset: scenario.caller_offset,
    });
    let answers = reader.map(|reader| {
        let answers = Answers {
            plan: plan.clone(),
            wire: wire.clone(),
            trying: trying.clone(),
            trying_at: trying_at.clone(),
            epoch,
        };
        match reader {
            Reader::Udp(s) => tokio::spawn(answers.udp(s)),
            Reader::Tcp(r) => tokio::spawn(answers.tcp(r)),
        }
    });

    // Open-loop sending on the schedule; due CANCELs go out between INVITEs.
    let deadline = Instant::now() + Duration::from_secs(600);
    let interval = Duration::from_secs_f64(1.0 / scenario.rate.max(1) as f64);
    let started = Instant::now();
    let mut cancels: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut last_send = started;
    for n in 0..calls {
        let due = started + interval.mul_f64(n as f64);
        loop {
            let now = Instant::now();
            send_due_cancels(&wire, &plan, &mut cancels, now).await?;
            if now >= due {
                break;
            }
            let wake = cancels.front().map_or(due, |&(at, _)| at.min(due));
            if wake > now + Duration::from_millis(1) {
                tokio::time::sleep_until(wake.into()).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the run passed its 10-minute bound"
        );
        let invite = plan.call(n).invite();
        sent_at[n].store(stamp().max(1), Ordering::Relaxed);
        wire.send(&invite, n % n_agents).await?;
        last_send = Instant::now();
        if let (false, Some(hold)) = (target.floor, scenario.hold) {
            cancels.push_back((last_send + hold, n));
        }
    }
    let send_secs = (last_send - started).as_secs_f64().max(1e-9);

    // Wait for the last pops (and profiles), sending the remaining CANCELs on time.
    let wait_until = Instant::now() + scenario.settle + scenario.hold.unwrap_or_default();
    loop {
        let now = Instant::now();
        send_due_cancels(&wire, &plan, &mut cancels, now).await?;
        let all_in = popped.load(Ordering::Relaxed) >= calls
            && (!scenario.complete || completed.load(Ordering::Relaxed) >= calls);
        if (all_in && cancels.is_empty()) || now >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The last 487s to ACK.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    for r in readers {
        agents.conns.push(r.await?);
    }
    if let Some(a) = answers {
        a.abort();
    }

    let cpu_per_call_us = match (cpu_before, target.pid.and_then(cpu_secs)) {
        (Some(a), Some(b)) if calls > 0 => Some((b - a) * 1e6 / calls as f64),
        _ => None,
    };
    let mut ringing = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut complete = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut trying_latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut slow: Vec<(u64, u64, u64)> = Vec::new();
    let report_slow = std::env::var_os("LOADGEN_SLOW").is_some();
    // Latency in µs from the INVITE to a stamp, when both were taken.
    let record = |h: &mut Histogram<u64>, sent: u64, at: u64| {
        if sent > 0 && at >= sent {
            h.saturating_record(((at - sent) / 1000).max(1));
        }
    };
    for n in 0..calls {
        let sent = sent_at[n].load(Ordering::Relaxed);
        let r = ringing_at[n].load(Ordering::Relaxed);
        if report_slow && r > sent + 3_000_000 {
            let (at, lat) = (sent / 1_000_000, (r - sent) / 1_000_000);
            match slow.last_mut() {
                Some((start, end, worst)) if at <= *end + 20 => {
                    *end = at;
                    *worst = (*worst).max(lat);
                }
                _ => slow.push((at, at, lat)),
            }
        }
        record(&mut ringing, sent, r);
        record(
            &mut trying_latency,
            sent,
            trying_at[n].load(Ordering::Relaxed),
        );
        record(&mut complete, sent, complete_at[n].load(Ordering::Relaxed));
    }
    if !slow.is_empty() {
        let list: Vec<String> = slow
            .iter()
            .map(|(a, b, w)| format!("{a}-{b}ms:{w}ms"))
            .collect();
        eprintln!("stalls (sent between, worst pop): {}", list.join(" "));
    }
    Ok(Outcome {
        sent: calls,
        popped: popped.load(Ordering::Relaxed).min(calls),
        ringing,
        complete,
        achieved_rate: if calls > 1 {
            (calls - 1) as f64 / send_secs
        } else {
            0.0
        },
        trying: trying.load(Ordering::Relaxed),
        trying_latency,
        cpu_per_call_us,
    })
}

/// Sends the CANCELs due by `now` (the queue is in time order).
async fn send_due_cancels(
    wire: &Wire,
    plan: &Plan,
    cancels: &mut VecDeque<(Instant, usize)>,
    now: Instant,
) -> anyhow::Result<()> {
    while let Some(&(at, n)) = cancels.front()
        && at <= now
    {
        cancels.pop_front();
        wire.send(&plan.call(n).cancel(), n % plan.n_agents).await?;
    }
    Ok(())
}

/// Where the daemon's answers are read from.
enum Reader {
    Udp(Arc<tokio::net::UdpSocket>),
    Tcp(tokio::net::tcp::OwnedReadHalf),
}

/// Larger buffers for the generator's own UDP socket (best effort), so the generator's side
/// is not where datagrams are lost.
fn set_buffers(s: &tokio::net::UdpSocket) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
}

/// The reader of the daemon's answers: counts 100 Trying, ACKs each 487.
struct Answers {
    plan: Arc<Plan>,
    wire: Arc<Wire>,
    trying: Arc<AtomicUsize>,
    trying_at: Arc<Vec<AtomicU64>>,
    epoch: Instant,
}

impl Answers {
    async fn answer(&self, msg: &[u8]) {
        if msg.starts_with(b"SIP/2.0 100") {
            let now = self.epoch.elapsed().as_nanos() as u64;
            self.trying.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = std::str::from_utf8(msg).ok().and_then(call_number)
                && let Some(at) = self.trying_at.get(n)
            {
                at.store(now, Ordering::Relaxed);
            }
            return;
        }
        // Every final answer to an INVITE that is not a 2xx (487 after a CANCEL, 480 after the
        // ring timeout) is ACKed; the 200 to a CANCEL is not.
        let final_failure = msg.len() > 12
            && msg.starts_with(b"SIP/2.0 ")
            && (b'3'..=b'6').contains(&msg[8])
            && memchr_find(msg, b" INVITE\r\n").is_some();
        if !final_failure {
            return;
        }
        let Some((n, tag)) = std::str::from_utf8(msg).ok().and_then(call_and_tag) else {
            return;
        };
        let _ = self.wire.send(&self.plan.call(n).ack(tag), 0).await;
    }

    async fn udp(self, socket: Arc<tokio::net::UdpSocket>) {
        let mut buf = vec![0u8; 65536];
        while let Ok((len, _)) = socket.recv_from(&mut buf).await {
            self.answer(&buf[..len]).await;
        }
    }

    async fn tcp(self, mut read: tokio::net::tcp::OwnedReadHalf) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut chunk = vec![0u8; 1 << 16];
        while let Ok(len @ 1..) = read.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..len]);
            // Answers carry no body: each ends at the blank line.
            let mut start = 0;
            while let Some(end) = memchr_find(&buf[start..], b"\r\n\r\n") {
                let msg = buf[start..start + end + 4].to_vec();
                self.answer(&msg).await;
                start += end + 4;
            }
            buf.drain(..start);
        }
    }
}

/// The call number, from the Call-ID.
fn call_number(text: &str) -> Option<usize> {
    number_after(text.as_bytes(), b"Call-ID: lg-")
}

/// The call number and the To tag of a 487.
fn call_and_tag(text: &str) -> Option<(usize, &str)> {
    let n = call_number(text)?;
    let to = text
        .lines()
        .find(|l| l.starts_with("To:") || l.starts_with("t:"))?;
    let tag = to.split(";tag=").nth(1)?.split(';').next()?.trim();
    Some((n, tag))
}

/// Reads one counter or gauge (summed over its labels) from the daemon's `/metrics`.
pub async fn metric(http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let mut s = tokio::net::TcpStream::connect(http).await?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b))
}

/// A latency summary line, in microseconds.
pub fn summary(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "n={} p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}
