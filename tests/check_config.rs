//! `check-config` as IT runs it before a start: an unset `*_env` variable refused (every one
//! named, at its line), `--connect` reaching real peers on loopback (a PostgreSQL database, a
//! missing one and a closed port; a fake Asterisk manager with a good and a wrong secret; a
//! NATS JetStream server), and `--set` overrides on `run` (the HTTP listener moved, kept on a
//! reload) and on `check-config` (a bad value and an unknown key named).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::ami::{FakeAmi, SECRET, USER};
use support::binary::Process;
use support::nats::NatsCluster;
use support::pg::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_screenpop");

/// A fresh folder for one test's config.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "screenpop-check-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("customers.csv"),
        "id,name,company,account,crm_url,tags,numbers\nc1,Acme,Acme,A1,,,+14155550100\n",
    )
    .expect("csv");
    dir
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("screenpop.toml");
    std::fs::write(&file, text).expect("config");
    file
}

/// The binary with `args`, off the runtime's threads (the peers run on them).
async fn screenpop(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(args)
            .env("SCREENPOP_LOG", "warn")
            .output()
            .expect("runs")
    })
    .await
    .expect("joined")
}

/// `screenpop check-config FILE --connect` with `extra` arguments.
async fn check_connect(file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "check-config".into(),
        file.display().to_string(),
        "--connect".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    screenpop(args).await
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `--connect` line for `what`.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.get(5..).is_some_and(|r| r.starts_with(what)))
        .unwrap_or_else(|| panic!("no line for {what}:\n{stdout}"))
}

/// A loopback port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
}

