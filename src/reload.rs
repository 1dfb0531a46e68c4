//! Hot reload: `SIGHUP` (or `screenpop reload`, which sends it) re-reads the config file and
//! applies it without dropping an agent's socket or a live call.
//!
//! Applied: agents (added ones can sign in; removed ones are signed out, changed ones re-routed),
//! data sources and composition (the next pop uses them), `[page]` (every session gets a fresh
//! `ready`), webhook PBXs and secrets, the SIP and HEP allow-lists, AMI/ESL/dialog peers (added
//! ones connect, removed ones disconnect, changed ones reconnect; unchanged ones are left
//! alone), `[log] level` and `pii`, and the TLS certificates (HTTPS and SIP over TLS, with the
//! SIP client-CA bundle: re-read from the same files; new connections get them). A config that
//! fails to load or to build (file:line:key, an unset `*_env` variable, a source that cannot
//! start, a dialog address that cannot be bound) is refused whole and the running one keeps serving. What
//! cannot change without a restart (listener addresses, the database, push limits…) is named
//! in the log as "restart needed" and otherwise ignored. The command line's `--set` overrides
//! are applied again to the file re-read. Counted in
//! `screenpop_config_reloads_total{result}` (`ok`, `refused`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::config::Config;
use crate::push::Hub;
use crate::push::message::PageSettings;
use crate::telephony::allow::Allow;
use crate::telephony::intake::{Client, Intakes};

/// Reloads, by result.
pub const RELOADS: &str = "screenpop_config_reloads_total";

/// Sets the log filter (`EnvFilter` syntax); installed by the binary.
pub type LogFilter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// It validates but cannot be built (an unset secret variable, a source, a socket).
    #[error("{0:#}")]
    Build(anyhow::Error),
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// What was applied (e.g. `agents`, `sources`, `ami pbx1 added`).
    pub applied: Vec<String>,
    /// Changed sections that need a restart to take effect.
    pub restart_needed: Vec<&'static str>,
}

/// What the intakes need to be started, and what stops them all.
#[derive(Clone)]
pub(crate) struct IntakeContext {
    pub(crate) context: crate::telephony::intake::Context,
    pub(crate) cancel: CancellationToken,
}

/// A running intake: what it was started with (a digest, secrets included) and how to stop it.
struct Running {
    digest: [u8; 32],
    stop: CancellationToken,
}

