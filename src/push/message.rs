//! The WebSocket protocol's messages (documented in `docs/protocol.md`, schema in
//! `schema/push-protocol.schema.json`).
//!
//! Server messages are serialised once per event and shared by every connection that receives
//! them; each connection's writer adds its own `seq`. Every server message has `type`, `seq`,
//! `call_id` (null when not about a call) and `at` (RFC 3339).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use crate::calls::{Call, CallState, EndReason, LegState};
use crate::compose::{Part, Summary};
use crate::resolve::Resolution;

/// A server message without its `seq`: `{"type":KIND,"seq":N,` + the rest of its text.
///
/// One pointer: a connection's queue holds messages by the hundred (tokio allocates a queue's
/// slots 32 at a time, eagerly), and a message goes to every connection it concerns by a
/// reference count.
#[derive(Debug, Clone)]
pub struct Outbound(Arc<Frame>);

#[derive(Debug)]
struct Frame {
    kind: &'static str,
    /// The message's other members as one JSON object, `call_id` and `at` last; its opening
    /// brace is replaced by the `type` and `seq` members when rendered.
    text: String,
    created: tokio::time::Instant,
}

/// A message on the wire: the body's members, then `call_id` and `at`. Serialised straight to
/// bytes: no `serde_json::Value` tree is built for the frames a call sends.
#[derive(Serialize)]
struct Wire<'a, T: Serialize> {
    #[serde(flatten)]
    body: &'a T,
    call_id: Option<&'a str>,
    #[serde(serialize_with = "rfc3339_millis")]
    at: SystemTime,
}

/// A time as RFC 3339 with milliseconds, written without an intermediate `String`.
fn rfc3339_millis<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// Room for a typical frame (a `ringing` with one customer is ~500 bytes), so that encoding
/// one seldom reallocates.
const FRAME_CAPACITY: usize = 768;

impl Outbound {
    /// Builds a message from any value that serialises as a JSON object (its members become
    /// the message's); `kind` becomes `type`.
    pub fn encode<T: Serialize>(kind: &'static str, call_id: Option<&str>, body: &T) -> Outbound {
        let wire = Wire {
            body,
            call_id,
            at: SystemTime::now(),
        };
        let mut bytes = Vec::with_capacity(FRAME_CAPACITY);
        let text = match serde_json::to_writer(&mut bytes, &wire)
            .map_err(|e| e.to_string())
            .and_then(|()| String::from_utf8(bytes).map_err(|e| e.to_string()))
        {
            Ok(text) if text.starts_with('{') => text,
            // Our bodies are structs and maps: unreachable but for a bug, which must not take
            // a frame's writer down with it.
            Ok(_) | Err(_) => {
                tracing::error!(kind, "A server message did not serialise as an object.");
                String::from("{}")
            }
        };
        Outbound(Arc::new(Frame {
            kind,
            text,
            created: tokio::time::Instant::now(),
        }))
    }

    /// The message type.
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// When the call event behind it was taken by the hub (for the fan-out latency metric).
    pub fn created(&self) -> tokio::time::Instant {
        self.0.created
    }

    /// Builds a message from a JSON object; `kind` becomes `type`.
    pub fn new(kind: &'static str, call_id: Option<&str>, body: Value) -> Outbound {
        match body {
            Value::Object(map) => Outbound::encode(kind, call_id, &map),
            _ => Outbound::encode(kind, call_id, &serde_json::Map::new()),
        }
    }

    /// The frame text for sequence number `seq`: the only allocation a connection makes per
    /// message.
    pub fn render(&self, seq: u64) -> String {
        // `{...}` → `...}`: the members go after `"seq":N,`.
        let rest = self.0.text.get(1..).unwrap_or("}");
        let mut out = String::with_capacity(rest.len() + self.0.kind.len() + 32);
        out.push_str("{\"type\":\"");
        out.push_str(self.0.kind);
        out.push_str("\",\"seq\":");
        let _ = write!(out, "{seq}");
        if rest != "}" {
            out.push(',');
        }
        out.push_str(rest);
        out
    }
}

/// The caller as the pop shows it: `e164` beside the number as presented, when it is a valid
/// number.
#[derive(Serialize)]
struct CallerMembers<'a> {
    number: &'a Option<String>,
    display: &'a Option<String>,
    withheld: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    e164: &'a Option<String>,
}

impl<'a> CallerMembers<'a> {
    fn of(call: &'a Call) -> Self {
        CallerMembers {
            number: &call.caller_number,
            display: &call.caller_display,
            withheld: call.withheld,
            e164: &call.caller_e164,
        }
    }
}

