//! `POST /api/events`: call events pushed by a PBX's own dialplan, a cloud PBX or any script,
//! signed with a shared secret per PBX (docs/pbx/cloud-webhook.md).
//!
//! ```text
//! X-Screenpop-Timestamp: 1731000104                      (Unix seconds)
//! X-Screenpop-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
//! {"event":"ringing","id":"evt-1","call_id":"c-42","extension":"1001",
//!  "caller":{"number":"+14155550100","display":"Acme","withheld":false},"pbx":"3cx"}
//! ```
//!
//! The MAC covers the timestamp, and a timestamp more than `max_skew` from our clock is refused,
//! so a captured request cannot be replayed later; within the window a replay is recognised by
//! its event `id` (else by its signature) and changes nothing, so a PBX may retry safely. The
//! comparison is constant-time (`hmac`'s `verify_slice`). A request that fails authentication
//! gets 401 and has no effect; nothing from it is logged but the fact, at most once a minute
//! (with the count held back). An address with too many failures gets 429 for a while, right
//! or wrong ([`crate::throttle`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::calls::{CallEvent, EndReason, Intake};
use crate::dedup::Dedup;
use crate::telephony::cti::{self, Emitter, Secret};
use crate::throttle::{AuthThrottle, LogSampler, Peer};

/// The `input` label of the CTI metrics.
pub const INPUT: &str = "webhook";
/// Largest body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-screenpop-signature";
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-screenpop-timestamp";

/// `[webhook]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Requests whose timestamp is further than this from our clock are refused (replay bound).
    #[serde(default = "default_max_skew", with = "crate::serde_ext::duration")]
    pub max_skew: Duration,
    /// Most event ids remembered to recognise retries (least recently seen forgotten first).
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
    /// The PBXs allowed to post, each with its own secret. None: the endpoint is off.
    #[serde(default)]
    pub pbx: Vec<toml::Spanned<WebhookPbx>>,
}

/// `[[webhook.pbx]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPbx {
    /// The PBX's name: the call-key prefix and the body's optional `pbx`.
    pub name: String,
    /// The shared HMAC secret. Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The environment variable holding the secret, read at start-up.
    #[serde(default)]
    pub secret_env: Option<String>,
}

fn default_max_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_replay_capacity() -> usize {
    100_000
}

/// The JSON body.
#[derive(Debug, Deserialize)]
struct Body {
    event: String,
    call_id: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    pbx: Option<String>,
    #[serde(default)]
    extension: Option<String>,
    #[serde(default)]
    caller: Option<CallerBody>,
    #[serde(default)]
    dialled: Option<String>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct CallerBody {
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    display: Option<String>,
    #[serde(default)]
    withheld: bool,
}

/// The running endpoint.
pub struct Webhook {
    /// The PBXs and their secrets; replaced on a reload.
    pbxs: std::sync::RwLock<Vec<(String, Secret)>>,
    max_skew: Duration,
    /// Event ids (else signatures) seen within twice `max_skew`: a timestamp accepted now
    /// stays acceptable at most that long.
    replay: Dedup<String>,
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    emitter: Emitter,
    throttle: AuthThrottle,
    /// Refusals are logged at most once a minute (anyone can cause them).
    refusals: LogSampler,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field(
                "pbxs",
                &self.pbxs.read().unwrap_or_else(|p| p.into_inner()).len(),
            )
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 of `"<timestamp>.<body>"`, hex: what a sender puts after `sha256=`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new(); // unreachable: HMAC takes keys of any length
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn parse_reason(reason: Option<&str>) -> Option<EndReason> {
    Some(match reason.unwrap_or("cancelled") {
        "cancelled" => EndReason::Cancelled,
        "completed" => EndReason::Completed,
        "answered_elsewhere" => EndReason::AnsweredElsewhere,
        "timeout" => EndReason::Timeout,
        "rejected" => EndReason::Rejected,
        _ => return None,
    })
}

fn status(code: StatusCode, status: &str) -> Response {
    (code, axum::Json(json!({ "status": status }))).into_response()
}

/// The `channel` label of the webhook in the throttle's metrics.
pub const CHANNEL: &str = "webhook";

fn throttled() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, "60")],
        axum::Json(json!({ "status": "too many failed requests from this address" })),
    )
        .into_response()
}

