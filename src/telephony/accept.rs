//! The accept loop shared by the TCP listeners (SIP and HEP): source allow-list, a cap on
//! concurrent connections, one cancellable task per connection, and a wait for them all on
//! shutdown. Refused connections are closed at once and counted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::allow::Allow;

/// Accepts on an already-bound listener until cancelled, running `serve` for each allowed
/// connection while fewer than `max_connections` are open.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    allow: Allow,
    max_connections: usize,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "TCP accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
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
        let _ = stream.set_nodelay(true);
        let connection = serve(stream, peer, cancel.child_token());
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}
