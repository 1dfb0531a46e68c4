//! The call table.
//!
//! ```text
//!                 Ringing(ext)             Answered(by)               Ended / all legs ended
//!   (new call) ───────────────▶ Ringing ───────────────▶ Answered ──────────────────────────▶ Ended
//!                                 │  ▲ more Ringing(ext): another leg   │ other legs end
//!                                 │  └───────────────────────           │ answered_elsewhere
//!                                 └──────── every leg ended ────────────┴──▶ Ended(reason)
//! ```
//!
//! A call ringing several extensions (ring group, queue) is one call with several legs. When one
//! leg answers, the other ringing legs end with `answered_elsewhere`. A call ends when every leg
//! has ended (its reason is the last leg's), or when an intake ends it as a whole. Calls that are
//! never ended by their intake expire (`ring_timeout` while ringing, `answered_ttl` once
//! answered); the table is bounded by `max_calls`, evicting the oldest call when full. Both are
//! counted as `expired`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::event::Caller;
use super::event::{CallEvent, EndReason, Intake};
use crate::pii::Masked;
use crate::resolve::{Resolution, Resolver};

/// Capacity of the update broadcast; a subscriber that falls further behind must resync from
/// [`Calls::live`].
pub const UPDATE_CAPACITY: usize = 4096;

/// Tracker settings.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Most calls held at once.
    pub max_calls: usize,
    /// A ringing call no intake ends is expired after this long.
    pub ring_timeout: Duration,
    /// An answered call that no intake can see end (fork mode never sees the BYE) is expired
    /// after this long.
    pub answered_ttl: Duration,
    /// An answered call whose end an intake would report is expired after this long anyway.
    pub max_call_duration: Duration,
}

/// A leg's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum LegState {
    /// The extension is ringing.
    Ringing,
    /// This extension answered.
    Answered,
    /// The leg is over.
    Ended(EndReason),
}

/// One extension rung by a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leg {
    /// The extension.
    pub extension: String,
    /// Its state.
    #[serde(flatten)]
    pub state: LegState,
}

/// A call's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CallState {
    /// At least one leg ringing, nobody answered.
    Ringing,
    /// Answered; by this extension when the intake could tell.
    Answered {
        /// The answering extension.
        by: Option<String>,
    },
    /// Over.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// A call as the rest of screenpop sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    /// screenpop's own call id (stable across intakes and restarts of nothing; 64 random bits).
    pub id: String,
    /// Which intake saw it.
    pub intake: Intake,
    /// The caller's number as presented (not normalised), if any.
    pub caller_number: Option<String>,
    /// The caller's display name, if any.
    pub caller_display: Option<String>,
    /// The caller's number normalised (E.164, or its digits), when known: what per-caller
    /// state is keyed by.
    #[serde(skip)]
    pub caller_key: Option<String>,
    /// The caller's number in E.164 (`+14155550100`) when it is a valid number and the caller
    /// did not withhold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_e164: Option<String>,
    /// The caller withheld their identity.
    pub withheld: bool,
    /// A withheld caller's number as presented: for the call log inside the trust domain, never
    /// sent towards agents.
    #[serde(skip)]
    pub withheld_number: Option<String>,
    /// The originally dialled number, if known.
    pub dialled: Option<String>,
    /// Who the caller is, as far as the directory knows.
    pub resolution: Resolution,
    /// When the call was first seen.
    #[serde(with = "crate::time::rfc3339")]
    pub started: SystemTime,
    /// When it was answered, if it was.
    #[serde(
        with = "crate::time::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub answered_at: Option<SystemTime>,
    /// Whether an intake that reports hang-ups saw the call: false for a call only a SIP fork
    /// target saw, whose end screenpop cannot see once it is answered.
    pub hangup_seen: bool,
    /// The call's state.
    #[serde(flatten)]
    pub state: CallState,
    /// The extensions rung.
    pub legs: Vec<Leg>,
    /// The intake's own key for the call (the SIP Call-ID, `pbx1:<Linkedid>`): what another
    /// node's events for it carry.
    #[serde(skip)]
    pub key: String,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This extension started ringing (a new call, or a new leg of one).
    Ringing {
        /// The extension.
        extension: String,
    },
    /// The call was answered.
    Answered {
        /// By whom, if known.
        by: Option<String>,
    },
    /// One leg ended while the call goes on.
    LegEnded {
        /// The extension.
        extension: String,
        /// Why.
        reason: EndReason,
    },
    /// The call ended.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// A change and the call after it.
