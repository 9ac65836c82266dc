//! Narrow handles on the trade log's group consumer, for the parts of app-agg that need one
//! thing from it: [`GroupOffsets`] for the committer, [`LagProbe`] for `/metrics`.
//!
//! [`crate::consumer::KafkaTradeLog`] hands them out. Both share its consumer; neither can read
//! records, seek or change the assignment, so the log stays the only reader of the raw topic.

use std::sync::Arc;
use std::time::Duration;

use ports::Partition;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::KafkaResult;

use crate::group_context::LogContext;

/// How long the lag probe waits for each partition's high watermark.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);

/// The group's offsets as the committer records them: committed directly, or inside a
/// transaction with the group's metadata.
#[derive(Clone)]
pub struct GroupOffsets {
    consumer: Arc<StreamConsumer<LogContext>>,
}

impl std::fmt::Debug for GroupOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupOffsets").finish_non_exhaustive()
    }
}

impl GroupOffsets {
    /// A handle on the log's group consumer.
    pub(crate) fn new(consumer: Arc<StreamConsumer<LogContext>>) -> Self {
        GroupOffsets { consumer }
    }

    /// Commits `offsets` as the group's and waits for the answer (blocking).
    pub(crate) fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        self.consumer.commit(offsets, CommitMode::Sync)
    }

    /// The group's metadata as of now (generation, member), for `send_offsets_to_transaction`;
    /// `None` if the consumer has none.
    pub(crate) fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }
}

/// How far the group's consumer is behind the end of each partition it is assigned.
#[derive(Clone)]
pub struct LagProbe {
    consumer: Arc<StreamConsumer<LogContext>>,
    topic: String,
}

impl std::fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagProbe")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LagProbe {
    /// A handle on the log's group consumer, for lag on `topic`.
    pub(crate) fn new(consumer: Arc<StreamConsumer<LogContext>>, topic: &str) -> Self {
        LagProbe {
            consumer,
            topic: topic.to_owned(),
        }
    }

    /// Lag per assigned partition of the topic: high watermark minus where the group reads
    /// next, at least 0. Before a partition's first record librdkafka has no position yet
    /// (-1001): the group then reads from its committed offset, or from the log start. A
    /// partition whose watermarks the broker does not give within 1 s is left out; if
    /// librdkafka gives no positions, the list is empty. Blocking (it asks the broker): call it
    /// off the async workers.
    pub fn lag(&self) -> Vec<(Partition, i64)> {
        let Ok(positions) = self.consumer.position() else {
            return Vec::new();
        };
        let mut unread: Option<TopicPartitionList> = None;
        positions
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .filter_map(|e| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, e.partition(), WATERMARK_TIMEOUT)
                    .ok()?;
                let next = match e.offset().to_raw() {
                    Some(position) if position >= 0 => position,
                    _ => self.committed(&mut unread, e.partition()).unwrap_or(low),
                };
                Some((e.partition(), (high - next).max(0)))
            })
            .collect()
    }

    /// The group's committed offset of `partition` (asked once per call of [`Self::lag`] for
    /// all partitions), if it has one.
    fn committed(
        &self,
        cache: &mut Option<TopicPartitionList>,
        partition: Partition,
    ) -> Option<i64> {
        if cache.is_none() {
            *cache = Some(
                self.consumer
                    .committed(WATERMARK_TIMEOUT)
                    .unwrap_or_else(|_| TopicPartitionList::new()),
            );
        }
        cache
            .as_ref()?
            .find_partition(&self.topic, partition)?
            .offset()
            .to_raw()
            .filter(|&offset| offset >= 0)
    }
}
