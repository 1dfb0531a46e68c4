//! One agent's WebSocket connection.
//!
//! ```text
//!  connect ──auth frame (≤ auth_timeout)──▶ ready, snapshot ──▶ live: pops, pongs, acks
//!     │ anything else, a bad token or silence: close 4401
//! ```
//!
//! A session is a reader and a writer sharing one cancellation token: when either ends, the
//! other stops. The writer owns the socket's sink, assigns `seq` and sends a WebSocket ping
//! every `heartbeat`; the reader answers client messages through the same bounded queue. A
//! client silent (no frame, no pong) for `idle_timeout` is closed with 4408; one whose queue
//! overflows with 4429.
//!
//! Close codes: 4401 not authenticated (missing, wrong or late token), 4408 idle, 4429 too slow
//! to read its pops, 4430 too many failed sign-ins from the address, 1003 binary frame, 1009
//! message too big, 1001 server shutting down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::hub::Hub;
use super::message::{ClientMessage, Outbound, PageSettings, Ready};
use crate::agents::TokenHash;
use crate::agents::{Agent, Agents};
use crate::throttle::{AuthThrottle, Peer};

/// Close: not authenticated.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close: no traffic from the client for the idle timeout.
pub const CLOSE_IDLE: u16 = 4408;
/// Close: the client does not read its pops fast enough.
pub const CLOSE_TOO_SLOW: u16 = 4429;
/// Close: too many failed sign-ins from the client's address; try again later.
pub const CLOSE_THROTTLED: u16 = 4430;
/// The `channel` label of WebSocket sign-ins in the throttle's metrics.
pub const CHANNEL: &str = "websocket";
/// Close: a message larger than `[push] max_message_bytes` [RFC 6455 §7.4.1].
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Whether a read failed because the client's message or frame was over the size limit
/// (tungstenite's capacity error, under axum's).
fn too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// How long a closing session waits for the client's Close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The first frame must arrive within this.
    pub auth_timeout: Duration,
    /// Server ping interval.
    pub heartbeat: Duration,
    /// A client silent this long is closed.
    pub idle_timeout: Duration,
    /// Messages queued per connection before it is closed as too slow.
    pub queue: usize,
    /// The agent page's settings, sent in `ready` (again to every session when they change).
    pub page: Arc<watch::Sender<Arc<PageSettings>>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig::from_section(&super::section::Push::default(), Arc::default())
    }
}

impl SessionConfig {
    /// From the `[push]` section and the page's settings.
    pub fn from_section(push: &super::section::Push, page: Arc<PageSettings>) -> Self {
        SessionConfig {
            auth_timeout: push.auth_timeout,
            heartbeat: push.heartbeat,
            idle_timeout: push.idle_timeout,
            queue: push.queue,
            page: Arc::new(watch::Sender::new(page)),
        }
    }
}

