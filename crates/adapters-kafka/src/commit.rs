//! [`KafkaCommitter`]: app-agg's commit cycle, and restoring the assigned partitions' state.
//!
//! One cycle writes, in order: (a) the trades that came after their window closed to the
//! late-trades topic (Avro in the raw topic's schema, with the reason and source position in
//! headers) and the closed-window aggregates to the aggregates topic (Avro, key = instrument),
//! and waits for their acks; (b) the state of every changed instrument to the
//! compacted changelog, key = instrument, in the partition number of its source partition;
//! (c) one marker per source partition with the next offset, the watermark and each progress
//! writer's completeness, in the same
//! changelog partition; (d) the consumer group offsets. So state is never ahead of durable
//! aggregates, and an instrument state ahead of its marker is harmless: its replayed trades are
//! duplicates by `trade_seq`. With transactions the whole cycle is one Kafka transaction that
//! includes the offsets (`send_offsets_to_transaction`), and `read_committed` readers see each
//! aggregate exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use ports::{AggregateCommitter, CommitBatch, CommitError, Partition, RestoredPartition};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::avro::{AGGREGATE_SCHEMA_JSON, TRADE_SCHEMA_JSON, encode_aggregate, encode_trade};
pub use crate::changelog::MARKER_KEY;
use crate::changelog::{self, Marker};
use crate::client_log::ClientLog;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::framing::start_frame;
use crate::group::GroupOffsets;
use crate::registry::{Registry, value_subject};
use crate::weather;

/// Changelog key of the start-up transaction probe (a tombstone, compacted away).
const PROBE_KEY: &str = "\u{0}probe";

/// Header on a late trade: why it is late.
pub const LATE_REASON: &str = "late.reason";
/// Header on a late trade: its source partition.
pub const LATE_PARTITION: &str = "late.source.partition";
/// Header on a late trade: its source offset.
pub const LATE_OFFSET: &str = "late.source.offset";

/// The late-trades topic of the raw topic `topic`.
pub fn late_topic(topic: &str) -> String {
    format!("{topic}.late")
}

/// Topics and mode of the committer.
#[derive(Debug, Clone)]
pub struct CommitConfig {
    /// Where aggregates go.
    pub aggregates_topic: String,
    /// The compacted state changelog (as many partitions as the source topic).
    pub changelog_topic: String,
    /// The source (raw) topic, for the group offsets.
    pub source_topic: String,
    /// Where trades that came after their window closed are copied.
    pub late_topic: String,
    /// `Some(id)`: one Kafka transaction per cycle with this `transactional.id`.
    pub transactional_id: Option<String>,
    /// Deadline of each blocking Kafka call.
    pub timeout: Duration,
}

/// The commit port over Kafka.
pub struct KafkaCommitter {
    producer: FutureProducer<ClientLog>,
    /// The trade log's group: where the source offsets are committed.
    group: GroupOffsets,
    reader: ClientConfig,
    config: CommitConfig,
    schema_id: u32,
    late_schema_id: u32,
}

impl std::fmt::Debug for KafkaCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCommitter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn kafka(what: &str, e: &KafkaError) -> Error {
    Error::Kafka(format!("{what}: {e}"))
}

impl KafkaCommitter {
    /// Registers the aggregate schema, creates the producer and, with transactions, initialises
    /// them (fencing any earlier instance with the same `transactional.id`). `group` is the trade
    /// log's ([`crate::consumer::KafkaTradeLog::group_offsets`]): each cycle commits the source
    /// offsets there.
    ///
    /// # Errors
    /// [`Error::Registry`] for the schema; [`Error::Kafka`] if the producer cannot be created or
    /// the broker does not support transactions (the message says to turn them off).
    pub async fn connect(
        config: &KafkaConfig,
        registry: &Registry,
        group: GroupOffsets,
        commit: CommitConfig,
    ) -> Result<Self> {
        let schema_id = registry
            .register(
                &value_subject(&commit.aggregates_topic),
                AGGREGATE_SCHEMA_JSON,
            )
            .await?;
        let late_schema_id = registry
            .register(&value_subject(&commit.late_topic), TRADE_SCHEMA_JSON)
            .await?;
        let mut producer_config = config.producer();
        if let Some(id) = &commit.transactional_id {
            producer_config.set("transactional.id", id);
        }
        let producer: FutureProducer<ClientLog> = producer_config
            .create_with_context(ClientLog::default())
            .map_err(|e| kafka("creating the producer", &e))?;
        if commit.transactional_id.is_some() {
            // Some brokers accept InitProducerId but not EndTxn (Tansu, some proxies): commit one probe
            // transaction now, so a broker without transactions fails at start, not mid-stream.
            let (p, timeout, topic) = (
                producer.clone(),
                commit.timeout,
                commit.changelog_topic.clone(),
            );
            tokio::task::spawn_blocking(move || {
                p.init_transactions(timeout)?;
                p.begin_transaction()?;
                p.send_result(
                    FutureRecord::<str, [u8]>::to(&topic)
                        .key(PROBE_KEY)
                        .partition(0),
                )
                .map_err(|(e, _)| e)?;
                p.commit_transaction(timeout)
            })
            .await
            .map_err(|e| Error::Kafka(format!("transaction probe task: {e}")))?
            .map_err(|e| {
                Error::Kafka(format!(
                    "the broker does not support Kafka transactions ({e}); brokers without them \
                     (e.g. Tansu) need transactions turned off"
                ))
            })?;
            info!("Kafka transactions initialised and verified.");
        }
        Ok(KafkaCommitter {
            producer,
            group,
            reader: config.reader(),
            config: commit,
            schema_id,
            late_schema_id,
        })
    }

