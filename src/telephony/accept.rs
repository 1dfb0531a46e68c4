//! The TCP accept loop of the SIP and HEP listeners: [`crate::listener`]'s (budgets, eviction,
//! idle timeout, accept backoff) behind the source allow-list. A source outside the list is
//! closed at once and counted in `screenpop_drops_total{reason="source_not_allowed"}`, as over
//! UDP.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::allow::Allow;
use crate::listener::{Budget, Conn, Tracked};

/// Accepts on an already-bound listener until cancelled, running `serve` for each allowed
/// connection that `budget` has room for. `name` labels the listener's metrics.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    allow: Allow,
    budget: Budget,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(Tracked<TcpStream>, SocketAddr, Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admit = move |ip| {
        let permitted = allow.permits(ip);
        if !permitted {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "source_not_allowed")
                .increment(1);
        }
        permitted
    };
    crate::listener::serve(listener, name, budget, admit, cancel, serve).await;
}
