//! The helpers of the SIPp benchmark (`benches/sipp/run.sh`), one command each, so that the
//! script needs nothing but bash, SIPp and Kamailio besides.
//!
//! Run with: `cargo run --release --example sipp_peers -- COMMAND …`
//!
//! ```text
//! ports N                                  N free UDP ports on 127.0.0.1, one a line
//! callers --agents N --count M --out FILE  SIPp injection CSV: M demo customers' numbers
//!                                          (examples/data/customers.csv), each with an agent's
//!                                          extension, round robin
//! config --agents N --out FILE [--ring-timeout 120s]
//!                                          a `screenpop run` config: SIP/UDP and HTTP on
//!                                          127.0.0.1:0, the demo customers, N agents
//! probe IP:PORT                            an OPTIONS every 200 ms until anything answers
//!                                          (10 s at most; exit 1 then)
//! sink --port P --out FILE                 counts the datagrams received on 127.0.0.1:P by
//!                                          method (INVITE, CANCEL, other)
//! agents --http IP:PORT --agents N --out FILE
//!                                          N agents sign in over WebSocket and stay; counts the
//!                                          `ringing` and `ended` frames they receive
//! ```
//!
//! `sink` and `agents` rewrite FILE (`name value` lines, written aside and renamed, so a reader
//! never sees half of it) every 100 ms until they are ended by their PID. Loopback only.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The agents' extensions: 2000, 2001, …
fn extension(i: usize) -> usize {
    2000 + i
}

/// The token of agent `i`.
fn token(i: usize) -> String {
    format!("sipp-bench-{i}")
}

fn customers_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/customers.csv")
}

/// `--name value` pairs after the command.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Flags> {
        let mut out = Vec::new();
        let mut it = args;
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| anyhow::anyhow!("expected --flag, got {flag}"))?;
            let value = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("--{name} needs a value"))?;
            out.push((name.to_owned(), value));
        }
        Ok(Flags(out))
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> anyhow::Result<T> {
        let raw = self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow::anyhow!("--{name} is required"))?;
        raw.parse()
            .map_err(|_| anyhow::anyhow!("--{name}: cannot read {raw:?}"))
    }

    fn get_or<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        if self.0.iter().any(|(n, _)| n == name) {
            self.get(name)
        } else {
            Ok(default)
        }
    }
}

/// Writes `name value` lines to `path` through a rename.
fn publish(path: &Path, counts: &[(&str, u64)]) {
    let mut text = String::new();
    for (name, value) in counts {
        let _ = writeln!(text, "{name} {value}");
    }
    let aside = path.with_extension("tmp");
    if std::fs::write(&aside, text).is_ok() {
        let _ = std::fs::rename(&aside, path);
    }
}

fn loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(addr.ip().is_loopback(), "{addr}: loopback only");
    Ok(addr)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    match command.as_str() {
        "ports" => {
            let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            // Hold them all until printed, so the N are distinct.
            let sockets = (0..n)
                .map(|_| UdpSocket::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            for s in &sockets {
                println!("{}", s.local_addr()?.port());
            }
            Ok(())
        }
        "callers" => {
            let f = Flags::parse(args)?;
            callers(f.get("agents")?, f.get("count")?, &f.get::<PathBuf>("out")?)
        }
        "config" => {
            let f = Flags::parse(args)?;
            let ring_timeout = f.get_or("ring-timeout", String::from("120s"))?;
            config(f.get("agents")?, &ring_timeout, &f.get::<PathBuf>("out")?)
        }
        "probe" => {
            let target = loopback(args.next().unwrap_or_default().parse()?)?;
            probe(target)
        }
        "sink" => {
            let f = Flags::parse(args)?;
            sink(f.get("port")?, &f.get::<PathBuf>("out")?)
        }
        "agents" => {
            let f = Flags::parse(args)?;
            let http = loopback(f.get("http")?)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(agents(http, f.get("agents")?, f.get("out")?))
        }
        other => anyhow::bail!("unknown command {other:?} (see the header of this file)"),
    }
}

/// The demo customers' numbers as a caller would send them: separators dropped, the form
/// (national, `+1…`, `011 1…`, `1-…`) kept, so screenpop's normaliser sees the mix.
fn callers(agents: usize, count: usize, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(agents > 0, "--agents must be at least 1");
    let mut reader = csv::Reader::from_path(customers_csv())?;
    let mut numbers = Vec::new();
    for row in reader.records() {
        let row = row?;
        for entry in row.get(6).unwrap_or_default().split('|') {
            let raw = entry.split_once(':').map_or(entry, |(_, raw)| raw);
            let dialled: String = raw
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect();
            if !dialled.is_empty() {
                numbers.push(dialled);
            }
        }
    }
    anyhow::ensure!(!numbers.is_empty(), "no numbers in the customers CSV");
    let mut text = String::from("SEQUENTIAL\n");
    for i in 0..count {
        let _ = writeln!(
            text,
            "{};{}",
            numbers[i % numbers.len()],
            extension(i % agents)
        );
    }
    std::fs::write(out, text)?;
    Ok(())
}

