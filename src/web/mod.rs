//! The HTTP listener: the agent page, the agents' API, `/healthz` and `/metrics`.
//!
//! Every route that reveals call data authenticates the agent (`Authorization: Bearer TOKEN`)
//! and shows only calls ringing at the agent's own extensions. `/healthz` and `/metrics` carry
//! no customer data or numbers.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::agents::{Agent, Agents};
use crate::calls::Calls;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The call table.
    pub calls: Arc<Calls>,
    /// The agents.
    pub agents: Arc<Agents>,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/calls", get(live_calls))
        .with_state(state)
}

const PAGE: &str = include_str!("page.html");

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
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

/// The calls ringing or answered now at the agent's extensions.
async fn live_calls(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let agent = match agent_of(&state, &headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let calls = state.calls.live(Some(&agent.extensions));
    axum::Json(serde_json::json!({ "agent": &*agent, "calls": calls })).into_response()
}
