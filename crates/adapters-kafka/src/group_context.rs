//! The group consumer's context: what librdkafka's callbacks do. Rebalances are queued as
//! [`LogEvent`]s for the trade log to hand out in order with the records; librdkafka's own
//! reports are forwarded to the log once each ([`crate::client_log`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ports::{LogEvent, Partition};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use tracing::{debug, info, warn};

use crate::client_log;

/// Rebalance events queued by the consumer's callbacks.
#[derive(Default)]
pub(crate) struct RebalanceEvents {
    queue: Mutex<VecDeque<LogEvent>>,
}

impl RebalanceEvents {
    pub(crate) fn push(&self, event: LogEvent) {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(event);
    }

    pub(crate) fn pop(&self) -> Option<LogEvent> {
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
            let partitions: Vec<Partition> =
                list.elements().iter().map(|e| e.partition()).collect();
            info!(?partitions, "Partitions revoked.");
            self.events.push(LogEvent::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: Vec<Partition> =
                    list.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "Partitions assigned.");
                self.events.push(LogEvent::Assigned(partitions));
            }
            Rebalance::Error(e) => warn!(error = %e, "Rebalance failed."),
            Rebalance::Revoke(_) => {}
        }
    }
}