fn config(agents: usize, ring_timeout: &str, out: &Path) -> anyhow::Result<()> {
    let mut text = format!(
        r#"# Generated by `sipp_peers config` for benches/sipp/run.sh.
[numbers]
default_region = "US"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
allow = ["127.0.0.0/8"]
ring_timeout = "{ring_timeout}"
# The bench cancels every call after a short ring; a transaction then waits 5 s for ACK
# retransmits (Timer I). At 40,000 calls/s that is ~220,000 held at once: no refusals.
max_transactions = 1000000
[http]
listen = "127.0.0.1:0"
[push]
max_connections = {}
[calls]
max_calls = 1000000
[directory]
csv = "{}"
"#,
        agents + 100,
        customers_csv().display()
    );
    for i in 0..agents {
        let hash = screenpop::config::TokenHash::of(&token(i)).hex();
        let _ = write!(
            text,
            "[[agents]]\nid = \"bench{i}\"\nextensions = [\"{}\"]\ntoken_sha256 = \"{hash}\"\n",
            extension(i)
        );
    }
    std::fs::write(out, text)?;
    Ok(())
}

fn probe(target: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let local = socket.local_addr()?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    for n in 0.. {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{target}: no answer to OPTIONS in 10 s"
        );
        let options = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKprobe{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\nTo: <sip:{target}>\r\n\
             Call-ID: probe-{n}-{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        socket.send_to(options.as_bytes(), target)?;
        if socket.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    unreachable!("the loop returns or fails")
}

/// A blocking receive loop on a thread of its own: nothing else runs in this process, so the
/// sink costs one `recvfrom` and a prefix compare per datagram. Its receive buffer is as large
/// as the kernel allows (`net.core.rmem_max`): SIPp sends in bursts, and with the default
/// (208 KiB, ~150 INVITEs) a few milliseconds off the CPU lose datagrams.
fn sink(port: u16, out: &Path) -> anyhow::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(SINK_RCVBUF)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    println!(
        "sink on 127.0.0.1:{port}, SO_RCVBUF {} bytes",
        socket.recv_buffer_size()?
    );
    std::io::stdout().flush()?;
    let socket = UdpSocket::from(socket);
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(len) = socket.recv(&mut buf) else {
                continue;
            };
            let slot = if buf[..len].starts_with(b"INVITE ") {
                0
            } else if buf[..len].starts_with(b"CANCEL ") {
                1
            } else {
                2
            };
            c[slot].fetch_add(1, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        publish(
            out,
            &[
                ("invite", counts[0].load(Ordering::Relaxed)),
                ("cancel", counts[1].load(Ordering::Relaxed)),
                ("other", counts[2].load(Ordering::Relaxed)),
                ("uptime_ms", start.elapsed().as_millis() as u64),
            ],
        );
    }
}

/// The sink's receive buffer asked for (Linux doubles it, then caps it at `rmem_max`).
const SINK_RCVBUF: usize = 4 << 20;

/// Counters of the agents' frames.
#[derive(Default)]
struct Frames {
    ringing: AtomicU64,
    ended: AtomicU64,
    other: AtomicU64,
    /// Connections the daemon closed (4429: too slow to read).
    closed: AtomicU64,
}

async fn agents(http: SocketAddr, n: usize, out: PathBuf) -> anyhow::Result<()> {
    let frames = Arc::new(Frames::default());
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
        ws.send(Message::text(format!(
            "{{\"type\":\"auth\",\"token\":\"{}\"}}",
            token(i)
        )))
        .await?;
        // `ready`, then the `snapshot`.
        for _ in 0..2 {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => {}
                other => anyhow::bail!("agent {i}: sign-in failed: {other:?}"),
            }
        }
        sockets.push(ws);
    }
    let mut readers = Vec::with_capacity(n);
    for ws in sockets {
        let frames = frames.clone();
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let counter = if t.contains("\"type\":\"ringing\"") {
                            &frames.ringing
                        } else if t.contains("\"type\":\"ended\"") {
                            &frames.ended
                        } else {
                            &frames.other
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Close(_)) | Err(_) => {
                        frames.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    // Signed in: say so on stdout (run.sh waits for this line).
    println!("{n} agents signed in");
    std::io::stdout().flush()?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        publish(
            &out,
            &[
                ("ringing", frames.ringing.load(Ordering::Relaxed)),
                ("ended", frames.ended.load(Ordering::Relaxed)),
                ("other", frames.other.load(Ordering::Relaxed)),
                ("closed", frames.closed.load(Ordering::Relaxed)),
            ],
        );
    }
}
