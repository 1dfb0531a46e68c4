//! Several screenpop nodes on a real three-server NATS JetStream cluster (issue 15), all on
//! loopback: a call seen at one node pops an agent signed in at another; a call forked to two
//! nodes is one call (same id everywhere) with one pop, ended once by its CANCEL at either
//! node; an agent who moves to another node finds the call in its snapshot; a node SIGKILLed
//! mid-ring leaves the call at the node that witnessed it, where its CANCEL ends it; with every
//! NATS server down each node still pops its own agents, and once NATS is back the nodes
//! re-sync their live calls.

mod support;
#[path = "support/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use screenpop::cluster::ClusterConfig;
use screenpop::daemon::Daemon;
use serde_json::Value;
use support::binary::Process;
use support::nats::NatsCluster;
use support::{UdpPeer, request, start_with};

const ALICE: &str = "alice-demo-token";

fn cluster(node: &str, nats: &NatsCluster, prefix: &str) -> ClusterConfig {
    toml::from_str(&format!(
        "node = \"{node}\"\nnats = {:?}\nprefix = \"{prefix}\"\nheartbeat = \"300ms\"\n",
        nats.urls()
    ))
    .expect("cluster section")
}

/// A prefix of its own per test: the tests share nothing on the NATS cluster.
fn prefix(test: &str) -> String {
    format!("t{}_{test}", std::process::id())
}

/// A demo node in this process, in the cluster.
async fn node(name: &str, nats: &NatsCluster, prefix: &str) -> Daemon {
    let config = cluster(name, nats, prefix);
    start_with(|s| s.cluster = Some(config)).await
}

/// Two demo nodes, a and b, each seeing the other live.
async fn pair(nats: &NatsCluster, prefix: &str) -> (Daemon, Daemon) {
    let (a, b) = (node("a", nats, prefix).await, node("b", nats, prefix).await);
    until_nodes(a.bound.http.expect("http"), 2).await;
    until_nodes(b.bound.http.expect("http"), 2).await;
    (a, b)
}

/// Waits until `http`'s `/healthz` lists `count` live nodes (heartbeats seen).
async fn until_nodes(http: SocketAddr, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = support::http_get(http, "/healthz", None).await;
        let health: Value = serde_json::from_str(&body).unwrap_or_default();
        if health["cluster"]["connected"] == true
            && health["cluster"]["nodes"].as_array().map(Vec::len) == Some(count)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} nodes never seen: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn invite(peer: &UdpPeer, ext: &str, call: &str, branch: &str) {
    peer.send(&request(
        "INVITE",
        ext,
        peer.local(),
        "UDP",
        call,
        branch,
        1,
        "",
    ))
    .await;
    assert_eq!(peer.expect().await.code, 100, "100 Trying");
}

async fn cancel(peer: &UdpPeer, ext: &str, call: &str, branch: &str) {
    peer.send(&request(
        "CANCEL",
        ext,
        peer.local(),
        "UDP",
        call,
        branch,
        1,
        "",
    ))
    .await;
    let mut codes = [peer.expect().await.code, peer.expect().await.code];
    codes.sort();
    assert_eq!(codes, [200, 487]);
}

