//! The embedded default: the whole daemon on bundled demo data, no database, no config file.
//!
//! Fixtures (documented in README): agents `alice` (extension 1001, token `alice-demo-token`)
//! and `bob` (1002, `bob-demo-token`); 1,202 customers from `examples/data/customers.csv`, among
//! them "Acme Corporation" stored as `(415) 555-0100` (national format, so a call from
//! `+14155550100` exercises the normalisation). Listeners accept loopback sources only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::{Agent, Agents};
use crate::calls::TrackerConfig;
use crate::config::TokenHash;
use crate::daemon::Settings;
use crate::resolve::{Directory, Index, Normaliser};
use crate::telephony::allow::Allow;

/// The bundled customers.
pub const CUSTOMERS_CSV: &str = include_str!("../examples/data/customers.csv");

/// The demo agents: (id, name, extension, token).
pub const AGENTS: &[(&str, &str, &str, &str)] = &[
    ("alice", "Alice Agent", "1001", "alice-demo-token"),
    ("bob", "Bob Agent", "1002", "bob-demo-token"),
];

/// The demo's "Open in CRM" link template (`[page] crm_url`); `crm.example` is reserved and
/// resolves nowhere.
pub const CRM_URL: &str = "https://crm.example/customers/{id}";

/// Where the demo listens unless told otherwise.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    /// SIP, UDP and TCP.
    pub sip: SocketAddr,
    /// HEP, UDP and TCP.
    pub hep: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
}

impl Default for DemoAddrs {
    fn default() -> Self {
        DemoAddrs {
            sip: SocketAddr::from(([127, 0, 0, 1], 5060)),
            hep: SocketAddr::from(([127, 0, 0, 1], 9060)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// Settings for the demo daemon.
pub fn settings(addrs: DemoAddrs) -> anyhow::Result<Settings> {
    let normaliser = Normaliser::new(phonenumber::country::Id::US);
    let directory = Directory::from_csv(
        CUSTOMERS_CSV.as_bytes(),
        "examples/data/customers.csv",
        normaliser,
        2,
    )?;
    let agents = Agents::new(AGENTS.iter().map(|&(id, name, ext, token)| {
        (
            TokenHash::of(token),
            Agent {
                id: id.into(),
                name: name.into(),
                extensions: vec![ext.into()],
            },
        )
    }));
    let loopback = Allow::new(["127.0.0.0/8".parse()?, "::1/128".parse()?]);
    Ok(Settings {
        sip_udp: vec![addrs.sip],
        sip_tcp: vec![addrs.sip],
        sip_allow: loopback.clone(),
        hep_udp: vec![addrs.hep],
        hep_tcp: vec![addrs.hep],
        hep_allow: loopback,
        hep_password: None,
        http: addrs.http,
        ring_timeout: Duration::from_secs(120),
        max_transactions: 50_000,
        max_tcp_connections: 256,
        tracker: TrackerConfig {
            max_calls: 20_000,
            ring_timeout: Duration::from_secs(125),
            answered_ttl: Duration::from_secs(15 * 60),
        },
        resolver: Arc::new(Index::new(directory)),
        agents: Arc::new(agents),
        push: crate::daemon::PushConfig {
            session: crate::push::SessionConfig {
                page: Arc::new(crate::push::message::PageSettings {
                    crm_url: Some(CRM_URL.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
        tls: None,
        directory_sync: None,
        call_log: None,
        picks: Vec::new(),
        agents_sync: None,
        ami: Vec::new(),
        esl: Vec::new(),
        webhook: Default::default(),
        journal: 10_000,
    })
}
