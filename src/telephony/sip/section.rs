//! `[sip]`: the fork-target listener's section, with its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::serde_ext::{duration, positive};

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP addresses to listen on.
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// Source networks allowed to send SIP (the PBX); everything else is dropped and counted.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// How long a branch may ring before screenpop ends it with 480.
    #[serde(default = "default_ring_timeout", with = "duration")]
    pub ring_timeout: Duration,
    /// Most INVITE transactions held at once.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: usize,
    /// Most concurrent TCP connections; when full, a new one evicts the least useful (see
    /// `listener`).
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
    /// A TCP connection without traffic for this long is closed (PBXs keep theirs alive with
    /// CRLF pings). Never shorter than `ring_timeout` + 32 s: a longer-ringing INVITE's final
    /// response must find its connection open, so a shorter value is raised to that (see
    /// [`SipConfig::tcp_idle_timeout_in_force`]).
    #[serde(default = "crate::listener::defaults::idle_timeout", with = "duration")]
    pub tcp_idle_timeout: Duration,
}

impl SipConfig {
    /// The idle timeout in force: `tcp_idle_timeout`, raised to `ring_timeout` + 32 s.
    pub fn tcp_idle_timeout_in_force(&self) -> Duration {
        self.tcp_idle_timeout
            .max(crate::telephony::sip::tcp::min_idle_timeout(
                self.ring_timeout,
            ))
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp: Vec::new(),
            tcp: Vec::new(),
            allow: Vec::new(),
            ring_timeout: default_ring_timeout(),
            max_transactions: default_max_transactions(),
            max_tcp_connections: crate::listener::defaults::max_connections(),
            max_tcp_connections_per_source: crate::listener::defaults::max_connections_per_source(),
            tcp_idle_timeout: crate::listener::defaults::idle_timeout(),
        }
    }
}

fn default_ring_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_transactions() -> usize {
    50_000
}
