//! The intake registry: every PBX client intake (one that connects to the PBX: AMI, ESL, the
//! dialog subscription) is started, compared and stopped the same way, through [`Client`] and
//! one [`Context`]. The listeners (SIP, HEP) are bound by the daemon, and the webhook is
//! mounted on the HTTP listener.
//!
//! A new client intake is one folder (its config section with `impl Client` and
//! `impl Section`, its `run`, its `Intake` label) plus one line in the registry in
//! `telephony/mod.rs`: that line declares the folder's module, the config file then accepts
//! its `[[table]]` list, checks and resolves it, and the daemon and hot reload start, compare
//! and stop it like the others (`docs/architecture.md` shows the diff).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
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
    /// Where the clients that can place calls (AMI, ESL) register while connected.
    pub dialers: Arc<crate::calls::dial::Dialers>,
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

/// A value a [`Section`] refuses: the field (`extensions[1]`) and why.
pub type Invalid = (String, String);

/// A client intake's config section (`[[ami]]`, …): what the config checks and resolves.
pub trait Section: Client {
    /// Its unique name (`pbx1`): the call-key prefix and the `peer` metrics label.
    fn name(&self) -> &str;
    /// Checks what serde cannot (addresses, secrets, cross-field rules): the offending field
    /// and why.
    fn check(&self) -> Result<(), Invalid>;
    /// Reads its secret from the environment (`*_env`) and makes relative files relative to
    /// `base` (the config file's folder).
    fn resolve(&mut self, base: &Path) -> anyhow::Result<()>;
    /// The environment variable its secret is read from, with the key that names it
    /// (`("secret_env", "SCREENPOP_AMI_SECRET")`): what `Config::load` checks is set.
    fn secret_env(&self) -> Option<(&'static str, &str)>;
    /// One line for the start-up banner (`AMI  pbx1 → 10.0.0.5:5038`).
    fn describe(&self) -> String;
}

/// The registry of client intakes, invoked once in `telephony/mod.rs` with one line per kind,
/// `folder: its section type` (the folder's name is its config table). It declares the
/// folder's module, the config file's `[[table]]` lists ([`Sections`]), the resolved intakes
/// the daemon runs ([`Intakes`]) and how both are walked.
macro_rules! registry {
    ($($(#[$doc:meta])* $table:ident: $section:ident,)*) => {
        $( $(#[$doc])* pub mod $table; )*
        /// The client intakes as written in the config file, each with its place in the file.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        pub struct Sections {
            $(
                #[doc = concat!("`[[", stringify!($table), "]]`")]
                #[serde(default)]
                pub $table: Vec<toml::Spanned<$table::$section>>,
            )*
        }

        impl Sections {
            /// The config tables of the client intakes.
            pub const TABLES: &[&str] = &[$(stringify!($table)),*];

            /// Every section in file order per kind: table, index, span, section.
            pub fn each(&self) -> Vec<(&'static str, usize, std::ops::Range<usize>, &dyn $crate::telephony::intake::Section)> {
                let mut all: Vec<(&'static str, usize, std::ops::Range<usize>, &dyn $crate::telephony::intake::Section)> =
                    Vec::new();
                $(
                    for (i, s) in self.$table.iter().enumerate() {
                        all.push((stringify!($table), i, s.span(), s.get_ref()));
                    }
                )*
                all
            }

            /// The sections with their secrets and files resolved; an error names the intake.
            pub fn resolve(&self, base: &std::path::Path, webhook: $crate::telephony::webhook::WebhookConfig)
                -> anyhow::Result<Intakes>
            {
                Ok(Intakes {
                    $(
                        $table: self.$table
                            .iter()
                            .map(|s| {
                                use $crate::telephony::intake::Section as _;
                                let mut c = s.get_ref().clone();
                                let name = c.name().to_owned();
                                c.resolve(base).map_err(|e| {
                                    anyhow::anyhow!("{} `{name}` {e:#}", stringify!($table))
                                })?;
                                Ok(c)
                            })
                            .collect::<anyhow::Result<_>>()?,
                    )*
                    webhook,
                })
            }
        }

        /// The intakes of a config, secrets resolved: what the daemon runs.
        #[derive(Debug, Clone, Default)]
        pub struct Intakes {
            $(
                #[doc = concat!("`[[", stringify!($table), "]]`")]
                pub $table: Vec<$table::$section>,
            )*
            /// The webhook and its PBXs (served by the HTTP listener, not a client).
            pub webhook: $crate::telephony::webhook::WebhookConfig,
        }

        impl Intakes {
            /// Every configured client intake, in config order per kind.
            pub fn clients(&self) -> Vec<&dyn $crate::telephony::intake::Section> {
                let mut all: Vec<&dyn $crate::telephony::intake::Section> = Vec::new();
                $( all.extend(self.$table.iter().map(|c| c as &dyn $crate::telephony::intake::Section)); )*
                all
            }
        }
    };
}

pub(crate) use registry;

/// The registry's types, declared in `telephony` by its one invocation.
pub use super::{Intakes, Sections};

/// Shared checks for [`Section::check`].
pub mod check {
    use std::time::Duration;

    /// `host:port` with a non-zero port.
    pub fn address(field: &str, a: &str) -> Result<(), super::Invalid> {
        let valid = a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if valid {
            Ok(())
        } else {
            Err((field.into(), format!("`{a}` is not host:port")))
        }
    }

    /// Exactly one of a secret and its `_env` variable.
    pub fn one_secret(field: &str, given: bool, env: bool) -> Result<(), super::Invalid> {
        if given == env {
            Err((
                field.into(),
                "set exactly one of the secret and its `_env` variable".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// A timer that is not zero.
    pub fn nonzero(field: &str, d: Duration) -> Result<(), super::Invalid> {
        if d.is_zero() {
            Err((field.into(), "must be more than zero".into()))
        } else {
            Ok(())
        }
    }

    /// A call-back's channel (or endpoint) template and dialplan context: the template holds
    /// `{extension}`, neither holds a space, a quote or a line break (they go into a PBX
    /// command line).
    pub fn originate(
        (template_field, template): (&str, &str),
        (context_field, context): (&str, &str),
    ) -> Result<(), super::Invalid> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "'\",{}".contains(c))
        };
        if !template.contains("{extension}") || !plain(&template.replace("{extension}", "x")) {
            return Err((
                template_field.into(),
                format!(
                    "`{template}` must name the agent's extension as `{{extension}}`, without \
                     spaces, quotes or commas"
                ),
            ));
        }
        if !plain(context) {
            return Err((
                context_field.into(),
                format!("`{context}` is not a dialplan context name"),
            ));
        }
        Ok(())
    }

    /// Reads `secret` from the environment variable `env` names, when it names one; an unset
    /// or empty variable is an error that names `field` and the variable.
    pub fn secret_env(
        field: &str,
        env: Option<&str>,
        secret: &mut Option<crate::secret::Secret>,
    ) -> anyhow::Result<()> {
        if let Some(var) = env {
            let value = crate::secret::secret_from_env(var).ok_or_else(|| {
                anyhow::anyhow!("{field}: environment variable `{var}` is not set or empty")
            })?;
            *secret = Some(crate::secret::Secret::new(value));
        }
        Ok(())
    }
}
