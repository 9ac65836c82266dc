//! What app-raw's `/readyz` and `/metrics` report.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use adapters_deribit::FeedMetrics;
use adapters_deribit::metrics::LATENCY_BUCKETS_MS;
use ports::Clock;
use shell::http::Probe;
use telemetry::prometheus::Exposition;

use crate::run::RunCounters;

/// Feed counters plus the publishing loop's.
#[derive(Debug, Clone)]
pub struct RawProbe {
    /// The Deribit feed's counters.
    pub feed: Arc<FeedMetrics>,
    /// The loop's counters.
    pub run: Arc<RunCounters>,
}

impl Probe for RawProbe {
    /// Ready when subscribed to Deribit (the producer exists once the service runs).
    fn ready(&self) -> bool {
        self.feed.subscribed.load(Ordering::Relaxed)
    }

    fn not_ready_reason(&self) -> Option<String> {
        (!self.ready()).then(|| {
            "not subscribed to Deribit (connecting, reconnecting or refused; the log says which)"
                .to_owned()
        })
    }

    fn metrics(&self) -> String {
        let f = &self.feed;
        let get = FeedMetrics::get;
        let mut e = Exposition::new();
        e.counter(
            "app_raw_trades_received_total",
            "Valid trades received in live notifications.",
            get(&f.trades_received),
        )
        .counter(
            "app_raw_trades_published_total",
            "Trades acknowledged by Kafka.",
            self.run.trades.load(Ordering::Relaxed),
        )
        .counter(
            "app_raw_trades_duplicate_total",
            "Trades dropped as duplicates (trade_seq already delivered).",
            get(&f.duplicates),
        )
        .counter(
            "app_raw_trades_invalid_total",
            "Trades that failed parsing or validation.",
            get(&f.invalid_trades),
        )
        .counter(
            "app_raw_frames_malformed_total",
            "Frames that were not valid JSON-RPC.",
            get(&f.malformed_frames),
        )
        .counter(
            "app_raw_frames_oversized_total",
            "Frames above the size limit.",
            get(&f.oversized_frames),
        )
        .counter(
            "app_raw_reconnects_total",
            "Deribit connections replaced.",
            get(&f.reconnects),
        )
        .counter(
            "app_raw_backfilled_trades_total",
            "Trades recovered from Deribit's history.",
            get(&f.backfilled_trades),
        )
        .counter(
            "app_raw_gaps_detected_total",
            "Holes in trade_seq detected.",
            get(&f.gaps_detected),
        )
        .counter(
            "app_raw_gaps_filled_total",
            "Detected holes filled from history.",
            get(&f.gaps_filled),
        )
        .counter(
            "app_raw_gaps_unfilled_total",
            "Holes Deribit's history could not fill.",
            get(&f.gaps_unfilled),
        )
        .counter(
            "app_raw_rate_limit_hits_total",
            "Deribit rate-limit errors (10028).",
            get(&f.rate_limit_hits),
        )
        .counter(
            "app_raw_shed_batches_total",
            "Batches shed on a full queue (fetched again).",
            get(&f.shed_batches),
        )
        .counter(
            "app_raw_publish_retries_total",
            "Publish attempts retried.",
            self.run.retries.load(Ordering::Relaxed),
        )
        .counter(
            "app_raw_progress_markers_total",
            "Progress marker rounds written (one marker per partition each).",
            self.run.progress_markers.load(Ordering::Relaxed),
        )
        .counter(
            "app_raw_implausible_server_times_total",
            "Deribit clock readings refused (missing usOut, far from the local clock).",
            FeedMetrics::get(&self.feed.implausible_server_times),
        )
        .gauge(
            "app_raw_completeness_lag_seconds",
            "Wall clock minus the completeness time of the last progress marker written.",
            &completeness_lag(self.run.marked_to_ms.load(Ordering::Relaxed)),
        )
        .gauge(
            "app_raw_subscribed",
            "1 while subscribed to Deribit.",
            &[(vec![], if self.ready() { 1.0 } else { 0.0 })],
        );
        #[allow(clippy::cast_precision_loss)]
        let rtt = get(&f.heartbeat_rtt_us) as f64 / 1e6;
        e.gauge(
            "app_raw_heartbeat_rtt_seconds",
            "Last public/test round trip.",
            &[(vec![], rtt)],
        );
        let (counts, sum) = f.latency();
        let bounds: Vec<f64> = LATENCY_BUCKETS_MS.iter().map(|&b| b as f64).collect();
        #[allow(clippy::cast_precision_loss)]
        e.histogram(
            "app_raw_trade_latency_ms",
            "Receive time minus trade time.",
            &bounds,
            &counts,
            sum as f64,
        );
        telemetry::export_stats().write_to(&mut e);
        e.finish()
    }
}

/// Seconds the last marker's completeness time is behind the wall clock (none before the first).
fn completeness_lag(marked_to_ms: i64) -> Vec<(Vec<(&'static str, String)>, f64)> {
    if marked_to_ms <= 0 {
        return Vec::new();
    }
    #[allow(clippy::cast_precision_loss)]
    let lag = ports::SystemClock.now_ms().saturating_sub(marked_to_ms) as f64 / 1e3;
    vec![(vec![], lag)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_says_why() {
        let probe = RawProbe {
            feed: Arc::default(),
            run: Arc::default(),
        };
        let reason = probe.not_ready_reason().unwrap_or_default();
        assert!(reason.starts_with("not subscribed to Deribit"), "{reason}");
        probe.feed.subscribed.store(true, Ordering::Relaxed);
        assert_eq!(probe.not_ready_reason(), None);
    }
}
