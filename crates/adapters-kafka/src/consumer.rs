//! [`KafkaTradeLog`]: the raw topic read as a consumer group, as a `TradeLog`.
//!
//! Cooperative-sticky assignment, no auto-commit. Rebalance callbacks queue `Assigned` /
//! `Revoked` events, and `next_event` hands queued events out before any record, so the app
//! sees a partition's assignment (and can restore its state and seek) before any of its trades.
//! A progress marker (no value, see [`crate::progress`]) is handed out as its own event, between
//! the trades before and after it. A record that cannot be decoded (a marker with unreadable
//! headers included) goes to `{topic}.dlq` with its key, value and headers, plus
//! headers saying why and where it came from; it is acknowledged there before the consumer
//! moves on, so nothing is lost and nothing blocks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ports::{LogError, LogEvent, LoggedProgress, LoggedTrade, Partition, TradeLog};
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::client_log::ClientLog;
use crate::config::KafkaConfig;
use crate::decoder::ValueDecoder;
use crate::error::{Error, Result};
use crate::group::{GroupOffsets, LagProbe};
use crate::group_context::{GroupChange, LogContext, RebalanceEvents};
use crate::headers;
use crate::progress::{MarkerHeaders, read_marker};
use crate::registry::Registry;
use crate::weather;

/// Header on a dead-lettered record: why it could not be used.
pub const DLQ_ERROR: &str = "dlq.error";
/// Header on a dead-lettered record: its source topic.
pub const DLQ_TOPIC: &str = "dlq.source.topic";
/// Header on a dead-lettered record: its source partition.
pub const DLQ_PARTITION: &str = "dlq.source.partition";
/// Header on a dead-lettered record: its source offset.
pub const DLQ_OFFSET: &str = "dlq.source.offset";

/// Records handed out per `Trades` event at most.
const MAX_BATCH: usize = 1000;

/// A decoded record waiting to be handed out.
#[derive(Debug)]
enum Decoded {
    Trade(LoggedTrade),
    Progress(LoggedProgress),
}

impl Decoded {
    fn partition(&self) -> Partition {
        match self {
            Decoded::Trade(t) => t.partition,
            Decoded::Progress(p) => p.partition,
        }
    }
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Settings of the trade log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Topic to read.
    pub topic: String,
    /// Consumer group.
    pub group_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `group.instance.id`, for static membership: an instance restarted under the same id
    /// takes its partitions back at once, instead of waiting for its old session to expire.
    /// Only for ids that one live instance holds at a time (a newer holder fences the older).
    pub instance_id: Option<String>,
}

/// The raw topic as a [`TradeLog`].
pub struct KafkaTradeLog {
    consumer: Arc<StreamConsumer<LogContext>>,
    events: Arc<RebalanceEvents>,
    dlq: FutureProducer<ClientLog>,
    topic: String,
    dlq_topic: String,
    caught_up: HashSet<Partition>,
    dead_lettered: Arc<AtomicU64>,
    /// Decoded records not yet handed out (an event came first, or the batch is full).
    stash: VecDeque<Decoded>,
    /// Fetched records not yet decoded: kept here across awaits so that a cancelled
    /// `next_event` loses none of them.
    fetched: VecDeque<OwnedMessage>,
    decoder: ValueDecoder,
    /// Joined with a `group.instance.id` (see the `Drop` impl).
    static_member: bool,
}

/// A static member is not closed on drop. Closing would not leave the group (static members
/// keep their place until their session expires; that is the point), and one that a newer copy
/// has fenced, which the consumer may learn only while closing, makes rdkafka's drop report the
/// refusal at ERROR after the service has already said it was fenced. The log is dropped only
/// when the service stops, just before the process exits.
impl Drop for KafkaTradeLog {
    fn drop(&mut self) {
        if self.static_member {
            std::mem::forget(Arc::clone(&self.consumer));
        }
    }
}

