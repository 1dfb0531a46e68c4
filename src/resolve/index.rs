//! The directory as calls see it: one [`Directory`] behind a read-write lock, with the caches
//! in front of it. Lookups take the read lock for a hash probe and never wait on I/O; whoever
//! keeps the directory fresh (the PostgreSQL sync, or nobody for a CSV) edits it through
//! [`Index::edit`] or swaps it with [`Index::replace`].
//!
//! Caches (`moka`):
//! - normalisation, per raw caller ID ([`KeyCache`]): deterministic, never stale;
//! - misses, per raw caller ID, for [`Index::MISS_TTL`]: an unknown (or only approximately
//!   known) number is answered without a probe. Every edit bumps a generation, and a cached
//!   miss from an older generation is ignored, so a number added a moment ago is found at once.
//!   Concurrent misses for one number share one computation (`get_with`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use super::directory::Directory;
use super::normalise::{Key, KeyCache, Normaliser};
use super::search::SearchHit;
use super::{Resolution, Resolver};

/// The live index.
pub struct Index {
    directory: RwLock<Directory>,
    normaliser: Normaliser,
    keys: KeyCache,
    misses: moka::sync::Cache<String, (u64, Resolution)>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("directory", &*self.read())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// How long a miss is remembered (edits invalidate it sooner).
    pub const MISS_TTL: Duration = Duration::from_secs(30);
    /// Most misses remembered.
    pub const MISS_CAPACITY: u64 = 100_000;

    /// Serves `directory` (building its search index if its loader did not).
    pub fn new(mut directory: Directory) -> Index {
        directory.ensure_search();
        let normaliser = directory.normaliser();
        Index {
            directory: RwLock::new(directory),
            normaliser,
            keys: KeyCache::new(normaliser),
            misses: moka::sync::Cache::builder()
                .max_capacity(Self::MISS_CAPACITY)
                .time_to_live(Self::MISS_TTL)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The directory, read-locked (hold it briefly: edits wait for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Edits the directory in place; cached misses are forgotten.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Directory) -> R) -> R {
        let mut directory = self.directory.write().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut directory);
        self.generation.fetch_add(1, Ordering::Release);
        out
    }

    /// Swaps in a whole new directory (a reload), its search index with it (built here,
    /// before the lock, if its loader did not); cached misses are forgotten. The old one is
    /// dropped after the lock is released.
    pub fn replace(&self, mut directory: Directory) {
        directory.ensure_search();
        let old = self.edit(|current| std::mem::replace(current, directory));
        drop(old);
    }

    /// The normaliser in use.
    pub fn normaliser(&self) -> Normaliser {
        self.normaliser
    }

    /// The key a raw number is looked up by (memoised).
    pub fn key(&self, raw: &str) -> Key {
        self.keys.key(raw)
    }

    /// Misses remembered now (approximate; for tests and metrics).
    pub fn cached_misses(&self) -> u64 {
        self.misses.run_pending_tasks();
        self.misses.entry_count()
    }
}

impl Resolver for Index {
    fn search(&self, query: &str, limit: usize) -> Vec<SearchHit> {
        self.read().search(query, limit)
    }

    fn key(&self, raw: &str) -> Option<Key> {
        Some(self.keys.key(raw))
    }

    fn customer(&self, customer_id: &str) -> Option<crate::resolve::Customer> {
        self.read().customer(customer_id).cloned()
    }

    fn numbers(&self, customer_id: &str) -> Vec<String> {
        self.read()
            .numbers_of(customer_id)
            .into_iter()
            .map(|(key, _)| key.as_str().to_owned())
            .collect()
    }

    fn resolve(&self, raw: &str) -> Resolution {
        // Keys in the index were validated when they went in, so a hit on a cheaply guessed
        // E.164 form needs no parse.
        {
            let directory = self.read();
            for candidate in self.normaliser.fast_e164(raw).into_iter().flatten() {
                if let Some(hit) = directory.resolve_e164_hit(candidate) {
                    return hit;
                }
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((cached_at, miss)) = self.misses.get(raw) {
            if cached_at == generation {
                metrics::counter!(crate::resolve::DIRECTORY_MISS_CACHE_TOTAL, "result" => "hit")
                    .increment(1);
                return miss;
            }
            self.misses.invalidate(raw);
        }
        let computed = std::cell::Cell::new(false);
        let (_, resolution) = self.misses.get_with_by_ref(raw, || {
            computed.set(true);
            let generation = self.generation.load(Ordering::Acquire);
            let key = self.keys.key(raw);
            (generation, self.read().resolve_key(&key))
        });
        if computed.get() {
            metrics::counter!(crate::resolve::DIRECTORY_MISS_CACHE_TOTAL, "result" => "miss")
                .increment(1);
        }
        if !matches!(
            resolution,
            Resolution::Unknown | Resolution::Approximate { .. }
        ) {
            // Only misses are cached; a hit found on the slow path is not kept.
            self.misses.invalidate(raw);
        }
        resolution
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::directory::{Customer, CustomerFields, NumberKind};

    #[test]
    fn a_cached_miss_does_not_hide_a_new_customer() {
        let n = Normaliser::new(phonenumber::country::Id::US);
        let index = Index::new(Directory::new(n, 0));
        assert_eq!(index.resolve("(415) 555-0100"), Resolution::Unknown);
        assert_eq!(index.resolve("(415) 555-0100"), Resolution::Unknown);
        assert_eq!(index.cached_misses(), 1);
        index.edit(|d| {
            d.upsert(
                Customer::new(CustomerFields {
                    id: "c1",
                    name: "Acme",
                    ..CustomerFields::default()
                }),
                [(n.key("+1 415 555 0100"), NumberKind::Main)],
            )
        });
        assert!(matches!(
            index.resolve("(415) 555-0100"),
            Resolution::Customer { .. }
        ));
        // A number found only on the slow path (national digits the fast path cannot guess)
        // is not cached as a miss.
        index.edit(|d| {
            d.upsert(
                Customer::new(CustomerFields {
                    id: "s",
                    name: "Short",
                    ..CustomerFields::default()
                }),
                [(n.key("611"), NumberKind::Main)],
            )
        });
        assert!(matches!(index.resolve("611"), Resolution::Customer { .. }));
        assert!(matches!(index.resolve("611"), Resolution::Customer { .. }));
    }
}
