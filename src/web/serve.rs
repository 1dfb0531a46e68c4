//! The HTTP listener's connections, plain or TLS: hyper's HTTP/1.1 server behind
//! [`crate::listener`]'s accept loop (global and per-address caps, eviction of connections
//! that never finished a request). Owns the HTTP timeouts and how a connection ends; does not
//! own the routes (`web::router`) or the certificate (`tls_server`).
//!
//! Every connection is in one of three phases, and each has its clock:
//!
//! ```text
//!   accept ──(TLS handshake ≤ tls_handshake_timeout)──▶ HEADERS
//!   HEADERS ──whole head read (≤ header_read_timeout from its start)──▶ BUSY
//!   BUSY ──response produced──▶ IDLE ──first byte of the next request──▶ HEADERS
//!   IDLE: closed after keep_alive_timeout without a byte either way
//!   BUSY: closed after keep_alive_timeout without a byte either way (a stuck peer)
//! ```
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its
//! next request, so it would cut idle connections at the header deadline; it is off, and this
//! module keeps the two clocks apart. A WebSocket upgrade leaves hyper (and these clocks): the
//! push session has its own heartbeat, and the socket stays counted by the listener until the
//! session ends.
//!
//! Every request carries `ConnectInfo<SocketAddr>` (the per-address sign-in throttle reads it),
//! over TLS too. On shutdown the listener stops accepting, idle connections close, and requests
//! in flight finish within the daemon's grace.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::listener::{Budget, CLOSED, Conn, Tracked};
use crate::tls_server::ServerTls;

/// What the HTTP listener may spend, and how long a client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections at once (WebSockets included).
    pub max_connections: usize,
    /// Most connections at once from one address (an office behind one NAT counts once).
    pub max_connections_per_address: usize,
    /// A request head (request line and headers) must be complete this long after its first
    /// byte (after the connection opened, for the first request).
    pub header_read_timeout: Duration,
    /// A connection without a byte either way for this long between requests is closed.
    pub keep_alive_timeout: Duration,
    /// The TLS handshake must be done within this.
    pub tls_handshake_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 25_000,
            max_connections_per_address: 1_000,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on an already-bound listener, over TLS when `tls` is set, until `cancel`; then
/// lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerTls>>,
    limits: HttpLimits,
    cancel: CancellationToken,
) {
    let budget = Budget {
        max_connections: limits.max_connections,
        max_per_source: limits.max_connections_per_address,
        idle_timeout: None,
    };
    crate::listener::serve(
        listener,
        "http",
        budget,
        |_| true,
        cancel,
        move |io, peer, conn| connection(io, peer, conn, app.clone(), tls.clone(), limits),
    )
    .await;
}

async fn connection(
    io: Tracked<TcpStream>,
    peer: SocketAddr,
    conn: Conn,
    app: Router,
    tls: Option<Arc<ServerTls>>,
    limits: HttpLimits,
) {
    let exchange = Arc::new(Exchange::new());
    let Some(tls) = tls else {
        return http(io, peer, conn, app, exchange, limits).await;
    };
    let handshake = crate::listener::tls_handshake(
        tls.acceptor(),
        io,
        peer,
        limits.tls_handshake_timeout,
        &conn,
        "http",
    );
    let Some(stream) = handshake.await else {
        return;
    };
    // The first request's head is timed from the end of the handshake.
    exchange.set(HEADERS);
    http(stream, peer, conn, app, exchange, limits).await;
}

/// HTTP/1.1 on one connection until it ends, times out, or the daemon shuts down.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    conn: Conn,
    app: Router,
    exchange: Arc<Exchange>,
    limits: HttpLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (exchange, conn) = (exchange.clone(), conn.clone());
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            exchange.set(BUSY);
            conn.prove();
            request.extensions_mut().insert(ConnectInfo(peer));
            let (app, exchange) = (app.clone(), exchange.clone());
            async move {
                let response = app.oneshot(request).await;
                exchange.set(IDLE);
                response
            }
        })
    };
    let io = TokioIo::new(Phased {
        inner: io,
        exchange: exchange.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Timed here instead: hyper's clock would also cut idle keep-alive connections.
        .header_read_timeout(None)
        .keep_alive(true);
    let serving = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(serving);
    let last_active = || conn.last_active();
    tokio::select! {
        _ = serving.as_mut() => return,
        reason = exchange.expired(&limits, last_active) => {
            metrics::counter!(CLOSED, "listener" => "http", "reason" => reason).increment(1);
            tracing::debug!(%peer, reason, "Closing an HTTP connection.");
            return;
        }
        () = conn.shutdown.cancelled() => {}
    }
    // Shutdown. A head still arriving is not waited for (a slow client would hold the
    // daemon's grace); otherwise no new request on this connection, and the one in flight or
    // its response being written may finish.
    if exchange.phase.load(Ordering::Acquire) == HEADERS {
        return;
    }
    serving.as_mut().graceful_shutdown();
    tokio::select! {
        _ = serving => {}
        _ = exchange.expired(&limits, last_active) => {}
    }
}

/// Waiting for (or reading) a request head.
const HEADERS: u8 = 0;
/// A request is being served.
const BUSY: u8 = 1;
/// Between requests.
const IDLE: u8 = 2;

/// The phase of one HTTP connection and when it began, shared by the byte stream (the first
/// byte after IDLE starts a head), the service (a whole head starts BUSY, a response IDLE) and
/// the watchdog.
#[derive(Debug)]
struct Exchange {
    epoch: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    changed: Notify,
}

impl Exchange {
    fn new() -> Exchange {
        Exchange {
            epoch: Instant::now(),
            phase: AtomicU8::new(HEADERS),
            since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: between requests, that is the start of the next head.
    fn read_some(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            if self
                .phase
                .compare_exchange(IDLE, HEADERS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.changed.notify_one();
            }
        }
    }

    /// Resolves with the reason when the current phase overstays its timeout.
    async fn expired(
        &self,
        limits: &HttpLimits,
        last_active: impl Fn() -> Instant,
    ) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let phase = self.phase.load(Ordering::Acquire);
            let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
            let (deadline, reason) = match phase {
                HEADERS => (since + limits.header_read_timeout, "header_timeout"),
                _ => (
                    since.max(last_active()) + limits.keep_alive_timeout,
                    "idle_timeout",
                ),
            };
            if Instant::now() >= deadline {
                return reason;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// The byte stream hyper reads, telling the [`Exchange`] when a new request starts.
struct Phased<I> {
    inner: I,
    exchange: Arc<Exchange>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Phased<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.exchange.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Phased<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_has_ten_seconds_however_it_trickles() {
        let exchange = Exchange::new();
        let start = Instant::now();
        // Trickled bytes do not move the header deadline.
        exchange.read_some();
        let reason = exchange.expired(&limits(), Instant::now).await;
        assert_eq!(reason, "header_timeout");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_a_connection_may_idle_for_the_keep_alive_timeout() {
        let exchange = Arc::new(Exchange::new());
        exchange.set(BUSY);
        exchange.set(IDLE);
        let start = Instant::now();
        let reason = exchange.expired(&limits(), || start).await;
        assert_eq!(reason, "idle_timeout");
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_the_next_request_starts_its_head_clock() {
        let exchange = Arc::new(Exchange::new());
        exchange.set(IDLE);
        let start = Instant::now();
        let watch = {
            let exchange = exchange.clone();
            tokio::spawn(async move { exchange.expired(&limits(), || start).await })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        exchange.read_some();
        assert_eq!(watch.await.expect("join"), "header_timeout");
        assert_eq!(start.elapsed(), Duration::from_secs(40));
    }
}
