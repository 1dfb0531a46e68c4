//! Starting and stopping the whole daemon: bind every listener, spawn every task on one
//! tracker under one cancellation token, and shut down within a grace period.
//!
//! Listeners are bound here, before any task starts, so that the caller learns the real
//! addresses (port 0 allowed) and a bind error stops start-up with the address in the message.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agents;
use crate::calls::{Calls, TrackerConfig};
use crate::resolve::Resolver;
use crate::telephony::allow::Allow;
use crate::telephony::hep::{self, HepObserver};
use crate::telephony::sip::{self, Endpoint, EndpointConfig};

/// Capacity of the queue from the intakes to the call tracker.
pub const CALL_EVENT_QUEUE: usize = 16_384;
/// How long shutdown waits for tasks to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the daemon needs, resolved from a config file or from the demo bundle.
pub struct Settings {
    /// SIP UDP addresses.
    pub sip_udp: Vec<SocketAddr>,
    /// SIP TCP addresses.
    pub sip_tcp: Vec<SocketAddr>,
    /// SIP-over-TLS addresses.
    pub sip_tls: Vec<SocketAddr>,
    /// The SIP-over-TLS certificate (and client CA); required when `sip_tls` is not empty.
    pub sip_tls_identity: Option<crate::tls_server::Identity>,
    /// How long a SIP TLS client may take to finish its handshake.
    pub sip_tls_handshake_timeout: Duration,
    /// SIP source allow-list.
    pub sip_allow: Allow,
    /// HEP UDP addresses.
    pub hep_udp: Vec<SocketAddr>,
    /// HEP TCP addresses.
    pub hep_tcp: Vec<SocketAddr>,
    /// HEP source allow-list.
    pub hep_allow: Allow,
    /// HEP capture password.
    pub hep_password: Option<String>,
    /// HTTP address.
    pub http: SocketAddr,
    /// SIP ring timeout (also the tracker's for ringing calls).
    pub ring_timeout: Duration,
    /// INVITE transaction cap.
    pub max_transactions: usize,
    /// Connection budget of each SIP TCP listener, and of each SIP TLS listener.
    pub sip_tcp_budget: crate::listener::Budget,
    /// Connection budget of each HEP TCP listener.
    pub hep_tcp_budget: crate::listener::Budget,
    /// The HTTP listener's connection caps and timeouts.
    pub http_limits: crate::web::serve::HttpLimits,
    /// Call tracker settings.
    pub tracker: TrackerConfig,
    /// The customer directory.
    pub resolver: Arc<dyn Resolver>,
    /// The agents.
    pub agents: Arc<Agents>,
    /// WebSocket push settings.
    pub push: PushConfig,
    /// PEM certificate chain and key for HTTPS/WSS, if any.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The PostgreSQL-backed index to keep in sync (LISTEN/NOTIFY), when the directory is there.
    pub directory_sync: Option<Arc<crate::resolve::postgres::PgDirectory>>,
    /// Profile composition from the configured data sources (and the history), if any.
    pub composer: Option<Arc<crate::compose::Composer>>,
    /// Where the `history` section reads from, when it is on; the daemon attaches its journal.
    pub history: Option<Arc<crate::calls::history::Store>>,
    /// The candidates' last contacts, from the same store, when the history is on.
    pub glance: Option<crate::calls::history::Glance>,
    /// The callbacks (missed calls), kept in the call log's database when there is one.
    pub callbacks: Arc<crate::callbacks::Callbacks>,
    /// The call log in PostgreSQL, if any.
    pub call_log: Option<crate::calls::log::CallLogSettings>,
    /// Remembered candidate picks `(agent, caller key, customer)`, most recent first.
    pub picks: Vec<(String, String, String)>,
    /// The agents table's sync: its database URL and the LISTEN connection opened at load.
    pub agents_sync: Option<(String, crate::db::listen::Listening)>,
    /// The intakes to run (secrets resolved): AMI, ESL and dialog clients, and the PBX
    /// webhook (off without PBXs).
    pub intakes: crate::telephony::intake::Intakes,
    /// Most calls kept in the in-memory call journal (the page's recent calls and notes).
    pub journal: usize,
    /// The cluster to join (`[cluster]`, token resolved); none: a single node, no NATS.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The config file and what it held at start: re-read on SIGHUP and compared with it
    /// ([`crate::reload`]); none for the demo.
    pub config_file: Option<(std::path::PathBuf, crate::config::Config)>,
    /// Sets the log filter on a reload (installed by the binary).
    pub log_filter: Option<crate::reload::LogFilter>,
}