/// The next message of `kind` on `ws` within `wait`, if any (others skipped).
async fn within(ws: &mut ws::Ws, kind: &str, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (msg, _) = ws::next_raw(ws, left).await?;
        if msg["type"] == kind {
            return Some(msg);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_one_node_pops_at_another_and_a_fork_to_both_is_one_call() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("fork");
    let (a, b) = pair(&nats, &prefix).await;

    // alice is signed in at both nodes (two browsers): each pops once.
    let (mut at_a, _) = ws::sign_in(a.bound.http.expect("http"), ALICE).await;
    let (mut at_b, _) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;

    // The PBX forks the INVITE to both nodes.
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    let to_b = UdpPeer::new(b.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "fork-1@pbx", "z9hG4bKfa").await;
    invite(&to_b, "1001", "fork-1@pbx", "z9hG4bKfb").await;
    let pop_a = ws::expect(&mut at_a, "ringing").await;
    let pop_b = ws::expect(&mut at_b, "ringing").await;
    assert_eq!(
        pop_a["call_id"], pop_b["call_id"],
        "one call id on every node"
    );
    assert_eq!(pop_a["customer"]["name"], "Acme Corporation", "{pop_a}");
    for ws in [&mut at_a, &mut at_b] {
        assert!(
            within(ws, "ringing", Duration::from_millis(800))
                .await
                .is_none(),
            "one pop per ringing leg"
        );
    }

    // The caller gives up: the PBX cancels both branches; the call ends once everywhere.
    cancel(&to_b, "1001", "fork-1@pbx", "z9hG4bKfb").await;
    for ws in [&mut at_a, &mut at_b] {
        let ended = ws::expect(ws, "ended").await;
        assert_eq!(ended["call_id"], pop_a["call_id"]);
    }
    cancel(&to_a, "1001", "fork-1@pbx", "z9hG4bKfa").await;
    for ws in [&mut at_a, &mut at_b] {
        assert!(
            within(ws, "ended", Duration::from_millis(800))
                .await
                .is_none(),
            "ended once"
        );
    }

    // A call only node a sees pops bob at node b, and ends there with its CANCEL at a (a new
    // PBX socket: the old one still gets the 487s it never ACKed).
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    let (mut bob, _) = ws::sign_in(b.bound.http.expect("http"), "bob-demo-token").await;
    invite(&to_a, "1002", "only-a@pbx", "z9hG4bKoa").await;
    let pop = ws::expect(&mut bob, "ringing").await;
    assert_eq!(pop["extension"], "1002", "{pop}");
    cancel(&to_a, "1002", "only-a@pbx", "z9hG4bKoa").await;
    assert_eq!(
        ws::expect(&mut bob, "ended").await["call_id"],
        pop["call_id"]
    );
    // (Metrics are per process, shared by every node of this test binary: /healthz is per
    // node.)
    let (_, health) = support::http_get(a.bound.http.expect("http"), "/healthz", None).await;
    let health: Value = serde_json::from_str(&health).expect("json");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["cluster"]["node"], "a", "{health}");
    assert_eq!(health["cluster"]["connected"], true, "{health}");
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moving_to_another_node_finds_the_live_call_in_its_snapshot() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("move");
    let (a, b) = pair(&nats, &prefix).await;
    let (mut at_a, _) = ws::sign_in(a.bound.http.expect("http"), ALICE).await;
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "move-1@pbx", "z9hG4bKm1").await;
    let pop = ws::expect(&mut at_a, "ringing").await;

    // alice's browser moves to node b (a load balancer, a reconnect): the call is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let entry = loop {
        let (_, snapshot) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;
        let calls = snapshot["calls"].as_array().cloned().unwrap_or_default();
        if let Some(entry) = calls.into_iter().find(|c| c["call_id"] == pop["call_id"]) {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call in b's snapshot: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["customer"]["name"], "Acme Corporation", "{entry}");
    assert_eq!(entry["extension"], "1001");
    a.shutdown();
    b.shutdown();
}

