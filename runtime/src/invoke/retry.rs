//! The retry budget of one invocation: exponential backoff with full jitter,
//! longer after throttling, bounded in attempts.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 6, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5) }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `failed + 1`, or `None` when the budget is spent.
    pub fn backoff(&self, failed: u32, throttled: bool) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        let ceiling = self.ceiling(failed, throttled);
        let jittered = rand::rng().random_range(ceiling / 2..=ceiling.max(Duration::from_millis(1)));
        Some(jittered)
    }

    /// The largest wait after `failed` failures: doubling from the initial
    /// backoff, four times longer when the function was throttled.
    pub fn ceiling(&self, failed: u32, throttled: bool) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1).min(20));
        let base = self.initial_backoff.saturating_mul(factor);
        let base = if throttled { base.saturating_mul(4) } else { base };
        base.min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_the_budget() {
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(policy.ceiling(1, false), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2, false), Duration::from_millis(200));
        assert_eq!(policy.ceiling(3, false), Duration::from_millis(300));
        assert_eq!(policy.ceiling(1, true), Duration::from_millis(300));
        for failed in 1..4 {
            let wait = policy.backoff(failed, false).expect("within budget");
            let ceiling = policy.ceiling(failed, false);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{wait:?} outside jitter range of {ceiling:?}");
        }
        assert_eq!(policy.backoff(4, false), None);
    }
}