/// The caller as the pop shows it, as a JSON value.
pub fn caller_json(call: &Call) -> Value {
    serde_json::to_value(CallerMembers::of(call)).unwrap_or(Value::Null)
}

/// `customer` (with `approximate` and `reason` for a switchboard match), `candidates` or
/// `unknown: true`: the members a pop object gets from its resolution.
struct IdentityMembers<'a>(&'a Resolution);

/// One of several candidates: the customer's members and why it is offered.
#[derive(Serialize)]
struct CandidateMembers<'a> {
    #[serde(flatten)]
    customer: &'a crate::customer::Customer,
    reason: &'a str,
}

impl Serialize for IdentityMembers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        match self.0 {
            Resolution::Customer { customer } => map.serialize_entry("customer", customer)?,
            Resolution::Approximate { customer, reason } => {
                map.serialize_entry("customer", customer)?;
                map.serialize_entry("approximate", &true)?;
                map.serialize_entry("reason", reason)?;
            }
            Resolution::Candidates { candidates } => {
                map.serialize_key("candidates")?;
                map.serialize_value(&Candidates(candidates))?;
            }
            Resolution::Withheld | Resolution::Unknown => {
                map.serialize_entry("unknown", &true)?;
            }
        }
        map.end()
    }
}

struct Candidates<'a>(&'a [crate::resolve::Candidate]);

impl Serialize for Candidates<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| CandidateMembers {
            customer: &c.customer,
            reason: &c.reason,
        }))
    }
}

/// `customer` (with `approximate` and `reason` for a switchboard match), `candidates` or
/// `unknown: true`, merged into a pop object.
pub fn identity_members(resolution: &Resolution, into: &mut serde_json::Map<String, Value>) {
    if let Ok(Value::Object(members)) = serde_json::to_value(IdentityMembers(resolution)) {
        into.extend(members);
    }
}

/// When the call was answered and whether its hang-up will be seen (a SIP fork target's is
/// not: the page stops the card's timer at the answer).
#[derive(Serialize)]
struct AnsweredMembers {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_millis_opt"
    )]
    answered_at: Option<SystemTime>,
    hangup_seen: bool,
}

fn rfc3339_millis_opt<S: serde::Serializer>(
    at: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339_millis(at, s),
        None => s.serialize_none(),
    }
}

impl AnsweredMembers {
    fn of(call: &Call) -> Self {
        AnsweredMembers {
            answered_at: call.answered_at,
            hangup_seen: call.hangup_seen,
        }
    }
}

/// The state of one call as one extension sees it: a `ringing` message's body and a
/// `snapshot` entry's members.
#[derive(Serialize)]
struct Pop<'a> {
    extension: &'a str,
    caller: CallerMembers<'a>,
    dialled: &'a Option<String>,
    #[serde(serialize_with = "rfc3339_millis")]
    started: SystemTime,
    #[serde(flatten)]
    identity: IdentityMembers<'a>,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    /// Flattened: `None` adds no member.
    #[serde(flatten)]
    answered: Option<AnsweredMembers>,
}

impl<'a> Pop<'a> {
    /// `resolution` is the call's, possibly re-ranked for the agent who gets it.
    fn of(call: &'a Call, resolution: &'a Resolution, extension: &'a str) -> Self {
        let (state, by) = match (
            &call.state,
            call.legs
                .iter()
                .find(|l| l.extension == extension)
                .map(|l| l.state),
        ) {
            (_, Some(LegState::Ended(_))) => ("ended", None),
            (CallState::Answered { by }, _) => ("answered", by.as_deref()),
            (CallState::Ended { .. }, _) => ("ended", None),
            (CallState::Ringing, _) => ("ringing", None),
        };
        Pop {
            extension,
            caller: CallerMembers::of(call),
            dialled: &call.dialled,
            started: call.started,
            identity: IdentityMembers(resolution),
            state,
            by,
            answered: (state == "answered").then(|| AnsweredMembers::of(call)),
        }
    }
}

/// The state of one call as one extension sees it, for `snapshot` entries (the same members
/// as `ringing`). `resolution` is the call's, possibly re-ranked for the agent who gets it.
pub fn pop_json(
    call: &Call,
    resolution: &Resolution,
    extension: &str,
) -> serde_json::Map<String, Value> {
    match serde_json::to_value(Pop::of(call, resolution, extension)) {
        Ok(Value::Object(members)) => members,
        _ => serde_json::Map::new(),
    }
}

