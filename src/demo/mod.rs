//! The embedded default: the whole daemon on bundled demo data, no database, no config file.
//!
//! Fixtures (documented in README): agents `alice` (extension 1001, token `alice-demo-token`,
//! role `credit`) and `bob` (1002, `bob-demo-token`, no roles); 1,202 customers from
//! `examples/data/customers.csv`, among them "Acme Corporation" stored as `(415) 555-0100`
//! (national format, so a call from `+14155550100` exercises the normalisation); and three
//! profile sources, `balance`, `purchases` and `credit` (credit for the `credit` role only),
//! served by the CSV adapter from data generated for every customer (`data`) through the same
//! composer as a real site. Listeners accept loopback sources only. SIP over TLS uses a
//! self-signed certificate made at start-up for `localhost` and `127.0.0.1`: nothing to
//! configure, and nothing a real client should trust (`screenpop call --tls
//! --accept-self-signed` says so explicitly).

pub mod data;
pub mod db;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::TokenHash;
use crate::agents::{Agent, Agents};
use crate::compose::Composer;
use crate::daemon::Settings;
use crate::resolve::{Directory, Index, Normaliser};

/// The demo's "Open in CRM" link template (`[page] crm_url`); `crm.example` is reserved and
/// resolves nowhere.
pub const CRM_URL: &str = "https://crm.example/customers/{id}";

/// The bundled customers.
pub const CUSTOMERS_CSV: &str = include_str!("../../examples/data/customers.csv");

/// The demo agents: (id, name, extension, token, roles).
pub const AGENTS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "alice",
        "Alice Agent",
        "1001",
        "alice-demo-token",
        &["credit"],
    ),
    ("bob", "Bob Agent", "1002", "bob-demo-token", &[]),
];

/// The accounts of the bundled customers.
pub fn accounts() -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(CUSTOMERS_CSV.as_bytes());
    reader
        .deserialize::<crate::resolve::import::CsvRow>()
        .filter_map(Result::ok)
        .map(|r| r.account)
        .filter(|a| !a.is_empty())
        .collect()
}

/// The demo's three sources (the same settings `config/screenpop.example.toml` gives the
/// PostgreSQL demo databases), as CSV adapters over the data generated for `accounts`.
pub fn composer(accounts: &[String], today: std::time::SystemTime) -> anyhow::Result<Composer> {
    use crate::compose::SourceSettings;
    use crate::compose::display::DisplayHints;
    use crate::sources::Rows;
    use crate::sources::csv::{Csv, CsvConfig};
    let generated: Vec<data::Account> = accounts.iter().map(|a| data::account(a)).collect();
    let (accounting, sales, credit) = data::csv(&generated, today);
    let source = |name: &str, title: &str, roles: &[&str], cache: u64, display: DisplayHints| {
        SourceSettings {
            name: name.into(),
            title: Some(title.into()),
            display: Some(display),
            timeout: Duration::from_millis(800),
            cache_ttl: Some(Duration::from_secs(cache)),
            serve_stale: Some(Duration::from_secs(300)),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_concurrent: 32,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            field_roles: Default::default(),
        }
    };
    let csv = |rows: Rows,
               json: &[&str],
               text: &str|
     -> anyhow::Result<Box<dyn crate::sources::DynSource>> {
        let config = CsvConfig {
            path: "bundled".into(),
            key_column: "account".into(),
            match_field: "account".into(),
            rows,
            json_columns: json.iter().map(|c| (*c).to_owned()).collect(),
            text_columns: vec!["account".into(), "order".into()],
        };
        Ok(Box::new(
            Csv::from_text(&config, text).map_err(anyhow::Error::msg)?,
        ))
    };
    Ok(Composer::new(Duration::from_secs(3))
        .with(
            &source("balance", "Balance", &[], 30, hints::balance()),
            "csv",
            csv(Rows::One, &["invoices"], &accounting)?,
        )
        .with(
            &source("purchases", "Recent purchases", &[], 60, hints::purchases()),
            "csv",
            csv(Rows::Many, &["items"], &sales)?,
        )
        .with(
            &source("credit", "Credit terms", &["credit"], 300, hints::credit()),
            "csv",
            csv(Rows::One, &[], &credit)?,
        ))
}