const SIP: &str = "[sip]\nudp = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn every_unset_secret_variable_is_refused_by_check_config_and_run() {
    let dir = dir("env");
    let file = write(
        &dir,
        &format!(
            "{SIP}[directory]\ncsv = \"customers.csv\"\n\n\
             [[ami]]\nname = \"pbx1\"\naddress = \"127.0.0.1:5038\"\nusername = \"u\"\n\
             secret_env = \"SCREENPOP_TEST_CHECK_UNSET_AMI\"\n\n\
             [[webhook.pbx]]\nname = \"hook\"\nsecret_env = \"SCREENPOP_TEST_CHECK_UNSET_HOOK\"\n"
        ),
    );
    let path = file.display().to_string();
    let out = screenpop(vec!["check-config".into(), path.clone()]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:12: key `ami[0].secret_env`: environment variable SCREENPOP_TEST_CHECK_UNSET_AMI is not set (or empty)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:16: key `webhook.pbx[0].secret_env`: environment variable SCREENPOP_TEST_CHECK_UNSET_HOOK"
        )),
        "both are listed: {stderr}"
    );
    // `run` refuses it the same way, before binding anything.
    let out = screenpop(vec!["run".into(), "--config".into(), path.clone()]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SCREENPOP_TEST_CHECK_UNSET_AMI is not set"),
        "{stderr}"
    );
    // Set, the file is fine.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["check-config", &path])
            .env("SCREENPOP_TEST_CHECK_UNSET_AMI", "a")
            .env("SCREENPOP_TEST_CHECK_UNSET_HOOK", "b")
            .output()
            .expect("runs")
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn connect_tells_reachable_peers_from_missing_databases_closed_ports_and_wrong_secrets() {
    let db = TestDb::new().await;
    let ami = FakeAmi::start().await;
    let dir = dir("connect");
    let server = db.url.rsplit_once('/').expect("url").0.to_owned();
    let good = format!(
        "{SIP}[directory]\ndatabase_url = \"{url}\"\n\n\
         [[ami]]\nname = \"pbx1\"\naddress = \"{ami}\"\nusername = \"{USER}\"\nsecret = \"{SECRET}\"\n",
        url = db.url,
        ami = ami.addr,
    );
    let file = write(&dir, &good);
    let out = check_connect(&file, &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let l = line(&stdout, "directory database");
    assert!(
        l.starts_with("ok ") && l.contains("up to date") && l.contains(" ms "),
        "{l}"
    );
    let l = line(&stdout, &format!("ami[0] pbx1 {}", ami.addr));
    assert!(l.starts_with("ok ") && l.contains("logged in"), "{l}");

    let bad = format!(
        "{good}\n[[ami]]\nname = \"pbx2\"\naddress = \"{ami}\"\nusername = \"{USER}\"\nsecret = \"wrong\"\n\n\
         [call_log]\ndatabase_url = \"{server}/screenpop_test_missing_{n:08x}\"\n\n\
         [[sources]]\nname = \"balance\"\ntype = \"postgres\"\ndatabase_url = \"postgres://postgres@127.0.0.1:{port}/x\"\n\
         query = \"SELECT 1 AS one WHERE $account IS NOT NULL\"\n",
        ami = ami.addr,
        n = rand::random::<u32>(),
        port = closed_port(),
    );
    let file = write(&dir, &bad);
    let out = check_connect(&file, &["--timeout", "3s"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(line(&stdout, "directory database").starts_with("ok "));
    assert!(line(&stdout, "ami[0] pbx1").starts_with("ok "));
    let l = line(&stdout, "ami[1] pbx2");
    assert!(l.starts_with("FAIL") && l.contains("login refused"), "{l}");
    let l = line(&stdout, "call_log database");
    assert!(l.starts_with("FAIL") && l.contains("does not exist"), "{l}");
    let l = line(&stdout, "source balance (postgres)");
    assert!(l.starts_with("FAIL"), "{l}");
    let _ = std::fs::remove_dir_all(dir);
    db.drop_now().await;
}

#[tokio::test]
async fn connect_reaches_nats_with_jetstream_and_fails_a_closed_port() {
    let nats = NatsCluster::start(1).await;
    let dir = dir("nats");
    let closed = format!("nats://127.0.0.1:{}", closed_port());
    let file = write(
        &dir,
        &format!(
            "{SIP}[directory]\ncsv = \"customers.csv\"\n[cluster]\nnode = \"a\"\nnats = [\"{}\", \"{closed}\"]\n",
            nats.url(0)
        ),
    );
    let out = check_connect(&file, &["--timeout", "3s"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let l = line(&stdout, &format!("nats {}", nats.url(0)));
    assert!(l.starts_with("ok ") && l.contains("JetStream on"), "{l}");
    let l = line(&stdout, &format!("nats {closed}"));
    assert!(l.starts_with("FAIL"), "{l}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn set_overrides_move_the_listener_are_kept_on_reload_and_name_their_errors() {
    let dir = dir("set");
    let file = write(
        &dir,
        &format!("{SIP}[directory]\ncsv = \"customers.csv\"\n"),
    );
    let port = closed_port();
    let listen = format!("http.listen=127.0.0.1:{port}");
    let daemon = Process::start(&file, &["--set".as_ref(), listen.as_ref()]);
    assert_eq!(
        daemon.http.port(),
        port,
        "the banner names the overridden port"
    );
    let (status, _) = support::http_get(daemon.http, "/healthz", None).await;
    assert_eq!(status, 200);
    // A reload re-reads the file and applies the same override: nothing to restart.
    daemon.signal("-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("Config reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = daemon.log();
    assert!(
        log.contains("Settings overridden on the command line") && log.contains("http.listen"),
        "{log}"
    );
    assert!(
        !log.contains("need a restart"),
        "the override was applied again: {log}"
    );
    drop(daemon);

    let path = file.display().to_string();
    let check = |set: &str| {
        let path = path.clone();
        let set = set.to_owned();
        async move { screenpop(vec!["check-config".into(), path, "--set".into(), set]).await }
    };
    let out = check("http.listen=nowhere").await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("--set http.listen: "), "{stderr}");
    let out = check("http.lisen=127.0.0.1:1").await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--set http.lisen") && stderr.contains("unknown field `lisen`"),
        "{stderr}"
    );
    let out = check("sip.udp=[\"127.0.0.1:0\"]").await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // The file's own errors keep their line.
    std::fs::write(
        &file,
        format!("{SIP}[directory]\ncsv = \"customers.csv\"\nbogus = 1\n"),
    )
    .expect("config");
    let out = check("http.listen=127.0.0.1:1").await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(&format!("{path}:7: key `directory.bogus`")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
