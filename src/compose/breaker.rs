//! A circuit breaker per source: after `threshold` consecutive failures the source is skipped
//! for `cooldown`; then one trial call is let through (half-open): success closes the breaker,
//! failure opens it for another cool-down. Timeouts count as failures.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

/// Whether a call may go to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Skip it; the breaker may let a trial through after this long.
    No {
        /// Time left in the cool-down.
        retry_in: Duration,
    },
}

/// One source's breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (0: never), for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to call the source.
    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now < until => Admit::No {
                retry_in: until - now,
            },
            // A trial that never reported (dropped) does not block the source for ever.
            State::HalfOpen { since } if now < since + self.cooldown => Admit::No {
                retry_in: since + self.cooldown - now,
            },
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                Admit::Yes
            }
        }
    }

    /// The call succeeded.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// The call failed or timed out; true if this opened the breaker.
    pub fn failure(&self) -> bool {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } | State::Open { .. } => self.threshold.max(1),
        };
        if self.threshold > 0 && failures >= self.threshold {
            let was_open = matches!(*state, State::Open { .. });
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
            !was_open
        } else {
            *state = State::Closed { failures };
            false
        }
    }

    /// Whether calls are being skipped now.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_half_opens_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        assert!(!b.failure() && !b.failure());
        assert_eq!(b.admit(), Admit::Yes);
        assert!(b.failure(), "the third failure opens it");
        assert!(matches!(b.admit(), Admit::No { retry_in } if retry_in == Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Admit::Yes, "one trial");
        assert!(matches!(b.admit(), Admit::No { .. }), "only one");
        assert!(b.failure(), "a failed trial opens it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Admit::Yes);
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Yes);
        // A success resets the count.
        assert!(!b.failure() && !b.failure());
        b.success();
        assert!(!b.failure() && !b.failure());
        assert!(!b.is_open());
    }
}