/// The running daemon's reloadable parts.
pub struct Reloader {
    pub(crate) path: Option<PathBuf>,
    pub(crate) config: Mutex<Option<Config>>,
    pub(crate) agents: Arc<Agents>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) page: Arc<tokio::sync::watch::Sender<Arc<PageSettings>>>,
    pub(crate) webhook: Arc<crate::telephony::webhook::Webhook>,
    pub(crate) sip_allow: Allow,
    pub(crate) hep_allow: Allow,
    /// The listeners' certificates, by listener (`http`, `sip_tls`).
    pub(crate) certificates: Vec<(&'static str, Arc<crate::tls_server::ServerTls>)>,
    pub(crate) log_filter: Option<LogFilter>,
    /// Where a rebuilt composer's history reads from.
    pub(crate) history: Option<Arc<crate::calls::history::Store>>,
    pub(crate) intakes: IntakeContext,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        file: Option<(PathBuf, Config)>,
        agents: Arc<Agents>,
        hub: Arc<Hub>,
        page: Arc<tokio::sync::watch::Sender<Arc<PageSettings>>>,
        webhook: Arc<crate::telephony::webhook::Webhook>,
        (sip_allow, hep_allow): (Allow, Allow),
        certificates: Vec<(&'static str, Arc<crate::tls_server::ServerTls>)>,
        log_filter: Option<LogFilter>,
        history: Option<Arc<crate::calls::history::Store>>,
        intakes: IntakeContext,
    ) -> Reloader {
        let (path, config) = file.unzip();
        Reloader {
            path,
            config: Mutex::new(config),
            agents,
            hub,
            page,
            webhook,
            sip_allow,
            hep_allow,
            certificates,
            log_filter,
            history,
            intakes,
            running: tokio::sync::Mutex::default(),
            busy: tokio::sync::Mutex::default(),
        }
    }

    /// Starts the configured intakes (at start-up); the dialog sockets' addresses, in order.
    pub(crate) async fn start_intakes(
        &self,
        intakes: &Intakes,
    ) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        let mut bound = Vec::new();
        let mut running = self.running.lock().await;
        for client in intakes.clients() {
            if let Some(addr) = self.spawn(client, &mut running).await? {
                bound.push(addr);
            }
        }
        Ok(bound)
    }

    async fn spawn(
        &self,
        client: &dyn Client,
        running: &mut HashMap<String, Running>,
    ) -> anyhow::Result<Option<std::net::SocketAddr>> {
        let stop = self.intakes.cancel.child_token();
        let bound = client.start(&self.intakes.context, stop.clone()).await?;
        running.insert(
            client.key(),
            Running {
                digest: client.digest(),
                stop,
            },
        );
        Ok(bound)
    }

    /// Re-reads the config file and applies it (see the module docs); the TLS certificates are
    /// re-read too. Without a config file (the demo), only the certificates.
    pub async fn reload(&self) -> Result<Report, ReloadError> {
        let _one = self.busy.lock().await;
        let mut report = Report::default();
        for (listener, tls) in &self.certificates {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(listener, "TLS certificate reloaded.");
                    report.applied.push(format!("{listener} tls certificate"));
                }
                Err(error) => {
                    tracing::error!(listener, %error, "TLS reload failed; keeping the previous certificate.")
                }
            }
        }
        let Some(path) = &self.path else {
            return Ok(report);
        };
        let result = self.apply(path, &mut report).await;
        match &result {
            Ok(()) => {
                metrics::counter!(RELOADS, "result" => "ok").increment(1);
                tracing::info!(
                    applied = %report.applied.join(", "),
                    restart_needed = %report.restart_needed.join(", "),
                    "Config reloaded."
                );
                if !report.restart_needed.is_empty() {
                    tracing::warn!(
                        sections = %report.restart_needed.join(", "),
                        "Config changes that need a restart were not applied."
                    );
                }
            }
            Err(error) => {
                metrics::counter!(RELOADS, "result" => "refused").increment(1);
                tracing::error!("Config reload refused; the running config keeps serving: {error}");
            }
        }
        result.map(|()| report)
    }

    async fn apply(&self, path: &std::path::Path, report: &mut Report) -> Result<(), ReloadError> {
        // The command line's `--set` overrides hold for the daemon's life: applied again.
        let overrides = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.overrides.clone())
            .unwrap_or_default();
        let config = Config::load_with(path, &overrides)?;
        // What changed, against the config in force.
        let (changed, restart) = {
            let old = self.config.lock().unwrap_or_else(|p| p.into_inner());
            let differs =
                |f: &dyn Fn(&Config) -> String| old.as_ref().is_none_or(|o| f(o) != f(&config));
            (
                Changed {
                    sources: differs(&|c| {
                        format!(
                            "{:?}{:?}{:?}{:?}",
                            c.compose, c.sources, c.history, c.calls.call_back_url
                        )
                    }),
                    log_level: differs(&|c| format!("{:?}", c.log.level)),
                    agents: differs(&|c| format!("{:?}", crate::config::config_agents(c))),
                    webhook: differs(&|c| format!("{:?}", c.webhook)),
                    sip_allow: differs(&|c| format!("{:?}", c.sip.allow)),
                    hep_allow: differs(&|c| format!("{:?}", c.hep.allow)),
                },
                restart_needed(old.as_ref(), &config),
            )
        };
        // Everything that can fail, before anything is applied.
        let intakes = crate::config::intakes_from(&config).map_err(ReloadError::Build)?;
        let composer = if changed.sources {
            Some(
                crate::config::composer_from(&config, self.history.as_ref())
                    .map_err(ReloadError::Build)?,
            )
        } else {
            None
        };
        let planned = intakes.clients();
        let mut running = self.running.lock().await;
        // New and changed dialog sockets are bound first: a busy address refuses the reload.
        let mut keep: Vec<String> = Vec::new();
        let mut start: Vec<&dyn Client> = Vec::new();
        for p in &planned {
            let key = p.key();
            match running.get(&key) {
                Some(r) if r.digest == p.digest() => keep.push(key),
                _ => start.push(*p),
            }
        }
        // Apply.
        crate::pii::set_logging(config.log.pii);
        if let (Some(set), Some(level)) = (&self.log_filter, &config.log.level)
            && std::env::var_os("SCREENPOP_LOG").is_none()
            && changed.log_level
        {
            match set(level) {
                Ok(()) => report.applied.push(format!("log level {level}")),
                Err(error) => tracing::warn!(%error, "Log level not changed."),
            }
        }
        if changed.agents {
            self.agents
                .replace_fixed(crate::config::config_agents(&config));
            report.applied.push("agents".into());
        }
        let page = crate::config::page_settings(&config);
        if self.page.send_if_modified(|now| {
            let changed = **now != page;
            if changed {
                *now = Arc::new(page.clone());
            }
            changed
        }) {
            report.applied.push("page".into());
        }
        if let Some(composer) = composer {
            if let Some(c) = &composer {
                let (c, cancel) = (c.clone(), self.intakes.cancel.child_token());
                self.intakes.context.tasks.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = c.warm() => {}
                    }
                });
            }
            self.hub.set_composer(composer);
            self.hub.set_glance(self.history.as_ref().and_then(|store| {
                crate::calls::history::Glance::new(store.clone(), &config.history)
            }));
            report.applied.push("sources".into());
        }
        // Always: a secret from the environment may have changed with the config unchanged.
        self.webhook
            .set_pbxs(crate::config::webhook_pbxs(&intakes.webhook));
        if changed.webhook {
            report.applied.push("webhook".into());
        }
        if changed.sip_allow {
            self.sip_allow.replace(config.sip.allow.iter().copied());
            report.applied.push("sip allow".into());
        }
        if changed.hep_allow {
            self.hep_allow.replace(config.hep.allow.iter().copied());
            report.applied.push("hep allow".into());
        }
        let stale: Vec<String> = running
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(r) = running.remove(&key) {
                r.stop.cancel();
                if !planned.iter().any(|p| p.key() == key) {
                    report.applied.push(format!("{key} removed"));
                }
            }
        }
        for p in start {
            let key = p.key();
            match self.spawn(p, &mut running).await {
                Ok(_) => report.applied.push(format!("{key} started")),
                Err(error) => {
                    tracing::error!("{key} not started: {error:#}");
                }
            }
        }
        report.restart_needed = restart;
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        Ok(())
    }
}

