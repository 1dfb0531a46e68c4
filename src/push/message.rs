//! The WebSocket protocol's messages (documented in `docs/protocol.md`, schema in
//! `schema/push-protocol.schema.json`).
//!
//! Server messages are serialised once per event and shared by every connection that receives
//! them; each connection's writer adds its own `seq`. Every server message has `type`, `seq`,
//! `call_id` (null when not about a call) and `at` (RFC 3339).

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use crate::calls::{Call, CallState, EndReason, LegState};
use crate::compose::{Part, Summary};
use crate::resolve::Resolution;

/// A server message without its `seq`: `{"type":KIND,"seq":N,` + `rest`.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The message type.
    pub kind: &'static str,
    /// The remaining JSON members after `seq`, closing brace included.
    pub rest: Arc<str>,
    /// When the call event behind it was taken by the hub (for the fan-out latency metric).
    pub created: tokio::time::Instant,
}

impl Outbound {
    /// Builds a message from a JSON object; `kind` becomes `type`.
    pub fn new(kind: &'static str, call_id: Option<&str>, body: Value) -> Outbound {
        let mut object = match body {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        object.insert(
            "call_id".into(),
            call_id.map_or(Value::Null, |c| Value::String(c.into())),
        );
        object.insert("at".into(), Value::String(now()));
        let text = Value::Object(object).to_string();
        // `{...}` → `...}`: the members go after `"seq":N,`.
        let rest: Arc<str> = Arc::from(text.strip_prefix('{').unwrap_or(&text));
        Outbound {
            kind,
            rest,
            created: tokio::time::Instant::now(),
        }
    }

    /// The frame text for sequence number `seq`.
    pub fn render(&self, seq: u64) -> String {
        let mut out = String::with_capacity(self.rest.len() + 40);
        out.push_str("{\"type\":\"");
        out.push_str(self.kind);
        out.push_str("\",\"seq\":");
        out.push_str(&seq.to_string());
        if self.rest.as_ref() != "}" {
            out.push(',');
        }
        out.push_str(&self.rest);
        out
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The caller as the pop shows it: `e164` beside the number as presented, when it is a valid
/// number.
pub fn caller_json(call: &Call) -> Value {
    let mut caller = json!({
        "number": call.caller_number,
        "display": call.caller_display,
        "withheld": call.withheld,
    });
    if let Some(e164) = &call.caller_e164 {
        caller["e164"] = Value::String(e164.clone());
    }
    caller
}

/// `customer` (with `approximate` and `reason` for a switchboard match), `candidates` or
/// `unknown: true`, merged into a pop object.
pub fn identity_members(resolution: &Resolution, into: &mut serde_json::Map<String, Value>) {
    match resolution {
        Resolution::Customer { customer } => {
            into.insert(
                "customer".into(),
                serde_json::to_value(customer).unwrap_or(Value::Null),
            );
        }
        Resolution::Approximate { customer, reason } => {
            into.insert(
                "customer".into(),
                serde_json::to_value(customer).unwrap_or(Value::Null),
            );
            into.insert("approximate".into(), Value::Bool(true));
            into.insert("reason".into(), Value::String(reason.clone()));
        }
        Resolution::Candidates { candidates } => {
            let list: Vec<Value> = candidates
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(&c.customer).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("reason".into(), Value::String(c.reason.clone()));
                    }
                    v
                })
                .collect();
            into.insert("candidates".into(), Value::Array(list));
        }
        Resolution::Withheld | Resolution::Unknown => {
            into.insert("unknown".into(), Value::Bool(true));
        }
    }
}

/// The state of one call as one extension sees it, for `ringing` and `snapshot` entries.
/// `resolution` is the call's, possibly re-ranked for the agent who gets it.
pub fn pop_json(
    call: &Call,
    resolution: &Resolution,
    extension: &str,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("extension".into(), Value::String(extension.into()));
    m.insert("caller".into(), caller_json(call));
    m.insert(
        "dialled".into(),
        call.dialled.clone().map_or(Value::Null, Value::String),
    );
    m.insert(
        "started".into(),
        Value::String(humantime::format_rfc3339_millis(call.started).to_string()),
    );
    identity_members(resolution, &mut m);
    let (state, by) = match (
        &call.state,
        call.legs
            .iter()
            .find(|l| l.extension == extension)
            .map(|l| l.state),
    ) {
        (_, Some(LegState::Ended(_))) => ("ended", None),
        (CallState::Answered { by }, _) => ("answered", by.clone()),
        (CallState::Ended { .. }, _) => ("ended", None),
        (CallState::Ringing, _) => ("ringing", None),
    };
    m.insert("state".into(), Value::String(state.into()));
    if let Some(by) = by {
        m.insert("by".into(), Value::String(by));
    }
    if state == "answered" {
        answered_members(call, &mut m);
    }
    m
}

/// When the call was answered and whether its hang-up will be seen (a SIP fork target's is
/// not: the page stops the card's timer at the answer).
fn answered_members(call: &Call, m: &mut serde_json::Map<String, Value>) {
    if let Some(at) = call.answered_at {
        m.insert(
            "answered_at".into(),
            Value::String(humantime::format_rfc3339_millis(at).to_string()),
        );
    }
    m.insert("hangup_seen".into(), Value::Bool(call.hangup_seen));
}

/// `ringing` for one extension, with the call's resolution as ranked for its agent.
pub fn ringing(call: &Call, resolution: &Resolution, extension: &str) -> Outbound {
    Outbound::new(
        "ringing",
        Some(&call.id),
        Value::Object(pop_json(call, resolution, extension)),
    )
}

