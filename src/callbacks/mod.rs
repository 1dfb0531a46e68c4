//! Missed calls become callbacks: a call that rang at agents and ended unanswered everywhere
//! (cancelled, timed out, rejected, expired; not withheld, with a number) opens a callback
//! entry, one per caller number while it is open. Later missed calls from the same number add
//! attempts to it; a later call from that number that is answered closes it by itself
//! (`reached`). Agents whose extensions it rang see it, claim it (one agent at a time),
//! release it, or mark it done with a note and disposition.
//!
//! Fed from the call-update broadcast like the journal; every change goes to a [`Listener`]
//! (the push hub: a `callback` message to the agents concerned). With a database the entries
//! are kept in the `callbacks` table (migration 0005): ring updates are written off the call
//! path through a bounded queue; claims, releases and dones are conditional updates there
//! first, so that of two agents claiming at once (on one node or two) exactly one wins, and an
//! action is acknowledged only once it is stored. Open entries are loaded at start.
//!
//! Calling back through the PBX (`dial`): the agent's own extension rings first, then the
//! caller's number; refused for an entry another agent claimed or an extension not the
//! agent's, and rate-limited per agent.
//!
//! Owns nothing about HTTP (see `web::callbacks`), sockets (see `push`) or the PBX protocols
//! (see `calls::dial`).

mod dial;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::agents::Agent;
use crate::calls::{CallState, CallUpdate, Change, EndReason};
use crate::resolve::Resolution;
pub use dial::{CALLBACK_DIALS_TOTAL, DialRefusal, Dialled};
pub use store::Database;

/// Metric `screenpop_callbacks_total{event}`: entries opened, attempts added, reached,
/// claimed, released, done, dropped (the table was full).
pub const CALLBACKS_TOTAL: &str = "screenpop_callbacks_total";
/// Metric `screenpop_callbacks_open`: entries open or claimed.
pub const CALLBACKS_OPEN: &str = "screenpop_callbacks_open";

/// `[callbacks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Whether missed calls open callbacks.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most entries open at once; beyond it the one rung longest ago is dropped (counted).
    #[serde(
        default = "default_max_open",
        deserialize_with = "crate::serde_ext::positive"
    )]
    pub max_open: usize,
    /// `POST /api/callbacks/{id}/dial`: at most one call placed per agent within this (a
    /// second one is 429 with `Retry-After`).
    #[serde(default = "default_dial_interval", with = "crate::serde_ext::duration")]
    pub dial_interval: Duration,
    /// The `[[ami]]` or `[[esl]]` PBX (its `name`) that places call-backs; default: the one
    /// connected longest.
    #[serde(default)]
    pub dial_via: Option<String>,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            enabled: true,
            max_open: default_max_open(),
            dial_interval: default_dial_interval(),
            dial_via: None,
        }
    }
}

fn default_dial_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_true() -> bool {
    true
}
fn default_max_open() -> usize {
    10_000
}

/// A customer as a callback names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRef {
    /// The customer's id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The company, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

impl CustomerRef {
    fn of(c: &crate::resolve::Customer) -> CustomerRef {
        CustomerRef {
            id: c.id().to_owned(),
            name: c.name().to_owned(),
            company: c.company().map(str::to_owned),
        }
    }
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for an agent.
    Open,
    /// An agent is on it.
    Claimed,
    /// An agent marked it done.
    Done,
    /// The caller got through on a later call.
    Reached,
}

impl State {
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Claimed => "claimed",
            State::Done => "done",
            State::Reached => "reached",
        }
    }

    fn is_live(self) -> bool {
        matches!(self, State::Open | State::Claimed)
    }
}

/// One callback entry, as the API and the `callback` message show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Callback {
    /// Its id.
    pub id: String,
    /// The caller's number as last presented.
    pub number: String,
    /// The number in E.164, when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e164: Option<String>,
    /// The caller's display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// `customer`, `approximate`, `candidates` or `unknown`.
    #[serde(rename = "match")]
    pub matched: String,
    /// The customer, when one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    /// The candidates, when several did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CustomerRef>,
    /// Missed calls from this number since the entry opened.
    pub attempts: u32,
    /// When the first of them rang.
    #[serde(with = "crate::time::rfc3339_serde")]
    pub first_ring: SystemTime,
    /// When the last of them rang.
    #[serde(with = "crate::time::rfc3339_serde")]
    pub last_ring: SystemTime,
    /// The extensions they rang.
    pub extensions: Vec<String>,
    /// The missed calls' ids, oldest first.
    pub call_ids: Vec<String>,
    /// `open`, `claimed`, `done` or `reached`.
    pub state: State,
    /// Who claimed it (agent id), while claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Who closed it (agent id), when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// The answered call that reached the caller, when reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_call_id: Option<String>,
    /// The note and disposition given with `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The disposition given with `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// A link that calls the number back (`[calls] call_back_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back: Option<String>,
}

