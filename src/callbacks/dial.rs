//! Calling a callback's number back through the PBX: the rules, not the wire. The agent's own
//! extension rings first (one of theirs, never another's), then the number; the entry must
//! concern the agent and not be claimed by someone else; one placed call per agent within
//! `dial_interval`. Placing the call does not close the entry: the outbound call is not a
//! call from the number, so it does not reach it; the agent marks it done.

use std::time::Duration;

use tokio::time::Instant;

use super::{Callback, Callbacks, State};
use crate::agents::Agent;
use crate::calls::dial::{DialError, DialRequest, Dialers};

/// Metric `screenpop_callback_dials_total{result}`: `accepted` (the PBX queued the call),
/// `refused` (the PBX said no), `unavailable` (no PBX connection, or it is busy), `timeout`,
/// `rate_limited`, `denied` (not the agent's entry or extension, claimed by another, no
/// number).
pub const CALLBACK_DIALS_TOTAL: &str = "screenpop_callback_dials_total";

/// A call the PBX accepted to place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dialled {
    /// The PBX placing it (`[[ami]]`/`[[esl]]` name).
    pub pbx: String,
    /// The agent's extension, rung first.
    pub extension: String,
    /// The number called once the agent answers.
    pub number: String,
}

/// Why a call-back was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    /// No such open entry at the agent's extensions (alike for both, as for the other
    /// actions).
    #[error("no such callback at your extensions")]
    NotYours,
    /// The agent's: another agent claimed the entry.
    #[error("claimed by {0}")]
    Claimed(String),
    /// The agent's: the extension asked for is not one of theirs (or cannot be dialled).
    #[error("you can only call from one of your own extensions")]
    NotYourExtension,
    /// The caller's number has nothing to dial.
    #[error("this callback has no number that can be dialled")]
    NoNumber,
    /// The agent's: a call was placed less than `dial_interval` ago; wait this long.
    #[error("you placed a call moments ago; try again shortly")]
    TooSoon(Duration),
    /// The PBX's or the connection's (see [`DialError`]).
    #[error(transparent)]
    Pbx(#[from] DialError),
}

impl DialRefusal {
    fn result(&self) -> &'static str {
        match self {
            DialRefusal::NotYours
            | DialRefusal::Claimed(_)
            | DialRefusal::NotYourExtension
            | DialRefusal::NoNumber => "denied",
            DialRefusal::TooSoon(_) => "rate_limited",
            DialRefusal::Pbx(DialError::Refused(_)) => "refused",
            DialRefusal::Pbx(DialError::Timeout) => "timeout",
            DialRefusal::Pbx(DialError::NotConnected(_) | DialError::Busy) => "unavailable",
        }
    }
}

impl Callbacks {
    /// Asks the PBX (through `dialers`, `dial_via` or the one connected longest) to ring
    /// `agent`'s `extension` (default: the agent's first) and then entry `id`'s number.
    pub async fn dial(
        &self,
        agent: &Agent,
        id: &str,
        extension: Option<&str>,
        dialers: &Dialers,
    ) -> Result<Dialled, DialRefusal> {
        let result = self.try_dial(agent, id, extension, dialers).await;
        let label = match &result {
            Ok(_) => "accepted",
            Err(refusal) => refusal.result(),
        };
        metrics::counter!(CALLBACK_DIALS_TOTAL, "result" => label).increment(1);
        result
    }

    async fn try_dial(
        &self,
        agent: &Agent,
        id: &str,
        extension: Option<&str>,
        dialers: &Dialers,
    ) -> Result<Dialled, DialRefusal> {
        let cb = self
            .get(agent, id)
            .filter(|c| c.state.is_live())
            .ok_or(DialRefusal::NotYours)?;
        if cb.state == State::Claimed
            && let Some(by) = cb.claimed_by.as_deref()
            && by != agent.id
        {
            return Err(DialRefusal::Claimed(by.to_owned()));
        }
        let extension = match extension {
            None => agent.extensions.first(),
            Some(asked) => agent.extensions.iter().find(|own| *own == asked),
        }
        .ok_or(DialRefusal::NotYourExtension)?
        .clone();
        let number = cb
            .e164
            .as_deref()
            .and_then(crate::calls::history::dialable)
            .or_else(|| crate::calls::history::dialable(&cb.number))
            .ok_or(DialRefusal::NoNumber)?;
        let request = DialRequest {
            extension: extension.clone(),
            number: number.clone(),
            caller_id: format!("Call back {}", who(&cb)),
        };
        if !request.is_safe() {
            return Err(DialRefusal::NotYourExtension);
        }
        let previous = self.reserve(&agent.id)?;
        match dialers.dial(self.config.dial_via.as_deref(), request).await {
            Ok(pbx) => {
                tracing::info!(
                    agent = %agent.id,
                    %pbx,
                    %extension,
                    number = %crate::pii::Masked(&number),
                    "Call-back placed."
                );
                Ok(Dialled {
                    pbx,
                    extension,
                    number,
                })
            }
            Err(error) => {
                // A call that may be ringing (no answer in time) keeps the agent's slot; a
                // call surely not placed gives it back.
                if error != DialError::Timeout {
                    self.restore(&agent.id, previous);
                }
                Err(error.into())
            }
        }
    }

    /// Takes the agent's dial slot, or says how long until it is free; returns what it held.
    fn reserve(&self, agent: &str) -> Result<Option<Instant>, DialRefusal> {
        let interval = self.config.dial_interval;
        let now = Instant::now();
        let mut dialled = self.dialled.lock().unwrap_or_else(|p| p.into_inner());
        let previous = dialled.get(agent).copied();
        if let Some(at) = previous {
            let free = at + interval;
            if free > now {
                return Err(DialRefusal::TooSoon(free - now));
            }
        }
        // One entry per agent who dialled within the interval: the map stays small.
        dialled.retain(|_, at| *at + interval > now);
        dialled.insert(agent.to_owned(), now);
        Ok(previous)
    }

    fn restore(&self, agent: &str, previous: Option<Instant>) {
        let mut dialled = self.dialled.lock().unwrap_or_else(|p| p.into_inner());
        match previous {
            Some(at) => dialled.insert(agent.to_owned(), at),
            None => dialled.remove(agent),
        };
    }
}

/// Who the agent's phone says it is calling back: the customer, else the caller's name, else
/// the number.
fn who(cb: &Callback) -> &str {
    cb.customer
        .as_ref()
        .map(|c| c.name.as_str())
        .or(cb.display.as_deref())
        .unwrap_or(&cb.number)
}

#[cfg(test)]
mod tests {
    use super::super::CallbacksConfig;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_slot_per_agent_within_the_interval_given_back_when_nothing_was_placed() {
        let callbacks = Callbacks::new(CallbacksConfig::default(), "tel:{number}", None);
        let first = callbacks.reserve("alice").expect("free");
        assert_eq!(first, None);
        let Err(DialRefusal::TooSoon(wait)) = callbacks.reserve("alice") else {
            panic!("a second dial at once is too soon")
        };
        assert_eq!(wait, Duration::from_secs(10));
        assert!(callbacks.reserve("bob").is_ok(), "per agent");
        tokio::time::advance(Duration::from_secs(4)).await;
        let Err(DialRefusal::TooSoon(wait)) = callbacks.reserve("alice") else {
            panic!("still too soon")
        };
        assert_eq!(wait, Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(6)).await;
        let held = callbacks.reserve("alice").expect("free again");
        // That dial failed: the slot goes back to what it was.
        callbacks.restore("alice", held);
        assert!(callbacks.reserve("alice").is_ok());
    }
}
