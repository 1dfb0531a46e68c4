//! `[http]`: the HTTP listener's section, with its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::serde_ext::{duration, positive};

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address of the agent page, API, `/healthz` and `/metrics`.
    #[serde(default = "default_http")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS/WSS (with `tls_key`); relative to this file.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS/WSS (with `tls_cert`); relative to this file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Browser origins (`scheme://host[:port]`) allowed to open `/ws`, e.g. the page's public
    /// address `"https://screenpop.example.com"` or a CRM embedding it. Without it only the
    /// page's own origin is allowed, and only when the page was reached by IP address or
    /// `localhost`: an origin named by DNS must be listed, or a DNS-rebinding page could pass.
    #[serde(default)]
    pub allowed_origins: Vec<crate::web::AllowedOrigin>,
    /// Most connections at once (WebSockets included); when full, a new one evicts the least
    /// useful (see `listener`).
    #[serde(default = "default_http_max", deserialize_with = "positive")]
    pub max_connections: usize,
    /// Most connections at once from one client address.
    #[serde(
        default = "default_http_max_per_address",
        deserialize_with = "positive"
    )]
    pub max_connections_per_address: usize,
    /// A request's headers must be complete this long after its first byte (after the
    /// connection opened, for the first request); slower clients are disconnected.
    #[serde(default = "default_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed (WebSockets have
    /// their own heartbeat, `[push]`).
    #[serde(default = "default_keep_alive_timeout", with = "duration")]
    pub keep_alive_timeout: Duration,
}

impl HttpServerConfig {
    /// The listener's limits.
    pub fn limits(&self) -> crate::web::serve::HttpLimits {
        crate::web::serve::HttpLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            ..Default::default()
        }
    }
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            listen: default_http(),
            tls_cert: None,
            tls_key: None,
            allowed_origins: Vec::new(),
            max_connections: default_http_max(),
            max_connections_per_address: default_http_max_per_address(),
            header_read_timeout: default_header_read_timeout(),
            keep_alive_timeout: default_keep_alive_timeout(),
        }
    }
}

fn default_http_max() -> usize {
    crate::web::serve::HttpLimits::default().max_connections
}
fn default_http_max_per_address() -> usize {
    crate::web::serve::HttpLimits::default().max_connections_per_address
}
fn default_header_read_timeout() -> Duration {
    crate::web::serve::HttpLimits::default().header_read_timeout
}
fn default_keep_alive_timeout() -> Duration {
    crate::web::serve::HttpLimits::default().keep_alive_timeout
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
