//! Several equal nodes on NATS JetStream (`[cluster]`): any intake at any node, any agent at
//! any node.
//!
//! **Pop first, agree after.** A node applies its own intakes' events at once (its agents pop
//! with no NATS on the path) and copies each into a bounded publish queue
//! ([`Calls::replicate_to`]); a full queue drops the copy and counts it. Every node applies
//! the others' events to its own call table, so every node knows every live call: an agent
//! signed in anywhere is popped, a `snapshot` at any node is complete, and a call whose
//! node dies lives on at every other node, where its later events (from their own intakes or
//! from the survivors) end it. Call ids are deterministic from the intake's key
//! (`calls::tracker::call_id`), and the call table is idempotent per leg, so a call seen by
//! several nodes (a fork to two nodes, HEP copies to both, an AMI connection from each) is
//! one call with one pop per ringing leg, and one call-log row (written by call id by every
//! node that holds it; the upsert merges what each saw, in any order).
//!
//! **Liveness.** Each node heartbeats into the `<prefix>_nodes` key-value bucket, whose
//! entries expire after three heartbeats: `/healthz` and `screenpop_cluster_nodes` show the
//! live nodes.
//!
//! **NATS away.** The node goes on popping its own agents from its own intakes; `/healthz`
//! says `degraded`, `screenpop_cluster_connected` is 0, one warning is logged. When the
//! connection comes back the node says `hello`, and every node answers with its live calls
//! (the events that rebuild them), so both sides catch up.

mod section;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use section::ClusterConfig;

use crate::calls::{CallEvent, Calls};

/// Metric `screenpop_cluster_connected`: 1 while connected to NATS.
pub const CONNECTED: &str = "screenpop_cluster_connected";
/// Metric `screenpop_cluster_nodes`: the nodes with a live heartbeat, this one included.
pub const NODES: &str = "screenpop_cluster_nodes";
/// Metric `screenpop_cluster_events_total{direction}`: events published and received.
pub const EVENTS_TOTAL: &str = "screenpop_cluster_events_total";
/// Metric `screenpop_cluster_publish_latency_seconds`: publish at one node → applied at
/// another (wall clocks: meaningful where the nodes' clocks agree, e.g. NTP).
pub const LATENCY_SECONDS: &str = "screenpop_cluster_publish_latency_seconds";
/// Metric `screenpop_cluster_resyncs_total`: live-call sets sent to a node that said hello.
pub const RESYNCS_TOTAL: &str = "screenpop_cluster_resyncs_total";

/// Metric `screenpop_cluster_claims_total{result}`: calls this node asked to own: `won`,
/// `lost` (another node composes), `unavailable` (NATS could not say: composed here).
pub const CLAIMS_TOTAL: &str = "screenpop_cluster_claims_total";

/// How long a claim may take before this node composes anyway.
const CLAIM_WITHIN: Duration = Duration::from_secs(1);
/// How long a claim is kept (past any call's life: ring timeout plus answered TTL).
const CLAIM_KEPT: Duration = Duration::from_secs(3600);
/// Most shared sections waiting to be published.
const SHARE_QUEUE: usize = 4096;

/// Most events in one published message.
const BATCH: usize = 256;

/// What goes over NATS: some events of one node.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Envelope {
    /// The node that saw them.
    node: String,
    /// When it published them, microseconds since the Unix epoch.
    sent_us: u64,
    /// The events, in the order that node applied them, each with its call's generation
    /// there (how many calls on the same key had ended: `Calls::apply_remote`).
    events: Vec<(CallEvent, u32)>,
}

/// The cluster as `/healthz` shows it.
#[derive(Debug)]
pub struct Status {
    node: String,
    connected: AtomicBool,
    nodes: Mutex<Vec<(String, Option<String>)>>,
}

impl Status {
    /// Whether this node is connected to NATS now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// `{"node", "connected", "nodes": [names]}` for `/healthz`.
    pub fn health(&self) -> serde_json::Value {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "node": self.node,
            "connected": self.connected(),
            "nodes": nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        })
    }

    /// The page addresses of the live nodes that gave one (`page_url`), this node's first.
    pub fn page_urls(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut urls: Vec<(bool, String)> = nodes
            .iter()
            .filter_map(|(n, url)| Some((n != &self.node, url.clone()?)))
            .collect();
        urls.sort();
        urls.into_iter().map(|(_, u)| u).collect()
    }
}