#[derive(Debug, Clone)]
pub struct CallUpdate {
    /// The call after the change.
    pub call: Arc<Call>,
    /// The change.
    pub change: Change,
}

struct Entry {
    call: Call,
    deadline: Instant,
    /// Position in [`Table::order`].
    seq: u64,
}

/// The calls, with their insertion order so that eviction of the oldest is O(log n).
struct Table {
    /// Boxed: a growing table moves pointers, not calls.
    calls: HashMap<(Intake, String), Box<Entry>>,
    order: BTreeMap<u64, (Intake, String)>,
    /// (deadline, seq) of every call: expiry takes only what is due.
    deadlines: BTreeSet<(Instant, u64)>,
    next_seq: u64,
    /// How many of `calls` are answered (the rest are ringing: ended calls are removed).
    answered: usize,
    /// Keys whose call ended, with how many calls they have had: the next call on the same
    /// key (an AMI Linkedid after a blind transfer) gets a new id, the same on every node that
    /// saw the same events. Bounded: forgotten wholesale past [`MAX_GENERATIONS`].
    generations: HashMap<(Intake, String), u32>,
}

/// Most ended keys remembered for their generation.
const MAX_GENERATIONS: usize = 65_536;

impl Table {
    /// A table sized for `max_calls` from the start: a hash table that doubles while calls
    /// ring rehashes into fresh memory, and first touches of fresh pages stall the call path
    /// for milliseconds at a morning's ramp (docs/performance.md). Only the control bytes are
    /// written now; the slots' pages are touched as calls arrive.
    fn with_capacity(max_calls: usize) -> Table {
        Table {
            calls: HashMap::with_capacity(max_calls),
            order: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_seq: 0,
            answered: 0,
            generations: HashMap::with_capacity(MAX_GENERATIONS),
        }
    }

    fn remove(&mut self, key: &(Intake, String)) -> Option<Box<Entry>> {
        let entry = self.calls.remove(key)?;
        if self.generations.len() >= MAX_GENERATIONS {
            self.generations.clear();
        }
        *self.generations.entry(key.clone()).or_default() += 1;
        self.order.remove(&entry.seq);
        self.deadlines.remove(&(entry.deadline, entry.seq));
        if matches!(entry.call.state, CallState::Answered { .. }) {
            self.answered -= 1;
        }
        Some(entry)
    }

    /// Publishes calls by state.
    fn gauges(&self) {
        metrics::gauge!(crate::calls::CALLS, "state" => "ringing")
            .set((self.calls.len() - self.answered) as f64);
        metrics::gauge!(crate::calls::CALLS, "state" => "answered").set(self.answered as f64);
    }

    fn evict_oldest(&mut self, out: &mut Vec<CallUpdate>) {
        let Some((_, key)) = self.order.pop_first() else {
            return;
        };
        // `remove` keeps the deadlines and the answered count right (its `order` entry is gone).
        if let Some(entry) = self.remove(&key) {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "call_table_full")
                .increment(1);
            out.push(end_call(entry.call, EndReason::Expired));
        }
    }
}

/// The shared call table.
pub struct Calls {
    config: TrackerConfig,
    table: Mutex<Table>,
    /// Taken before the table's lock is released and held while the updates are published:
    /// updates reach observers in the order they were applied, whichever threads applied
    /// them (a SIP listener, the timer task, another node's events).
    publishing: Mutex<()>,
    updates: broadcast::Sender<CallUpdate>,
    observers: RwLock<Vec<Arc<dyn Observer>>>,
    resolver: Arc<dyn Resolver>,
    /// Where this node's own events are copied for the other nodes (a cluster's bounded
    /// publish queue); never waited on.
    replica: std::sync::OnceLock<mpsc::Sender<(CallEvent, u32)>>,
}