/// WebSocket push settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Session timings and queue size.
    pub session: crate::push::SessionConfig,
    /// Extra browser origins allowed to open `/ws`.
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections at once.
    pub max_connections: usize,
    /// Largest client message, bytes.
    pub max_message_bytes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        let push = crate::push::section::Push::default();
        PushConfig {
            session: crate::push::SessionConfig::default(),
            allowed_origins: Vec::new(),
            max_connections: push.max_connections,
            max_message_bytes: push.max_message_bytes,
        }
    }
}

/// Addresses actually bound.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// SIP over UDP.
    pub sip_udp: Vec<SocketAddr>,
    /// SIP over TCP.
    pub sip_tcp: Vec<SocketAddr>,
    /// SIP over TLS.
    pub sip_tls: Vec<SocketAddr>,
    /// HEP over UDP.
    pub hep_udp: Vec<SocketAddr>,
    /// HEP over TCP.
    pub hep_tcp: Vec<SocketAddr>,
    /// HTTP.
    pub http: Option<SocketAddr>,
    /// The dialog-subscription sockets, one per `[[dialog]]`, in config order.
    pub dialog: Vec<SocketAddr>,
}

/// A running daemon.
pub struct Daemon {
    /// Where it listens.
    pub bound: Bound,
    /// The call table (for tests and embedding).
    pub calls: Arc<Calls>,
    /// The call log writer, when there is a database (for tests and embedding).
    pub call_log: Option<Arc<crate::calls::log::CallLog>>,
    /// The in-memory call journal (for tests and embedding).
    pub journal: Arc<crate::calls::journal::Journal>,
    /// The SIP endpoint (for tests and embedding).
    pub endpoint: Arc<Endpoint>,
    /// The TLS certificate in use, when HTTPS is on (reloaded with the config).
    pub tls: Option<Arc<crate::tls_server::ServerTls>>,
    /// The SIP-over-TLS certificate in use, when there are SIP TLS listeners.
    pub sip_tls: Option<Arc<crate::tls_server::ServerTls>>,
    /// Applies a changed config file (what SIGHUP does).
    pub reloader: Arc<crate::reload::Reloader>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The process-wide metrics registry (installed once; every daemon in a process shares it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program): keep ours local.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl Daemon {
    /// Binds every listener and starts every task.
    pub async fn start(mut settings: Settings) -> anyhow::Result<Daemon> {
        let metrics = metrics_handle();
        crate::listener::report_open_files_limit();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (events_tx, events_rx) = mpsc::channel(CALL_EVENT_QUEUE);
        let calls = Calls::new(settings.tracker.clone(), settings.resolver.clone());
        // Before any intake starts: every event of this node's intakes is copied out.
        let cluster = match settings.cluster.take() {
            Some(config) => Some(
                crate::cluster::start(config, calls.clone(), &tasks, cancel.child_token()).await?,
            ),
            None => None,
        };
        let agents = settings.agents.clone();
        let known: Arc<dyn Fn(&str) -> bool + Send + Sync> = {
            let agents = agents.clone();
            Arc::new(move |ext: &str| agents.has_extension(ext))
        };
        let endpoint = Endpoint::new(
            EndpointConfig {
                ring_timeout: settings.ring_timeout,
                max_transactions: settings.max_transactions,
                known_extension: known.clone(),
            },
            // The SIP and HEP listeners apply their events on their own threads: no hand-over
            // to another task between the packet and the pop.
            calls.clone(),
        );
        let observer = Arc::new(HepObserver::new(
            hep::observe::ObserverConfig {
                password: settings.hep_password.clone(),
                known_extension: known.clone(),
            },
            calls.clone(),
        ));
        let mut bound = Bound::default();

        let (udp, tcp) = bind_listeners(&settings.sip_udp, &settings.sip_tcp, "SIP").await?;
        for socket in udp {
            let socket = Arc::new(socket);
            bound.sip_udp.push(socket.local_addr()?);
            tasks.spawn(sip::udp::serve(
                socket,
                endpoint.clone(),
                settings.sip_allow.clone(),
                cancel.child_token(),
            ));
        }
        for listener in tcp {
            bound.sip_tcp.push(listener.local_addr()?);
            tasks.spawn(sip::tcp::serve(
                listener,
                endpoint.clone(),
                settings.sip_allow.clone(),
                settings.sip_tcp_budget,
                cancel.child_token(),
            ));
        }
        let sip_tls = match (&settings.sip_tls_identity, settings.sip_tls.is_empty()) {
            (_, true) => None,
            (Some(identity), false) => Some(
                crate::tls_server::ServerTls::new(identity.clone(), &[])
                    .context("loading the SIP TLS certificate")?,
            ),
            (None, false) => anyhow::bail!(
                "SIP over TLS needs a certificate and key (sip.tls_cert, sip.tls_key)"
            ),
        };
        if let Some(tls) = &sip_tls {
            for addr in &settings.sip_tls {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP TLS {addr}"))?;
                bound.sip_tls.push(listener.local_addr()?);
                tasks.spawn(sip::tcp::serve_tls(
                    listener,
                    endpoint.clone(),
                    settings.sip_allow.clone(),
                    settings.sip_tcp_budget,
                    sip::tcp::TlsSettings {
                        tls: tls.clone(),
                        handshake_timeout: settings.sip_tls_handshake_timeout,
                    },
                    cancel.child_token(),
                ));
            }
        }
        let (udp, tcp) = bind_listeners(&settings.hep_udp, &settings.hep_tcp, "HEP").await?;
        for socket in udp {
            bound.hep_udp.push(socket.local_addr()?);
            tasks.spawn(hep::listen::serve_udp(
                socket,
                observer.clone(),
                settings.hep_allow.clone(),
                cancel.child_token(),
            ));
        }
        for listener in tcp {
            bound.hep_tcp.push(listener.local_addr()?);
            tasks.spawn(hep::listen::serve_tcp(
                listener,
                observer.clone(),
                settings.hep_allow.clone(),
                settings.hep_tcp_budget,
                cancel.child_token(),
            ));
        }
        let http = crate::listener::bind_tcp(settings.http)
            .with_context(|| format!("binding HTTP {}", settings.http))?;
        bound.http = Some(http.local_addr()?);
        let call_log = match settings.call_log.clone() {
            Some(s) => Some(
                crate::calls::log::CallLog::open(s, settings.agents.clone())
                    .context("opening the call-log spool")?,
            ),
            None => None,
        };
        // The call log stops after the tracker has ended the calls still live (outcome
        // `shutdown`), so that their last rows are in its final flush.
        let log_stop = CancellationToken::new();
        if let Some(log) = &call_log {
            calls.observe(log.clone());
            tasks.spawn(log.clone().write(log_stop.clone()));
        }
        let journal =
            crate::calls::journal::Journal::new(settings.journal, settings.agents.clone());
        calls.observe(journal.clone());
        if let Some(history) = &settings.history {
            history.attach(journal.clone());
        }
        let callbacks = settings.callbacks.clone();
        calls.observe(callbacks.clone());
        tasks.spawn(callbacks.clone().write(cancel.child_token()));
        {
            let (callbacks, cancel) = (callbacks.clone(), cancel.child_token());
            tasks.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    loaded = callbacks.load() => if let Err(error) = loaded {
                        tracing::warn!(%error, "Open callbacks not loaded.");
                    },
                }
            });
        }
        if let Some(log) = &settings.call_log {
            // Recent calls from before this start, for the page's journal; in the background
            // (a slow database never delays start-up) and best effort.
            let (journal, url) = (journal.clone(), log.database_url.clone());
            let limit = i64::try_from(settings.journal).unwrap_or(i64::MAX);
            let cancel = cancel.child_token();
            tasks.spawn(async move {
                let loaded = async {
                    let client = crate::db::connect(&url).await?;
                    crate::calls::log::load_journal(&client, limit).await
                };
                tokio::select! {
                    () = cancel.cancelled() => {}
                    loaded = tokio::time::timeout(Duration::from_secs(10), loaded) => match loaded {
                        Ok(Ok(entries)) => journal.preload(entries),
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "Recent calls not loaded into the journal.")
                        }
                        Err(_) => {
                            tracing::warn!("Recent calls not loaded into the journal: timed out.")
                        }
                    },
                }
            });
        }
        if let Some(composer) = settings.composer.clone() {
            let cancel = cancel.child_token();
            tasks.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = composer.warm() => {}
                }
            });
        }
        let hub = crate::push::Hub::new(
            calls.clone(),
            call_log.clone(),
            Some(journal.clone()),
            settings.composer.clone(),
            cancel.child_token(),
        );
        hub.load_picks(std::mem::take(&mut settings.picks));
        hub.set_glance(settings.glance.take());
        hub.set_callbacks(callbacks.clone());
        calls.observe(hub.observer());
        if let Some(node) = &cluster {
            node.attach(&hub);
        }
        let push = Arc::new(crate::web::PushSettings {
            session: settings.push.session.clone(),
            allowed_origins: settings.push.allowed_origins.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.push.max_connections)),
            max_message_bytes: settings.push.max_message_bytes,
        });
        let throttle = crate::throttle::AuthThrottle::default();
        // The AMI/ESL clients register here while connected; call-backs are placed through it.
        let dialers = crate::calls::dial::Dialers::new();
        let mut app = crate::web::router(crate::web::AppState {
            calls: calls.clone(),
            agents,
            metrics,
            hub: hub.clone(),
            push,
            journal: journal.clone(),
            call_log: call_log.clone(),
            shutdown: cancel.child_token(),
            throttle: throttle.clone(),
            cluster: cluster.as_ref().map(|n| n.status()),
            callbacks: callbacks.clone(),
            dialers: dialers.clone(),
        });
        // Always mounted: PBXs added by a reload are served; without any, every request is
        // refused as unsigned.
        let webhook = crate::telephony::webhook::Webhook::new(
            crate::config::webhook_pbxs(&settings.intakes.webhook),
            settings.intakes.webhook.max_skew,
            settings.intakes.webhook.replay_capacity,
            known.clone(),
            events_tx.clone(),
            throttle.clone(),
        );
        app = app.merge(crate::telephony::webhook::router(webhook.clone()));
        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::tls_server::ServerTls::load(
                cert.clone(),
                key.clone(),
                &[b"http/1.1"],
            )?),
            None => None,
        };
        let certificates = tls
            .iter()
            .map(|t| ("http", t.clone()))
            .chain(sip_tls.iter().map(|t| (sip::tcp::TLS_LISTENER, t.clone())))
            .collect();
        let reloader = Arc::new(crate::reload::Reloader::new(
            settings.config_file.take(),
            settings.agents.clone(),
            hub.clone(),
            settings.push.session.page.clone(),
            webhook,
            (settings.sip_allow.clone(), settings.hep_allow.clone()),
            certificates,
            settings.log_filter.clone(),
            settings.history.clone(),
            crate::reload::IntakeContext {
                context: crate::telephony::intake::Context {
                    events: events_tx.clone(),
                    known: known.clone(),
                    tasks: tasks.clone(),
                    dialers,
                },
                cancel: cancel.clone(),
            },
        ));
        bound.dialog = reloader.start_intakes(&settings.intakes).await?;
        drop(events_tx);
        tasks.spawn(crate::web::serve::serve(
            http,
            app,
            tls.clone(),
            settings.http_limits,
            cancel.child_token(),
        ));
        #[cfg(unix)]
        {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?;
            tasks.spawn(reload_on_sighup(
                reloader.clone(),
                hup,
                cancel.child_token(),
            ));
        }
        if let Some(directory) = &settings.directory_sync {
            tasks.spawn(directory.clone().run(cancel.child_token()));
        }
        if let Some((url, listening)) = settings.agents_sync.take() {
            tasks.spawn(crate::agents::sync::run(
                url,
                settings.agents.clone(),
                listening,
                cancel.child_token(),
            ));
        }
        tasks.spawn(endpoint.clone().run_timers(cancel.child_token()));
        tasks.spawn({
            let (calls, stop) = (calls.clone(), cancel.child_token());
            async move {
                calls.clone().run(events_rx, stop).await;
                calls.end_all(crate::calls::EndReason::Shutdown);
                log_stop.cancel();
            }
        });
        tasks.close();
        Ok(Daemon {
            bound,
            calls,
            call_log,
            journal,
            endpoint,
            tls,
            sip_tls,
            reloader,
            cancel,
            tasks,
        })
    }

    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits for every task to stop, at most [`SHUTDOWN_GRACE`] after a shutdown was asked.
    pub async fn wait(self) -> bool {
        self.cancel.cancelled().await;
        tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Stops and waits.
    pub async fn stop(self) -> bool {
        self.shutdown();
        self.wait().await
    }
}

