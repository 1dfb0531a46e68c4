//! One accept loop for every TCP listener (SIP, HEP, HTTP): what a connection may cost, and who
//! loses when the budget is spent. Owns the connection registry, the accept-error backoff, the
//! idle timeout and the listener metrics; does not own any protocol (the caller's `serve` does)
//! or any allow-list (the caller's `admit` does).
//!
//! Budget of one listener ([`Budget`]): a global cap, a per-source-address cap and an idle
//! timeout. When a cap is reached a new connection is not refused outright: it **evicts** an
//! old one, chosen in this order —
//!
//! 1. a connection that has not proven itself (no complete valid request or packet yet), the
//!    one quiet longest first: slowloris and idle-flood sockets go before real peers;
//! 2. else the proven connection idle longest, if it has been quiet at least
//!    [`QUIET_BEFORE_EVICTION`].
//!
//! Only when nothing is evictable is the new connection refused. The normal path is O(1) under
//! one short lock; the search for a victim is O(n), and runs only when a cap is reached.
//!
//! Each accepted socket is handed to the protocol wrapped in [`Tracked`]: every byte read or
//! written marks the connection active (one atomic store), an evicted or idle-timed-out
//! connection fails its next read or write (and wakes a task blocked in one), and dropping it
//! takes the connection off the books, so an upgraded WebSocket counts for as long as it lives.
//!
//! Accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`…) back off exponentially from 10 ms to 1 s and
//! log one warning per interval with the count held back.
//!
//! Metrics, labelled `listener` (`sip`, `sip_tls`, `hep`, `http`):
//! - `screenpop_connections` (gauge): open connections;
//! - `screenpop_connections_evicted_total{reason}`: `unproven`, `idle`;
//! - `screenpop_connections_refused_total{reason}`: `connection_limit`, `source_limit`
//!   (nothing evictable);
//! - `screenpop_connections_closed_total{reason}`: closed by a timeout (`idle_timeout`,
//!   `header_timeout`, `handshake_timeout`);
//! - `screenpop_accept_errors_total`;
//! - `screenpop_open_files_limit` (gauge, no label): the process's `RLIMIT_NOFILE`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// The TCP budget defaults every listener section shares (`[sip]`, `[hep]`:
/// `max_tcp_connections`, `max_tcp_connections_per_source`, `tcp_idle_timeout`).
pub mod defaults {
    use std::time::Duration;

    /// Most concurrent TCP connections.
    pub fn max_connections() -> usize {
        1024
    }
    /// Most concurrent TCP connections from one source address.
    pub fn max_connections_per_source() -> usize {
        32
    }
    /// A TCP connection without traffic for this long is closed.
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(120)
    }
}

use crate::backoff::Backoff;
use crate::throttle::LogSampler;

/// Open connections, by listener (gauge).
pub const CONNECTIONS: &str = "screenpop_connections";
/// Connections closed to make room for a new one, by listener and reason.
pub const EVICTED: &str = "screenpop_connections_evicted_total";
/// Connections refused because nothing could be evicted, by listener and reason.
pub const REFUSED: &str = "screenpop_connections_refused_total";
/// Connections closed by a timeout, by listener and reason.
pub const CLOSED: &str = "screenpop_connections_closed_total";
/// Failed `accept` calls, by listener.
pub const ACCEPT_ERRORS: &str = "screenpop_accept_errors_total";
/// The process's open-files limit (`RLIMIT_NOFILE`, soft), set at daemon start.
pub const OPEN_FILES_LIMIT: &str = "screenpop_open_files_limit";

/// A proven connection must have been quiet this long to be evicted: one that is talking right
/// now is never cut off for a newcomer.
pub const QUIET_BEFORE_EVICTION: Duration = Duration::from_secs(1);
/// First pause after a failed `accept` (at most: jittered); doubled on each further failure.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept-error warning per listener in this interval.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a connection closed by a timeout may take to finish (flush a last reply).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What one listener may spend on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one source address.
    pub max_per_source: usize,
    /// A connection without a byte in either direction for this long is closed; `None`: the
    /// protocol times its own connections (HTTP).
    pub idle_timeout: Option<Duration>,
}

