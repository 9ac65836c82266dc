//! [`TailReader`]: some partitions of a topic, read from a start to their end, blocking.
//!
//! The two reads that need "what is there now" use it: the raw topic's last records (where
//! app-raw resumes, [`crate::producer`]) and the changelog partitions app-agg restores
//! ([`crate::changelog`]). Readers are `read_committed` ([`crate::config::KafkaConfig::reader`]).
//!
//! A partition ends at the high watermark read before the read starts, or where librdkafka
//! reports its end, whichever comes first: under `read_committed` the offset before the
//! watermark can be a transaction marker, which is never delivered, and then the end report is
//! the only end there is. Every record received is handed out, also one of a partition that has
//! already ended. Each broker call waits at most the timeout; once the watermarks are known, the
//! read fails only when no record arrives for that long (a long read that keeps going finishes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ports::Partition;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tracing::debug;

use crate::client_log;
use crate::error::{Error, Result};
use crate::group_context::is_partition_eof;

/// Where the read of each partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the partition's first record.
    Beginning,
    /// At most this many records before the partition's end.
    Last(i64),
}

/// A one-shot reader of one topic's partitions up to their ends.
pub(crate) struct TailReader {
    consumer: BaseConsumer<TailContext>,
    topic: String,
    timeout: Duration,
}

impl TailReader {
    /// A reader of `topic` with the client settings `config` (a reader's, see
    /// [`crate::config::KafkaConfig::reader`]), waiting at most `timeout` per step.
    ///
    /// # Errors
    /// [`Error::Kafka`] if librdkafka refuses the settings.
    pub(crate) fn new(config: &ClientConfig, topic: &str, timeout: Duration) -> Result<Self> {
        let mut config = config.clone();
        config.set("enable.partition.eof", "true");
        let consumer = config
            .create_with_context(TailContext)
            .map_err(|e| kafka("creating a reader", topic, &e))?;
        Ok(TailReader {
            consumer,
            topic: topic.to_owned(),
            timeout,
        })
    }

    /// The topic's partitions as the broker describes them (none if it does not know the topic).
    ///
    /// # Errors
    /// [`Error::Kafka`] if no broker answers within the timeout.
    pub(crate) fn partitions(&self) -> Result<Vec<Partition>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|e| kafka("metadata", &self.topic, &e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    /// Reads `partitions` from `start` to their end (see the module docs), handing each record
    /// to `visit` as it arrives. Empty partitions are not read.
    ///
    /// # Errors
    /// [`Error::Kafka`] if a watermark cannot be read, the assignment fails, a read fails, or
    /// no record of a partition still being read arrives for the timeout (the message names
    /// the partitions left).
    pub(crate) fn read(
        self,
        partitions: &[Partition],
        start: Start,
        mut visit: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<()> {
        let topic = self.topic.as_str();
        let mut assignment = TopicPartitionList::new();
        let mut ends: BTreeMap<Partition, i64> = BTreeMap::new();
        for &partition in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, partition, self.timeout)
                .map_err(|e| kafka("watermarks", topic, &e))?;
            if high <= low {
                continue;
            }
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                Start::Last(records) => Offset::Offset(low.max(high.saturating_sub(records))),
            };
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(|e| kafka("assignment", topic, &e))?;
            ends.insert(partition, high);
        }
        debug!(topic, ends = ?ends, "Partition ends read.");
        if ends.is_empty() {
            return Ok(());
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| kafka("assign", topic, &e))?;
        // The timeout is for a stall, not for the whole read: a large changelog read at a
        // steady pace must finish (a fixed deadline made app-agg's restore fail, then fail
        // again on every restart, once its changelog took longer than that to read).
        let mut deadline = Instant::now() + self.timeout;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::Kafka(format!(
                    "reading the end of {topic}: nothing arrived for {:?}; partitions left: {:?}",
                    self.timeout,
                    ends.keys().collect::<Vec<_>>()
                )));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    ends.remove(&partition);
                }
                Some(Err(e)) => return Err(kafka("reading", topic, &e)),
                Some(Ok(record)) => {
                    let (partition, offset) = (record.partition(), record.offset());
                    // Only a partition still being read counts as progress (records of ended
                    // ones would keep a stalled read alive for ever).
                    if ends.contains_key(&partition) {
                        deadline = Instant::now() + self.timeout;
                    }
                    visit(&record);
                    if ends.get(&partition).is_some_and(|&end| offset + 1 >= end) {
                        ends.remove(&partition);
                    }
                }
            }
        }
        Ok(())
    }
}

fn kafka(what: &str, topic: &str, e: &KafkaError) -> Error {
    Error::Kafka(format!("{what} of {topic}: {e}"))
}

/// The reader's client context: librdkafka's reports as [`crate::client_log`] says; the reader's
/// calls return their errors too, and the caller logs them with context.
struct TailContext;

impl ClientContext for TailContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client_log::forward(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            debug!(error = %error, reason, "librdkafka error callback.");
        }
    }
}

impl ConsumerContext for TailContext {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::config::KafkaConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_longer_than_the_timeout_that_keeps_going_finishes() {
        let broker = testkit::TestBroker::from_env().await.unwrap();
        broker
            .create_topic("tail-long-read", 1, false)
            .await
            .unwrap();
        let config = KafkaConfig::new(broker.bootstrap_servers());
        let producer: BaseProducer = config.producer().create().unwrap();
        for i in 0..300 {
            let key = i.to_string();
            producer
                .send(BaseRecord::to("tail-long-read").key(&key).payload("state"))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        // 300 records at 5 ms each take 1.5 s, three times the timeout.
        let read = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&read);
        let reader = config.reader();
        tokio::task::spawn_blocking(move || {
            TailReader::new(&reader, "tail-long-read", Duration::from_millis(500))
                .unwrap()
                .read(&[0], Start::Beginning, |_| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                })
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(read.load(Ordering::Relaxed), 300);
    }
}
