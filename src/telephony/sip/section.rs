//! `[sip]`: the fork-target listener's section, with its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// SIP-over-TLS addresses to listen on (RFC 3261 §26; 5061 by convention). Connections get
    /// the TCP listeners' budgets and idle timeout.
    #[serde(default)]
    pub tls: Vec<SocketAddr>,
    /// PEM certificate chain for the `tls` listeners, leaf first; required with `tls`; relative
    /// to this file. Re-read on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`; required with `tls`; relative to this file. Re-read on
    /// SIGHUP.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that client certificates must chain to. When set, every TLS client
    /// must present one (mutual TLS); unset, none is asked for. Re-read on SIGHUP.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// A TLS client must finish its handshake within this, or it is closed.
    #[serde(default = "default_tls_handshake_timeout", with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// Source networks allowed to send SIP (the PBX); everything else is dropped and counted.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// How long a branch may ring before screenpop ends it with 480.
    #[serde(default = "default_ring_timeout", with = "duration")]
    pub ring_timeout: Duration,
    /// Most INVITE transactions held at once.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: usize,
    /// Most concurrent TCP connections per listener (each TLS listener has as many); when full,
    /// a new one evicts the least useful (see `listener`).
    #[serde(
        default = "crate::listener::defaults::max_connections",
        deserialize_with = "positive"
    )]
    pub max_tcp_connections: usize,
    /// Most concurrent TCP connections from one source address (per listener, TLS too).
    #[serde(
        default = "crate::listener::defaults::max_connections_per_source",
        deserialize_with = "positive"
    )]
    pub max_tcp_connections_per_source: usize,
    /// A TCP or TLS connection without traffic for this long is closed (PBXs keep theirs alive with
    /// CRLF pings). Never shorter than `ring_timeout` + 32 s: a longer-ringing INVITE's final
    /// response must find its connection open, so a shorter value is raised to that (see
    /// [`SipConfig::tcp_idle_timeout_in_force`]).
    #[serde(default = "crate::listener::defaults::idle_timeout", with = "duration")]
    pub tcp_idle_timeout: Duration,
}

impl SipConfig {
    /// Checks what serde cannot: the TLS listeners need a certificate and a key. The error
    /// names the missing key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.tls.is_empty() {
            return Ok(());
        }
        if self.tls_cert.is_none() {
            return Err((
                "tls_cert",
                "sip.tls lists a listener: set tls_cert (PEM certificate chain) and tls_key".into(),
            ));
        }
        if self.tls_key.is_none() {
            return Err((
                "tls_key",
                "sip.tls lists a listener: set tls_key (PEM private key) beside tls_cert".into(),
            ));
        }
        Ok(())
    }

    /// The TLS listeners' certificate, when they have one.
    pub fn tls_identity(&self) -> Option<crate::tls_server::Identity> {
        Some(crate::tls_server::Identity::Files {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

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
            tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout: default_tls_handshake_timeout(),
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
fn default_tls_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SipConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn tls_listeners_need_a_certificate_and_a_key() {
        let plain = parse("udp = [\"127.0.0.1:5060\"]").expect("parses");
        assert_eq!(plain.check(), Ok(()));
        assert!(plain.tls.is_empty() && plain.tls_identity().is_none());
        assert_eq!(plain.tls_handshake_timeout, Duration::from_secs(10));
        let no_cert = parse("tls = [\"127.0.0.1:5061\"]").expect("parses");
        assert_eq!(no_cert.check().expect_err("refused").0, "tls_cert");
        let no_key = parse("tls = [\"127.0.0.1:5061\"]\ntls_cert = \"c.pem\"").expect("parses");
        assert_eq!(no_key.check().expect_err("refused").0, "tls_key");
        let full = parse(
            "tls = [\"127.0.0.1:5061\"]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             tls_client_ca = \"ca.pem\"\ntls_handshake_timeout = \"3s\"",
        )
        .expect("parses");
        assert_eq!(full.check(), Ok(()));
        assert_eq!(full.tls_handshake_timeout, Duration::from_secs(3));
        assert_eq!(
            full.tls_identity(),
            Some(crate::tls_server::Identity::Files {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: Some("ca.pem".into()),
            })
        );
    }
}
