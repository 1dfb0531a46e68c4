//! The `agents` table mirrored into [`Agents`]: loaded once at start, reloaded whole on every
//! `screenpop_agents` notification (the table is small), and after every reconnect.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{Agent, Agents};
use crate::agents::TokenHash;
use crate::backoff::Backoff;
use crate::db::DbError;
use crate::db::listen::Listening;

/// The NOTIFY channel of the agents table.
pub const CHANNEL: &str = "screenpop_agents";
/// First pause before reconnecting to PostgreSQL; doubled on each further failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting to PostgreSQL.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Reads every agent row; rows with a malformed hash are skipped and counted.
pub async fn load(client: &Client) -> Result<Vec<(TokenHash, Agent)>, DbError> {
    let rows = client
        .query(
            "SELECT id, display_name, token_sha256, extensions, roles FROM agents",
            &[],
        )
        .await
        .map_err(DbError::query("loading agents"))?;
    let mut agents = Vec::with_capacity(rows.len());
    for row in rows {
        let hex: String = row.get(2);
        let Some(hash) = TokenHash::from_hex(&hex) else {
            metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "agent_bad_token_hash")
                .increment(1);
            continue;
        };
        agents.push((
            hash,
            Agent {
                id: row.get(0),
                name: row.get(1),
                extensions: row.get(3),
                roles: row.get(4),
            },
        ));
    }
    Ok(agents)
}

/// Loads the table into `agents` and returns the LISTEN connection to hand to [`run`].
pub async fn start(url: &str, agents: &Agents) -> Result<Listening, DbError> {
    let listening = Listening::open(url, &[CHANNEL]).await?;
    agents.replace_loaded(load(&listening.client).await?);
    tracing::info!(agents = agents.len(), "Agents loaded.");
    Ok(listening)
}

/// Keeps `agents` in sync until cancelled.
pub async fn run(url: String, agents: Arc<Agents>, first: Listening, cancel: CancellationToken) {
    let mut listening = Some(first);
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let current = match listening.take() {
            Some(l) => Ok(l),
            None => match Listening::open(&url, &[CHANNEL]).await {
                Ok(l) => load(&l.client).await.map(|loaded| {
                    agents.replace_loaded(loaded);
                    l
                }),
                Err(e) => Err(e),
            },
        };
        let error = match current {
            Ok(Listening {
                client,
                mut rx,
                driver,
                ..
            }) => {
                backoff.reset();
                let outcome = loop {
                    tokio::select! {
                        () = cancel.cancelled() => break None,
                        got = rx.recv() => match got {
                            None => break Some(DbError::Lost),
                            Some(_) => {
                                while rx.try_recv().is_ok() {}
                                match load(&client).await {
                                    Ok(loaded) => agents.replace_loaded(loaded),
                                    Err(e) => break Some(e),
                                }
                            }
                        },
                    }
                };
                driver.abort();
                match outcome {
                    None => return,
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::warn!(%error, retry_in = ?delay, "Agents sync lost its PostgreSQL connection.");
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
