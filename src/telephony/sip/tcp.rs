//! The SIP TCP and TLS listeners: messages framed by Content-Length [RFC 3261 §18.3], replies
//! on the connection they came in on [§18.2.2].
//!
//! SIP over TLS [§26] is the same connection handler on a decrypted stream: the TLS listener
//! accepts TCP, runs the handshake in the connection's own task under `tls_handshake_timeout`
//! (a silent client never holds up the accept loop or another client), then hands the stream
//! to [`connection`]. A failed or timed-out handshake is counted in
//! `screenpop_drops_total{reason="tls_handshake_failed"}` (a timeout also in
//! `screenpop_connections_closed_total{listener="sip_tls",reason="handshake_timeout"}`) and
//! logged at debug. The certificate is read per handshake from [`ServerTls`], so a reload
//! reaches the next connection.
//!
//! Each connection is a reader and a writer; when one ends, the other is cancelled. The writer's
//! queue is bounded, and the reader takes the next message only when the queue has room for
//! its replies: a peer that sends faster than its answers can be written (or than it reads
//! them) is slowed down by TCP's own flow control, and no 100 Trying or final response is
//! dropped for a full queue. The writer sends every reply already queued in one write. The
//! reader's buffer is capped at one maximum-size message. A framing error
//! (no Content-Length, oversized message) gets a 400 when one can be built, then the connection
//! is closed: a byte stream cannot be re-synchronised.
//!
//! Connections are budgeted by [`crate::listener`] (`[sip] max_tcp_connections`,
//! `max_tcp_connections_per_source`, `tcp_idle_timeout`, the same for each TCP and each TLS
//! listener): a connection proves itself with its first valid request, and an idle one is
//! closed. The idle timeout is never shorter than
//! [`min_idle_timeout`]: a connection carrying a ringing INVITE must live to send its final
//! response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, ReplyPath};
use super::scan::{Frame, MAX_MESSAGE_BYTES, Transport, frame};
use crate::listener::{Budget, Conn, Tracked};
use crate::telephony::accept::serve_connections;
use crate::telephony::allow::Allow;
use crate::tls_server::ServerTls;

/// The TCP listeners' name in metrics and logs (`listener` label).
pub const TCP_LISTENER: &str = "sip";
/// The TLS listeners' name in metrics and logs (`listener` label).
pub const TLS_LISTENER: &str = "sip_tls";

/// Replies queued per connection. The reader waits for room rather than letting a reply be
/// dropped; only replies sent from elsewhere (a timer's 480, a retransmission) can find it full,
/// and are then dropped and counted.
pub const WRITE_QUEUE: usize = 256;
/// Room the reader keeps in the write queue before it handles a message: the most replies one
/// request causes (a CANCEL: its 200 and the INVITE's 487), with a margin for timers' replies.
const REPLY_ROOM: usize = 4;
/// Most queued replies written at once.
const WRITE_BATCH: usize = 64;
/// A server transaction outlives its ring timeout by at most 64·T1 = 32 s [RFC 3261 §17.2.1,
/// Timer H]: the connection it came on must stay open that long.
pub const TRANSACTION_SLACK: Duration = Duration::from_secs(32);

/// The shortest idle timeout allowed with `ring_timeout`: an INVITE may ring that long without
/// a byte on its connection, and its final response (480) must still find the connection open.
pub fn min_idle_timeout(ring_timeout: Duration) -> Duration {
    ring_timeout + TRANSACTION_SLACK
}

/// Accepts connections on an already-bound listener until cancelled.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    allow: Allow,
    budget: Budget,
    cancel: CancellationToken,
) {
    serve_connections(
        listener,
        TCP_LISTENER,
        allow,
        budget,
        cancel,
        move |stream, peer, conn| {
            connection(stream, peer, endpoint.clone(), conn, Transport::Stream)
        },
    )
    .await;
}

/// What a SIP-over-TLS listener runs with besides the TCP listener's settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificate (and client CA), reloadable.
    pub tls: Arc<ServerTls>,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
}

/// Accepts SIP-over-TLS connections on an already-bound listener until cancelled.
pub async fn serve_tls(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    allow: Allow,
    budget: Budget,
    tls: TlsSettings,
    cancel: CancellationToken,
) {
    serve_connections(
        listener,
        TLS_LISTENER,
        allow,
        budget,
        cancel,
        move |stream, peer, conn| tls_connection(stream, peer, endpoint.clone(), conn, tls.clone()),
    )
    .await;
}

/// The handshake, in the connection's own task, then the same handler as TCP.
async fn tls_connection(
    stream: Tracked<TcpStream>,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    conn: Conn,
    tls: TlsSettings,
) {
    let acceptor = tls.tls.acceptor();
    let handshake = crate::listener::tls_handshake(
        acceptor,
        stream,
        peer,
        tls.handshake_timeout,
        &conn,
        TLS_LISTENER,
    );
    let Some(stream) = handshake.await else {
        return;
    };
    connection(stream, peer, endpoint, conn, Transport::Tls).await;
}

/// One connection, TCP or TLS, until it closes, fails to frame, times out or is evicted.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    conn: Conn,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cancel = conn.shutdown.clone();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer_cancel = cancel.clone();
    let write_task = tokio::spawn(async move {
        let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
        let mut joined = BytesMut::new();
        loop {
            batch.clear();
            let taken = tokio::select! {
                () = writer_cancel.cancelled() => break,
                n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
            };
            if taken == 0 {
                break;
            }
            // Everything already queued goes out in one write (one TLS record, one syscall).
            let written = if let [one] = batch.as_slice() {
                writer.write_all(one).await
            } else {
                joined.clear();
                for bytes in &batch {
                    joined.extend_from_slice(bytes);
                }
                writer.write_all(&joined).await
            };
            if written.is_err() {
                break;
            }
        }
        writer_cancel.cancel();
        let _ = writer.shutdown().await;
    });
    let path = ReplyPath::Stream(tx.clone());
    let mut buf = BytesMut::with_capacity(4096);
    'conn: loop {
        // Take every whole message already buffered.
        loop {
            match frame(&buf) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Skip { len, ping }) => {
                    buf.advance(len);
                    if ping {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                Ok(Frame::Message(len)) => {
                    // Backpressure: handle the message only when its replies fit in the queue.
                    if tx.capacity() < REPLY_ROOM {
                        let room = tokio::select! {
                            () = cancel.cancelled() => break 'conn,
                            room = tx.reserve_many(REPLY_ROOM) => room,
                        };
                        // The writer is gone: so is the connection.
                        if room.is_err() {
                            break 'conn;
                        }
                    }
                    let message = buf.split_to(len);
                    if endpoint.handle(&message, transport, peer, &path) {
                        conn.prove();
                    }
                }
                Err(error) => {
                    metrics::counter!(crate::telephony::SIP_PARSE_ERRORS_TOTAL, "kind" => error.kind())
                        .increment(1);
                    tracing::debug!(%peer, transport = transport.label(), %error, "SIP stream framing error; closing the connection.");
                    // Answer what can be answered (a 400 naming the defect), then close.
                    let end = buf.len().min(MAX_MESSAGE_BYTES);
                    let _ = endpoint.handle(&buf[..end], transport, peer, &path);
                    break 'conn;
                }
            }
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(8192);
        }
        let read = tokio::select! {
            () = cancel.cancelled() => break,
            r = reader.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(path);
    drop(tx);
    // Let queued replies drain, then stop the writer.
    let _ = tokio::time::timeout(Duration::from_secs(1), write_task).await;
    cancel.cancel();
}
