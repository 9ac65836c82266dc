//! Counters the feed keeps; the service reads them to render `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Upper bounds (ms) of the receive-minus-trade-time latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [u64; 8] = [10, 25, 50, 100, 250, 500, 1_000, 5_000];

/// Lock-free counters of one feed. All are totals since start, except the gauges noted.
#[derive(Debug, Default)]
pub struct FeedMetrics {
    /// Connections replaced (any reason).
    pub reconnects: AtomicU64,
    /// Gauge: subscribed on the current connection.
    pub subscribed: AtomicBool,
    /// Trades received in live notifications (valid ones).
    pub trades_received: AtomicU64,
    /// Trades handed to the consumer.
    pub trades_emitted: AtomicU64,
    /// Trades dropped as duplicates (`trade_seq` already handed out).
    pub duplicates: AtomicU64,
    /// Trades that failed validation or parsing.
    pub invalid_trades: AtomicU64,
    /// Frames that were not valid JSON-RPC.
    pub malformed_frames: AtomicU64,
    /// Frames above the size limit (the connection is replaced).
    pub oversized_frames: AtomicU64,
    /// `test_request`s answered.
    pub test_requests_answered: AtomicU64,
    /// Gauge: last `public/test` round trip, µs.
    pub heartbeat_rtt_us: AtomicU64,
    /// Holes in `trade_seq` detected.
    pub gaps_detected: AtomicU64,
    /// Detected holes closed completely from history.
    pub gaps_filled: AtomicU64,
    /// Holes that could not be filled (reported).
    pub gaps_unfilled: AtomicU64,
    /// Trades recovered from history.
    pub backfilled_trades: AtomicU64,
    /// Rate-limit errors (10028) received.
    pub rate_limit_hits: AtomicU64,
    /// Batches not delivered because the consumer's queue was full (re-fetched later).
    pub shed_batches: AtomicU64,
    /// Gauge: the completeness time handed out last, ms (0 before the first).
    pub complete_to_ms: AtomicI64,
    /// Server clock readings refused as implausible (missing `usOut`, far from local time).
    pub implausible_server_times: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
}

impl FeedMetrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one receive-minus-trade-time latency.
    pub fn observe_latency_ms(&self, ms: u64) {
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(b) = self.latency_buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Latency histogram: per-bucket counts (last = above the largest bound) and the sum, ms.
    pub fn latency(&self) -> (Vec<u64>, u64) {
        let counts = self
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        (counts, self.latency_sum_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_its_bucket() {
        let m = FeedMetrics::default();
        for ms in [0, 10, 11, 5_000, 9_999] {
            m.observe_latency_ms(ms);
        }
        let (counts, sum) = m.latency();
        assert_eq!(counts, vec![2, 1, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(sum, 15_020);
    }
}