impl Webhook {
    /// An endpoint accepting the given PBXs (secrets already resolved).
    pub fn new(
        pbxs: Vec<(String, Secret)>,
        max_skew: Duration,
        capacity: usize,
        known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        events: mpsc::Sender<CallEvent>,
        throttle: AuthThrottle,
    ) -> Arc<Self> {
        Arc::new(Webhook {
            pbxs: std::sync::RwLock::new(pbxs),
            max_skew,
            replay: Dedup::new(
                capacity,
                max_skew.saturating_mul(2).max(Duration::from_secs(1)),
            ),
            known,
            emitter: Emitter::new(events),
            throttle,
            refusals: LogSampler::new(Duration::from_secs(60)),
        })
    }

    /// The PBX whose secret signed this, if any.
    fn authenticate(&self, timestamp: &str, body: &[u8], signature: &[u8]) -> Option<String> {
        let pbxs = self.pbxs.read().unwrap_or_else(|p| p.into_inner());
        pbxs.iter().find_map(|(name, secret)| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).ok()?;
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(signature).ok().map(|()| name.clone())
        })
    }

    /// Replaces the PBXs and their secrets (a reload).
    pub fn set_pbxs(&self, pbxs: Vec<(String, Secret)>) {
        *self.pbxs.write().unwrap_or_else(|p| p.into_inner()) = pbxs;
    }

    /// Refuses a request that failed authentication: 401, counted against its address, logged
    /// at most once a minute.
    fn refuse(&self, peer: Peer, why: &'static str) -> Response {
        metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "webhook_unauthenticated")
            .increment(1);
        self.throttle.failed(peer.0, CHANNEL);
        if let Some(held_back) = self.refusals.sample() {
            tracing::warn!(why, held_back, "Webhook request refused.");
        }
        status(StatusCode::UNAUTHORIZED, "unauthenticated")
    }

    fn handle(&self, headers: &HeaderMap, peer: Peer, body: &[u8]) -> Response {
        if !self.throttle.allows(peer.0, CHANNEL) {
            return throttled();
        }
        let refuse = |why| self.refuse(peer, why);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let Some(timestamp) = header(TIMESTAMP_HEADER) else {
            return refuse("no timestamp");
        };
        let Some(signature) = header(SIGNATURE_HEADER)
            .and_then(|s| s.strip_prefix("sha256="))
            .and_then(|s| hex::decode(s).ok())
        else {
            return refuse("no signature");
        };
        let Some(pbx) = self.authenticate(timestamp, body, &signature) else {
            return refuse("bad signature");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let Ok(sent) = timestamp.parse::<u64>() else {
            return refuse("bad timestamp");
        };
        if sent.abs_diff(now) > self.max_skew.as_secs() {
            return refuse("timestamp outside the allowed skew");
        }
        let Ok(event) = serde_json::from_slice::<Body>(body) else {
            cti::count_garbage(INPUT);
            return status(StatusCode::BAD_REQUEST, "unreadable body");
        };
        if event.pbx.as_deref().is_some_and(|p| p != pbx) {
            return refuse("pbx does not match the signing secret");
        }
        if event.call_id.is_empty() || event.call_id.len() > 256 {
            cti::count_garbage(INPUT);
            return status(
                StatusCode::BAD_REQUEST,
                "call_id must be 1 to 256 characters",
            );
        }
        let replay_key = match &event.id {
            Some(id) => format!("{pbx}\0id\0{id}"),
            None => format!("{pbx}\0sig\0{}", hex::encode(&signature)),
        };
        let key = format!("{pbx}:{}", event.call_id);
        let (kind, call_event) = match event.event.as_str() {
            "ringing" => {
                let Some(extension) = event.extension.filter(|e| !e.is_empty()) else {
                    return status(StatusCode::BAD_REQUEST, "ringing needs an extension");
                };
                if !(self.known)(&extension) {
                    return status(StatusCode::ACCEPTED, "ignored");
                }
                let given = event.caller.unwrap_or_default();
                let mut caller = cti::caller(given.number.as_deref(), given.display.as_deref());
                caller.withheld |= given.withheld;
                (
                    "ringing",
                    CallEvent::Ringing {
                        key,
                        intake: Intake::WEBHOOK,
                        extension,
                        caller,
                        dialled: event.dialled,
                    },
                )
            }
            "answered" => (
                "answered",
                CallEvent::Answered {
                    key,
                    intake: Intake::WEBHOOK,
                    by: event.by,
                },
            ),
            "ended" => {
                let Some(reason) = parse_reason(event.reason.as_deref()) else {
                    return status(StatusCode::BAD_REQUEST, "unknown reason");
                };
                (
                    "ended",
                    CallEvent::Ended {
                        key,
                        intake: Intake::WEBHOOK,
                        extension: event.extension,
                        reason,
                    },
                )
            }
            _ => return status(StatusCode::BAD_REQUEST, "unknown event"),
        };
        if !self.replay.first_seen(replay_key) {
            cti::count_event(INPUT, "duplicate");
            return status(StatusCode::OK, "duplicate");
        }
        cti::count_event(INPUT, kind);
        if !self.emitter.emit([call_event]) {
            return status(StatusCode::SERVICE_UNAVAILABLE, "busy");
        }
        status(StatusCode::ACCEPTED, "accepted")
    }
}