/// Where an intake hands its call events: straight to the call table, applied on the intake's
/// own thread ([`Calls::submit`]: no hand-over to another task between a SIP packet and its
/// pop), or a bounded queue that [`Calls::run`] applies from.
#[derive(Clone)]
pub enum EventSink {
    /// Applied in line.
    Table(Arc<Calls>),
    /// Queued; a full queue drops the event.
    Queue(mpsc::Sender<CallEvent>),
}

impl EventSink {
    /// Hands one event over without waiting; `false` if a full queue dropped it (counted in
    /// `screenpop_drops_total{reason="call_event_queue_full"}`).
    pub fn submit(&self, event: CallEvent) -> bool {
        match self {
            EventSink::Table(calls) => {
                calls.submit(event);
                true
            }
            EventSink::Queue(tx) => {
                let queued = tx.try_send(event).is_ok();
                if !queued {
                    metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "call_event_queue_full")
                        .increment(1);
                }
                queued
            }
        }
    }
}

impl From<mpsc::Sender<CallEvent>> for EventSink {
    fn from(tx: mpsc::Sender<CallEvent>) -> Self {
        EventSink::Queue(tx)
    }
}

impl From<Arc<Calls>> for EventSink {
    fn from(calls: Arc<Calls>) -> Self {
        EventSink::Table(calls)
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventSink::Table(_) => "EventSink::Table",
            EventSink::Queue(_) => "EventSink::Queue",
        })
    }
}

/// A consumer of every call update, called in line, in order, on the thread that applied the
/// event, after the table's lock is released. For the daemon's own consumers (push hub, journal,
/// call log): each is quick and never waits, and being called in line keeps a pop from crossing
/// threads between the SIP packet and the WebSocket write (each hand-over to another task can
/// wake an idle worker thread, which costs a VM tens to hundreds of microseconds).
pub trait Observer: Send + Sync {
    /// Takes one update; must not block and must not apply call events.
    fn observe(&self, update: &CallUpdate);
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Calls {
    /// Creates an empty table.
    pub fn new(config: TrackerConfig, resolver: Arc<dyn Resolver>) -> Arc<Self> {
        let (updates, _) = broadcast::channel(UPDATE_CAPACITY);
        Arc::new(Calls {
            table: Mutex::new(Table::with_capacity(config.max_calls)),
            publishing: Mutex::new(()),
            config,
            updates,
            observers: RwLock::default(),
            resolver,
            replica: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory calls are resolved against.
    pub fn resolver(&self) -> &Arc<dyn Resolver> {
        &self.resolver
    }

    /// Subscribes to every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallUpdate> {
        self.updates.subscribe()
    }

    /// Adds an in-line consumer of every change from now on (see [`Observer`]).
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        self.observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    /// The right to publish next; take it while holding the table's lock.
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.publishing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes updates in the turn taken when they were applied.
    fn publish(&self, out: Vec<CallUpdate>, turn: MutexGuard<'_, ()>) {
        if out.is_empty() {
            return;
        }
        let _turn = turn;
        let observers = self.observers.read().unwrap_or_else(|p| p.into_inner());
        for update in out {
            for o in observers.iter() {
                o.observe(&update);
            }
            // No receivers is not an error: the broadcast is for optional consumers.
            let _ = self.updates.send(update);
        }
    }

    /// The calls ringing or answered now, optionally only those with a leg at one of
    /// `extensions`. Oldest first.
    pub fn live(&self, extensions: Option<&[String]>) -> Vec<Call> {
        let table = self.lock();
        let mut calls: Vec<Call> = table
            .calls
            .values()
            .map(|e| &e.call)
            .filter(|c| {
                extensions.is_none_or(|exts| c.legs.iter().any(|l| exts.contains(&l.extension)))
            })
            .cloned()
            .collect();
        calls.sort_by_key(|c| c.started);
        calls
    }

    /// Calls now (ringing, answered), as exported in `screenpop_calls{state}`.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.calls.len() - table.answered, table.answered)
    }

    /// Copies every event of this node's intakes to `tx` from now on (a cluster's publish
    /// queue): a full queue drops the copy and counts it, the call goes on here. Events from
    /// other nodes come in through [`Calls::apply`] and are not copied again.
    pub fn replicate_to(&self, tx: mpsc::Sender<(CallEvent, u32)>) {
        let _ = self.replica.set(tx);
    }

    /// The events that rebuild the live calls on another node (a node that joins or comes
    /// back): each ringing or answered leg rung, then the answer; each with its call's
    /// generation (see [`Calls::apply_remote`]).
    pub fn resync_events(&self) -> Vec<(CallEvent, u32)> {
        let table = self.lock();
        let mut events = Vec::new();
        for ((intake, key), entry) in &table.calls {
            let call = &entry.call;
            let generation = table
                .generations
                .get(&(*intake, key.clone()))
                .copied()
                .unwrap_or(0);
            let caller = Caller {
                number: call.caller_number.clone().or(call.withheld_number.clone()),
                display: call.caller_display.clone(),
                source: super::IdentitySource::From,
                withheld: call.withheld,
            };
            for leg in &call.legs {
                events.push((
                    CallEvent::Ringing {
                        key: key.clone(),
                        intake: *intake,
                        extension: leg.extension.clone(),
                        caller: caller.clone(),
                        dialled: call.dialled.clone(),
                    },
                    generation,
                ));
            }
            if let CallState::Answered { by } = &call.state {
                events.push((
                    CallEvent::Answered {
                        key: key.clone(),
                        intake: *intake,
                        by: by.clone(),
                    },
                    generation,
                ));
            }
        }
        events
    }

    /// Applies events until the channel closes or `cancel` fires; expires stale calls meanwhile.
    pub async fn run(
        self: Arc<Self>,
        mut events: mpsc::Receiver<CallEvent>,
        cancel: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = sweep.tick() => self.expire(Instant::now()),
                event = events.recv() => match event {
                    Some(event) => self.submit(event),
                    None => return,
                },
            }
        }
    }