/// The release binary as one node of the cluster (so that it can be SIGKILLed).
fn binary_node(dir: &Path, name: &str, nats: &NatsCluster, prefix: &str) -> Process {
    std::fs::write(
        dir.join("customers.csv"),
        "id,name,company,account,crm_url,tags,numbers\n\
         acme,Acme Corporation,Acme,ACME-1,,,main:(415) 555-0100\n",
    )
    .expect("customers");
    let config = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [directory]\ncsv = \"customers.csv\"\n\
         [[agents]]\nid = \"alice\"\nextensions = [\"1001\"]\ntoken_sha256 = \"{}\"\n\
         [cluster]\nnode = \"{name}\"\nnats = {:?}\nprefix = \"{prefix}\"\nheartbeat = \"300ms\"\n",
        screenpop::config::TokenHash::of(ALICE).hex(),
        nats.urls()
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).expect("config");
    Process::start(&file, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_ring_leaves_the_call_at_the_witness() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("kill");
    let dir = std::env::temp_dir().join(format!("screenpop-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let a = binary_node(&dir, "a", &nats, &prefix);
    let b = node("b", &nats, &prefix).await;
    until_nodes(b.bound.http.expect("http"), 2).await;
    let (mut at_b, _) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;

    // Forked to both; a pops first, b witnesses.
    let to_a = UdpPeer::new(a.sip).await;
    let to_b = UdpPeer::new(b.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "kill-1@pbx", "z9hG4bKk1").await;
    let pop = ws::expect(&mut at_b, "ringing").await;
    invite(&to_b, "1001", "kill-1@pbx", "z9hG4bKk2").await;
    a.signal("-KILL");

    // b still holds the call: in a fresh snapshot, and its CANCEL (at b) ends it.
    let (_, snapshot) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;
    assert!(
        snapshot["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["call_id"] == pop["call_id"])),
        "{snapshot}"
    );
    until_nodes(b.bound.http.expect("http"), 1).await;
    cancel(&to_b, "1001", "kill-1@pbx", "z9hG4bKk2").await;
    assert_eq!(
        ws::expect(&mut at_b, "ended").await["call_id"],
        pop["call_id"]
    );
    b.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_each_node_pops_its_own_agents_and_resyncs_when_it_returns() {
    let mut nats = NatsCluster::start(3).await;
    let prefix = prefix("down");
    let (a, b) = pair(&nats, &prefix).await;
    let (mut at_a, _) = ws::sign_in(a.bound.http.expect("http"), ALICE).await;

    for i in 0..3 {
        nats.kill(i);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = support::http_get(a.bound.http.expect("http"), "/healthz", None).await;
        if body.contains("\"degraded\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never degraded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node a pops its own agent from its own intake, NATS or not.
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "down-1@pbx", "z9hG4bKd1").await;
    let pop = ws::expect(&mut at_a, "ringing").await;
    assert_eq!(pop["customer"]["name"], "Acme Corporation");

    // NATS is back: node b learns the call it missed.
    nats.restart_all(&[0, 1, 2]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, snapshot) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;
        if snapshot["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["call_id"] == pop["call_id"]))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never re-synced: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.shutdown();
    b.shutdown();
}

/// A loyalty API on loopback that counts its requests.
async fn loyalty_api() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/v1/members/{account}",
        axum::routing::get(move || {
            let hits = counted.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                axum::Json(serde_json::json!({"tier": "gold", "points": 12_400}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_asks_the_sources_and_every_node_shows_its_sections() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("owner");
    let (api, hits) = loyalty_api().await;
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\n[[sources]]\nname = \"loyalty\"\ntype = \"http\"\n\
         url = \"http://{api}/v1/members/{{account}}\"\ntimeout = \"2s\"\n"
    );
    let config =
        screenpop::config::Config::parse(&text, Path::new("cluster.toml")).expect("config");
    let composer = screenpop::config::composer_from(&config, None).expect("composer");
    let start = |name: &'static str| {
        let (config, composer) = (cluster(name, &nats, &prefix), composer.clone());
        start_with(move |s| {
            s.cluster = Some(config);
            s.composer = composer;
        })
    };
    let (a, b) = (start("a").await, start("b").await);
    let (http_a, http_b) = (a.bound.http.expect("http"), b.bound.http.expect("http"));
    until_nodes(http_a, 2).await;
    until_nodes(http_b, 2).await;
    let (mut at_a, _) = ws::sign_in(http_a, ALICE).await;
    let (mut at_b, _) = ws::sign_in(http_b, ALICE).await;

    // Forked to both nodes: both pop, one of them asks the API, both show the section.
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    let to_b = UdpPeer::new(b.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "owner-1@pbx", "z9hG4bKw1").await;
    invite(&to_b, "1001", "owner-1@pbx", "z9hG4bKw2").await;
    for ws in [&mut at_a, &mut at_b] {
        let section = within(ws, "section", Duration::from_secs(5))
            .await
            .expect("the loyalty section");
        assert_eq!(section["name"], "loyalty", "{section}");
        assert_eq!(section["data"]["tier"], "gold", "{section}");
        assert!(
            within(ws, "complete", Duration::from_secs(5))
                .await
                .is_some()
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the sources are asked once per call, not once per node"
    );

    // alice moves to node b: the call's section is in b's snapshot.
    let (_, snapshot) = ws::sign_in(http_b, ALICE).await;
    let call = &snapshot["calls"][0];
    assert_eq!(call["sections"][0]["name"], "loyalty", "{snapshot}");
    assert_eq!(call["complete"], true, "{snapshot}");
    a.shutdown();
    b.shutdown();
}

#[path = "support/browser.rs"]
mod browser;

/// A free loopback port (bound and let go: the node binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_moves_to_another_node_when_its_node_goes_away() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("page");
    let (port_a, port_b) = (free_port(), free_port());
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let start = |name: &'static str, port: u16, other: u16| {
        let mut config = cluster(name, &nats, &prefix);
        config.page_url = Some(url(port));
        start_with(move |s| {
            s.http = SocketAddr::from(([127, 0, 0, 1], port));
            s.cluster = Some(config);
            // The page is served by one node and may reconnect to the other.
            s.push.allowed_origins = vec![url(other)];
        })
    };
    let a = start("a", port_a, port_b).await;
    let b = start("b", port_b, port_a).await;
    until_nodes(a.bound.http.expect("http"), 2).await;
    until_nodes(b.bound.http.expect("http"), 2).await;
    // Each node's ready lists both nodes' pages, its own first.
    let mut socket = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port_a}/ws"))
        .await
        .expect("ws")
        .0;
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(format!(
            "{{\"type\":\"auth\",\"token\":\"{ALICE}\"}}"
        )))
        .await
        .expect("auth");
    let first = ws::expect(&mut socket, "ready").await;
    assert_eq!(
        first["nodes"],
        serde_json::json!([url(port_a), url(port_b)]),
        "{first}"
    );
    drop(socket);

    let sip_b = b.bound.sip_udp[0];
    browser::run(|sessions: browser::Sessions| async move {
        let page = sessions.open(1280, 900).await;
        page.sign_in(&format!("{}/", url(port_a)), ALICE).await;
        // Node a goes away: the page reconnects to node b by itself.
        a.shutdown();
        page.until(
            Duration::from_secs(5),
            "the connection lost",
            "document.querySelector('#conn').dataset.state !== 'live'",
        )
        .await;
        page.until(
            Duration::from_secs(15),
            "live again, at node b",
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        let to_b = UdpPeer::new(sip_b).await;
        invite(&to_b, "1001", "page-1@pbx", "z9hG4bKpg").await;
        page.until(
            Duration::from_secs(5),
            "the card, from node b",
            "document.querySelector('article.card') && document.querySelector('article.card .name').textContent === 'Acme Corporation'",
        )
        .await;
    })
    .await;
    b.shutdown();
}

/// Rings `n` calls at `to` (ext 1001) and expects each to pop on `ws` within 10 s (what the
/// cluster may need to route around a lost NATS server); cancels them.
async fn pops_across(sip: SocketAddr, ws: &mut ws::Ws, tag: &str, n: usize) {
    for k in 0..n {
        // A socket per call: the 487s of the last one are never ACKed, so they come again.
        let to = &UdpPeer::new(sip).await;
        let (call, branch) = (format!("{tag}-{k}@pbx"), format!("z9hG4bK{tag}{k}"));
        invite(to, "1001", &call, &branch).await;
        let pop = within(ws, "ringing", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{call} did not pop across nodes"));
        assert_eq!(pop["extension"], "1001", "{pop}");
        cancel(to, "1001", &call, &branch).await;
        assert!(within(ws, "ended", Duration::from_secs(10)).await.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_that_leads_the_claims_or_stopping_one_server_loses_no_pop() {
    let mut nats = NatsCluster::start(3).await;
    let prefix = prefix("leader");
    let (a, b) = pair(&nats, &prefix).await;
    let (mut at_b, _) = ws::sign_in(b.bound.http.expect("http"), ALICE).await;
    let to_a = a.bound.sip_udp[0];
    pops_across(to_a, &mut at_b, "before", 2).await;

    // SIGKILL of the server leading the claims bucket: a raft election follows (4–9 s), during
    // which no call can be claimed; calls still pop across nodes (core NATS) and are composed
    // where they rang.
    let stream = format!("KV_{prefix}_claims");
    let leader = nats
        .stream_leader(&stream)
        .await
        .expect("the claims bucket has a leader");
    nats.kill(leader);
    pops_across(to_a, &mut at_b, "leaderless", 3).await;
    nats.restart(leader).await;

    // One server stopped cleanly (a partition of one): the nodes' clients move to the others.
    let stopped = (leader + 1) % 3;
    nats.stop(stopped);
    pops_across(to_a, &mut at_b, "partition", 3).await;
    nats.restart(stopped).await;
    pops_across(to_a, &mut at_b, "after", 2).await;
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_saved_at_one_node_is_in_recent_calls_and_history_at_the_other() {
    let nats = NatsCluster::start(3).await;
    let prefix = prefix("note");
    let (a, b) = pair(&nats, &prefix).await;
    let (a_http, b_http) = (a.bound.http.expect("http"), b.bound.http.expect("http"));
    let (mut at_a, _) = ws::sign_in(a_http, ALICE).await;
    let to_a = UdpPeer::new(a.bound.sip_udp[0]).await;
    invite(&to_a, "1001", "note-1@pbx", "z9hG4bKn1").await;
    let pop = ws::expect(&mut at_a, "ringing").await;
    let call_id = pop["call_id"].as_str().expect("id").to_owned();
    cancel(&to_a, "1001", "note-1@pbx", "z9hG4bKn1").await;
    ws::expect(&mut at_a, "ended").await;
    let body =
        serde_json::json!({"note": "Wants a call back on Monday", "disposition": "Callback"})
            .to_string();
    let (status, _, _) = support::http_request(
        a_http,
        "POST",
        &format!("/api/calls/{call_id}/notes"),
        Some(ALICE),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200);

    // alice's page moves to node b: her recent calls there carry the note.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = support::http_get(b_http, "/api/calls?mine=1", Some(ALICE)).await;
        let recent: Value = serde_json::from_str(&body).unwrap_or_default();
        let noted = recent["calls"]
            .as_array()
            .and_then(|calls| calls.iter().find(|c| c["call_id"] == call_id.as_str()))
            .is_some_and(|c| c["note"] == "Wants a call back on Monday");
        if noted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's recent calls lack the note: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And Acme's next call, popped at b, has it in its history.
    let (mut at_b, _) = ws::sign_in(b_http, ALICE).await;
    let to_b = UdpPeer::new(b.bound.sip_udp[0]).await;
    invite(&to_b, "1001", "note-2@pbx", "z9hG4bKn2").await;
    let history = loop {
        let section = ws::expect(&mut at_b, "section").await;
        if section["name"] == "history" {
            break section;
        }
    };
    let first = &history["data"]["calls"][0];
    assert_eq!(first["call_id"], call_id.as_str(), "{history}");
    assert_eq!(first["note"], "Wants a call back on Monday", "{history}");
    assert_eq!(first["disposition"], "Callback");
    a.shutdown();
    b.shutdown();
}
