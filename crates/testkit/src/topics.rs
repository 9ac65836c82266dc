//! The pipeline's topics for tests that run app-agg (alone or behind app-raw): their names (the
//! services' defaults), creating them, and reading back what the service wrote.
//!
//! Records are returned as bytes; decoding them is the test's business (testkit knows no Avro
//! schema of ours), so [`union_by`] takes the decoder.
#![allow(clippy::unwrap_used, clippy::panic)] // test harness: a broker that fails fails the test

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::TestBroker;

/// The raw trades topic (the services' default name).
pub const RAW: &str = "deribit.trades";
/// The aggregates topic (app-agg's default).
pub const AGG: &str = "deribit.trades.agg";
/// app-agg's state changelog (its default).
pub const STATE: &str = "deribit.trades.agg.state";
/// The dead-letter topic (app-agg's default, after [`RAW`]).
pub const DLQ: &str = "deribit.trades.dlq";
/// The late-trades topic (app-agg's default, after [`RAW`]).
pub const LATE: &str = "deribit.trades.late";

/// Creates the five topics app-agg checks at start: raw and changelog with `partitions`,
/// aggregates, dead letters and late trades with one.
///
/// # Panics
/// If the broker refuses one.
pub async fn create_topics(broker: &TestBroker, partitions: i32) {
    broker.create_topic(RAW, partitions, false).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(STATE, partitions, true).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
}

/// Where the service tests begin: the broker `TEST_BROKER` names with the pipeline's topics
/// ([`create_topics`]), and a Schema Registry stub.
///
/// # Panics
/// If either cannot start.
pub async fn pipeline_ground(partitions: i32) -> (TestBroker, crate::SchemaRegistryStub) {
    let broker = TestBroker::from_env().await.unwrap();
    create_topics(&broker, partitions).await;
    let stub = crate::SchemaRegistryStub::start().await.unwrap();
    (broker, stub)
}

/// Every record of the aggregates topic, raw, as a `read_committed` reader sees it.
///
/// # Panics
/// If no consumer can be made.
#[must_use]
pub fn aggregates_topic(broker: &TestBroker) -> Vec<Vec<u8>> {
    aggregates_topic_as(broker, "read_committed")
}

/// Every record of the aggregates topic, raw, at `isolation` (`read_committed` or
/// `read_uncommitted`: the latter also sees records of aborted transactions).
///
/// # Panics
/// If no consumer can be made, or a record has no value.
#[must_use]
pub fn aggregates_topic_as(broker: &TestBroker, isolation: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "agg-check")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(AGG, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap().to_vec()),
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

/// The values of every record of `topic`'s partitions `0..partitions` that has one (progress
/// markers have none), as a `read_committed` reader sees them, partition by partition.
///
/// # Panics
/// If no consumer can be made.
#[must_use]
pub fn values(broker: &TestBroker, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "values-check")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut out = Vec::new();
    for partition in 0..partitions {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.extend(m.payload().map(<[u8]>::to_vec)),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                _ => {}
            }
        }
    }
    out
}

/// Polls the aggregates topic until it holds at least `want` distinct records.
///
/// # Panics
/// As [`aggregates_topic`].
pub async fn wait_for_aggregates(broker: &TestBroker, want: usize) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for _ in 0..120 {
        records = aggregates_topic(broker);
        let distinct: std::collections::BTreeSet<&Vec<u8>> = records.iter().collect();
        if distinct.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    records
}

/// The end offset (next offset to be written) of `topic`'s `partition`.
///
/// # Panics
/// If the broker does not answer within 10 s.
#[must_use]
pub fn end_offset(broker: &TestBroker, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap()
        .1
}

/// The records, decoded, deduplicated by `key` and sorted by it, after asserting that every
/// repeat is byte-identical to its first; also the number of repeats.
///
/// # Panics
/// When a repeat differs (that is the test failing).
pub fn union_by<T, K: Ord>(
    records: &[Vec<u8>],
    decode: impl Fn(&[u8]) -> T,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, usize) {
    let mut seen: BTreeMap<K, (&Vec<u8>, T)> = BTreeMap::new();
    let mut repeats = 0;
    for bytes in records {
        let record = decode(bytes);
        match seen.entry(key(&record)) {
            Entry::Occupied(earlier) => {
                assert_eq!(
                    earlier.get().0,
                    bytes,
                    "a repeated record is byte-identical"
                );
                repeats += 1;
            }
            Entry::Vacant(slot) => {
                slot.insert((bytes, record));
            }
        }
    }
    (
        seen.into_values().map(|(_, record)| record).collect(),
        repeats,
    )
}
