//! What app-sql counts, once each ([`SqlMetrics`], written by the service loop), and what its
//! `/readyz` and `/metrics` report ([`SqlProbe`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use adapters_kafka::group::LagProbe;
use ports::{Clock, SystemClock, Written};
use shell::http::Probe;
use telemetry::prometheus::Exposition;

/// How long after the source's last error the service counts as unable to read it.
pub const SOURCE_ERROR_HOLD: Duration = Duration::from_secs(10);

/// Upper bounds of the commit latency histogram, seconds.
pub const COMMIT_BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Live counters of the service.
#[derive(Debug, Default)]
pub struct SqlMetrics {
    /// Trades inserted.
    pub trades: AtomicU64,
    /// Bars inserted.
    pub bars: AtomicU64,
    /// Trades already stored when inserted (exactly once means none).
    pub trade_conflicts: AtomicU64,
    /// Bars already stored when inserted (exactly once means none).
    pub bar_conflicts: AtomicU64,
    /// Trades past retention, not stored.
    pub expired: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Writes refused because another instance moved a position.
    pub fenced: AtomicU64,
    /// Set once partitions are assigned and positioned.
    pub assigned: AtomicBool,
    /// Set while the database cannot be reached (not ready meanwhile).
    pub database_down: AtomicBool,
    /// When the source last reported an error, ms (0: none since the last record): not ready
    /// while errors keep coming, ready again [`SOURCE_ERROR_HOLD`] after the last one, or at
    /// the next record (the client reports outages, not their end).
    pub source_error_ms: AtomicI64,
    /// Commit latency: counts per bound of [`COMMIT_BOUNDS`] (and one above), and the sum.
    commit_latency: Mutex<([u64; 11], f64)>,
}

impl SqlMetrics {
    /// Counts one committed write and how long it took.
    pub fn committed(&self, written: &Written, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        for (counter, value) in [
            (&self.trades, written.trades),
            (&self.bars, written.bars),
            (&self.trade_conflicts, written.trade_conflicts),
            (&self.bar_conflicts, written.bar_conflicts),
            (&self.expired, written.expired),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
        let seconds = took.as_secs_f64();
        let bucket = COMMIT_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(COMMIT_BOUNDS.len());
        let mut latency = self
            .commit_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        latency.0[bucket] += 1;
        latency.1 += seconds;
    }

    fn latency(&self) -> ([u64; 11], f64) {
        *self
            .commit_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The service's counters, unreadable records and the consumer's lag, for the endpoint.
pub struct SqlProbe {
    /// Service counters.
    pub service: Arc<SqlMetrics>,
    /// Records that could not be decoded.
    pub unreadable: Arc<AtomicU64>,
    /// Lag per topic read.
    pub lag: Vec<(String, LagProbe)>,
}

impl Probe for SqlProbe {
    fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    fn not_ready_reason(&self) -> Option<String> {
        let s = &self.service;
        if s.database_down.load(Ordering::Relaxed) {
            return Some(
                "the database cannot be reached; rows wait and are written once it is back".into(),
            );
        }
        let last_error = s.source_error_ms.load(Ordering::Relaxed);
        let hold = i64::try_from(SOURCE_ERROR_HOLD.as_millis()).unwrap_or(i64::MAX);
        if last_error > 0 && SystemClock.now_ms().saturating_sub(last_error) < hold {
            return Some("the source topics cannot be read (broker down or unreachable)".into());
        }
        if !s.assigned.load(Ordering::Relaxed) {
            return Some("partitions not assigned and positioned yet".into());
        }
        None
    }

    fn metrics(&self) -> String {
        let s = &self.service;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let per_table = |trades: &AtomicU64, bars: &AtomicU64| {
            vec![
                (vec![("table", "trades".to_owned())], get(trades)),
                (vec![("table", "bars".to_owned())], get(bars)),
            ]
        };
        // Asking for watermarks blocks briefly: keep it off the async workers.
        #[allow(clippy::cast_precision_loss)]
        let lag: Vec<(Vec<(&str, String)>, f64)> = tokio::task::block_in_place(|| {
            self.lag
                .iter()
                .flat_map(|(topic, probe)| {
                    probe.lag().into_iter().map(move |(p, l)| {
                        (
                            vec![("topic", topic.clone()), ("partition", p.to_string())],
                            l as f64,
                        )
                    })
                })
                .collect()
        });
        let (counts, sum) = s.latency();
        let flag = |b: &AtomicBool| f64::from(u8::from(b.load(Ordering::Relaxed)));
        let mut e = Exposition::new();
        e.counters(
            "app_sql_rows_written_total",
            "Rows inserted, per table.",
            &per_table(&s.trades, &s.bars),
        )
        .counters(
            "app_sql_conflicts_total",
            "Rows already stored when inserted, per table (skipped; exactly once means none).",
            &per_table(&s.trade_conflicts, &s.bar_conflicts),
        )
        .counter(
            "app_sql_trades_expired_total",
            "Trades older than SQL_TRADES_RETENTION, not stored.",
            get(&s.expired),
        )
        .counter(
            "app_sql_unreadable_records_total",
            "Records that could not be decoded (logged with topic, partition, offset; stepped over).",
            get(&self.unreadable),
        )
        .counter("app_sql_commits_total", "Database transactions committed.", get(&s.commits))
        .counter(
            "app_sql_fenced_total",
            "Writes refused because another instance moved a position (the instance then exits with code 3).",
            get(&s.fenced),
        )
        .histogram(
            "app_sql_commit_seconds",
            "Time from the start of a write's transaction to its commit.",
            &COMMIT_BOUNDS,
            &counts,
            sum,
        )
        .gauge(
            "app_sql_lag",
            "Records not yet read, per source topic and partition.",
            &lag,
        )
        .gauge(
            "app_sql_database_up",
            "1 while the database can be reached.",
            &[(Vec::new(), 1.0 - flag(&s.database_down))],
        )
        .gauge(
            "app_sql_ready",
            "1 while /readyz answers 200.",
            &[(Vec::new(), f64::from(u8::from(self.ready())))],
        );
        telemetry::export_stats().write_to(&mut e);
        e.finish()
    }
}