async fn receive(
    State(webhook): State<Arc<Webhook>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Off without PBXs (as if not mounted); a reload that adds one turns it on.
    if webhook
        .pbxs
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    webhook.handle(&headers, peer, &body)
}

/// `POST /api/events`, to merge into the HTTP router.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/api/events", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(webhook)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> (Arc<Webhook>, mpsc::Receiver<CallEvent>) {
        let (tx, rx) = mpsc::channel(8);
        let wh = Webhook::new(
            vec![
                ("3cx".into(), Secret::new("k1")),
                ("fs".into(), Secret::new("k2")),
            ],
            Duration::from_secs(300),
            2,
            Arc::new(|e: &str| e == "1001"),
            tx,
            AuthThrottle::default(),
        );
        (wh, rx)
    }

    fn signed(secret: &str, ts: u64, body: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let ts = ts.to_string();
        let sig = format!("sha256={}", sign(secret, &ts, body.as_bytes()));
        h.insert(TIMESTAMP_HEADER, ts.parse().expect("header"));
        h.insert(SIGNATURE_HEADER, sig.parse().expect("header"));
        h
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    const RING: &str = r#"{"event":"ringing","id":"e1","call_id":"c1","extension":"1001","caller":{"number":"+14155550100"}}"#;

    #[test]
    fn signed_events_are_accepted_once() {
        let (wh, mut rx) = webhook();
        let h = signed("k2", now(), RING);
        assert_eq!(
            wh.handle(&h, Peer(None), RING.as_bytes()).status(),
            StatusCode::ACCEPTED
        );
        assert!(matches!(rx.try_recv(), Ok(CallEvent::Ringing { key, .. }) if key == "fs:c1"));
        assert_eq!(
            wh.handle(&h, Peer(None), RING.as_bytes()).status(),
            StatusCode::OK,
            "replay"
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn bad_or_stale_signatures_are_refused() {
        let (wh, mut rx) = webhook();
        for h in [
            signed("wrong", now(), RING),
            signed("k1", now() - 3600, RING),
            HeaderMap::new(),
        ] {
            assert_eq!(
                wh.handle(&h, Peer(None), RING.as_bytes()).status(),
                StatusCode::UNAUTHORIZED
            );
        }
        let mut tampered = signed("k1", now(), RING);
        tampered.insert(SIGNATURE_HEADER, "sha256=zz".parse().expect("header"));
        assert_eq!(
            wh.handle(&tampered, Peer(None), RING.as_bytes()).status(),
            StatusCode::UNAUTHORIZED
        );
        let other = RING.replace("1001", "1002");
        let h = signed("k1", now(), RING);
        assert_eq!(
            wh.handle(&h, Peer(None), other.as_bytes()).status(),
            StatusCode::UNAUTHORIZED,
            "body changed"
        );
        let claims = r#"{"event":"answered","call_id":"c1","pbx":"fs"}"#;
        let h = signed("k1", now(), claims);
        assert_eq!(
            wh.handle(&h, Peer(None), claims.as_bytes()).status(),
            StatusCode::UNAUTHORIZED,
            "pbx mismatch"
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn replay_memory_is_bounded() {
        let (wh, _rx) = webhook();
        assert!(wh.replay.first_seen("a".into()));
        assert!(wh.replay.first_seen("b".into()));
        assert!(wh.replay.first_seen("c".into()));
        assert!(wh.replay.remembered() <= 2);
    }

    #[test]
    fn unknown_extensions_and_bad_bodies() {
        let (wh, mut rx) = webhook();
        let body = RING.replace("1001", "9999");
        let h = signed("k1", now(), &body);
        assert_eq!(
            wh.handle(&h, Peer(None), body.as_bytes()).status(),
            StatusCode::ACCEPTED
        );
        assert!(rx.try_recv().is_err(), "ignored");
        for body in [
            "{",
            r#"{"event":"ended","call_id":"c","reason":"why"}"#,
            r#"{"event":"x","call_id":"c"}"#,
        ] {
            let h = signed("k1", now(), body);
            assert_eq!(
                wh.handle(&h, Peer(None), body.as_bytes()).status(),
                StatusCode::BAD_REQUEST,
                "{body}"
            );
        }
    }
}
