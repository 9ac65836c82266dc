//! The group consumer's context: what librdkafka's callbacks do. Rebalances are queued as
//! [`GroupChange`]s for the consumer to hand out in order with the records; librdkafka's own
//! reports are forwarded to the log once each ([`crate::client_log`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ports::TopicPartition;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use tracing::{debug, info, warn};

use crate::client_log;

/// A change of the consumer's assignment.
#[derive(Debug, Clone)]
pub(crate) enum GroupChange {
    /// These partitions are now ours.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
}

/// Rebalance events queued by the consumer's callbacks, and the partitions revoked by a
/// callback whose event has not been handed out yet.
#[derive(Default)]
pub(crate) struct RebalanceEvents {
    queue: Mutex<VecDeque<GroupChange>>,
    revoked: Mutex<std::collections::HashSet<TopicPartition>>,
}

impl RebalanceEvents {
    pub(crate) fn push(&self, event: GroupChange) {
        {
            let mut revoked = self
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &event {
                GroupChange::Revoked(list) => revoked.extend(list.iter().cloned()),
                GroupChange::Assigned(list) => {
                    for partition in list {
                        revoked.remove(partition);
                    }
                }
            }
        }
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(event);
    }

    /// Whether a callback revoked `partition` (its `Revoked` event may still be queued): from
    /// that moment another member may own it.
    pub(crate) fn is_revoked(&self, partition: &TopicPartition) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(partition)
    }

    pub(crate) fn pop(&self) -> Option<GroupChange> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }
}

/// Consumer context that records rebalances.
pub(crate) struct LogContext {
    /// Where the rebalance callbacks queue what they saw.
    pub(crate) events: Arc<RebalanceEvents>,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client_log::forward(level, facility, message);
    }

    // Errors reach `next_event` as well, where the service logs them once per outage.
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            debug!(error = %error, reason, "librdkafka error callback.");
        }
    }
}

/// End of partition, whichever way librdkafka reports it (per partition or as a global error).
pub(crate) fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    )
}

impl ConsumerContext for LogContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = topic_partitions(list);
            info!(partitions = %listed(&partitions), "Partitions revoked.");
            self.events.push(GroupChange::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = topic_partitions(list);
                info!(partitions = %listed(&partitions), "Partitions assigned.");
                self.events.push(GroupChange::Assigned(partitions));
            }
            Rebalance::Error(e) => warn!(error = %e, "Rebalance failed."),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn topic_partitions(list: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// `topic/0, topic/1`, for the log.
fn listed(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
