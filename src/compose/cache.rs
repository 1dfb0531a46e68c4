//! A per-source cache of sections, by customer (`moka`): fresh for `ttl`, then, if the source
//! allows it, served stale for up to `serve_stale` more while one background fetch refreshes
//! it. Concurrent misses for one customer share one fetch (`try_get_with`); errors are never
//! cached.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// A cached section.
#[derive(Debug)]
pub struct Entry {
    /// The section.
    pub data: Arc<Value>,
    /// When it was fetched.
    pub fetched: Instant,
}

/// What the cache holds for a customer.
#[derive(Debug)]
pub enum Lookup {
    /// Younger than the TTL.
    Fresh(Arc<Entry>),
    /// Older than the TTL, within the stale window: serve it, and refresh.
    Stale(Arc<Entry>),
    /// Nothing usable.
    Miss,
}

/// One source's cache.
pub struct SectionCache {
    entries: moka::future::Cache<String, Arc<Entry>>,
    ttl: Duration,
    refreshing: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectionCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SectionCache {
    /// Entries live `ttl + serve_stale`, at most `capacity` of them.
    pub fn new(ttl: Duration, serve_stale: Duration, capacity: u64) -> SectionCache {
        SectionCache {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl + serve_stale)
                .build(),
            ttl,
            refreshing: Mutex::default(),
        }
    }

    /// What is cached for `key`.
    pub async fn lookup(&self, key: &str) -> Lookup {
        match self.entries.get(key).await {
            Some(e) if e.fetched.elapsed() <= self.ttl => Lookup::Fresh(e),
            Some(e) => Lookup::Stale(e),
            None => Lookup::Miss,
        }
    }

    /// The section for `key`: cached if present, else fetched by `fetch`, shared with every
    /// concurrent caller for the same key.
    pub async fn get_or_fetch<E: Send + Sync + 'static>(
        &self,
        key: &str,
        fetch: impl std::future::Future<Output = Result<Value, E>>,
    ) -> Result<Arc<Entry>, Arc<E>> {
        self.entries
            .try_get_with_by_ref(key, async {
                fetch.await.map(|data| {
                    Arc::new(Entry {
                        data: Arc::new(data),
                        fetched: Instant::now(),
                    })
                })
            })
            .await
    }

    /// Claims the refresh of `key`: false if one is already running.
    pub fn begin_refresh(&self, key: &str) -> bool {
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned())
    }

    /// Ends a refresh, storing its result if it succeeded.
    pub async fn end_refresh(&self, key: &str, data: Option<Value>) {
        if let Some(data) = data {
            self.entries
                .insert(
                    key.to_owned(),
                    Arc::new(Entry {
                        data: Arc::new(data),
                        fetched: Instant::now(),
                    }),
                )
                .await;
        }
        self.refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
