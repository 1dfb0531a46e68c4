//! HEP listeners: UDP (one packet per datagram) and TCP (back-to-back packets framed by their
//! total length). Passive: nothing is sent back.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decode::frame_len;
use super::observe::Observer;
use crate::telephony::allow::Allow;

/// Receives HEP datagrams until cancelled.
pub async fn serve_udp(
    socket: UdpSocket,
    observer: Arc<Observer>,
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
            metrics::counter!("screenpop_drops_total", "reason" => "source_not_allowed")
                .increment(1);
            continue;
        }
        observer.handle(&buf[..len], peer);
    }
}

/// Accepts HEP TCP connections until cancelled.
pub async fn serve_tcp(
    listener: TcpListener,
    observer: Arc<Observer>,
    allow: Allow,
    max_connections: usize,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
            },
        };
        if !allow.permits(peer.ip()) {
            metrics::counter!("screenpop_drops_total", "reason" => "source_not_allowed")
                .increment(1);
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("screenpop_drops_total", "reason" => "tcp_connection_limit")
                .increment(1);
            continue;
        };
        let observer = observer.clone();
        let cancel = cancel.child_token();
        tracker.spawn(async move {
            let mut buf = BytesMut::with_capacity(8192);
            'conn: loop {
                loop {
                    match frame_len(&buf) {
                        Ok(Some(len)) => {
                            let packet = buf.split_to(len);
                            observer.handle(&packet, peer);
                        }
                        Ok(None) => break,
                        Err(error) => {
                            metrics::counter!("screenpop_hep_packets_total", "result" => error.kind()).increment(1);
                            break 'conn;
                        }
                    }
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                let read = tokio::select! {
                    () = cancel.cancelled() => break,
                    r = stream.read_buf(&mut buf) => r,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}
