//! The HTTP listener: the agent page (`page`), the agents' API (live calls here, the call
//! journal and notes in `journal`, customer search in `customers`), `/healthz` and `/metrics`; the PBX webhook
//! `POST /api/events` (`telephony::webhook`, an intake) is merged in by the daemon.
//!
//! Every route that reveals call data authenticates the agent (`Authorization: Bearer TOKEN`)
//! and shows only calls ringing at the agent's own extensions. `/healthz` and `/metrics` carry
//! no customer data or numbers.

use std::sync::Arc;

mod callbacks;
pub(crate) mod customers;
pub(crate) mod journal;
pub mod page;
mod section;
pub(crate) mod serve;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use axum::extract::ws::WebSocketUpgrade;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::agents::{Agent, Agents};
use crate::calls::Calls;
use crate::calls::journal::Journal;
use crate::calls::log::CallLog;
use crate::push::{Hub, SessionConfig};
use crate::throttle::{AuthThrottle, Peer};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The call table.
    pub calls: Arc<Calls>,
    /// The agents.
    pub agents: Arc<Agents>,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
    /// The push hub.
    pub hub: Arc<Hub>,
    /// WebSocket settings (and the page's, in `push.session.page`).
    pub push: Arc<PushSettings>,
    /// The recent calls and their notes.
    pub journal: Arc<Journal>,
    /// The call log in PostgreSQL, when there is one (notes are written there too).
    pub call_log: Option<Arc<CallLog>>,
    /// Cancelled on shutdown (WebSocket sessions close with 1001).
    pub shutdown: CancellationToken,
    /// Failed sign-ins per source address (API and WebSocket).
    pub throttle: AuthThrottle,
    /// The cluster, when this node is one of several.
    pub cluster: Option<Arc<crate::cluster::Status>>,
    /// The callbacks (missed calls).
    pub callbacks: Arc<crate::callbacks::Callbacks>,
    /// The PBX connections that can place calls (call-backs).
    pub dialers: Arc<crate::calls::dial::Dialers>,
}

/// WebSocket endpoint settings.
#[derive(Debug)]
pub struct PushSettings {
    /// Session timings and queue size.
    pub session: SessionConfig,
    /// Browser origins allowed to open `/ws` (`scheme://host[:port]`), besides the page's own.
    pub allowed_origins: Vec<String>,
    /// Open WebSocket slots (the connection cap).
    pub slots: Arc<Semaphore>,
    /// Largest client message accepted, bytes.
    pub max_message_bytes: usize,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index_in))
        .route("/assets/{file}", get(page::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/calls", get(calls))
        .route("/api/customers", get(customers::search))
        .route(
            "/api/calls/{call_id}/notes",
            post(journal::note).layer(journal::body_limit()),
        )
        .route("/api/callbacks", get(callbacks::list))
        .route(
            "/api/callbacks/{id}/{action}",
            post(callbacks::act).layer(journal::body_limit()),
        )
        .route("/ws", get(websocket))
        .with_state(state)
}

/// `ok`, or `degraded` (still 200: the node pops its own agents) when it is cut off from its
/// cluster.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let live_calls = state.calls.counts();
    let mut body = serde_json::json!({
        "status": "ok",
        "live_calls": live_calls.0 + live_calls.1,
    });
    if let Some(cluster) = &state.cluster {
        if !cluster.connected() {
            body["status"] = "degraded".into();
        }
        body["cluster"] = cluster.health();
    }
    axum::Json(body)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The agent whose token the request carries. Refused alike: a missing or wrong token (401,
/// counted against the address) and any request from an address that failed too often (429).
fn agent_of(
    state: &AppState,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<Arc<Agent>, Box<Response>> {
    if !state.throttle.allows(peer.0, CHANNEL_API) {
        return Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "60")],
                axum::Json(serde_json::json!({
                    "error": "too many failed sign-ins from this address; try again later"
                })),
            )
                .into_response(),
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match token.and_then(|t| state.agents.authenticate(t)) {
        Some(agent) => Ok(agent),
        None => {
            state.throttle.failed(peer.0, CHANNEL_API);
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "http_unauthenticated")
                .increment(1);
            Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    axum::Json(serde_json::json!({ "error": "a valid agent token is required" })),
                )
                    .into_response(),
            ))
        }
    }
}

/// The `channel` label of the agents' API in the throttle's metrics.
pub const CHANNEL_API: &str = "api";

/// The token of an `Authorization: Bearer TOKEN` value. The scheme is case-insensitive
/// [RFC 9110 §11.1] and may be followed by several spaces [RFC 6750 §2.1 `1*SP`].
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub use crate::push::section::AllowedOrigin;
pub use section::HttpServerConfig;

