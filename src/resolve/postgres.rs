//! The customer index kept in PostgreSQL and mirrored in memory.
//!
//! Start-up streams every customer, then every number, in one consistent snapshot
//! (`REPEATABLE READ`), into a [`Directory`] (progress in the log); two plain scans are ~3×
//! faster than one sorted join. A dedicated connection (never pooled: pool recycling runs
//! `UNLISTEN *`) listens on `screenpop_customers`: a customer id re-reads that customer; `*`
//! (bulk loads, TRUNCATE) reloads everything. Notifications are at-most-once, so after every
//! reconnect the whole index is reloaded [PROTOCOLS.md §6]. Lookups go to the in-memory
//! [`Index`]: they never wait on the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::directory::{Customer, CustomerFields, Directory, NumberKind};
use super::index::Index;
use super::normalise::{Key, Normaliser};
use super::{Resolution, Resolver};
use crate::backoff::Backoff;
use crate::db::DbError;
use crate::db::listen::Listening;

/// The NOTIFY channel the schema's triggers use.
pub const CHANNEL: &str = "screenpop_customers";

/// `e164` values written back per statement after a load.
const FILL_BATCH: usize = 10_000;
/// Most `e164` fills remembered during one load (the rest are done by the next).
const MAX_FILLS: usize = 200_000;
/// First pause before reconnecting to PostgreSQL; doubled on each further failure.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting to PostgreSQL.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The index, fed from PostgreSQL.
pub struct PgDirectory {
    url: String,
    switchboard_digits: u8,
    index: Arc<Index>,
    /// The connection that listened while the first load ran, handed to [`PgDirectory::run`] so
    /// that no change between the load and the sync is missed.
    first: std::sync::Mutex<Option<Listening>>,
}

impl Resolver for PgDirectory {
    fn resolve(&self, raw: &str) -> Resolution {
        self.index.resolve(raw)
    }

    fn key(&self, raw: &str) -> Option<Key> {
        Some(self.index.key(raw))
    }

    fn numbers(&self, customer_id: &str) -> Vec<String> {
        self.index.numbers(customer_id)
    }

    fn customer(&self, customer_id: &str) -> Option<crate::resolve::Customer> {
        self.index.customer(customer_id)
    }

    fn search(&self, query: &str, limit: usize) -> Vec<super::SearchHit> {
        self.index.search(query, limit)
    }
}

impl PgDirectory {
    /// Loads the whole index (before any call is taken). LISTEN starts first, on the same
    /// connection, so changes made during or after the load are queued for [`PgDirectory::run`].
    pub async fn load(
        url: &str,
        normaliser: Normaliser,
        switchboard_digits: u8,
    ) -> Result<Arc<PgDirectory>, DbError> {
        let listening = Listening::open(url, &[CHANNEL]).await?;
        let directory = full_load(url, &listening.client, normaliser, switchboard_digits).await?;
        Ok(Arc::new(PgDirectory {
            url: url.into(),
            switchboard_digits,
            index: Arc::new(Index::new(directory)),
            first: std::sync::Mutex::new(Some(listening)),
        }))
    }

    /// The in-memory index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Customers in the index now.
    pub fn customers(&self) -> usize {
        self.index.read().customers()
    }

