//! Inbound port: trades from an exchange.

use std::collections::HashMap;
use std::future::Future;

use domain::Trade;

use crate::trace::TraceContext;

/// Trades delivered together (one exchange notification, or one backfill page), with the trace
/// context of the span that received them.
#[derive(Debug, Clone, Default)]
pub struct TradeBatch {
    /// Trades in delivery order: per instrument, strictly increasing `trade_seq`.
    pub trades: Vec<Trade>,
    /// Context of the span that produced the batch, to continue the trace downstream.
    pub trace: Option<TraceContext>,
}

/// What a feed hands out next.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// Trades (one notification, or one history page).
    Trades(TradeBatch),
    /// Completeness: every trade with a timestamp at or before this time (ms, the exchange's
    /// clock) has been handed out before this event. Never moves back.
    Progress(i64),
}

/// Where an instrument's stream stands: its last delivered trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Last `trade_seq` delivered.
    pub trade_seq: u64,
    /// Its timestamp, ms.
    pub timestamp: i64,
}

/// Start positions per instrument, used to resume without loss or repetition.
pub type StartPositions = HashMap<String, Position>;

/// Errors a feed can end with.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The configuration cannot work (e.g. a `raw` channel without credentials). Not retryable.
    #[error("feed configuration: {0}")]
    Config(String),
    /// The exchange refused our credentials. Not retryable without new ones.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The feed stopped for a reason retrying will not fix.
    #[error("feed stopped: {0}")]
    Fatal(String),
}

/// A source of trades. Per instrument, batches carry strictly increasing `trade_seq`, each trade
/// once; reconnects and backfill are the implementation's business. Between batches it says how
/// far its stream is complete ([`FeedEvent::Progress`]).
pub trait TradeFeed: Send {
    /// The next batch or progress; `Ok(None)` once the feed has been shut down and is drained.
    ///
    /// Cancel-safe: a future dropped before it completes has taken nothing (callers poll it
    /// once to see whether more is ready, and race it against shutdown).
    ///
    /// # Errors
    /// [`FeedError`] when the feed cannot go on.
    fn next_event(&mut self) -> impl Future<Output = Result<Option<FeedEvent>, FeedError>> + Send;
}
