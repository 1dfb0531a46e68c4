//! The load generator: ring-to-pop latency, throughput and scale of the daemon, and of the floor
//! relay for comparison. See benches/README.md and docs/performance.md.
//!
//! ```sh
//! cargo bench --bench load -- run --rate 200 --calls 4000 --agents 1000        # one scenario
//! cargo bench --bench load -- run --target floor --rate 200 --calls 4000       # the floor
//! cargo bench --bench load -- run --sources postgres --calls 1000 --passes 2   # cold, then warm
//! cargo bench --bench load -- suite --out docs/performance                    # every figure, plots
//! cargo bench --bench load -- storm --agents 19000 --calls-ringing 1000       # reconnect storm
//! cargo bench --bench load -- nats-down --pairs 5                             # NATS down vs single
//! ```
//!
//! The daemon (`target/release/screenpop`, built by `cargo bench`) and the floor relay run as child
//! processes on 127.0.0.1 ports chosen by the kernel and are ended by their PIDs. Every run is
//! bounded by its call count and a 10-minute deadline.

#![allow(missing_docs)]

mod campaign;
mod cluster;
mod floor;
mod loadgen;
mod plot;
mod storm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::{Agents, ChildGuard, DaemonOptions, Outcome, Scenario, Target, Transport};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "screenpop load generator (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The cluster's fault campaign (issue 15): three nodes, three NATS servers, calls forked
    /// to two nodes, a random node or NATS server SIGKILLed every `--fault-every` seconds.
    Campaign {
        /// How long, minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Calls per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Agents (each reconnects to the next node when its node goes away).
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Seconds between faults.
        #[arg(long, default_value_t = 30)]
        fault_every: u64,
        /// Seconds a killed process stays down.
        #[arg(long, default_value_t = 10)]
        down_for: u64,
        /// Write the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Several nodes on NATS JetStream (issue 15): single node vs cluster same-node vs
    /// cross-node vs NATS down, INVITE → `ringing`; snapshot after moving nodes; node-gone time.
    Cluster {
        /// Agents holding WebSockets.
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Calls per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Calls per scenario.
        #[arg(long, default_value_t = 4000)]
        calls: usize,
        /// Write the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A cluster node with every NATS server down against a single node, interleaved.
    NatsDown {
        /// Agents holding WebSockets.
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Calls per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Calls per scenario.
        #[arg(long, default_value_t = 4000)]
        calls: usize,
        /// Scenario pairs (single node, then NATS down).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Write the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One scenario: N agents connected, calls at a fixed rate, latency histograms.
    Run {
        /// `screenpop` (the daemon) or `floor` (the minimal UDP → WebSocket relay).
        #[arg(long, default_value = "screenpop")]
        target: String,
        /// `udp`, `tcp` or `hep`.
        #[arg(long, default_value = "udp")]
        transport: Transport,
        /// Calls per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Calls per pass.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Agents holding WebSockets (calls go round-robin to their extensions).
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Ring time before each call's CANCEL, milliseconds (0: no CANCEL, INVITEs only).
        #[arg(long, default_value_t = 500)]
        hold_ms: u64,
        /// `postgres`: the three demo PostgreSQL sources (accounting, sales, credit) on the
        /// local server, and the customer index in PostgreSQL; records INVITE → `complete`.
        #[arg(long)]
        sources: Option<String>,
        /// Passes over the same callers (with sources: the first is cold, the rest warm).
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Turn the built-in `history` section off (`[history] enabled = false`), to compare.
        #[arg(long)]
        no_history: bool,
        /// Write each pass's histogram (percentile table) and a JSON summary here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Every figure of docs/performance.md, with its plots, written to `--out`.
    Suite {
        #[arg(long, default_value = "target/performance")]
        out: PathBuf,
        /// A few seconds in all: proves the suite runs (used by nobody's figures).
        #[arg(long)]
        quick: bool,
        /// Also the composition figures with the PostgreSQL sources.
        #[arg(long)]
        postgres: bool,
    },
    /// Idle agents at scale and a reconnect storm (issue 19): N agents signed in (the daemon's
    /// RSS per idle agent), K calls ringing, every connection reset at once, all N back within
    /// `--window-s`, each with its snapshot. Raises RLIMIT_NOFILE first, or caps N to fit.
    Storm {
        /// Agents (capped to what the open-files limit allows; it says so).
        #[arg(long, default_value_t = 50_000)]
        agents: usize,
        /// Calls ringing at agents' extensions through the storm (INVITEs, no CANCEL).
        #[arg(long, default_value_t = 1000)]
        calls_ringing: usize,
        /// Seconds within which every agent reconnects (spread uniformly).
        #[arg(long, default_value_t = 10)]
        window_s: u64,
        /// Write the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (internal) Serve the floor relay; prints `FLOOR <udp> <ws>`.
    #[command(hide = true)]
    FloorRelay,
}

/// The daemon under test: `SCREENPOP_BIN` when set (to compare two builds with the same
/// generator, e.g. the commit before a change), else the release build of this checkout.
fn daemon_exe() -> PathBuf {
    std::env::var_os("SCREENPOP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_screenpop")))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` appends `--bench`.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    if let Cmd::FloorRelay = cli.command {
        // The relay's runtime is the daemon's: multi-threaded, one worker per core.
        return tokio::runtime::Runtime::new()?.block_on(floor_relay());
    }
    // The generator's own runtime: two workers whatever TOKIO_WORKER_THREADS says (that
    // variable is passed on to the daemon, to try its runtime with fewer workers).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Campaign {
                minutes,
                rate,
                agents,
                fault_every,
                down_for,
                out,
            } => {
                let figures = campaign::run(
                    daemon_exe(),
                    minutes,
                    rate,
                    agents,
                    Duration::from_secs(fault_every),
                    Duration::from_secs(down_for),
                )
                .await?;
                if let Some(out) = out {
                    std::fs::write(&out, serde_json::to_string_pretty(&figures)?)?;
                }
                Ok(())
            }
            Cmd::Cluster {
                agents,
                rate,
                calls,
                out,
            } => {
                let figures = cluster::run(daemon_exe(), agents, rate, calls).await?;
                if let Some(out) = out {
                    std::fs::write(&out, serde_json::to_string_pretty(&figures)?)?;
                }
                Ok(())
            }
            Cmd::NatsDown {
                agents,
                rate,
                calls,
                pairs,
                out,
            } => {
                anyhow::ensure!(pairs > 0, "--pairs must be at least 1");
                let figures = cluster::nats_down(daemon_exe(), agents, rate, calls, pairs).await?;
                if let Some(out) = out {
                    std::fs::write(&out, serde_json::to_string_pretty(&figures)?)?;
                }
                Ok(())
            }
            Cmd::Run {
                target,
                transport,
                rate,
                calls,
                agents,
                hold_ms,
                sources,
                passes,
                no_history,
                out,
            } => {
                let floor = match target.as_str() {
                    "screenpop" => false,
                    "floor" => true,
                    other => anyhow::bail!("--target {other:?}: screenpop or floor"),
                };
                let postgres = match sources.as_deref() {
                    None => None,
                    Some("postgres") => Some(demo_databases().await?),
                    Some(other) => anyhow::bail!("--sources {other:?}: postgres"),
                };
                let (target, _guard) = start(floor, agents, postgres.as_ref(), !no_history)?;
                let mut conns = loadgen::connect_agents(&target, agents).await?;
                println!(
                    "{} agents on {} signed in in {:.1} s",
                    agents, target.name, conns.connect_secs
                );
                settle(&target).await;
                let callers = loadgen::callers();
                for pass in 0..passes {
                    let scenario = Scenario {
                        transport,
                        rate,
                        calls,
                        hold: (hold_ms > 0).then(|| Duration::from_millis(hold_ms)),
                        complete: postgres.is_some(),
                        ..Scenario::default()
                    };
                    let o = loadgen::run(&target, &mut conns, &scenario, &callers).await?;
                    let label = if postgres.is_some() {
                        if pass == 0 { "cold" } else { "warm" }
                    } else {
                        "pass"
                    };
                    print_outcome(&format!("{label} {}", pass + 1), &o);
                    if !target.floor {
                        let drops = loadgen::metric(target.http, "screenpop_drops_total").await?;
                        println!("  daemon drops so far (screenpop_drops_total): {drops}");
                    }
                    if let Some(dir) = &out {
                        write_histograms(
                            dir,
                            &format!("{}-{label}{}", target.name.replace(' ', "-"), pass + 1),
                            &o,
                        )?;
                    }
                }
                if let Some(pid) = target.pid {
                    println!("{} RSS {} KiB", target.name, loadgen::rss_kib(pid));
                }
                Ok(())
            }
            Cmd::Suite {
                out,
                quick,
                postgres,
            } => suite(&out, quick, postgres).await,
            Cmd::Storm {
                agents,
                calls_ringing,
                window_s,
                out,
            } => {
                let figures = storm::run(
                    daemon_exe(),
                    storm::Options {
                        agents,
                        ringing: calls_ringing,
                        window: Duration::from_secs(window_s),
                    },
                )
                .await?;
                if let Some(out) = out {
                    std::fs::write(&out, serde_json::to_string_pretty(&figures)?)?;
                }
                Ok(())
            }
            Cmd::FloorRelay => unreachable!(),
        }
    })
}

async fn floor_relay() -> anyhow::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let (udp, ws, task) = floor::start(stop.clone()).await?;
    println!("FLOOR {udp} {ws}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.cancel();
    let _ = task.await;
    Ok(())
}

/// Starts the target as a child process.
fn start(
    floor: bool,
    agents: usize,
    postgres: Option<&screenpop::demo::db::DemoDatabases>,
    history: bool,
) -> anyhow::Result<(Target, ChildGuard)> {
    if floor {
        return loadgen::spawn_floor(&std::env::current_exe()?);
    }
    let mut extra = postgres.map(sources_toml).unwrap_or_default();
    if !history {
        extra.push_str("\n[history]\nenabled = false\n");
    }
    loadgen::spawn_daemon(
        &daemon_exe(),
        &DaemonOptions {
            agents,
            extra,
            dir: std::env::temp_dir().join(format!("screenpop-load-{}", std::process::id())),
            set: Vec::new(),
        },
    )
}

/// A daemon is up before calls come: let its start-up work (metadata warm-up, sources'
/// connections) finish.
async fn settle(target: &Target) {
    if !target.floor {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const PREFIX: &str = "screenpop_bench_load";

/// The demo databases (customer index, accounting, sales, credit), made once and kept for the
/// next run (`DROP DATABASE screenpop_bench_load…` removes them).
async fn demo_databases() -> anyhow::Result<screenpop::demo::db::DemoDatabases> {
    let url = |suffix: &str| format!("{SERVER}/{PREFIX}{suffix}");
    let dbs = screenpop::demo::db::DemoDatabases {
        index: url(""),
        accounting: url("_accounting"),
        sales: url("_sales"),
        credit: url("_credit"),
        customers: 1202,
    };
    let ready = async {
        let c = screenpop::db::connect(&dbs.credit).await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM credit", &[])
            .await?
            .get(0);
        anyhow::Ok(n > 0)
    };
    if matches!(ready.await, Ok(true)) {
        return Ok(dbs);
    }
    println!("creating the demo databases ({PREFIX}*)…");
    screenpop::demo::db::create(SERVER, PREFIX, 1202).await
}

fn sources_toml(dbs: &screenpop::demo::db::DemoDatabases) -> String {
    let sources = screenpop::demo::db::sources_toml(dbs, "[]").replace(
        "timeout = \"800ms\"",
        "timeout = \"800ms\"\ncache_ttl = \"10m\"",
    );
    format!(
        "[directory]\ndatabase_url = \"{}\"\n[call_log]\ndatabase_url = \"{}\"\n{sources}",
        dbs.index, dbs.index
    )
}

fn print_outcome(label: &str, o: &Outcome) {
    println!(
        "{label}: {} calls sent at {:.0}/s, {} popped ({} lost), {} × 100 Trying",
        o.sent,
        o.achieved_rate,
        o.popped,
        o.lost(),
        o.trying
    );
    if let Some(cpu) = o.cpu_per_call_us {
        println!("  target CPU per call: {cpu:.0} µs (user + system, whole run)");
    }
    if !o.trying_latency.is_empty() {
        println!(
            "  INVITE → 100       {}",
            loadgen::summary(&o.trying_latency)
        );
    }
    println!("  INVITE → ringing   {}", loadgen::summary(&o.ringing));
    if !o.complete.is_empty() {
        println!("  INVITE → complete  {}", loadgen::summary(&o.complete));
    }
}

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "n": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p90_us": h.value_at_quantile(0.9),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn outcome_json(o: &Outcome) -> Value {
    json!({
        "sent": o.sent,
        "popped": o.popped,
        "lost": o.lost(),
        "rate": o.achieved_rate.round(),
        "cpu_per_call_us": o.cpu_per_call_us.map(|c| c.round()),
        "ringing": quantiles(&o.ringing),
        "complete": quantiles(&o.complete),
    })
}

/// The histogram as a percentile table (the HdrHistogram text form's columns) plus a JSON line.
fn write_histograms(dir: &Path, name: &str, o: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (what, h) in [("ringing", &o.ringing), ("complete", &o.complete)] {
        if h.is_empty() {
            continue;
        }
        let mut text = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        for v in h.iter_quantiles(2) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                1.0 / (1.0 - q)
            } else {
                f64::INFINITY
            };
            text.push_str(&format!(
                "{:12.3} {:14.12} {:10} {:14.2}\n",
                v.value_iterated_to() as f64,
                q,
                v.count_since_last_iteration(),
                inv
            ));
        }
        text.push_str(&format!(
            "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {}, Total count = {}]\n",
            h.mean(),
            h.stdev(),
            h.max(),
            h.len()
        ));
        std::fs::write(dir.join(format!("{name}-{what}.hgrm")), text)?;
    }
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&outcome_json(o))?,
    )?;
    Ok(())
}

/// One target started with `agents` agents signed in.
struct Running {
    target: Target,
    agents: Agents,
    _guard: ChildGuard,
}

async fn running(
    floor: bool,
    agents: usize,
    postgres: Option<&screenpop::demo::db::DemoDatabases>,
) -> anyhow::Result<Running> {
    let (target, guard) = start(floor, agents, postgres, true)?;
    let agents = loadgen::connect_agents(&target, agents).await?;
    settle(&target).await;
    Ok(Running {
        target,
        agents,
        _guard: guard,
    })
}

/// Every figure of docs/performance.md.
async fn suite(out: &Path, quick: bool, postgres: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let callers = loadgen::callers();
    let mut results = serde_json::Map::new();
    let scale = |full: usize, smoke: usize| if quick { smoke } else { full };
    let agents = scale(1000, 20);

    // 1. Ring-to-pop at 200 calls/s with 1,000 agents: daemon vs floor; the CDF plot.
    let mut cdfs = Vec::new();
    let mut at_200 = serde_json::Map::new();
    for floor in [false, true] {
        let mut r = running(floor, agents, None).await?;
        let scenario = Scenario {
            rate: 200,
            calls: scale(6000, 100),
            ..Scenario::default()
        };
        // A first short pass warms both (page faults, allocator, connections).
        let warm = Scenario {
            calls: scale(400, 20),
            ..scenario.clone()
        };
        loadgen::run(&r.target, &mut r.agents, &warm, &callers).await?;
        let o = loadgen::run(&r.target, &mut r.agents, &scenario, &callers).await?;
        print_outcome(&format!("{} at 200/s, {agents} agents", r.target.name), &o);
        write_histograms(out, &format!("{}-200", r.target.name.replace(' ', "-")), &o)?;
        cdfs.push((r.target.name.to_owned(), o.ringing.clone()));
        at_200.insert(r.target.name.into(), outcome_json(&o));
    }
    let p50 = |i: usize| cdfs[i].1.value_at_quantile(0.5) as f64;
    let p99 = |i: usize| cdfs[i].1.value_at_quantile(0.99) as f64;
    at_200.insert(
        "ratio_p50".into(),
        json!((p50(0) / p50(1) * 100.0).round() / 100.0),
    );
    at_200.insert(
        "ratio_p99".into(),
        json!((p99(0) / p99(1) * 100.0).round() / 100.0),
    );
    results.insert("ringing_200".into(), Value::Object(at_200));
    plot::cdf(
        &out.join("latency-cdf.svg"),
        &cdfs,
        "INVITE → ringing at 200 calls/s, 1,000 agents",
    )?;

    // 2. Latency against call rate, daemon and floor (UDP, whole fork calls: INVITE, 100,
    //    CANCEL after 200 ms, 200, 487, ACK), until a rate loses more than 1 % of its pops.
    let rates: Vec<u64> = if quick {
        vec![200, 1000]
    } else {
        vec![200, 500, 1000, 2000, 5000, 10_000, 20_000]
    };
    let mut by_rate = Vec::new();
    let mut rate_json = Vec::new();
    for floor in [false, true] {
        let mut r = running(floor, agents, None).await?;
        let mut points = Vec::new();
        for &rate in &rates {
            let scenario = Scenario {
                rate,
                calls: scale((rate as usize * 3).max(2000), 50),
                hold: Some(Duration::from_millis(200)),
                ..Scenario::default()
            };
            let o = loadgen::run(&r.target, &mut r.agents, &scenario, &callers).await?;
            print_outcome(&format!("{} UDP calls at {rate}/s", r.target.name), &o);
            rate_json.push(
                json!({"target": r.target.name, "requested": rate, "outcome": outcome_json(&o)}),
            );
            points.push((
                o.achieved_rate,
                o.ringing.value_at_quantile(0.5),
                o.ringing.value_at_quantile(0.99),
                o.lost(),
            ));
            if o.lost() > o.sent / 100 {
                break; // past saturation: higher rates only queue
            }
            // Let the CANCELs of this step finish before the next.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        by_rate.push((r.target.name.to_owned(), points));
    }
    results.insert("by_rate".into(), Value::Array(rate_json));
    plot::by_rate(&out.join("latency-vs-rate.svg"), &by_rate)?;

    // 3. The highest INVITE rate with every pop delivered (INVITEs only, as a SIP ingest
    //    figure): each step on a fresh daemon with the agents signed in, 3 s of calls.
    let ladder: Vec<u64> = if quick {
        vec![500]
    } else {
        vec![5000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000]
    };
    let mut max_json = serde_json::Map::new();
    for transport in [Transport::Udp, Transport::Tcp, Transport::Hep] {
        let mut best = 0.0f64;
        let mut steps = Vec::new();
        for &rate in &ladder {
            let mut r = running(false, agents, None).await?;
            let scenario = Scenario {
                transport,
                rate,
                calls: scale(rate as usize * 3, 100),
                hold: None,
                ..Scenario::default()
            };
            let o = loadgen::run(&r.target, &mut r.agents, &scenario, &callers).await?;
            print_outcome(
                &format!("screenpop {} INVITEs at {rate}/s", transport.name()),
                &o,
            );
            let drops = loadgen::metric(r.target.http, "screenpop_drops_total").await?;
            steps.push(json!({"requested": rate, "drops": drops, "outcome": outcome_json(&o)}));
            if o.lost() > 0 {
                break;
            }
            best = best.max(o.achieved_rate);
        }
        max_json.insert(
            transport.name().into(),
            json!({"max_without_loss": best.round(), "steps": steps}),
        );
    }
    results.insert("max_rate".into(), Value::Object(max_json));

    // 4. Memory against connected agents (idle), daemon and floor.
    let counts: Vec<usize> = if quick {
        vec![10, 40]
    } else {
        vec![1000, 5000, 10_000, 19_000]
    };
    let mut memory = Vec::new();
    let mut memory_json = Vec::new();
    for floor in [false, true] {
        let mut points = Vec::new();
        for &n in &counts {
            let (target, _guard) = start(floor, n, None, true)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let pid = target.pid.context("pid")?;
            let base = loadgen::rss_kib(pid);
            let conns = loadgen::connect_agents(&target, n).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let idle = loadgen::rss_kib(pid);
            let per = (idle.saturating_sub(base)) as f64 / n as f64;
            println!(
                "{} with {n} idle agents: RSS {base} → {idle} KiB, {per:.1} KiB each (sign-in {:.1} s)",
                target.name, conns.connect_secs
            );
            memory_json.push(json!({"target": target.name, "agents": n, "rss_base_kib": base, "rss_kib": idle, "per_agent_kib": (per * 10.0).round() / 10.0, "connect_s": (conns.connect_secs * 10.0).round() / 10.0}));
            points.push((n, idle as f64 / 1024.0));
            drop(conns);
        }
        memory.push((
            if floor { "floor relay" } else { "screenpop" }.to_owned(),
            points,
        ));
    }
    results.insert("memory".into(), Value::Array(memory_json));
    plot::memory(&out.join("memory-vs-agents.svg"), &memory)?;

    // 5. Composition with the three PostgreSQL sources: cold, then warm.
    if postgres {
        let dbs = demo_databases().await?;
        let mut r = running(false, agents, Some(&dbs)).await?;
        let calls = scale(1000, 20).min(callers.len());
        let mut compose = serde_json::Map::new();
        for pass in ["cold", "warm"] {
            let scenario = Scenario {
                calls,
                complete: true,
                ..Scenario::default()
            };
            let o = loadgen::run(&r.target, &mut r.agents, &scenario, &callers).await?;
            print_outcome(&format!("three PostgreSQL sources, {pass}"), &o);
            write_histograms(out, &format!("compose-{pass}"), &o)?;
            compose.insert(pass.into(), outcome_json(&o));
        }
        results.insert("compose".into(), Value::Object(compose));
        drop(r);
    }

    results.insert("machine".into(), machine());
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    println!("figures and plots in {}", out.display());
    Ok(())
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}
