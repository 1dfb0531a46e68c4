//! The HTTP listener: the agent page (`page`), the agents' API (live calls here, the call
//! journal and notes in `journal`), `/healthz` and `/metrics`; the PBX webhook
//! `POST /api/events` (`webhook`) is merged in by the daemon when configured.
//!
//! Every route that reveals call data authenticates the agent (`Authorization: Bearer TOKEN`)
//! and shows only calls ringing at the agent's own extensions. `/healthz` and `/metrics` carry
//! no customer data or numbers.

use std::sync::Arc;

pub mod journal;
pub mod page;
pub mod tls;
pub mod webhook;

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
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/calls", get(calls))
        .route(
            "/api/calls/{call_id}/notes",
            post(journal::note).layer(journal::body_limit()),
        )
        .route("/ws", get(websocket))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "live_calls": state.calls.live(None).len() }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

fn agent_of(state: &AppState, headers: &HeaderMap) -> Result<Arc<Agent>, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token.and_then(|t| state.agents.authenticate(t)) {
        Some(agent) => Ok(agent),
        None => {
            metrics::counter!("screenpop_drops_total", "reason" => "http_unauthenticated")
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

/// Whether a browser `Origin` may open `/ws`: absent (not a browser), the page's own origin
/// (same host as the request), or one configured [RFC 6455 §10.2].
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host);
    own || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

/// `GET /ws`: the agents' push channel (protocol in docs/protocol.md).
async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.push.allowed_origins) {
        metrics::counter!("screenpop_push_drops_total", "reason" => "origin").increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let Ok(slot) = state.push.slots.clone().try_acquire_owned() else {
        metrics::counter!("screenpop_push_drops_total", "reason" => "connection_limit")
            .increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    // tungstenite's default 128 KiB read buffer costs ~136 KiB per idle connection; 4 KiB
    // buffers bring it to ~8 KiB [PROTOCOLS.md §6].
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(state.push.max_message_bytes)
        .max_frame_size(state.push.max_message_bytes)
        .on_upgrade(move |socket| async move {
            crate::push::session::run(
                socket,
                state.hub.clone(),
                state.agents.clone(),
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
    headers: HeaderMap,
) -> Response {
    if matches!(query.mine.as_deref(), Some("1" | "true" | "yes")) {
        return journal::recent(&state, &headers, query.limit);
    }
    live_calls(&state, &headers)
}

/// The calls ringing or answered now at the agent's extensions.
fn live_calls(state: &AppState, headers: &HeaderMap) -> Response {
    let agent = match agent_of(state, headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let calls = state.calls.live(Some(&agent.extensions));
    axum::Json(serde_json::json!({ "agent": &*agent, "calls": calls })).into_response()
}