/// Runs one connection to its end.
pub async fn run(
    socket: WebSocket,
    hub: Arc<Hub>,
    agents: Arc<Agents>,
    (throttle, peer): (AuthThrottle, Peer),
    config: SessionConfig,
    shutdown: CancellationToken,
) {
    let (mut sink, mut stream) = socket.split();
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };

    // 1. Authentication: the first frame, within the deadline; none at all from an address
    //    that failed too often.
    if !throttle.allows(peer.0, CHANNEL) {
        let _ = sink
            .send(close(
                CLOSE_THROTTLED,
                "too many failed sign-ins; try again later",
            ))
            .await;
        return;
    }
    let first = tokio::time::timeout(config.auth_timeout, stream.next()).await;
    let timed_out = first.is_err();
    // Only a frame that is not a valid sign-in is a guess. Silence is not: a slow network or
    // a daemon busy with a reconnect storm must not lock an office's address out (the
    // connection caps bound what silent clients can hold).
    let guessed = matches!(first, Ok(Some(Ok(_))));
    if let Ok(Some(Err(error))) = first {
        if too_big(&error) {
            metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "too_big").increment(1);
            let _ = sink.send(close(CLOSE_TOO_BIG, "message too big")).await;
        }
        return;
    }
    let agent = match first {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Auth { token }) => {
                let hash = TokenHash::of(&token);
                agents.by_hash(&hash).map(|agent| (agent, hash))
            }
            _ => None,
        },
        _ => None,
    };
    let Some((agent, hash)) = agent else {
        metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "unauthenticated")
            .increment(1);
        if guessed {
            throttle.failed(peer.0, CHANNEL);
        }
        let why = if timed_out {
            "auth timeout"
        } else {
            "first frame must be a valid auth"
        };
        let _ = sink.send(close(CLOSE_UNAUTHORIZED, why)).await;
        return;
    };
    let span = tracing::info_span!("agent", agent = %agent.id);
    live(
        (sink, stream),
        (agent, hash),
        hub,
        agents,
        (throttle, peer),
        config,
        shutdown,
    )
    .instrument(span)
    .await;
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// The authenticated part of a session.
/// The reader's last accepted token replacement, for the writer.
#[derive(Default)]
struct Reauth {
    next: std::sync::Mutex<Option<(Arc<Agent>, TokenHash)>>,
    ready: tokio::sync::Notify,
}

