//! [`KafkaTradeSink`]: trades to the raw topic, Avro in Confluent framing.
//!
//! Key = instrument name, record timestamp = trade time, trace context in headers. The
//! producer is idempotent with `acks=all`, so librdkafka's own retries never duplicate. A full
//! local queue is back-pressure: `publish` waits for earlier records to be acknowledged instead
//! of dropping. `publish` resolves only when every record of the batch is acknowledged, and
//! any delivery error reaches the caller. Progress markers (see [`crate::progress`]) go through
//! the same producer, so in each partition a marker follows every trade published before it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ports::{Position, SinkError, StartPositions, TradeBatch, TradeSink};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::future_producer::{DeliveryFuture, OwnedDeliveryResult};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::warn;

use crate::avro::{TRADE_SCHEMA_JSON, decode_trade, encode_trade};
use crate::client_log::{ClientLog, await_metadata};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::framing::{split_frame, start_frame};
use crate::headers;
use crate::progress::{MAX_WRITER_LEN, marker_headers};
use crate::registry::{Registry, value_subject};
use crate::tail::{Start, TailReader};

/// How many records at the end of each partition `last_positions` reads.
pub const DEFAULT_LOOKBACK: i64 = 50_000;

/// Writer id on progress markers unless [`KafkaTradeSink::with_writer`] sets another.
pub const DEFAULT_WRITER: &str = "app-raw";

/// How old the list of partitions markers go to may get before it is read again (partitions
/// added to the topic get markers from then on).
const PARTITIONS_MAX_AGE: Duration = Duration::from_secs(60);

/// The raw-topic producer.
pub struct KafkaTradeSink {
    /// Replaced by a new one when it fails fatally (see [`KafkaTradeSink::replace_if_fatal`]).
    producer: RwLock<FutureProducer<ClientLog>>,
    producer_config: ClientConfig,
    /// The producer's context, to read refusals (e.g. a failed login) while waiting.
    client_log: ClientLog,
    reader: ClientConfig,
    registry: Arc<Registry>,
    topic: String,
    schema_id: u32,
    lookback: i64,
    timeout: Duration,
    /// Id written on progress markers.
    writer: String,
    /// Partitions of the topic, and when they were read: where markers go.
    partitions: Mutex<(Vec<i32>, std::time::Instant)>,
}

impl std::fmt::Debug for KafkaTradeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTradeSink")
            .field("topic", &self.topic)
            .field("schema_id", &self.schema_id)
            .finish_non_exhaustive()
    }
}

impl KafkaTradeSink {
    /// Registers the trade schema under `{topic}-value` and creates the producer.
    ///
    /// # Errors
    /// [`Error::Registry`] if the schema is refused or the registry unreachable,
    /// [`Error::Kafka`] if the producer cannot be created (bad properties).
    pub async fn connect(
        config: &KafkaConfig,
        registry: Arc<Registry>,
        topic: &str,
    ) -> Result<Self> {
        let schema_id = registry
            .register(&value_subject(topic), TRADE_SCHEMA_JSON)
            .await?;
        let client_log = ClientLog::default();
        let mut producer_config = config.producer();
        // Many records are in flight at once: a failure that could leave a hole before later,
        // acknowledged trades must stop the producer instead (it is replaced, and the caller
        // re-sends what the topic's tail does not have), never skip a trade silently.
        producer_config.set("enable.gapless.guarantee", "true");
        let producer: FutureProducer<ClientLog> = producer_config
            .create_with_context(client_log.clone())
            .map_err(|e| Error::Kafka(format!("creating the producer: {e}")))?;
        let sink = KafkaTradeSink {
            producer: RwLock::new(producer),
            producer_config,
            client_log,
            reader: config.reader(),
            registry,
            topic: topic.to_owned(),
            schema_id,
            lookback: DEFAULT_LOOKBACK,
            timeout: Duration::from_secs(30),
            writer: DEFAULT_WRITER.to_owned(),
            partitions: Mutex::new((Vec::new(), std::time::Instant::now())),
        };
        let partitions = sink.await_topic().await?;
        *sink
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (partitions, std::time::Instant::now());
        Ok(sink)
    }