/// Whether a browser `Origin` may open `/ws` [RFC 6455 §10.2]: absent (not a browser: the
/// token still has to be right), one configured, or the page's own origin when the page was
/// reached by IP address or `localhost`. An own origin named by DNS must be configured:
/// otherwise a page on an attacker's name that resolves to this daemon (DNS rebinding) would
/// pass, since its `Origin` equals its `Host`.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    own && host_is_literal(host)
}

/// Whether a `Host` header names an IP address or `localhost` (with or without a port):
/// names no rebinding attacker can make a browser send for its own page.
fn host_is_literal(host: &str) -> bool {
    if host.parse::<std::net::SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// `GET /ws`: the agents' push channel (protocol in docs/protocol.md).
async fn websocket(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.push.allowed_origins) {
        metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "origin").increment(1);
        return (
            StatusCode::FORBIDDEN,
            "origin not allowed: list the page's address in [http] allowed_origins",
        )
            .into_response();
    }
    let Ok(slot) = state.push.slots.clone().try_acquire_owned() else {
        metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "connection_limit")
            .increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    // tungstenite's default 128 KiB read buffer costs ~136 KiB per idle connection; 4 KiB
    // buffers bring it to ~8 KiB [PROTOCOLS.md §6]. Frames are buffered up to 16 KiB until the
    // session's writer flushes: the messages queued for a connection go out in one write (the
    // buffer holds what one batch needs; an idle connection's is empty).
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(state.push.max_message_bytes)
        .max_frame_size(state.push.max_message_bytes)
        .on_upgrade(move |socket| async move {
            crate::push::session::run(
                socket,
                state.hub.clone(),
                state.agents.clone(),
                (state.throttle.clone(), peer),
                state.push.session.clone(),
                state.shutdown.clone(),
            )
            .await;
            drop(slot);
        })
}

/// `GET /api/calls` query: `mine=1` asks for the agent's recent calls (the journal) instead
/// of the live ones.
#[derive(Debug, serde::Deserialize)]
struct CallsQuery {
    #[serde(default)]
    mine: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/calls`: the live calls, or with `mine=1` the recent ones with notes.
async fn calls(
    State(state): State<AppState>,
    Query(query): Query<CallsQuery>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    if matches!(query.mine.as_deref(), Some("1" | "true" | "yes")) {
        return journal::recent(&state, &headers, peer, query.limit);
    }
    live_calls(&state, &headers, peer)
}

/// The calls ringing or answered now at the agent's extensions.
fn live_calls(state: &AppState, headers: &HeaderMap, peer: Peer) -> Response {
    let agent = match agent_of(state, headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let calls = state.calls.live(Some(&agent.extensions));
    axum::Json(serde_json::json!({ "agent": &*agent, "calls": calls })).into_response()
}

/// Metric `screenpop_notes_total`.
pub const NOTES_TOTAL: &str = "screenpop_notes_total";

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn own_origin_passes_only_when_reached_by_address() {
        assert!(origin_allowed(&headers(None, "evil.example:8080"), &[]));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("http://[::1]:8080"), "[::1]:8080"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("http://localhost:8080"), "localhost:8080"),
            &[]
        ));
        // DNS rebinding: the attacker's name resolves to us; Origin equals Host.
        assert!(!origin_allowed(
            &headers(Some("http://evil.example:8080"), "evil.example:8080"),
            &[]
        ));
        // A cross-origin page.
        assert!(!origin_allowed(
            &headers(Some("http://evil.example"), "127.0.0.1:8080"),
            &[]
        ));
        // Configured names pass, case-insensitively.
        let allowed = vec!["https://screenpop.example.com".to_owned()];
        assert!(origin_allowed(
            &headers(
                Some("https://ScreenPop.example.com"),
                "screenpop.example.com"
            ),
            &allowed
        ));
    }

    #[test]
    fn allowed_origins_are_checked() {
        assert!(AllowedOrigin::parse("https://crm.example.com").is_ok());
        assert!(AllowedOrigin::parse("http://10.0.0.5:8080").is_ok());
        assert!(AllowedOrigin::parse("http://[::1]:8080").is_ok());
        assert!(AllowedOrigin::parse("crm.example.com").is_err());
        assert!(AllowedOrigin::parse("https://crm.example.com/").is_err());
        assert!(AllowedOrigin::parse("https://crm.example.com/app").is_err());
        assert!(AllowedOrigin::parse("https://").is_err());
    }
}
