//! [`KafkaRecordSource`]: the raw topic and the aggregates topic read as one consumer group,
//! `read_committed`, as a [`RecordSource`] of rows (app-sql's input).
//!
//! Where each partition is read from is the caller's to say: the source hands out `Assigned`
//! before any record of a partition, and the caller seeks it to the position its store holds
//! (the group's own offsets are never committed by this consumer). A progress marker is a
//! [`Row::Nothing`] (its position still counts); a record that cannot be decoded is counted,
//! logged with its topic, partition and offset, and handed out as [`Row::Nothing`] too, so it
//! never blocks the partition and is never skipped in silence. A registry that cannot answer is
//! no property of the record: its error is the source's (the record stays first in line), and
//! the schema's fetch goes on in a task of its own, so a caller that drops `next_event` (a
//! timer won the race) does not restart it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ports::{RecordSource, Row, SourceError, SourceEvent, SourceRecord, StartAt, TopicPartition};
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use tracing::warn;

use crate::config::KafkaConfig;
use crate::decoder::ValueDecoder;
use crate::error::{Error, Result};
use crate::framing::split_frame;
use crate::group::LagProbe;
use crate::group_context::{GroupChange, LogContext, RebalanceEvents, is_partition_eof};
use crate::headers;
use crate::progress::{MarkerHeaders, read_marker};
use crate::registry::Registry;
use crate::weather;

/// Records handed out per `Records` event at most.
const MAX_BATCH: usize = 2000;

/// What the source reads.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The raw topic, if trades are wanted.
    pub trades_topic: Option<String>,
    /// The aggregates topic, if bars are wanted.
    pub bars_topic: Option<String>,
    /// Consumer group.
    pub group_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
}

/// The raw and aggregates topics as a [`RecordSource`].
pub struct KafkaRecordSource {
    consumer: Arc<StreamConsumer<LogContext>>,
    events: Arc<RebalanceEvents>,
    decoder: ValueDecoder,
    trades_topic: Option<Arc<str>>,
    bars_topic: Option<Arc<str>>,
    /// Fetched records not yet decoded: kept across awaits, so a cancelled call loses none.
    fetched: VecDeque<OwnedMessage>,
    /// Records decoded and not yet handed out.
    decoded: Vec<SourceRecord>,
    unreadable: Arc<AtomicU64>,
    registry: Arc<Registry>,
    /// Writer schemas being fetched, by id (kept across cancelled calls).
    fetching: HashMap<u32, tokio::task::JoinHandle<Result<()>>>,
    /// After a registry failure, decoding waits until then (no busy retry).
    registry_pause_until: Option<tokio::time::Instant>,
}

