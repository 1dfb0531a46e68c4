//! The `screenpop` binary as IT uses it: `demo` on free ports, `call` against it (over TCP, and
//! over TLS as the demo prints it), the agent API, `check-config` errors naming file, line and
//! key, a busy demo port named, and a graceful exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_screenpop");

/// Reads the demo's banner until the "See it as alice" command; returns every line.
fn banner(child: &mut std::process::Child) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let done = line.contains("curl -s");
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

/// A plain HTTP/1.1 GET with a bearer token over a std socket; the raw response text.
fn get(http: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(http) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn demo_call_api_and_sigterm() {
    let mut demo = Command::new(BIN)
        .args([
            "demo",
            "--sip",
            "127.0.0.1:0",
            "--hep",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--sip-tls",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let lines = banner(&mut demo);
    let text = lines.join("\n");
    assert!(
        text.contains("alice-demo-token") && text.contains("bob-demo-token"),
        "{text}"
    );
    assert!(text.contains("Agent page: http://127.0.0.1:"), "{text}");
    // The exact command printed to ring a demo call works as printed (with a shorter hold).
    let call_line = lines
        .iter()
        .find(|l| l.contains(" call --to 1001 "))
        .expect("call command printed");
    let sip = call_line
        .split("--sip ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("sip addr")
        .to_owned();
    let http = text
        .split("Agent page: http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("http")
        .to_owned();

    let caller = std::thread::spawn({
        let sip = sip.clone();
        move || {
            Command::new(BIN)
                .args([
                    "call",
                    "--to",
                    "1001",
                    "--from",
                    "(415) 555-0100",
                    "--sip",
                    &sip,
                    "--hold",
                    "1500ms",
                    "--tcp",
                ])
                .output()
                .expect("call runs")
        }
    });
    // While it rings, alice's API shows Acme; poll briefly (no fixed sleep for readiness).
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let body = get(&http, "/api/calls", "alice-demo-token");
        if body.contains("Acme Corporation") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        seen.contains("Acme Corporation"),
        "alice sees the pop: {seen}"
    );
    let out = caller.join().expect("join");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("100 Trying") && printed.contains("487 Request Terminated"),
        "{printed}"
    );

    // Over TLS, as printed (the demo's certificate is self-signed: accepted explicitly).
    let tls_line = lines
        .iter()
        .find(|l| l.contains(" call --tls --accept-self-signed "))
        .expect("TLS call command printed");
    let tls_sip = tls_line
        .split("--sip ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("TLS sip addr")
        .to_owned();
    let args: Vec<String> = tls_line
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a == "10s" {
                "1500ms".into()
            } else {
                a.into()
            }
        })
        .collect();
    let tls_caller = std::thread::spawn(move || Command::new(BIN).args(&args).output());
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let body = get(&http, "/api/calls", "alice-demo-token");
        if body.contains("Acme Corporation") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = tls_caller.join().expect("join").expect("call runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("100 Trying") && printed.contains("487 Request Terminated"),
        "{printed}"
    );
    let call_id = printed
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID "))
        .expect("Call-ID printed")
        .to_owned();
    assert!(
        seen.contains("Acme Corporation"),
        "alice sees the TLS pop ({call_id}): {seen}"
    );
    // Without --accept-self-signed the demo's certificate is not trusted, and the error says
    // what to do.
    let refused = Command::new(BIN)
        .args(["call", "--tls", "--to", "1001", "--from", "+14155550100"])
        .args(["--sip", &tls_sip])
        .output()
        .expect("call runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("TLS handshake") && said.contains("--accept-self-signed"),
        "{said}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}

#[test]
fn a_busy_demo_port_is_named() {
    // Held for the test: the demo's SIP-over-TLS port is taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--sip",
            "127.0.0.1:0",
            "--hep",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--sip-tls",
            &port,
        ])
        .output()
        .expect("demo runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("binding SIP TLS {port}")) && said.contains("--sip-tls"),
        "{said}"
    );
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("screenpop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("site.toml");
    std::fs::write(
        &bad,
        "[sip]\nudp = [\"0.0.0.0:5060\"]\n\n[hep]\nallow = [\"10.0.0.0/8\", \"not-a-network\"]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:5: key `hep.allow`", bad.display())),
        "{err}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/screenpop.example.toml");
    let out = Command::new(BIN)
        .args(["check-config", example])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date() {
    // An empty database (no schema yet): `migrate` applies versions 1 to 3, then has nothing to do.
    let admin = screenpop::db::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("PostgreSQL");
    let name = format!("screenpop_cli_{:016x}", rand::random::<u64>());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let first = Command::new(BIN)
        .args(["migrate", "--database-url", &url])
        .output()
        .expect("runs");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "applied migrations [1, 2, 3, 4, 5]"
    );
    let again = Command::new(BIN)
        .args(["migrate", "--database-url", &url])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "schema up to date (version 5)"
    );
    let bad = Command::new(BIN)
        .args([
            "migrate",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot connect to PostgreSQL"));
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop");
}

#[test]
fn sighup_reloads_the_tls_certificate_of_the_running_binary() {
    let dir = std::env::temp_dir().join(format!("screenpop-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write_cert = || {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).expect("key");
    };
    write_cert();
    let config = dir.join("tls.toml");
    std::fs::write(
        &config,
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
    .expect("config");
    let mut daemon = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("SCREENPOP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // The banner is printed once every listener and handler is in place.
    let mut stdout = BufReader::new(daemon.stdout.take().expect("stdout"));
    let mut banner = String::new();
    stdout.read_line(&mut banner).expect("banner");
    assert!(banner.contains("listening"), "{banner}");
    let stderr = BufReader::new(daemon.stderr.take().expect("stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    write_cert();
    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reloaded = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.contains("TLS certificate reloaded")
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "no reload logged after SIGHUP");
    assert!(
        daemon.try_wait().expect("wait").is_none(),
        "SIGHUP must not stop the daemon"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let exit = daemon.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lookup_explains_a_match_candidates_and_a_miss() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/screenpop.example.toml");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("lookup")
            .args(args)
            .args(["--config", config])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let acme = run(&["(415) 555-0100"]);
    assert!(
        acme.contains("key     +14155550100 (E.164)")
            && acme.contains("match   Acme Corporation (c-0001)"),
        "{acme}"
    );
    let shared = run(&["+1 312 555 0142"]);
    assert!(
        shared.contains("candidates (2), best first:")
            && shared.contains("Pat Shared")
            && shared.contains("Sam Shared"),
        "{shared}"
    );
    // Not on file, but in the block of Acme's main number (415) 555-0100.
    let block = run(&["+1 415 555 0177"]);
    assert!(
        block.contains("approx  Acme Corporation (c-0001), Acme Corporation: number not on file; same number block"),
        "{block}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&["911", "--json"])).expect("json");
    assert_eq!(
        json["key"],
        serde_json::json!({"kind": "digits", "value": "911"})
    );
    assert_eq!(json["resolution"]["match"], "unknown");
}

#[test]
fn ami_setup_prints_a_least_privilege_stanza_with_a_fresh_secret() {
    let run = || {
        let out = Command::new(BIN)
            .args(["ami-setup", "--permit", "10.0.0.9"])
            .output()
            .expect("runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (one, two) = (run(), run());
    for needed in [
        "[screenpop]\n",
        "permit = 10.0.0.9/255.255.255.255\n",
        "read = system,call,agent\n",
        "write = reporting\n",
        "eventfilter = Event: (",
    ] {
        assert!(one.contains(needed), "{needed} in {one}");
    }
    let secret = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("secret = "))
            .map(str::to_owned)
    };
    assert_eq!(secret(&one).map(|s| s.len()), Some(48));
    assert_ne!(secret(&one), secret(&two), "a fresh secret each time");
    // Call-backs through the PBX need `originate`, and only when asked for.
    let out = Command::new(BIN)
        .args(["ami-setup", "--permit", "10.0.0.9", "--originate"])
        .output()
        .expect("runs");
    let dialling = String::from_utf8_lossy(&out.stdout);
    assert!(
        dialling.contains("\nwrite = reporting,originate\n"),
        "{dialling}"
    );
    assert!(!one.contains("originate"), "{one}");
}

#[test]
fn lookup_profile_shows_every_section_with_its_timing_and_why_one_failed() {
    let dir = std::env::temp_dir().join(format!("screenpop-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("credit.csv"),
        "account,limit,terms\nACME-001,50000,NET30\n",
    )
    .expect("csv");
    let config = dir.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[directory]\ncsv = \"{}\"\n[sip]\nudp = [\"127.0.0.1:0\"]\n\
             [[sources]]\nname = \"credit\"\ntype = \"csv\"\npath = \"credit.csv\"\nkey_column = \"account\"\nmatch = \"account\"\n\
             [[sources]]\nname = \"ledger\"\ntype = \"postgres\"\ndatabase_url = \"postgres://postgres@127.0.0.1:1/none\"\nquery = \"SELECT 1 WHERE $account IS NOT NULL\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/customers.csv")
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["lookup", "(415) 555-0100", "--profile", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("match   Acme Corporation"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("credit") && l.contains("ok") && l.contains(" ms")),
        "{text}"
    );
    assert!(text.contains("\"terms\": \"NET30\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("ledger") && l.contains("error")),
        "{text}"
    );
    assert!(text.contains("cannot reach the source"), "{text}");
    assert!(text.contains("missing: ledger"), "{text}");
    // A source that cannot start is a config error at its line, naming it.
    std::fs::write(
        &config,
        "[sip]\nudp = [\"127.0.0.1:0\"]\n\n[[sources]]\nname = \"ledger\"\ntype = \"postgres\"\ndatabase_url = \"postgres://x/y\"\nquery = \"SELECT 1 WHERE a = $acount\"\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&config)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("site.toml:4: key `sources[0] (ledger)`")
            && err.contains("unknown parameter `$acount`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_db_writes_the_config_that_runs_on_what_it_made() {
    let prefix = format!("screenpop_cli_{:08x}", rand::random::<u32>());
    let dir = std::env::temp_dir().join(format!("screenpop-demodb-{prefix}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("demo.toml");
    let out = Command::new(BIN)
        .args(["demo-db", "--prefix", &prefix, "--write-config"])
        .arg(&config)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("screenpop run --config {}", config.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&config).expect("written");
    // Customers from the index database it filled, the sources on its three databases.
    assert!(
        text.contains(&format!(
            "database_url = \"postgres://postgres@127.0.0.1:5432/{prefix}\""
        )),
        "{text}"
    );
    for role in ["accounting", "sales", "credit"] {
        assert!(
            text.contains(&format!("/{prefix}_{role}\"")),
            "{role}: {text}"
        );
    }
    assert!(
        !text.contains("screenpop_demo_") && !text.contains("\ncsv ="),
        "{text}"
    );
    let lookup = || {
        Command::new(BIN)
            .args(["lookup", "(415) 555-0100", "--profile", "--config"])
            .arg(&config)
            .output()
            .expect("runs")
    };
    let out = lookup();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("match   Acme Corporation"), "{text}");
    for section in ["balance", "purchases", "credit"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(section) && l.contains("ok")),
            "{section}: {text}"
        );
    }
    // A source database that does not exist says what to run.
    let drop = |name: &str| {
        let ok = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .status()
            .expect("psql")
            .success();
        assert!(ok, "drop {name}");
    };
    drop(&format!("{prefix}_credit"));
    let out = lookup();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("does not exist") && text.contains("screenpop demo-db"),
        "{text}"
    );
    for role in ["", "_accounting", "_sales"] {
        drop(&format!("{prefix}{role}"));
    }
    let _ = std::fs::remove_dir_all(dir);
}
