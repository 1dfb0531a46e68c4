//! Turning mirrored SIP into call events.
//!
//! A mirroring proxy reports each relayed message twice, as received and as sent
//! [PROTOCOLS.md §2 "Duplicates"]. Two copies are the same message when they share Call-ID, CSeq
//! and direction: for a request, its method and Request-URI user (a parallel fork's branches
//! differ there, so they stay distinct legs); for a response, its status and To tag. Later
//! copies within [`DEDUP_WINDOW`] are dropped and counted.
//!
//! A request is observed only if the SIP endpoint would take it: [`check::well_formed`] judges
//! both. An INVITE the endpoint would answer 400 (a duplicated Call-ID, a broken Via) rang no
//! phone, since the PBX refused it too; it is dropped and counted (`result="invalid_request"`).
//!
//! Observed transitions (RFC 3261 seen from the wire): INVITE without To tag → ringing at the
//! extension (R-URI user, else To user); 200 to INVITE → answered by the leg whose branch it
//! answers; other final responses (not 487) → that leg rejected; CANCEL → leg cancelled, or
//! answered elsewhere with `Reason: SIP;cause=200` [RFC 3326]; BYE → call completed.
//!
//! The caller's own transaction (the *origin*) is told from the branches a proxy forked by its
//! Via count: the INVITE as the PBX received it carries the fewest via-parms of its Call-ID, each
//! forked branch one more. A final error on the origin (the PBX refusing the call towards the
//! caller: busy, unavailable, declined) or a CANCEL of it ends the whole call at once
//! (`rejected`, `cancelled`), whichever extensions were still ringing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::decode::decode;
use crate::calls::{CallEvent, EndReason, EventSink, Intake};
use crate::dedup::Dedup;
use crate::telephony::sip::check;
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

/// One INVITE transaction seen: the extension it rang (none for an origin to a number that is
/// no extension) and its via-parm count.
struct Leg {
    extension: Option<String>,
    vias: usize,
}

#[derive(Default)]
struct State {
    /// By hash of (Call-ID, top Via branch).
    legs: HashMap<u64, Leg>,
    legs_order: VecDeque<u64>,
    /// The fewest via-parms seen on an INVITE of each Call-ID (by hash): the origin's count.
    origins: HashMap<u64, usize>,
    origins_order: VecDeque<u64>,
}

impl State {
    fn remember(&mut self, leg_id: u64, call: u64, leg: Leg) {
        let vias = leg.vias;
        if self.legs.insert(leg_id, leg).is_none() {
            self.legs_order.push_back(leg_id);
            if self.legs_order.len() > LEG_CAPACITY
                && let Some(old) = self.legs_order.pop_front()
            {
                self.legs.remove(&old);
            }
        }
        match self.origins.get_mut(&call) {
            Some(fewest) => *fewest = (*fewest).min(vias),
            None => {
                self.origins.insert(call, vias);
                self.origins_order.push_back(call);
                if self.origins_order.len() > LEG_CAPACITY
                    && let Some(old) = self.origins_order.pop_front()
                {
                    self.origins.remove(&old);
                }
            }
        }
    }

    /// The leg of a branch, and whether it is its call's origin.
    fn leg(&self, leg_id: u64, call: u64) -> Option<(&Leg, bool)> {
        let leg = self.legs.get(&leg_id)?;
        let origin = self
            .origins
            .get(&call)
            .is_some_and(|&fewest| leg.vias <= fewest);
        Some((leg, origin))
    }
}

/// Shared by the HEP listeners.
pub struct HepObserver {
    config: ObserverConfig,
    /// Message fingerprints seen within [`DEDUP_WINDOW`].
    seen: Dedup<u64>,
    state: Mutex<State>,
    events: EventSink,
}

impl std::fmt::Debug for HepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepObserver").finish_non_exhaustive()
    }
}

impl HepObserver {
    /// Creates an observer reporting to `events` (the call table itself, or a queue).
    pub fn new(config: ObserverConfig, events: impl Into<EventSink>) -> Self {
        let events = events.into();
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
            Ok(m) => m,
            Err(_) => {
                metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "bad_sip")
                    .increment(1);
                return false;
            }
        };
        match msg.start {
            StartLine::Request { .. } => match check::well_formed(&msg) {
                Ok(_) => {}
                // A method screenpop does not serve is no call event; nothing to judge.
                Err(rejection) if rejection.kind == "method" => {}
                Err(rejection) => {
                    metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "invalid_request")
                        .increment(1);
                    tracing::debug!(%sender, reason = %rejection.reason, "Ignored a mirrored request the SIP endpoint would refuse.");
                    return true;
                }
            },
            StartLine::Response { .. } if msg.defect.is_some() => {
                metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => "bad_sip")
                    .increment(1);
                return true;
            }
            StartLine::Response { .. } => {}
        }
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
            self.events.submit(event);
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
        let call = hash_of(&call_id);
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
                let extension = target
                    .extension(|u| (self.config.known_extension)(u))
                    .map(str::to_owned);
                if let Some(branch) = branch {
                    let vias = msg.all(Name::Via).flat_map(split_list).count();
                    let leg = Leg {
                        extension: extension.clone(),
                        vias,
                    };
                    state.remember(leg_id(branch), call, leg);
                }
                let Some(extension) = extension else {
                    return;
                };
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
                // A CANCEL of the origin, or from the caller's side naming no known leg, ends
                // the whole call.
                let extension = match branch.and_then(|b| state.leg(leg_id(b), call)) {
                    Some((leg, false)) => leg.extension.clone(),
                    Some((_, true)) | None => None,
                };
                let reason = if identity::answered_elsewhere(msg) {
                    EndReason::AnsweredElsewhere
                } else {
                    EndReason::Cancelled
                };
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
                let leg = branch.and_then(|b| state.leg(leg_id(b), call));
                let origin = leg.is_some_and(|(_, origin)| origin);
                let extension = leg.and_then(|(leg, _)| leg.extension.clone()).or_else(|| {
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
                    // The PBX refused the call towards the caller: nothing rings any more.
                    _ if origin => events.push(CallEvent::Ended {
                        key,
                        intake: Intake::HEP,
                        extension: None,
                        reason: EndReason::Rejected,
                    }),
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