impl Reauth {
    fn offer(&self, agent: Arc<Agent>, hash: TokenHash) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = Some((agent, hash));
        self.ready.notify_one();
    }

    /// Waits for a replacement (none lost: `notify_one` keeps a permit while nobody waits).
    async fn take(&self) -> Option<(Arc<Agent>, TokenHash)> {
        self.ready.notified().await;
        self.next.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A message taken from the connection's queue, as its frame; records the fan-out latency.
fn queued_frame(msg: &Outbound, seq: u64) -> Message {
    metrics::histogram!(crate::push::PUSH_FANOUT_SECONDS)
        .record(msg.created().elapsed().as_secs_f64());
    Message::Text(msg.render(seq).into())
}

/// Most queued messages written to a connection in one go.
const WRITE_BATCH: usize = 32;

/// Sends `first` and whatever else is already queued for the connection (up to
/// [`WRITE_BATCH`]), then flushes: one write to the socket for a call's `ringing`, `section`s and
/// `complete` when they are queued together. Counts `seq` for each message sent.
async fn send_batch(
    sink: &mut Sink,
    first: Message,
    rx: &mut mpsc::Receiver<Outbound>,
    seq: &mut u64,
) -> Result<(), axum::Error> {
    sink.feed(first).await?;
    *seq += 1;
    for _ in 1..WRITE_BATCH {
        let Ok(msg) = rx.try_recv() else {
            break;
        };
        sink.feed(queued_frame(&msg, *seq)).await?;
        *seq += 1;
    }
    sink.flush().await
}

async fn live(
    (mut sink, mut stream): (Sink, Stream),
    (mut agent, mut hash): (Arc<Agent>, TokenHash),
    hub: Arc<Hub>,
    agents: Arc<Agents>,
    (throttle, peer): (AuthThrottle, Peer),
    config: SessionConfig,
    shutdown: CancellationToken,
) {
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };
    tracing::debug!("Agent connected.");

    // 2. Register before the snapshot so no update falls between them (one may repeat state the
    //    snapshot already holds; clients apply messages by call_id).
    let (tx, mut rx) = mpsc::channel::<Outbound>(config.queue);
    let done = shutdown.child_token();
    let slow = CancellationToken::new();
    let mut registration = hub.register(&agent, tx.clone(), slow.clone());
    let writer_hub = hub.clone();
    // Watched from here on: a change after this point is seen, one before is already in.
    let mut agents_changed = agents.changes();
    let mut page = config.page.subscribe();
    let ready = |agent: &Agent, page: &PageSettings| {
        Outbound::new(
            "ready",
            None,
            serde_json::to_value(Ready {
                agent: &agent.id,
                name: &agent.name,
                extensions: &agent.extensions,
                heartbeat_ms: config.heartbeat.as_millis() as u64,
                page,
                nodes: writer_hub.page_urls(),
            })
            .unwrap_or_default(),
        )
    };
    let mut seq = 0u64;
    let first = ready(&agent, &page.borrow_and_update());
    for msg in [first, hub.snapshot(&agent)] {
        if sink
            .send(Message::Text(msg.render(seq).into()))
            .await
            .is_err()
        {
            return;
        }
        seq += 1;
    }

    // 3. Live: a writer (this task) and a reader (spawned), sharing `done`.
    let started = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let close_with: Arc<OnceLock<(u16, &'static str)>> = Arc::default();
    // A replaced token, from the reader to the writer: the newest wins (a slot and a wake-up,
    // not a channel: tokio allocates a channel's 32 slots per connection up front).
    let reauth: Arc<Reauth> = Arc::default();
    // The agent as the reader acts for it: its extensions decide which calls it may pick or
    // dismiss. Replaced by a fresh token for the same agent (reader) and by a change of the
    // agent's extensions on a reload (writer).
    let acting = Arc::new(std::sync::RwLock::new(agent.clone()));
    let reader = tokio::spawn({
        let (done, last_seen, close_with, agents, tx, acting, reauth) = (
            done.clone(),
            last_seen.clone(),
            close_with.clone(),
            agents.clone(),
            tx.clone(),
            acting.clone(),
            reauth.clone(),
        );
        let acting = move || acting.read().unwrap_or_else(|p| p.into_inner()).clone();
        async move {
            let mut drain_until: Option<Instant> = None;
            loop {
                // Once the session is over, keep reading (and discarding) for a grace period so
                // the client's Close can complete the closing handshake before TCP goes away
                // [RFC 6455 §7.1.1]; otherwise a client still flushing pongs sees a broken pipe
                // instead of our close code.
                let frame = tokio::select! {
                    () = done.cancelled(), if drain_until.is_none() => {
                        drain_until = Some(Instant::now() + CLOSE_GRACE);
                        continue;
                    }
                    () = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => break,
                    f = stream.next() => f,
                };
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) if drain_until.is_none() && too_big(&error) => {
                        metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "too_big")
                            .increment(1);
                        let _ = close_with.set((CLOSE_TOO_BIG, "message too big"));
                        done.cancel();
                        break;
                    }
                    _ => break,
                };
                if drain_until.is_some() {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                    continue;
                }
                last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let reply = match frame {
                    Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                        Ok(ClientMessage::Ping) => {
                            Outbound::new("pong", None, serde_json::json!({}))
                        }
                        Ok(ClientMessage::Dismiss { call_id }) => {
                            metrics::counter!(crate::push::PUSH_CLIENT_MESSAGES_TOTAL, "type" => "dismiss").increment(1);
                            match hub.dismiss(&acting(), &call_id) {
                                Ok(()) => Outbound::new(
                                    "dismissed",
                                    Some(&call_id),
                                    serde_json::json!({}),
                                ),
                                Err(why) => Outbound::new(
                                    "error",
                                    Some(&call_id),
                                    serde_json::json!({ "message": why }),
                                ),
                            }
                        }
                        Ok(ClientMessage::Pick {
                            call_id,
                            customer_id,
                        }) => {
                            metrics::counter!(crate::push::PUSH_CLIENT_MESSAGES_TOTAL, "type" => "pick").increment(1);
                            let picked = match hub.pick(&acting(), &call_id, &customer_id) {
                                Ok(Some(ack)) => ack.durable().await.map_err(|error| {
                                    tracing::warn!(%error, "Pick not saved.");
                                    "pick not saved; try again"
                                }),
                                Ok(None) => Ok(()),
                                Err(why) => Err(why),
                            };
                            match picked {
                                Ok(()) => Outbound::new(
                                    "picked",
                                    Some(&call_id),
                                    serde_json::json!({ "customer_id": customer_id }),
                                ),
                                Err(why) => Outbound::new(
                                    "error",
                                    Some(&call_id),
                                    serde_json::json!({ "message": why }),
                                ),
                            }
                        }
                        Ok(ClientMessage::Auth { token }) => match agents.authenticate(&token) {
                            Some(new) if new.id == acting().id => {
                                reauth.offer(new, TokenHash::of(&token));
                                continue;
                            }
                            _ => {
                                throttle.failed(peer.0, CHANNEL);
                                let _ = close_with.set((CLOSE_UNAUTHORIZED, "token refused"));
                                done.cancel();
                                continue;
                            }
                        },
                        Err(error) => Outbound::new(
                            "error",
                            None,
                            serde_json::json!({ "message": error.to_string() }),
                        ),
                    },
                    Message::Binary(_) => {
                        let _ = close_with.set((1003, "binary frames are not accepted"));
                        done.cancel();
                        continue;
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if tx.try_send(reply).is_err() {
                    let _ = close_with.set((CLOSE_TOO_SLOW, "too slow"));
                    done.cancel();
                }
            }
            done.cancel();
        }
    });
    // The writer queues a fresh snapshot behind a `ready` when the agent is re-routed.
    let requeue = tx;

    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + config.heartbeat, config.heartbeat);
    loop {
        let frame = tokio::select! {
            () = done.cancelled() => break,
            () = slow.cancelled() => break,
            Some((new, new_hash)) = reauth.take() => {
                // The same agent with a fresh token: same extensions, same routes.
                agent = new;
                hash = new_hash;
                *acting.write().unwrap_or_else(|p| p.into_inner()) = agent.clone();
                metrics::counter!(crate::push::PUSH_CLIENT_MESSAGES_TOTAL, "type" => "reauth").increment(1);
                Message::Text(ready(&agent, &page.borrow()).render(seq).into())
            }
            Ok(()) = agents_changed.changed() => {
                match agents.by_hash(&hash) {
                    // Removed, or its token changed: signed out.
                    None => {
                        let _ = close_with.set((CLOSE_UNAUTHORIZED, "signed out: agent removed"));
                        break;
                    }
                    Some(now) if now == agent => continue,
                    // Its extensions, name or roles changed: routed anew, told, and given the
                    // calls of its new extensions.
                    Some(now) => {
                        agent = now;
                        *acting.write().unwrap_or_else(|p| p.into_inner()) = agent.clone();
                        registration = writer_hub.register(&agent, requeue.clone(), slow.clone());
                        let _ = requeue.try_send(writer_hub.snapshot(&agent));
                        Message::Text(ready(&agent, &page.borrow()).render(seq).into())
                    }
                }
            }
            Ok(()) = page.changed() => {
                Message::Text(ready(&agent, &page.borrow_and_update()).render(seq).into())
            }
            msg = rx.recv() => match msg {
                Some(msg) => queued_frame(&msg, seq),
                None => break,
            },
            _ = heartbeat.tick() => {
                let silent = started.elapsed().saturating_sub(Duration::from_millis(last_seen.load(Ordering::Relaxed)));
                if silent >= config.idle_timeout {
                    let _ = close_with.set((CLOSE_IDLE, "no traffic from the client"));
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let sent = tokio::select! {
            r = send_batch(&mut sink, frame, &mut rx, &mut seq) => r.is_ok(),
            () = done.cancelled() => false,
            () = slow.cancelled() => false,
        };
        if !sent {
            break;
        }
    }
    done.cancel();
    // The loop can end on the slow signal in either select; decide the reason here, once.
    if slow.is_cancelled() {
        let _ = close_with.set((CLOSE_TOO_SLOW, "too slow: pops were not read"));
    }
    if shutdown.is_cancelled() {
        let _ = close_with.set((1001, "server shutting down"));
    }
    if let Some(&(code, reason)) = close_with.get() {
        if code == CLOSE_TOO_SLOW {
            metrics::counter!(crate::push::PUSH_DROPS_TOTAL, "reason" => "closed_too_slow")
                .increment(1);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(code, reason))).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE * 2, reader).await;
    drop(registration);
    tracing::debug!("Agent disconnected.");
}