/// Joins the cluster: from now on `calls` copies its own events out and applies the other
/// nodes'. Never waits for NATS; the tasks run on `tasks` until `cancel`. [`Node::attach`]
/// then joins the push hub.
pub async fn start(
    config: ClusterConfig,
    calls: Arc<Calls>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<Arc<Node>> {
    let status = Arc::new(Status {
        node: config.node.clone(),
        connected: AtomicBool::new(false),
        nodes: Mutex::default(),
    });
    metrics::gauge!(CONNECTED).set(0.0);
    let (tx, rx) = mpsc::channel(config.publish_queue);
    calls.replicate_to(tx);
    let (shares, shared) = mpsc::channel(SHARE_QUEUE);
    let node = Arc::new(Node {
        name: config.node.clone(),
        status: status.clone(),
        claims: Arc::default(),
        hub: Arc::default(),
        shares,
    });
    let hello = Arc::new(Notify::new());
    let client = connect(&config, status.clone(), hello.clone()).await?;
    let subjects = Subjects::new(&config.prefix);
    let subscriber = client
        .subscribe(format!("{}.v1.>", config.prefix))
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to the cluster's subjects: {e}"))?;
    tasks.spawn(publish(
        client.clone(),
        config.node.clone(),
        subjects.clone(),
        rx,
        cancel.clone(),
    ));
    tasks.spawn(publish_shared(
        client.clone(),
        config.node.clone(),
        subjects.sections.clone(),
        shared,
        cancel.clone(),
    ));
    tasks.spawn(receive(
        client.clone(),
        config.node.clone(),
        subjects.clone(),
        subscriber,
        calls.clone(),
        node.hub.clone(),
        cancel.clone(),
    ));
    tasks.spawn(greet(
        client.clone(),
        config.node.clone(),
        subjects,
        calls,
        hello,
        cancel.clone(),
    ));
    tasks.spawn(heartbeat(
        client,
        config,
        status,
        node.claims.clone(),
        cancel,
    ));
    Ok(node)
}

#[derive(Debug, Clone)]
struct Subjects {
    events: String,
    hello: String,
    sections: String,
}

impl Subjects {
    fn new(prefix: &str) -> Subjects {
        Subjects {
            events: format!("{prefix}.v1.events"),
            hello: format!("{prefix}.v1.hello"),
            sections: format!("{prefix}.v1.sections"),
        }
    }
}

/// A profile section (or its end) the owner of a call composed, for the other nodes. Only the
/// answer travels: the title, roles and display hints come from each node's own config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Shared {
    Part {
        call_id: String,
        customer_id: String,
        name: String,
        status: crate::compose::Status,
        data: Option<serde_json::Value>,
        error: Option<String>,
        age_ms: Option<u64>,
        elapsed_us: u64,
    },
    Complete {
        call_id: String,
        customer_id: String,
        sources: Vec<String>,
        missing: Vec<String>,
        elapsed_us: u64,
    },
    /// An agent's note on a call, saved at the sending node.
    Note {
        call_id: String,
        note: Option<String>,
        disposition: Option<String>,
        noted_by: String,
        /// When it was saved, microseconds since the Unix epoch (the newest note wins).
        noted_at_us: u64,
    },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SharedEnvelope {
    node: String,
    sent_us: u64,
    item: Shared,
}

/// This node in the cluster: what the daemon keeps of it.
pub struct Node {
    name: String,
    status: Arc<Status>,
    claims: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>>,
    hub: Arc<std::sync::OnceLock<Arc<crate::push::Hub>>>,
    shares: mpsc::Sender<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The cluster as `/healthz` shows it.
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Joins the push hub: calls' profiles are composed by their owner and shared.
    pub fn attach(self: &Arc<Self>, hub: &Arc<crate::push::Hub>) {
        let _ = self.hub.set(hub.clone());
        hub.set_share(self.clone());
    }

    fn offer(&self, item: Shared) {
        if self.shares.try_send(item).is_err() {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_share_queue_full")
                .increment(1);
        }
    }
}

impl crate::push::Share for Node {
    fn claim(
        &self,
        call_id: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let store = self.claims.get().cloned();
        let (call_id, node) = (call_id.to_owned(), self.name.clone());
        Box::pin(async move {
            let result = match store {
                None => None,
                Some(store) => {
                    let created = tokio::time::timeout(
                        CLAIM_WITHIN,
                        store.create(&call_id, node.clone().into_bytes().into()),
                    )
                    .await;
                    match created {
                        Ok(Ok(_)) => Some(true),
                        // Taken, or an outage: the read tells whose it is.
                        Ok(Err(_)) => {
                            match tokio::time::timeout(CLAIM_WITHIN, store.get(&call_id)).await {
                                Ok(Ok(Some(owner))) => Some(owner.as_ref() == node.as_bytes()),
                                _ => None,
                            }
                        }
                        Err(_) => None,
                    }
                }
            };
            let label = match result {
                Some(true) => "won",
                Some(false) => "lost",
                None => "unavailable",
            };
            metrics::counter!(CLAIMS_TOTAL, "result" => label).increment(1);
            result.unwrap_or(true)
        })
    }

    fn part(&self, call_id: &str, customer_id: &str, part: &crate::compose::Part) {
        self.offer(Shared::Part {
            call_id: call_id.to_owned(),
            customer_id: customer_id.to_owned(),
            name: part.name.to_string(),
            status: part.status,
            data: part.data.as_deref().cloned(),
            error: part.error.clone(),
            age_ms: part.age.map(|a| a.as_millis() as u64),
            elapsed_us: part.elapsed.as_micros() as u64,
        });
    }

    fn page_urls(&self) -> Vec<String> {
        self.status.page_urls()
    }

    fn note(&self, entry: &crate::calls::journal::Entry) {
        let (Some(noted_by), Some(noted_at)) = (&entry.noted_by, entry.noted_at) else {
            return;
        };
        self.offer(Shared::Note {
            call_id: entry.call_id.clone(),
            note: entry.note.clone(),
            disposition: entry.disposition.clone(),
            noted_by: noted_by.clone(),
            noted_at_us: noted_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        });
    }

    fn complete(&self, call_id: &str, customer_id: &str, summary: &crate::compose::Summary) {
        self.offer(Shared::Complete {
            call_id: call_id.to_owned(),
            customer_id: customer_id.to_owned(),
            sources: summary.sources.iter().map(|s| s.to_string()).collect(),
            missing: summary.missing.iter().map(|s| s.to_string()).collect(),
            elapsed_us: summary.elapsed.as_micros() as u64,
        });
    }
}

/// A shared section from another node, to the hub.
fn apply_shared(hub: &crate::push::Hub, item: Shared) {
    match item {
        Shared::Part {
            call_id,
            customer_id,
            name,
            status,
            data,
            error,
            age_ms,
            elapsed_us,
        } => {
            let Some(composer) = hub.composer() else {
                return;
            };
            let Some(part) = composer.part_from(
                &name,
                status,
                data,
                error,
                age_ms.map(Duration::from_millis),
                Duration::from_micros(elapsed_us),
            ) else {
                // A source this node does not have: its config differs; shown nowhere here.
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_unknown_source")
                    .increment(1);
                return;
            };
            hub.remote_part(&call_id, &customer_id, part);
        }
        Shared::Complete {
            call_id,
            customer_id,
            sources,
            missing,
            elapsed_us,
        } => hub.remote_complete(
            &call_id,
            &customer_id,
            crate::compose::Summary {
                sources: sources.into_iter().map(Arc::from).collect(),
                missing: missing.into_iter().map(Arc::from).collect(),
                elapsed: Duration::from_micros(elapsed_us),
            },
        ),
        Shared::Note {
            call_id,
            note,
            disposition,
            noted_by,
            noted_at_us,
        } => hub.remote_note(
            &call_id,
            note,
            disposition,
            noted_by,
            UNIX_EPOCH + Duration::from_micros(noted_at_us),
        ),
    }
}

/// The NATS client: connects in the background (the daemon starts without NATS), reconnects
/// for ever, and keeps `status` and the gauge current; each (re)connection wakes `hello`.
async fn connect(
    config: &ClusterConfig,
    status: Arc<Status>,
    hello: Arc<Notify>,
) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("screenpop {}", config.node))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .event_callback(move |event| {
            let (status, hello) = (status.clone(), hello.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        status.connected.store(true, Ordering::Relaxed);
                        metrics::gauge!(CONNECTED).set(1.0);
                        tracing::info!("Connected to NATS: the cluster is whole.");
                        hello.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        status.connected.store(false, Ordering::Relaxed);
                        metrics::gauge!(CONNECTED).set(0.0);
                        tracing::warn!(
                            "NATS unreachable: popping this node's own agents from its own intakes until it is back."
                        );
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_slow_consumer")
                            .increment(1);
                    }
                    other => tracing::debug!(event = %other, "NATS client event."),
                }
            }
        });
    let (options, urls) = secured(config, options).await?;
    options
        .connect(urls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))
}

