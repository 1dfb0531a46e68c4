//! The call journal over HTTP, for the agent page: `GET /api/calls?mine=1` (the agent's recent
//! calls, newest first) and `POST /api/calls/{call_id}/notes` (the agent's note and
//! disposition on one of them).
//!
//! Both authenticate the agent (`Authorization: Bearer TOKEN`) and reach only calls that rang
//! at one of the agent's extensions: any other call is 404, whether it exists or not. Reads
//! come from the in-memory journal (`calls::journal`), also with a database; notes are also
//! queued for `call_log` when there is one. Sizes are bounded: the body by [`MAX_BODY`], the
//! note by [`MAX_NOTE_CHARS`], the disposition by the configured list.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::calls::journal::MAX_NOTE_CHARS;
use crate::throttle::Peer;

/// Largest note request accepted, bytes (a 4,000-character note in any script fits).
pub const MAX_BODY: usize = 20 * 1024;
/// Most calls `GET /api/calls?mine=1` returns.
pub const MAX_RECENT: usize = 200;
/// How many it returns unless `limit` says otherwise.
pub const DEFAULT_RECENT: usize = 50;

/// What `POST /api/calls/{call_id}/notes` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    /// Free text; empty or absent clears it.
    #[serde(default)]
    note: Option<String>,
    /// One of `[page] dispositions`; empty or absent clears it.
    #[serde(default)]
    disposition: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /api/calls?mine=1[&limit=N]`.
pub fn recent(state: &AppState, headers: &HeaderMap, peer: Peer, limit: Option<usize>) -> Response {
    let agent = match super::agent_of(state, headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let limit = limit.unwrap_or(DEFAULT_RECENT).clamp(1, MAX_RECENT);
    let calls = state.journal.recent(&agent, limit);
    axum::Json(json!({ "agent": &*agent, "calls": calls })).into_response()
}

/// `POST /api/calls/{call_id}/notes`.
pub async fn note(
    State(state): State<AppState>,
    Path(call_id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let agent = match super::agent_of(&state, &headers, peer) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    if body.len() > MAX_BODY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the note is too large");
    }
    let (note, disposition) = match note_fields(&state, &body, false) {
        Ok(fields) => fields,
        Err(response) => return *response,
    };
    if !state.journal.rang_at(&agent, &call_id) {
        return error(StatusCode::NOT_FOUND, crate::push::hub::NOT_YOURS);
    }
    // Durable first: 200 means the note is on disk and reaches `call_log` even across a
    // database outage, a crash or a restart.
    if let Some(log) = &state.call_log
        && let Err(why) = log
            .note(&call_id, &agent.id, note.as_deref(), disposition.as_deref())
            .durable()
            .await
    {
        tracing::warn!(error = %why, "Note not saved.");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the note could not be saved; try again",
        );
    }
    let Some(entry) = state
        .journal
        .note(&agent, &call_id, note.clone(), disposition.clone())
    else {
        return error(StatusCode::NOT_FOUND, crate::push::hub::NOT_YOURS);
    };
    state.hub.noted(&entry);
    metrics::counter!(crate::web::NOTES_TOTAL).increment(1);
    axum::Json(entry).into_response()
}

/// The note and disposition of a body `{"note": …, "disposition": …}` (both optional; an empty
/// body too when `empty_ok`), trimmed, empty ones as none: 400 for anything else, 413 for a
/// note over [`MAX_NOTE_CHARS`], 422 for a disposition not among `[page] dispositions`. Shared
/// by notes on calls and by callbacks marked done.
pub(crate) fn note_fields(
    state: &AppState,
    body: &[u8],
    empty_ok: bool,
) -> Result<(Option<String>, Option<String>), Box<Response>> {
    let body: NoteBody = if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        NoteBody {
            note: None,
            disposition: None,
        }
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"note\": …, \"disposition\": …}}: {e}"),
            ))
        })?
    };
    let note = body
        .note
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a note is at most {MAX_NOTE_CHARS} characters"),
        )));
    }
    let disposition = body
        .disposition
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if let Some(d) = &disposition
        && !state.push.session.page.borrow().dispositions.contains(d)
    {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown disposition: use one of the configured [page] dispositions",
        )));
    }
    Ok((note, disposition))
}

/// The notes route's body limit: larger bodies are refused with 413 before they are read.
pub fn body_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(MAX_BODY)
}