impl std::fmt::Debug for KafkaTradeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTradeLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaTradeLog {
    /// Joins the group and subscribes.
    ///
    /// # Errors
    /// [`Error::Kafka`] if the consumer, the DLQ producer or the subscription cannot be set up.
    pub fn connect(config: &KafkaConfig, registry: Arc<Registry>, log: &LogConfig) -> Result<Self> {
        let events = Arc::new(RebalanceEvents::default());
        let client = config.group_consumer(
            &log.group_id,
            log.session_timeout,
            log.instance_id.as_deref(),
        );
        let consumer: StreamConsumer<LogContext> = client
            .create_with_context(LogContext {
                events: Arc::clone(&events),
            })
            .map_err(|e| Error::Kafka(format!("creating the consumer: {e}")))?;
        consumer
            .subscribe(&[&log.topic])
            .map_err(|e| Error::Kafka(format!("subscribing to {}: {e}", log.topic)))?;
        let dlq: FutureProducer<ClientLog> = config
            .producer()
            .create_with_context(ClientLog::default())
            .map_err(|e| Error::Kafka(format!("creating the DLQ producer: {e}")))?;
        Ok(KafkaTradeLog {
            consumer: Arc::new(consumer),
            events,
            dlq,
            topic: log.topic.clone(),
            dlq_topic: dlq_topic(&log.topic),
            caught_up: HashSet::new(),
            dead_lettered: Arc::new(AtomicU64::new(0)),
            stash: VecDeque::new(),
            fetched: VecDeque::new(),
            decoder: ValueDecoder::new(registry),
            static_member: log.instance_id.is_some(),
        })
    }

    /// Records sent to the dead-letter topic so far.
    pub fn dead_lettered(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dead_lettered)
    }

    /// What the committer needs of the group: committing its offsets, its metadata.
    pub fn group_offsets(&self) -> GroupOffsets {
        GroupOffsets::new(Arc::clone(&self.consumer))
    }

    /// The consumer's lag per assigned partition, for `/metrics`.
    pub fn lag_probe(&self) -> LagProbe {
        LagProbe::new(Arc::clone(&self.consumer), &self.topic)
    }

    async fn decode(&self, message: &OwnedMessage) -> Result<Decoded> {
        let Some(payload) = message.payload() else {
            return match read_marker(message.headers()) {
                MarkerHeaders::Marker {
                    writer,
                    completeness_ms,
                } => Ok(Decoded::Progress(LoggedProgress {
                    partition: message.partition(),
                    offset: message.offset(),
                    writer,
                    completeness_ms,
                })),
                MarkerHeaders::Absent => Err(Error::Framing(
                    "record without a value that is not a progress marker".into(),
                )),
                MarkerHeaders::Malformed(why) => {
                    Err(Error::Framing(format!("unreadable progress marker: {why}")))
                }
            };
        };
        let trade = self.decoder.trade(payload).await?;
        Ok(Decoded::Trade(LoggedTrade {
            partition: message.partition(),
            offset: message.offset(),
            trade,
            trace: message.headers().and_then(headers::extract),
        }))
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        error: &Error,
    ) -> std::result::Result<(), LogError> {
        warn!(partition = message.partition(), offset = message.offset(), error = %error, "Record sent to the dead-letter topic.");
        let reason = error.to_string();
        let (partition, offset) = (
            message.partition().to_string(),
            message.offset().to_string(),
        );
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        for (key, value) in [
            (DLQ_ERROR, reason.as_str()),
            (DLQ_TOPIC, self.topic.as_str()),
            (DLQ_PARTITION, &partition),
            (DLQ_OFFSET, &offset),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.dlq_topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        self.dlq
            .send(record, rdkafka::util::Timeout::Never)
            .await
            .map_err(|(e, _)| {
                LogError::Retryable(format!("dead-lettering to {}: {e}", self.dlq_topic))
            })?;
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl KafkaTradeLog {
    /// Books one receive without awaiting: a record into `fetched`, an EOF into the caught-up
    /// set.
    fn accept(
        &mut self,
        received: std::result::Result<OwnedMessage, KafkaError>,
    ) -> std::result::Result<(), LogError> {
        match received {
            Ok(message) => {
                self.caught_up.remove(&message.partition());
                self.fetched.push_back(message);
                Ok(())
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                self.caught_up.insert(partition);
                Ok(())
            }
            Err(e) if self.fenced_out(&e) => Err(LogError::Fenced(e.to_string())),
            Err(e) if weather::needs_operator(&e) => Err(LogError::Fatal(e.to_string())),
            Err(e) => Err(LogError::Retryable(e.to_string())),
        }
    }

    /// Whether `error` means a newer instance with our `group.instance.id` took our place
    /// (librdkafka raises it as a fatal error whose cause it keeps).
    fn fenced_out(&self, error: &KafkaError) -> bool {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::FencedInstanceId) => true,
            Some(RDKafkaErrorCode::Fatal) => self
                .consumer
                .client()
                .fatal_error()
                .is_some_and(|(code, _)| code == RDKafkaErrorCode::FencedInstanceId),
            _ => false,
        }
    }

    /// Decodes fetched records in order into the stash (undecodable ones to the DLQ). A record
    /// leaves `fetched` only once it is booked, so cancellation at an await repeats, never
    /// skips (a repeated DLQ write is possible; a lost trade is not).
    async fn decode_fetched(&mut self) -> std::result::Result<(), LogError> {
        while let Some(message) = self.fetched.front() {
            match self.decode(message).await {
                Ok(decoded) => self.stash.push_back(decoded),
                Err(e) => {
                    let message = message.clone();
                    self.dead_letter(&message, &e).await?;
                }
            }
            self.fetched.pop_front();
        }
        Ok(())
    }
}

