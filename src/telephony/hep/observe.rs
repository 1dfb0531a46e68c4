//! Turning mirrored SIP into call events.
//!
//! A mirroring proxy reports each relayed message twice, as received and as sent
//! [PROTOCOLS.md §2 "Duplicates"]. Two copies are the same message when they share Call-ID, CSeq
//! and direction: for a request, its method and Request-URI user (a parallel fork's branches
//! differ there, so they stay distinct legs); for a response, its status and To tag. Later
//! copies within [`DEDUP_WINDOW`] are dropped and counted.
//!
//! Observed transitions (RFC 3261 seen from the wire): INVITE without To tag → ringing at the
//! extension (R-URI user, else To user); 200 to INVITE → answered by the leg whose branch it
//! answers; other final responses (not 487) → that leg rejected; CANCEL → leg cancelled, or
//! answered elsewhere with `Reason: SIP;cause=200` [RFC 3326]; BYE → call completed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::decode::decode;
use crate::calls::{CallEvent, EndReason, Intake};
use crate::dedup::Dedup;
use crate::telephony::sip::grammar::{NameAddr, Uri, Via, parse_cseq, split_list};
use crate::telephony::sip::identity::{self, Target};
use crate::telephony::sip::scan::{Message, Name, StartLine, Transport, scan, trim};

/// How long a message fingerprint is remembered for de-duplication.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(32);
/// Most fingerprints remembered; the least recently seen are forgotten first.
pub const DEDUP_CAPACITY: usize = 200_000;
/// Most INVITE branches remembered (to attribute responses to an extension).
pub const LEG_CAPACITY: usize = 100_000;

/// Settings for the observer.
pub struct ObserverConfig {
    /// When set, packets must carry this auth key (chunk 0x0e).
    pub password: Option<String>,
    /// Whether a user part names a configured extension.
    pub known_extension: std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

#[derive(Default)]
struct State {
    legs: HashMap<u64, String>,
    legs_order: VecDeque<u64>,
}

/// Shared by the HEP listeners.
pub struct HepObserver {
    config: ObserverConfig,
    /// Message fingerprints seen within [`DEDUP_WINDOW`].
    seen: Dedup<u64>,
    state: Mutex<State>,
    events: mpsc::Sender<CallEvent>,
}

impl std::fmt::Debug for HepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepObserver").finish_non_exhaustive()
    }
}

impl HepObserver {
    /// Creates an observer reporting to `events`.
    pub fn new(config: ObserverConfig, events: mpsc::Sender<CallEvent>) -> Self {
        HepObserver {
            config,
            seen: Dedup::new(DEDUP_CAPACITY, DEDUP_WINDOW),
            state: Mutex::default(),
            events,
        }
    }

