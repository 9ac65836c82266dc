//! Outbound port: rows and the source positions they cover, written in one transaction, with
//! the positions as the store's own (app-sql's database).

use std::collections::BTreeMap;
use std::future::Future;

use domain::{Aggregate, Trade};

use crate::error::ErrorKind;
use crate::records::TopicPartition;
use crate::trace::TraceContext;

/// A partition's position moved by one write: from what the store held to the next offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionMove {
    /// The partition.
    pub source: TopicPartition,
    /// The position the store held when this instance took the partition or last wrote it
    /// (`None`: the store had none). The write is refused as fenced if it holds another.
    pub from: Option<i64>,
    /// The next offset to read after this write.
    pub to: i64,
}

/// Everything one write makes durable, together.
#[derive(Debug, Clone, Default)]
pub struct StoreBatch {
    /// Raw trades.
    pub trades: Vec<Trade>,
    /// Bars.
    pub bars: Vec<Aggregate>,
    /// The positions the rows bring each partition to.
    pub positions: Vec<PositionMove>,
    /// Trace contexts of (some of) the records, to link the write's span to.
    pub links: Vec<TraceContext>,
}

impl StoreBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.trades.is_empty() && self.bars.is_empty() && self.positions.is_empty()
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Trades inserted.
    pub trades: u64,
    /// Bars inserted.
    pub bars: u64,
    /// Trades already stored (skipped; exactly once means there are none).
    pub trade_conflicts: u64,
    /// Bars already stored (skipped; exactly once means there are none).
    pub bar_conflicts: u64,
    /// Trades skipped because their day is past retention.
    pub expired: u64,
}

/// Why a write or a read of positions failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or ended the transaction for a passing reason (a
    /// restart, a serialisation failure): try the same write again. Usually nothing was
    /// written; if the connection dropped during the commit it may have been, and the write
    /// sent again is then recognised as written (see [`Store::write`]).
    #[error("database unavailable: {source}")]
    Unavailable {
        /// The adapter's error, saying what was being done.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another instance moved the partition's position since this one read it: it owns the
    /// partition now, and nothing of this write was kept.
    #[error(
        "fenced: the position of {partition} is no longer {expected:?} (another instance took the partition)"
    )]
    Fenced {
        /// The partition.
        partition: TopicPartition,
        /// The position this instance expected.
        expected: Option<i64>,
    },
    /// Retrying cannot help: the database refused (rights, a schema that does not fit, a
    /// constraint), and nothing of this write was kept.
    #[error("database refused: {source}")]
    Refused {
        /// The adapter's error, saying what was being done.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether waiting and writing again can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. } => ErrorKind::Transient,
            StoreError::Fenced { .. } => ErrorKind::Fenced,
            StoreError::Refused { .. } => ErrorKind::Fatal,
        }
    }
}

/// Where rows go, with the positions that say how far the source has been stored.
pub trait Store: Send {
    /// The stored positions of `sources` (absent: never written).
    ///
    /// # Errors
    /// [`StoreError`] if they cannot be read.
    fn positions(
        &mut self,
        sources: &[TopicPartition],
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, i64>, StoreError>> + Send;

    /// Writes `batch` in one transaction: every row and every position, or nothing. A position
    /// that no longer holds its `from` fails the whole write as [`StoreError::Fenced`]. Writing
    /// the same batch again after an error whose outcome was unknown (a connection lost during
    /// the commit) is safe: a batch this instance already committed is reported written, with
    /// zero counts (its rows were counted by no one: the answer that carried them was lost).
    ///
    /// # Errors
    /// [`StoreError`]; nothing of the batch is kept.
    fn write(
        &mut self,
        batch: &StoreBatch,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Housekeeping the store needs now and then (the service calls it at start and hourly):
    /// room made for the rows to come, rows past retention dropped.
    ///
    /// # Errors
    /// [`StoreError`] if the housekeeping failed; the service retries outages.
    fn maintain(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
