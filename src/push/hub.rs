//! The push hub: routes call updates to the connections of the agents whose extensions ring.
//!
//! Each connection registers its extensions and a bounded queue. A message is serialised once
//! and shared by every connection that gets it. A queue that is full means its consumer cannot
//! keep up: the connection is told to close (code 4429) and counted; it resyncs from the
//! `snapshot` when it reconnects. Nothing is unbounded per connection, and the hub never waits
//! on a socket.
//!
//! Per call the hub remembers which extensions hold an open pop (they got `ringing` and no
//! `ended` yet), so that `answered` and `ended` reach exactly them, once.
//!
//! Profiles: right after a call's first `ringing` goes out, the hub starts the composer for the
//! call's customer (never waiting for it: the pop is already on its way) and pushes each
//! `section` as it arrives, then `complete`, to the call's open pops; a source restricted to
//! some roles goes to other agents as `forbidden`, without data. A pick among candidates starts
//! a composition for the picked customer, for the picking agent only. The sections are kept
//! per live call (`profiles`) for snapshots and for extensions rung later.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{self, Outbound};
use super::profiles::{Audience, Profiles};
use crate::agents::Agent;
use crate::calls::history::Glance;
use crate::calls::journal::Journal;
use crate::calls::log::CallLog;
use crate::calls::{Call, CallUpdate, Calls, Change};
use crate::compose::{Composer, Part, Summary};
use crate::resolve::Customer;
use crate::resolve::Resolution;
use crate::sources::Who;

/// The answer to an action on a call that does not exist or did not ring at the agent: the
/// same text for both, so that call ids cannot be probed.
pub const NOT_YOURS: &str = "no such call at your extensions";

/// Most picks remembered.
const MAX_PICKS: usize = 100_000;

/// How long a node that did not win a call waits for its owner's sections before composing
/// them itself (the owner died, or cannot reach the others): past the composer's deadline.
const OWNER_GRACE: std::time::Duration = std::time::Duration::from_secs(4);

/// A cluster's say in who composes a call's profile (see `cluster`): one node per call asks
/// the sources and shares what they answer; the others show what it shares.
pub trait Share: Send + Sync + std::fmt::Debug {
    /// Resolves to whether this node composes everyone's profile of `call_id`: it won the
    /// call, or the cluster could not be asked (then every node composes for itself).
    fn claim(
        &self,
        call_id: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
    /// Hands a part this node composed to the other nodes (never waits).
    fn part(&self, call_id: &str, customer_id: &str, part: &Part);
    /// Hands the end of this node's composition to the other nodes (never waits).
    fn complete(&self, call_id: &str, customer_id: &str, summary: &Summary);
    /// The live nodes' page addresses, this node's first (for `ready`).
    fn page_urls(&self) -> Vec<String>;
    /// Hands a note an agent saved here to the other nodes' journals (never waits).
    fn note(&self, entry: &crate::calls::journal::Entry);
}

/// One registered connection.
#[derive(Debug, Clone)]
struct Subscriber {
    id: u64,
    agent: Arc<Agent>,
    tx: mpsc::Sender<Outbound>,
    /// Cancelled when the consumer is too slow.
    slow: CancellationToken,
}

/// The routing table and the open pops.
#[derive(Debug)]
pub struct Hub {
    routes: RwLock<HashMap<String, Vec<Subscriber>>>,
    open: Mutex<HashMap<String, HashSet<String>>>,
    /// Per live call, the agents who dismissed its pop (left out of their snapshots).
    dismissed: Mutex<HashMap<String, HashSet<String>>>,
    /// The candidate each agent last picked for a caller: (agent, caller key) → customer.
    picks: Mutex<HashMap<(String, String), String>>,
    /// Where picks are persisted (and picked calls' customers recorded), with a database.
    log: Option<Arc<CallLog>>,
    /// Where picked calls' customers are shown in the agents' recent calls.
    journal: Option<Arc<Journal>>,
    /// Profile composition, when sources are configured.
    composer: RwLock<Option<Arc<Composer>>>,
    /// The candidates' last contacts, when the history is on.
    glance: RwLock<Option<Arc<Glance>>>,
    /// The sections composed per live call.
    profiles: Profiles,
    /// Ends running compositions at shutdown.
    cancel: CancellationToken,
    calls: Arc<Calls>,
    next_id: AtomicU64,
    /// The cluster, when this node is one of several.
    share: std::sync::OnceLock<Arc<dyn Share>>,
    /// The callbacks, shown in snapshots and pushed as they change.
    callbacks: std::sync::OnceLock<Arc<crate::callbacks::Callbacks>>,
}

/// The hub as the callbacks' listener: every change to the agents whose extensions it rang.
struct CallbackRouting(std::sync::Weak<Hub>);

impl crate::callbacks::Listener for CallbackRouting {
    fn changed(&self, cb: &crate::callbacks::Callback) {
        let Some(hub) = self.0.upgrade() else {
            return;
        };
        let msg = message::callback(cb);
        let routes = hub.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        for sub in cb
            .extensions
            .iter()
            .filter_map(|ext| routes.get(ext))
            .flatten()
        {
            if seen.insert(sub.id) {
                offer(sub, msg.clone());
            }
        }
    }
}

/// A connection's registration; unregisters when dropped.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
    extensions: Vec<String>,
}

