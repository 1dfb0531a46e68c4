//! Real SIP peers for the tests: a Kamailio started on a free loopback port with a generated
//! config in a run directory of its own, and SIPp scenarios (`tests/sipp/`) as callers and
//! phones. Every process is started in its own process group and ended by its PID when its guard
//! drops, also when a test fails (its log tail is printed then); the run directory goes with it.
//!
//! Needs the Debian packages `kamailio`, `kamailio-presence-modules`, `kamailio-tls-modules` and
//! `sip-tester` (`.ci/run` installs them). A missing tool is a failure, not a skip: the message
//! says how to install it.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    pub kamailio: PathBuf,
    pub modules: PathBuf,
    pub sipp: PathBuf,
}

fn which(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(extra.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The tools; panics, saying what to install, when one is missing.
pub fn tools() -> Tools {
    let kamailio = which(
        "kamailio",
        &["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"],
    );
    let modules = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/lib64/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| {
        ["presence_dialoginfo.so", "siptrace.so", "tls.so"]
            .iter()
            .all(|m| d.join(m).is_file())
    });
    let sipp = which("sipp", &[]);
    match (kamailio, modules, sipp) {
        (Some(kamailio), Some(modules), Some(sipp)) => Tools {
            kamailio,
            modules,
            sipp,
        },
        missing => panic!(
            "kamailio, kamailio-presence-modules, kamailio-tls-modules or sip-tester missing \
             ({missing:?}): `apt-get install kamailio kamailio-presence-modules \
             kamailio-tls-modules sip-tester`, as `.ci/run` does"
        ),
    }
}

/// A free UDP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A free UDP port `p` with `p + 2` free too (SIPp's media sockets).
pub fn free_pair() -> u16 {
    for _ in 0..64 {
        let p = free_port();
        if p < 65_000 && UdpSocket::bind(("127.0.0.1", p + 2)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair")
}

/// Whether something has bound `127.0.0.1:port` (UDP).
fn bound(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// A temporary directory removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(what: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-{what}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("run dir");
        RunDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started process, ended by its PID on drop: SIGTERM, up to 3 s to exit, then SIGKILL to
/// its process group (workers a main process left behind included).
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` in a process group of its own, output to `log`.
    pub fn spawn(mut cmd: Command, name: &str, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code, or `None`.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of its output.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn signal(target: &str, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Proc {
    /// Ends it: SIGTERM to its PID, up to 3 s, then SIGKILL to its process group.
    pub fn terminate(&mut self) {
        let pid = self.pid();
        if let Ok(None) = self.child.try_wait() {
            Proc::signal(&pid.to_string(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The group's id is the PID we started: whatever of it is left goes too.
        Proc::signal(&format!("-{pid}"), "-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}), last lines of {} ----\n{}\n----",
                self.name,
                self.pid(),
                self.log.display(),
                self.tail(40)
            );
        }
        self.terminate();
    }
}

/// What the generated Kamailio does besides relaying INVITEs to the phone.
#[derive(Debug, Clone)]
pub enum Role {
    /// Presence server for `Event: dialog`: `presence` + `presence_dialoginfo`, `pua_dialoginfo`
    /// (with `include_localremote`) publishing the dialogs the `dialog` module tracks, and
    /// SUBSCRIBE authenticated by `auth_db` against a db_text `subscriber` table holding
    /// `user`/`password`.
    Presence { user: String, password: String },
    /// HEPv3 mirror of every message (`siptrace`, `trace_mode` 1) to `hep`, with `auth_key`.
    Hep { hep: SocketAddr, auth_key: String },
    /// Parallel fork: every INVITE also goes to screenpop's SIP listener at `screenpop`, as a
    /// second branch (`append_branch`) naming the dialled extension.
    Fork { screenpop: SocketAddr },
    /// Parallel fork as [`Role::Fork`], to screenpop's SIP-over-TLS listener: Kamailio's `tls`
    /// module, verifying screenpop's certificate against `ca` and presenting `cert`/`key` (a
    /// client certificate, for mutual TLS).
    ForkTls {
        screenpop: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
}

/// The `tls.cfg` of [`Role::ForkTls`]: Kamailio as a TLS client checks screenpop's certificate
/// against `ca` and presents its own; the server profile (unused: nothing connects to
/// Kamailio over TLS here) carries the same pair, as the module wants one.
pub fn kamailio_tls_cfg(cert: &Path, key: &Path, ca: &Path) -> String {
    format!(
        r#"# Generated by tests/support/peers.rs.
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {cert}
private_key = {key}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {cert}
private_key = {key}
ca_list = {ca}
"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    )
}

/// The dbtext tables the presence role needs (headers as Kamailio 5.6 ships them in
/// `/usr/share/kamailio/dbtext/kamailio/`).
const TABLES: &[(&str, &str, u32)] = &[
    (
        "active_watchers",
        "id(int,auto) presentity_uri(string) watcher_username(string) watcher_domain(string) to_user(string) to_domain(string) event(string) event_id(string,null) to_tag(string) from_tag(string) callid(string) local_cseq(int) remote_cseq(int) contact(string) record_route(string,null) expires(int) status(int) reason(string,null) version(int) socket_info(string) local_contact(string) from_user(string) from_domain(string) updated(int) updated_winfo(int) flags(int) user_agent(string,null) ",
        12,
    ),
    (
        "presentity",
        "id(int,auto) username(string) domain(string) event(string) etag(string) expires(int) received_time(int) body(string) sender(string) priority(int) ruid(string,null) ",
        5,
    ),
    (
        "pua",
        "id(int,auto) pres_uri(string) pres_id(string) event(int) expires(int) desired_expires(int) flag(int) etag(string) tuple_id(string,null) watcher_uri(string) call_id(string) to_tag(string) from_tag(string) cseq(int) record_route(string,null) contact(string) remote_contact(string) version(int) extra_headers(string) ",
        7,
    ),
    (
        "subscriber",
        "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) ",
        7,
    ),
    (
        "watchers",
        "id(int,auto) presentity_uri(string) watcher_username(string) watcher_domain(string) event(string) status(int) reason(string,null) inserted_time(int) ",
        3,
    ),
    (
        "xcap",
        "id(int,auto) username(string) domain(string) doc(string) doc_type(int) etag(string) source(int) doc_uri(string) port(int) ",
        4,
    ),
];

/// The SIP domain the generated Kamailio serves (an `alias`).
pub const DOMAIN: &str = "pbx.test";

fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// The Kamailio config: listens on `port`, relays every INVITE to the phone at `phone`, and
/// plays `role`. Also what `docs/pbx/kamailio-opensips.md` quotes.
pub fn kamailio_cfg(tools: &Tools, dir: &Path, port: u16, phone: u16, role: &Role) -> String {
    // Over TLS Kamailio needs TCP on, and a TLS socket of its own to connect from.
    let transport = match role {
        Role::ForkTls { .. } => format!(
            "disable_tcp=no\nenable_tls=yes\ntcp_children=2\nlisten=tls:127.0.0.1:{}\n",
            free_tcp_port()
        ),
        _ => "disable_tcp=yes\n".to_owned(),
    };
    let mut cfg = format!(
        r#"#!KAMAILIO
# Generated by tests/support/peers.rs.
debug=2
log_stderror=yes
children=2
{transport}auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{DOMAIN}"
mpath="{modules}/"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
"#,
        modules = tools.modules.display(),
    );
    match role {
        Role::Presence { .. } => cfg.push_str(&format!(
            r#"loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "dialog.so"
loadmodule "presence.so"
loadmodule "presence_dialoginfo.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"

modparam("auth", "qop", "auth")
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("dialog", "dlg_flag", 4)
modparam("presence", "db_url", "text://{db}")
modparam("presence", "server_address", "sip:127.0.0.1:{port}")
modparam("presence", "subs_db_mode", 0)
modparam("pua", "db_url", "text://{db}")
modparam("pua", "db_mode", 0)
modparam("pua", "outbound_proxy", "sip:127.0.0.1:{port}")
modparam("pua_dialoginfo", "include_callid", 1)
modparam("pua_dialoginfo", "include_tags", 1)
modparam("pua_dialoginfo", "include_localremote", 1)
"#,
            db = dir.join("db").display(),
        )),
        // corex's append_branch() takes variables (the core one only a literal).
        Role::Fork { .. } => cfg.push_str("loadmodule \"corex.so\"\n"),
        Role::ForkTls { .. } => cfg.push_str(&format!(
            "loadmodule \"corex.so\"\nloadmodule \"tls.so\"\n\nmodparam(\"tls\", \"config\", \"{}\")\n",
            dir.join("tls.cfg").display()
        )),
        Role::Hep { hep, auth_key } => cfg.push_str(&format!(
            r#"loadmodule "siptrace.so"

modparam("siptrace", "duplicate_uri", "sip:{hep}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", 103)
modparam("siptrace", "auth_key", "{auth_key}")
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "trace_mode", 1)
"#
        )),
    }
    let presence = matches!(role, Role::Presence { .. });
    let fork = match role {
        // append_branch() copies the current $du and Path into the new branch: append
        // screenpop's before lookup("location") (here: the $du below) sets them for the phone.
        Role::Fork { screenpop } => format!(
            r#"$var(agent) = $rU;
        append_branch("sip:$var(agent)@{screenpop}");"#
        ),
        Role::ForkTls { screenpop, .. } => format!(
            r#"$var(agent) = $rU;
        append_branch("sip:$var(agent)@{screenpop};transport=tls");"#
        ),
        _ => String::new(),
    };
    cfg.push_str(&format!(
        r#"
request_route {{
    xlog("L_INFO", "REQ $rm $ru from $si:$sp\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        {in_dialog_subscribe}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    {presence_routes}
    if (is_method("INVITE")) {{
        record_route();
        {dialog_flag}
        {fork}
        $du = "sip:127.0.0.1:{phone}";
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"#,
        in_dialog_subscribe = if presence {
            r#"if (is_method("SUBSCRIBE")) { route(SUBSCRIBE); exit; }"#
        } else {
            ""
        },
        presence_routes = if presence {
            r#"if (is_method("PUBLISH")) { handle_publish(); t_release(); exit; }
    if (is_method("SUBSCRIBE")) { route(SUBSCRIBE); exit; }"#
        } else {
            ""
        },
        dialog_flag = if presence { "setflag(4);" } else { "" },
    ));
    if presence {
        cfg.push_str(
            r#"
route[SUBSCRIBE] {
    if (!auth_check("$fd", "subscriber", "1")) {
        auth_challenge("$fd", "1");
        exit;
    }
    consume_credentials();
    if (!t_newtran()) { sl_reply_error(); exit; }
    handle_subscribe();
    t_release();
}
"#,
        );
    }
    cfg
}

/// A running Kamailio.
pub struct Kamailio {
    pub addr: SocketAddr,
    pub proc: Proc,
    cfg: PathBuf,
    role: Role,
    tools: Tools,
    dir: RunDir,
}

impl Kamailio {
    /// Writes the config (and, for presence, the db_text tables) and starts Kamailio in the
    /// foreground (`-DD -E`); returns once it answers an OPTIONS.
    pub async fn start(tools: &Tools, phone: u16, role: Role) -> Kamailio {
        let dir = RunDir::new("kamailio");
        Kamailio::tables(dir.path(), &role);
        if let Role::ForkTls { cert, key, ca, .. } = &role {
            std::fs::write(dir.path().join("tls.cfg"), kamailio_tls_cfg(cert, key, ca))
                .expect("tls.cfg");
        }
        let port = free_port();
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg(tools, dir.path(), port, phone, &role)).expect("cfg");
        let mut k = Kamailio {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            proc: Kamailio::spawn(tools, dir.path(), &cfg, "kamailio.log"),
            cfg,
            role,
            tools: tools.clone(),
            dir,
        };
        k.ready().await;
        k
    }

    /// Fresh db_text tables for the presence role, with the one subscriber. (Kamailio writes
    /// the presentity table back on exit in a form it cannot read again: a restart needs them
    /// anew.)
    fn tables(dir: &Path, role: &Role) {
        let Role::Presence { user, password } = role else {
            return;
        };
        let db = dir.join("db");
        std::fs::create_dir_all(&db).expect("db dir");
        let mut version = String::from("id(int,auto) table_name(string) table_version(int) \n");
        for (table, header, v) in TABLES {
            std::fs::write(db.join(table), format!("{header}\n")).expect("table");
            version.push_str(&format!("0:{table}:{v}\n"));
        }
        std::fs::write(db.join("version"), version).expect("version");
        let row = format!(
            "1:{user}:{DOMAIN}:{password}:{}:{}\n",
            md5_hex(&format!("{user}:{DOMAIN}:{password}")),
            md5_hex(&format!("{user}@{DOMAIN}:{DOMAIN}:{password}"))
        );
        let subscriber = db.join("subscriber");
        let header = std::fs::read_to_string(&subscriber).expect("subscriber");
        std::fs::write(&subscriber, header + &row).expect("subscriber row");
    }

    fn spawn(tools: &Tools, dir: &Path, cfg: &Path, log: &str) -> Proc {
        let run = dir.join("run");
        std::fs::create_dir_all(&run).expect("run dir");
        let mut cmd = Command::new(&tools.kamailio);
        cmd.args(["-DD", "-E", "-m", "32", "-M", "4", "-f"])
            .arg(cfg)
            .arg("-Y")
            .arg(&run)
            .current_dir(dir);
        Proc::spawn(cmd, "kamailio", dir.join(log))
    }

    /// Waits (at most 10 s) until Kamailio answers an OPTIONS: it then processes requests.
    async fn ready(&mut self) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = socket.local_addr().expect("local");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 4096];
        for n in 0.. {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                panic!("kamailio exited ({status}):\n{}", self.proc.tail(30));
            }
            assert!(
                Instant::now() < deadline,
                "kamailio not answering after 10 s:\n{}",
                self.proc.tail(30)
            );
            let probe = format!(
                "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bKready{n}\r\nMax-Forwards: 70\r\n\
                 From: <sip:probe@{DOMAIN}>;tag=p{n}\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: ready{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            socket
                .send_to(probe.as_bytes(), self.addr)
                .await
                .expect("send");
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
            {
                return;
            }
        }
    }

    /// Stops it (by its PID) and starts it again on the same port with the same config: a PBX
    /// restart that forgets every subscription (they live in memory only).
    pub async fn restart(&mut self) {
        self.proc.terminate();
        Kamailio::tables(self.dir.path(), &self.role);
        let log = format!("kamailio-{}.log", rand::random::<u16>());
        self.proc = Kamailio::spawn(&self.tools, self.dir.path(), &self.cfg, &log);
        self.ready().await;
    }

    /// How many requests the script logged as `REQ {what}…` (`SUBSCRIBE`, or
    /// `SUBSCRIBE sip:127.0.0.1` for in-dialog ones sent to its Contact).
    pub fn seen(&self, what: &str) -> usize {
        let text = std::fs::read_to_string(&self.proc.log).unwrap_or_default();
        text.matches(&format!("REQ {what}")).count()
    }
}

/// A SIPp scenario from `tests/sipp/NAME`, with `{{KEY}}` placeholders filled in.
pub fn scenario(dir: &Path, name: &str, vars: &[(&str, &str)]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "{name}: a placeholder is left");
    let out = dir.join(format!("{}-{name}", rand::random::<u32>()));
    std::fs::write(&out, text).expect("scenario");
    out
}

/// A SIPp process running `scenario` for `calls` calls; a client when `target` is set.
pub fn sipp(
    tools: &Tools,
    dir: &Path,
    scenario: &Path,
    port: u16,
    calls: u32,
    target: Option<SocketAddr>,
) -> Proc {
    let media = free_pair();
    let mut cmd = Command::new(&tools.sipp);
    cmd.arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &media.to_string(), "-cp", &free_port().to_string()])
        .args(["-m", &calls.to_string(), "-nostdin", "-trace_err"])
        .args(["-timeout", "30s", "-timeout_error"])
        .current_dir(dir);
    if let Some(target) = target {
        cmd.arg(target.to_string());
    }
    let name = scenario
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Proc::spawn(
        cmd,
        &format!("sipp {name}"),
        dir.join(format!("{name}.log")),
    )
}

/// Waits (at most 5 s) until a process has bound `port`.
pub async fn until_bound(proc: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bound(port) {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{} exited ({status}):\n{}", proc.name, proc.tail(30));
        }
        assert!(
            Instant::now() < deadline,
            "{} did not bind {port}",
            proc.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