/// How long decoding waits after the registry failed before it asks again.
const REGISTRY_PAUSE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for KafkaRecordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRecordSource")
            .field("trades_topic", &self.trades_topic)
            .field("bars_topic", &self.bars_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaRecordSource {
    /// Joins the group and subscribes to the configured topics.
    ///
    /// # Errors
    /// [`Error::Config`] when no topic is configured, [`Error::Kafka`] if the consumer cannot be
    /// created or subscribed.
    pub fn connect(
        config: &KafkaConfig,
        registry: Arc<Registry>,
        source: &SourceConfig,
    ) -> Result<Self> {
        let topics: Vec<&str> = [&source.trades_topic, &source.bars_topic]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if topics.is_empty() {
            return Err(Error::Config("no topic to read".into()));
        }
        let events = Arc::new(RebalanceEvents::default());
        let consumer: StreamConsumer<LogContext> = config
            .group_consumer(&source.group_id, source.session_timeout, None)
            .create_with_context(LogContext {
                events: Arc::clone(&events),
            })
            .map_err(|e| Error::Kafka(format!("creating the consumer: {e}")))?;
        consumer
            .subscribe(&topics)
            .map_err(|e| Error::Kafka(format!("subscribing to {topics:?}: {e}")))?;
        Ok(KafkaRecordSource {
            consumer: Arc::new(consumer),
            events,
            decoder: ValueDecoder::new(Arc::clone(&registry)),
            trades_topic: source.trades_topic.as_deref().map(Arc::from),
            bars_topic: source.bars_topic.as_deref().map(Arc::from),
            fetched: VecDeque::new(),
            decoded: Vec::new(),
            unreadable: Arc::new(AtomicU64::new(0)),
            registry,
            fetching: HashMap::new(),
            registry_pause_until: None,
        })
    }

    /// Records that could not be decoded (counted, logged, stepped over) so far.
    pub fn unreadable(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.unreadable)
    }

    /// A lag probe per topic read, with the topic, for `/metrics`.
    pub fn lag_probes(&self) -> Vec<(String, LagProbe)> {
        [&self.trades_topic, &self.bars_topic]
            .into_iter()
            .flatten()
            .map(|topic| {
                (
                    topic.to_string(),
                    LagProbe::new(Arc::clone(&self.consumer), topic),
                )
            })
            .collect()
    }

    /// Books one receive without awaiting.
    fn accept(
        &mut self,
        received: std::result::Result<OwnedMessage, KafkaError>,
    ) -> std::result::Result<(), SourceError> {
        match received {
            Ok(message) => {
                self.fetched.push_back(message);
                Ok(())
            }
            Err(e) if is_partition_eof(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Decodes every fetched record, in order, into `decoded`. A record whose writer schema
    /// the registry cannot give now stays first in line, and the registry's error is returned.
    async fn decode_fetched(&mut self) -> std::result::Result<(), SourceError> {
        if let Some(until) = self.registry_pause_until {
            tokio::time::sleep_until(until).await;
            self.registry_pause_until = None;
        }
        while let Some(message) = self.fetched.front() {
            let id = message
                .payload()
                .and_then(|payload| split_frame(payload).ok())
                .map(|(id, _)| id);
            if let Some(id) = id
                && let Err(e) = self.writer_schema_cached(id).await
            {
                self.registry_pause_until = Some(tokio::time::Instant::now() + REGISTRY_PAUSE);
                return Err(registry_failure(e));
            }
            let Some(message) = self.fetched.front() else {
                break;
            };
            let record = self.decode(message).await;
            self.decoded.push(record);
            self.fetched.pop_front();
        }
        Ok(())
    }

    /// Waits until the registry's cache holds schema `id`: an unknown id is the record's fault
    /// (decoding then says so); any other failure is the registry's.
    async fn writer_schema_cached(&mut self, id: u32) -> Result<()> {
        if self.registry.cached(id).is_some() {
            return Ok(());
        }
        let registry = Arc::clone(&self.registry);
        let fetch = self
            .fetching
            .entry(id)
            .or_insert_with(|| tokio::spawn(async move { registry.schema(id).await.map(|_| ()) }));
        let outcome = fetch.await;
        self.fetching.remove(&id);
        match outcome {
            Ok(Err(Error::UnknownSchema(_)) | Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(Error::Registry {
                subject: format!("schema id {id}"),
                reason: join.to_string(),
                retryable: true,
            }),
        }
    }

    async fn decode(&self, message: &OwnedMessage) -> SourceRecord {
        let topic: Arc<str> = match [&self.trades_topic, &self.bars_topic]
            .into_iter()
            .flatten()
            .find(|t| ***t == *message.topic())
        {
            Some(topic) => Arc::clone(topic),
            None => Arc::from(message.topic()),
        };
        let is_trades = self.trades_topic.as_ref() == Some(&topic);
        let row = match self.row(is_trades, message).await {
            Ok(row) => row,
            Err(e) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                warn!(topic = %topic, partition = message.partition(), offset = message.offset(), error = %e, "Unreadable record stepped over (counted in app_sql_unreadable_records_total).");
                Row::Nothing
            }
        };
        SourceRecord {
            source: TopicPartition {
                topic,
                partition: message.partition(),
            },
            offset: message.offset(),
            row,
            trace: message.headers().and_then(headers::extract),
        }
    }

    async fn row(&self, is_trades: bool, message: &OwnedMessage) -> Result<Row> {
        match (message.payload(), is_trades) {
            (Some(payload), true) => Ok(Row::Trade(self.decoder.trade(payload).await?)),
            (Some(payload), false) => Ok(Row::Bar(self.decoder.aggregate(payload).await?)),
            (None, true) => match read_marker(message.headers()) {
                MarkerHeaders::Marker { .. } => Ok(Row::Nothing),
                MarkerHeaders::Absent => Err(Error::Framing(
                    "record without a value that is not a progress marker".into(),
                )),
                MarkerHeaders::Malformed(why) => {
                    Err(Error::Framing(format!("unreadable progress marker: {why}")))
                }
            },
            (None, false) => Err(Error::Framing("record without a value".into())),
        }
    }

    fn forget(&mut self, partitions: &[TopicPartition]) {
        self.decoded.retain(|r| !partitions.contains(&r.source));
        self.fetched.retain(|m| {
            !partitions
                .iter()
                .any(|tp| *tp.topic == *m.topic() && tp.partition == m.partition())
        });
    }
}

/// A registry failure as the port's: retryable ones are weather, the rest need a person.
fn registry_failure(error: Error) -> SourceError {
    let what = "writer schemas from the schema registry".to_owned();
    match error {
        Error::Registry {
            retryable: true, ..
        } => SourceError::Unavailable {
            what,
            source: Box::new(error),
        },
        other => SourceError::Refused {
            what,
            source: Box::new(other),
        },
    }
}

/// A consumer error as the port's: outages are weather, refusals need a person.
fn classify(error: KafkaError) -> SourceError {
    let what = "the source topics".to_owned();
    if weather::needs_operator(&error) {
        SourceError::Refused {
            what,
            source: Box::new(error),
        }
    } else {
        SourceError::Unavailable {
            what,
            source: Box::new(error),
        }
    }
}

impl RecordSource for KafkaRecordSource {
    async fn next_event(&mut self) -> std::result::Result<SourceEvent, SourceError> {
        loop {
            if let Some(change) = self.events.pop() {
                return Ok(match change {
                    GroupChange::Assigned(list) => SourceEvent::Assigned(list),
                    GroupChange::Revoked(list) => {
                        self.forget(&list);
                        SourceEvent::Revoked(list)
                    }
                });
            }
            if !self.decoded.is_empty() && self.fetched.is_empty() {
                return Ok(SourceEvent::Records(std::mem::take(&mut self.decoded)));
            }
            if self.fetched.is_empty() {
                // `recv` is cancel-safe: a message is taken only when the future completes.
                let received = self.consumer.recv().await.map(|m| m.detach());
                self.accept(received)?;
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

    fn is_revoked(&self, source: &TopicPartition) -> bool {
        self.events.is_revoked(source)
    }

    fn seek(
        &mut self,
        source: &TopicPartition,
        start: StartAt,
    ) -> std::result::Result<(), SourceError> {
        self.forget(std::slice::from_ref(source));
        let offset = match start {
            StartAt::Offset(offset) => Offset::Offset(offset),
            StartAt::Beginning => Offset::Beginning,
        };
        self.consumer
            .seek(
                &source.topic,
                source.partition,
                offset,
                Duration::from_secs(10),
            )
            .map_err(|e| SourceError::Unavailable {
                what: format!("seeking {source} to {start:?}"),
                source: Box::new(e),
            })
    }
}