/// The configured credentials and TLS on `options`, and the seed URLs.
async fn secured(
    config: &ClusterConfig,
    mut options: async_nats::ConnectOptions,
) -> anyhow::Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>)> {
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(creds) = &config.credentials_file {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| anyhow::anyhow!("cluster credentials_file {}: {e}", creds.display()))?;
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = config
        .nats
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("cluster nats: {e}"))?;
    Ok((options, urls))
}

/// Checks that NATS can be reached with the configured credentials and TLS and that JetStream
/// is on (`check-config --connect`): connect once (no retries), ask for the JetStream account
/// info, close. What it found, in a few words. The caller bounds it in time; the token must be
/// resolved.
pub async fn probe(config: &ClusterConfig) -> anyhow::Result<String> {
    let options = async_nats::ConnectOptions::new()
        .name(format!("screenpop {} check-config", config.node))
        .connection_timeout(Duration::from_secs(2));
    let (options, urls) = secured(config, options).await?;
    let client = options
        .connect(urls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))?;
    let server = client.server_info();
    let account = async_nats::jetstream::new(client.clone())
        .query_account()
        .await
        .map_err(|e| anyhow::anyhow!("JetStream not available: {e}"))?;
    let _ = client.drain().await;
    Ok(format!(
        "nats-server {} at {}, JetStream on ({} streams)",
        server.version, server.host, account.streams
    ))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Publishes this node's events, as many as are waiting in one message (at most [`BATCH`]).
