//! The `screenpop` command: parse the CLI, load the config, set up logging, run.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use screenpop::{
    config::{Config, LogFormat},
    daemon, demo,
    telephony::uac,
};

/// Call-center screen pops: see who is calling before the agent picks up.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with a configuration file.
    Run {
        /// The TOML configuration (see config/screenpop.example.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// Write the process id here (for `screenpop reload`); default
        /// `$RUNTIME_DIRECTORY/screenpop.pid` under systemd, else none.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Override one setting, e.g. `--set http.listen=127.0.0.1:9090` or
        /// `--set 'sip.udp=["0.0.0.0:5070"]'` (a TOML value; a bare word is a string; array
        /// elements by index: `sources.0.timeout=\"2s\"`). Repeatable; kept on reload.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<screenpop::config::Override>,
    },
    /// Re-read the running daemon's config without dropping agents or calls: validates the
    /// file first (errors name file, line and key), then signals the daemon (SIGHUP).
    Reload {
        /// The TOML configuration the daemon runs with.
        #[arg(long, short)]
        config: PathBuf,
        /// The daemon's pid file (as given to `run --pid-file`); default
        /// `$RUNTIME_DIRECTORY/screenpop.pid`.
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Validate a configuration file; errors name the file, line and key (exit 2). With
    /// --connect, also reach every database, source, PBX and NATS server it names (exit 1 if
    /// one fails).
    CheckConfig {
        /// The TOML configuration.
        file: PathBuf,
        /// The same overrides as `run --set KEY=VALUE`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<screenpop::config::Override>,
        /// Reach every external peer, concurrently, and print one line per peer.
        #[arg(long)]
        connect: bool,
        /// With --connect: how long each peer may take.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, requires = "connect")]
        timeout: Duration,
    },
    /// Run the whole daemon on bundled demo data: no database, no config file.
    Demo {
        /// SIP address (UDP and TCP), IP:PORT; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// HEP address (UDP and TCP), IP:PORT.
        #[arg(long, default_value = "127.0.0.1:9060")]
        hep: SocketAddr,
        /// HTTP address (agent page, API, metrics), IP:PORT.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// SIP-over-TLS address, IP:PORT, with a self-signed certificate made at start-up.
        #[arg(long, default_value = "127.0.0.1:5061")]
        sip_tls: SocketAddr,
    },
    /// Send one real SIP INVITE to screenpop (then CANCEL or BYE) to check the wiring.
    Call {
        /// The extension to ring.
        #[arg(long)]
        to: String,
        /// The caller's number.
        #[arg(long)]
        from: String,
        /// The caller's display name.
        #[arg(long)]
        display: Option<String>,
        /// Where screenpop listens for SIP.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// Use TCP instead of UDP.
        #[arg(long, conflicts_with = "tls")]
        tcp: bool,
        /// Use TLS (SIP over TLS, RFC 3261 §26); `--sip` then names the TLS listener.
        #[arg(long)]
        tls: bool,
        /// With --tls: trust the certificates in this PEM file (besides the public roots).
        #[arg(long, requires = "tls")]
        ca: Option<PathBuf>,
        /// With --tls: take ANY server certificate, unchecked (for a demo's self-signed one).
        /// The connection is encrypted, but to whoever answers.
        #[arg(long, requires = "tls", conflicts_with = "ca")]
        accept_self_signed: bool,
        /// With --tls: the name the server's certificate must carry (default: the --sip IP).
        #[arg(long, requires = "tls")]
        server_name: Option<String>,
        /// With --tls: a client certificate chain (PEM) to present, for mutual TLS.
        #[arg(long, requires_all = ["tls", "key"])]
        cert: Option<PathBuf>,
        /// With --tls: the key of --cert (PEM).
        #[arg(long, requires_all = ["tls", "cert"])]
        key: Option<PathBuf>,
        /// How long to let it ring, e.g. 3s.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// End with BYE (answered, then hung up) instead of CANCEL.
        #[arg(long, conflicts_with = "answered_elsewhere")]
        bye: bool,
        /// End with CANCEL carrying `Reason: SIP;cause=200` (answered on another phone).
        #[arg(long)]
        answered_elsewhere: bool,
    },
    /// Apply the schema migrations (schema/*.sql) to a PostgreSQL database; idempotent.
    Migrate {
        /// e.g. postgres://screenpop@db.example/screenpop
        #[arg(long, env = "SCREENPOP_DATABASE_URL")]
        database_url: String,
    },
    /// Import customers from CSV (id,name,company,account,crm_url,tags,numbers) or JSON Lines into
    /// PostgreSQL, in one transaction; bad rows are reported by line and skipped.
    Import {
        /// The file (.csv, or .jsonl / .ndjson).
        file: PathBuf,
        /// e.g. postgres://screenpop@db.example/screenpop
        #[arg(long, env = "SCREENPOP_DATABASE_URL")]
        database_url: String,
        /// Region for numbers written in national format.
        #[arg(long, default_value = "US")]
        region: String,
    },
    /// Look a number up as a call would: its normalised key, then the match or candidates and why.
    Lookup {
        /// The number, in any format (`(415) 555-0100`, `+14155550100`, `tel:…`).
        number: String,
        /// The TOML configuration (its [numbers] region and [directory]).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also ask every configured source for the customer, and show each section with its
        /// timing: "why is my pop empty?".
        #[arg(long)]
        profile: bool,
    },
    /// Print the least-privilege Asterisk `manager.conf` stanza for screenpop's AMI user.
    AmiSetup {
        /// The manager user name.
        #[arg(long, default_value = "screenpop")]
        username: String,
        /// The address screenpop connects from (manager.conf `permit`).
        #[arg(long, default_value = "127.0.0.1")]
        permit: String,
        /// The secret (default: 48 random hex digits).
        #[arg(long)]
        secret: Option<String>,
        /// Also allow `Originate`, for agents' call-backs through this PBX (`[callbacks]`).
        #[arg(long)]
        originate: bool,
    },
    /// Create the demo on PostgreSQL: the customer index and the accounting, sales and credit
    /// databases the example config's sources read (replacing any of the same names).
    DemoDb {
        /// The server, without a database name.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
        server: String,
        /// Database name prefix: PREFIX, PREFIX_accounting, PREFIX_sales, PREFIX_credit.
        #[arg(long, default_value = "screenpop_demo")]
        prefix: String,
        /// Customers (the 1,202 bundled ones, plus generated ones beyond).
        #[arg(long, default_value_t = 1202)]
        customers: usize,
        /// Write the config that runs on these databases here (default: `PREFIX.toml` in the
        /// current directory; replaced if it exists).
        #[arg(long)]
        write_config: Option<PathBuf>,
    },
    /// Print the SHA-256 of an agent token, for `token_sha256` in the config.
    HashToken {
        /// The token.
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        // `--set log.format=…` wins over the file, as every override does.
        Command::Run { config, set, .. } => set
            .iter()
            .rev()
            .find(|o| o.key() == "log.format")
            .and_then(|o| o.value().clone().try_into::<LogFormat>().ok())
            .unwrap_or_else(|| LogFormat::of_file(config)),
        _ => LogFormat::Text,
    };
    let log_filter = logging(log_format);
    match cli.command {
        Command::CheckConfig {
            file,
            set,
            connect,
            timeout,
        } => check_config(
            &file,
            screenpop::config::Overrides::new(set),
            connect,
            timeout,
        ),
        Command::Migrate { database_url } => runtime(async move {
            let mut client = screenpop::db::connect(&database_url).await?;
            let applied = screenpop::db::migrate(&mut client).await?;
            if applied.is_empty() {
                println!(
                    "schema up to date (version {})",
                    screenpop::db::MIGRATIONS.len()
                );
            } else {
                println!("applied migrations {applied:?}");
            }
            Ok(())
        }),
        Command::Import {
            file,
            database_url,
            region,
        } => runtime(async move {
            use std::io::IsTerminal as _;
            let region = screenpop::resolve::Normaliser::region(&region).ok_or_else(|| {
                anyhow::anyhow!("unknown region `{region}` (use an ISO 3166 code such as US)")
            })?;
            let reader = std::fs::File::open(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new_spinner().with_message("reading")
            } else {
                indicatif::ProgressBar::hidden()
            };
            let mut client = screenpop::db::connect(&database_url).await?;
            let format = screenpop::resolve::import::Format::of(&file);
            let name = file.display().to_string();
            let summary = screenpop::resolve::import::import(
                &mut client,
                reader,
                format,
                &name,
                screenpop::resolve::Normaliser::new(region),
                &|line| {
                    if line % 1000 == 0 {
                        bar.set_message(format!("line {line}"));
                        bar.tick();
                    }
                },
            )
            .await?;
            bar.finish_and_clear();
            println!(
                "imported {} customers ({} numbers, {} not valid numbers: matched on their digits); rejected {} lines",
                summary.customers,
                summary.numbers,
                summary.numbers_not_e164,
                summary.rejected.len()
            );
            for reject in &summary.rejected {
                println!("  {}:{}: {}", name, reject.line, reject.reason);
            }
            Ok(())
        }),
        Command::Lookup {
            number,
            config,
            json,
            profile,
        } => runtime(async move {
            use screenpop::lookup;
            let config = Config::load(&config)?;
            let (resolver, _) =
                screenpop::resolve::open(&config.numbers, &config.directory).await?;
            let key =
                screenpop::resolve::Normaliser::new(config.numbers.default_region.0).key(&number);
            let resolution = resolver.resolve(&number);
            let composed = if profile {
                Some(lookup::profile(&config, resolver.as_ref(), &resolution).await?)
            } else {
                None
            };
            if json {
                let mut report = lookup::json(&number, &key, &resolution);
                if let Some(p) = &composed {
                    report["profile"] = lookup::profile_json(p);
                }
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", lookup::text(&key, &resolution));
                if let Some(p) = &composed {
                    print!("{}", lookup::profile_text(p));
                }
            }
            Ok(())
        }),
        Command::AmiSetup {
            username,
            permit,
            secret,
            originate,
        } => {
            use screenpop::telephony::ami::setup;
            print!(
                "{}",
                setup::render(&setup::Stanza {
                    username,
                    secret: secret.unwrap_or_else(setup::random_secret),
                    permit,
                    originate,
                })
            );
            ExitCode::SUCCESS
        }
        Command::DemoDb {
            server,
            prefix,
            customers,
            write_config,
        } => runtime(async move {
            let dbs = demo::db::create(&server, &prefix, customers).await?;
            println!(
                "created the demo databases for {} customers:",
                dbs.customers
            );
            println!("  customer index  {}", dbs.index);
            println!("  accounting      {}", dbs.accounting);
            println!("  sales           {}", dbs.sales);
            println!("  credit          {}", dbs.credit);
            let path = write_config.unwrap_or_else(|| PathBuf::from(format!("{prefix}.toml")));
            let text = demo::db::config_toml(&dbs);
            Config::parse(&text, &path)?;
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            println!(
                "wrote {}: customers and sources on these databases",
                path.display()
            );
            println!("Run it with: screenpop run --config {}", path.display());
            Ok(())
        }),
        Command::HashToken { token } => {
            println!("{}", screenpop::config::TokenHash::of(&token).hex());
            ExitCode::SUCCESS
        }
        Command::Run {
            config: path,
            pid_file,
            set,
        } => runtime(async move {
            let overrides = screenpop::config::Overrides::new(set);
            let config = Config::load_with(&path, &overrides)?;
            if !overrides.is_empty() {
                // Keys only: a value may be a secret.
                tracing::info!(keys = %overrides.keys().join(", "), "Settings overridden on the command line (kept on reload).");
            }
            if let Some(level) = &config.log.level
                && std::env::var_os("SCREENPOP_LOG").is_none()
            {
                log_filter(level).map_err(anyhow::Error::msg)?;
            }
            let mut settings = screenpop::daemon::settings_from(&config).await?;
            settings.config_file = Some((path, config));
            settings.log_filter = Some(log_filter);
            let pid_file = pid_file.or_else(default_pid_file);
            serve(settings, None, pid_file).await
        }),
        Command::Reload { config, pid_file } => reload(&config, pid_file.or_else(default_pid_file)),
        Command::Demo {
            sip,
            hep,
            http,
            sip_tls,
        } => runtime(async move {
            let settings = demo::settings(demo::DemoAddrs {
                sip,
                hep,
                http,
                sip_tls: Some(sip_tls),
            })?;
            serve(settings, Some(()), None).await
        }),
        Command::Call {
            to,
            from,
            display,
            sip,
            tcp,
            tls,
            ca,
            accept_self_signed,
            server_name,
            cert,
            key,
            hold,
            bye,
            answered_elsewhere,
        } => runtime(async move {
            let ending = match (bye, answered_elsewhere) {
                (true, _) => uac::Ending::Bye,
                (_, true) => uac::Ending::AnsweredElsewhere,
                _ => uac::Ending::Cancel,
            };
            let transport = match (tcp, tls) {
                (_, true) => uac::CallTransport::Tls(uac::TlsOptions {
                    ca,
                    accept_self_signed,
                    server_name,
                    identity: cert.zip(key),
                }),
                (true, false) => uac::CallTransport::Tcp,
                (false, false) => uac::CallTransport::Udp,
            };
            let call = uac::TestCall {
                target: sip,
                transport,
                to,
                from,
                display,
                hold,
                ending,
            };
            let transcript = uac::place(&call).await?;
            println!("Call-ID {}", transcript.call_id);
            for (code, reason, method) in transcript.responses {
                println!("  {code} {reason}  ({method})");
            }
            Ok(())
        }),
    }
}

