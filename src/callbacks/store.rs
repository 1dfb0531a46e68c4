//! The `callbacks` table: ring updates written off the call path through a bounded queue
//! (retried while PostgreSQL is away, beyond the queue dropped and counted), actions as
//! conditional updates, open entries loaded at start.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CALLBACKS_TOTAL, Callback, State};
use crate::db::DbError;

/// Ring updates waiting for the database, at most.
pub const QUEUE: usize = 10_000;

enum Write {
    /// An entry opened or rang again: its data (never its state, which actions own).
    Rang { key: String, cb: Box<Callback> },
    /// Closed by a later answered call.
    Reached { id: String, call_id: String },
}

/// The database side of the callbacks.
pub struct Database {
    pool: Pool,
    tx: mpsc::Sender<Write>,
    rx: tokio::sync::Mutex<Option<mpsc::Receiver<Write>>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

const UPSERT: &str = "INSERT INTO callbacks (id, caller_key, data, last_ring)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data,
         last_ring = greatest(callbacks.last_ring, EXCLUDED.last_ring), updated_at = now()";

const REACHED: &str = "UPDATE callbacks SET state = 'reached', closed_call_id = $2,
         closed_at = now(), updated_at = now()
     WHERE id = $1 AND state IN ('open', 'claimed')";

impl Database {
    /// The table at `url` (connections made on first use); the error names what is wrong.
    pub fn new(url: &str) -> Result<Database, String> {
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("callbacks database_url: {e}"))?;
        pg.connect_timeout(Duration::from_secs(2))
            .keepalives(true)
            .application_name("screenpop-callbacks");
        let pool = crate::db::pool(pg, 4, Some(Duration::from_secs(2)))
            .map_err(|e| format!("callbacks {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok(Database {
            pool,
            tx,
            rx: tokio::sync::Mutex::new(Some(rx)),
        })
    }

    fn queue(&self, write: Write) {
        if self.tx.try_send(write).is_err() {
            metrics::counter!(CALLBACKS_TOTAL, "event" => "unsaved").increment(1);
        }
    }

    pub(super) fn queue_rang(&self, key: &str, cb: &Callback) {
        self.queue(Write::Rang {
            key: key.to_owned(),
            cb: Box::new(cb.clone()),
        });
    }

    pub(super) fn queue_reached(&self, cb: &Callback) {
        self.queue(Write::Reached {
            id: cb.id.clone(),
            call_id: cb.reached_call_id.clone().unwrap_or_default(),
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool.get().await.map_err(|e| e.to_string())
    }

    async fn apply(&self, write: &Write) -> Result<(), String> {
        let client = self.client().await?;
        match write {
            Write::Rang { key, cb } => {
                let data = serde_json::to_value(cb).map_err(|e| e.to_string())?;
                client
                    .execute(UPSERT, &[&cb.id, key, &data, &cb.last_ring])
                    .await
            }
            Write::Reached { id, call_id } => client.execute(REACHED, &[id, call_id]).await,
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Writes queued updates in order until cancelled; a failed write is retried (the queue
    /// fills meanwhile, bounded).
    pub(super) async fn write(&self, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().await.take() else {
            return;
        };
        let mut warned = false;
        loop {
            let write = tokio::select! {
                () = stop.cancelled() => break,
                w = rx.recv() => match w { Some(w) => w, None => break },
            };
            loop {
                match self.apply(&write).await {
                    Ok(()) => {
                        warned = false;
                        break;
                    }
                    Err(error) => {
                        if !warned {
                            tracing::warn!(%error, "Callbacks: cannot write to PostgreSQL; retrying.");
                            warned = true;
                        }
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(super::WRITE_RETRY) => {}
                        }
                    }
                }
            }
        }
    }

    /// Stores an action: the entry is inserted if the writer has not yet, then changed only if
    /// it still stands as `current` says. `false`: another node changed it first.
    pub(super) async fn act(
        &self,
        key: &str,
        current: &Callback,
        next: &Callback,
        agent: &str,
    ) -> Result<bool, String> {
        let client = self.client().await?;
        let data = serde_json::to_value(current).map_err(|e| e.to_string())?;
        client
            .execute(
                "INSERT INTO callbacks (id, caller_key, data, last_ring) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[&current.id, &key, &data, &current.last_ring],
            )
            .await
            .map_err(|e| e.to_string())?;
        let changed = match next.state {
            State::Claimed => {
                client
                    .execute(
                        "UPDATE callbacks SET state = 'claimed', claimed_by = $2,
                             claimed_at = now(), updated_at = now()
                         WHERE id = $1 AND (state = 'open' OR (state = 'claimed' AND claimed_by = $2))",
                        &[&current.id, &agent],
                    )
                    .await
            }
            State::Open => {
                client
                    .execute(
                        "UPDATE callbacks SET state = 'open', claimed_by = NULL, claimed_at = NULL,
                             updated_at = now()
                         WHERE id = $1 AND state = 'claimed' AND claimed_by = $2",
                        &[&current.id, &agent],
                    )
                    .await
            }
            State::Done => {
                client
                    .execute(
                        "UPDATE callbacks SET state = 'done', closed_by = $2, closed_at = now(),
                             note = $3, disposition = $4, updated_at = now()
                         WHERE id = $1 AND (state = 'open' OR (state = 'claimed' AND claimed_by = $2))",
                        &[&current.id, &agent, &next.note, &next.disposition],
                    )
                    .await
            }
            State::Reached => return Ok(false),
        }
        .map_err(|e| e.to_string())?;
        Ok(changed == 1)
    }

    /// The stored state of an entry and who holds or closed it.
    pub(super) async fn state_of(
        &self,
        id: &str,
    ) -> Result<Option<(State, Option<String>)>, String> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT state, coalesce(claimed_by, closed_by) FROM callbacks WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.and_then(|r| {
            let state: String = r.get(0);
            let state = [State::Open, State::Claimed, State::Done, State::Reached]
                .into_iter()
                .find(|s| s.as_str() == state)?;
            Some((state, r.get(1)))
        }))
    }

    /// The open and claimed entries, with their caller keys.
    pub(super) async fn load_open(&self) -> Result<Vec<(String, Callback)>, DbError> {
        let client = self.pool.get().await.map_err(|e| {
            DbError::Runtime(std::io::Error::other(format!("callbacks database: {e}")))
        })?;
        let rows = client
            .query(
                "SELECT caller_key, data, state, claimed_by FROM callbacks
                 WHERE state IN ('open', 'claimed') ORDER BY last_ring",
                &[],
            )
            .await
            .map_err(DbError::query("loading open callbacks"))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let key: String = r.get(0);
                let mut cb: Callback = serde_json::from_value(r.get(1)).ok()?;
                let state: String = r.get(2);
                cb.state = if state == "claimed" {
                    State::Claimed
                } else {
                    State::Open
                };
                cb.claimed_by = r.get(3);
                Some((key, cb))
            })
            .collect())
    }
}
