//! When to try a failed send again: exponential backoff with full jitter.

use std::time::Duration;

use rand::RngExt as _;

/// `delay(n) = random(0 ..= min(max_delay, base * 2^(n-1)))`, for at most `max_attempts` sends.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The upper bound of the delay after `attempt` failed attempts (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// A random delay under the ceiling ("full jitter": many senders never retry in step).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps_and_delay_stays_under_it() {
        let p = RetryPolicy { base: Duration::from_secs(1), max_delay: Duration::from_secs(10), max_attempts: 5 };
        assert_eq!(p.ceiling(1), Duration::from_secs(1));
        assert_eq!(p.ceiling(2), Duration::from_secs(2));
        assert_eq!(p.ceiling(4), Duration::from_secs(8));
        assert_eq!(p.ceiling(5), Duration::from_secs(10));
        assert_eq!(p.ceiling(400), Duration::from_secs(10));
        for attempt in 1..20 {
            assert!(p.delay(attempt) <= p.ceiling(attempt));
        }
        assert!(!p.exhausted(4));
        assert!(p.exhausted(5));
    }
}
