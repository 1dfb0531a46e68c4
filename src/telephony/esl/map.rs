//! FreeSWITCH events → call events [PROTOCOLS.md §4 "Fields", "Events", "Resync";
//! mod_event_socket docs; FreeSWITCH `switch_core_sqldb.c` for `show calls`].
//!
//! The caller's channel is the a-leg (`Call-Direction: inbound`); each extension rung is an
//! outbound b-leg, tied to its a-leg by `Other-Leg-Unique-ID` (else `Channel-Call-UUID`). The call
//! key is the a-leg's UUID.
//!
//! | ESL (outbound leg at a known extension) | call event |
//! |---|---|
//! | `CHANNEL_CALLSTATE` RINGING or EARLY, `CHANNEL_PROGRESS(_MEDIA)` | ringing |
//! | `CHANNEL_ANSWER`, `CHANNEL_CALLSTATE` ACTIVE, `CHANNEL_BRIDGE` | answered |
//! | `CHANNEL_HANGUP_COMPLETE` | leg ended: `LOSE_RACE` answered elsewhere, `ORIGINATOR_CANCEL` cancelled, `NO_ANSWER` timeout, busy/rejected… |
//! | `CHANNEL_HANGUP_COMPLETE` of the a-leg | the call ends |
//!
//! The extension is `Caller-Destination-Number`, else `Caller-Callee-ID-Number`, else the user
//! part of `Channel-Name` (`sofia/internal/2001@10.0.0.20:5060`), whichever names an agent's
//! extension. The caller is `Caller-Caller-ID-Number/Name`, which FreeSWITCH copies to the b-leg.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::calls::{CallEvent, EndReason, Intake};
use crate::telephony::cti::{self, Book};

/// Most legs remembered; a resync forgets the ones the switch no longer has.
pub const LEG_CAPACITY: usize = 50_000;

/// The events subscribed to (`event json …`); also the `kind` metrics labels.
pub const EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "HEARTBEAT",
];

/// `Hangup-Cause` → why the leg ended [FreeSWITCH hangup causes].
fn cause_reason(cause: &str) -> EndReason {
    match cause {
        "LOSE_RACE" | "PICKED_OFF" => EndReason::AnsweredElsewhere,
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "RECOVERY_ON_TIMER_EXPIRE" => {
            EndReason::Timeout
        }
        "USER_BUSY"
        | "CALL_REJECTED"
        | "USER_NOT_REGISTERED"
        | "UNALLOCATED_NUMBER"
        | "SUBSCRIBER_ABSENT"
        | "DESTINATION_OUT_OF_ORDER"
        | "NORMAL_TEMPORARY_FAILURE" => EndReason::Rejected,
        "NORMAL_CLEARING" => EndReason::Completed,
        _ => EndReason::Cancelled, // ORIGINATOR_CANCEL and the rest
    }
}

/// The user part of a channel name: `sofia/internal/2001@10.0.0.20:5060` → `2001`.
pub fn extension_of(channel_name: &str) -> Option<&str> {
    let last = channel_name.rsplit('/').next()?;
    let user = last.split('@').next()?;
    (!user.is_empty()).then_some(user)
}

#[derive(Debug)]
struct Leg {
    key: String,
    extension: Option<String>,
}

/// A JSON event body: a flat object of strings.
#[derive(Debug)]
pub struct Event(serde_json::Map<String, Value>);

impl Event {
    /// Parses an event body; `None` if it is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<Event> {
        match serde_json::from_slice(body).ok()? {
            Value::Object(map) => Some(Event(map)),
            _ => None,
        }
    }

    /// A string field (`None` when absent, empty or not a string).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The mapper for one switch. Survives reconnects.
pub struct Mapper {
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    legs: HashMap<String, Leg>,
    dialled: HashMap<String, String>,
    book: Book,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("legs", &self.legs.len())
            .field("book", &self.book)
            .finish_non_exhaustive()
    }
}

