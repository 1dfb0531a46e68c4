//! What the CTI event-stream intakes (Asterisk AMI, FreeSWITCH ESL, the HTTP webhook) share:
//! the per-PBX book of calls that makes their events idempotent and lets a resync end the calls
//! that vanished, and the hand-off of call events to the tracker. The reconnect delay is
//! `crate::backoff`'s.
//!
//! Owns no protocol: `ami` and `esl` turn their wire events into `ring`/`answer`/`end_*` calls
//! on a [`Book`]; the book decides whether that is news and returns the [`CallEvent`] if so.
//!
//! ```text
//!   ring(ext) ──▶ leg Ringing ── answer(ext) ──▶ leg Answered (other legs: answered elsewhere)
//!       │                                          │
//!       └── end_leg(ext) ──▶ leg Ended             └── end_leg(ext) / end_call ──▶ call gone
//!   begin_resync … (events and listed channels touch calls) … finish_resync: untouched → Ended
//! ```

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

pub use crate::secret::{Secret, secret_from_env};

use crate::calls::{CallEvent, EndReason, EventSink, Intake};
use crate::calls::{Caller, IdentitySource as Source};

/// Most calls a book holds for one PBX; beyond it new calls are dropped and counted (a resync
/// removes the stale ones).
pub const BOOK_CAPACITY: usize = 20_000;
/// Most legs remembered per call.
pub const LEGS_PER_CALL: usize = 256;

/// The numbers that mean "no caller ID" (RFC 3323 §4.1.1.3 practice; Asterisk's `<unknown>`).
const ANONYMOUS: &[&str] = &[
    "anonymous",
    "restricted",
    "unavailable",
    "private",
    "unknown",
    "<unknown>",
    "withheld",
];

/// A caller from CTI caller-ID fields (AMI `CallerIDNum/Name`, ESL `Caller-Caller-ID-*`).
/// Empty values and Asterisk's `<unknown>` are absent; anonymous forms mark the caller withheld.
/// The fields play the role SIP's `From` plays, so the source is [`Source::From`].
pub fn caller(number: Option<&str>, name: Option<&str>) -> Caller {
    let clean = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("<unknown>"))
            .map(str::to_owned)
    };
    let number = clean(number);
    let display = clean(name);
    let anonymous = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|v| ANONYMOUS.iter().any(|a| v.eq_ignore_ascii_case(a)))
    };
    let withheld = anonymous(&number) || (number.is_none() && anonymous(&display));
    Caller {
        number: number.filter(|_| !withheld),
        display,
        source: Source::From,
        withheld,
    }
}

/// A leg as the book last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ringing,
    Answered,
    Ended,
}

#[derive(Debug)]
struct Record {
    touched: u64,
    answered: bool,
    legs: HashMap<String, Mark>,
}

/// The calls one PBX connection has reported, by the PBX's call key (AMI `Linkedid`, ESL a-leg
/// UUID). Survives reconnects, so that the resync after one can tell what vanished.
#[derive(Debug)]
pub struct Book {
    intake: Intake,
    /// Prefixed to every key (`pbx1:1731000.81`) so two PBXs never share a call.
    prefix: String,
    calls: HashMap<String, Record>,
    seq: u64,
    resync_from: Option<u64>,
}

impl Book {
    /// An empty book for one PBX.
    pub fn new(intake: Intake, pbx: &str) -> Self {
        Book {
            intake,
            prefix: pbx.to_owned(),
            calls: HashMap::new(),
            seq: 0,
            resync_from: None,
        }
    }

    fn key(&self, call: &str) -> String {
        format!("{}:{call}", self.prefix)
    }

    fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Whether the book holds this call.
    pub fn knows(&self, call: &str) -> bool {
        self.calls.contains_key(call)
    }

    /// How many calls the book holds.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Notes that the PBX still has this call (any event, or a resync listing).
    pub fn touch(&mut self, call: &str) {
        let seq = self.bump();
        if let Some(record) = self.calls.get_mut(call) {
            record.touched = seq;
        }
    }

    /// `ext` is ringing for `call`; an event unless it already was.
    pub fn ring(
        &mut self,
        call: &str,
        ext: &str,
        caller: &Caller,
        dialled: Option<&str>,
    ) -> Option<CallEvent> {
        let seq = self.bump();
        if !self.calls.contains_key(call) {
            if self.calls.len() >= BOOK_CAPACITY {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cti_book_full")
                    .increment(1);
                return None;
            }
            self.calls.insert(
                call.to_owned(),
                Record {
                    touched: seq,
                    answered: false,
                    legs: HashMap::new(),
                },
            );
        }
        let record = self.calls.get_mut(call)?;
        record.touched = seq;
        match record.legs.get(ext) {
            Some(Mark::Ringing | Mark::Answered) => return None,
            Some(Mark::Ended) => {}
            None if record.legs.len() >= LEGS_PER_CALL => return None,
            None => {}
        }
        record.legs.insert(ext.to_owned(), Mark::Ringing);
        Some(CallEvent::Ringing {
            key: self.key(call),
            intake: self.intake,
            extension: ext.to_owned(),
            caller: caller.clone(),
            dialled: dialled.map(str::to_owned),
        })
    }