async fn publish(
    client: async_nats::Client,
    node: String,
    subjects: Subjects,
    mut rx: mpsc::Receiver<(CallEvent, u32)>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => return,
            event = rx.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        // While NATS is away the client's own buffer fills and a publish waits: never past
        // shutdown.
        tokio::select! {
            () = cancel.cancelled() => return,
            () = send(&client, &node, &subjects.events, std::mem::take(&mut batch)) => {}
        }
        metrics::counter!(EVENTS_TOTAL, "direction" => "published").increment(count);
    }
}

async fn send(
    client: &async_nats::Client,
    node: &str,
    subject: &str,
    events: Vec<(CallEvent, u32)>,
) {
    let envelope = Envelope {
        node: node.to_owned(),
        sent_us: now_us(),
        events,
    };
    publish_json(client, subject, &envelope).await;
}

/// Encodes and publishes one message; a failure is counted, never waited out.
async fn publish_json(client: &async_nats::Client, subject: &str, message: &impl serde::Serialize) {
    match serde_json::to_vec(message) {
        Ok(bytes) => {
            if let Err(error) = client.publish(subject.to_owned(), bytes.into()).await {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_publish_failed")
                    .increment(1);
                tracing::debug!(%error, "Cluster publish failed.");
            }
        }
        Err(error) => tracing::error!(%error, "Cluster message not encodable."),
    }
}

/// Publishes the sections this node composed as a call's owner, one message each.
async fn publish_shared(
    client: async_nats::Client,
    node: String,
    subject: String,
    mut rx: mpsc::Receiver<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = cancel.cancelled() => return,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let envelope = SharedEnvelope {
            node: node.clone(),
            sent_us: now_us(),
            item,
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = publish_json(&client, &subject, &envelope) => {}
        }
    }
}

/// Applies the other nodes' events; answers a node's `hello` with this node's live calls.
async fn receive(
    client: async_nats::Client,
    node: String,
    subjects: Subjects,
    mut subscriber: async_nats::Subscriber,
    calls: Arc<Calls>,
    hub: Arc<std::sync::OnceLock<Arc<crate::push::Hub>>>,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        if message.subject.as_str() == subjects.sections {
            match serde_json::from_slice::<SharedEnvelope>(&message.payload) {
                Ok(envelope) if envelope.node != node => {
                    if let Some(hub) = hub.get() {
                        apply_shared(hub, envelope.item);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_bad_message")
                        .increment(1);
                    tracing::debug!(%error, "Shared section not understood.");
                }
            }
            continue;
        }
        let envelope: Envelope = match serde_json::from_slice(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_bad_message")
                    .increment(1);
                tracing::debug!(%error, subject = %message.subject, "Cluster message not understood.");
                continue;
            }
        };
        if envelope.node == node {
            continue;
        }
        if message.subject.as_str() == subjects.hello {
            metrics::counter!(RESYNCS_TOTAL).increment(1);
            tracing::info!(peer = %envelope.node, "A node joined or came back: sending it the live calls.");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = resync(&client, &node, &subjects, &calls) => {}
            }
        }
        let lag = now_us().saturating_sub(envelope.sent_us);
        metrics::histogram!(LATENCY_SECONDS).record(lag as f64 / 1e6);
        metrics::counter!(EVENTS_TOTAL, "direction" => "received")
            .increment(envelope.events.len() as u64);
        for (event, generation) in envelope.events {
            calls.apply_remote(event, generation);
        }
    }
}

