//! The sections composed for each live call, kept so that a page that (re)connects mid-call
//! gets them in its snapshot, and an extension rung later gets them after its `ringing`.
//!
//! A call has at most one profile for everyone (its customer's) and one per agent who picked a
//! candidate. A new pick replaces the agent's profile; a composition still running for the old
//! one is recognised by its generation and ignored. Everything goes when the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::calls::history::LastContacts;
use crate::compose::{Part, Summary};

/// Who a profile is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Every agent the call rings (the call's own customer).
    All,
    /// One agent (the candidate it picked).
    Agent(String),
}

impl Audience {
    /// Whether `agent` is in this audience.
    pub fn includes(&self, agent: &str) -> bool {
        match self {
            Audience::All => true,
            Audience::Agent(a) => a == agent,
        }
    }
}

/// The sections composed so far for one customer.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The customer.
    pub customer_id: Arc<str>,
    /// The parts, in arrival order.
    pub parts: Vec<Part>,
    /// Set when the composition is over.
    pub summary: Option<Summary>,
    generation: u64,
}

#[derive(Debug, Default)]
struct CallProfiles {
    shared: Option<Profile>,
    picked: HashMap<String, Profile>,
    /// The candidates' last contacts: `Some(None)` while they are asked for.
    contacts: Option<Option<Arc<LastContacts>>>,
    /// Woken when everyone's profile is finished and when the call ends (for a node waiting
    /// on the owner of the call in a cluster).
    settled: Arc<tokio::sync::Notify>,
}

/// Profiles of live calls.
#[derive(Debug, Default)]
pub struct Profiles {
    calls: Mutex<HashMap<String, CallProfiles>>,
    next: std::sync::atomic::AtomicU64,
}

impl Profiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallProfiles>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a profile; returns its generation, or `None` when everyone's profile of this call
    /// already exists (a second leg of the same call).
    pub fn begin(&self, call_id: &str, audience: &Audience, customer_id: &str) -> Option<u64> {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = Profile {
            customer_id: Arc::from(customer_id),
            parts: Vec::new(),
            summary: None,
            generation,
        };
        let mut calls = self.lock();
        let call = calls.entry(call_id.to_owned()).or_default();
        match audience {
            Audience::All if call.shared.is_some() => return None,
            Audience::All => call.shared = Some(profile),
            Audience::Agent(agent) => {
                call.picked.insert(agent.clone(), profile);
            }
        }
        Some(generation)
    }

    fn with<R>(
        &self,
        call_id: &str,
        audience: &Audience,
        generation: u64,
        f: impl FnOnce(&mut Profile) -> R,
    ) -> Option<R> {
        let mut calls = self.lock();
        let call = calls.get_mut(call_id)?;
        let profile = match audience {
            Audience::All => call.shared.as_mut()?,
            Audience::Agent(agent) => call.picked.get_mut(agent)?,
        };
        (profile.generation == generation).then(|| f(profile))
    }

    /// Records a part; false when the profile is gone (call ended) or replaced, or already has
    /// this source's part (composed here and by another node).
    pub fn add_part(
        &self,
        call_id: &str,
        audience: &Audience,
        generation: u64,
        part: Part,
    ) -> bool {
        self.with(call_id, audience, generation, |p| {
            if p.parts.iter().any(|q| q.name == part.name) {
                return false;
            }
            p.parts.push(part);
            true
        })
        .unwrap_or(false)
    }

    /// The generation of everyone's profile of a call for `customer_id`, begun if there is
    /// none yet (a part from another node can arrive before the call's first `ringing` here);
    /// `None` when everyone's profile is another customer's.
    pub fn shared_generation(&self, call_id: &str, customer_id: &str) -> Option<u64> {
        if let Some(generation) = self.begin(call_id, &Audience::All, customer_id) {
            return Some(generation);
        }
        let calls = self.lock();
        let shared = calls.get(call_id)?.shared.as_ref()?;
        (&*shared.customer_id == customer_id).then_some(shared.generation)
    }

    /// Records the end of a composition; false when the profile is gone or replaced.
    pub fn finish(
        &self,
        call_id: &str,
        audience: &Audience,
        generation: u64,
        summary: Summary,
    ) -> bool {
        let mut calls = self.lock();
        let Some(call) = calls.get_mut(call_id) else {
            return false;
        };
        let profile = match audience {
            Audience::All => call.shared.as_mut(),
            Audience::Agent(agent) => call.picked.get_mut(agent),
        };
        let finished = profile.is_some_and(|p| {
            p.generation == generation && p.summary.is_none() && {
                p.summary = Some(summary);
                true
            }
        });
        if finished && *audience == Audience::All {
            call.settled.notify_waiters();
        }
        finished
    }

    /// What wakes a task waiting for everyone's profile of a call to be finished (or the call
    /// to end); `None` when the call has no profile here.
    pub fn settled(&self, call_id: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.lock().get(call_id).map(|c| c.settled.clone())
    }

    /// The profile `agent` sees for a call: its own pick's, else everyone's.
    pub fn for_agent(&self, call_id: &str, agent: &str) -> Option<Profile> {
        let calls = self.lock();
        let call = calls.get(call_id)?;
        call.picked.get(agent).or(call.shared.as_ref()).cloned()
    }

    /// Everyone's profile of a call.
    pub fn shared(&self, call_id: &str) -> Option<Profile> {
        self.lock().get(call_id).and_then(|c| c.shared.clone())
    }

    /// Marks a call's candidates' last contacts as asked for; false when they already are (a
    /// second leg of the same call).
    pub fn begin_contacts(&self, call_id: &str) -> bool {
        let mut calls = self.lock();
        let call = calls.entry(call_id.to_owned()).or_default();
        call.contacts.is_none() && {
            call.contacts = Some(None);
            true
        }
    }

    /// Keeps a call's candidates' last contacts; false when the call is gone.
    pub fn set_contacts(&self, call_id: &str, contacts: Arc<LastContacts>) -> bool {
        let mut calls = self.lock();
        let Some(call) = calls.get_mut(call_id) else {
            return false;
        };
        call.contacts = Some(Some(contacts));
        true
    }

    /// A call's candidates' last contacts, once known.
    pub fn contacts(&self, call_id: &str) -> Option<Arc<LastContacts>> {
        self.lock().get(call_id)?.contacts.clone().flatten()
    }

    /// Forgets a call.
    pub fn end(&self, call_id: &str) {
        if let Some(call) = self.lock().remove(call_id) {
            call.settled.notify_waiters();
        }
    }
}
