//! A dedicated LISTEN connection: never pooled (pool recycling runs `UNLISTEN *`), TCP
//! keepalives on, its notifications polled off the connection (awaiting the connection itself
//! would discard them [tokio-postgres 0.7]) into a bounded queue. A full queue sets `overflow`:
//! the consumer then reloads everything instead of trusting the queue.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::DbError;

/// Notifications buffered per connection.
pub const NOTIFY_QUEUE: usize = 8192;

/// A connection with LISTEN active on some channels.
pub struct Listening {
    /// The connection's client, for the consumer's own queries.
    pub client: Client,
    /// Payloads, in arrival order (the channel is not kept: one consumer per channel set).
    pub rx: mpsc::Receiver<String>,
    /// Set when a notification did not fit in the queue.
    pub overflow: Arc<AtomicBool>,
    /// The task polling the connection; ends when the connection does.
    pub driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").finish_non_exhaustive()
    }
}

/// Parses a URL and turns on keepalives, so a silently dead server is noticed in about a
/// minute rather than hours.
pub fn config(url: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(DbError::Connect)?;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10));
    Ok(config)
}

impl Listening {
    /// Connects and LISTENs on `channels`.
    pub async fn open(url: &str, channels: &[&str]) -> Result<Listening, DbError> {
        let (client, mut connection) = config(url)?
            .connect(NoTls)
            .await
            .map_err(DbError::Connect)?;
        let (tx, rx) = mpsc::channel::<String>(NOTIFY_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn({
            let overflow = overflow.clone();
            async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(n)) => {
                            if tx.try_send(n.payload().to_owned()).is_err() {
                                overflow.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(%error, "LISTEN connection error.");
                            break;
                        }
                    }
                }
            }
        });
        for channel in channels {
            client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .map_err(DbError::query("LISTEN"))?;
        }
        Ok(Listening {
            client,
            rx,
            overflow,
            driver,
        })
    }
}