    /// Applies one event of this node's own intakes, on the caller's thread, and copies it to
    /// the cluster's publish queue when there is one (a full queue drops the copy and counts
    /// it; the call goes on here).
    pub fn submit(&self, event: CallEvent) {
        let replica = self.replica.get();
        let copy = replica.map(|_| event.clone());
        let generation = self.apply_at(event, None);
        if let (Some(replica), Some(copy)) = (replica, copy)
            && replica.try_send((copy, generation)).is_err()
        {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cluster_publish_queue_full")
                .increment(1);
        }
    }

    /// Applies one event.
    pub fn apply(&self, event: CallEvent) {
        self.apply_at(event, None);
    }

    /// Applies another node's event, about the `generation`th call on its key there (how many
    /// calls on that key that node had seen end). An event about a call that already ended
    /// here is stale and dropped (a node that comes back re-sends its live calls, some of which
    /// may have ended here meanwhile): without that, the key would start a new call.
    pub fn apply_remote(&self, event: CallEvent, generation: u32) {
        self.apply_at(event, Some(generation));
    }

    /// Applies one event (from another node: with its generation); returns the generation of
    /// the call it applied to.
    fn apply_at(&self, event: CallEvent, remote: Option<u32>) -> u32 {
        let now = Instant::now();
        let mut out = Vec::new();
        let generation;
        let turn;
        {
            let mut guard = self.lock();
            let table = &mut *guard;
            let (intake, key) = match &event {
                CallEvent::Ringing { key, intake, .. }
                | CallEvent::Answered { key, intake, .. }
                | CallEvent::Ended { key, intake, .. } => (*intake, key),
            };
            let map_key = (family(intake), key.clone());
            let here = table.generations.get(&map_key).copied().unwrap_or(0);
            if let Some(theirs) = remote {
                if theirs < here {
                    metrics::counter!(crate::calls::DUPLICATES_TOTAL, "intake" => intake.label())
                        .increment(1);
                    return theirs;
                }
                if theirs > here && !table.calls.contains_key(&map_key) {
                    table.generations.insert(map_key, theirs);
                }
            }
            generation = remote.unwrap_or(here).max(here);
            match event {
                CallEvent::Ringing {
                    key,
                    intake,
                    extension,
                    caller,
                    dialled,
                } => {
                    let map_key = (family(intake), key);
                    if !table.calls.contains_key(&map_key) {
                        if table.calls.len() >= self.config.max_calls {
                            table.evict_oldest(&mut out);
                        }
                        let generation = table.generations.get(&map_key).copied().unwrap_or(0);
                        let call = self.new_call(
                            call_id(intake, &map_key.1, generation),
                            intake,
                            &map_key.1,
                            &caller,
                            dialled,
                        );
                        metrics::counter!(crate::calls::CALLS_TOTAL, "intake" => intake.label())
                            .increment(1);
                        table.next_seq += 1;
                        let seq = table.next_seq;
                        table.order.insert(seq, map_key.clone());
                        let deadline = now + self.config.ring_timeout;
                        table.deadlines.insert((deadline, seq));
                        table.calls.insert(
                            map_key.clone(),
                            Box::new(Entry {
                                call,
                                deadline,
                                seq,
                            }),
                        );
                    }
                    let Some(entry) = table.calls.get_mut(&map_key) else {
                        return generation;
                    };
                    let call = &mut entry.call;
                    call.hangup_seen |= intake.sees_hangup();
                    match call.legs.iter_mut().find(|l| l.extension == extension) {
                        Some(leg) if leg.state == LegState::Ringing => {
                            // Seen already: another intake, another node, a retransmission.
                            metrics::counter!(crate::calls::DUPLICATES_TOTAL, "intake" => intake.label())
                                .increment(1);
                            return generation;
                        }
                        Some(leg) => leg.state = LegState::Ringing,
                        None => call.legs.push(Leg {
                            extension: extension.clone(),
                            state: LegState::Ringing,
                        }),
                    }
                    if matches!(call.state, CallState::Ended { .. }) {
                        call.state = CallState::Ringing;
                    }
                    let span = tracing::info_span!("call", call_id = %call.id);
                    span.in_scope(|| {
                        tracing::info!(
                            extension = %extension,
                            caller = %Masked(call.caller_number.as_deref().unwrap_or("")),
                            withheld = call.withheld,
                            resolution = call.resolution.label(),
                            "Call ringing."
                        )
                    });
                    out.push(CallUpdate {
                        call: Arc::new(call.clone()),
                        change: Change::Ringing { extension },
                    });
                }
                CallEvent::Answered { key, intake, by } => {
                    let Some(entry) = table.calls.get_mut(&(family(intake), key)) else {
                        return generation;
                    };
                    let call = &mut entry.call;
                    if matches!(
                        call.state,
                        CallState::Answered { .. } | CallState::Ended { .. }
                    ) {
                        return generation;
                    }
                    call.state = CallState::Answered { by: by.clone() };
                    call.answered_at = Some(SystemTime::now());
                    call.hangup_seen |= intake.sees_hangup();
                    table.answered += 1;
                    table.deadlines.remove(&(entry.deadline, entry.seq));
                    entry.deadline = now
                        + if call.hangup_seen {
                            self.config.max_call_duration
                        } else {
                            self.config.answered_ttl
                        };
                    table.deadlines.insert((entry.deadline, entry.seq));
                    let mut losers = Vec::new();
                    for leg in &mut call.legs {
                        if leg.state != LegState::Ringing {
                            continue;
                        }
                        if by.as_deref() == Some(leg.extension.as_str()) {
                            leg.state = LegState::Answered;
                        } else if by.is_some() {
                            leg.state = LegState::Ended(EndReason::AnsweredElsewhere);
                            losers.push(leg.extension.clone());
                        }
                    }
                    tracing::info_span!("call", call_id = %call.id).in_scope(|| {
                        tracing::info!(by = by.as_deref().unwrap_or("unknown"), "Call answered.")
                    });
                    let snapshot = Arc::new(call.clone());
                    out.push(CallUpdate {
                        call: snapshot.clone(),
                        change: Change::Answered { by },
                    });
                    for extension in losers {
                        out.push(CallUpdate {
                            call: snapshot.clone(),
                            change: Change::LegEnded {
                                extension,
                                reason: EndReason::AnsweredElsewhere,
                            },
                        });
                    }
                }
                CallEvent::Ended {
                    key,
                    intake,
                    extension,
                    reason,
                } => {
                    let map_key = (family(intake), key);
                    let Some(entry) = table.calls.get_mut(&map_key) else {
                        return generation;
                    };
                    let call = &mut entry.call;
                    let whole = match &extension {
                        None => true,
                        Some(ext) => {
                            let Some(leg) = call.legs.iter_mut().find(|l| &l.extension == ext)
                            else {
                                return generation;
                            };
                            if matches!(leg.state, LegState::Ended(_)) {
                                return generation;
                            }
                            // An answered leg that ends ends the call: completed.
                            if leg.state == LegState::Answered {
                                leg.state = LegState::Ended(EndReason::Completed);
                                true
                            } else {
                                leg.state = LegState::Ended(reason);
                                call.legs
                                    .iter()
                                    .all(|l| matches!(l.state, LegState::Ended(_)))
                                    && !matches!(call.state, CallState::Answered { .. })
                            }
                        }
                    };
                    if !whole {
                        let ext = extension.unwrap_or_default();
                        out.push(CallUpdate {
                            call: Arc::new(call.clone()),
                            change: Change::LegEnded {
                                extension: ext,
                                reason,
                            },
                        });
                    } else if let Some(entry) = table.remove(&map_key) {
                        let reason = match (&entry.call.state, extension, reason) {
                            (CallState::Answered { .. }, _, _) => EndReason::Completed,
                            (_, _, r) => r,
                        };
                        out.push(end_call(entry.call, reason));
                    }
                }
            }
            table.gauges();
            turn = self.turn();
        }
        self.publish(out, turn);
        generation
    }

