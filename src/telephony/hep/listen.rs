//! HEP listeners: UDP (one packet per datagram) and TCP (back-to-back packets framed by their
//! total length). Passive: nothing is sent back.
//!
//! TCP connections are budgeted by [`crate::listener`] (`[hep] max_tcp_connections`,
//! `max_tcp_connections_per_source`, `tcp_idle_timeout`): a connection proves itself with its
//! first valid packet, and one silent for the idle timeout is closed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::decode::frame_len;
use super::observe::HepObserver;
use crate::listener::{Budget, Conn, Tracked};
use crate::telephony::accept::serve_connections;
use crate::telephony::allow::Allow;

/// Receives HEP datagrams until cancelled.
pub async fn serve_udp(
    socket: UdpSocket,
    observer: Arc<HepObserver>,
    allow: Allow,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
        };
        if !allow.permits(peer.ip()) {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "source_not_allowed")
                .increment(1);
            continue;
        }
        let _ = observer.handle(&buf[..len], peer);
    }
}

/// Accepts HEP TCP connections until cancelled.
pub async fn serve_tcp(
    listener: TcpListener,
    observer: Arc<HepObserver>,
    allow: Allow,
    budget: Budget,
    cancel: CancellationToken,
) {
    serve_connections(
        listener,
        "hep",
        allow,
        budget,
        cancel,
        move |stream, peer, conn| connection(stream, peer, observer.clone(), conn),
    )
    .await;
}

/// Reads back-to-back HEP packets framed by their total length until the peer closes, a
/// framing error, or cancellation.
async fn connection(
    mut stream: Tracked<TcpStream>,
    peer: SocketAddr,
    observer: Arc<HepObserver>,
    conn: Conn,
) {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        loop {
            match frame_len(&buf) {
                Ok(Some(len)) => {
                    let packet = buf.split_to(len);
                    if observer.handle(&packet, peer) {
                        conn.prove();
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    metrics::counter!(crate::telephony::HEP_PACKETS_TOTAL, "result" => error.kind())
                        .increment(1);
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            () = conn.shutdown.cancelled() => return,
            r = stream.read_buf(&mut buf) => r,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
    }
}