/// `answered`, by an extension if known.
pub fn answered(call: &Call, by: Option<&str>) -> Outbound {
    let mut m = serde_json::Map::new();
    m.insert(
        "by".into(),
        by.map_or(Value::Null, |b| Value::String(b.into())),
    );
    answered_members(call, &mut m);
    Outbound::new("answered", Some(&call.id), Value::Object(m))
}

/// `ended` with its reason.
pub fn ended(call: &Call, reason: EndReason) -> Outbound {
    Outbound::new("ended", Some(&call.id), json!({ "reason": reason }))
}

/// `callback`: an entry opened, rang again, claimed, released or closed (its `state` says).
pub fn callback(cb: &crate::callbacks::Callback) -> Outbound {
    Outbound::new(
        "callback",
        None,
        json!({ "callback": serde_json::to_value(cb).unwrap_or(Value::Null) }),
    )
}

/// The body of a `section` message (also a snapshot entry's `sections` item).
pub fn section_body(customer_id: &str, part: &Part) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("customer_id".into(), Value::String(customer_id.into()));
    m.insert("name".into(), Value::String(part.name.to_string()));
    m.insert("title".into(), Value::String(part.title.to_string()));
    m.insert(
        "status".into(),
        serde_json::to_value(part.status).unwrap_or(Value::Null),
    );
    m.insert(
        "data".into(),
        part.data.as_deref().cloned().unwrap_or(Value::Null),
    );
    if let Some(error) = &part.error {
        m.insert("error".into(), Value::String(error.clone()));
    }
    if let Some(age) = part.age {
        m.insert("age".into(), json!(round3(age.as_secs_f64())));
    }
    // The source's display hints (labels, column order, formats, view), when it has any.
    if let Some(display) = &part.display
        && let Ok(hints) = serde_json::to_value(&**display)
    {
        m.insert("display".into(), hints);
    }
    m.insert(
        "elapsed_ms".into(),
        json!(round3(part.elapsed.as_secs_f64() * 1000.0)),
    );
    m
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `section`: one source's answer for the call's customer.
pub fn section(call_id: &str, customer_id: &str, part: &Part) -> Outbound {
    Outbound::new(
        "section",
        Some(call_id),
        Value::Object(section_body(customer_id, part)),
    )
}

/// `complete`: every source has answered (or the deadline passed); `missing` are those not
/// `ok` for this agent.
pub fn complete(
    call_id: &str,
    customer_id: &str,
    summary: &Summary,
    missing: &[std::sync::Arc<str>],
) -> Outbound {
    Outbound::new(
        "complete",
        Some(call_id),
        json!({
            "customer_id": customer_id,
            "sections": summary.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "missing": missing.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "elapsed_ms": round3(summary.elapsed.as_secs_f64() * 1000.0),
        }),
    )
}

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Authenticate (first frame), or replace the token later.
    Auth {
        /// The agent token.
        token: String,
    },
    /// Liveness probe; answered with `pong`.
    Ping,
    /// The agent closed the pop of a call.
    Dismiss {
        /// The call.
        call_id: String,
    },
    /// The agent chose one of the candidates.
    Pick {
        /// The call.
        call_id: String,
        /// The chosen customer.
        customer_id: String,
    },
}

/// The agent page's settings, delivered in `ready` as `page` (from `[page]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageSettings {
    /// "Open in CRM" link template with `{id}` and `{account}`, or `null` (the page then
    /// uses the customer's own `crm_url`).
    pub crm_url: Option<String>,
    /// The dispositions offered after a call.
    pub dispositions: Vec<String>,
    /// Whether the page plays a ring tone while in the background.
    pub ring_sound: bool,
    /// Whether callbacks can be dialled through the PBX (an `[[ami]]` or `[[esl]]` is set up):
    /// the page then offers "Ring me first".
    #[serde(default)]
    pub dial: bool,
}

impl Default for PageSettings {
    fn default() -> Self {
        PageSettings {
            crm_url: None,
            dispositions: super::section::default_dispositions(),
            ring_sound: true,
            dial: false,
        }
    }
}

/// The `ready` message's body.
#[derive(Debug, Serialize)]
pub struct Ready<'a> {
    /// Agent id.
    pub agent: &'a str,
    /// Agent display name.
    pub name: &'a str,
    /// Extensions routed to this connection.
    pub extensions: &'a [String],
    /// Milliseconds between server pings.
    pub heartbeat_ms: u64,
    /// The page's settings.
    pub page: &'a PageSettings,
    /// In a cluster, the live nodes' page addresses (`[cluster] page_url`), this node's first:
    /// where the page reconnects when this node goes away.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_type_and_seq_first() {
        let m = Outbound::new("pong", None, json!({}));
        let text = m.render(7);
        assert!(text.starts_with("{\"type\":\"pong\",\"seq\":7,"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["call_id"], Value::Null);
        assert!(v["at"].as_str().is_some_and(|a| a.ends_with('Z')));
    }

    #[test]
    fn client_messages() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"auth","token":"t"}"#).expect("auth");
        assert_eq!(m, ClientMessage::Auth { token: "t".into() });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"auth"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        let p: ClientMessage =
            serde_json::from_str(r#"{"type":"pick","call_id":"c","customer_id":"x"}"#)
                .expect("pick");
        assert_eq!(
            p,
            ClientMessage::Pick {
                call_id: "c".into(),
                customer_id: "x".into()
            }
        );
    }
}