    fn new_call(
        &self,
        id: String,
        intake: Intake,
        key: &str,
        caller: &Caller,
        dialled: Option<String>,
    ) -> Call {
        let (resolution, number_key) = if caller.withheld {
            (Resolution::Withheld, None)
        } else {
            match caller.number.as_deref() {
                Some(number) => (self.resolver.resolve(number), self.resolver.key(number)),
                None => (Resolution::Unknown, None),
            }
        };
        let e164 = match &number_key {
            Some(crate::resolve::Key::E164(e164)) => Some(e164.clone()),
            _ => None,
        };
        let caller_key = number_key
            .map(|k| k.as_str().to_owned())
            .filter(|k| !k.is_empty());
        metrics::counter!(crate::calls::RESOLUTIONS_TOTAL, "result" => resolution.label())
            .increment(1);
        Call {
            id,
            intake,
            key: key.to_owned(),
            // Withheld means withheld: the number and name stay in the daemon (the call log
            // keeps the number), never in a frame, snapshot or API answer.
            caller_number: (!caller.withheld)
                .then(|| caller.number.as_deref().and_then(super::event::clean_text))
                .flatten(),
            withheld_number: caller
                .withheld
                .then(|| caller.number.as_deref().and_then(super::event::clean_text))
                .flatten(),
            caller_key,
            caller_e164: e164,
            caller_display: (!caller.withheld)
                .then(|| caller.display.as_deref().and_then(super::event::clean_text))
                .flatten(),
            withheld: caller.withheld,
            dialled,
            resolution,
            started: SystemTime::now(),
            answered_at: None,
            hangup_seen: false,
            state: CallState::Ringing,
            legs: Vec::new(),
        }
    }