    fn transactional(&self) -> bool {
        self.config.transactional_id.is_some()
    }

    fn send(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        partition: Option<Partition>,
    ) -> std::result::Result<DeliveryFuture, CommitError> {
        let mut record = FutureRecord::to(topic).key(key).payload(value);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        // The queue is sized for a cycle; a full queue here is a failed cycle, retried as a whole.
        self.producer
            .send_result(record)
            .map_err(|(e, _)| CommitError::Aborted(format!("producing to {topic}: {e}")))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(FutureProducer<ClientLog>, Duration) -> std::result::Result<T, KafkaError>
        + Send
        + 'static,
    ) -> std::result::Result<T, KafkaError> {
        let (producer, timeout) = (self.producer.clone(), self.config.timeout);
        tokio::task::spawn_blocking(move || call(producer, timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    async fn write_cycle(
        &self,
        batch: &CommitBatch,
    ) -> std::result::Result<TopicPartitionList, CommitError> {
        let mut buf = Vec::with_capacity(512);
        let mut pending = Vec::new();
        for late in &batch.late {
            start_frame(&mut buf, self.late_schema_id);
            encode_trade(&mut buf, &late.trade).map_err(|e| CommitError::Fatal(e.to_string()))?;
            let (partition, offset) = (late.partition.to_string(), late.offset.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: LATE_REASON,
                    value: Some(late.reason.as_str()),
                })
                .insert(Header {
                    key: LATE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: LATE_OFFSET,
                    value: Some(offset.as_str()),
                });
            let record = FutureRecord::to(&self.config.late_topic)
                .key(late.trade.instrument_name.as_str())
                .payload(buf.as_slice())
                .timestamp(late.trade.timestamp)
                .headers(headers);
            pending.push(self.producer.send_result(record).map_err(|(e, _)| {
                CommitError::Aborted(format!("producing to {}: {e}", self.config.late_topic))
            })?);
        }
        for aggregate in &batch.aggregates {
            start_frame(&mut buf, self.schema_id);
            encode_aggregate(&mut buf, aggregate).map_err(|e| CommitError::Fatal(e.to_string()))?;
            pending.push(self.send(
                &self.config.aggregates_topic,
                &aggregate.instrument_name,
                &buf,
                None,
            )?);
            if pending.len() == IN_FLIGHT_PER_CYCLE {
                await_all(std::mem::take(&mut pending), "aggregates").await?;
            }
        }
        await_all(pending, "aggregates").await?;
        let mut pending = Vec::new();
        for (partition, state) in &batch.states {
            let value = serde_json::to_vec(state)
                .map_err(|e| CommitError::Fatal(format!("encoding state: {e}")))?;
            pending.push(self.send(
                &self.config.changelog_topic,
                &state.instrument_name,
                &value,
                Some(*partition),
            )?);
            if pending.len() == IN_FLIGHT_PER_CYCLE {
                await_all(std::mem::take(&mut pending), "states").await?;
            }
        }
        await_all(pending, "states").await?;
        let mut pending = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for m in &batch.markers {
            let marker = Marker {
                next_offset: m.next_offset,
                watermark: m.watermark,
                writers: m.writers.clone(),
            };
            let value = serde_json::to_vec(&marker)
                .map_err(|e| CommitError::Fatal(format!("encoding marker: {e}")))?;
            pending.push(self.send(
                &self.config.changelog_topic,
                MARKER_KEY,
                &value,
                Some(m.partition),
            )?);
            offsets
                .add_partition_offset(
                    &self.config.source_topic,
                    m.partition,
                    Offset::Offset(m.next_offset),
                )
                .map_err(|e| CommitError::Fatal(format!("offset list: {e}")))?;
        }
        await_all(pending, "markers").await?;
        Ok(offsets)
    }

    fn transaction_error(what: &str, e: &KafkaError) -> CommitError {
        let fatal = matches!(e, KafkaError::Transaction(t) if t.is_fatal());
        if fatal {
            CommitError::Fatal(format!("{what}: {e}"))
        } else {
            CommitError::Aborted(format!("{what}: {e}"))
        }
    }
}

/// Tries of `commit_transaction` while it times out retriably (each waits the commit timeout).
const COMMIT_ATTEMPTS: u32 = 12;

/// Records of one cycle in the producer's queue at once, at most: a window boundary closes a
/// window for every instrument, and queueing all of them (plus as many states) at once made
/// resident memory jump by tens of MiB. Order is unaffected: the next chunk is sent after the
/// previous one is acknowledged, all inside the cycle.
const IN_FLIGHT_PER_CYCLE: usize = 2_000;

async fn await_all(
    pending: Vec<DeliveryFuture>,
    what: &str,
) -> std::result::Result<(), CommitError> {
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(CommitError::Aborted(format!("writing {what}: {e}"))),
            Err(_) => {
                return Err(CommitError::Fatal(format!(
                    "producer closed while writing {what}"
                )));
            }
        }
    }
    Ok(())
}

