//! Inbound port: trades read back from a partitioned log, with their positions.

use std::future::Future;

use domain::Trade;

use crate::trace::TraceContext;

/// A source partition number.
pub type Partition = i32;

/// A trade and where it sits in the log.
#[derive(Debug, Clone)]
pub struct LoggedTrade {
    /// Source partition.
    pub partition: Partition,
    /// Offset within the partition.
    pub offset: i64,
    /// The decoded trade.
    pub trade: Trade,
    /// Trace context found on the record, if any.
    pub trace: Option<TraceContext>,
}

/// A progress marker read from the log: its writer says every trade up to `completeness_ms`
/// precedes it in this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedProgress {
    /// Source partition.
    pub partition: Partition,
    /// Offset within the partition.
    pub offset: i64,
    /// Who wrote it (one app-raw deployment).
    pub writer: String,
    /// Completeness time, ms.
    pub completeness_ms: i64,
}

/// What the log hands out next.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// These partitions are now ours; no record of them is handed out before this event.
    Assigned(Vec<Partition>),
    /// These partitions are no longer ours; finish their work and drop their state.
    Revoked(Vec<Partition>),
    /// Trades in log order per partition.
    Trades(Vec<LoggedTrade>),
    /// A progress marker; every trade before it in its partition came in earlier events.
    Progress(LoggedProgress),
}

/// Errors from reading the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A transient failure; calling again may succeed.
    #[error("retryable log failure: {0}")]
    Retryable(String),
    /// The log cannot be read any more.
    #[error("log failed: {0}")]
    Fatal(String),
    /// Another instance with our identity took our place in the group (a newer copy of us).
    #[error("fenced: {0}")]
    Fenced(String),
}

/// A partitioned, replayable log of trades (the raw topic, consumed as a group).
pub trait TradeLog: Send {
    /// The next event; waits until there is one.
    ///
    /// Cancel-safe: callers race it against timers in `select!`, so dropping the future before
    /// it completes must lose nothing; whatever it had fetched comes with a later call.
    ///
    /// # Errors
    /// [`LogError`] if the log cannot be read.
    fn next_event(&mut self) -> impl Future<Output = Result<LogEvent, LogError>> + Send;

    /// Whether our position on `partition` is at the end of the log.
    fn caught_up(&self, partition: Partition) -> bool;

    /// Continues `partition` from `offset` (the next record to read).
    ///
    /// # Errors
    /// [`LogError`] if the seek fails.
    fn seek(&mut self, partition: Partition, offset: i64) -> Result<(), LogError>;
}
