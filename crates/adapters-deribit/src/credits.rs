//! Deribit's credit-based rate limits, kept on our side so we never hit them.
//!
//! Each request costs credits from a pool that refills at a fixed rate (non-matching requests:
//! 500 of a 50,000 pool refilled at 10,000/s; `public/subscribe`: 3,000 of 30,000).

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket measured in Deribit credits.
#[derive(Debug)]
pub struct CreditBucket {
    capacity: f64,
    refill_per_sec: f64,
    cost: f64,
    available: f64,
    updated: Instant,
}

impl CreditBucket {
    /// Pool for ordinary (non-matching) requests.
    pub fn requests() -> Self {
        CreditBucket::new(50_000.0, 10_000.0, 500.0)
    }

    /// Pool for `public/subscribe`.
    pub fn subscriptions() -> Self {
        CreditBucket::new(30_000.0, 10_000.0, 3_000.0)
    }

    /// A full bucket.
    pub fn new(capacity: f64, refill_per_sec: f64, cost: f64) -> Self {
        CreditBucket {
            capacity,
            refill_per_sec,
            cost,
            available: capacity,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.available = (self.available + elapsed * self.refill_per_sec).min(self.capacity);
        self.updated = now;
    }

    /// Takes one request's credits if there are enough; otherwise says how long to wait.
    ///
    /// # Errors
    /// The time until one request's credits are available.
    pub fn try_take(&mut self) -> Result<(), Duration> {
        self.refill(Instant::now());
        if self.available >= self.cost {
            self.available -= self.cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (self.cost - self.available) / self.refill_per_sec,
            ))
        }
    }

    /// Empties the pool (the server said we are out of credits).
    pub fn drain(&mut self) {
        self.refill(Instant::now());
        self.available = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_bursts_to_the_refill_rate() {
        let mut bucket = CreditBucket::subscriptions();
        for _ in 0..10 {
            bucket.try_take().unwrap();
        }
        let wait = bucket.try_take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(300));
        tokio::time::advance(wait).await;
        bucket.try_take().unwrap();
        bucket.drain();
        assert!(bucket.try_take().is_err());
    }
}