/// Accepts on an already-bound listener until `cancel`, running `serve` for each connection
/// that `admit` allows (its source address) and the budget has room for, then waits for the
/// connections to finish. `name` labels the metrics and logs.
pub async fn serve<A, F, Fut>(
    listener: TcpListener,
    name: &'static str,
    budget: Budget,
    admit: A,
    cancel: CancellationToken,
    serve: F,
) where
    A: Fn(IpAddr) -> bool,
    F: Fn(Tracked<TcpStream>, SocketAddr, Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let registry = Registry::new(name, budget);
    let tracker = TaskTracker::new();
    let errors = LogSampler::new(ACCEPT_ERROR_LOG_INTERVAL);
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // keep the log to one line per interval.
                    metrics::counter!(ACCEPT_ERRORS, "listener" => name).increment(1);
                    let delay = backoff.next_delay();
                    if let Some(held) = errors.sample() {
                        tracing::warn!(%error, listener = name, held_back = held, backoff_ms = delay.as_millis() as u64, "TCP accept failed.");
                    }
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            },
        };
        if !admit(peer.ip()) {
            continue;
        }
        let Some(slot) = registry.admit(peer.ip()) else {
            continue;
        };
        // Small frames in a row (SIP replies, pops) must not wait for ACKs: with Nagle's
        // algorithm each would wait for the ACK of the one before, which a delayed ACK holds
        // for up to 40 ms.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            slot: slot.clone(),
            epoch: registry.epoch,
            shutdown: cancel.child_token(),
        };
        let io = Tracked::new(stream, registry.clone(), slot);
        let work = serve(io, peer, conn.clone());
        tracker.spawn(async move {
            let Some(idle) = budget.idle_timeout else {
                work.await;
                return;
            };
            tokio::pin!(work);
            tokio::select! {
                () = &mut work => return,
                () = conn.idle_for(idle) => {
                    metrics::counter!(CLOSED, "listener" => name, "reason" => "idle_timeout")
                        .increment(1);
                    tracing::debug!(%peer, listener = name, "Closing an idle connection.");
                    conn.slot.kill.cancel();
                }
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, work).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Pending connections a TCP listener may queue before the kernel drops SYNs (capped by
/// `net.core.somaxconn`). tokio's default of 1,024 overflowed when 19,500 agents reconnected at
/// once (benches/load `storm`): their sign-ins waited a second for SYN retransmits.
pub const LISTEN_BACKLOG: u32 = 8192;

/// Binds a TCP listener (SO_REUSEADDR, as `TcpListener::bind`) with [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft open-files limit to the hard limit; returns the limit now in force, or
/// `None` where there is no such limit (or it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// The soft open-files limit in force, published as [`OPEN_FILES_LIMIT`].
pub fn report_open_files_limit() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    metrics::gauge!(OPEN_FILES_LIMIT).set(soft as f64);
    Some(soft)
}

/// One live connection, as the protocol sees it.
#[derive(Debug, Clone)]
pub struct Conn {
    slot: Arc<Slot>,
    epoch: Instant,
    /// Cancelled when the daemon shuts down: stop reading, finish what is in flight.
    pub shutdown: CancellationToken,
}

/// The TLS handshake of an accepted connection, in its own task, within `timeout` and unless
/// the daemon shuts down first. A failed or timed-out handshake is counted
/// (`screenpop_drops_total{reason="tls_handshake_failed"}`; a timeout also in
/// [`CLOSED`] with `reason="handshake_timeout"`), logged at debug, and gives `None`.
pub async fn tls_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    io: Tracked<TcpStream>,
    peer: SocketAddr,
    timeout: Duration,
    conn: &Conn,
    listener: &'static str,
) -> Option<tokio_rustls::server::TlsStream<Tracked<TcpStream>>> {
    let handshake = tokio::time::timeout(timeout, acceptor.accept(io));
    let done = tokio::select! {
        () = conn.shutdown.cancelled() => return None,
        done = handshake => done,
    };
    match done {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "tls_handshake_failed")
                .increment(1);
            tracing::debug!(%peer, %error, listener, "TLS handshake failed.");
            None
        }
        Err(_) => {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "tls_handshake_failed")
                .increment(1);
            metrics::counter!(CLOSED, "listener" => listener, "reason" => "handshake_timeout")
                .increment(1);
            tracing::debug!(%peer, ?timeout, listener, "TLS handshake timed out.");
            None
        }
    }
}

impl Conn {
    /// The connection carried its first complete valid request or packet: from now on it is
    /// evicted only after the connections that have not.
    pub fn prove(&self) {
        self.slot.proven.store(true, Ordering::Relaxed);
    }

    /// Whether [`Conn::prove`] was called.
    pub fn proven(&self) -> bool {
        self.slot.proven.load(Ordering::Relaxed)
    }