    /// Keeps the index in sync until cancelled: LISTEN on a dedicated connection, reconnect
    /// with backoff, reload everything after each (re)connect.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut first = true;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let Err(error) = self.listen_once(&cancel, first).await else {
                return;
            };
            metrics::counter!(crate::resolve::DIRECTORY_RECONNECTS_TOTAL).increment(1);
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in = ?delay, "Customer index lost its PostgreSQL connection.");
            first = false;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
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
                metrics::counter!(crate::resolve::DIRECTORY_RELOADS_TOTAL, "why" => "reconnect")
                    .increment(1);
                tracing::info!("Customer index reconnected and reloaded.");
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
                if let Err(error) = self.reload(&client).await {
                    break Err(error);
                }
                metrics::counter!(crate::resolve::DIRECTORY_RELOADS_TOTAL, "why" => "notify")
                    .increment(1);
                continue;
            }
            let mut failed = None;
            for id in ids {
                if let Err(error) = self.refresh(&client, &id).await {
                    failed = Some(error);
                    break;
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
        };
        driver.abort();
        result
    }

    async fn reload(&self, client: &Client) -> Result<(), DbError> {
        let fresh = full_load(
            &self.url,
            client,
            self.index.normaliser(),
            self.switchboard_digits,
        )
        .await?;
        self.index.replace(fresh);
        Ok(())
    }

    /// Re-reads one customer; a deleted customer leaves the index.
    async fn refresh(&self, client: &Client, id: &str) -> Result<(), DbError> {
        let row = client
            .query_opt(
                "SELECT id, name, company, account_number, crm_url, tags FROM customers WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(DbError::query("reading a changed customer"))?;
        let Some(row) = row else {
            self.index.edit(|d| d.remove(id));
            metrics::counter!(crate::resolve::DIRECTORY_UPDATES_TOTAL, "op" => "delete")
                .increment(1);
            return self.compact_search(client).await;
        };
        let numbers = client
            .query(
                "SELECT id, raw, e164, digits, kind FROM customer_numbers WHERE customer_id = $1",
                &[&id],
            )
            .await
            .map_err(DbError::query("reading a changed customer's numbers"))?;
        let customer = customer_of(&row);
        let normaliser = self.index.normaliser();
        let mut keys = Vec::with_capacity(numbers.len());
        let mut fills: Vec<(i64, Key)> = Vec::new();
        for row in &numbers {
            // Normalised again whatever is stored: this is the path every edit takes.
            let key = normaliser.key(row.get(1));
            let stored = match (row.get::<_, Option<&str>>(2), row.get::<_, Option<&str>>(3)) {
                (Some(e164), _) => Some(Key::E164(e164.to_owned())),
                (None, Some(digits)) => Some(Key::Digits(digits.to_owned())),
                (None, None) => None,
            };
            if stored.as_ref() != Some(&key) {
                fills.push((row.get(0), key.clone()));
            }
            keys.push((key, kind_of(row.get(4))));
        }
        self.index.edit(|d| d.upsert(customer, keys));
        metrics::counter!(crate::resolve::DIRECTORY_UPDATES_TOTAL, "op" => "upsert").increment(1);
        write_fills(client, fills).await?;
        self.compact_search(client).await
    }

    /// Edited customers sit outside the search index's sorted base, and every search scans
    /// them; past [`super::search::OVERLAY_MAX`] the whole index is reloaded (built off the
    /// lock, swapped in at once, as any reload).
    async fn compact_search(&self, client: &Client) -> Result<(), DbError> {
        let overlay = self.index.read().search_overlay();
        if overlay <= super::search::OVERLAY_MAX {
            return Ok(());
        }
        self.reload(client).await?;
        metrics::counter!(crate::resolve::DIRECTORY_RELOADS_TOTAL, "why" => "search").increment(1);
        tracing::info!(
            edited = overlay,
            "Customer index reloaded to fold edits into the search index."
        );
        Ok(())
    }
}

/// Fills in `e164` (valid numbers) or `digits` (the rest) for other readers of the table and
/// for faster loads (silent: the triggers ignore these columns).
async fn write_fills(client: &Client, fills: Vec<(i64, Key)>) -> Result<(), DbError> {
    for chunk in fills.chunks(FILL_BATCH) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let e164: Vec<Option<&str>> = chunk
            .iter()
            .map(|(_, k)| match k {
                Key::E164(v) => Some(v.as_str()),
                Key::Digits(_) => None,
            })
            .collect();
        let digits: Vec<Option<&str>> = chunk
            .iter()
            .map(|(_, k)| match k {
                Key::Digits(v) => Some(v.as_str()),
                Key::E164(_) => None,
            })
            .collect();
        client
            .execute(
                "UPDATE customer_numbers n SET e164 = f.e164, digits = f.digits
                 FROM unnest($1::bigint[], $2::text[], $3::text[]) AS f(id, e164, digits)
                 WHERE n.id = f.id",
                &[&ids, &e164, &digits],
            )
            .await
            .map_err(DbError::query("filling e164"))?;
    }
    Ok(())
}

fn kind_of(kind: &str) -> NumberKind {
    NumberKind::parse(kind).unwrap_or(NumberKind::Main)
}

fn customer_of(row: &tokio_postgres::Row) -> Customer {
    let tags: Vec<String> = row.get(5);
    Customer::new(CustomerFields {
        id: row.get(0),
        name: row.get(1),
        company: row.get::<_, Option<&str>>(2).unwrap_or_default(),
        account: row.get::<_, Option<&str>>(3).unwrap_or_default(),
        crm_url: row.get::<_, Option<&str>>(4).unwrap_or_default(),
        tags: &tags,
    })
}

