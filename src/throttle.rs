//! Throttling of failed authentication per source address, shared by every channel that
//! checks a credential: the WebSocket sign-in, the agents' HTTP API and the PBX webhook.
//!
//! Each address gets a fixed window (starting at its first failure) in which at most `limit`
//! failures are tolerated. Past it, *every* attempt from that address is refused until the
//! window ends, right or wrong: refusing only wrong guesses would still tell a guesser when it
//! hit. The table is a bounded `moka` cache (the oldest addresses are forgotten first), so a
//! flood of addresses cannot grow it.
//!
//! [`LogSampler`] keeps the log of such refusals (anyone can cause them) to one line per
//! interval, with the count of the lines it held back.
//!
//! Metrics: `screenpop_auth_failures_total{channel}` (every failed attempt) and
//! `screenpop_auth_throttled_total{channel}` (attempts refused without a check).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Failed attempts counted, by channel.
pub const AUTH_FAILURES: &str = "screenpop_auth_failures_total";
/// Attempts refused because their address failed too often, by channel.
pub const AUTH_THROTTLED: &str = "screenpop_auth_throttled_total";

/// Most addresses remembered at once.
const MAX_ADDRESSES: u64 = 100_000;

/// Failed-authentication counts per address.
#[derive(Clone)]
pub struct AuthThrottle {
    failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
    limit: u32,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl AuthThrottle {
    /// At most `limit` failures per address within `window` of its first one.
    pub fn new(limit: u32, window: Duration) -> Self {
        AuthThrottle {
            failures: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(window)
                .build(),
            limit: limit.max(1),
        }
    }

    /// Whether an attempt from `ip` may be checked at all. When it may not, the refusal is
    /// counted under `channel`. An unknown address (`None`: the listener did not say) is never
    /// throttled.
    pub fn allows(&self, ip: Option<IpAddr>, channel: &'static str) -> bool {
        let Some(ip) = ip else { return true };
        let over = self
            .failures
            .get(&ip)
            .is_some_and(|n| n.load(Ordering::Relaxed) >= self.limit);
        if over {
            metrics::counter!(AUTH_THROTTLED, "channel" => channel).increment(1);
        }
        !over
    }

    /// Counts a failed attempt from `ip` under `channel`.
    pub fn failed(&self, ip: Option<IpAddr>, channel: &'static str) {
        metrics::counter!(AUTH_FAILURES, "channel" => channel).increment(1);
        if let Some(ip) = ip {
            self.failures
                .get_with(ip, || Arc::new(AtomicU32::new(0)))
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Default for AuthThrottle {
    /// 30 failures a minute per address: room for an office of agents behind one NAT
    /// mistyping tokens, none for a guesser.
    fn default() -> Self {
        AuthThrottle::new(30, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_limit_and_others_are_not() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(60));
        let guesser = Some("192.0.2.1".parse().unwrap());
        let agent = Some("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(throttle.allows(guesser, "test"));
            throttle.failed(guesser, "test");
        }
        assert!(!throttle.allows(guesser, "test"), "over the limit");
        assert!(throttle.allows(agent, "test"), "another address");
        assert!(throttle.allows(None, "test"), "unknown address");
    }

    #[test]
    fn a_flood_logs_one_line_per_interval() {
        let sampler = LogSampler::new(Duration::from_secs(3600));
        assert_eq!(sampler.sample(), Some(0), "the first is logged");
        for _ in 0..1000 {
            assert_eq!(sampler.sample(), None);
        }
        // The next interval's line would carry the 1,000 held back.
        sampler.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(sampler.sample(), Some(1000));
    }

    #[test]
    fn the_window_ends() {
        let throttle = AuthThrottle::new(1, Duration::from_millis(50));
        let ip = Some("192.0.2.1".parse().unwrap());
        throttle.failed(ip, "test");
        assert!(!throttle.allows(ip, "test"));
        std::thread::sleep(Duration::from_millis(120));
        throttle.failures.run_pending_tasks();
        assert!(throttle.allows(ip, "test"));
    }
}

/// At most one log line per interval for an event anyone can cause (a refused request, a
/// failing accept): the first of each interval is logged with how many were held back since.
#[derive(Debug)]
pub struct LogSampler {
    start: std::time::Instant,
    interval_ms: u64,
    /// Milliseconds since `start` from which the next line may be logged.
    next_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl LogSampler {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogSampler {
            start: std::time::Instant::now(),
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            next_ms: std::sync::atomic::AtomicU64::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when this occurrence may be logged, else `None`
    /// (and it is counted as held back).
    pub fn sample(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The client's address, as the HTTP listener recorded it (`ConnectInfo<SocketAddr>` in the
/// request's extensions); `None` when it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}
