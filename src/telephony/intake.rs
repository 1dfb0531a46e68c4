//! The intake registry: every PBX client intake (one that connects to the PBX: AMI, ESL, the
//! dialog subscription) is started, compared and stopped the same way, through [`Client`] and
//! one [`Context`]. The listeners (SIP, HEP) are bound by the daemon, and the webhook is
//! mounted on the HTTP listener.
//!
//! A new client intake is one folder (its config section, its `run`, and `impl Client` for its
//! config) plus one line in [`Intakes`] and one in [`Intakes::clients`] (and its `[[name]]`
//! list in the config file's sections).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::CallEvent;

/// Whether an extension belongs to an agent (intakes report only those).
pub type KnownExtension = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What every intake is started with.
#[derive(Clone)]
pub struct Context {
    /// The bounded queue into the call tracker.
    pub events: mpsc::Sender<CallEvent>,
    /// Which extensions are agents'.
    pub known: KnownExtension,
    /// Where intake tasks run (waited for at shutdown).
    pub tasks: TaskTracker,
}

/// A started intake's result: the local address it bound, if any (the dialog socket).
pub type Started<'a> =
    Pin<Box<dyn Future<Output = anyhow::Result<Option<SocketAddr>>> + Send + 'a>>;

/// A configured PBX client intake.
pub trait Client: Send + Sync {
    /// `kind name`, unique among the configured intakes (`ami pbx1`).
    fn key(&self) -> String;
    /// A digest of everything it runs with, secrets included: a reload restarts it only when
    /// this changes.
    fn digest(&self) -> [u8; 32];
    /// Binds what it needs and spawns its task on `ctx.tasks`, to run until `stop`.
    fn start<'a>(&'a self, ctx: &'a Context, stop: CancellationToken) -> Started<'a>;
}

/// Spawns an intake's task on `ctx.tasks`: the start of an intake that binds nothing.
pub fn spawned<'a>(ctx: &Context, task: impl Future<Output = ()> + Send + 'static) -> Started<'a> {
    ctx.tasks.spawn(task);
    Box::pin(std::future::ready(Ok(None)))
}

/// A digest of a config (its `Debug`, which hides secrets) and its secret.
pub fn digest(config: &impl std::fmt::Debug, secret: Option<&str>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(format!("{config:?}").as_bytes());
    hash.update([0]);
    hash.update(secret.unwrap_or_default().as_bytes());
    hash.finalize().into()
}

/// The intakes of a config, secrets resolved: one line per kind.
#[derive(Debug, Clone, Default)]
pub struct Intakes {
    /// Asterisk AMI clients.
    pub ami: Vec<super::ami::AmiConfig>,
    /// FreeSWITCH event-socket clients.
    pub esl: Vec<super::esl::EslConfig>,
    /// Dialog-event subscriptions.
    pub dialog: Vec<super::dialog::DialogConfig>,
    /// The webhook and its PBXs (served by the HTTP listener, not a client).
    pub webhook: super::webhook::WebhookConfig,
}

impl Intakes {
    /// Every configured client intake, in config order: one line per kind.
    pub fn clients(&self) -> Vec<Box<dyn Client>> {
        let mut all: Vec<Box<dyn Client>> = Vec::new();
        all.extend(
            self.ami
                .iter()
                .map(|c| Box::new(c.clone()) as Box<dyn Client>),
        );
        all.extend(
            self.esl
                .iter()
                .map(|c| Box::new(c.clone()) as Box<dyn Client>),
        );
        all.extend(
            self.dialog
                .iter()
                .map(|c| Box::new(c.clone()) as Box<dyn Client>),
        );
        all
    }
}
