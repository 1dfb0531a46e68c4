//! The call journal: the recent calls in memory, with the agents' notes and dispositions, for
//! the agent page ("recent calls", the notes box). Works without a database (`screenpop demo`);
//! with one, notes are also written to `call_log` by `calls::log`.
//!
//! Fed from the call-update broadcast like the call log. Bounded: at most `capacity` calls, the
//! oldest (by first ring) forgotten first. A call is shown to the agents whose extensions it
//! rang; only they may note it. Owns nothing about who an agent is (see `agents`) nor how the
//! API speaks (see `web::journal`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::tracker::{CallState, CallUpdate, Change};
use super::{EndReason, LegState};
use crate::agents::{Agent, Agents};
use crate::resolve::{Customer, Resolution};

/// Longest note kept, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

/// One call as the journal shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// screenpop's call id.
    pub call_id: String,
    /// The caller's number as presented, if any.
    pub caller_number: Option<String>,
    /// The caller's display name, if any.
    pub caller_display: Option<String>,
    /// The caller withheld their identity.
    pub withheld: bool,
    /// How the caller was identified: `customer`, `approximate`, `candidates`, `unknown`,
    /// `withheld`, or `picked` (an agent chose one of the candidates).
    #[serde(rename = "match")]
    pub matched: &'static str,
    /// The customer (matched or picked), as in the pop (a shared handle: cheap to keep).
    pub customer: Option<Customer>,
    /// How many candidates were offered (0 unless `candidates`/`picked`).
    pub candidates: usize,
    /// The extensions the call rang.
    pub extensions: Vec<String>,
    /// `ringing`, `answered` or `ended`.
    pub state: &'static str,
    /// The answering extension, when known.
    pub answered_extension: Option<String>,
    /// The answering agent, when the extension is an agent's.
    pub answered_by: Option<String>,
    /// When the call was first seen.
    #[serde(with = "crate::time::rfc3339")]
    pub started: SystemTime,
    /// When it was answered.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub answered_at: Option<SystemTime>,
    /// When it ended.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
    /// Why it ended (`completed`, `cancelled`, …), once it has.
    pub outcome: Option<&'static str>,
    /// The agent's note.
    pub note: Option<String>,
    /// The agent's disposition.
    pub disposition: Option<String>,
    /// Who wrote the note (agent id).
    pub noted_by: Option<String>,
    /// When.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub noted_at: Option<SystemTime>,
}

/// A customer's calls in the journal (see [`Journal::for_customer`]).
#[derive(Debug, Default)]
pub struct CustomerCalls {
    /// The newest, newest first.
    pub newest: Vec<Entry>,
    /// Every one's id (so that the call log's copies are not counted twice), when asked for.
    pub ids: Vec<String>,
    /// How many started at or after each of the windows' starts.
    pub counts: [usize; 2],
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Call ids, oldest first.
    order: VecDeque<String>,
    /// Call ids by customer id (matched or picked), oldest first: a customer's history.
    by_customer: HashMap<String, VecDeque<String>>,
}

impl Inner {
    /// Adds a call (newer than the customer's others) to the customer's calls.
    fn index(&mut self, customer_id: &str, call_id: &str) {
        self.by_customer
            .entry(customer_id.to_owned())
            .or_default()
            .push_back(call_id.to_owned());
    }

    fn forget(&mut self, call_id: &str) {
        let Some(entry) = self.entries.remove(call_id) else {
            return;
        };
        if let Some(customer) = &entry.customer
            && let Some(ids) = self.by_customer.get_mut(customer.id())
        {
            // The oldest call overall is its customer's oldest: at the front, but for a call
            // picked late (or preloaded out of order).
            if ids.front().is_some_and(|id| id == call_id) {
                ids.pop_front();
            } else {
                ids.retain(|id| id != call_id);
            }
            if ids.is_empty() {
                self.by_customer.remove(customer.id());
            }
        }
    }
}