/// `ringing` for one extension, with the call's resolution as ranked for its agent.
pub fn ringing(call: &Call, resolution: &Resolution, extension: &str) -> Outbound {
    Outbound::encode(
        "ringing",
        Some(&call.id),
        &Pop::of(call, resolution, extension),
    )
}

/// `answered`, by an extension if known.
pub fn answered(call: &Call, by: Option<&str>) -> Outbound {
    #[derive(Serialize)]
    struct Answered<'a> {
        by: Option<&'a str>,
        #[serde(flatten)]
        answered: AnsweredMembers,
    }
    Outbound::encode(
        "answered",
        Some(&call.id),
        &Answered {
            by,
            answered: AnsweredMembers::of(call),
        },
    )
}

/// `ended` with its reason.
pub fn ended(call: &Call, reason: EndReason) -> Outbound {
    #[derive(Serialize)]
    struct Ended {
        reason: EndReason,
    }
    Outbound::encode("ended", Some(&call.id), &Ended { reason })
}

/// The candidates' last contacts as `last_contacts` and snapshot entries carry them: one item
/// per candidate, with `last_contact` and `outcome` when it was ever in contact.
#[derive(Serialize)]
pub struct LastContactsMembers<'a> {
    contacts: Vec<LastContactItem<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
}

#[derive(Serialize)]
struct LastContactItem<'a> {
    customer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_contact: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
}

impl<'a> LastContactsMembers<'a> {
    /// The members for `contacts`.
    pub fn of(contacts: &'a crate::calls::history::LastContacts) -> Self {
        LastContactsMembers {
            contacts: contacts
                .contacts
                .iter()
                .map(|(customer_id, c)| LastContactItem {
                    customer_id,
                    last_contact: c.as_ref().map(|c| c.at.as_str()),
                    outcome: c.as_ref().map(|c| c.outcome),
                })
                .collect(),
            partial: contacts.partial,
        }
    }
}

/// `last_contacts`: when each candidate of a call was last in contact (from the history).
pub fn last_contacts(call_id: &str, contacts: &crate::calls::history::LastContacts) -> Outbound {
    Outbound::encode(
        "last_contacts",
        Some(call_id),
        &LastContactsMembers::of(contacts),
    )
}

/// `callback`: an entry opened, rang again, claimed, released or closed (its `state` says).
pub fn callback(cb: &crate::callbacks::Callback) -> Outbound {
    #[derive(Serialize)]
    struct CallbackMessage<'a> {
        callback: &'a crate::callbacks::Callback,
    }
    Outbound::encode("callback", None, &CallbackMessage { callback: cb })
}

/// One source's answer for a customer: a `section` message's body and a snapshot entry's
/// `sections` item.
#[derive(Serialize)]
struct SectionMembers<'a> {
    customer_id: &'a str,
    name: &'a str,
    title: &'a str,
    status: crate::compose::Status,
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<f64>,
    /// The source's display hints (labels, column order, formats, view), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a crate::compose::display::DisplayHints>,
    elapsed_ms: f64,
}

impl<'a> SectionMembers<'a> {
    fn of(customer_id: &'a str, part: &'a Part) -> Self {
        SectionMembers {
            customer_id,
            name: &part.name,
            title: &part.title,
            status: part.status,
            data: part.data.as_deref(),
            error: part.error.as_deref(),
            age: part.age.map(|age| round3(age.as_secs_f64())),
            display: part.display.as_deref(),
            elapsed_ms: round3(part.elapsed.as_secs_f64() * 1000.0),
        }
    }
}

/// The body of a `section` message (also a snapshot entry's `sections` item).
pub fn section_body(customer_id: &str, part: &Part) -> serde_json::Map<String, Value> {
    match serde_json::to_value(SectionMembers::of(customer_id, part)) {
        Ok(Value::Object(members)) => members,
        _ => serde_json::Map::new(),
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `section`: one source's answer for the call's customer.
pub fn section(call_id: &str, customer_id: &str, part: &Part) -> Outbound {
    Outbound::encode(
        "section",
        Some(call_id),
        &SectionMembers::of(customer_id, part),
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
    #[derive(Serialize)]
    struct Complete<'a> {
        customer_id: &'a str,
        sections: &'a [Arc<str>],
        missing: &'a [Arc<str>],
        elapsed_ms: f64,
    }
    Outbound::encode(
        "complete",
        Some(call_id),
        &Complete {
            customer_id,
            sections: &summary.sources,
            missing,
            elapsed_ms: round3(summary.elapsed.as_secs_f64() * 1000.0),
        },
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
