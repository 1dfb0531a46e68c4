//! Hot reload on the release binary (issue 18): `screenpop reload` and SIGHUP re-read the
//! config; an agent added can sign in, one removed is signed out, a source added is on the
//! next pop, connected agents stay connected, and a broken config is refused whole (file, line
//! and key in the command's output and in the log) while the running one keeps serving; PBX
//! connections added, changed and removed are opened and closed, unchanged ones kept.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use screenpop::config::TokenHash;
use serde_json::json;
use support::binary::Process;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_screenpop");

/// The binary on `config`, writing its pid to `pid_file` (for `screenpop reload`).
fn start(config: &Path, pid_file: &Path) -> Process {
    let daemon = Process::start(config, &["--pid-file".as_ref(), pid_file.as_os_str()]);
    // The pid file is written right after the banner.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon
}

fn agent(id: &str, ext: &str) -> String {
    format!(
        "[[agents]]\nid = \"{id}\"\nextensions = [\"{ext}\"]\ntoken_sha256 = \"{}\"\n",
        TokenHash::of(&format!("{id}-t")).hex()
    )
}

/// The config: the HTTP and SIP ports fixed after the first start (a restart-free reload must
/// not move them), the customers CSV beside it.
fn write_config(dir: &Path, listen: (&str, &str), agents: &[(&str, &str)], extra: &str) {
    let mut text = format!(
        "[sip]\nudp = [\"{}\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"{}\"\n\
         [directory]\ncsv = \"customers.csv\"\n",
        listen.0, listen.1
    );
    for (id, ext) in agents {
        text.push_str(&agent(id, ext));
    }
    text.push_str(extra);
    std::fs::write(dir.join("screenpop.toml"), text).expect("config");
}

/// A data source over a CSV file, keyed by customer id.
const TICKETS: &str = "[[sources]]\nname = \"tickets\"\ntype = \"csv\"\npath = \"tickets.csv\"\n\
                       key_column = \"customer\"\nmatch = \"customer_id\"\nrows = \"many\"\n";

fn reload_cmd(dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["reload", "--config"])
        .arg(dir.join("screenpop.toml"))
        .arg("--pid-file")
        .arg(dir.join("screenpop.pid"))
        .output()
        .expect("reload runs")
}

async fn ring(sip: SocketAddr, call: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("local");
    let invite = format!(
        "INVITE sip:1001@screenpop.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+14155550100@pbx.test>;tag=t-{call}\r\n\
         To: <sip:1001@pbx.test>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+14155550100@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(invite.as_bytes(), sip).await.expect("send");
}

/// The close code a socket ends with (skipping messages), within 10 s.
async fn close_code(ws: &mut ws::Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// Whether a sign-in with `token` is accepted (`ready`) or closed.
async fn signs_in(http: SocketAddr, token: &str) -> bool {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws");
    ws::send(&mut socket, json!({"type": "auth", "token": token})).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                return v["type"] == "ready";
            }
            Ok(Some(Ok(_))) => continue,
            _ => return false,
        }
    }
}

