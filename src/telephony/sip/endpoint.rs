//! screenpop as one branch of a forked call: a phone that rings and never answers.
//!
//! ```text
//!            INVITE                 CANCEL (or ring timeout)        ACK
//!   (new) ──────────▶ Proceeding ─────────────────────────▶ Completed ────▶ Confirmed ──▶ (gone)
//!          100 Trying    │ retransmit: resend 100   487 (480)    │ UDP: resend final,   Timer I
//!                        │                                      │ 0.5 s doubling to 4 s
//!                        └─ BYE for the Call-ID: 487            └─ Timer H (32 s): gone
//! ```
//!
//! Never a 2xx (a forking proxy would relay it and cancel the agent's phone) and never a 6xx
//! (it cancels every branch) [RFC 3261 §16.7 step 5]. With no CANCEL by the ring timeout the
//! branch ends with 480, which only competes in best-response selection [§16.7 step 6].
//! Transactions are matched by top-Via branch and sent-by [§17.2.3], or for RFC 2543 peers
//! (no `z9hG4bK` cookie) by Call-ID, From tag, CSeq number and sent-by. The table is bounded:
//! when full, new INVITEs get 480 and are counted as dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::check::{self, ACCEPT, ALLOW, Checked, Method};
use super::identity::{self, Target};
use super::reply::{self, Reply};
use super::scan::{Message, Name, StartLine, Transport, scan};
use crate::calls::{CallEvent, EndReason, EventSink, Intake};

/// Timer T1, the RTT estimate [RFC 3261 §17.1.1.1].
const T1: Duration = Duration::from_millis(500);
/// Timer T2, the retransmit cap for final responses.
const T2: Duration = Duration::from_secs(4);
/// Timer H: how long a final response waits for its ACK (64·T1).
const TIMER_H: Duration = Duration::from_secs(32);
/// Timer I: how long ACK retransmits are absorbed over UDP (T4).
const TIMER_I: Duration = Duration::from_secs(5);

/// Behaviour settings for the endpoint.
#[derive(Clone)]
pub struct EndpointConfig {
    /// How long a branch may ring before screenpop ends it with 480.
    pub ring_timeout: Duration,
    /// Most INVITE transactions held at once.
    pub max_transactions: usize,
    /// Whether a user part names a configured extension (to pick R-URI vs To).
    pub known_extension: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("ring_timeout", &self.ring_timeout)
            .field("max_transactions", &self.max_transactions)
            .finish_non_exhaustive()
    }
}

/// Where replies to a request go: back the way it came.
#[derive(Debug, Clone)]
pub enum ReplyPath {
    /// The UDP socket the request arrived on, to the source address and port.
    Udp {
        /// The listener's socket.
        socket: Arc<UdpSocket>,
        /// The request's source.
        peer: SocketAddr,
    },
    /// The TCP or TLS connection the request arrived on (its bounded writer queue): replies
    /// go back on the same connection [RFC 3261 §18.2.2]; over TLS they are encrypted by the
    /// connection's writer, nothing here differs.
    Stream(mpsc::Sender<Bytes>),
}