    /// Ends every live call with `reason` (the daemon stopping).
    pub fn end_all(&self, reason: EndReason) {
        let mut out = Vec::new();
        let turn = {
            let mut table = self.lock();
            let keys: Vec<(Intake, String)> = table.calls.keys().cloned().collect();
            for key in keys {
                if let Some(entry) = table.remove(&key) {
                    out.push(end_call(entry.call, reason));
                }
            }
            table.gauges();
            self.turn()
        };
        self.publish(out, turn);
    }

    fn expire(&self, now: Instant) {
        let mut out = Vec::new();
        let turn = {
            let mut table = self.lock();
            while let Some(&(deadline, seq)) = table.deadlines.first()
                && deadline <= now
            {
                table.deadlines.pop_first();
                let Some(key) = table.order.get(&seq).cloned() else {
                    continue;
                };
                if let Some(entry) = table.remove(&key) {
                    out.push(end_call(entry.call, EndReason::Expired));
                }
            }
            table.gauges();
            self.turn()
        };
        self.publish(out, turn);
    }
}

/// The key space an intake's keys live in: SIP and HEP share the SIP Call-ID (a fork target
/// and a HEP capture of the same PBX see the same call, on one node or two).
fn family(intake: Intake) -> Intake {
    if intake == Intake::HEP {
        Intake::SIP
    } else {
        intake
    }
}