    /// `ext` answered `call`; an event unless the call was answered already or never rang.
    pub fn answer(&mut self, call: &str, ext: Option<&str>) -> Option<CallEvent> {
        let seq = self.bump();
        let record = self.calls.get_mut(call)?;
        record.touched = seq;
        if record.answered {
            return None;
        }
        if let Some(ext) = ext
            && !matches!(record.legs.get(ext), Some(Mark::Ringing))
        {
            // Only a leg we saw ringing can answer (the caller's own leg answering an IVR is no
            // agent answering).
            return None;
        }
        record.answered = true;
        for (leg, mark) in &mut record.legs {
            if *mark == Mark::Ringing {
                *mark = if Some(leg.as_str()) == ext {
                    Mark::Answered
                } else {
                    Mark::Ended
                };
            }
        }
        Some(CallEvent::Answered {
            key: self.key(call),
            intake: self.intake,
            by: ext.map(str::to_owned),
        })
    }

    /// The leg at `ext` ended. An answered leg ending ends the call (the tracker does the same),
    /// and so does the last ringing leg of an unanswered call.
    pub fn end_leg(&mut self, call: &str, ext: &str, reason: EndReason) -> Option<CallEvent> {
        let seq = self.bump();
        let record = self.calls.get_mut(call)?;
        record.touched = seq;
        let mark = record.legs.get_mut(ext)?;
        let was = *mark;
        if was == Mark::Ended {
            return None;
        }
        *mark = Mark::Ended;
        let over = was == Mark::Answered
            || (!record.answered && record.legs.values().all(|m| *m == Mark::Ended));
        if over {
            self.calls.remove(call);
        }
        Some(CallEvent::Ended {
            key: self.key(call),
            intake: self.intake,
            extension: Some(ext.to_owned()),
            reason,
        })
    }

    /// The whole call ended: `Completed` if it was answered, else `unanswered`.
    pub fn end_call(&mut self, call: &str, unanswered: EndReason) -> Option<CallEvent> {
        let record = self.calls.remove(call)?;
        Some(CallEvent::Ended {
            key: self.key(call),
            intake: self.intake,
            extension: None,
            reason: if record.answered {
                EndReason::Completed
            } else {
                unanswered
            },
        })
    }

    /// A resync starts: from now on, every call the PBX mentions is touched.
    pub fn begin_resync(&mut self) {
        self.resync_from = Some(self.bump());
    }

    /// The resync was refused or cut short: end nothing.
    pub fn abort_resync(&mut self) {
        self.resync_from = None;
    }

    /// The resync listing is complete: calls not touched since it began are gone from the PBX
    /// and end (completed if answered, else cancelled).
    pub fn finish_resync(&mut self) -> Vec<CallEvent> {
        let Some(from) = self.resync_from.take() else {
            return Vec::new();
        };
        let gone: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, r)| r.touched < from)
            .map(|(k, _)| k.clone())
            .collect();
        gone.iter()
            .filter_map(|call| self.end_call(call, EndReason::Cancelled))
            .collect()
    }
}

/// Hands call events to the tracker and keeps the per-input counters.
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: EventSink,
}

impl Emitter {
    /// Sends into the daemon's bounded event queue.
    pub fn new(tx: mpsc::Sender<CallEvent>) -> Self {
        Emitter { tx: tx.into() }
    }

    /// Queues events without waiting; a full queue drops and counts them (the tracker is the
    /// bottleneck then, and waiting would stall the PBX connection into a disconnect).
    pub fn emit(&self, events: impl IntoIterator<Item = CallEvent>) -> bool {
        let mut all = true;
        for event in events {
            all &= self.tx.submit(event);
        }
        all
    }
}

/// Counts one received protocol event (`kind` from a fixed list, so labels stay bounded).
pub fn count_event(input: &'static str, kind: &'static str) {
    metrics::counter!(crate::telephony::CTI_EVENTS_TOTAL, "input" => input, "kind" => kind)
        .increment(1);
}

/// Counts one line or frame that could not be understood.
pub fn count_garbage(input: &'static str) {
    metrics::counter!(crate::telephony::CTI_GARBAGE_TOTAL, "input" => input).increment(1);
}

/// Records how late an event arrived, from the PBX's own timestamp (seconds since the epoch).
pub fn record_lag(input: &'static str, event_time: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let lag = now - event_time;
    // Clocks differ: a negative lag is skew, not news; an absurd one is a bad timestamp.
    if lag.is_finite() && (0.0..86_400.0).contains(&lag) {
        metrics::histogram!(crate::telephony::CTI_EVENT_LAG_SECONDS, "input" => input).record(lag);
    }
}

