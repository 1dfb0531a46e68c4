//! The `screenpop` command: parse the CLI, load the config, set up logging, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use screenpop::{config::Config, daemon, demo, telephony::uac};

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
    },
    /// Validate a configuration file; errors name the file, line and key.
    CheckConfig {
        /// The TOML configuration.
        file: PathBuf,
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
        #[arg(long)]
        tcp: bool,
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
    },
    /// Print the SHA-256 of an agent token, for `token_sha256` in the config.
    HashToken {
        /// The token.
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCREENPOP_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
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
            use screenpop::resolve::lookup;
            let config = Config::load(&config)?;
            let (resolver, _) = screenpop::resolve::open(&config).await?;
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
        } => {
            use screenpop::telephony::ami::setup;
            print!(
                "{}",
                setup::render(&setup::Stanza {
                    username,
                    secret: secret.unwrap_or_else(setup::random_secret),
                    permit,
                })
            );
            ExitCode::SUCCESS
        }
        Command::DemoDb {
            server,
            prefix,
            customers,
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
            println!("Run it with: screenpop run --config config/screenpop.example.toml");
            Ok(())
        }),
        Command::HashToken { token } => {
            println!("{}", screenpop::config::TokenHash::of(&token).hex());
            ExitCode::SUCCESS
        }
        Command::Run { config } => runtime(async move {
            let config = Config::load(&config)?;
            let settings = screenpop::daemon::settings_from(&config).await?;
            serve(settings, None).await
        }),
        Command::Demo { sip, hep, http } => runtime(async move {
            let settings = demo::settings(demo::DemoAddrs { sip, hep, http })?;
            serve(settings, Some(())).await
        }),
        Command::Call {
            to,
            from,
            display,
            sip,
            tcp,
            hold,
            bye,
            answered_elsewhere,
        } => runtime(async move {
            let ending = match (bye, answered_elsewhere) {
                (true, _) => uac::Ending::Bye,
                (_, true) => uac::Ending::AnsweredElsewhere,
                _ => uac::Ending::Cancel,
            };
            let call = uac::TestCall {
                target: sip,
                tcp,
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

async fn serve(settings: daemon::Settings, demo: Option<()>) -> anyhow::Result<()> {
    // Every connection is a file descriptor: the common soft limit of 1,024 would cap the
    // listeners' budgets long before they are reached. The hard limit is the operator's.
    match screenpop::listener::raise_open_files_limit() {
        Some(limit) => tracing::info!(limit, "Open-files limit (RLIMIT_NOFILE) in force."),
        None => tracing::warn!("Could not raise the open-files limit (RLIMIT_NOFILE)."),
    }
    let cti: Vec<String> = settings
        .ami
        .iter()
        .map(|a| format!("  AMI  {} → {}", a.name, a.address))
        .chain(
            settings
                .esl
                .iter()
                .map(|e| format!("  ESL  {} → {}", e.name, e.address)),
        )
        .collect();
    let webhook = !settings.webhook.pbx.is_empty();
    let running = daemon::Daemon::start(settings).await?;
    let b = &running.bound;
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let http = b.http.map(|h| h.to_string()).unwrap_or_default();
    println!("screenpop {} listening", env!("CARGO_PKG_VERSION"));
    println!("  SIP  udp {}  tcp {}", list(&b.sip_udp), list(&b.sip_tcp));
    println!("  HEP  udp {}  tcp {}", list(&b.hep_udp), list(&b.hep_tcp));
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
        println!("See it as alice:");
        println!("  curl -s -H 'Authorization: Bearer alice-demo-token' http://{http}/api/calls");
    }
    daemon::shutdown_signal().await;
    tracing::info!("Shutting down.");
    let clean = running.stop().await;
    if !clean {
        tracing::warn!("Some tasks did not stop within the grace period.");
    }
    Ok(())
}