/// This node's live calls, as the events that rebuild them, in messages of [`BATCH`].
async fn resync(client: &async_nats::Client, node: &str, subjects: &Subjects, calls: &Calls) {
    let events = calls.resync_events();
    for chunk in events.chunks(BATCH) {
        send(client, node, &subjects.events, chunk.to_vec()).await;
    }
}

/// On every (re)connection: `hello` (the others answer with their live calls) carrying this
/// node's live calls, said again after 2, 5 and 10 s: right after NATS servers restart, their
/// routes (and so other nodes' subscriptions) may not be up yet, and a core NATS message with
/// no subscriber is gone. Every copy is idempotent at the receivers.
async fn greet(
    client: async_nats::Client,
    node: String,
    subjects: Subjects,
    calls: Arc<Calls>,
    hello: Arc<Notify>,
    cancel: CancellationToken,
) {
    const AGAIN: [Duration; 4] = [
        Duration::ZERO,
        Duration::from_secs(2),
        Duration::from_secs(3),
        Duration::from_secs(5),
    ];
    let mut waiting = true;
    loop {
        if waiting {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = hello.notified() => {}
            }
        }
        waiting = true;
        for wait in AGAIN {
            tokio::select! {
                () = cancel.cancelled() => return,
                // Reconnected again meanwhile: start over.
                () = hello.notified() => {
                    waiting = false;
                    break;
                }
                () = tokio::time::sleep(wait) => {}
            }
            let greeting = async {
                send(&client, &node, &subjects.hello, Vec::new()).await;
                resync(&client, &node, &subjects, &calls).await;
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = greeting => {}
            }
        }
    }
}

/// Heartbeats into `<prefix>_nodes` (entries expire after three heartbeats) and reads the
/// live nodes back; makes (or finds) the `<prefix>_claims` bucket calls are won in.
async fn heartbeat(
    client: async_nats::Client,
    config: ClusterConfig,
    status: Arc<Status>,
    claims: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>>,
    cancel: CancellationToken,
) {
    let js = async_nats::jetstream::new(client);
    let mut store = None;
    let mut tick = tokio::time::interval(config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let value =
        serde_json::to_vec(&serde_json::json!({ "page_url": config.page_url })).unwrap_or_default();
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Every NATS call can wait while NATS is away: none may hold up shutdown.
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            result = beat(&js, &config, &value, &mut store, &claims) => result,
        };
        match result {
            Ok(nodes) => {
                failing = false;
                metrics::gauge!(NODES).set(nodes.len() as f64);
                *status.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "Cluster heartbeat failed; retrying.");
                    failing = true;
                }
            }
        }
    }
}

/// A bucket of `max_age`, made or found.
async fn bucket(
    js: &async_nats::jetstream::Context,
    config: &ClusterConfig,
    name: String,
    max_age: Duration,
) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    let kv = async_nats::jetstream::kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age,
        num_replicas: config.replicas(),
        ..Default::default()
    };
    match js.create_key_value(kv).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .get_key_value(&name)
            .await
            .map_err(|e| anyhow::anyhow!("bucket {name}: {e}")),
    }
}

/// One heartbeat: the buckets made (once), this node's key written, the live nodes read.
async fn beat(
    js: &async_nats::jetstream::Context,
    config: &ClusterConfig,
    value: &[u8],
    store: &mut Option<async_nats::jetstream::kv::Store>,
    claims: &std::sync::OnceLock<async_nats::jetstream::kv::Store>,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    if store.is_none() {
        let name = format!("{}_nodes", config.prefix);
        *store = Some(bucket(js, config, name, config.heartbeat * 3).await?);
    }
    if claims.get().is_none() {
        let name = format!("{}_claims", config.prefix);
        let _ = claims.set(bucket(js, config, name, CLAIM_KEPT).await?);
    }
    let Some(kv) = store.as_ref() else {
        return Ok(Vec::new());
    };
    kv.put(&config.node, value.to_vec().into()).await?;
    let mut keys = kv.keys().await?;
    let mut nodes = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        let url = kv
            .get(&key)
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
            .and_then(|v| v["page_url"].as_str().map(str::to_owned));
        nodes.push((key, url));
    }
    Ok(nodes)
}
