//! A bounded SIP load generator: INVITEs over UDP (or TCP) to screenpop on loopback, counting the
//! 100 Trying answers, reporting INVITEs per second and INVITE → 100 Trying latency.
//!
//! Run with: `cargo run --release --example sip_load -- [--invites 200000] [--senders 4] [--window 64] [--tcp] [--target IP:PORT]`
//!
//! Without `--target` it starts the demo daemon in-process on 127.0.0.1:0 (transaction and call
//! table caps raised to the INVITE count, so nothing is refused), so generator and daemon share
//! the machine, as they would on a loopback benchmark. Callers are drawn from the demo customers.
//! Only loopback targets are accepted; the run stops after `--invites` or 60 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use screenpop::telephony::sip::scan::{Name, StartLine, Transport, scan};

struct Args {
    invites: u64,
    senders: usize,
    window: usize,
    tcp: bool,
    target: Option<SocketAddr>,
}

fn args() -> Args {
    let mut a = Args {
        invites: 200_000,
        senders: 4,
        window: 64,
        tcp: false,
        target: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--invites" => a.invites = value().parse().expect("number"),
            "--senders" => a.senders = value().parse().expect("number"),
            "--window" => a.window = value().parse().expect("number"),
            "--target" => a.target = Some(value().parse().expect("IP:PORT")),
            "--tcp" => a.tcp = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

const CALLERS: &[&str] = &[
    "+14155550100",
    "(415) 555-0100",
    "+13125550142",
    "+12125550199",
    "+17025551655",
];

fn invite(local: SocketAddr, transport: &str, n: u64) -> Vec<u8> {
    let caller = CALLERS[(n % CALLERS.len() as u64) as usize];
    let ext = if n.is_multiple_of(2) { "1001" } else { "1002" };
    let caller_escaped = caller.replace(' ', "%20");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:{ext}@screenpop.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};rport;branch=z9hG4bKload{n}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Load Caller\" <sip:{caller_escaped}@pbx.test>;tag=ld{n}\r\n\
         To: <sip:{ext}@pbx.test>\r\n\
         Call-ID: load-{n}-{local}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:load@{local}>\r\n\
         P-Asserted-Identity: \"Load Caller\" <sip:{caller_escaped}@pbx.test>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// Responses other than 100 Trying (a 400 here means the generator is broken).
static OTHER: AtomicU64 = AtomicU64::new(0);

fn call_number(bytes: &[u8]) -> Option<u64> {
    let msg = scan(bytes, Transport::Datagram).ok()?;
    let StartLine::Response { code, .. } = msg.start else {
        return None;
    };
    if code != 100 {
        OTHER.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let cid = std::str::from_utf8(msg.headers.get(Name::CallId)?).ok()?;
    cid.strip_prefix("load-")?.split('-').next()?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let _daemon;
    let target = match a.target {
        Some(t) => {
            anyhow::ensure!(t.ip().is_loopback(), "only loopback targets are allowed");
            t
        }
        None => {
            let any: SocketAddr = "127.0.0.1:0".parse()?;
            let mut settings = screenpop::demo::settings(screenpop::demo::DemoAddrs {
                sip: any,
                hep: any,
                http: any,
                sip_tls: None,
            })?;
            settings.max_transactions = a.invites as usize + 1;
            settings.tracker.max_calls = a.invites as usize + 1;
            settings.ring_timeout = Duration::from_secs(3600);
            let d = screenpop::daemon::Daemon::start(settings).await?;
            let t = d.bound.sip_udp[0];
            _daemon = d;
            t
        }
    };
    let per_sender = a.invites / a.senders as u64;
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for s in 0..a.senders {
        let answered = answered.clone();
        let (tcp, window) = (a.tcp, a.window);
        tasks.push(tokio::spawn(async move {
            sender(
                s as u64, per_sender, window, tcp, target, deadline, answered,
            )
            .await
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let got = answered.load(Ordering::Relaxed);
    let other = OTHER.load(Ordering::Relaxed);
    if other > 0 {
        println!("warning: {other} responses other than 100 Trying");
    }
    println!(
        "{} INVITEs over {}, {} answered 100 Trying in {:.2} s: {:.0} INVITEs/s; INVITE→100 p50 {} µs, p99 {} µs, max {} µs ({} senders, window {})",
        per_sender * a.senders as u64,
        if a.tcp { "TCP" } else { "UDP" },
        got,
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
        a.senders,
        a.window,
    );
    Ok(())
}

/// Sends `count` INVITEs keeping at most `window` unanswered; returns latencies in µs.
async fn sender(
    id: u64,
    count: u64,
    window: usize,
    tcp: bool,
    target: SocketAddr,
    deadline: Instant,
    answered: Arc<AtomicU64>,
) -> anyhow::Result<Vec<u32>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = id * 1_000_000_000;
    let mut sent_at = vec![Instant::now(); count as usize];
    let mut latencies = Vec::with_capacity(count as usize);
    let mut next = 0u64;
    let mut done = 0u64;
    let mut buf = vec![0u8; 65_536];
    if tcp {
        let stream = tokio::net::TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let mut pending = bytes::BytesMut::new();
        while done < count && Instant::now() < deadline {
            while next < count && (next - done) < window as u64 {
                sent_at[next as usize] = Instant::now();
                wr.write_all(&invite(local, "TCP", base + next)).await?;
                next += 1;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(2), rd.read_buf(&mut pending)).await??;
            anyhow::ensure!(n > 0, "connection closed");
            while let Ok(screenpop::telephony::sip::scan::Frame::Message(len)) =
                screenpop::telephony::sip::scan::frame(&pending)
            {
                let msg = pending.split_to(len);
                if let Some(k) = call_number(&msg) {
                    latencies.push(sent_at[(k - base) as usize].elapsed().as_micros() as u32);
                    done += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    } else {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(target).await?;
        let local = socket.local_addr()?;
        while done < count && Instant::now() < deadline {
            while next < count && (next - done) < window as u64 {
                sent_at[next as usize] = Instant::now();
                socket.send(&invite(local, "UDP", base + next)).await?;
                next += 1;
            }
            match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    if let Some(k) = call_number(&buf[..n]) {
                        latencies.push(sent_at[(k - base) as usize].elapsed().as_micros() as u32);
                        done += 1;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A lost datagram: count it as done (unanswered) so the window moves on.
                _ => done = next,
            }
        }
    }
    Ok(latencies)
}
