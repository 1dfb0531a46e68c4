//! Customer search over HTTP, for the agent page: `GET /api/customers?q=…&limit=…`, answered
//! from the in-memory search index (`resolve::search`) in microseconds, never from a database.
//!
//! Any signed-in agent may search every customer (the token is required: 401 without it).
//! `q` is 2 to 64 characters after trimming (400 otherwise); `limit` is clamped to 1..=20.
//! The query text reaches the logs only when PII logging is on (`[log] pii`): agents search
//! for names and numbers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::resolve::search::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::resolve::{Key, SearchHit};
use crate::throttle::Peer;

/// Fewest characters of a query (after trimming).
pub const MIN_QUERY_CHARS: usize = 2;
/// Most characters of a query (after trimming).
pub const MAX_QUERY_CHARS: usize = 64;

/// Metric `screenpop_customer_searches_total{result}`: `hit`, `empty` or `bad` (refused
/// with 400).
pub const CUSTOMER_SEARCHES_TOTAL: &str = "screenpop_customer_searches_total";

/// `GET /api/customers` query.
#[derive(Debug, serde::Deserialize)]
pub struct SearchParams {
    /// The search text.
    #[serde(default)]
    q: Option<String>,
    /// How many results (1..=20, default 10); anything else that is a number is clamped.
    #[serde(default)]
    limit: Option<String>,
}

fn bad(message: &str) -> Response {
    metrics::counter!(CUSTOMER_SEARCHES_TOTAL, "result" => "bad").increment(1);
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// `GET /api/customers?q=…[&limit=N]`: `{"customers": [...]}`, best first.
pub async fn search(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    let agent = match super::agent_of(&state, &headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let Ok(Query(params)) = params else {
        return bad("expected ?q=…&limit=…");
    };
    let q = params.q.as_deref().unwrap_or_default().trim();
    let chars = q.chars().count();
    if !(MIN_QUERY_CHARS..=MAX_QUERY_CHARS).contains(&chars) {
        return bad(&format!(
            "q must be {MIN_QUERY_CHARS} to {MAX_QUERY_CHARS} characters"
        ));
    }
    let limit = match params.limit.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(n) => n.clamp(1, MAX_LIMIT as i64) as usize,
            Err(_) => return bad("limit must be a number (1 to 20)"),
        },
    };
    let hits = state.calls.resolver().search(q, limit);
    let result = if hits.is_empty() { "empty" } else { "hit" };
    metrics::counter!(CUSTOMER_SEARCHES_TOTAL, "result" => result).increment(1);
    if crate::pii::logging() {
        tracing::debug!(agent = %agent.id, query = q, results = hits.len(), "Customer search.");
    } else {
        tracing::debug!(agent = %agent.id, results = hits.len(), "Customer search.");
    }
    let customers: Vec<Value> = hits.iter().map(customer_json).collect();
    axum::Json(json!({ "customers": customers })).into_response()
}

/// A customer as `customer` and `candidates` show it (`id`, `name`, and where known `company`,
/// `account`, `crm_url`, `tags`), plus `numbers` (`{"number", "kind"}`: E.164 for valid
/// numbers, else their digits), `e164` (the valid ones, absent if none) and `matched`
/// (`{"field", "kind"}`: what the query met).
pub fn customer_json(hit: &SearchHit) -> Value {
    let mut v = serde_json::to_value(&hit.customer).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        let numbers: Vec<Value> = hit
            .numbers
            .iter()
            .map(|(key, kind)| json!({ "number": key.as_str(), "kind": kind.as_str() }))
            .collect();
        m.insert("numbers".into(), Value::Array(numbers));
        let e164: Vec<Value> = hit
            .numbers
            .iter()
            .filter_map(|(key, _)| match key {
                Key::E164(e) => Some(Value::String(e.clone())),
                Key::Digits(_) => None,
            })
            .collect();
        if !e164.is_empty() {
            m.insert("e164".into(), Value::Array(e164));
        }
        m.insert(
            "matched".into(),
            json!({ "field": hit.field.as_str(), "kind": hit.kind.as_str() }),
        );
    }
    v
}
