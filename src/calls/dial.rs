//! Asking the PBX to place a call: ring the agent's own extension first and, once the agent
//! answers, the number (AMI `Originate`, ESL `bgapi originate`).
//!
//! Owns the vocabulary only: what is asked ([`DialRequest`]), why it failed ([`DialError`]),
//! and the [`Dialers`] registry of the PBX connections that can place calls now. Each AMI or
//! ESL client registers while it is logged in and leaves when the connection ends (a
//! [`Registration`] dropped), so the web layer asks the registry without knowing telephony,
//! and a disconnected PBX answers at once instead of after a timeout.
//!
//! ```text
//!  web ── dial(via, request) ──▶ Dialers ── try_send ──▶ [bounded queue] ──▶ AMI/ESL session
//!   ▲                                                                         │ Originate /
//!   └──────────────────── oneshot: Ok / Refused(PBX message) ◀────────────────┘ bgapi originate
//! ```
//!
//! Who may dial what (the agent's own extension, a callback that concerns the agent) is the
//! caller's business (`callbacks`); this module only checks that what goes on the wire cannot
//! carry anything but an extension and a number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Dials waiting for one PBX connection to take them; beyond it a dial is refused as busy.
pub const DIAL_QUEUE: usize = 16;
/// How long a dial waits for the PBX's answer (`Response:` to `Originate`, the `bgapi`
/// reply). Both come at once: the calls themselves are placed asynchronously.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One call to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRequest {
    /// The agent's own extension: rung first.
    pub extension: String,
    /// The number to call once the agent answers: `+`, digits (and `*`, `#`).
    pub number: String,
    /// The name the agent's phone shows while it rings (`Call back Acme Corporation`); the
    /// caller-ID number is the extension, so the outbound leg is numbered as when the agent
    /// dials.
    pub caller_id: String,
}

impl DialRequest {
    /// Whether the extension and the number are plain tokens that can go into a PBX command
    /// line (no spaces, quotes, separators or line breaks): the one check every client makes
    /// before it writes.
    pub fn is_safe(&self) -> bool {
        let token = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
        };
        token(&self.extension, b"._-+*#") && token(&self.number, b"+*#")
    }

    /// The caller-ID name reduced to what survives every PBX's quoting: letters, digits,
    /// spaces and `.-&+`, at most 40 characters.
    pub fn caller_name(&self) -> String {
        self.caller_id
            .chars()
            .filter(|c| c.is_alphanumeric() || " .-&+".contains(*c))
            .take(40)
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

/// Why a call could not be placed. Says whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Ours or the network: no PBX connection that can place calls is up (none configured,
    /// or the named one is disconnected).
    #[error("{0}")]
    NotConnected(String),
    /// The PBX refused the call; its message.
    #[error("the PBX refused the call: {0}")]
    Refused(String),
    /// The PBX did not answer in time.
    #[error("the PBX did not answer in time")]
    Timeout,
    /// The PBX connection has too many dials waiting already.
    #[error("the PBX connection is busy; try again")]
    Busy,
}

/// A dial as a PBX client receives it: the request and where its result goes.
#[derive(Debug)]
pub struct Dial {
    /// What to place.
    pub request: DialRequest,
    /// `Ok` once the PBX accepted it.
    pub reply: oneshot::Sender<Result<(), DialError>>,
}

struct Entry {
    pbx: String,
    id: u64,
    tx: mpsc::Sender<Dial>,
}

/// The PBX connections that can place calls now, in the order they connected.
#[derive(Default)]
pub struct Dialers {
    entries: Mutex<Vec<Entry>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Dialers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialers")
            .field("connected", &self.connected())
            .finish()
    }
}

/// A PBX connection's place in [`Dialers`]: it leaves when this is dropped. Only this
/// registration is removed, never a newer one of the same PBX (a reload starts the new
/// client before the old one has noticed it was stopped).
pub struct Registration {
    dialers: Arc<Dialers>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.dialers.lock().retain(|e| e.id != self.id);
    }
}