/// What a new config changes, section by section.
struct Changed {
    sources: bool,
    log_level: bool,
    agents: bool,
    webhook: bool,
    sip_allow: bool,
    hep_allow: bool,
}

/// The changed sections a reload cannot apply.
fn restart_needed(old: Option<&Config>, new: &Config) -> Vec<&'static str> {
    let Some(old) = old else {
        return Vec::new();
    };
    type Section = (&'static str, fn(&Config) -> String);
    let sections: [Section; 11] = [
        ("[sip] listeners and timers", |c| {
            format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
                c.sip.udp,
                c.sip.tcp,
                c.sip.tls,
                // The files' contents are reloaded; other files need a restart.
                c.sip.tls_identity(),
                c.sip.tls_handshake_timeout,
                c.sip.ring_timeout,
                c.sip.max_transactions,
                c.sip.max_tcp_connections,
                c.sip.tcp_idle_timeout
            )
        }),
        ("[hep] listeners and password", |c| {
            format!(
                "{:?}{:?}{:?}",
                c.hep.udp,
                c.hep.tcp,
                c.hep.password.is_some()
            )
        }),
        ("[http]", |c| format!("{:?}", c.http)),
        ("[push]", |c| format!("{:?}", c.push)),
        ("[calls]", |c| format!("{:?}", c.calls)),
        ("[callbacks]", |c| format!("{:?}", c.callbacks)),
        ("[directory]", |c| format!("{:?}", c.directory)),
        ("[call_log]", |c| format!("{:?}", c.call_log)),
        ("[numbers]", |c| format!("{:?}", c.numbers)),
        ("[page] journal", |c| format!("{:?}", c.page.journal)),
        ("[log] format", |c| format!("{:?}", c.log.format)),
    ];
    sections
        .into_iter()
        .filter(|(_, f)| f(old) != f(new))
        .map(|(name, _)| name)
        .collect()
}