impl Callback {
    /// Whether `agent` may see and act on it: it rang at one of the agent's extensions.
    pub fn concerns(&self, agent: &Agent) -> bool {
        agent.rang_at(self.extensions.iter().map(String::as_str))
    }
}

/// Told of every change of an entry (the push hub); must not block.
pub trait Listener: Send + Sync {
    /// `callback` changed (or closed: its state says so).
    fn changed(&self, callback: &Callback);
}

/// What an agent does with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Takes it: the other agents see who is on it.
    Claim,
    /// Gives it back.
    Release,
    /// Closes it, with an optional note and disposition.
    Done {
        /// The note.
        note: Option<String>,
        /// The disposition.
        disposition: Option<String>,
    },
}

impl Action {
    fn label(&self) -> &'static str {
        match self {
            Action::Claim => "claimed",
            Action::Release => "released",
            Action::Done { .. } => "done",
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// No such open entry at the agent's extensions (alike for both, so ids cannot be probed).
    #[error("no such callback at your extensions")]
    NotYours,
    /// Another agent holds it, or it is closed.
    #[error("{0}")]
    Conflict(String),
    /// The database could not store it; nothing changed.
    #[error("the callback could not be saved; try again")]
    Unavailable,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Callback>,
    /// Open (or claimed) entry per caller key.
    open: HashMap<String, String>,
    /// Caller key per open entry id.
    keys: HashMap<String, String>,
}

/// The callbacks.
pub struct Callbacks {
    config: CallbacksConfig,
    call_back: String,
    inner: Mutex<Inner>,
    listener: OnceLock<Arc<dyn Listener>>,
    database: Option<Database>,
    /// One action at a time (each is a read, a database update and a write).
    acting: tokio::sync::Mutex<()>,
    /// When each agent last had a call placed (the `dial_interval` limit).
    dialled: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("open", &self.open_count())
            .field("database", &self.database.is_some())
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// Callbacks kept in memory, and in `database` when given; `call_back` is the link
    /// template (`[calls] call_back_url`).
    pub fn new(
        config: CallbacksConfig,
        call_back: &str,
        database: Option<Database>,
    ) -> Arc<Callbacks> {
        Arc::new(Callbacks {
            config,
            call_back: call_back.to_owned(),
            inner: Mutex::default(),
            listener: OnceLock::new(),
            database,
            acting: tokio::sync::Mutex::new(()),
            dialled: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells `listener` of every change from now on.
    pub fn listen(&self, listener: Arc<dyn Listener>) {
        let _ = self.listener.set(listener);
    }

    /// Entries open or claimed.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// The open and claimed entries that rang at `agent`'s extensions, newest first.
    pub fn for_agent(&self, agent: &Agent) -> Vec<Callback> {
        let mut list: Vec<Callback> = self
            .lock()
            .by_id
            .values()
            .filter(|c| c.state.is_live() && c.concerns(agent))
            .cloned()
            .collect();
        list.sort_by_key(|c| std::cmp::Reverse(c.last_ring));
        list
    }

    /// One entry, if it concerns `agent`.
    pub fn get(&self, agent: &Agent, id: &str) -> Option<Callback> {
        self.lock()
            .by_id
            .get(id)
            .filter(|c| c.concerns(agent))
            .cloned()
    }

    /// Loads the entries open in the database (at start, in the background); entries opened
    /// since are kept.
    pub async fn load(&self) -> Result<usize, crate::db::DbError> {
        let Some(db) = &self.database else {
            return Ok(0);
        };
        let loaded = db.load_open().await?;
        let n = loaded.len();
        let mut inner = self.lock();
        for (key, cb) in loaded {
            if inner.open.contains_key(&key) || inner.by_id.contains_key(&cb.id) {
                continue;
            }
            inner.open.insert(key.clone(), cb.id.clone());
            inner.keys.insert(cb.id.clone(), key);
            inner.by_id.insert(cb.id.clone(), cb);
        }
        metrics::gauge!(CALLBACKS_OPEN).set(inner.open.len() as f64);
        Ok(n)
    }

    /// Folds one call update in.
    pub fn record(&self, update: &CallUpdate) {
        if !self.config.enabled {
            return;
        }
        let call = &update.call;
        let Some(key) = call
            .caller_key
            .clone()
            .or_else(|| call.caller_number.clone())
            .filter(|k| !k.is_empty() && !call.withheld)
        else {
            return;
        };
        let answered = match &update.change {
            Change::Answered { .. } => true,
            Change::Ended { reason } => {
                matches!(reason, EndReason::Completed | EndReason::AnsweredElsewhere)
                    || call.answered_at.is_some()
                    || matches!(call.state, CallState::Answered { .. })
            }
            _ => return,
        };
        if answered {
            self.reached(&key, &call.id);
            return;
        }
        let Change::Ended { reason } = &update.change else {
            return;
        };
        if matches!(reason, EndReason::Shutdown) || call.legs.is_empty() {
            return;
        }
        self.missed(key, call);
    }

    fn reached(&self, key: &str, call_id: &str) {
        let closed = {
            let mut inner = self.lock();
            let Some(id) = inner.open.remove(key) else {
                return;
            };
            inner.keys.remove(&id);
            let Some(mut cb) = inner.by_id.remove(&id) else {
                return;
            };
            cb.state = State::Reached;
            cb.reached_call_id = Some(call_id.to_owned());
            metrics::gauge!(CALLBACKS_OPEN).set(inner.open.len() as f64);
            cb
        };
        metrics::counter!(CALLBACKS_TOTAL, "event" => "reached").increment(1);
        if let Some(db) = &self.database {
            db.queue_reached(&closed);
        }
        self.tell(&closed);
    }

    fn missed(&self, key: String, call: &crate::calls::Call) {
        let (matched, customer, candidates) = match &call.resolution {
            Resolution::Customer { customer } => {
                ("customer", Some(CustomerRef::of(customer)), vec![])
            }
            Resolution::Approximate { customer, .. } => {
                ("approximate", Some(CustomerRef::of(customer)), vec![])
            }
            Resolution::Candidates { candidates } => (
                "candidates",
                None,
                candidates
                    .iter()
                    .map(|c| CustomerRef::of(&c.customer))
                    .collect(),
            ),
            Resolution::Unknown | Resolution::Withheld => ("unknown", None, vec![]),
        };
        let number = call.caller_number.clone().unwrap_or_else(|| key.clone());
        let (changed, dropped) = {
            let mut inner = self.lock();
            let existing = inner.open.get(&key).cloned();
            let mut dropped = None;
            let cb = match existing.and_then(|id| inner.by_id.get_mut(&id)) {
                Some(cb) => {
                    if cb.call_ids.contains(&call.id) {
                        return; // the same call again (another node, a replay)
                    }
                    cb.attempts += 1;
                    cb.call_ids.push(call.id.clone());
                    cb.last_ring = cb.last_ring.max(call.started);
                    cb.number = number;
                    cb.display = call.caller_display.clone().or(cb.display.take());
                    if customer.is_some() || cb.customer.is_none() {
                        cb.matched = matched.into();
                        cb.customer = customer;
                        cb.candidates = candidates;
                    }
                    for leg in &call.legs {
                        if !cb.extensions.contains(&leg.extension) {
                            cb.extensions.push(leg.extension.clone());
                        }
                    }
                    metrics::counter!(CALLBACKS_TOTAL, "event" => "attempt").increment(1);
                    cb.clone()
                }
                None => {
                    if inner.open.len() >= self.config.max_open {
                        dropped = oldest(&mut inner);
                    }
                    let cb = Callback {
                        id: entry_id(&key, &call.id),
                        call_back: crate::calls::history::call_back_link(
                            &self.call_back,
                            call.caller_e164.as_deref().unwrap_or(&number),
                        ),
                        number,
                        e164: call.caller_e164.clone(),
                        display: call.caller_display.clone(),
                        matched: matched.into(),
                        customer,
                        candidates,
                        attempts: 1,
                        first_ring: call.started,
                        last_ring: call.started,
                        extensions: call.legs.iter().map(|l| l.extension.clone()).collect(),
                        call_ids: vec![call.id.clone()],
                        state: State::Open,
                        claimed_by: None,
                        closed_by: None,
                        reached_call_id: None,
                        note: None,
                        disposition: None,
                    };
                    inner.open.insert(key.clone(), cb.id.clone());
                    inner.keys.insert(cb.id.clone(), key.clone());
                    inner.by_id.insert(cb.id.clone(), cb.clone());
                    metrics::counter!(CALLBACKS_TOTAL, "event" => "opened").increment(1);
                    cb
                }
            };
            metrics::gauge!(CALLBACKS_OPEN).set(inner.open.len() as f64);
            (cb, dropped)
        };
        if let Some(db) = &self.database {
            db.queue_rang(&key, &changed);
        }
        if let Some(dropped) = dropped {
            metrics::counter!(CALLBACKS_TOTAL, "event" => "dropped").increment(1);
            tracing::warn!(
                max_open = self.config.max_open,
                "Callbacks: too many open; the one rung longest ago was dropped."
            );
            self.tell(&dropped);
        }
        self.tell(&changed);
    }

    fn tell(&self, cb: &Callback) {
        if let Some(listener) = self.listener.get() {
            listener.changed(cb);
        }
    }

    /// Claims, releases or closes an entry for `agent`; the entry as it now stands. With a
    /// database the change is stored there first (a conditional update: one claimer wins).
    pub async fn act(&self, agent: &Agent, id: &str, action: Action) -> Result<Callback, ActError> {
        let _one = self.acting.lock().await;
        let current = self.get(agent, id).filter(|c| c.state.is_live());
        let Some(current) = current else {
            return Err(ActError::NotYours);
        };
        let held_by_other = current.state == State::Claimed
            && current.claimed_by.as_deref() != Some(agent.id.as_str());
        match &action {
            Action::Claim | Action::Done { .. } if held_by_other => {
                return Err(ActError::Conflict(format!(
                    "claimed by {}",
                    current.claimed_by.as_deref().unwrap_or("another agent")
                )));
            }
            Action::Release if current.claimed_by.as_deref() != Some(agent.id.as_str()) => {
                return Err(ActError::Conflict("not claimed by you".into()));
            }
            _ => {}
        }
        let mut next = current.clone();
        match &action {
            Action::Claim => {
                next.state = State::Claimed;
                next.claimed_by = Some(agent.id.clone());
            }
            Action::Release => {
                next.state = State::Open;
                next.claimed_by = None;
            }
            Action::Done { note, disposition } => {
                next.state = State::Done;
                next.closed_by = Some(agent.id.clone());
                next.note.clone_from(note);
                next.disposition.clone_from(disposition);
            }
        }
        if let Some(db) = &self.database {
            let key = self.lock().keys.get(id).cloned().unwrap_or_default();
            match db.act(&key, &current, &next, &agent.id).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another node changed it first: take the stored state.
                    let stored = db.state_of(id).await.ok().flatten();
                    return Err(ActError::Conflict(match stored {
                        Some((state, by)) => self.adopt(id, state, by),
                        None => "changed elsewhere".into(),
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, "Callbacks: the database could not store an action.");
                    return Err(ActError::Unavailable);
                }
            }
        }
        {
            let mut inner = self.lock();
            if next.state.is_live() {
                inner.by_id.insert(id.to_owned(), next.clone());
            } else {
                inner.by_id.remove(id);
                if let Some(key) = inner.keys.remove(id) {
                    inner.open.remove(&key);
                }
            }
            metrics::gauge!(CALLBACKS_OPEN).set(inner.open.len() as f64);
        }
        metrics::counter!(CALLBACKS_TOTAL, "event" => action.label()).increment(1);
        self.tell(&next);
        Ok(next)
    }

    /// Takes a state another node stored; says what it is for the refusal.
    fn adopt(&self, id: &str, state: State, by: Option<String>) -> String {
        let changed = {
            let mut inner = self.lock();
            let Some(cb) = inner.by_id.get_mut(id) else {
                return state.as_str().into();
            };
            cb.state = state;
            cb.claimed_by = by.clone().filter(|_| state == State::Claimed);
            let cb = cb.clone();
            if !state.is_live() {
                inner.by_id.remove(id);
                if let Some(key) = inner.keys.remove(id) {
                    inner.open.remove(&key);
                }
            }
            cb
        };
        self.tell(&changed);
        match (state, by) {
            (State::Claimed, Some(by)) => format!("claimed by {by}"),
            (state, _) => format!("already {}", state.as_str()),
        }
    }

    /// Writes queued ring updates to the database until cancelled (with one: else returns).
    pub async fn write(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if let Some(db) = &self.database {
            db.write(stop).await;
        }
    }
}

impl crate::calls::Observer for Callbacks {
    fn observe(&self, update: &CallUpdate) {
        self.record(update);
    }
}

/// Removes the open entry rung longest ago; returns it, marked done by nobody.
fn oldest(inner: &mut Inner) -> Option<Callback> {
    let id = inner
        .by_id
        .values()
        .filter(|c| c.state.is_live())
        .min_by_key(|c| c.last_ring)?
        .id
        .clone();
    let mut cb = inner.by_id.remove(&id)?;
    if let Some(key) = inner.keys.remove(&id) {
        inner.open.remove(&key);
    }
    cb.state = State::Done;
    Some(cb)
}

/// A stable id from the caller and the first missed call: the same on every node that saw
/// that call (cluster call ids are deterministic).
fn entry_id(key: &str, first_call: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{key}\n{first_call}").as_bytes());
    hex::encode(&digest[..8])
}

/// How long an entry's ring updates may wait for the database before they are retried.
pub const WRITE_RETRY: Duration = Duration::from_secs(1);
