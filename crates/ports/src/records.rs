//! Inbound port: the records of several topics read as one consumer group, decoded into rows,
//! with the position of each (what app-sql stores).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use domain::{Aggregate, Trade};

use crate::error::ErrorKind;
use crate::log::Partition;
use crate::trace::TraceContext;

/// One partition of one source topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: Partition,
}

impl TopicPartition {
    /// `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: Partition) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// What a record holds for the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A raw trade.
    Trade(Trade),
    /// A bar (aggregate) of either schema version.
    Bar(Aggregate),
    /// Nothing to store, but a position to move past: a progress marker, or a record the
    /// source counted and logged as unreadable.
    Nothing,
}

/// A record and where it sits.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its partition.
    pub source: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// What it holds.
    pub row: Row,
    /// Trace context found on the record, if any.
    pub trace: Option<TraceContext>,
}

/// What the source hands out next.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// These partitions are now ours; none of their records comes before this event.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
    /// Records in log order per partition.
    Records(Vec<SourceRecord>),
}

/// Where a partition is to be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// From this offset (the next record to read).
    Offset(i64),
    /// From the first record the log still has.
    Beginning,
}

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The broker cannot be reached or answered with a transient error.
    #[error("reading {what}: {source}")]
    Unavailable {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The source cannot be read without a person (credentials, authorisation, configuration).
    #[error("reading {what}: {source}")]
    Refused {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SourceError {
    /// Whether waiting and trying again can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Unavailable { .. } => ErrorKind::Transient,
            SourceError::Refused { .. } => ErrorKind::Fatal,
        }
    }
}

/// Records of the source topics, read as a consumer group.
pub trait RecordSource: Send {
    /// The next event; waits until there is one. Cancel-safe: a dropped call loses nothing.
    ///
    /// # Errors
    /// [`SourceError`] if the topics cannot be read.
    fn next_event(&mut self) -> impl Future<Output = Result<SourceEvent, SourceError>> + Send;

    /// Whether `source` was taken from this member by a rebalance whose `Revoked` event may
    /// not have been handed out yet: from then on another member may own it, so nothing more
    /// of it is to be written here.
    fn is_revoked(&self, source: &TopicPartition) -> bool;

    /// Continues `source` from `start`; records of it not yet handed out are dropped.
    ///
    /// # Errors
    /// [`SourceError`] if the seek fails.
    fn seek(&mut self, source: &TopicPartition, start: StartAt) -> Result<(), SourceError>;
}