/// The hub as the call table's in-line consumer: every update routed as it happens.
struct Routing(Arc<Hub>);

impl crate::calls::Observer for Routing {
    fn observe(&self, update: &CallUpdate) {
        self.0.route(update);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id, &self.extensions);
    }
}

impl Hub {
    /// A hub over the call table; picks are also written to `log` and `journal` when there
    /// are, and profiles are composed by `composer` when there is one. `cancel` ends
    /// compositions.
    pub fn new(
        calls: Arc<Calls>,
        log: Option<Arc<CallLog>>,
        journal: Option<Arc<Journal>>,
        composer: Option<Arc<Composer>>,
        cancel: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            routes: RwLock::default(),
            open: Mutex::default(),
            dismissed: Mutex::default(),
            picks: Mutex::default(),
            log,
            journal,
            composer: RwLock::new(composer.filter(|c| !c.is_empty())),
            glance: RwLock::new(None),
            profiles: Profiles::default(),
            cancel,
            calls,
            next_id: AtomicU64::new(1),
            share: std::sync::OnceLock::new(),
            callbacks: std::sync::OnceLock::new(),
        })
    }

    /// Shows `callbacks` in snapshots and pushes their changes as `callback` messages.
    pub fn set_callbacks(self: &Arc<Self>, callbacks: Arc<crate::callbacks::Callbacks>) {
        callbacks.listen(Arc::new(CallbackRouting(Arc::downgrade(self))));
        let _ = self.callbacks.set(callbacks);
    }

    /// Routes `agent`'s extensions to `tx`. `slow` is cancelled if the queue overflows.
    pub fn register(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        tx: mpsc::Sender<Outbound>,
        slow: CancellationToken,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for ext in &agent.extensions {
            routes.entry(ext.clone()).or_default().push(Subscriber {
                id,
                agent: agent.clone(),
                tx: tx.clone(),
                slow: slow.clone(),
            });
        }
        metrics::gauge!(crate::push::PUSH_CONNECTIONS).increment(1.0);
        Registration {
            hub: self.clone(),
            id,
            extensions: agent.extensions.clone(),
        }
    }

    fn unregister(&self, id: u64, extensions: &[String]) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for ext in extensions {
            if let Some(subs) = routes.get_mut(ext) {
                subs.retain(|s| s.id != id);
                if subs.is_empty() {
                    routes.remove(ext);
                }
            }
        }
        metrics::gauge!(crate::push::PUSH_CONNECTIONS).decrement(1.0);
    }

    /// The live call `call_id`, if it rang at one of `agent`'s extensions
    /// ([`Agent::rang_at`], the one rule for agent actions); `None` alike for a call that does
    /// not exist and for someone else's.
    fn call_of(&self, agent: &Agent, call_id: &str) -> Option<Call> {
        self.calls
            .live(Some(&agent.extensions))
            .into_iter()
            .find(|c| c.id == call_id && agent.rang_at(c.legs.iter().map(|l| l.extension.as_str())))
    }

    /// Records that `agent` dismissed the pop of a live call: later snapshots leave it out.
    /// Fails with [`NOT_YOURS`] for a call that is not live or did not ring at the agent.
    pub fn dismiss(&self, agent: &Agent, call_id: &str) -> Result<(), &'static str> {
        self.call_of(agent, call_id).ok_or(NOT_YOURS)?;
        let mut dismissed = self.dismissed.lock().unwrap_or_else(|p| p.into_inner());
        dismissed
            .entry(call_id.to_owned())
            .or_default()
            .insert(agent.id.clone());
        Ok(())
    }

    /// Records that `agent` chose `customer_id` for a live call's caller. The call must have
    /// rung at one of the agent's extensions ([`NOT_YOURS`] otherwise, whether it exists or
    /// not) and the customer must be one the call offered (a candidate, or its match). With a
    /// call log, the returned acknowledgement says when the pick is durable: answer the agent
    /// only then.
    pub fn pick(
        self: &Arc<Self>,
        agent: &Agent,
        call_id: &str,
        customer_id: &str,
    ) -> Result<Option<crate::calls::log::Ack>, &'static str> {
        let call = self.call_of(agent, call_id).ok_or(NOT_YOURS)?;
        let call = &call;
        let offered = call.resolution.customers();
        // One of the offered customers, or any other the agent found (by search) for a caller
        // who is unknown, withheld, ambiguous or matched only approximately.
        let customer = match offered.iter().find(|c| c.id() == customer_id) {
            Some(c) => (*c).clone(),
            None => {
                if matches!(call.resolution, Resolution::Customer { .. }) {
                    return Err("this call's caller is already identified");
                }
                self.calls
                    .resolver()
                    .customer(customer_id)
                    .ok_or("no such customer")?
            }
        };
        if let Some(journal) = &self.journal {
            journal.pick(call_id, customer.clone());
        }
        // The call's own profile is everyone's already, except for candidates and for
        // customers the caller was not matched to.
        let already = match &call.resolution {
            Resolution::Customer { customer } | Resolution::Approximate { customer, .. } => {
                customer.id() == customer_id
            }
            _ => false,
        };
        if !already {
            self.start_profile(call_id, Audience::Agent(agent.id.clone()), &customer);
        }
        let Some(key) = caller_key(call) else {
            return Ok(None); // Nothing to remember it by (no number).
        };
        {
            let mut picks = self.picks.lock().unwrap_or_else(|p| p.into_inner());
            if picks.len() >= MAX_PICKS {
                // Bounded: forget the oldest generation wholesale rather than grow.
                picks.clear();
            }
            picks.insert((agent.id.clone(), key.clone()), customer_id.to_owned());
        }
        let ack = self
            .log
            .as_ref()
            .map(|log| log.pick(&agent.id, &key, customer_id, call_id));
        metrics::counter!(crate::push::PUSH_PICKS_TOTAL).increment(1);
        Ok(ack)
    }

    /// Loads remembered picks `(agent, caller key, customer)`, most recent first.
    pub fn load_picks(&self, loaded: Vec<(String, String, String)>) {
        let mut picks = self.picks.lock().unwrap_or_else(|p| p.into_inner());
        for (agent, key, customer) in loaded.into_iter().take(MAX_PICKS) {
            picks.entry((agent, key)).or_insert(customer);
        }
    }

    /// The customer `agent` last picked for callers with this key, if any.
    pub fn picked(&self, agent: &str, caller_key: &str) -> Option<String> {
        self.picks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(agent.to_owned(), caller_key.to_owned()))
            .cloned()
    }

    /// The call's resolution as `agent` should see it: candidates re-ranked so that the one this
    /// agent picked last time for this caller number comes first.
    pub fn resolution_for<'a>(&self, agent: &str, call: &'a Call) -> Cow<'a, Resolution> {
        if let (Resolution::Candidates { .. }, Some(key)) = (&call.resolution, caller_key(call))
            && let Some(picked) = self.picked(agent, &key)
            && let Some(ranked) = call.resolution.preferring(&picked)
        {
            return Cow::Owned(ranked);
        }
        Cow::Borrowed(&call.resolution)
    }

    /// The calls live at `agent`'s extensions and not dismissed by it, as `snapshot` entries.
    pub fn snapshot(&self, agent: &Agent) -> Outbound {
        let extensions = &agent.extensions;
        let calls = self.calls.live(Some(extensions));
        let dismissed = self.dismissed.lock().unwrap_or_else(|p| p.into_inner());
        let glance = self.glance();
        let sees_contacts = glance.is_some_and(|g| g.allowed(&agent.roles));
        let entries: Vec<serde_json::Value> = calls
            .iter()
            .filter(|call| {
                !dismissed
                    .get(&call.id)
                    .is_some_and(|agents| agents.contains(&agent.id))
            })
            .flat_map(|call| {
                call.legs
                    .iter()
                    .filter(|l| extensions.contains(&l.extension))
                    .map(move |leg| {
                        let resolution = self.resolution_for(&agent.id, call);
                        let mut pop = message::pop_json(call, &resolution, &leg.extension);
                        pop.insert("call_id".into(), serde_json::Value::String(call.id.clone()));
                        let profile = self.profiles.for_agent(&call.id, &agent.id);
                        let sections: Vec<serde_json::Value> = profile
                            .iter()
                            .flat_map(|p| {
                                p.parts.iter().map(|part| {
                                    let part = visible(part, agent);
                                    serde_json::Value::Object(message::section_body(
                                        &p.customer_id,
                                        &part,
                                    ))
                                })
                            })
                            .collect();
                        pop.insert("sections".into(), serde_json::Value::Array(sections));
                        if let Some(contacts) = self.profiles.contacts(&call.id)
                            && sees_contacts
                            && let Ok(members) =
                                serde_json::to_value(message::LastContactsMembers::of(&contacts))
                        {
                            pop.insert("last_contacts".into(), members);
                        }
                        pop.insert(
                            "complete".into(),
                            serde_json::Value::Bool(
                                profile.as_ref().is_some_and(|p| p.summary.is_some()),
                            ),
                        );
                        serde_json::Value::Object(pop)
                    })
            })
            .collect();
        let callbacks: Vec<serde_json::Value> = self
            .callbacks
            .get()
            .map(|c| c.for_agent(agent))
            .unwrap_or_default()
            .iter()
            .filter_map(|cb| serde_json::to_value(cb).ok())
            .collect();
        Outbound::new(
            "snapshot",
            None,
            serde_json::json!({ "calls": entries, "callbacks": callbacks }),
        )
    }

    /// The hub as an [`Observer`](crate::calls::Observer) of the call table.
    pub fn observer(self: &Arc<Self>) -> Arc<dyn crate::calls::Observer> {
        Arc::new(Routing(self.clone()))
    }

    /// Sends one update to the connections it concerns.
    pub fn route(self: &Arc<Self>, update: &CallUpdate) {
        let call = &update.call;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match &update.change {
            Change::Ringing { extension } => {
                let newly = open
                    .entry(call.id.clone())
                    .or_default()
                    .insert(extension.clone());
                if !newly {
                    return;
                }
                // Under the `open` lock, so that no section of this call reaches the extension
                // before its `ringing`.
                self.deliver_ringing(call, extension);
                match self.profiles.shared(&call.id) {
                    Some(profile) => self.replay(&call.id, extension, &profile),
                    None => match &call.resolution {
                        Resolution::Customer { customer }
                        | Resolution::Approximate { customer, .. } => {
                            self.start_profile(&call.id, Audience::All, customer);
                        }
                        Resolution::Candidates { candidates } => {
                            if self.profiles.begin_contacts(&call.id) {
                                self.start_contacts(&call.id, candidates);
                            } else if let Some(contacts) = self.profiles.contacts(&call.id) {
                                self.deliver_contacts(&call.id, &contacts, [extension.as_str()]);
                            }
                        }
                        Resolution::Withheld | Resolution::Unknown => {}
                    },
                }
                drop(open);
            }
            Change::Answered { by } => {
                let exts: Vec<String> = open
                    .get(&call.id)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                drop(open);
                let msg = message::answered(call, by.as_deref());
                for ext in exts {
                    self.deliver(&ext, &msg);
                }
            }
            Change::LegEnded { extension, reason } => {
                let was_open = open.get_mut(&call.id).is_some_and(|s| s.remove(extension));
                drop(open);
                if was_open {
                    self.deliver(extension, &message::ended(call, *reason));
                }
            }
            Change::Ended { reason } => {
                let exts = open.remove(&call.id).unwrap_or_default();
                drop(open);
                self.dismissed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&call.id);
                self.profiles.end(&call.id);
                let msg = message::ended(call, *reason);
                for ext in exts {
                    self.deliver(&ext, &msg);
                }
            }
        }
    }

    /// `ringing` to every connection of an extension: one shared message, except for agents
    /// whose earlier pick re-ranks the candidates.
    fn deliver_ringing(&self, call: &Call, extension: &str) {
        let shared = message::ringing(call, &call.resolution, extension);
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = routes.get(extension) else {
            return;
        };
        for sub in subs {
            let msg = match self.resolution_for(&sub.agent.id, call) {
                Cow::Owned(ranked) => message::ringing(call, &ranked, extension),
                Cow::Borrowed(_) => shared.clone(),
            };
            offer(sub, msg);
        }
    }

    /// Joins a cluster: from now on a call's profile is composed by the node that wins it.
    pub fn set_share(&self, share: Arc<dyn Share>) {
        let _ = self.share.set(share);
    }

    /// In a cluster, the live nodes' page addresses, this node's first; else none.
    pub fn page_urls(&self) -> Vec<String> {
        self.share.get().map(|s| s.page_urls()).unwrap_or_default()
    }

    /// A part another node composed for everyone's profile of a call, delivered to the call's
    /// open pops here like one composed here (once per source).
    pub fn remote_part(&self, call_id: &str, customer_id: &str, part: Part) {
        let Some(generation) = self.profiles.shared_generation(call_id, customer_id) else {
            return;
        };
        if self
            .profiles
            .add_part(call_id, &Audience::All, generation, part.clone())
        {
            self.deliver_part(call_id, &Audience::All, customer_id, &part);
        }
    }

    /// The end of another node's composition of a call's profile.
    pub fn remote_complete(&self, call_id: &str, customer_id: &str, summary: Summary) {
        let Some(generation) = self.profiles.shared_generation(call_id, customer_id) else {
            return;
        };
        if self
            .profiles
            .finish(call_id, &Audience::All, generation, summary.clone())
        {
            self.deliver_complete(call_id, &Audience::All, customer_id, &summary);
        }
    }

    /// A note an agent saved here (the journal has it): in a cluster, to the other nodes too,
    /// so that an agent's recent calls and the customer's history show it wherever they are
    /// asked.
    pub fn noted(&self, entry: &crate::calls::journal::Entry) {
        if let Some(share) = self.share.get() {
            share.note(entry);
        }
    }

    /// A note saved at another node, into this node's journal.
    pub fn remote_note(
        &self,
        call_id: &str,
        note: Option<String>,
        disposition: Option<String>,
        noted_by: String,
        noted_at: std::time::SystemTime,
    ) {
        if let Some(journal) = &self.journal {
            journal.note_from_peer(call_id, note, disposition, noted_by, noted_at);
        }
    }

    /// The composer in force (for parts from other nodes).
    pub fn composer(&self) -> Option<Arc<Composer>> {
        self.composer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the composer (a reload): compositions already running finish on the old one,
    /// the next pop uses the new one.
    pub fn set_composer(&self, composer: Option<Arc<Composer>>) {
        *self.composer.write().unwrap_or_else(|p| p.into_inner()) =
            composer.filter(|c| !c.is_empty());
    }

    /// Starts composing `customer`'s profile for a call, unless there is no composer or the
    /// call already has everyone's profile. Never waits: the composition runs on its own task,
    /// bounded by the composer's deadline and ended by shutdown.
    fn start_profile(self: &Arc<Self>, call_id: &str, audience: Audience, customer: &Customer) {
        let Some(composer) = self.composer() else {
            return;
        };
        let Some(generation) = self.profiles.begin(call_id, &audience, customer.id()) else {
            return;
        };
        // Over the cap, a burst gets its sections as `skipped` (delivered from a task: the
        // caller may hold the `open` lock).
        let permit = composer.try_begin();
        let who = Who {
            customer: customer.clone(),
            numbers: self.calls.resolver().numbers(customer.id()),
            call_id: Some(call_id.to_owned()),
        };
        let hub = self.clone();
        let call_id = call_id.to_owned();
        let cancel = self.cancel.clone();
        let share = match audience {
            Audience::All => self.share.get().cloned(),
            Audience::Agent(_) => None,
        };
        tokio::spawn(async move {
            // Spawned from the call path, this task would run next on this worker (tokio's
            // LIFO slot), before the socket writers woken for the `ringing` just offered: let
            // them write the pop first.
            tokio::task::yield_now().await;
            let customer_id = who.customer.id().to_owned();
            // In a cluster, the node that wins the call composes; the others show what it
            // shares, and compose themselves only if nothing complete came in time.
            if let Some(share) = &share {
                let mine = tokio::select! {
                    () = cancel.cancelled() => return,
                    mine = share.claim(&call_id) => mine,
                };
                if !mine {
                    let deadline = tokio::time::Instant::now() + OWNER_GRACE;
                    let Some(settled) = hub.profiles.settled(&call_id) else {
                        return; // The call ended.
                    };
                    loop {
                        // Registered before looking, so that a finish in between still wakes.
                        let woken = settled.notified();
                        tokio::pin!(woken);
                        woken.as_mut().enable();
                        match hub.profiles.shared(&call_id) {
                            Some(p) if p.summary.is_some() => return,
                            None => return,
                            Some(_) => {}
                        }
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep_until(deadline) => break,
                            () = &mut woken => {}
                        }
                    }
                    metrics::counter!(crate::push::OWNER_SILENT_TOTAL).increment(1);
                }
            }
            let Some(_permit) = permit else {
                let (parts, summary) = composer.overloaded();
                for part in parts {
                    if hub
                        .profiles
                        .add_part(&call_id, &audience, generation, part.clone())
                    {
                        hub.deliver_part(&call_id, &audience, &customer_id, &part);
                    }
                }
                if hub
                    .profiles
                    .finish(&call_id, &audience, generation, summary.clone())
                {
                    hub.deliver_complete(&call_id, &audience, &customer_id, &summary);
                }
                return;
            };
            let compose = composer.compose(&who, |part| {
                if let Some(share) = &share {
                    share.part(&call_id, &customer_id, &part);
                }
                if hub
                    .profiles
                    .add_part(&call_id, &audience, generation, part.clone())
                {
                    hub.deliver_part(&call_id, &audience, &customer_id, &part);
                }
            });
            let summary = tokio::select! {
                () = cancel.cancelled() => return,
                summary = compose => summary,
            };
            if let Some(share) = &share {
                share.complete(&call_id, &customer_id, &summary);
            }
            if hub
                .profiles
                .finish(&call_id, &audience, generation, summary.clone())
            {
                hub.deliver_complete(&call_id, &audience, &customer_id, &summary);
            }
        });
    }

    /// Uses `glance` for the candidates' last contacts from now on (none: the history is off).
    pub fn set_glance(&self, glance: Option<Glance>) {
        *self.glance.write().unwrap_or_else(|p| p.into_inner()) = glance.map(Arc::new);
    }

    fn glance(&self) -> Option<Arc<Glance>> {
        self.glance
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the history when each candidate of a call was last in contact, then sends it as
    /// `last_contacts` to the call's open pops (and keeps it for snapshots and later legs).
    /// Never waits: the pop is already on its way.
    fn start_contacts(self: &Arc<Self>, call_id: &str, candidates: &[crate::resolve::Candidate]) {
        let Some(glance) = self.glance() else {
            return;
        };
        let ids: Vec<String> = candidates
            .iter()
            .map(|c| c.customer.id().to_owned())
            .collect();
        let hub = self.clone();
        let call_id = call_id.to_owned();
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            // As for a profile: let the socket writers send the pop first.
            tokio::task::yield_now().await;
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let contacts = tokio::select! {
                () = cancel.cancelled() => return,
                contacts = glance.last_contacts(&ids, &call_id) => Arc::new(contacts),
            };
            // Under the `open` lock, as a leg's `ringing` is: each open pop gets it once,
            // either here or right after its own `ringing`.
            let open = hub.open.lock().unwrap_or_else(|p| p.into_inner());
            if !hub.profiles.set_contacts(&call_id, contacts.clone()) {
                return;
            }
            let exts: Vec<String> = open
                .get(&call_id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            drop(open);
            hub.deliver_contacts(&call_id, &contacts, exts.iter().map(String::as_str));
        });
    }

    /// `last_contacts` to the connections at `extensions` whose agents may see the history.
    fn deliver_contacts<'a>(
        &self,
        call_id: &str,
        contacts: &crate::calls::history::LastContacts,
        extensions: impl IntoIterator<Item = &'a str>,
    ) {
        let Some(glance) = self.glance() else {
            return;
        };
        let msg = message::last_contacts(call_id, contacts);
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        for sub in extensions
            .into_iter()
            .filter_map(|ext| routes.get(ext))
            .flatten()
        {
            if glance.allowed(&sub.agent.roles) && seen.insert(sub.id) {
                offer(sub, msg.clone());
            }
        }
    }

    /// The connections a profile message goes to: the call's open pops, in the audience, each
    /// connection once.
    fn audience(&self, call_id: &str, audience: &Audience) -> Vec<Subscriber> {
        let exts: Vec<String> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(call_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        exts.iter()
            .filter_map(|ext| routes.get(ext))
            .flatten()
            .filter(|sub| audience.includes(&sub.agent.id) && seen.insert(sub.id))
            .cloned()
            .collect()
    }

    fn deliver_part(&self, call_id: &str, audience: &Audience, customer_id: &str, part: &Part) {
        // One frame per way of seeing the part (whole, forbidden, without some members),
        // built once for all the agents who see it so.
        let mut frames: Vec<(Option<u64>, Outbound)> = Vec::with_capacity(1);
        for sub in self.audience(call_id, audience) {
            let roles = &sub.agent.roles;
            let view = part.allowed(roles).then(|| part.hidden_mask(roles));
            let msg = match frames.iter().find(|(v, _)| *v == view) {
                Some((_, msg)) => msg.clone(),
                None => {
                    let msg = message::section(call_id, customer_id, &part.visible_to(roles));
                    frames.push((view, msg.clone()));
                    msg
                }
            };
            offer(&sub, msg);
        }
    }

    fn deliver_complete(
        &self,
        call_id: &str,
        audience: &Audience,
        customer_id: &str,
        summary: &Summary,
    ) {
        let Some(profile) = self.profiles_for(call_id, audience) else {
            return;
        };
        for sub in self.audience(call_id, audience) {
            let missing = missing_for(&profile.parts, summary, &sub.agent);
            offer(
                &sub,
                message::complete(call_id, customer_id, summary, &missing),
            );
        }
    }

    fn profiles_for(&self, call_id: &str, audience: &Audience) -> Option<super::profiles::Profile> {
        match audience {
            Audience::All => self.profiles.shared(call_id),
            Audience::Agent(agent) => self.profiles.for_agent(call_id, agent),
        }
    }

    /// Everyone's profile so far, to an extension rung after it started.
    fn replay(&self, call_id: &str, extension: &str, profile: &super::profiles::Profile) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = routes.get(extension) else {
            return;
        };
        for sub in subs {
            for part in &profile.parts {
                let part = visible(part, &sub.agent);
                offer(sub, message::section(call_id, &profile.customer_id, &part));
            }
            if let Some(summary) = &profile.summary {
                let missing = missing_for(&profile.parts, summary, &sub.agent);
                offer(
                    sub,
                    message::complete(call_id, &profile.customer_id, summary, &missing),
                );
            }
        }
    }

    fn deliver(&self, extension: &str, msg: &Outbound) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = routes.get(extension) {
            for sub in subs {
                offer(sub, msg.clone());
            }
        }
    }
}