    /// Closes the connection now (as an eviction does): reads and writes fail from here on.
    pub fn close(&self) {
        self.slot.kill.cancel();
    }

    /// When the last byte went either way.
    pub fn last_active(&self) -> Instant {
        self.epoch + Duration::from_millis(self.slot.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the connection has seen no traffic for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last_active() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A connection's entry in its listener's registry.
#[derive(Debug)]
struct Slot {
    id: u64,
    ip: IpAddr,
    /// Milliseconds since the registry's epoch of the last byte either way.
    last_ms: AtomicU64,
    proven: AtomicBool,
    /// Cancelled to close the connection at once (eviction, idle timeout).
    kill: CancellationToken,
}

/// The live connections of one listener.
#[derive(Debug)]
struct Registry {
    name: &'static str,
    budget: Budget,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Arc<Slot>>,
    per_source: HashMap<IpAddr, usize>,
}

impl Registry {
    fn new(name: &'static str, budget: Budget) -> Arc<Registry> {
        Arc::new(Registry {
            name,
            budget: Budget {
                max_connections: budget.max_connections.max(1),
                max_per_source: budget.max_per_source.max(1),
                ..budget
            },
            epoch: Instant::now(),
            inner: Mutex::default(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Books a connection from `ip`, evicting another if a cap is reached; `None` (counted)
    /// when nothing may be evicted.
    fn admit(&self, ip: IpAddr) -> Option<Arc<Slot>> {
        let now = self.now_ms();
        let quiet = u64::try_from(QUIET_BEFORE_EVICTION.as_millis()).unwrap_or(u64::MAX);
        let mut evicted = Vec::new();
        let slot = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let from_ip = inner.per_source.get(&ip).copied().unwrap_or(0);
            if from_ip >= self.budget.max_per_source {
                match victim(inner.live.values().filter(|s| s.ip == ip), now, quiet) {
                    Some(v) => evicted.push(inner.remove(v)),
                    None => {
                        drop(inner);
                        self.refused("source_limit", ip);
                        return None;
                    }
                }
            }
            if inner.live.len() >= self.budget.max_connections {
                match victim(inner.live.values(), now, quiet) {
                    Some(v) => evicted.push(inner.remove(v)),
                    None => {
                        drop(inner);
                        self.refused("connection_limit", ip);
                        return None;
                    }
                }
            }
            inner.next_id += 1;
            let slot = Arc::new(Slot {
                id: inner.next_id,
                ip,
                last_ms: AtomicU64::new(now),
                proven: AtomicBool::new(false),
                kill: CancellationToken::new(),
            });
            inner.live.insert(slot.id, slot.clone());
            *inner.per_source.entry(ip).or_default() += 1;
            slot
        };
        metrics::gauge!(CONNECTIONS, "listener" => self.name).increment(1.0);
        for victim in evicted.into_iter().flatten() {
            let reason = if victim.proven.load(Ordering::Relaxed) {
                "idle"
            } else {
                "unproven"
            };
            metrics::counter!(EVICTED, "listener" => self.name, "reason" => reason).increment(1);
            metrics::gauge!(CONNECTIONS, "listener" => self.name).decrement(1.0);
            tracing::debug!(ip = %victim.ip, listener = self.name, reason, "Evicted a connection to make room.");
            victim.kill.cancel();
        }
        Some(slot)
    }

    fn refused(&self, reason: &'static str, ip: IpAddr) {
        metrics::counter!(REFUSED, "listener" => self.name, "reason" => reason).increment(1);
        tracing::debug!(%ip, listener = self.name, reason, "Refused a connection: every slot is busy.");
    }

    /// Takes a closed connection off the books (a no-op if it was evicted already).
    fn release(&self, id: u64) {
        let removed = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if removed.is_some() {
            metrics::gauge!(CONNECTIONS, "listener" => self.name).decrement(1.0);
        }
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Arc<Slot>> {
        let slot = self.live.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&slot.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&slot.ip);
            }
        }
        Some(slot)
    }
}

/// The connection to evict among `candidates`: unproven ones first, then the longest quiet; a
/// proven connection quiet less than `quiet_ms` is never chosen.
fn victim<'a>(
    candidates: impl Iterator<Item = &'a Arc<Slot>>,
    now_ms: u64,
    quiet_ms: u64,
) -> Option<u64> {
    candidates
        .filter_map(|s| {
            let proven = s.proven.load(Ordering::Relaxed);
            let last = s.last_ms.load(Ordering::Relaxed);
            (!proven || now_ms.saturating_sub(last) >= quiet_ms).then_some(((proven, last), s.id))
        })
        .min_by_key(|(key, _)| *key)
        .map(|(_, id)| id)
}

/// An accepted socket as handed to the protocol: marks the connection active on every byte,
/// fails once the connection is evicted or timed out, and takes it off the books when dropped.
pub struct Tracked<S> {
    inner: S,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    // One future per direction: after a split, reader and writer wait in different tasks.
    killed_read: Pin<Box<WaitForCancellationFutureOwned>>,
    killed_write: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> std::fmt::Debug for Tracked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl<S> Tracked<S> {
    fn new(inner: S, registry: Arc<Registry>, slot: Arc<Slot>) -> Self {
        Tracked {
            inner,
            killed_read: Box::pin(slot.kill.clone().cancelled_owned()),
            killed_write: Box::pin(slot.kill.clone().cancelled_owned()),
            slot,
            registry,
        }
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn touch(&self) {
        self.slot
            .last_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        self.registry.release(self.slot.id);
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by its listener (evicted or idle)",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed_read.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed_write.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed_write.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed()));
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed_write.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_connections: usize, max_per_source: usize) -> Budget {
        Budget {
            max_connections,
            max_per_source,
            idle_timeout: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn live(registry: &Registry) -> Vec<u64> {
        let mut ids: Vec<u64> = registry
            .inner
            .lock()
            .expect("lock")
            .live
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_source_evicts_its_own_unproven_connection_quiet_longest() {
        let registry = Registry::new("test", budget(100, 3));
        let a = registry.admit(ip("192.0.2.1")).expect("a");
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = registry.admit(ip("192.0.2.1")).expect("b");
        tokio::time::advance(Duration::from_millis(10)).await;
        let c = registry.admit(ip("192.0.2.1")).expect("c");
        let other = registry.admit(ip("192.0.2.2")).expect("other source");
        // a proved itself; b is the unproven one quiet longest.
        a.proven.store(true, Ordering::Relaxed);
        let d = registry.admit(ip("192.0.2.1")).expect("d evicts");
        assert!(b.kill.is_cancelled(), "b was evicted");
        assert!(!a.kill.is_cancelled() && !c.kill.is_cancelled());
        assert!(!other.kill.is_cancelled(), "another source is untouched");
        assert_eq!(live(&registry), vec![a.id, c.id, other.id, d.id]);
    }

    #[tokio::test(start_paused = true)]
    async fn proven_connections_go_idle_longest_first_and_never_while_talking() {
        let registry = Registry::new("test", budget(2, 10));
        let a = registry.admit(ip("192.0.2.1")).expect("a");
        let b = registry.admit(ip("192.0.2.2")).expect("b");
        a.proven.store(true, Ordering::Relaxed);
        b.proven.store(true, Ordering::Relaxed);
        assert!(
            registry.admit(ip("192.0.2.3")).is_none(),
            "both just talked: refused"
        );
        tokio::time::advance(QUIET_BEFORE_EVICTION).await;
        b.last_ms.store(registry.now_ms(), Ordering::Relaxed);
        let c = registry.admit(ip("192.0.2.3")).expect("a is quiet now");
        assert!(a.kill.is_cancelled() && !b.kill.is_cancelled());
        assert_eq!(live(&registry), vec![b.id, c.id]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_connection_frees_its_slot() {
        let registry = Registry::new("test", budget(1, 1));
        let a = registry.admit(ip("192.0.2.1")).expect("a");
        a.proven.store(true, Ordering::Relaxed);
        assert!(registry.admit(ip("192.0.2.1")).is_none());
        registry.release(a.id);
        registry.release(a.id);
        assert!(registry.admit(ip("192.0.2.1")).is_some());
        assert!(registry.inner.lock().expect("lock").per_source.len() == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_socket_fails_its_pending_read() {
        use tokio::io::AsyncReadExt;
        let registry = Registry::new("test", budget(1, 1));
        let slot = registry.admit(ip("192.0.2.1")).expect("slot");
        let (near, _far) = tokio::io::duplex(64);
        let mut io = Tracked::new(near, registry.clone(), slot.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            io.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        slot.kill.cancel();
        let read = reader.await.expect("join");
        assert_eq!(
            read.expect_err("aborted").kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert!(live(&registry).is_empty(), "dropped: off the books");
    }
}
