//! Handing the session's results to the consumer: batches and progress offered without
//! waiting (a full queue sheds the batch, which is fetched again from history), the
//! sequencer's bookkeeping counted and logged, and refused trades reported.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use domain::Trade;
use ports::{FeedError, FeedEvent, TraceContext, TradeBatch};
use tokio::sync::mpsc;
use tracing::{Span, warn};

use super::end::SessionEnd;
use crate::metrics::FeedMetrics;
use crate::parse::{MAX_TRADE_AHEAD_MS, ParsedTrades, take_future_stamped};
use crate::sequencer::Sequenced;

/// What the session hands the consumer: a batch or progress, or the error that stopped the feed.
pub(crate) type FeedItem = Result<FeedEvent, FeedError>;

/// Turns the span that received a batch into the trace context sent downstream (supplied by
/// the telemetry layer; the adapter itself stays free of OpenTelemetry).
pub type TraceExtractor = Arc<dyn Fn(&tracing::Span) -> Option<TraceContext> + Send + Sync>;

/// The consumer's end of the feed, as the session sees it.
pub(super) struct Outbox<'a> {
    /// The consumer's queue (bounded: never waited on).
    pub tx: &'a mpsc::Sender<FeedItem>,
    /// Makes a batch's trace context from the span it was received in.
    pub trace: Option<&'a TraceExtractor>,
    /// The feed's counters.
    pub metrics: &'a FeedMetrics,
}

impl Outbox<'_> {
    /// Whether the consumer's queue is at least half free (shed trades may be fetched again).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() * 2 >= self.tx.max_capacity()
    }

    /// Offers `trades` as one batch traced from `span`. A full queue hands them back: shed.
    pub fn send(&self, trades: Vec<Trade>, span: &Span) -> Result<Option<Vec<Trade>>, SessionEnd> {
        if trades.is_empty() {
            return Ok(None);
        }
        let count = trades.len() as u64;
        let trace = self.trace.and_then(|extract| extract(span));
        match self
            .tx
            .try_send(Ok(FeedEvent::Trades(TradeBatch { trades, trace })))
        {
            Ok(()) => {
                FeedMetrics::add(&self.metrics.trades_emitted, count);
                Ok(None)
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                FeedMetrics::add(&self.metrics.shed_batches, 1);
                let Ok(FeedEvent::Trades(batch)) = item else {
                    return Ok(None);
                };
                warn!(
                    trades = batch.trades.len(),
                    "Consumer queue full: batch shed, it will be fetched again."
                );
                Ok(Some(batch.trades))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SessionEnd::ConsumerGone),
        }
    }

    /// Offers a new completeness time. A full queue skips it: a later one supersedes it.
    pub fn progress(&self, complete_to: i64) {
        if self
            .tx
            .try_send(Ok(FeedEvent::Progress(complete_to)))
            .is_ok()
        {
            self.metrics
                .complete_to_ms
                .store(complete_to, Ordering::Relaxed);
        }
    }

    /// The trades of a notification or history page that may be sequenced: the rejected ones
    /// (the first few in detail) and those stamped implausibly far ahead of `now_ms` counted as
    /// invalid and logged, for live and history trades alike.
    pub fn admit(&self, parsed: ParsedTrades, source: &str, now_ms: i64) -> Vec<Trade> {
        let metrics = self.metrics;
        for rejected in &parsed.rejected {
            FeedMetrics::add(&metrics.invalid_trades, 1);
            warn!(source, index = rejected.index, reason = %rejected.reason, raw = %super::end::truncate(&rejected.raw), "Skipping invalid trade.");
        }
        if parsed.rejected_more > 0 {
            FeedMetrics::add(&metrics.invalid_trades, parsed.rejected_more);
            warn!(
                source,
                more = parsed.rejected_more,
                "Skipping further invalid trades of the same frame."
            );
        }
        let mut trades = parsed.trades;
        let future = take_future_stamped(&mut trades, now_ms);
        if let Some(first) = future.first() {
            FeedMetrics::add(&metrics.invalid_trades, future.len() as u64);
            warn!(source, count = future.len(), instrument = %first.instrument_name, trade_seq = first.trade_seq, timestamp = first.timestamp, now_ms, "Skipping trades stamped more than {MAX_TRADE_AHEAD_MS} ms ahead of this host's clock.");
        }
        trades
    }

    /// Counts and logs what the sequencer found (duplicates, gaps, backfilled trades).
    pub fn book(&self, out: &Sequenced) {
        let metrics = self.metrics;
        FeedMetrics::add(&metrics.duplicates, out.duplicates);
        FeedMetrics::add(&metrics.gaps_detected, out.gaps_detected);
        FeedMetrics::add(&metrics.gaps_filled, out.gaps_filled);
        FeedMetrics::add(&metrics.backfilled_trades, out.backfilled);
        for gap in &out.gaps {
            FeedMetrics::add(&metrics.gaps_unfilled, 1);
            warn!(instrument = %gap.instrument, from_seq = gap.from_seq, to_seq = gap.to_seq, "Trades missing from Deribit's history: gap not filled.");
        }
    }
}