impl KafkaCommitter {
    /// One cycle, as [`AggregateCommitter::commit`] describes it (errors not yet classified).
    async fn commit_cycle(&mut self, batch: CommitBatch) -> std::result::Result<(), CommitError> {
        if batch.aggregates.is_empty()
            && batch.states.is_empty()
            && batch.markers.is_empty()
            && batch.late.is_empty()
        {
            return Ok(());
        }
        if !self.transactional() {
            let offsets = self.write_cycle(&batch).await?;
            if offsets.count() > 0 {
                let group = self.group.clone();
                let committed = tokio::task::spawn_blocking(move || group.commit(&offsets)).await;
                // Markers are the truth; group offsets only feed lag tools, so a failure is a warning.
                match committed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "Committing group offsets failed; lag tools may lag.")
                    }
                    Err(e) => {
                        warn!(error = %e, "Committing group offsets failed; lag tools may lag.")
                    }
                }
            }
            return Ok(());
        }
        self.blocking(|p, _| p.begin_transaction())
            .await
            .map_err(|e| Self::transaction_error("begin", &e))?;
        let offsets = match self.write_cycle(&batch).await {
            Ok(offsets) => offsets,
            Err(e) => {
                let _ = self.blocking(|p, t| p.abort_transaction(t)).await;
                return Err(e);
            }
        };
        let metadata = self
            .group
            .metadata()
            .ok_or_else(|| CommitError::Fatal("consumer has no group metadata".into()))?;
        let result = self
            .blocking(move |p, t| {
                p.send_offsets_to_transaction(&offsets, &metadata, t)?;
                // A commit that timed out (broker unreachable) may still land: librdkafka
                // asks for the same call again, not an abort.
                let mut attempts = 1;
                loop {
                    match p.commit_transaction(t) {
                        Err(KafkaError::Transaction(e))
                            if e.is_retriable() && attempts < COMMIT_ATTEMPTS =>
                        {
                            attempts += 1;
                        }
                        other => return other,
                    }
                }
            })
            .await;
        if let Err(e) = result {
            let error = Self::transaction_error("commit", &e);
            if matches!(error, CommitError::Aborted(_)) {
                let _ = self.blocking(|p, t| p.abort_transaction(t)).await;
            }
            return Err(error);
        }
        Ok(())
    }

    /// A fatal producer error is the truth behind whatever a call returned: fenced (another
    /// instance took the transactional id over) or fatal, never a cycle to retry.
    fn behind(&self, error: CommitError) -> CommitError {
        match self.producer.client().fatal_error() {
            Some((code, reason)) if weather::is_fencing(code) => CommitError::Fenced(reason),
            Some((code, reason)) => CommitError::Fatal(format!("{code:?}: {reason}")),
            None => error,
        }
    }
}

impl AggregateCommitter for KafkaCommitter {
    async fn commit(&mut self, batch: CommitBatch) -> std::result::Result<(), CommitError> {
        let outcome = self.commit_cycle(batch).await;
        outcome.map_err(|e| self.behind(e))
    }

    async fn restore(
        &mut self,
        partitions: &[Partition],
    ) -> std::result::Result<BTreeMap<Partition, RestoredPartition>, CommitError> {
        let (reader, topic, timeout) = (
            self.reader.clone(),
            self.config.changelog_topic.clone(),
            self.config.timeout,
        );
        let partitions = partitions.to_vec();
        tokio::task::spawn_blocking(move || {
            changelog::restore(&reader, &topic, &partitions, timeout)
        })
        .await
        .map_err(|e| CommitError::Fatal(format!("restore task: {e}")))?
    }
}