/// A call's id, from the intake's own key: the same call seen by several screenpop nodes (a
/// PBX forking to two, HEP copies to both, an AMI connection each) gets the same id on every
/// one. SIP and HEP share their key space (the SIP Call-ID); the other intakes' keys already
/// carry the PBX's name. `generation` counts the earlier calls on the same key. 64 bits of
/// SHA-256, hex.
pub fn call_id(intake: Intake, key: &str, generation: u32) -> String {
    use sha2::Digest;
    let family = family(intake).label();
    let mut hash = sha2::Sha256::new();
    hash.update(family.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    if generation > 0 {
        hash.update(generation.to_be_bytes());
    }
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn end_call(mut call: Call, reason: EndReason) -> CallUpdate {
    for leg in &mut call.legs {
        if !matches!(leg.state, LegState::Ended(_)) {
            leg.state = LegState::Ended(reason);
        }
    }
    call.state = CallState::Ended { reason };
    metrics::counter!(crate::calls::CALLS_ENDED_TOTAL, "reason" => reason.label()).increment(1);
    tracing::info_span!("call", call_id = %call.id)
        .in_scope(|| tracing::info!(reason = reason.label(), "Call ended."));
    CallUpdate {
        call: Arc::new(call),
        change: Change::Ended { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::IdentitySource as Source;
    use crate::resolve::Resolution;

    struct NoDirectory;
    impl Resolver for NoDirectory {
        fn resolve(&self, _: &str) -> Resolution {
            Resolution::Unknown
        }
    }

    fn calls() -> Arc<Calls> {
        Calls::new(
            TrackerConfig {
                max_calls: 2,
                ring_timeout: Duration::from_secs(60),
                answered_ttl: Duration::from_secs(600),
                max_call_duration: Duration::from_secs(3600),
            },
            Arc::new(NoDirectory),
        )
    }

    fn ringing(key: &str, ext: &str) -> CallEvent {
        CallEvent::Ringing {
            key: key.into(),
            intake: Intake::SIP,
            extension: ext.into(),
            caller: Caller {
                number: Some("+15550100".into()),
                display: None,
                source: Source::From,
                withheld: false,
            },
            dialled: None,
        }
    }

    #[test]
    fn another_nodes_stale_events_never_bring_an_ended_call_back() {
        let calls = calls();
        let ended = |key: &str| CallEvent::Ended {
            key: key.into(),
            intake: Intake::SIP,
            extension: None,
            reason: EndReason::Cancelled,
        };
        calls.apply(ringing("k", "1001"));
        calls.apply(ended("k"));
        assert_eq!(calls.counts(), (0, 0));
        // Another node re-sends the call it still thought live (generation 0): stale here.
        calls.apply_remote(ringing("k", "1001"), 0);
        calls.apply_remote(ringing("k", "1002"), 0);
        assert_eq!(calls.counts(), (0, 0), "no ghost call");
        // Its next call on the same key (generation 1) is a new call, with the id every node
        // gives it.
        calls.apply_remote(ringing("k", "1001"), 1);
        let live = calls.live(None);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, call_id(Intake::SIP, "k", 1));
        // A node that has seen more calls on a key end catches this one up.
        calls.apply_remote(ringing("j", "1001"), 3);
        assert!(
            calls
                .live(None)
                .iter()
                .any(|c| c.id == call_id(Intake::SIP, "j", 3))
        );
        // Events of the live generation apply as usual.
        calls.apply_remote(ended("j"), 3);
        assert_eq!(calls.counts(), (1, 0));
    }

    #[test]
    fn ring_group_answered_by_one() {
        let calls = calls();
        let mut rx = calls.subscribe();
        for ext in ["1001", "1002", "1003"] {
            calls.apply(ringing("c1", ext));
        }
        calls.apply(ringing("c1", "1002")); // a duplicate changes nothing
        assert_eq!(calls.counts(), (1, 0));
        calls.apply(CallEvent::Answered {
            key: "c1".into(),
            intake: Intake::SIP,
            by: Some("1002".into()),
        });
        let changes: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| u.change)
            .collect();
        assert_eq!(changes.len(), 6, "{changes:?}");
        assert_eq!(
            changes[3],
            Change::Answered {
                by: Some("1002".into())
            }
        );
        assert_eq!(
            changes[4],
            Change::LegEnded {
                extension: "1001".into(),
                reason: EndReason::AnsweredElsewhere
            }
        );
        assert_eq!(
            changes[5],
            Change::LegEnded {
                extension: "1003".into(),
                reason: EndReason::AnsweredElsewhere
            }
        );
        calls.apply(CallEvent::Ended {
            key: "c1".into(),
            intake: Intake::SIP,
            extension: None,
            reason: EndReason::Completed,
        });
        assert_eq!(
            rx.try_recv().expect("ended").change,
            Change::Ended {
                reason: EndReason::Completed
            }
        );
        assert!(calls.live(None).is_empty());
    }

    #[test]
    fn last_leg_cancelled_ends_the_call_and_table_is_bounded() {
        let calls = calls();
        calls.apply(ringing("a", "1001"));
        calls.apply(ringing("a", "1002"));
        calls.apply(CallEvent::Ended {
            key: "a".into(),
            intake: Intake::SIP,
            extension: Some("1001".into()),
            reason: EndReason::Cancelled,
        });
        assert_eq!(calls.live(Some(&["1002".into()])).len(), 1);
        assert!(calls.live(Some(&["1003".into()])).is_empty());
        calls.apply(CallEvent::Ended {
            key: "a".into(),
            intake: Intake::SIP,
            extension: Some("1002".into()),
            reason: EndReason::Cancelled,
        });
        assert!(calls.live(None).is_empty());
        for key in ["x", "y", "z"] {
            calls.apply(ringing(key, "1001"));
        }
        assert_eq!(calls.live(None).len(), 2, "max_calls bounds the table");
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_calls_expire() {
        let calls = calls();
        let mut rx = calls.subscribe();
        calls.apply(ringing("a", "1001"));
        let _ = rx.recv().await;
        calls.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(
            rx.recv().await.expect("update").change,
            Change::Ended {
                reason: EndReason::Expired
            }
        );
    }

    #[test]
    fn call_ids_are_deterministic_from_the_intake_key() {
        let key = "a84b4c76e66710@pc33.example.com";
        let sip = call_id(Intake::SIP, key, 0);
        assert_eq!(sip.len(), 16);
        assert_eq!(sip, call_id(Intake::HEP, key, 0));
        assert_ne!(
            sip,
            call_id(Intake::SIP, "a84b4c76e66711@pc33.example.com", 0)
        );
        assert_ne!(sip, call_id(Intake::AMI, key, 0));
        assert_ne!(
            sip,
            call_id(Intake::SIP, key, 1),
            "a later call on the same key"
        );
    }
}
