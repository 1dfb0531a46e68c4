//! Callbacks over HTTP, for the agent page: `GET /api/callbacks` (the open and claimed
//! entries that rang at the agent's extensions, newest first) and
//! `POST /api/callbacks/{id}/claim`, `/release`, `/done` (optional `note` and `disposition`,
//! also written to the call log on the last missed call), and `/dial` (optional
//! `{"extension": …}`, one of the agent's own): the PBX rings the agent's extension, then the
//! caller: 202 once the PBX accepted it, 502 when it refused (its message), 503 without a
//! connected PBX, 504 without an answer, 429 (`Retry-After`) within `[callbacks]
//! dial_interval` of the agent's last call, 403 for an extension not the agent's.
//!
//! Every request authenticates the agent (`Authorization: Bearer TOKEN`); an entry that did
//! not ring at one of the agent's extensions is 404 whether it exists or not. A claim held by
//! another agent (on this node or another) is 409 with who holds it; a database that cannot
//! store the action is 503 and nothing changed.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::callbacks::{ActError, Action, DialRefusal};
use crate::calls::dial::DialError;
use crate::throttle::Peer;

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /api/callbacks`.
pub async fn list(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let agent = match super::agent_of(&state, &headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    axum::Json(json!({ "callbacks": state.callbacks.for_agent(&agent) })).into_response()
}

/// What `dial` takes (optional): which of the agent's extensions rings first.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    #[serde(default)]
    extension: Option<String>,
}

/// `POST /api/callbacks/{id}/dial`.
async fn dial(state: &AppState, agent: &crate::agents::Agent, id: &str, body: &[u8]) -> Response {
    let body: DialBody = if body.iter().all(u8::is_ascii_whitespace) {
        DialBody::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"extension\": …}}: {e}"),
                );
            }
        }
    };
    let dialled = state
        .callbacks
        .dial(agent, id, body.extension.as_deref(), &state.dialers)
        .await;
    let refusal = match dialled {
        Ok(dialled) => {
            let cb = state.callbacks.get(agent, id);
            return (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "dialled": dialled, "callback": cb })),
            )
                .into_response();
        }
        Err(refusal) => refusal,
    };
    let message = refusal.to_string();
    match refusal {
        DialRefusal::NotYours => error(StatusCode::NOT_FOUND, &message),
        DialRefusal::Claimed(_) => error(StatusCode::CONFLICT, &message),
        DialRefusal::NotYourExtension => error(StatusCode::FORBIDDEN, &message),
        DialRefusal::NoNumber => error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        DialRefusal::TooSoon(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, secs.max(1).to_string())],
                axum::Json(json!({ "error": message })),
            )
                .into_response()
        }
        DialRefusal::Pbx(DialError::Refused(_)) => error(StatusCode::BAD_GATEWAY, &message),
        DialRefusal::Pbx(DialError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, &message),
        DialRefusal::Pbx(DialError::NotConnected(_) | DialError::Busy) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
    }
}

/// `POST /api/callbacks/{id}/{action}`.
pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let agent = match super::agent_of(&state, &headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let action = match action.as_str() {
        "dial" => return dial(&state, &agent, &id, &body).await,
        "claim" => Action::Claim,
        "release" => Action::Release,
        "done" => match super::journal::note_fields(&state, &body, true) {
            Ok((note, disposition)) => Action::Done { note, disposition },
            Err(response) => return *response,
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "no such action: claim, release, done or dial",
            );
        }
    };
    // The note goes with the last missed call in the call log (durable first), as a note on
    // that call would.
    if let Action::Done { note, disposition } = &action
        && (note.is_some() || disposition.is_some())
    {
        let Some(cb) = state.callbacks.get(&agent, &id) else {
            return error(StatusCode::NOT_FOUND, &ActError::NotYours.to_string());
        };
        if let Some(call_id) = cb.call_ids.last() {
            if let Some(log) = &state.call_log
                && let Err(why) = log
                    .note(call_id, &agent.id, note.as_deref(), disposition.as_deref())
                    .durable()
                    .await
            {
                tracing::warn!(error = %why, "Callback note not saved.");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &ActError::Unavailable.to_string(),
                );
            }
            if let Some(entry) =
                state
                    .journal
                    .note(&agent, call_id, note.clone(), disposition.clone())
            {
                state.hub.noted(&entry);
            }
        }
    }
    match state.callbacks.act(&agent, &id, action).await {
        Ok(cb) => axum::Json(json!({ "callback": cb })).into_response(),
        Err(e @ ActError::NotYours) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ ActError::Conflict(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ ActError::Unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