impl Dialers {
    /// An empty registry.
    pub fn new() -> Arc<Dialers> {
        Arc::new(Dialers::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `pbx` (its config name) as able to place calls until the registration is
    /// dropped; its dials arrive on the receiver (bounded by [`DIAL_QUEUE`]).
    pub fn register(self: &Arc<Self>, pbx: &str) -> (Registration, mpsc::Receiver<Dial>) {
        let (tx, rx) = mpsc::channel(DIAL_QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Entry {
            pbx: pbx.to_owned(),
            id,
            tx,
        });
        let registration = Registration {
            dialers: self.clone(),
            id,
        };
        (registration, rx)
    }

    /// The PBXs connected now, in the order they connected.
    pub fn connected(&self) -> Vec<String> {
        self.lock().iter().map(|e| e.pbx.clone()).collect()
    }

    /// Places `request` through `via` (a PBX name) or, without one, the PBX connected
    /// longest; waits at most [`DIAL_TIMEOUT`] for the PBX's answer. Returns the PBX used.
    pub async fn dial(&self, via: Option<&str>, request: DialRequest) -> Result<String, DialError> {
        self.dial_within(via, request, DIAL_TIMEOUT).await
    }

    async fn dial_within(
        &self,
        via: Option<&str>,
        request: DialRequest,
        timeout: Duration,
    ) -> Result<String, DialError> {
        let (pbx, tx) = {
            let entries = self.lock();
            let entry = match via {
                Some(name) => entries.iter().rev().find(|e| e.pbx == name),
                None => entries.first(),
            };
            match entry {
                Some(e) => (e.pbx.clone(), e.tx.clone()),
                None => {
                    return Err(DialError::NotConnected(match via {
                        Some(name) => format!("the PBX `{name}` is not connected"),
                        None => "no AMI or ESL connection to a PBX is up to place the call".into(),
                    }));
                }
            }
        };
        let (reply, answer) = oneshot::channel();
        tx.try_send(Dial { request, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DialError::Busy,
            mpsc::error::TrySendError::Closed(_) => {
                DialError::NotConnected(format!("the PBX `{pbx}` is not connected"))
            }
        })?;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(DialError::Timeout),
            // The connection ended with the dial pending: it was never placed, or never
            // confirmed; either way the PBX is gone.
            Ok(Err(_)) => Err(DialError::NotConnected(format!(
                "the PBX `{pbx}` disconnected"
            ))),
            Ok(Ok(result)) => result.map(|()| pbx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> DialRequest {
        DialRequest {
            extension: "1001".into(),
            number: "+14155550100".into(),
            caller_id: "Call back \"Acme\" <Corp>\r\nAction: Hangup".into(),
        }
    }

    #[test]
    fn only_plain_tokens_are_safe_and_names_are_reduced() {
        assert!(request().is_safe());
        for (ext, number) in [
            ("1001 x", "+1415"),
            ("1001", "+1415 XML evil"),
            ("", "+1"),
            ("1001", ""),
            ("1001\r\n", "+1"),
            ("10{01}", "+1"),
        ] {
            let r = DialRequest {
                extension: ext.into(),
                number: number.into(),
                caller_id: String::new(),
            };
            assert!(!r.is_safe(), "{ext:?} {number:?}");
        }
        assert_eq!(request().caller_name(), "Call back Acme CorpAction Hangup");
    }

    #[tokio::test]
    async fn dials_go_to_the_first_connected_or_the_named_pbx_and_leave_with_it() {
        let dialers = Dialers::new();
        assert!(matches!(
            dialers.dial(None, request()).await,
            Err(DialError::NotConnected(m)) if m.contains("no AMI or ESL")
        ));
        let (first, mut one) = dialers.register("pbx1");
        let (second, mut two) = dialers.register("fs1");
        assert_eq!(dialers.connected(), ["pbx1", "fs1"]);
        let answer = async {
            let d = one.recv().await.expect("pbx1 gets it");
            d.reply.send(Ok(())).expect("waiting");
        };
        let (placed, ()) = tokio::join!(dialers.dial(None, request()), answer);
        assert_eq!(placed.as_deref(), Ok("pbx1"));
        let answer = async {
            let d = two.recv().await.expect("fs1 gets it");
            d.reply.send(Err(DialError::Refused("no".into()))).ok();
        };
        let (refused, ()) = tokio::join!(dialers.dial(Some("fs1"), request()), answer);
        assert_eq!(refused, Err(DialError::Refused("no".into())));
        // A new registration of pbx1 (a reload) survives the old one leaving.
        let (again, _rx) = dialers.register("pbx1");
        drop(first);
        assert_eq!(dialers.connected(), ["fs1", "pbx1"]);
        drop((second, again));
        assert!(dialers.connected().is_empty());
        assert!(matches!(
            dialers.dial(Some("pbx1"), request()).await,
            Err(DialError::NotConnected(m)) if m.contains("`pbx1` is not connected")
        ));
    }

    #[tokio::test]
    async fn a_connection_that_ends_with_the_dial_pending_answers_at_once() {
        let dialers = Dialers::new();
        let (registration, mut rx) = dialers.register("pbx1");
        let drop_it = async move {
            let dial = rx.recv().await.expect("dial");
            drop((dial, registration));
        };
        let started = tokio::time::Instant::now();
        let (result, ()) = tokio::join!(dialers.dial(None, request()), drop_it);
        assert!(
            matches!(result, Err(DialError::NotConnected(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_pbx_times_out_and_a_full_queue_is_busy() {
        let dialers = Dialers::new();
        let (_registration, _rx) = dialers.register("pbx1");
        assert_eq!(dialers.dial(None, request()).await, Err(DialError::Timeout));
        // The queue holds DIAL_QUEUE dials (the timed-out one among them) and then refuses.
        for _ in 1..DIAL_QUEUE {
            let _ = dialers.dial_within(None, request(), Duration::ZERO).await;
        }
        assert_eq!(dialers.dial(None, request()).await, Err(DialError::Busy));
    }
}