fn run_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "screenpop-reload-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_agents_and_sources_keeps_sockets_and_refuses_a_broken_config() {
    let dir = run_dir();
    std::fs::write(
        dir.join("customers.csv"),
        "id,name,company,account,crm_url,tags,numbers\n\
         acme,Acme Corporation,Acme,ACME-1,,,main:(415) 555-0100\n",
    )
    .expect("customers");
    std::fs::write(
        dir.join("tickets.csv"),
        "customer,ticket,status\nacme,T-1,open\nacme,T-2,closed\n",
    )
    .expect("tickets");
    // First start on free ports, then pinned to them for every later version.
    write_config(
        &dir,
        ("127.0.0.1:0", "127.0.0.1:0"),
        &[("alice", "1001"), ("carol", "1003")],
        "",
    );
    let pid_file = dir.join("screenpop.pid");
    let daemon = start(&dir.join("screenpop.toml"), &pid_file);
    let (sip, http) = (daemon.sip.to_string(), daemon.http.to_string());
    write_config(
        &dir,
        (&sip, &http),
        &[("alice", "1001"), ("carol", "1003")],
        "",
    );

    let (mut alice, _) = ws::sign_in(daemon.http, "alice-t").await;
    let (mut carol, _) = ws::sign_in(daemon.http, "carol-t").await;
    assert!(
        !signs_in(daemon.http, "bob-t").await,
        "bob is not an agent yet"
    );
    ring(daemon.sip, "before").await;
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["customer"]["id"], "acme", "{pop}");

    // bob added, carol removed, a source added: `screenpop reload`.
    write_config(
        &dir,
        (&sip, &http),
        &[("alice", "1001"), ("bob", "1002")],
        TICKETS,
    );
    let out = reload_cmd(&dir);
    assert!(
        out.status.success(),
        "{}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded"));
    assert_eq!(
        close_code(&mut carol).await,
        Some(4401),
        "carol is signed out"
    );
    assert!(signs_in(daemon.http, "bob-t").await, "bob can sign in");
    assert!(!signs_in(daemon.http, "carol-t").await, "carol cannot");
    // alice never left: her socket gets the next pop, with the new source's section.
    ring(daemon.sip, "after").await;
    let pop = ws::expect(&mut alice, "ringing").await;
    let call_id = pop["call_id"].as_str().expect("id").to_owned();
    let section = loop {
        let m = ws::expect(&mut alice, "section").await;
        if m["call_id"] == call_id.as_str() {
            break m;
        }
    };
    assert_eq!(section["name"], "tickets", "{section}");
    assert_eq!(section["data"][1]["ticket"], "T-2", "{section}");

    // A broken config: refused by the command (file, line, key), and by SIGHUP in the log.
    let good = std::fs::read_to_string(dir.join("screenpop.toml")).expect("read");
    let broken = good.replace("[http]\n", "[http]\nlisten_typo = 1\n");
    std::fs::write(dir.join("screenpop.toml"), &broken).expect("broken");
    let line = broken
        .lines()
        .position(|l| l.starts_with("listen_typo"))
        .expect("line")
        + 1;
    let out = reload_cmd(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("screenpop.toml:{line}")) && stderr.contains("listen_typo"),
        "{stderr}"
    );
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    assert!(
        Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("Config reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = daemon.log();
    assert!(
        log.contains(&format!("screenpop.toml:{line}")) && log.contains("listen_typo"),
        "{log}"
    );
    // Still the reloaded config: bob signs in, alice still gets pops.
    assert!(signs_in(daemon.http, "bob-t").await);
    ring(daemon.sip, "after-broken").await;
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["customer"]["id"], "acme");
    assert_eq!(
        support::metric(
            daemon.http,
            "screenpop_config_reloads_total",
            "result=\"refused\""
        )
        .await,
        1.0
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PBX's event socket as far as the daemon's connection goes: accepted, and seen to close.
struct FakePbx {
    listener: tokio::net::TcpListener,
}

impl FakePbx {
    async fn bind() -> FakePbx {
        FakePbx {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        }
    }

    fn address(&self) -> String {
        self.listener.local_addr().expect("addr").to_string()
    }

    /// The daemon's next connection, within 5 s.
    async fn accepted(&self, daemon: &Process) -> tokio::net::TcpStream {
        match tokio::time::timeout(Duration::from_secs(5), self.listener.accept()).await {
            Ok(Ok((stream, _))) => stream,
            _ => panic!("the daemon did not connect\nlog:\n{}", daemon.log()),
        }
    }
}

/// Whether the daemon closes `stream` within `within` (it sends nothing before the PBX's
/// greeting, and gives up on a silent PBX only after its 10 s login timeout).
async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn esl(name: &str, address: &str) -> String {
    format!("[[esl]]\nname = \"{name}\"\naddress = \"{address}\"\npassword = \"ClueCon\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_pbx_connections_without_dropping_agents() {
    let dir = run_dir();
    std::fs::write(
        dir.join("customers.csv"),
        "id,name,company,account,crm_url,tags,numbers\n",
    )
    .expect("customers");
    write_config(
        &dir,
        ("127.0.0.1:0", "127.0.0.1:0"),
        &[("alice", "1001")],
        "",
    );
    let daemon = start(&dir.join("screenpop.toml"), &dir.join("screenpop.pid"));
    let listen = (daemon.sip.to_string(), daemon.http.to_string());
    let listen = (listen.0.as_str(), listen.1.as_str());
    let (mut alice, _) = ws::sign_in(daemon.http, "alice-t").await;
    let (one, two) = (FakePbx::bind().await, FakePbx::bind().await);

    // Added, by SIGHUP: the daemon connects to the PBX.
    write_config(
        &dir,
        listen,
        &[("alice", "1001")],
        &esl("fs1", &one.address()),
    );
    daemon.signal("-HUP");
    let mut first = one.accepted(&daemon).await;

    // Changed (another address), by `screenpop reload`: the old connection closes, a new one
    // opens at the new address.
    write_config(
        &dir,
        listen,
        &[("alice", "1001")],
        &esl("fs1", &two.address()),
    );
    let out = reload_cmd(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        closed(&mut first, Duration::from_secs(5)).await,
        "the old connection is closed"
    );
    let mut second = two.accepted(&daemon).await;

    // Unchanged on a reload that touches something else: the connection stays.
    write_config(
        &dir,
        listen,
        &[("alice", "1001"), ("bob", "1002")],
        &esl("fs1", &two.address()),
    );
    assert!(reload_cmd(&dir).status.success());
    assert!(
        !closed(&mut second, Duration::from_secs(2)).await,
        "an unchanged PBX keeps its connection"
    );

    // Removed: its connection closes and no other opens.
    write_config(&dir, listen, &[("alice", "1001"), ("bob", "1002")], "");
    assert!(reload_cmd(&dir).status.success());
    assert!(
        closed(&mut second, Duration::from_secs(3)).await,
        "a removed PBX is disconnected"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), two.listener.accept())
            .await
            .is_err(),
        "no reconnect to a removed PBX"
    );

    // alice stayed connected through all of it: the next call pops on the same socket.
    ring(daemon.sip, "after-intakes").await;
    let pop = ws::expect(&mut alice, "ringing").await;
    assert_eq!(pop["extension"], "1001", "{pop}");
    let _ = std::fs::remove_dir_all(&dir);
}
