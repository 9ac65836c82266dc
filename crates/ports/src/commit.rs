//! Outbound port: aggregates, state and source positions, committed together.

use std::collections::BTreeMap;
use std::future::Future;

use domain::{Aggregate, InstrumentSnapshot, PartitionSnapshot, Trade, WriterProgress};

use crate::log::Partition;
use crate::trace::TraceContext;

/// Progress of one source partition at the end of a commit cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMarker {
    /// Source partition.
    pub partition: Partition,
    /// Next offset to read after a restart.
    pub next_offset: i64,
    /// The partition's watermark.
    pub watermark: Option<i64>,
    /// The last completeness time of each writer of progress markers on the partition.
    pub writers: Vec<WriterProgress>,
}

/// A trade that arrived after its window closed: kept for an operator, never dropped in silence.
#[derive(Debug, Clone, PartialEq)]
pub struct LateTrade {
    /// Source partition.
    pub partition: Partition,
    /// Source offset.
    pub offset: i64,
    /// The trade.
    pub trade: Trade,
    /// Why it is late (its window and the watermark that closed it).
    pub reason: String,
}

/// Everything one commit cycle makes durable, in the order it is written.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    /// Closed-window aggregates, in emission order.
    pub aggregates: Vec<Aggregate>,
    /// State of every instrument changed since the last cycle, with its source partition.
    pub states: Vec<(Partition, InstrumentSnapshot)>,
    /// Trades that came after their window closed, for the late-trades topic.
    pub late: Vec<LateTrade>,
    /// One marker per partition that made progress.
    pub markers: Vec<PartitionMarker>,
    /// Trace contexts of (some of) the consumed records, to link the commit span to.
    pub links: Vec<TraceContext>,
}

/// A partition's state as restored from the changelog.
#[derive(Debug, Clone)]
pub struct RestoredPartition {
    /// Instrument states and the marker's watermark.
    pub snapshot: PartitionSnapshot,
    /// Where to resume reading the source partition, if a marker exists.
    pub next_offset: Option<i64>,
}

/// Errors from committing or restoring.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Nothing of the cycle is visible to `read_committed` readers (transaction aborted); the
    /// caller restores state and rewinds to the last commit.
    #[error("commit aborted, rewind to the last commit: {0}")]
    Aborted(String),
    /// The committer cannot go on (misconfigured, broker refused); the process should restart.
    #[error("commit failed fatally: {0}")]
    Fatal(String),
    /// Another instance with the same transactional id took over (it fenced this one): this
    /// instance must stop, and restarting it would only fence the other.
    #[error("fenced: another instance with this transactional id took over ({0})")]
    Fenced(String),
}

/// Makes aggregator output and state durable.
pub trait AggregateCommitter: Send {
    /// Writes one cycle: late trades and aggregates, then states, then markers, then group
    /// offsets.
    ///
    /// # Errors
    /// [`CommitError`] if the cycle did not complete.
    fn commit(
        &mut self,
        batch: CommitBatch,
    ) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Reads back the state of `partitions` as of their last completed cycle, all in one go
    /// (a restart restores every assigned partition: one read of the changelog, not one each).
    /// The map has an entry for each of `partitions` (an empty state for one never committed).
    ///
    /// # Errors
    /// [`CommitError`] if the changelog cannot be read.
    fn restore(
        &mut self,
        partitions: &[Partition],
    ) -> impl Future<Output = Result<BTreeMap<Partition, RestoredPartition>, CommitError>> + Send;
}
