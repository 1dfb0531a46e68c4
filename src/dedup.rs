//! Time-window de-duplication: "has this key been seen in the last `ttl`?", bounded in memory.
//! Used by the HEP observer (a mirroring proxy reports each message twice) and the webhook
//! (a PBX may retry a delivery). Owns no metrics: the caller counts what it drops.
//!
//! A `moka` cache with a time-to-live and least-recently-used eviction: a key is forgotten
//! `ttl` after it was first seen, or earlier when `capacity` newer keys push it out. Eviction
//! is by LRU rather than moka's default TinyLFU admission so that a new key is always
//! remembered (TinyLFU may refuse to admit it when the cache is full, and its replay would
//! then look new). moka keeps its own clock, so paused tokio time does not age the keys.

use std::hash::Hash;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// Longest window kept: moka refuses a time-to-live over 1,000 years, and a window this long
/// is already "until pushed out by capacity".
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Keys seen within the last `ttl`, at most `capacity` of them.
pub struct Dedup<K> {
    seen: Cache<K, ()>,
}

impl<K> std::fmt::Debug for Dedup<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Send + Sync + 'static> Dedup<K> {
    /// Remembers each key for `ttl` (at most a year), and at most `capacity` keys (at least
    /// one), the least recently seen forgotten first.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Dedup {
            seen: Cache::builder()
                .max_capacity(u64::try_from(capacity.max(1)).unwrap_or(u64::MAX))
                .initial_capacity(capacity.max(1))
                .time_to_live(ttl.min(MAX_TTL))
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        }
    }

    /// Records `key`; `true` if it was not seen within the window. Atomic: of two callers
    /// racing with the same key, exactly one sees `true`.
    pub fn first_seen(&self, key: K) -> bool {
        self.seen.entry(key).or_insert_with(|| ()).is_fresh()
    }

    /// Keys remembered now, once moka's pending maintenance has run.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> u64 {
        self.seen.run_pending_tasks();
        self.seen.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_new_once_per_window() {
        let d = Dedup::new(10, Duration::from_millis(50));
        assert!(d.first_seen("a"));
        assert!(!d.first_seen("a"));
        assert!(d.first_seen("b"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(d.first_seen("a"), "forgotten after the window");
        assert!(!d.first_seen("a"));
    }

    #[test]
    fn memory_is_bounded_and_new_keys_are_always_kept() {
        let d = Dedup::new(2, Duration::from_secs(60));
        for key in 0..100 {
            assert!(d.first_seen(key));
        }
        assert!(d.remembered() <= 2);
        assert!(!d.first_seen(99), "the newest key is remembered");
    }

    #[test]
    fn racing_callers_see_first_once() {
        let d = Dedup::new(100, Duration::from_secs(60));
        let firsts: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| d.first_seen(7u64))).collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap_or(false)))
                .sum()
        });
        assert_eq!(firsts, 1);
    }

    #[test]
    fn huge_windows_and_zero_capacity_do_not_panic() {
        let d = Dedup::new(0, Duration::MAX);
        assert!(d.first_seen(1));
        assert!(!d.first_seen(1));
    }
}
