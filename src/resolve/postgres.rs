//! The customer index kept in PostgreSQL and mirrored in memory.
//!
//! Start-up streams every customer and number into a [`Directory`] (progress in the log). A
//! dedicated connection (never pooled: pool recycling runs `UNLISTEN *`) listens on
//! `screenpop_customers`: a customer id re-reads that customer; `*` (bulk loads, TRUNCATE)
//! reloads everything. Notifications are at-most-once, so after every reconnect the whole index
//! is reloaded [PROTOCOLS.md §6]. A lookup only takes a read lock on the in-memory index: it
//! never waits on the database.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::directory::{Customer, Directory};
use super::normalise::{Key, Normaliser};
use super::{Resolution, Resolver};
use crate::db::DbError;
use crate::db::listen::Listening;

/// The NOTIFY channel the schema's triggers use.
pub const CHANNEL: &str = "screenpop_customers";

const CUSTOMER_COLUMNS: &str =
    "c.id, c.name, c.company, c.account_number, c.crm_url, c.tags, n.raw, n.e164";

/// The index, fed from PostgreSQL.
pub struct PgDirectory {
    url: String,
    normaliser: Normaliser,
    keys: super::normalise::KeyCache,
    index: RwLock<Directory>,
    /// The connection that listened while the first load ran, handed to [`PgDirectory::run`] so
    /// that no change between the load and the sync is missed.
    first: std::sync::Mutex<Option<Listening>>,
}

impl Resolver for PgDirectory {
    fn resolve(&self, raw: &str) -> Resolution {
        // Keys in the index were validated when they went in, so a hit on a cheaply guessed
        // E.164 form needs no parse. A miss (or anything unusual) is normalised, memoised.
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            for candidate in self.normaliser.fast_candidates(raw).into_iter().flatten() {
                if let Some(hit) = index.resolve_hit(&Key::E164(candidate)) {
                    return hit;
                }
            }
        }
        let key = self.keys.key(raw);
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .resolve_key(&key)
    }
}

impl PgDirectory {
    /// Loads the whole index (before any call is taken). LISTEN starts first, on the same
    /// connection, so changes made during or after the load are queued for [`PgDirectory::run`].
    pub async fn load(url: &str, normaliser: Normaliser) -> Result<Arc<PgDirectory>, DbError> {
        let listening = Listening::open(url, &[CHANNEL]).await?;
        let index = full_load(&listening.client, normaliser).await?;
        Ok(Arc::new(PgDirectory {
            url: url.into(),
            normaliser,
            keys: super::normalise::KeyCache::new(normaliser),
            index: RwLock::new(index),
            first: std::sync::Mutex::new(Some(listening)),
        }))
    }

    /// Customers in the index now.
    pub fn customers(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .customers()
    }