impl ReplyPath {
    fn send(&self, bytes: Bytes) {
        let ok = match self {
            ReplyPath::Udp { socket, peer } => socket.try_send_to(&bytes, *peer).is_ok(),
            ReplyPath::Stream(tx) => tx.try_send(bytes).is_ok(),
        };
        if !ok {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "reply_not_sent")
                .increment(1);
        }
    }

    fn reliable(&self) -> bool {
        matches!(self, ReplyPath::Stream(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Proceeding,
    Completed,
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ring,
    Retransmit(Duration),
    Forget,
}

struct Txn {
    state: State,
    call_id: Box<str>,
    extension: Option<Box<str>>,
    to_tag: Box<str>,
    /// The 100 Trying, resent on INVITE retransmits; the final response is derived from it,
    /// so the INVITE itself is not kept.
    trying: Bytes,
    /// From tag, CSeq number and Request-URI, to detect merged requests [§8.2.2.2].
    merge_id: Box<[u8]>,
    final_response: Option<Bytes>,
    path: ReplyPath,
    completed_at: Option<Instant>,
    generation: u64,
    timer: Timer,
}

/// Pending timers: (due, generation, transaction key); stale generations are skipped.
type TimerHeap = BinaryHeap<Reverse<(Instant, u64, Box<[u8]>)>>;

struct Table {
    txns: HashMap<Box<[u8]>, Txn>,
    by_call: HashMap<Box<str>, Vec<Box<[u8]>>>,
    timers: TimerHeap,
    next_generation: u64,
}

impl Table {
    /// A table sized for `max_transactions` from the start, so that no rehash into fresh
    /// memory stalls the call path while calls ramp up (see `calls::tracker`'s table).
    fn with_capacity(max_transactions: usize) -> Table {
        Table {
            txns: HashMap::with_capacity(max_transactions),
            by_call: HashMap::with_capacity(max_transactions),
            // Each transaction has one live timer; a rescheduled one leaves its stale entry
            // behind until it is due.
            timers: BinaryHeap::with_capacity(max_transactions.saturating_mul(2)),
            next_generation: 0,
        }
    }

    fn schedule(&mut self, key: &[u8], at: Instant, timer: Timer) -> bool {
        self.next_generation += 1;
        let generation = self.next_generation;
        let Some(txn) = self.txns.get_mut(key) else {
            return false;
        };
        txn.generation = generation;
        txn.timer = timer;
        let earliest = self.timers.peek().is_none_or(|Reverse((t, _, _))| at < *t);
        self.timers.push(Reverse((at, generation, key.into())));
        earliest
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(txn) = self.txns.remove(key)
            && let Some(keys) = self.by_call.get_mut(&txn.call_id)
        {
            keys.retain(|k| &**k != key);
            if keys.is_empty() {
                self.by_call.remove(&txn.call_id);
            }
        }
        metrics::gauge!(crate::telephony::SIP_TRANSACTIONS).set(self.txns.len() as f64);
    }
}

/// Things to do once the table lock is released.
#[derive(Default)]
struct Effects {
    sends: Vec<(ReplyPath, Bytes)>,
    events: Vec<CallEvent>,
    wake_timers: bool,
}

/// The fork-target endpoint: shared by every SIP listener, and by nothing else.
pub struct Endpoint {
    config: EndpointConfig,
    table: Mutex<Table>,
    timers_changed: Notify,
    events: EventSink,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Creates an endpoint reporting call events to `events` (the call table itself, or a
    /// queue).
    pub fn new(config: EndpointConfig, events: impl Into<EventSink>) -> Arc<Self> {
        let events = events.into();
        Arc::new(Endpoint {
            table: Mutex::new(Table::with_capacity(config.max_transactions)),
            config,
            timers_changed: Notify::new(),
            events,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // matters more than losing the daemon; keep serving.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one message from the network (`transport` says how it is framed and labels the
    /// metrics). Never panics, never blocks. Returns whether it was a valid request (what proves
    /// a TCP or TLS connection to be a real peer's).
    pub fn handle(
        &self,
        bytes: &[u8],
        transport: Transport,
        source: SocketAddr,
        path: &ReplyPath,
    ) -> bool {
        let transport_label = transport.label();
        let msg = match scan(bytes, transport) {
            Ok(msg) => msg,
            Err(error) => {
                metrics::counter!(crate::telephony::SIP_PARSE_ERRORS_TOTAL, "kind" => error.kind())
                    .increment(1);
                tracing::debug!(%source, %error, "Dropped an unreadable SIP message.");
                return false;
            }
        };
        let method_raw = match msg.start {
            StartLine::Response { code, .. } => {
                // We send no requests, so no response can match a client transaction of ours
                // [RFC 3261 §18.1.2]: count and drop.
                metrics::counter!(crate::telephony::SIP_MESSAGES_TOTAL, "transport" => transport_label, "method" => "response")
                    .increment(1);
                tracing::trace!(%source, code, "Ignored a SIP response.");
                return false;
            }
            StartLine::Request { method, .. } => method,
        };
        let method = Method::of(method_raw);
        metrics::counter!(crate::telephony::SIP_MESSAGES_TOTAL, "transport" => transport_label, "method" => method.label())
            .increment(1);
        if let Some(error) = msg.defect {
            metrics::counter!(crate::telephony::SIP_PARSE_ERRORS_TOTAL, "kind" => error.kind())
                .increment(1);
        }
        let checked = match check::request(&msg) {
            Ok(checked) => checked,
            Err(rejection) => {
                if msg.defect.is_none() {
                    metrics::counter!(crate::telephony::SIP_REJECTED_TOTAL, "kind" => rejection.kind)
                        .increment(1);
                }
                // Never answer an ACK [§17.2.3]; without a Via there is nowhere to answer.
                if method != Method::Ack && msg.headers.get(Name::Via).is_some() {
                    let extra: Vec<(&str, &str)> = rejection
                        .header
                        .iter()
                        .map(|(n, v)| (*n, v.as_str()))
                        .collect();
                    let tag = new_tag();
                    let out = reply::build(
                        &msg,
                        source,
                        Reply {
                            code: rejection.code,
                            reason: &rejection.reason,
                            to_tag: Some(&tag),
                            extra: &extra,
                        },
                    );
                    count_response(rejection.code);
                    path.send(out.into());
                }
                return false;
            }
        };
        let mut fx = Effects::default();
        match checked.method {
            Method::Options => {
                let tag = new_tag();
                let extra = [("Allow", ALLOW), ("Accept", ACCEPT)];
                fx.sends
                    .push((path.clone(), respond(&msg, source, 200, "OK", &tag, &extra)));
            }
            Method::Invite => {
                for class in checked.tolerated.classes() {
                    metrics::counter!(crate::telephony::SIP_INVITES_TOLERATED_TOTAL, "class" => class)
                        .increment(1);
                }
                self.invite(&msg, &checked, source, path, &mut fx);
            }
            Method::Cancel => self.cancel(&msg, &checked, source, path, &mut fx),
            Method::Ack => self.ack(&checked),
            Method::Bye => self.bye(&msg, &checked, source, path, &mut fx),
            Method::NotServed | Method::Unknown => {}
        }
        self.apply(fx);
        true
    }

    fn invite(
        &self,
        msg: &Message<'_>,
        c: &Checked<'_>,
        source: SocketAddr,
        path: &ReplyPath,
        fx: &mut Effects,
    ) {
        if c.to_tag.is_some() {
            // A re-INVITE: we never established a dialog [§12.2.2].
            fx.sends.push((
                path.clone(),
                respond(
                    msg,
                    source,
                    481,
                    "Call/Transaction Does Not Exist",
                    &new_tag(),
                    &[],
                ),
            ));
            return;
        }
        let key = transaction_key(c);
        let merge_id = merge_id(c);
        let mut table = self.lock();
        if let Some(txn) = table.txns.get(&key) {
            // A retransmission: repeat the last response [§17.2.1].
            let last = txn
                .final_response
                .clone()
                .unwrap_or_else(|| txn.trying.clone());
            fx.sends.push((txn.path.clone(), last));
            metrics::counter!(crate::telephony::SIP_RETRANSMISSIONS_TOTAL).increment(1);
            return;
        }
        // The same request arriving by another path (new branch, same From tag, CSeq and
        // Request-URI) is a merged request: 482 [§8.2.2.2]. Forks to several extensions differ
        // in their Request-URI and are not merged.
        let merged = table
            .by_call
            .get(&*String::from_utf8_lossy(c.call_id))
            .is_some_and(|keys| {
                keys.iter()
                    .any(|k| table.txns.get(k).is_some_and(|t| t.merge_id == merge_id))
            });
        if merged {
            drop(table);
            metrics::counter!(crate::telephony::SIP_REJECTED_TOTAL, "kind" => "merged")
                .increment(1);
            fx.sends.push((
                path.clone(),
                respond(msg, source, 482, "Loop Detected", &new_tag(), &[]),
            ));
            return;
        }
        if table.txns.len() >= self.config.max_transactions {
            drop(table);
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "transaction_table_full")
                .increment(1);
            tracing::warn!(%source, "SIP transaction table full: refused an INVITE with 480.");
            fx.sends.push((
                path.clone(),
                respond(msg, source, 480, "Temporarily Unavailable", &new_tag(), &[]),
            ));
            return;
        }
        let trying: Bytes = reply::build(
            msg,
            source,
            Reply {
                code: 100,
                reason: "Trying",
                to_tag: None,
                extra: &[],
            },
        )
        .into();
        count_response(100);
        fx.sends.push((path.clone(), trying.clone()));

        let call_id = String::from_utf8_lossy(c.call_id).into_owned();
        let target = Target::of(msg, c.uri);
        let extension = target
            .extension(|u| (self.config.known_extension)(u))
            .map(str::to_owned);
        let txn = Txn {
            state: State::Proceeding,
            call_id: call_id.clone().into(),
            extension: extension.as_deref().map(Into::into),
            to_tag: new_tag().into(),
            trying,
            merge_id,
            final_response: None,
            path: path.clone(),
            completed_at: None,
            generation: 0,
            timer: Timer::Ring,
        };
        table.txns.insert(key.clone(), txn);
        table
            .by_call
            .entry(call_id.clone().into())
            .or_default()
            .push(key.clone());
        metrics::gauge!(crate::telephony::SIP_TRANSACTIONS).set(table.txns.len() as f64);
        fx.wake_timers |=
            table.schedule(&key, Instant::now() + self.config.ring_timeout, Timer::Ring);
        drop(table);

        match extension {
            Some(extension) => fx.events.push(CallEvent::Ringing {
                key: call_id,
                intake: Intake::SIP,
                extension,
                caller: identity::caller(msg),
                dialled: identity::dialled(msg),
            }),
            None => {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "no_extension")
                    .increment(1);
                tracing::info!(%source, "INVITE names no extension (no Request-URI or To user); held without a pop.");
            }
        }
    }

    fn cancel(
        &self,
        msg: &Message<'_>,
        c: &Checked<'_>,
        source: SocketAddr,
        path: &ReplyPath,
        fx: &mut Effects,
    ) {
        let key = transaction_key(c);
        let mut table = self.lock();
        let Some(txn) = table.txns.get(&key) else {
            drop(table);
            fx.sends.push((
                path.clone(),
                respond(
                    msg,
                    source,
                    481,
                    "Call/Transaction Does Not Exist",
                    &new_tag(),
                    &[],
                ),
            ));
            return;
        };
        // 200 to the CANCEL, with the To tag the INVITE's final response will carry [§9.2].
        fx.sends.push((
            path.clone(),
            respond(msg, source, 200, "OK", &txn.to_tag, &[]),
        ));
        if txn.state != State::Proceeding {
            return;
        }
        let answered_elsewhere = identity::answered_elsewhere(msg);
        let event = if answered_elsewhere {
            CallEvent::Answered {
                key: txn.call_id.to_string(),
                intake: Intake::SIP,
                by: None,
            }
        } else {
            CallEvent::Ended {
                key: txn.call_id.to_string(),
                intake: Intake::SIP,
                extension: txn.extension.as_deref().map(str::to_owned),
                reason: EndReason::Cancelled,
            }
        };
        fx.events.push(event);
        self.complete(&mut table, &key, 487, "Request Terminated", fx);
    }

    fn ack(&self, c: &Checked<'_>) {
        let key = transaction_key(c);
        let mut table = self.lock();
        let Some(txn) = table.txns.get_mut(&key) else {
            return;
        };
        if txn.state != State::Completed {
            return;
        }
        txn.state = State::Confirmed;
        if txn.path.reliable() {
            table.remove(&key);
        } else {
            table.schedule(&key, Instant::now() + TIMER_I, Timer::Forget);
        }
    }

    fn bye(
        &self,
        msg: &Message<'_>,
        c: &Checked<'_>,
        source: SocketAddr,
        path: &ReplyPath,
        fx: &mut Effects,
    ) {
        // We never answer, so no dialog exists to end [§15.1.2]; but a BYE tells us the call is
        // over, so any INVITE still ringing under this Call-ID is finished with 487.
        fx.sends.push((
            path.clone(),
            respond(
                msg,
                source,
                481,
                "Call/Transaction Does Not Exist",
                &new_tag(),
                &[],
            ),
        ));
        let call_id = String::from_utf8_lossy(c.call_id);
        let mut table = self.lock();
        let keys = table.by_call.get(&*call_id).cloned().unwrap_or_default();
        for key in keys {
            if table
                .txns
                .get(&key)
                .is_some_and(|t| t.state == State::Proceeding)
            {
                self.complete(&mut table, &key, 487, "Request Terminated", fx);
            }
        }
        drop(table);
        fx.events.push(CallEvent::Ended {
            key: call_id.into_owned(),
            intake: Intake::SIP,
            extension: None,
            reason: EndReason::Completed,
        });
    }

    /// Sends a final response on a Proceeding INVITE and arms the Completed-state timers.
    fn complete(&self, table: &mut Table, key: &[u8], code: u16, reason: &str, fx: &mut Effects) {
        let Some(txn) = table.txns.get_mut(key) else {
            return;
        };
        let out: Bytes = reply::finalize(&txn.trying, code, reason, &txn.to_tag).into();
        count_response(code);
        fx.sends.push((txn.path.clone(), out.clone()));
        txn.final_response = Some(out);
        txn.state = State::Completed;
        let now = Instant::now();
        txn.completed_at = Some(now);
        let timer = if txn.path.reliable() {
            (now + TIMER_H, Timer::Forget)
        } else {
            (now + T1, Timer::Retransmit(T1))
        };
        fx.wake_timers |= table.schedule(key, timer.0, timer.1);
    }

    fn apply(&self, fx: Effects) {
        for (path, bytes) in fx.sends {
            path.send(bytes);
        }
        for event in fx.events {
            self.events.submit(event);
        }
        if fx.wake_timers {
            self.timers_changed.notify_one();
        }
    }

    /// Runs the transaction timers (ring timeout, retransmits, Timers H and I) until cancelled.
    pub async fn run_timers(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let next = self.lock().timers.peek().map(|Reverse((at, _, _))| *at);
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.timers_changed.notified() => continue,
                () = sleep => self.fire_due(Instant::now()),
            }
        }
    }

    fn fire_due(&self, now: Instant) {
        let mut fx = Effects::default();
        let mut table = self.lock();
        while let Some(Reverse((at, generation, _))) = table.timers.peek() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = table.timers.pop() else {
                break;
            };
            let Some(txn) = table.txns.get(&key) else {
                continue;
            };
            if txn.generation != generation {
                continue;
            }
            match txn.timer {
                Timer::Ring if txn.state == State::Proceeding => {
                    fx.events.push(CallEvent::Ended {
                        key: txn.call_id.to_string(),
                        intake: Intake::SIP,
                        extension: txn.extension.as_deref().map(str::to_owned),
                        reason: EndReason::Timeout,
                    });
                    self.complete(&mut table, &key, 480, "Temporarily Unavailable", &mut fx);
                }
                Timer::Retransmit(interval) if txn.state == State::Completed => {
                    if txn.completed_at.is_some_and(|t| now >= t + TIMER_H) {
                        table.remove(&key);
                        continue;
                    }
                    if let Some(last) = txn.final_response.clone() {
                        fx.sends.push((txn.path.clone(), last));
                    }
                    let next = (interval * 2).min(T2);
                    table.schedule(&key, now + next, Timer::Retransmit(next));
                }
                _ => table.remove(&key),
            }
        }
        drop(table);
        self.apply(fx);
    }

    /// INVITE transactions currently held.
    pub fn transactions(&self) -> usize {
        self.lock().txns.len()
    }
}

/// The server-transaction key [§17.2.3]: the branch when it carries the RFC 3261 magic cookie,
/// else the RFC 2543 fields. The method is left out so that CANCEL and ACK find their INVITE.
fn transaction_key(c: &Checked<'_>) -> Box<[u8]> {
    let mut key = Vec::with_capacity(96);
    match c.via.branch().filter(|b| b.starts_with(b"z9hG4bK")) {
        Some(branch) => key.extend_from_slice(branch),
        None => {
            key.extend_from_slice(c.call_id);
            key.push(0);
            key.extend_from_slice(c.from_tag.unwrap_or_default());
            key.push(0);
            key.extend_from_slice(c.cseq.to_string().as_bytes());
        }
    }
    key.push(0);
    key.extend_from_slice(c.via.host);
    key.extend_from_slice(c.via.port.unwrap_or(0).to_be_bytes().as_slice());
    key.into()
}

/// From tag, CSeq number and Request-URI: equal for two copies of one request.
fn merge_id(c: &Checked<'_>) -> Box<[u8]> {
    let mut id = Vec::with_capacity(64);
    id.extend_from_slice(c.from_tag.unwrap_or_default());
    id.push(0);
    id.extend_from_slice(&c.cseq.to_be_bytes());
    id.extend_from_slice(c.uri);
    id.into()
}

fn respond(
    msg: &Message<'_>,
    source: SocketAddr,
    code: u16,
    reason: &str,
    tag: &str,
    extra: &[(&str, &str)],
) -> Bytes {
    count_response(code);
    reply::build(
        msg,
        source,
        Reply {
            code,
            reason,
            to_tag: Some(tag),
            extra,
        },
    )
    .into()
}

fn count_response(code: u16) {
    metrics::counter!(crate::telephony::SIP_RESPONSES_TOTAL, "code" => code_label(code))
        .increment(1);
}

/// The `code` label of a response counted: a static string for every code this endpoint
/// sends (no allocation per response), the number formatted for any other.
fn code_label(code: u16) -> metrics::SharedString {
    macro_rules! codes {
        ($($n:literal)*) => {
            match code {
                $($n => metrics::SharedString::const_str(stringify!($n)),)*
                other => other.to_string().into(),
            }
        };
    }
    codes!(100 180 183 200 202 400 403 404 405 406 408 415 416 420 480 481 482 486 487 488 489
        500 501 503 505 513)
}

/// A fresh To tag: 64 random bits, hex.
fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn response_code_labels_are_the_codes() {
        for code in [100u16, 180, 200, 486, 513, 599, 699] {
            assert_eq!(&*super::code_label(code), code.to_string());
        }
    }

    use super::*;

    #[test]
    fn cseq_of_cancel_shares_the_invite_key() {
        let invite = b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 5 INVITE\r\n\r\n";
        let cancel = b"CANCEL sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:1@h>\r\nCall-ID: c\r\nCSeq: 5 CANCEL\r\n\r\n";
        let a = scan(invite, Transport::Datagram).expect("ok");
        let b = scan(cancel, Transport::Datagram).expect("ok");
        let ka = transaction_key(&check::request(&a).expect("ok"));
        let kb = transaction_key(&check::request(&b).expect("ok"));
        assert_eq!(ka, kb);
    }
}