/// Sets `screenpop_cti_connected{input,peer}`.
pub fn set_connected(input: &'static str, peer: &str, up: bool) {
    metrics::gauge!(crate::telephony::CTI_CONNECTED, "input" => input, "peer" => peer.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

/// Counts a reconnect.
pub fn count_reconnect(input: &'static str) {
    metrics::counter!(crate::telephony::CTI_RECONNECTS_TOTAL, "input" => input).increment(1);
}

/// Counts a completed resync.
pub fn count_resync(input: &'static str) {
    metrics::counter!(crate::telephony::CTI_RESYNCS_TOTAL, "input" => input).increment(1);
}

/// A PBX client intake's connection, for the shared [`reconnect`] loop.
pub trait Session {
    /// Why a connection ended.
    type Error: std::fmt::Display;
    /// The `input` metrics label (`ami`, `esl`).
    const INPUT: &'static str;
    /// What the logs call it ("AMI", "Event socket").
    const WHAT: &'static str;

    /// Whether the PBX refused our credentials (logged as an error, not a lost connection).
    fn refused(error: &Self::Error) -> bool;

    /// Connects (within its own timeout) and serves until the connection ends, or until
    /// `cancel` (then `Ok`). The session resets `backoff` once it is up.
    fn run_once(
        &mut self,
        backoff: &mut crate::backoff::Backoff,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Connects to a PBX over TCP within `timeout` (`timed_out` otherwise), Nagle off: small
/// commands and events must not wait for ACKs.
pub async fn connect<E: From<std::io::Error>>(
    address: &str,
    timeout: Duration,
    timed_out: E,
) -> Result<tokio::net::TcpStream, E> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| timed_out)??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The reconnect loop every PBX client intake shares: a session, then (unless cancelled) the
/// reconnect counted, the peer marked down, one log line saying why, a jittered backoff, and
/// again.
pub async fn reconnect<S: Session>(
    session: &mut S,
    name: &str,
    address: &str,
    mut backoff: crate::backoff::Backoff,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let mut first = true;
    loop {
        if !first {
            count_reconnect(S::INPUT);
        }
        first = false;
        let result = tokio::select! {
            () = cancel.cancelled() => Ok(()),
            result = session.run_once(&mut backoff, cancel) => result,
        };
        set_connected(S::INPUT, name, false);
        match result {
            Ok(()) => return,
            Err(error) if S::refused(&error) => {
                tracing::error!(%error, %address, "{} login refused.", S::WHAT)
            }
            Err(error) => {
                tracing::warn!(%error, %address, "{} connection lost; reconnecting.", S::WHAT)
            }
        }
        if !pause(backoff.next_delay(), cancel).await {
            return;
        }
    }
}

/// Waits `delay` unless cancelled first; `false` when cancelled.
pub async fn pause(delay: Duration, cancel: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Caller {
        caller(Some("+14155550100"), Some("Acme"))
    }

    #[test]
    fn book_is_idempotent_and_ends_the_last_leg() {
        let mut book = Book::new(Intake::AMI, "pbx");
        assert!(book.ring("c", "1001", &acme(), None).is_some());
        assert!(book.ring("c", "1001", &acme(), None).is_none(), "repeat");
        assert!(book.ring("c", "1002", &acme(), None).is_some());
        assert!(book.answer("c", Some("1003")).is_none(), "never rang");
        let answered = book.answer("c", Some("1002"));
        assert!(matches!(answered, Some(CallEvent::Answered { ref key, .. }) if key == "pbx:c"));
        assert!(book.answer("c", Some("1002")).is_none());
        assert!(
            book.end_leg("c", "1001", EndReason::Cancelled).is_none(),
            "the loser already ended with the answer"
        );
        assert!(book.end_leg("c", "1002", EndReason::Completed).is_some());
        assert!(!book.knows("c"), "an answered leg ending ends the call");
    }

    #[test]
    fn resync_ends_what_was_not_touched() {
        let mut book = Book::new(Intake::ESL, "fs");
        book.ring("a", "1001", &acme(), None);
        book.ring("b", "1002", &acme(), None);
        book.begin_resync();
        book.touch("a");
        let ended = book.finish_resync();
        assert_eq!(ended.len(), 1);
        assert!(matches!(
            &ended[0],
            CallEvent::Ended { key, extension: None, reason: EndReason::Cancelled, .. } if key == "fs:b"
        ));
        assert!(book.knows("a"));
        assert!(book.finish_resync().is_empty(), "no resync in progress");
    }

    #[test]
    fn caller_forms() {
        let c = caller(Some("<unknown>"), Some(""));
        assert_eq!((c.number, c.display, c.withheld), (None, None, false));
        let c = caller(Some("anonymous"), Some("Anonymous"));
        assert!(c.withheld && c.number.is_none());
        let c = caller(Some(" +14155550100 "), Some("Acme"));
        assert_eq!(c.number.as_deref(), Some("+14155550100"));
    }
}
