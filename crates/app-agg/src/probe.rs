//! What app-agg's `/readyz` and `/metrics` report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adapters_kafka::group::LagProbe;
use ports::{Clock, SystemClock};
use shell::http::Probe;
use telemetry::prometheus::Exposition;

use crate::metrics::ServiceMetrics;

/// The service's counters, the DLQ count and the consumer's lag.
pub struct AggProbe {
    /// Service counters.
    pub service: Arc<ServiceMetrics>,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: Arc<AtomicU64>,
    /// The group consumer's lag per partition.
    pub lag: LagProbe,
    /// The raw topic.
    pub topic: String,
    /// A partition without a progress marker this long makes the service not ready (`None`:
    /// markers are not used).
    pub marker_timeout: Option<Duration>,
}

impl Probe for AggProbe {
    /// Ready once the assigned partitions are restored, while the raw topic can be read, and
    /// while every partition has had a progress marker within the timeout.
    fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    fn not_ready_reason(&self) -> Option<String> {
        if !self.service.ready.load(Ordering::Relaxed) {
            return Some("partitions not assigned and restored yet".into());
        }
        if self.service.log_unreachable.load(Ordering::Relaxed) {
            return Some(format!(
                "cannot read {} (broker down or unreachable)",
                self.topic
            ));
        }
        let timeout = self.marker_timeout?;
        let silent = self
            .service
            .silent_partitions(SystemClock.now_ms(), timeout);
        if silent.is_empty() {
            return None;
        }
        let list: Vec<String> = silent
            .iter()
            .map(|(p, age)| format!("{p} ({} s)", age / 1000))
            .collect();
        Some(format!(
            "the watermark of {} partition(s) of {} has not advanced for over {:?}: {}; windows \
             there stay open (is every app-raw that writes markers running? a raw topic without \
             them needs AGG_WATERMARK=trades)",
            silent.len(),
            self.topic,
            timeout,
            list.join(", ")
        ))
    }

    fn metrics(&self) -> String {
        let s = &self.service;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // Asking for watermarks blocks briefly: keep it off the async workers.
        let lag = tokio::task::block_in_place(|| self.lag.lag());
        #[allow(clippy::cast_precision_loss)]
        let lag: Vec<(Vec<(&str, String)>, f64)> = lag
            .into_iter()
            .map(|(p, l)| (vec![("partition", p.to_string())], l as f64))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let cycle = get(&s.last_cycle_us) as f64 / 1e6;
        let now = SystemClock.now_ms();
        #[allow(clippy::cast_precision_loss)]
        let watermark_lag: Vec<(Vec<(&str, String)>, f64)> = s
            .partition_health()
            .into_iter()
            .filter_map(|(p, h)| {
                let lag = now.saturating_sub(h.watermark?) as f64 / 1e3;
                Some((vec![("partition", p.to_string())], lag))
            })
            .collect();
        let mut e = Exposition::new();
        e.counter(
            "app_agg_trades_total",
            "Trades folded into aggregates.",
            get(&s.trades),
        )
        .counter(
            "app_agg_trades_duplicate_total",
            "Trades dropped as duplicates.",
            get(&s.duplicates),
        )
        .counter(
            "app_agg_trades_late_total",
            "Trades that came after their window closed (copied to the late-trades topic).",
            get(&s.late),
        )
        .counter(
            "app_agg_windows_emitted_total",
            "Aggregates committed.",
            get(&s.windows_emitted),
        )
        .counter(
            "app_agg_windows_with_gaps_total",
            "Aggregates committed whose trades skipped some trade_seq (seq_gaps > 0): bars that may miss trades.",
            get(&s.windows_with_gaps),
        )
        .counter(
            "app_agg_commit_cycles_total",
            "Commit cycles completed.",
            get(&s.cycles),
        )
        .counter(
            "app_agg_commit_aborted_total",
            "Commit cycles aborted and repeated.",
            get(&s.aborted),
        )
        .counter(
            "app_agg_log_outages_total",
            "Times the raw topic became unreadable (broker down or unreachable).",
            get(&s.log_outages),
        )
        .counter(
            "app_agg_progress_markers_total",
            "Progress markers read from the raw topic.",
            get(&s.progress_markers),
        )
        .counter(
            "app_agg_progress_markers_implausible_total",
            "Progress markers ignored: their time was implausibly far ahead of the clock.",
            get(&s.implausible_markers),
        )
        .counter(
            "app_agg_dlq_records_total",
            "Records sent to the dead-letter topic.",
            get(&self.dead_lettered),
        )
        .gauge(
            "app_agg_commit_cycle_seconds",
            "Duration of the last commit cycle.",
            &[(vec![], cycle)],
        )
        .gauge(
            "app_agg_consumer_lag",
            "High watermark minus position, per partition.",
            &lag,
        )
        .gauge(
            "app_agg_watermark_lag_seconds",
            "Wall clock minus the partition's watermark (how far behind completeness is).",
            &watermark_lag,
        )
        .gauge(
            "app_agg_ready",
            "1 once the assigned partitions are restored, the raw topic can be read and every partition has a recent progress marker.",
            &[(vec![], if self.ready() { 1.0 } else { 0.0 })],
        );
        telemetry::export_stats().write_to(&mut e);
        e.finish()
    }
}