    /// Waits until a broker describes the topic: a refused login or TLS handshake, or a topic
    /// that does not exist, fails at once with the broker's reason; silence fails after the
    /// timeout. Returns the topic's partitions.
    async fn await_topic(&self) -> Result<Vec<i32>> {
        let (producer, log) = (self.current(), self.client_log.clone());
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        let metadata = tokio::task::spawn_blocking(move || {
            await_metadata(producer.client(), || {}, &log, Some(&topic), timeout)
        })
        .await
        .map_err(|e| Error::Kafka(format!("metadata task: {e}")))??;
        match metadata.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().iter().map(|p| p.id()).collect())
            }
            _ => Err(Error::Topic {
                topic: self.topic.clone(),
                reason: "does not exist; create it or set KAFKA_CREATE_TOPICS=true".to_owned(),
            }),
        }
    }

    /// The producer in use.
    fn current(&self) -> FutureProducer<ClientLog> {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A producer that failed fatally (e.g. a sequence error after a broker restart: with the
    /// gapless guarantee librdkafka stops rather than risk a hole) is replaced by a new one, and
    /// the failure becomes retryable: the caller reads the topic's tail back and re-sends only
    /// what is missing, in order, so nothing is lost or doubled. Other errors pass unchanged.
    fn replace_if_fatal(&self, used: &FutureProducer<ClientLog>, error: SinkError) -> SinkError {
        let Some((code, reason)) = used.client().fatal_error() else {
            return error;
        };
        let mut slot = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.client().fatal_error().is_none() {
            // Another call replaced it already.
            return SinkError::Retryable(format!("producer replaced after: {reason}"));
        }
        match self
            .producer_config
            .create_with_context(self.client_log.clone())
        {
            Ok(fresh) => {
                *slot = fresh;
                warn!(error = %reason, code = ?code, "The Kafka producer failed fatally; replaced it. Unacknowledged trades are sent again after reading the topic's tail.");
                SinkError::Retryable(format!("producer replaced after: {reason}"))
            }
            Err(e) => SinkError::Fatal(format!(
                "the producer failed fatally ({reason}) and a new one cannot be created: {e}"
            )),
        }
    }

    /// Enqueues every batch's records in order on `producer`, then awaits their
    /// acknowledgements together: one round trip for the group.
    async fn publish_with(
        &self,
        producer: &FutureProducer<ClientLog>,
        batches: &[TradeBatch],
    ) -> std::result::Result<(), SinkError> {
        let trades = batches.iter().map(|b| b.trades.len()).sum();
        let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(trades);
        let mut buf = Vec::with_capacity(256);
        for batch in batches {
            let headers = headers::inject(batch.trace.as_ref());
            for trade in &batch.trades {
                start_frame(&mut buf, self.schema_id);
                encode_trade(&mut buf, trade).map_err(|e| SinkError::Fatal(e.to_string()))?;
                let mut record = FutureRecord::to(&self.topic)
                    .key(trade.instrument_name.as_str())
                    .payload(buf.as_slice())
                    .timestamp(trade.timestamp)
                    .headers(headers.clone());
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push_back(delivery);
                            break;
                        }
                        Err((
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                            returned,
                        )) => {
                            // Back-pressure, never a drop: wait for room, then enqueue again.
                            record = returned;
                            match pending.pop_front() {
                                Some(oldest) => acknowledged(oldest.await)?,
                                None => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                        Err((e, _)) => return Err(sink_error(&e)),
                    }
                }
            }
        }
        for delivery in pending {
            acknowledged(delivery.await)?;
        }
        Ok(())
    }

    /// The registry id of the schema records are written with.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Signs progress markers with `writer` (one id per app-raw deployment writing the topic).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty id or one longer than [`MAX_WRITER_LEN`] bytes.
    pub fn with_writer(mut self, writer: &str) -> Result<Self> {
        if writer.is_empty() || writer.len() > MAX_WRITER_LEN {
            return Err(Error::Config(format!(
                "the progress writer id must be 1 to {MAX_WRITER_LEN} bytes, got {}",
                writer.len()
            )));
        }
        writer.clone_into(&mut self.writer);
        Ok(self)
    }

    /// The partitions markers go to, read again from the broker once the list is older than
    /// [`PARTITIONS_MAX_AGE`] (the old list stays in use while the broker cannot say).
    async fn marker_partitions(&self, producer: &FutureProducer<ClientLog>) -> Vec<i32> {
        let (known, read_at) = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if read_at.elapsed() < PARTITIONS_MAX_AGE {
            return known;
        }
        let (producer, topic) = (producer.clone(), self.topic.clone());
        let fresh = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == topic)?;
            let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            (!ids.is_empty()).then_some(ids)
        })
        .await
        .ok()
        .flatten();
        let partitions = fresh.unwrap_or(known);
        *self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            (partitions.clone(), std::time::Instant::now());
        partitions
    }

    /// Reads at most `records` records at the end of each partition in `last_positions`.
    #[must_use]
    pub fn with_lookback(mut self, records: i64) -> Self {
        self.lookback = records.max(1);
        self
    }
}

