//! The one backoff of the runtime's calls to storage and streams: a pause
//! that doubles after each failure up to a ceiling, started again by a
//! success. Function invocations have their own budgeted, jittered policy
//! ([`crate::invoke::retry`]). This module only waits: callers decide what is
//! worth trying again.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, next: first, max }
    }

    /// The pause the next [`Backoff::wait`] sleeps (for the log line before it).
    pub fn next(&self) -> Duration {
        self.next
    }

    /// Sleeps the current pause, and doubles the next one up to the ceiling.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    /// After a success: the next failure waits the first pause again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_double_up_to_the_ceiling_and_a_reset_starts_again() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(3));
        let mut slept = Vec::new();
        for _ in 0..4 {
            slept.push(backoff.next());
            backoff.wait().await;
        }
        assert_eq!(slept, [1, 2, 3, 3].map(Duration::from_millis));
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(1));
    }
}
