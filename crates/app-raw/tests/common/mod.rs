//! Helpers shared by app-raw's Kafka-facing tests.
#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every helper

use std::collections::BTreeMap;
use std::time::Duration;

use adapters_kafka::avro::decode_trade;
use adapters_kafka::framing::split_frame;
use adapters_kafka::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::TestBroker;

/// Every trade in the topic, per instrument, in topic order.
pub async fn topic_seqs(
    broker: &TestBroker,
    registry: &Registry,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> BTreeMap<String, Vec<u64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut frames = Vec::new();
    let mut eof = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (frames.len() < expected || eof < partitions) && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => frames.push(m.payload().unwrap().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for frame in frames {
        let (id, datum) = split_frame(&frame).unwrap();
        let trade = decode_trade(id, &registry.schema(id).await.unwrap(), datum).unwrap();
        seqs.entry(trade.instrument_name.clone())
            .or_default()
            .push(trade.trade_seq);
    }
    seqs
}