/// A part as `agent` may see it.
fn visible<'a>(part: &'a Part, agent: &Agent) -> Cow<'a, Part> {
    part.visible_to(&agent.roles)
}

/// The sections `agent` lacks: those not `ok`, and those its roles may not see.
fn missing_for(parts: &[Part], summary: &Summary, agent: &Agent) -> Vec<Arc<str>> {
    let mut missing = summary.missing.clone();
    for part in parts {
        if !part.allowed(&agent.roles) && !missing.contains(&part.name) {
            missing.push(part.name.clone());
        }
    }
    missing
}

/// What picks are remembered by: the caller's normalised number, else the number as presented.
fn caller_key(call: &Call) -> Option<String> {
    call.caller_key
        .clone()
        .or_else(|| call.caller_number.clone())
        .filter(|k| !k.is_empty())
}

fn offer(sub: &Subscriber, msg: Outbound) {
    let kind = msg.kind();
    match sub.tx.try_send(msg) {
        Ok(()) => metrics::counter!(crate::push::PUSH_MESSAGES_TOTAL, "type" => kind).increment(1),
        Err(mpsc::error::TrySendError::Full(_)) => {
            if !sub.slow.is_cancelled() {
                metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "slow_consumer")
                    .increment(1);
                sub.slow.cancel();
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}