/// `screenpop check-config`: exit 2 when the file (with its overrides) is invalid; with
/// `connect`, one line per external peer and exit 1 when one fails.
fn check_config(
    file: &std::path::Path,
    overrides: screenpop::config::Overrides,
    connect: bool,
    timeout: Duration,
) -> ExitCode {
    let config = match Config::load_with(file, &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    println!("{}: OK", file.display());
    if !connect {
        return ExitCode::SUCCESS;
    }
    let verdicts = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(screenpop::check::connect(&config, timeout)),
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if verdicts.is_empty() {
        println!("no external peers to reach");
    }
    let width = verdicts.iter().map(|v| v.what.len()).max().unwrap_or(0);
    for v in &verdicts {
        println!("{}", v.line(width));
    }
    if verdicts.iter().all(screenpop::check::Verdict::ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn runtime(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr in `format`, filtered by `SCREENPOP_LOG` (default `info`), other crates'
/// debug and trace lines only with PII logging on ([`screenpop::pii::DependencyGuard`]);
/// returns what changes the filter later (`[log] level`, on start and on every reload).
fn logging(format: LogFormat) -> screenpop::reload::LogFilter {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCREENPOP_LOG")
        .unwrap_or_else(|_| "info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only on a terminal: not in the journal or a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(false)
            .flatten_event(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(screenpop::pii::DependencyGuard))
        .init();
    std::sync::Arc::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// `$RUNTIME_DIRECTORY/screenpop.pid` (systemd's `RuntimeDirectory=`), if set.
fn default_pid_file() -> Option<PathBuf> {
    let dirs = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = dirs.to_string_lossy().split(':').next()?.to_owned();
    Some(PathBuf::from(first).join("screenpop.pid"))
}

/// `screenpop reload`: the file must validate, then the daemon gets SIGHUP and this waits (up
/// to 5 s) for its reload counter on `/metrics` to say how it went.
fn reload(path: &std::path::Path, pid_file: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            eprintln!("not reloaded: the running daemon keeps its config");
            return ExitCode::from(2);
        }
    };
    let Some(pid_file) = pid_file else {
        eprintln!(
            "error: no pid file: pass --pid-file (as given to `screenpop run --pid-file`), or run under systemd (RuntimeDirectory=) where `systemctl reload screenpop` does the same"
        );
        return ExitCode::FAILURE;
    };
    let pid = match std::fs::read_to_string(&pid_file)
        .map_err(|e| e.to_string())
        .and_then(|t| t.trim().parse::<i32>().map_err(|e| e.to_string()))
    {
        Ok(pid) => pid,
        Err(error) => {
            eprintln!("error: {}: {error}", pid_file.display());
            return ExitCode::FAILURE;
        }
    };
    let http = config.http.listen;
    let metrics = if config.http.tls_cert.is_some() {
        None
    } else {
        Some(std::net::SocketAddr::new(
            match http.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
                ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                ip => ip,
            },
            http.port(),
        ))
    };
    let before = metrics.and_then(reloads);
    let Some(target) = rustix::process::Pid::from_raw(pid) else {
        eprintln!("error: {}: not a process id", pid_file.display());
        return ExitCode::FAILURE;
    };
    if let Err(error) = rustix::process::kill_process(target, rustix::process::Signal::HUP) {
        eprintln!("error: signalling pid {pid}: {error}");
        return ExitCode::FAILURE;
    }
    let Some(before) = before else {
        println!(
            "{}: OK; SIGHUP sent to pid {pid} (its log says what was applied)",
            path.display()
        );
        return ExitCode::SUCCESS;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Some(now) = metrics.and_then(reloads) else {
            continue;
        };
        if now.0 > before.0 {
            println!("{}: reloaded by pid {pid}", path.display());
            return ExitCode::SUCCESS;
        }
        if now.1 > before.1 {
            eprintln!("pid {pid} refused the config; it keeps the running one (see its log)");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("pid {pid} did not report a reload within 5 s (see its log)");
    ExitCode::FAILURE
}

/// `screenpop_config_reloads_total` (ok, refused) from a daemon's `/metrics`.
fn reloads(http: SocketAddr) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let value = |result: &str| {
        body.lines()
            .filter(|l| {
                l.starts_with(screenpop::reload::RELOADS)
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Some((value("ok"), value("refused")))
}

async fn serve(
    settings: daemon::Settings,
    demo: Option<()>,
    pid_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Every connection is a file descriptor: the common soft limit of 1,024 would cap the
    // listeners' budgets long before they are reached. The hard limit is the operator's.
    match screenpop::listener::raise_open_files_limit() {
        Some(limit) => tracing::info!(limit, "Open-files limit (RLIMIT_NOFILE) in force."),
        None => tracing::warn!("Could not raise the open-files limit (RLIMIT_NOFILE)."),
    }
    let cti: Vec<String> = settings
        .intakes
        .clients()
        .iter()
        .map(|c| format!("  {}", c.describe()))
        .collect();
    let webhook = !settings.intakes.webhook.pbx.is_empty();
    let running = match daemon::Daemon::start(settings).await {
        Ok(running) => running,
        Err(error) if demo.is_some() => {
            return Err(error.context(
                "the demo could not start (is another program on one of its ports? \
                 choose others with --sip, --sip-tls, --hep, --http; port 0 picks a free one)",
            ));
        }
        Err(error) => return Err(error),
    };
    let b = &running.bound;
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let http = b.http.map(|h| h.to_string()).unwrap_or_default();
    println!("screenpop {} listening", env!("CARGO_PKG_VERSION"));
    if b.sip_tls.is_empty() {
        println!("  SIP  udp {}  tcp {}", list(&b.sip_udp), list(&b.sip_tcp));
    } else {
        let mutual = if running.sip_tls.as_ref().is_some_and(|t| t.mutual()) {
            "  (client certificates required)"
        } else {
            ""
        };
        println!(
            "  SIP  udp {}  tcp {}  tls {}{mutual}",
            list(&b.sip_udp),
            list(&b.sip_tcp),
            list(&b.sip_tls)
        );
    }
    let hep: Vec<String> = [("udp", &b.hep_udp), ("tcp", &b.hep_tcp)]
        .into_iter()
        .filter(|(_, bound)| !bound.is_empty())
        .map(|(transport, bound)| format!("{transport} {}", list(bound)))
        .collect();
    if !hep.is_empty() {
        println!("  HEP  {}", hep.join("  "));
    }
    println!("  HTTP {http}  (health: /healthz, metrics: /metrics)");
    for line in &cti {
        println!("{line}");
    }
    if webhook {
        println!("  webhook POST http://{http}/api/events");
    }
    if demo.is_some() {
        println!();
        println!("Agent page: http://{http}/");
        for (id, _, ext, token, _) in demo::AGENTS {
            println!("  agent {id:<6} extension {ext}  token {token}");
        }
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "screenpop".into());
        let sip = b
            .sip_udp
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        println!();
        println!("Ring a demo call to alice from Acme Corporation:");
        println!(
            "  {exe} call --to 1001 --from +14155550100 --display \"Acme Front Desk\" --sip {sip} --hold 10s"
        );
        if let Some(tls) = b.sip_tls.first() {
            println!(
                "Or over SIP over TLS (the demo's certificate is self-signed, made at start-up):"
            );
            println!(
                "  {exe} call --tls --accept-self-signed --to 1001 --from +14155550100 --sip {tls} --hold 10s"
            );
        }
        println!("See it as alice:");
        println!("  curl -s -H 'Authorization: Bearer alice-demo-token' http://{http}/api/calls");
    }
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("writing the pid file {}: {e}", path.display()))?;
    }
    daemon::shutdown_signal().await;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("Shutting down.");
    let clean = running.stop().await;
    if !clean {
        tracing::warn!("Some tasks did not stop within the grace period.");
    }
    Ok(())
}
