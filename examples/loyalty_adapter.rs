//! A worked example of a data-source adapter: loyalty points from a (made-up) loyalty system's
//! HTTP API, shaped for the pop (tier, points, points to the next tier).
//!
//! Everything an adapter is lives in the first half of this file, exactly as it would in
//! `src/sources/loyalty.rs`: a `LoyaltyConfig` (plain serde data) and a `Loyalty` implementing
//! `screenpop::sources::Source`. The second half runs it: it starts a stand-in loyalty API on
//! loopback, checks the adapter against the contract every adapter must keep
//! (`sources::contract::check`), and composes a profile with it next to nothing else.
//!
//! Run: `cargo run --example loyalty_adapter`. See docs/adapters.md for making it built-in
//! (one file, one line in `src/sources/mod.rs`).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use screenpop::sources::{Section, Source, SourceError, Who};
use serde::Deserialize;
use serde_json::{Value, json};

// ---- src/sources/loyalty.rs would start here ---------------------------------------------

/// What an account number escapes in a URL path: all but letters, digits and `-`.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-');

/// `[[sources]] type = "loyalty"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyConfig {
    /// The loyalty system's API, e.g. `https://loyalty.example.com`.
    pub base_url: String,
    /// Points needed for each tier, lowest first.
    #[serde(default = "default_tiers")]
    pub tiers: Vec<(String, u64)>,
}

fn default_tiers() -> Vec<(String, u64)> {
    vec![
        ("silver".into(), 0),
        ("gold".into(), 10_000),
        ("platinum".into(), 50_000),
    ]
}

/// The running adapter.
pub struct Loyalty {
    client: reqwest::Client,
    base_url: String,
    tiers: Vec<(String, u64)>,
}

impl Loyalty {
    /// Checks the config and builds the client (no I/O here).
    pub fn new(config: &LoyaltyConfig) -> Result<Loyalty, String> {
        if !config.base_url.starts_with("http") {
            return Err(format!(
                "base_url `{}` is not an http(s) URL",
                config.base_url
            ));
        }
        // screenpop's TLS set-up (rustls + ring + WebPKI roots).
        let client = screenpop::sources::http::client_builder()?
            .build()
            .map_err(|e| format!("client: {e}"))?;
        Ok(Loyalty {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            tiers: config.tiers.clone(),
        })
    }
}

impl Source for Loyalty {
    // Fetch only: no timeouts, retries or caching here; the composer applies them.
    async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
        let account = who
            .field("account")
            .ok_or_else(|| SourceError::MissingField("account".into()))?;
        // Customer fields go into the URL escaped, never raw.
        let url = format!(
            "{}/members/{}",
            self.base_url,
            utf8_percent_encode(account, ESCAPED)
        );
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|_| SourceError::Unreachable("loyalty API".into()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Value::Null); // not a member: nothing on file
        }
        if !response.status().is_success() {
            return Err(SourceError::Refused(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| SourceError::BadAnswer("not JSON".into()))?;
        let points = body["points"]
            .as_u64()
            .ok_or_else(|| SourceError::BadAnswer("no points".into()))?;
        let tier = self
            .tiers
            .iter()
            .rev()
            .find(|(_, from)| points >= *from)
            .map(|(name, _)| name.clone());
        let next = self.tiers.iter().find(|(_, from)| *from > points);
        Ok(json!({
            "tier": tier,
            "points": points,
            "next_tier": next.map(|(name, _)| name),
            "points_to_next": next.map(|(_, from)| from - points),
        }))
    }
}

// ---- and end here. The rest runs the example. ---------------------------------------------

/// A stand-in for the loyalty system: one member, ACME-001.
async fn loyalty_api() -> std::net::SocketAddr {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/members/{account}",
        axum::routing::get(|Path(account): Path<String>| async move {
            match account.as_str() {
                "ACME-001" => axum::Json(json!({"points": 12_400})).into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn who(id: &str, account: &str) -> Who {
    Who {
        customer: screenpop::resolve::Customer::new(screenpop::resolve::CustomerFields {
            id,
            name: "Acme Corporation",
            account,
            ..Default::default()
        }),
        numbers: vec!["+14155550100".into()],
        call_id: None,
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let api = loyalty_api().await;
    let adapter = Loyalty::new(&LoyaltyConfig {
        base_url: format!("http://{api}"),
        tiers: default_tiers(),
    })?;
    // 1. The contract every adapter keeps (also what its unit test should call).
    let section = screenpop::sources::contract::check(
        &adapter,
        &who("c-0001", "ACME-001"),
        &who("c-9999", "NOPE-404"),
    )
    .await?;
    println!("contract kept; ACME-001 → {section}");

    // 2. The same adapter behind the composer, with its timeout, cache and breaker.
    let settings: screenpop::compose::SourceSettings = toml::from_str(
        "name = \"loyalty\"\ntitle = \"Loyalty\"\ntimeout = \"300ms\"\ncache_ttl = \"10m\"\n",
    )
    .map_err(|e| e.to_string())?;
    let composer = screenpop::compose::Composer::new(Duration::from_secs(3)).with(
        &settings,
        "loyalty",
        Box::new(adapter),
    );
    for round in ["first call", "second call (cached)"] {
        composer
            .compose(&who("c-0001", "ACME-001"), |part| {
                println!(
                    "{round}: section {} {} in {:.2} ms{} → {}",
                    part.name,
                    part.status.label(),
                    part.elapsed.as_secs_f64() * 1000.0,
                    part.age
                        .map(|a| format!(", cached {:.3} s ago", a.as_secs_f64()))
                        .unwrap_or_default(),
                    part.data.as_deref().cloned().unwrap_or(Value::Null)
                );
            })
            .await;
    }
    Ok(())
}