/// Retrying can help unless the broker or configuration says otherwise.
fn sink_error(e: &KafkaError) -> SinkError {
    let fatal = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::UnsupportedVersion
        )
    );
    if fatal {
        SinkError::Fatal(e.to_string())
    } else {
        SinkError::Retryable(e.to_string())
    }
}

fn acknowledged(
    delivery: std::result::Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> std::result::Result<(), SinkError> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _message))) => Err(sink_error(&e)),
        Err(_) => Err(SinkError::Fatal(
            "producer closed before acknowledging".into(),
        )),
    }
}

impl TradeSink for KafkaTradeSink {
    async fn publish(&self, batch: TradeBatch) -> std::result::Result<(), SinkError> {
        self.publish_all(vec![batch]).await
    }

    /// As [`KafkaTradeSink::publish_with`] on the current producer; a producer that failed
    /// fatally is replaced and the error made retryable.
    async fn publish_all(&self, batches: Vec<TradeBatch>) -> std::result::Result<(), SinkError> {
        let producer = self.current();
        let published = self.publish_with(&producer, &batches).await;
        published.map_err(|e| self.replace_if_fatal(&producer, e))
    }

    async fn publish_progress(&self, completeness_ms: i64) -> std::result::Result<(), SinkError> {
        let producer = self.current();
        let partitions = self.marker_partitions(&producer).await;
        let headers = marker_headers(completeness_ms, &self.writer);
        let mut pending = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let record = FutureRecord::<(), ()>::to(&self.topic)
                .partition(partition)
                .timestamp(completeness_ms)
                .headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(self.replace_if_fatal(&producer, sink_error(&e))),
            }
        }
        for delivery in pending {
            acknowledged(delivery.await).map_err(|e| self.replace_if_fatal(&producer, e))?;
        }
        Ok(())
    }

    async fn flush(&self) -> std::result::Result<(), SinkError> {
        let producer = self.current();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| SinkError::Fatal(format!("flush task: {e}")))?
            .map_err(|e| sink_error(&e))
    }

    async fn last_positions(&self) -> std::result::Result<StartPositions, SinkError> {
        let (reader, topic, lookback, timeout) = (
            self.reader.clone(),
            self.topic.clone(),
            self.lookback,
            self.timeout,
        );
        let newest =
            tokio::task::spawn_blocking(move || read_tail(&reader, &topic, lookback, timeout))
                .await
                .map_err(|e| SinkError::Fatal(format!("tail reader task: {e}")))?
                .map_err(|e| SinkError::Retryable(e.to_string()))?;
        let mut positions = StartPositions::new();
        for (instrument, frame) in newest {
            let decoded = match split_frame(&frame) {
                Ok((id, datum)) => match self.registry.schema(id).await {
                    Ok(writer) => decode_trade(id, &writer, datum),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match decoded {
                Ok(trade) => {
                    let position = Position {
                        trade_seq: trade.trade_seq,
                        timestamp: trade.timestamp,
                    };
                    let entry = positions
                        .entry(trade.instrument_name.clone())
                        .or_insert(position);
                    if entry.trade_seq < position.trade_seq {
                        *entry = position;
                    }
                }
                Err(e) => {
                    warn!(instrument = %instrument, error = %e, "Unreadable record at the end of the raw topic; its position is unknown.")
                }
            }
        }
        Ok(positions)
    }
}

/// The newest record per key (and partition) over the last `lookback` records of every partition of `topic`.
fn read_tail(
    config: &ClientConfig,
    topic: &str,
    lookback: i64,
    timeout: Duration,
) -> Result<Vec<(String, Vec<u8>)>> {
    let reader = TailReader::new(config, topic, timeout)?;
    let partitions = reader.partitions()?;
    // Per key and partition (a key spans partitions only after the partition count grew).
    let mut newest: HashMap<(String, i32), (i64, Vec<u8>)> = HashMap::new();
    reader.read(&partitions, Start::Last(lookback), |record| {
        let (partition, offset) = (record.partition(), record.offset());
        if let (Some(key), Some(payload)) = (record.key(), record.payload()) {
            let key = (String::from_utf8_lossy(key).into_owned(), partition);
            // Within a partition a later offset is a later trade of the same instrument.
            if newest.get(&key).is_none_or(|(o, _)| *o < offset) {
                newest.insert(key, (offset, payload.to_vec()));
            }
        }
    })?;
    Ok(newest
        .into_iter()
        .map(|((key, _), (_, frame))| (key, frame))
        .collect())
}