impl KafkaTradeLog {
    /// The stash's next event: a marker alone, or the trades up to the next marker.
    fn next_from_stash(&mut self) -> Option<LogEvent> {
        if let Some(Decoded::Progress(_)) = self.stash.front() {
            return match self.stash.pop_front() {
                Some(Decoded::Progress(p)) => Some(LogEvent::Progress(p)),
                _ => None,
            };
        }
        let trades = self
            .stash
            .iter()
            .take_while(|d| matches!(d, Decoded::Trade(_)))
            .count();
        if trades == 0 {
            return None;
        }
        Some(LogEvent::Trades(
            self.stash
                .drain(..trades)
                .filter_map(|d| match d {
                    Decoded::Trade(t) => Some(t),
                    Decoded::Progress(_) => None,
                })
                .collect(),
        ))
    }
}

impl TradeLog for KafkaTradeLog {
    async fn next_event(&mut self) -> std::result::Result<LogEvent, LogError> {
        loop {
            if let Some(change) = self.events.pop() {
                let event = match change {
                    GroupChange::Assigned(list) => {
                        LogEvent::Assigned(list.iter().map(|tp| tp.partition).collect())
                    }
                    GroupChange::Revoked(list) => {
                        LogEvent::Revoked(list.iter().map(|tp| tp.partition).collect())
                    }
                };
                if let LogEvent::Revoked(partitions) = &event {
                    for p in partitions {
                        self.caught_up.remove(p);
                    }
                    self.stash.retain(|d| !partitions.contains(&d.partition()));
                    self.fetched
                        .retain(|m| !partitions.contains(&m.partition()));
                }
                return Ok(event);
            }
            if let Some(event) = self.next_from_stash() {
                return Ok(event);
            }
            if self.fetched.is_empty() {
                // `recv` is cancel-safe: a message is taken only when the future completes.
                let received = self.consumer.recv().await.map(|m| m.detach());
                self.accept(received)?;
                // Take whatever else is already fetched, without waiting.
                while self.fetched.len() < MAX_BATCH {
                    let Some(received) = self.consumer.recv().now_or_never() else {
                        break;
                    };
                    self.accept(received.map(|m| m.detach()))?;
                }
            }
            self.decode_fetched().await?;
        }
    }

    fn caught_up(&self, partition: Partition) -> bool {
        self.caught_up.contains(&partition)
    }

    fn seek(&mut self, partition: Partition, offset: i64) -> std::result::Result<(), LogError> {
        self.stash.retain(|d| d.partition() != partition);
        self.fetched.retain(|m| m.partition() != partition);
        self.caught_up.remove(&partition);
        self.consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(|e| {
                LogError::Retryable(format!(
                    "seeking {}/{partition} to {offset}: {e}",
                    self.topic
                ))
            })
    }
}

/// Positions of a set of logged trades: the next offset to read per partition.
pub fn next_offsets(trades: &[LoggedTrade]) -> HashMap<Partition, i64> {
    let mut next = HashMap::new();
    for t in trades {
        let entry = next.entry(t.partition).or_insert(t.offset + 1);
        *entry = (*entry).max(t.offset + 1);
    }
    next
}