/// The demo sources' display hints: the same `[sources.display]` tables
/// `config/screenpop.example.toml` gives the PostgreSQL demo sources.
pub mod hints {
    use crate::compose::display::{DisplayHints, ValueFormat, View};

    /// `balance`: the balance view.
    pub fn balance() -> DisplayHints {
        DisplayHints {
            view: Some(View::Balance),
            ..DisplayHints::default()
        }
    }

    /// `purchases`: a table of orders, their line items and totals.
    pub fn purchases() -> DisplayHints {
        DisplayHints {
            view: Some(View::Table),
            columns: ["order", "date", "items", "total"]
                .map(String::from)
                .to_vec(),
            formats: [
                ("items".to_owned(), ValueFormat::Items),
                ("total".to_owned(), ValueFormat::Money),
            ]
            .into(),
            empty: Some("No purchases.".into()),
            ..DisplayHints::default()
        }
    }

    /// `credit`: the credit view.
    pub fn credit() -> DisplayHints {
        DisplayHints {
            view: Some(View::Credit),
            ..DisplayHints::default()
        }
    }
}

/// Where the demo listens unless told otherwise.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    /// SIP, UDP and TCP.
    pub sip: SocketAddr,
    /// HEP, UDP and TCP.
    pub hep: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
    /// SIP over TLS, if at all.
    pub sip_tls: Option<SocketAddr>,
}

impl Default for DemoAddrs {
    fn default() -> Self {
        DemoAddrs {
            sip: SocketAddr::from(([127, 0, 0, 1], 5060)),
            hep: SocketAddr::from(([127, 0, 0, 1], 9060)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sip_tls: Some(SocketAddr::from(([127, 0, 0, 1], 5061))),
        }
    }
}

/// A self-signed certificate for `localhost`, `127.0.0.1`, `::1` and `listen`'s address (when
/// it names one), made now.
pub fn self_signed(listen: SocketAddr) -> anyhow::Result<crate::tls_server::Identity> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ip = listen.ip().to_string();
    if !listen.ip().is_unspecified() && !names.contains(&ip) {
        names.push(ip);
    }
    let made = rcgen::generate_simple_self_signed(names)?;
    Ok(crate::tls_server::Identity::Generated {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
    })
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
    let agents = Agents::new(AGENTS.iter().map(|&(id, name, ext, token, roles)| {
        (
            TokenHash::of(token),
            Agent {
                id: id.into(),
                name: name.into(),
                extensions: vec![ext.into()],
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
        )
    }));
    let composer = composer(&accounts(), std::time::SystemTime::now())?;
    // The demo is a config like any other (embedded, loopback only): its defaults are the
    // sections' own, nothing repeated here.
    let toml = format!(
        "[sip]\nudp = [\"{sip}\"]\ntcp = [\"{sip}\"]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n\
         [hep]\nudp = [\"{hep}\"]\ntcp = [\"{hep}\"]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n\
         [http]\nlisten = \"{http}\"\n[page]\ncrm_url = \"{CRM_URL}\"\n",
        sip = addrs.sip,
        hep = addrs.hep,
        http = addrs.http,
    );
    let config = crate::config::Config::parse(&toml, std::path::Path::new("<demo>"))?;
    let mut settings = crate::daemon::settings_base(&config)?;
    settings.resolver = Arc::new(Index::new(directory));
    settings.agents = Arc::new(agents);
    let composer = match &settings.history {
        Some(store) => composer.with(
            &config.history.settings(),
            "history",
            Box::new(crate::calls::history::History::new(
                store.clone(),
                &config.history,
                &config.calls.call_back_url,
            )),
        ),
        None => composer,
    };
    settings.composer = Some(Arc::new(composer));
    if let Some(tls) = addrs.sip_tls {
        settings.sip_tls = vec![tls];
        settings.sip_tls_identity = Some(self_signed(tls)?);
    }
    Ok(settings)
}
