//! The SIP UDP listener: one socket per address, for receiving and for replying.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, ReplyPath};
use super::scan::{MAX_MESSAGE_BYTES, Transport};
use crate::telephony::allow::Allow;

/// Receives datagrams on an already-bound socket until cancelled.
pub async fn serve(
    socket: Arc<UdpSocket>,
    endpoint: Arc<Endpoint>,
    allow: Allow,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    loop {
        let (len, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    // ICMP port-unreachable from an earlier reply surfaces here on some
                    // platforms; it says nothing about this socket.
                    tracing::debug!(%error, "SIP UDP receive error.");
                    continue;
                }
            },
        };
        if !allow.permits(peer.ip()) {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "source_not_allowed")
                .increment(1);
            continue;
        }
        if len > MAX_MESSAGE_BYTES {
            metrics::counter!(crate::telephony::SIP_PARSE_ERRORS_TOTAL, "kind" => "too_large")
                .increment(1);
            continue;
        }
        let path = ReplyPath::Udp {
            socket: socket.clone(),
            peer,
        };
        let _ = endpoint.handle(&buf[..len], Transport::Datagram, peer, &path);
    }
}