/// Streams every customer, then every number, from one snapshot into a new index, then stores
/// the keys it had to compute (on `client`, the LISTEN connection).
///
/// The load runs on a connection and a single-threaded runtime of its own, on a blocking
/// thread: the rows are decoded where they are received (no wake-ups across threads, ~15 % of
/// the load's time otherwise), and the daemon's workers stay free for calls. LISTEN is already
/// active on `client`, so a change committed after the snapshot is notified, and one committed
/// before is in the snapshot.
async fn full_load(
    url: &str,
    client: &Client,
    normaliser: Normaliser,
    switchboard_digits: u8,
) -> Result<Directory, DbError> {
    let started = Instant::now();
    let url = url.to_owned();
    let loaded = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DbError::Runtime)?;
        runtime.block_on(async move {
            let (loader, connection) = crate::db::listen::config(&url)?
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(DbError::Connect)?;
            let connection = tokio::spawn(connection);
            loader
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(DbError::query("starting the index load"))?;
            let loaded = load_in_transaction(&loader, normaliser, switchboard_digits).await;
            drop(loader);
            let _ = connection.await;
            loaded
        })
    })
    .await
    .map_err(|e| DbError::Runtime(std::io::Error::other(e)))?;
    let (index, numbers, fills) = loaded?;
    tracing::info!(customers = index.customers(), numbers, elapsed = ?started.elapsed(), "Customer index loaded.");
    metrics::gauge!(crate::resolve::DIRECTORY_CUSTOMERS).set(index.customers() as f64);
    metrics::gauge!(crate::resolve::DIRECTORY_NUMBERS).set(index.keys() as f64);
    if !fills.is_empty() {
        let count = fills.len();
        write_fills(client, fills).await?;
        tracing::info!(
            numbers = count,
            "Stored the match keys of numbers stored without them."
        );
    }
    Ok(index)
}

async fn load_in_transaction(
    client: &Client,
    normaliser: Normaliser,
    switchboard_digits: u8,
) -> Result<(Directory, u64, Vec<(i64, Key)>), DbError> {
    let what = "loading customers";
    // Size the maps up front (no rehashing while loading): the planner's estimates when the
    // tables have been analysed, else exact counts.
    let estimate = client
        .query_one(
            "SELECT (SELECT reltuples FROM pg_class WHERE oid = 'customers'::regclass),
                    (SELECT reltuples FROM pg_class WHERE oid = 'customer_numbers'::regclass)",
            &[],
        )
        .await
        .map_err(DbError::query(what))?;
    let (mut customers, mut numbers) = (estimate.get::<_, f32>(0), estimate.get::<_, f32>(1));
    if customers < 0.0 || numbers < 0.0 {
        let counts = client
            .query_one(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM customer_numbers)",
                &[],
            )
            .await
            .map_err(DbError::query(what))?;
        customers = counts.get::<_, i64>(0) as f32;
        numbers = counts.get::<_, i64>(1) as f32;
    }
    let mut index = Directory::new(normaliser, switchboard_digits);
    index.reserve(customers as usize, numbers as usize);
    let rows = client
        .query_raw(
            "SELECT id, name, company, account_number, crm_url, tags FROM customers",
            std::iter::empty::<&str>(),
        )
        .await
        .map_err(DbError::query(what))?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(DbError::query(what))? {
        // Ids are the table's primary key: each one is new to this index.
        index.insert_new(customer_of(&row));
        if index.customers().is_multiple_of(250_000) {
            tracing::info!(customers = index.customers(), "Loading the customer index…");
        }
    }
    let what = "loading customer numbers";
    let rows = client
        .query_raw(
            "SELECT id, customer_id, raw, e164, digits, kind FROM customer_numbers",
            std::iter::empty::<&str>(),
        )
        .await
        .map_err(DbError::query(what))?;
    futures_util::pin_mut!(rows);
    let mut numbers = 0u64;
    let mut fills = Vec::new();
    let mut loader = index.loader();
    while let Some(row) = rows.try_next().await.map_err(DbError::query(what))? {
        numbers += 1;
        let customer: &str = row.get(1);
        let kind = kind_of(row.get(5));
        // Stored keys were computed by screenpop already; normalise only the rest.
        // (The foreign key means every number's customer was loaded from the same snapshot.)
        let _attached = match (row.get::<_, Option<&str>>(3), row.get::<_, Option<&str>>(4)) {
            (Some(e164), _) => loader.add_e164(customer, e164, kind),
            (None, Some(digits)) => loader.add(customer, &Key::Digits(digits.to_owned()), kind),
            (None, None) => {
                let key = normaliser.key(row.get(2));
                let attached = loader.add(customer, &key, kind);
                if fills.len() < MAX_FILLS {
                    fills.push((row.get::<_, i64>(0), key));
                }
                attached
            }
        };
        if numbers.is_multiple_of(500_000) {
            tracing::info!(numbers, "Loading the customer index…");
        }
    }
    drop(loader);
    // Still on the loading thread: the search index is ready before the directory is served.
    index.build_search();
    Ok((index, numbers, fills))
}
