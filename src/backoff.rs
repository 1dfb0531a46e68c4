//! The one retry delay of the daemon: exponential backoff with equal jitter, for every loop
//! that reconnects or retries (AMI, ESL, dialog subscriptions, the PostgreSQL listeners, the
//! call-log writer, the TCP accept loop). Owns no sleeping and no cancellation: the caller
//! sleeps for what [`Backoff::next_delay`] returns.
//!
//! ```text
//!   ceiling: min, 2·min, 4·min, … capped at max        (reset(): back to min)
//!   delay:   uniform in [ceiling / 2, ceiling]          ("equal jitter")
//! ```
//!
//! Equal jitter keeps half of the exponential growth, so a dead peer is not hammered, and
//! spreads the other half, so that many clients cut off at the same moment (a PBX restart, a
//! database failover) do not come back in step. A delay never exceeds `max`.

use std::time::Duration;

/// Exponential backoff with equal jitter between `min` and `max` (see the module docs).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max` (a `max` below `min` counts as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            ceiling: min,
        }
    }

    /// The delay before the next attempt: between half and all of the current ceiling, which
    /// then doubles (up to `max`).
    ///
    /// Not `next`: clippy wants a method of that name to be `Iterator::next`, and an endless
    /// iterator would make every caller unwrap an `Option` that is never `None`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        // Integer halves and saturation: a `max` from the config file cannot make this panic.
        let low = ceiling / 2;
        let jitter = (ceiling - low).mul_f64(rand::random::<f64>());
        low.saturating_add(jitter).min(ceiling)
    }

    /// An attempt succeeded: the next delay starts from `min` again.
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(ms(100), ms(350));
        let d: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!((ms(50)..=ms(100)).contains(&d[0]), "{d:?}");
        assert!((ms(100)..=ms(200)).contains(&d[1]), "{d:?}");
        assert!((ms(175)..=ms(350)).contains(&d[2]), "{d:?}");
        assert!((ms(175)..=ms(350)).contains(&d[4]), "{d:?}");
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }

    #[test]
    fn never_exceeds_max_and_survives_huge_values() {
        let mut b = Backoff::new(ms(1), Duration::MAX);
        for _ in 0..200 {
            b.next_delay();
        }
        let mut b = Backoff::new(ms(10), ms(1));
        assert!(
            (0..50).all(|_| b.next_delay() <= ms(10)),
            "max below min is min"
        );
    }

    #[test]
    fn the_jitter_spreads_the_delays() {
        let mut delays: Vec<_> = (0..64)
            .map(|_| Backoff::new(ms(1000), ms(1000)).next_delay())
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 32, "{delays:?}");
    }
}
