//! `[hep]`: the HEPv3 listener's section, with its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::serde_ext::{duration, positive};

/// `[hep]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HepConfig {
    /// UDP addresses to listen on.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// Source networks allowed to send HEP (the capture agents).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// The capture password (HEP chunk 0x0e) every packet must carry, if set.
    #[serde(default)]
    pub password: Option<String>,
    /// Most concurrent TCP connections; when full, a new one evicts the least useful.
    #[serde(
        default = "crate::listener::defaults::max_connections",
        deserialize_with = "positive"
    )]
    pub max_tcp_connections: usize,
    /// Most concurrent TCP connections from one source address.
    #[serde(
        default = "crate::listener::defaults::max_connections_per_source",
        deserialize_with = "positive"
    )]
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection without a packet for this long is closed.
    #[serde(default = "crate::listener::defaults::idle_timeout", with = "duration")]
    pub tcp_idle_timeout: Duration,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            udp: Vec::new(),
            tcp: Vec::new(),
            allow: Vec::new(),
            password: None,
            max_tcp_connections: crate::listener::defaults::max_connections(),
            max_tcp_connections_per_source: crate::listener::defaults::max_connections_per_source(),
            tcp_idle_timeout: crate::listener::defaults::idle_timeout(),
        }
    }
}