/// The journal.
pub struct Journal {
    capacity: usize,
    agents: Arc<Agents>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// An empty journal of at most `capacity` calls; `agents` names who answered.
    pub fn new(capacity: usize, agents: Arc<Agents>) -> Arc<Journal> {
        let capacity = capacity.max(1);
        Arc::new(Journal {
            capacity,
            agents,
            // Sized from the start, like the call table: no rehash stalls while calls ramp up.
            inner: Mutex::new(Inner {
                entries: HashMap::with_capacity(capacity),
                order: VecDeque::with_capacity(capacity),
                by_customer: HashMap::with_capacity(capacity),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agents it names answerers from.
    pub fn agents(&self) -> &Arc<Agents> {
        &self.agents
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds one call update in.
    pub fn record(&self, update: &CallUpdate) {
        let call = &update.call;
        let (matched, customer, candidates) = match &call.resolution {
            Resolution::Customer { customer } => ("customer", Some(customer), 0),
            Resolution::Approximate { customer, .. } => ("approximate", Some(customer), 0),
            Resolution::Candidates { candidates } => ("candidates", None, candidates.len()),
            Resolution::Withheld => ("withheld", None, 0),
            Resolution::Unknown => ("unknown", None, 0),
        };
        let answered_extension = match &call.state {
            CallState::Answered { by: Some(by) } => Some(by.clone()),
            _ => None,
        }
        .or_else(|| {
            call.legs
                .iter()
                .find(|l| {
                    matches!(
                        l.state,
                        LegState::Answered | LegState::Ended(EndReason::Completed)
                    )
                })
                .map(|l| l.extension.clone())
        });
        let (state, outcome) = match (&call.state, &update.change) {
            (_, Change::Ended { reason }) | (CallState::Ended { reason }, _) => {
                ("ended", Some(reason.label()))
            }
            (CallState::Answered { .. }, _) => ("answered", None),
            (CallState::Ringing, _) => ("ringing", None),
        };
        let mut inner = self.lock();
        if !inner.entries.contains_key(&call.id) {
            while inner.entries.len() >= self.capacity {
                let Some(oldest) = inner.order.pop_front() else {
                    break;
                };
                inner.forget(&oldest);
            }
            inner.order.push_back(call.id.clone());
            inner.entries.insert(
                call.id.clone(),
                Entry {
                    call_id: call.id.clone(),
                    caller_number: call.caller_number.clone(),
                    caller_display: call.caller_display.clone(),
                    withheld: call.withheld,
                    matched,
                    customer: customer.cloned(),
                    candidates,
                    extensions: Vec::new(),
                    state,
                    answered_extension: None,
                    answered_by: None,
                    started: call.started,
                    answered_at: None,
                    ended_at: None,
                    outcome: None,
                    note: None,
                    disposition: None,
                    noted_by: None,
                    noted_at: None,
                },
            );
            if let Some(customer) = customer {
                inner.index(customer.id(), &call.id);
            }
        }
        let Some(entry) = inner.entries.get_mut(&call.id) else {
            return;
        };
        for leg in &call.legs {
            if !entry.extensions.contains(&leg.extension) {
                entry.extensions.push(leg.extension.clone());
            }
        }
        if entry.state != "ended" {
            entry.state = state;
        }
        if outcome.is_some() && entry.outcome.is_none() {
            entry.outcome = outcome;
            entry.ended_at = Some(SystemTime::now());
        }
        entry.answered_at = entry.answered_at.or(call.answered_at);
        if let Some(ext) = answered_extension
            && entry.answered_extension.is_none()
        {
            entry.answered_by = self.agents.by_extension(&ext).map(|a| a.id.clone());
            entry.answered_extension = Some(ext);
        }
    }

    /// Adds calls from before this daemon started (oldest first), behind the ones it has
    /// seen itself, as far as the capacity allows.
    pub fn preload(&self, older: Vec<Entry>) {
        let mut inner = self.lock();
        for entry in older.into_iter().rev() {
            if inner.entries.len() >= self.capacity {
                break;
            }
            if inner.entries.contains_key(&entry.call_id) {
                continue;
            }
            inner.order.push_front(entry.call_id.clone());
            if let Some(customer) = &entry.customer {
                let ids = inner
                    .by_customer
                    .entry(customer.id().to_owned())
                    .or_default();
                ids.push_front(entry.call_id.clone());
            }
            inner.entries.insert(entry.call_id.clone(), entry);
        }
    }

    /// Records that an agent attached `customer` to a call (one of the candidates, or one it
    /// found for an unknown, withheld or approximate caller); a matched call keeps its match.
    pub fn pick(&self, call_id: &str, customer: Customer) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(call_id) else {
            return;
        };
        if entry.matched == "customer" {
            return;
        }
        entry.matched = "picked";
        let started = entry.started;
        let before = entry.customer.replace(customer.clone());
        if let Some(before) = before
            && let Some(ids) = inner.by_customer.get_mut(before.id())
        {
            ids.retain(|id| id != call_id);
        }
        // In start order among the customer's calls, so that the oldest stays at the front.
        let Inner {
            entries,
            by_customer,
            ..
        } = &mut *inner;
        let ids = by_customer.entry(customer.id().to_owned()).or_default();
        let at = ids
            .iter()
            .rposition(|id| entries.get(id).is_some_and(|e| e.started <= started))
            .map_or(0, |i| i + 1);
        ids.insert(at, call_id.to_owned());
    }

    /// The journal's part of a customer's history: the calls attributed to `customer_id`
    /// (matched or picked) other than `except`, newest first, and `with_ids` every one's id;
    /// `calls::history` merges the call log's.
    pub fn for_customer(
        &self,
        customer_id: &str,
        except: Option<&str>,
        limit: usize,
        windows: [SystemTime; 2],
        with_ids: bool,
    ) -> CustomerCalls {
        let inner = self.lock();
        let mut found = CustomerCalls::default();
        let Some(ids) = inner.by_customer.get(customer_id) else {
            return found;
        };
        for entry in ids.iter().rev().filter_map(|id| inner.entries.get(id)) {
            if except == Some(entry.call_id.as_str()) {
                continue;
            }
            for (count, since) in found.counts.iter_mut().zip(windows) {
                *count += usize::from(entry.started >= since);
            }
            if found.newest.len() < limit {
                found.newest.push(entry.clone());
            }
            if with_ids {
                found.ids.push(entry.call_id.clone());
            }
        }
        found
    }

    /// Whether the journal knows `call_id` and it rang at one of `agent`'s extensions.
    pub fn rang_at(&self, agent: &Agent, call_id: &str) -> bool {
        self.lock()
            .entries
            .get(call_id)
            .is_some_and(|e| rang_for(e, agent))
    }

    /// Sets the note and disposition of a call that rang at one of `agent`'s extensions, and
    /// returns the entry; `None` for a call unknown to the journal or not the agent's.
    pub fn note(
        &self,
        agent: &Agent,
        call_id: &str,
        note: Option<String>,
        disposition: Option<String>,
    ) -> Option<Entry> {
        let mut inner = self.lock();
        let entry = inner
            .entries
            .get_mut(call_id)
            .filter(|e| rang_for(e, agent))?;
        entry.note = note;
        entry.disposition = disposition;
        entry.noted_by = Some(agent.id.clone());
        entry.noted_at = Some(SystemTime::now());
        Some(entry.clone())
    }

    /// Sets a note another node saved on a call (shared by the cluster), unless this journal
    /// does not know the call or already has a note as new; false then.
    pub fn note_from_peer(
        &self,
        call_id: &str,
        note: Option<String>,
        disposition: Option<String>,
        noted_by: String,
        noted_at: SystemTime,
    ) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner
            .entries
            .get_mut(call_id)
            .filter(|e| e.noted_at.is_none_or(|ours| ours < noted_at))
        else {
            return false;
        };
        entry.note = note;
        entry.disposition = disposition;
        entry.noted_by = Some(noted_by);
        entry.noted_at = Some(noted_at);
        true
    }

    /// The calls that rang at `agent`'s extensions, newest first, at most `limit`.
    pub fn recent(&self, agent: &Agent, limit: usize) -> Vec<Entry> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.entries.get(id))
            .filter(|e| rang_for(e, agent))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl crate::calls::Observer for Journal {
    fn observe(&self, update: &CallUpdate) {
        self.record(update);
    }
}

fn rang_for(entry: &Entry, agent: &Agent) -> bool {
    agent.rang_at(entry.extensions.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::TokenHash;
    use crate::calls::{CallEvent, EndReason};
    use crate::calls::{Caller, IdentitySource as Source};
    use crate::calls::{Calls, Intake, TrackerConfig};
    use crate::resolve::Resolver;
    use std::time::Duration;
    use tokio::sync::broadcast;

    struct NoDirectory;
    impl Resolver for NoDirectory {
        fn resolve(&self, _: &str) -> Resolution {
            Resolution::Unknown
        }
    }

    fn agent(id: &str, ext: &str) -> Agent {
        Agent {
            id: id.into(),
            name: id.into(),
            extensions: vec![ext.into()],
            roles: Vec::new(),
        }
    }

    fn ring(key: &str, ext: &str) -> CallEvent {
        CallEvent::Ringing {
            key: key.into(),
            intake: Intake::SIP,
            extension: ext.into(),
            caller: Caller {
                number: Some("+15550100".into()),
                display: Some("Front desk".into()),
                source: Source::From,
                withheld: false,
            },
            dialled: None,
        }
    }

    fn setup(capacity: usize) -> (Arc<Calls>, Arc<Journal>, broadcast::Receiver<CallUpdate>) {
        let calls = Calls::new(
            TrackerConfig {
                max_calls: 100,
                ring_timeout: Duration::from_secs(60),
                answered_ttl: Duration::from_secs(600),
                max_call_duration: Duration::from_secs(3600),
            },
            Arc::new(NoDirectory),
        );
        let agents = Arc::new(Agents::new([
            (TokenHash::of("a"), agent("alice", "1001")),
            (TokenHash::of("b"), agent("bob", "1002")),
        ]));
        let rx = calls.subscribe();
        (calls, Journal::new(capacity, agents), rx)
    }

    fn drain(journal: &Journal, rx: &mut broadcast::Receiver<CallUpdate>) {
        while let Ok(update) = rx.try_recv() {
            journal.record(&update);
        }
    }

    #[test]
    fn follows_a_call_and_takes_notes_only_from_its_agents() {
        let (calls, journal, mut rx) = setup(10);
        calls.apply(ring("k", "1001"));
        calls.apply(CallEvent::Answered {
            key: "k".into(),
            intake: Intake::SIP,
            by: Some("1001".into()),
        });
        calls.apply(CallEvent::Ended {
            key: "k".into(),
            intake: Intake::SIP,
            extension: None,
            reason: EndReason::Completed,
        });
        drain(&journal, &mut rx);
        let alice = agent("alice", "1001");
        let bob = agent("bob", "1002");
        let recent = journal.recent(&alice, 10);
        assert_eq!(recent.len(), 1);
        let e = &recent[0];
        assert_eq!((e.state, e.outcome), ("ended", Some("completed")));
        assert_eq!(e.answered_by.as_deref(), Some("alice"));
        assert!(e.answered_at.is_some() && e.ended_at.is_some());
        assert_eq!(e.matched, "unknown");
        assert!(journal.recent(&bob, 10).is_empty());
        let id = e.call_id.clone();
        assert!(journal.note(&bob, &id, Some("x".into()), None).is_none());
        assert!(
            journal
                .note(&alice, "nope", Some("x".into()), None)
                .is_none()
        );
        let noted = journal
            .note(
                &alice,
                &id,
                Some("Wants a callback".into()),
                Some("Callback".into()),
            )
            .expect("alice's call");
        assert_eq!(noted.noted_by.as_deref(), Some("alice"));
        assert_eq!(
            journal.recent(&alice, 1)[0].disposition.as_deref(),
            Some("Callback")
        );
    }

    #[test]
    fn history_goes_behind_what_was_seen_and_within_capacity() {
        let (calls, journal, mut rx) = setup(3);
        calls.apply(ring("live", "1001"));
        drain(&journal, &mut rx);
        let live = journal.recent(&agent("alice", "1001"), 1)[0].clone();
        let old = |id: &str| Entry {
            call_id: id.into(),
            state: "ended",
            outcome: Some("completed"),
            ..live.clone()
        };
        journal.preload(vec![old("a"), old("b"), old("c"), old(&live.call_id)]);
        let ids: Vec<String> = journal
            .recent(&agent("alice", "1001"), 10)
            .into_iter()
            .map(|e| e.call_id)
            .collect();
        assert_eq!(ids, [live.call_id.clone(), "c".into(), "b".into()]);
    }

    #[test]
    fn bounded_newest_first() {
        let (calls, journal, mut rx) = setup(3);
        for key in ["a", "b", "c", "d", "e"] {
            calls.apply(ring(key, "1001"));
            drain(&journal, &mut rx);
        }
        assert_eq!(journal.len(), 3);
        let recent = journal.recent(&agent("alice", "1001"), 2);
        assert_eq!(recent.len(), 2);
        assert!(recent[0].started >= recent[1].started);
        assert_eq!(recent[0].state, "ringing");
    }

    #[test]
    fn a_customers_calls_follow_evictions_and_picks() {
        let (calls, journal, mut rx) = setup(3);
        for key in ["a", "b", "c"] {
            calls.apply(ring(key, "1001"));
            drain(&journal, &mut rx);
        }
        let acme = crate::resolve::Customer::new(crate::resolve::CustomerFields {
            id: "acme",
            name: "Acme",
            ..Default::default()
        });
        let alice = agent("alice", "1001");
        let ids: Vec<String> = journal
            .recent(&alice, 10)
            .into_iter()
            .map(|e| e.call_id)
            .collect();
        // Nothing resolves here: picks are what attribute calls (only to candidate calls, so
        // mark them as such first).
        for id in &ids {
            journal.lock().entries.get_mut(id).expect("entry").matched = "candidates";
        }
        journal.pick(&ids[2], acme.clone());
        journal.pick(&ids[0], acme.clone());
        let windows = [SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH];
        let found = journal.for_customer("acme", None, 10, windows, true);
        let listed: Vec<&str> = found.newest.iter().map(|e| e.call_id.as_str()).collect();
        assert_eq!(listed, [ids[0].as_str(), ids[2].as_str()], "newest first");
        assert_eq!(found.counts, [2, 2]);
        let except = journal.for_customer("acme", Some(&ids[0]), 10, windows, true);
        assert_eq!(except.ids, [ids[2].clone()]);
        // The oldest call is evicted by a new one: the customer's list forgets it.
        calls.apply(ring("d", "1001"));
        drain(&journal, &mut rx);
        let found = journal.for_customer("acme", None, 10, windows, true);
        assert_eq!(found.ids, [ids[0].clone()]);
    }
}
