//! `[cluster]`: several equal nodes on NATS JetStream. Without it, one node, no NATS.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::serde_ext::{duration, positive};

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (`a`, `site1-a`).
    pub node: String,
    /// Seed URLs of the NATS servers (`nats://10.0.0.5:4222`, `tls://…`); the client learns
    /// the rest of the cluster from them.
    pub nats: Vec<String>,
    /// The environment variable holding the NATS token, if the servers want one.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A NATS credentials file (`.creds`: JWT and NKey seed), relative to this file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// A CA bundle (PEM) the NATS servers' TLS certificates are checked against; setting it
    /// requires TLS. Relative to this file.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every subject (`<prefix>.v1.…`) and bucket (`<prefix>_nodes`): several
    /// clusters can share one NATS.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How often a node says it is alive; a node silent for three of these is gone.
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat: Duration,
    /// Replicas of the cluster's key-value buckets (1 to 5). Default: 3, or the number of
    /// seed URLs when fewer.
    #[serde(default)]
    pub replicas: Option<usize>,
    /// Most events waiting to be published while NATS is slow or away; beyond it they are
    /// dropped and counted (this node's own pops never wait for NATS).
    #[serde(default = "default_publish_queue", deserialize_with = "positive")]
    pub publish_queue: usize,
    /// The address agents reach this node's page at (`https://node-a.example.com:8443`),
    /// handed to the pages in `ready` so that they can reconnect to another node.
    #[serde(default)]
    pub page_url: Option<String>,
    /// The token, read from `token_env` at start-up.
    #[serde(skip)]
    pub token: Option<Secret>,
}

fn default_prefix() -> String {
    "screenpop".into()
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}
fn default_publish_queue() -> usize {
    10_000
}

impl ClusterConfig {
    /// Checks what serde cannot: the offending field and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name(&self.node) {
            return Err((
                "node".into(),
                "use 1 to 64 letters, digits, `-` or `_`".into(),
            ));
        }
        if !name(&self.prefix) {
            return Err((
                "prefix".into(),
                "use 1 to 64 letters, digits, `-` or `_` (it names subjects and buckets)".into(),
            ));
        }
        if self.nats.is_empty() {
            return Err(("nats".into(), "list at least one NATS server URL".into()));
        }
        for (i, url) in self.nats.iter().enumerate() {
            let rest = url
                .strip_prefix("nats://")
                .or_else(|| url.strip_prefix("tls://"));
            let valid = rest.is_some_and(|r| {
                let host_port = r.rsplit('@').next().unwrap_or(r);
                host_port.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
            });
            if !valid {
                return Err((
                    format!("nats[{i}]"),
                    format!("`{url}` is not nats://host:port or tls://host:port"),
                ));
            }
        }
        if self.heartbeat.is_zero() {
            return Err(("heartbeat".into(), "must be more than zero".into()));
        }
        if let Some(r) = self.replicas
            && !(1..=5).contains(&r)
        {
            return Err(("replicas".into(), "1 to 5".into()));
        }
        if let Some(url) = &self.page_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err((
                "page_url".into(),
                format!("`{url}` is not an http:// or https:// address"),
            ));
        }
        Ok(())
    }

    /// The replicas in force.
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(self.nats.len().min(3))
    }

    /// Reads the token from its variable and makes files relative to `base`.
    pub fn resolve(&mut self, base: &std::path::Path) -> anyhow::Result<()> {
        if let Some(var) = &self.token_env {
            let token = crate::secret::secret_from_env(var).ok_or_else(|| {
                anyhow::anyhow!(
                    "cluster token_env: environment variable `{var}` is not set or empty"
                )
            })?;
            self.token = Some(Secret::new(token));
        }
        for file in [&mut self.credentials_file, &mut self.tls_ca_file] {
            if let Some(f) = file.as_mut()
                && f.is_relative()
            {
                *f = base.join(&*f);
            }
        }
        Ok(())
    }
}