    /// Keeps the index in sync until cancelled: LISTEN on a dedicated connection, reconnect
    /// with backoff, reload everything after each (re)connect.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match self.listen_once(&cancel, first).await {
                Ok(()) => return,
                Err(error) => {
                    metrics::counter!("screenpop_directory_reconnects_total").increment(1);
                    tracing::warn!(%error, retry_in = ?backoff, "Customer index lost its PostgreSQL connection.");
                }
            }
            first = false;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// One connection's life: Ok when cancelled, Err when the connection is lost.
    async fn listen_once(&self, cancel: &CancellationToken, first: bool) -> Result<(), DbError> {
        let handed_over = if first {
            self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
        } else {
            None
        };
        let Listening {
            client,
            mut rx,
            overflow,
            driver,
        } = match handed_over {
            Some(listening) => listening,
            None => {
                let listening = Listening::open(&self.url, &[CHANNEL]).await?;
                // Anything may have changed while we were not listening.
                self.reload(&listening.client).await?;
                metrics::counter!("screenpop_directory_reloads_total", "why" => "reconnect")
                    .increment(1);
                listening
            }
        };
        let result = loop {
            let first_payload = tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                p = rx.recv() => p,
            };
            let Some(first_payload) = first_payload else {
                break Err(DbError::Lost);
            };
            // Take the whole burst at once; one reload covers any number of '*'.
            let mut ids = HashSet::from([first_payload]);
            while let Ok(more) = rx.try_recv() {
                ids.insert(more);
            }
            if ids.contains("*") || overflow.swap(false, Ordering::Relaxed) {
                self.reload(&client).await?;
                metrics::counter!("screenpop_directory_reloads_total", "why" => "notify")
                    .increment(1);
                continue;
            }
            for id in ids {
                self.refresh(&client, &id).await?;
            }
        };
        driver.abort();
        result
    }

    async fn reload(&self, client: &Client) -> Result<(), DbError> {
        let fresh = full_load(client, self.normaliser).await?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Re-reads one customer; a deleted customer leaves the index.
    async fn refresh(&self, client: &Client, id: &str) -> Result<(), DbError> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS}, n.id FROM customers c LEFT JOIN customer_numbers n ON n.customer_id = c.id WHERE c.id = $1"
        );
        let rows = client
            .query(&sql, &[&id])
            .await
            .map_err(DbError::query("reading a changed customer"))?;
        let Some(first) = rows.first() else {
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            metrics::counter!("screenpop_directory_updates_total", "op" => "delete").increment(1);
            return Ok(());
        };
        let customer = customer_of(first);
        let mut keys = Vec::new();
        let mut fills: Vec<(i64, String)> = Vec::new();
        for row in &rows {
            let (Some(raw), stored) = (
                row.get::<_, Option<String>>(6),
                row.get::<_, Option<String>>(7),
            ) else {
                continue;
            };
            let key = self.normaliser.key(&raw);
            if let Key::E164(e164) = &key
                && stored.as_deref() != Some(e164.as_str())
            {
                fills.push((row.get(8), e164.clone()));
            }
            keys.push(key);
        }
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .upsert(Arc::new(customer), keys);
        metrics::counter!("screenpop_directory_updates_total", "op" => "upsert").increment(1);
        // Fill in e164 for other readers of the table (silent: the trigger ignores e164).
        for (number_id, e164) in fills {
            client
                .execute(
                    "UPDATE customer_numbers SET e164 = $1 WHERE id = $2",
                    &[&e164, &number_id],
                )
                .await
                .map_err(DbError::query("filling e164"))?;
        }
        Ok(())
    }
}

fn customer_of(row: &tokio_postgres::Row) -> Customer {
    Customer {
        id: row.get(0),
        name: row.get(1),
        company: row.get(2),
        account: row.get(3),
        crm_url: row.get(4),
        tags: row.get(5),
    }
}

/// Streams every customer with its numbers into a new index.
async fn full_load(client: &Client, normaliser: Normaliser) -> Result<Directory, DbError> {
    let started = Instant::now();
    let sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers c LEFT JOIN customer_numbers n ON n.customer_id = c.id ORDER BY c.id"
    );
    let rows = client
        .query_raw(&sql, std::iter::empty::<&str>())
        .await
        .map_err(DbError::query("loading customers"))?;
    futures_util::pin_mut!(rows);
    let mut index = Directory::empty(normaliser);
    let mut current: Option<(Customer, Vec<Key>)> = None;
    let mut numbers = 0u64;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(DbError::query("loading customers"))?
    {
        let id: String = row.get(0);
        if current.as_ref().is_none_or(|(c, _)| c.id != id) {
            if let Some((customer, keys)) = current.take() {
                index.upsert(Arc::new(customer), keys);
                if index.customers().is_multiple_of(100_000) {
                    tracing::info!(
                        customers = index.customers(),
                        numbers,
                        "Loading the customer index…"
                    );
                }
            }
            current = Some((customer_of(&row), Vec::new()));
        }
        if let (Some((_, keys)), Some(raw)) = (current.as_mut(), row.get::<_, Option<String>>(6)) {
            numbers += 1;
            // A stored e164 was computed by screenpop already; normalise only the rest.
            let key = match row.get::<_, Option<String>>(7) {
                Some(e164) => Key::E164(e164),
                None => normaliser.key(&raw),
            };
            keys.push(key);
        }
    }
    if let Some((customer, keys)) = current.take() {
        index.upsert(Arc::new(customer), keys);
    }
    tracing::info!(customers = index.customers(), numbers, elapsed = ?started.elapsed(), "Customer index loaded.");
    metrics::gauge!("screenpop_directory_customers").set(index.customers() as f64);
    Ok(index)
}