    /// Takes one HEP packet. Never panics, never replies. Returns whether it was a valid packet
    /// (decoded, with the right password, carrying SIP): what proves a TCP connection to be a
    /// capture agent's.
    pub fn handle(&self, bytes: &[u8], sender: SocketAddr) -> bool {
        let packet = match decode(bytes) {
            Ok(p) => p,
            Err(error) => {
                metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => error.kind())
                    .increment(1);
                tracing::debug!(%sender, %error, "Dropped a HEP packet.");
                return false;
            }
        };
        if let Some(password) = &self.config.password
            && packet.auth_key != Some(password.as_bytes())
        {
            metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "bad_auth")
                .increment(1);
            return false;
        }
        if packet.proto_type.is_some_and(|t| t != 1) {
            metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "not_sip")
                .increment(1);
            return false;
        }
        let msg = match scan(&packet.payload, Transport::Datagram) {
            Ok(m) if m.defect.is_none() => m,
            Ok(_) | Err(_) => {
                metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "bad_sip")
                    .increment(1);
                return false;
            }
        };
        let Some(fingerprint) = fingerprint(&msg) else {
            metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "bad_sip")
                .increment(1);
            return false;
        };
        if !self.seen.first_seen(fingerprint) {
            metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "duplicate")
                .increment(1);
            return true;
        }
        metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "sip").increment(1);
        let mut events = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.observe(&msg, &mut state, &mut events);
        }
        for event in events {
            if self.events.try_send(event).is_err() {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "call_event_queue_full")
                    .increment(1);
            }
        }
        true
    }

    fn observe(&self, msg: &Message<'_>, state: &mut State, events: &mut Vec<CallEvent>) {
        let h = &msg.headers;
        let (Some(call_id), Some(cseq)) = (h.get(Name::CallId), h.get(Name::CSeq)) else {
            return;
        };
        let Ok((_, cseq_method)) = parse_cseq(cseq) else {
            return;
        };
        let key = String::from_utf8_lossy(call_id).into_owned();
        let branch = h
            .get(Name::Via)
            .and_then(|v| split_list(v).next())
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch());
        let leg_id = |branch: &[u8]| hash_of(&(call_id, branch));
        match msg.start {
            StartLine::Request {
                method: b"INVITE",
                uri,
            } => {
                let to_tagged = h
                    .get(Name::To)
                    .and_then(|t| NameAddr::parse(t).ok())
                    .is_some_and(|na| na.param("tag").is_some());
                if to_tagged {
                    return; // re-INVITE within a dialog
                }
                let target = Target::of(msg, uri);
                let Some(extension) = target
                    .extension(|u| (self.config.known_extension)(u))
                    .map(str::to_owned)
                else {
                    return;
                };
                if let Some(branch) = branch {
                    let id = leg_id(branch);
                    if state.legs.insert(id, extension.clone()).is_none() {
                        state.legs_order.push_back(id);
                        if state.legs_order.len() > LEG_CAPACITY
                            && let Some(old) = state.legs_order.pop_front()
                        {
                            state.legs.remove(&old);
                        }
                    }
                }
                events.push(CallEvent::Ringing {
                    key,
                    intake: Intake::HEP,
                    extension,
                    caller: identity::caller(msg),
                    dialled: identity::dialled(msg),
                });
            }
            StartLine::Request {
                method: b"CANCEL", ..
            } => {
                let extension = branch.and_then(|b| state.legs.get(&leg_id(b)).cloned());
                let reason = if identity::answered_elsewhere(msg) {
                    EndReason::AnsweredElsewhere
                } else {
                    EndReason::Cancelled
                };
                // A CANCEL from the caller's side names no known leg: it ends the whole call.
                events.push(CallEvent::Ended {
                    key,
                    intake: Intake::HEP,
                    extension,
                    reason,
                });
            }
            StartLine::Request { method: b"BYE", .. } => {
                events.push(CallEvent::Ended {
                    key,
                    intake: Intake::HEP,
                    extension: None,
                    reason: EndReason::Completed,
                });
            }
            StartLine::Response { code, .. } if cseq_method == b"INVITE" && code >= 200 => {
                let extension = branch
                    .and_then(|b| state.legs.get(&leg_id(b)).cloned())
                    .or_else(|| {
                        h.get(Name::To)
                            .and_then(|t| NameAddr::parse(t).ok())
                            .and_then(|na| Uri::parse(na.uri).ok())
                            .and_then(|u| u.user_number().map(|u| u.into_owned()))
                    });
                match code {
                    200..=299 => events.push(CallEvent::Answered {
                        key,
                        intake: Intake::HEP,
                        by: extension,
                    }),
                    487 => {} // the answer to a CANCEL, already seen
                    _ => {
                        if extension.is_some() {
                            events.push(CallEvent::Ended {
                                key,
                                intake: Intake::HEP,
                                extension,
                                reason: EndReason::Rejected,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Call-ID + CSeq + direction (see the module docs); `None` without Call-ID or CSeq.
fn fingerprint(msg: &Message<'_>) -> Option<u64> {
    let call_id = trim(msg.headers.get(Name::CallId)?);
    let cseq = trim(msg.headers.get(Name::CSeq)?);
    let mut hasher = DefaultHasher::new();
    call_id.hash(&mut hasher);
    cseq.hash(&mut hasher);
    match msg.start {
        StartLine::Request { method, uri } => {
            0u8.hash(&mut hasher);
            method.hash(&mut hasher);
            Uri::parse(uri)
                .ok()
                .and_then(|u| u.user_number())
                .hash(&mut hasher);
        }
        StartLine::Response { code, .. } => {
            1u8.hash(&mut hasher);
            code.hash(&mut hasher);
            msg.headers
                .get(Name::To)
                .and_then(|t| NameAddr::parse(t).ok())
                .and_then(|na| na.param("tag"))
                .hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