/// Binds the UDP and TCP listeners of one protocol. An address with port 0 that is in both
/// lists gets one free port for both (tried up to 32 times), so that one `IP:PORT` names the
/// listener whatever the transport (a PBX trunk, `screenpop call --tcp`).
async fn bind_listeners(
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    what: &str,
) -> anyhow::Result<(Vec<UdpSocket>, Vec<TcpListener>)> {
    let mut sockets = Vec::new();
    let mut listeners = Vec::new();
    let mut paired = Vec::new();
    for addr in udp {
        if addr.port() == 0 && tcp.contains(addr) && !paired.contains(addr) {
            let mut pair = None;
            for _ in 0..32 {
                let socket = UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding {what} UDP {addr}"))?;
                let port = socket.local_addr()?.port();
                if let Ok(listener) = TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                    pair = Some((socket, listener));
                    break;
                }
            }
            if let Some((socket, listener)) = pair {
                sockets.push(socket);
                listeners.push(listener);
                paired.push(*addr);
                continue;
            }
            tracing::warn!(%addr, "No free port for both {what} UDP and TCP; they get different ports.");
        }
        sockets.push(
            UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding {what} UDP {addr}"))?,
        );
    }
    for addr in tcp {
        if let Some(i) = paired.iter().position(|p| p == addr) {
            paired.remove(i);
            continue;
        }
        listeners.push(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {what} TCP {addr}"))?,
        );
    }
    for socket in &sockets {
        receive_buffer(socket, what);
    }
    Ok((sockets, listeners))
}

