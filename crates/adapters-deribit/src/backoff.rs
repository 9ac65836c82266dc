//! Reconnect delays: capped exponential backoff with full jitter, reset after a stable period.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::BackoffConfig;

/// Produces reconnect delays. Delay `n` (from 0) is uniform in `[0, min(max, initial·2ⁿ)]`;
/// full jitter keeps many clients from reconnecting in lockstep after an outage.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Self {
        // A random seed without a dependency: std's hasher keys are random per process.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        Backoff {
            config,
            attempt: 0,
            rng: seed,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }

    /// The next delay (and one more attempt counted).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    /// Notes how long the last connection lived; a stable one resets the backoff.
    pub fn connection_lasted(&mut self, lifetime: Duration) {
        if lifetime >= self.config.stable_after {
            self.attempt = 0;
        }
    }

    /// Number of delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            stable_after: Duration::from_secs(60),
            ..BackoffConfig::default()
        }
    }

    #[test]
    fn delays_stay_within_the_exponential_cap() {
        let mut backoff = Backoff::new(config());
        let mut seen_max = Duration::ZERO;
        for n in 0..200u32 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1u32 << n.min(20))
                .min(Duration::from_secs(5));
            assert_eq!(backoff.ceiling(), cap);
            let delay = backoff.next_delay();
            assert!(delay <= cap, "attempt {n}: {delay:?} > {cap:?}");
            seen_max = seen_max.max(delay);
        }
        assert!(
            seen_max > Duration::from_secs(4),
            "jitter spans the range: {seen_max:?}"
        );
    }

    #[test]
    fn jitter_is_spread_not_constant() {
        let mut backoff = Backoff::new(config());
        for _ in 0..10 {
            backoff.next_delay();
        }
        let delays: Vec<Duration> = (0..100).map(|_| backoff.next_delay()).collect();
        let below_half = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(2500))
            .count();
        assert!(
            (20..=80).contains(&below_half),
            "{below_half} of 100 below half the cap"
        );
    }

    #[test]
    fn a_stable_connection_resets_and_a_short_one_does_not() {
        let mut backoff = Backoff::new(config());
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.connection_lasted(Duration::from_secs(3));
        assert_eq!(backoff.attempts(), 5);
        backoff.connection_lasted(Duration::from_secs(60));
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }
}
