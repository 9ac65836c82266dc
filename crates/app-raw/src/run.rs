//! The service loop: trades from the feed into the sink until shutdown, nothing lost or doubled.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ports::{FeedError, SinkError, TradeBatch, TradeFeed, TradeSink};
use tracing::{info, warn};

/// Why the loop stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The feed cannot go on (bad credentials, bad configuration).
    #[error("deribit feed: {0}")]
    Feed(#[from] FeedError),
    /// Publishing failed in a way retrying cannot fix.
    #[error("kafka sink: {0}")]
    Sink(#[from] SinkError),
}

/// Live counters of the loop, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct RunCounters {
    /// Batches published.
    pub batches: AtomicU64,
    /// Trades published (acknowledged by Kafka).
    pub trades: AtomicU64,
    /// Publish attempts that failed and were retried.
    pub retries: AtomicU64,
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Batches published.
    pub batches: u64,
    /// Trades published.
    pub trades: u64,
    /// Publish attempts that failed and were retried.
    pub retries: u64,
}

/// Publishes every batch of `feed` to `sink` until `shutdown` resolves or the feed ends, then
/// flushes. A batch that fails in a retryable way is retried with backoff; before each retry the
/// sink's positions are read back so trades that did land are not sent twice.
///
/// # Errors
/// [`RunError`] when the feed or the sink fails for good.
pub async fn run<F: TradeFeed, S: TradeSink>(
    feed: &mut F,
    sink: &S,
    shutdown: impl Future<Output = ()>,
    counters: &RunCounters,
) -> Result<RunStats, RunError> {
    tokio::pin!(shutdown);
    let mut stats = RunStats::default();
    loop {
        let batch = tokio::select! {
            biased;
            () = &mut shutdown => break,
            next = feed.next_batch() => match next? {
                Some(batch) => batch,
                None => break,
            },
        };
        let mut pending = batch;
        let mut backoff = Duration::from_millis(100);
        loop {
            let count = pending.trades.len() as u64;
            match sink.publish(pending.clone()).await {
                Ok(()) => {
                    stats.batches += 1;
                    stats.trades += count;
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    counters.trades.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    stats.retries += 1;
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, trades = count, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "Publishing failed; retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return Err(RunError::Sink(e)),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pending = unpublished(sink, pending).await;
                }
                Err(e) => return Err(RunError::Sink(e)),
            }
        }
    }
    info!(
        batches = stats.batches,
        trades = stats.trades,
        "Stopping: flushing the producer."
    );
    sink.flush().await?;
    Ok(stats)
}

/// The part of `batch` the sink does not have yet (all of it if positions cannot be read).
async fn unpublished<S: TradeSink>(sink: &S, mut batch: TradeBatch) -> TradeBatch {
    match sink.last_positions().await {
        Ok(positions) => {
            batch.trades.retain(|t| {
                positions
                    .get(&t.instrument_name)
                    .is_none_or(|p| t.trade_seq > p.trade_seq)
            });
        }
        Err(e) => warn!(error = %e, "Cannot read positions back; retrying the whole batch."),
    }
    batch
}