/// Receive buffer asked for on SIP and HEP UDP sockets: room for a burst of about 4,000
/// INVITEs while both cores are busy (Linux's default, 208 KiB, holds about 200). The kernel
/// caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

fn receive_buffer(socket: &UdpSocket, what: &str) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    // Linux reports twice the size set (the kernel's bookkeeping share).
    let got = sock.recv_buffer_size().unwrap_or(0) / 2;
    if got < UDP_RECEIVE_BUFFER / 2 {
        tracing::info!(
            what,
            bytes = got,
            "UDP receive buffer limited by net.core.rmem_max; raise it for bursts."
        );
    }
}

/// Reloads the config (and the TLS certificate) on every SIGHUP until cancelled. The signal
/// handler is installed by the caller, before the daemon reports itself started, so an early
/// SIGHUP is never fatal.
#[cfg(unix)]
async fn reload_on_sighup(
    reloader: Arc<crate::reload::Reloader>,
    mut hup: tokio::signal::unix::Signal,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = hup.recv() => {
                // The outcome is logged and counted by the reloader.
                let _ = reloader.reload().await;
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Resolves a validated config into settings: loads the directory, hashes nothing (the config
/// holds hashes), switches PII logging.
pub async fn settings_from(config: &crate::config::Config) -> anyhow::Result<Settings> {
    crate::pii::set_logging(config.log.pii);
    let mut settings = settings_base(config)?;
    let (resolver, directory_sync) =
        crate::resolve::open(&config.numbers, &config.directory).await?;
    settings.resolver = resolver;
    settings.directory_sync = directory_sync;
    // With the customer index in PostgreSQL, agents come from its agents table too.
    if let Some(url) = &config.directory.database_url {
        settings.agents_sync = Some((
            url.clone(),
            crate::agents::sync::start(url, &settings.agents).await?,
        ));
    }
    if let Some(log) = &settings.call_log {
        let client = crate::db::connect(&log.database_url).await?;
        settings.picks = crate::calls::log::load_picks(&client, 100_000).await?;
    }
    Ok(settings)
}

/// Settings from the config's sections alone, without I/O: an empty directory, no agents
/// table, no picks ([`settings_from`] adds those). The demo starts from here too.
pub fn settings_base(config: &crate::config::Config) -> anyhow::Result<Settings> {
    let agents = Agents::new(crate::config::config_agents(config));
    let call_log = config
        .call_log
        .database_url
        .as_ref()
        .or(config.directory.database_url.as_ref())
        .map(|url| crate::calls::log::CallLogSettings {
            database_url: url.clone(),
            buffer: config.call_log.buffer,
            batch: config.call_log.batch,
            flush_interval: config.call_log.flush_interval,
            spool_dir: config.call_log.spool_dir(&config.base),
            spool_max_bytes: config.call_log.spool_max_bytes as u64,
        });
    let intakes = crate::config::intakes_from(config)?;
    let history = crate::config::history_store(config)?;
    let callbacks = crate::callbacks::Callbacks::new(
        config.callbacks.clone(),
        &config.calls.call_back_url,
        match call_log.as_ref() {
            Some(log) => Some(
                crate::callbacks::Database::new(&log.database_url).map_err(anyhow::Error::msg)?,
            ),
            None => None,
        },
    );
    let composer = crate::config::composer_from(config, Some(&history))?;
    Ok(Settings {
        intakes,
        composer,
        glance: crate::calls::history::Glance::new(history.clone(), &config.history),
        history: Some(history),
        callbacks,
        call_log,
        picks: Vec::new(),
        sip_udp: config.sip.udp.clone(),
        sip_tcp: config.sip.tcp.clone(),
        sip_tls: config.sip.tls.clone(),
        sip_tls_identity: config.sip.tls_identity(),
        sip_tls_handshake_timeout: config.sip.tls_handshake_timeout,
        sip_allow: Allow::new(config.sip.allow.iter().copied()),
        hep_udp: config.hep.udp.clone(),
        hep_tcp: config.hep.tcp.clone(),
        hep_allow: Allow::new(config.hep.allow.iter().copied()),
        hep_password: config.hep.password.clone(),
        http: config.http.listen,
        ring_timeout: config.sip.ring_timeout,
        max_transactions: config.sip.max_transactions,
        sip_tcp_budget: crate::listener::Budget {
            max_connections: config.sip.max_tcp_connections,
            max_per_source: config.sip.max_tcp_connections_per_source,
            idle_timeout: Some(config.sip.tcp_idle_timeout_in_force()),
        },
        hep_tcp_budget: crate::listener::Budget {
            max_connections: config.hep.max_tcp_connections,
            max_per_source: config.hep.max_tcp_connections_per_source,
            idle_timeout: Some(config.hep.tcp_idle_timeout),
        },
        http_limits: config.http.limits(),
        tracker: TrackerConfig {
            max_calls: config.calls.max_calls,
            ring_timeout: config.sip.ring_timeout + Duration::from_secs(5),
            answered_ttl: config.calls.answered_ttl,
            max_call_duration: config.calls.max_call_duration,
        },
        resolver: Arc::new(crate::resolve::Index::new(crate::resolve::Directory::new(
            crate::resolve::Normaliser::new(config.numbers.default_region.0),
            config.numbers.switchboard_digits,
        ))),
        agents: Arc::new(agents),
        push: PushConfig {
            session: crate::push::SessionConfig::from_section(
                &config.push,
                Arc::new(crate::config::page_settings(config)),
            ),
            allowed_origins: config
                .http
                .allowed_origins
                .iter()
                .chain(&config.push.allowed_origins)
                .map(|o| o.as_str().to_owned())
                .collect(),
            max_connections: config.push.max_connections,
            max_message_bytes: config.push.max_message_bytes,
        },
        tls: config
            .http
            .tls_cert
            .clone()
            .zip(config.http.tls_key.clone()),
        directory_sync: None,
        agents_sync: None,
        journal: config.page.journal,
        cluster: match &config.cluster {
            Some(c) => {
                let mut c = c.get_ref().clone();
                c.resolve(&config.base)?;
                Some(c)
            }
            None => None,
        },
        config_file: None,
        log_filter: None,
    })
}
