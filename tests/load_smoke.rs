//! The load generator's smoke mode (`benches/load/`), so the benchmark code cannot rot: a few
//! dozen calls over each transport to the daemon binary and to the floor relay, and the plots.
//! It asserts only that every part completes and produces a histogram; speed is judged from the
//! benchmark report (docs/performance.md), never here.

#![allow(dead_code, missing_docs)]

#[path = "../benches/load/floor.rs"]
mod floor;
#[path = "../benches/load/loadgen.rs"]
mod loadgen;
#[path = "../benches/load/plot.rs"]
mod plot;

use std::path::Path;
use std::time::Duration;

use loadgen::{DaemonOptions, Scenario, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_every_transport_and_the_floor_and_draws_its_plots() {
    let dir = std::env::temp_dir().join(format!("screenpop-load-smoke-{}", std::process::id()));
    let callers = loadgen::callers();
    assert!(callers.len() > 1000, "the seeded customers are the callers");

    // The daemon, as a child process, with 8 agents.
    let (target, guard) = loadgen::spawn_daemon(
        Path::new(env!("CARGO_BIN_EXE_screenpop")),
        &DaemonOptions {
            agents: 8,
            extra: String::new(),
            dir: dir.clone(),
            set: Vec::new(),
        },
    )
    .expect("daemon");
    let mut agents = loadgen::connect_agents(&target, 8).await.expect("agents");
    let mut series = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp, Transport::Hep] {
        let scenario = Scenario {
            transport,
            rate: 400,
            calls: 40,
            hold: Some(Duration::from_millis(50)),
            ..Scenario::default()
        };
        let o = loadgen::run(&target, &mut agents, &scenario, &callers)
            .await
            .expect("run");
        assert_eq!(o.sent, 40);
        assert!(
            !o.ringing.is_empty(),
            "{transport:?}: a histogram of INVITE → ringing"
        );
        series.push((format!("screenpop {}", transport.name()), o.ringing.clone()));
    }
    let invites = loadgen::metric(target.http, "screenpop_sip_messages_total")
        .await
        .expect("metrics");
    assert!(invites > 0.0, "the daemon counted the SIP it received");
    drop(guard);

    // The floor relay, in process.
    let stop = tokio_util::sync::CancellationToken::new();
    let (udp, ws, task) = floor::start(stop.clone()).await.expect("floor");
    let target = loadgen::floor_target(udp, ws, None);
    let mut agents = loadgen::connect_agents(&target, 8).await.expect("agents");
    let o = loadgen::run(
        &target,
        &mut agents,
        &Scenario {
            rate: 400,
            calls: 40,
            ..Scenario::default()
        },
        &callers,
    )
    .await
    .expect("floor run");
    assert!(!o.ringing.is_empty(), "a histogram through the floor relay");
    series.push(("floor relay".into(), o.ringing.clone()));
    stop.cancel();
    let _ = task.await;

    // The plots.
    std::fs::create_dir_all(&dir).expect("dir");
    plot::cdf(&dir.join("cdf.svg"), &series, "smoke").expect("cdf");
    plot::by_rate(
        &dir.join("rate.svg"),
        &[(
            "screenpop".into(),
            vec![(400.0, 300, 900, 0), (800.0, 320, 1000, 1)],
        )],
    )
    .expect("by rate");
    plot::memory(
        &dir.join("memory.svg"),
        &[("screenpop".into(), vec![(10, 20.0), (40, 21.0)])],
    )
    .expect("memory");
    for svg in ["cdf.svg", "rate.svg", "memory.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).expect("svg");
        assert!(text.starts_with("<svg"), "{svg} is an SVG document");
    }
    let _ = std::fs::remove_dir_all(dir);
}