impl Mapper {
    /// A mapper for the switch named `pbx`.
    pub fn new(pbx: &str, known: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> Self {
        Mapper {
            known,
            legs: HashMap::new(),
            dialled: HashMap::new(),
            book: Book::new(Intake::ESL, pbx),
        }
    }

    /// Calls held.
    pub fn calls(&self) -> usize {
        self.book.len()
    }

    fn agent_extension(&self, candidates: &[Option<&str>]) -> Option<String> {
        candidates
            .iter()
            .flatten()
            .find(|c| (self.known)(c))
            .map(|c| (*c).to_owned())
    }

    /// Learns the leg an event is about; returns its UUID.
    fn note(&mut self, e: &Event) -> Option<String> {
        let uuid = e.get("Unique-ID")?.to_owned();
        let outbound = e.get("Call-Direction") == Some("outbound");
        let key = if outbound {
            e.get("Other-Leg-Unique-ID")
                .or(e.get("Channel-Call-UUID"))
                .unwrap_or(&uuid)
        } else {
            e.get("Channel-Call-UUID").unwrap_or(&uuid)
        }
        .to_owned();
        self.book.touch(&key);
        if !outbound
            && let Some(dest) = e.get("Caller-Destination-Number")
            && !self.dialled.contains_key(&key)
            && self.dialled.len() < LEG_CAPACITY
        {
            self.dialled.insert(key.clone(), dest.to_owned());
        }
        let extension = if outbound {
            self.agent_extension(&[
                e.get("Caller-Destination-Number"),
                e.get("Caller-Callee-ID-Number"),
                e.get("Channel-Name").and_then(extension_of),
            ])
        } else {
            None
        };
        let room = self.legs.len() < LEG_CAPACITY;
        match self.legs.get_mut(&uuid) {
            Some(leg) => {
                if extension.is_some() {
                    leg.extension = extension;
                }
            }
            None if room => {
                self.legs.insert(uuid.clone(), Leg { key, extension });
            }
            None => {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cti_book_full")
                    .increment(1);
                return None;
            }
        }
        Some(uuid)
    }

    fn ring(&mut self, uuid: &str, caller: crate::calls::Caller) -> Option<CallEvent> {
        let leg = self.legs.get(uuid)?;
        let ext = leg.extension.clone()?;
        let key = leg.key.clone();
        let dialled = self.dialled.get(&key).cloned();
        self.book.ring(&key, &ext, &caller, dialled.as_deref())
    }

    fn answer(&mut self, uuid: &str) -> Option<CallEvent> {
        let leg = self.legs.get(uuid)?;
        let ext = leg.extension.clone()?;
        let key = leg.key.clone();
        self.book.answer(&key, Some(&ext))
    }

    /// Applies one event.
    pub fn apply(&mut self, e: &Event) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let Some(name) = e.get("Event-Name") else {
            return out;
        };
        if name == "HEARTBEAT" {
            return out;
        }
        let Some(uuid) = self.note(e) else {
            return out;
        };
        let outbound = e.get("Call-Direction") == Some("outbound");
        let caller = || {
            cti::caller(
                e.get("Caller-Caller-ID-Number"),
                e.get("Caller-Caller-ID-Name"),
            )
        };
        match name {
            "CHANNEL_CALLSTATE" if outbound => match e.get("Channel-Call-State") {
                Some("RINGING" | "EARLY") => out.extend(self.ring(&uuid, caller())),
                Some("ACTIVE") => out.extend(self.answer(&uuid)),
                _ => {}
            },
            "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" if outbound => {
                out.extend(self.ring(&uuid, caller()));
            }
            "CHANNEL_ANSWER" if outbound => out.extend(self.answer(&uuid)),
            "CHANNEL_BRIDGE" => {
                if outbound {
                    out.extend(self.answer(&uuid));
                } else if let Some(other) = e.get("Other-Leg-Unique-ID") {
                    out.extend(self.answer(other));
                }
            }
            "CHANNEL_HANGUP_COMPLETE" => {
                let cause = e.get("Hangup-Cause").unwrap_or_default();
                if let Some(leg) = self.legs.remove(&uuid) {
                    if outbound {
                        if let Some(ext) = &leg.extension {
                            out.extend(self.book.end_leg(&leg.key, ext, cause_reason(cause)));
                        }
                    } else {
                        let reason = match cause_reason(cause) {
                            EndReason::Completed => EndReason::Cancelled,
                            other => other,
                        };
                        out.extend(self.book.end_call(&leg.key, reason));
                        self.dialled.remove(&leg.key);
                    }
                    if !self.legs.values().any(|l| l.key == leg.key) {
                        out.extend(self.book.end_call(&leg.key, EndReason::Cancelled));
                        self.dialled.remove(&leg.key);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// Applies the body of `api show calls as json`: ringing agent legs pop (again), answered
    /// ones count as answered, and calls the switch no longer has end.
    pub fn resync(&mut self, body: &[u8]) -> Result<Vec<CallEvent>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Calls {
            #[serde(default)]
            rows: Vec<HashMap<String, Value>>,
        }
        let calls: Calls = serde_json::from_slice(body)?;
        self.book.begin_resync();
        let mut out = Vec::new();
        let mut listed = HashSet::new();
        for row in &calls.rows {
            let field = |name: &str| {
                row.get(name)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
            };
            let Some(a_uuid) = field("uuid") else {
                continue;
            };
            // The a side, and the b side when the row joins one.
            for side in ["", "b_"] {
                let f = |name: &str| field(&format!("{side}{name}"));
                let Some(uuid) = f("uuid") else {
                    continue;
                };
                listed.insert(uuid.to_owned());
                let outbound = f("direction") == Some("outbound") || !side.is_empty();
                let key = if !side.is_empty() {
                    a_uuid
                } else {
                    field("call_uuid").unwrap_or(uuid)
                };
                let mut synthetic = serde_json::Map::new();
                let mut put = |k: &str, v: Option<&str>| {
                    if let Some(v) = v {
                        synthetic.insert(k.into(), Value::String(v.into()));
                    }
                };
                put("Unique-ID", Some(uuid));
                put(
                    "Call-Direction",
                    Some(if outbound { "outbound" } else { "inbound" }),
                );
                put("Other-Leg-Unique-ID", (key != uuid).then_some(key));
                put("Channel-Call-UUID", Some(key));
                put("Caller-Destination-Number", f("dest"));
                put("Channel-Name", f("name"));
                // The b side's caller is the a side's (the external caller).
                let (num, name) = if side.is_empty() {
                    (f("cid_num"), f("cid_name"))
                } else {
                    (field("cid_num"), field("cid_name"))
                };
                let event = Event(synthetic);
                let Some(uuid) = self.note(&event) else {
                    continue;
                };
                if outbound {
                    match f("callstate") {
                        Some("RINGING" | "EARLY") => {
                            out.extend(self.ring(&uuid, cti::caller(num, name)));
                        }
                        Some("ACTIVE") => out.extend(self.answer(&uuid)),
                        _ => {}
                    }
                }
            }
        }
        // Legs the switch no longer lists are forgotten; calls nothing touched end.
        self.legs.retain(|uuid, _| listed.contains(uuid));
        out.extend(self.book.finish_resync());
        let live: HashSet<&String> = self.legs.values().map(|l| &l.key).collect();
        self.dialled.retain(|k, _| live.contains(k));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> Mapper {
        Mapper::new("fs", Arc::new(|e: &str| e == "2001" || e == "2002"))
    }

    fn event(json: &str) -> Event {
        Event::parse(json.as_bytes()).expect("object")
    }

    #[test]
    fn outbound_ringing_then_lose_race() {
        let mut m = mapper();
        let ring = |uuid: &str, ext: &str| {
            event(&format!(
                r#"{{"Event-Name":"CHANNEL_CALLSTATE","Channel-Call-State":"RINGING","Call-Direction":"outbound","Unique-ID":"{uuid}","Other-Leg-Unique-ID":"a1","Channel-Name":"sofia/internal/{ext}@10.0.0.20:5060","Caller-Caller-ID-Number":"+14155550100","Caller-Destination-Number":"{ext}"}}"#
            ))
        };
        assert_eq!(m.apply(&ring("b1", "2001")).len(), 1);
        assert_eq!(m.apply(&ring("b1", "2001")).len(), 0, "idempotent");
        assert_eq!(m.apply(&ring("b2", "2002")).len(), 1);
        let answered = m.apply(&event(
            r#"{"Event-Name":"CHANNEL_ANSWER","Call-Direction":"outbound","Unique-ID":"b2","Other-Leg-Unique-ID":"a1"}"#,
        ));
        assert!(
            matches!(answered.as_slice(), [CallEvent::Answered { by: Some(b), .. }] if b == "2002")
        );
        let lost = m.apply(&event(
            r#"{"Event-Name":"CHANNEL_HANGUP_COMPLETE","Call-Direction":"outbound","Unique-ID":"b1","Other-Leg-Unique-ID":"a1","Hangup-Cause":"LOSE_RACE"}"#,
        ));
        assert!(
            lost.is_empty(),
            "the tracker already ended the loser: {lost:?}"
        );
    }

    #[test]
    fn resync_rows_with_and_without_b_legs() {
        let mut m = mapper();
        let out = m
            .resync(br#"{"row_count":2,"rows":[
                {"uuid":"a1","direction":"inbound","cid_num":"+14155550100","cid_name":"Acme","dest":"600","callstate":"ACTIVE",
                 "b_uuid":"b1","b_direction":"outbound","b_name":"sofia/internal/2001@10.0.0.20","b_dest":"2001","b_callstate":"RINGING"},
                {"uuid":"b9","direction":"outbound","call_uuid":"a9","name":"sofia/internal/2002@10.0.0.21","cid_num":"+13125550142","dest":"2002","callstate":"EARLY"}
            ]}"#)
            .expect("json");
        assert_eq!(out.len(), 2, "{out:?}");
        let CallEvent::Ringing {
            key,
            caller,
            dialled,
            ..
        } = &out[0]
        else {
            panic!("ringing")
        };
        assert_eq!(key, "fs:a1");
        assert_eq!(caller.number.as_deref(), Some("+14155550100"));
        assert_eq!(dialled.as_deref(), Some("600"));
        assert!(matches!(&out[1], CallEvent::Ringing { key, .. } if key == "fs:a9"));
        let out = m.resync(br#"{"row_count":0}"#).expect("json");
        assert_eq!(out.len(), 2, "both calls vanished: {out:?}");
        assert!(m.resync(b"not json").is_err());
    }

    #[test]
    fn channel_names() {
        assert_eq!(
            extension_of("sofia/internal/2001@10.0.0.20:5060"),
            Some("2001")
        );
        assert_eq!(extension_of("user/2001"), Some("2001"));
        assert_eq!(extension_of(""), None);
    }
}
