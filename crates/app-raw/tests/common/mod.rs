//! Helpers shared by app-raw's Kafka-facing tests.
#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every helper

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::decode_trade;
use adapters_kafka::framing::split_frame;
use adapters_kafka::registry::{Registry, RegistryConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_app-raw");
/// The raw topic (the service's default).
pub const TOPIC: &str = "deribit.trades";
/// Channels covering the fake's default market.
pub const CHANNELS: &str =
    "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.ETH-PERPETUAL.100ms";
/// The fake's default market.
pub const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"];

/// Starts app-raw against the stand-ins, serving probes on `http`.
pub fn spawn(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    fake: &FakeDeribit,
    http: &str,
) -> Child {
    testkit::services::spawn_raw(BIN, broker, stub, &fake.url(), CHANNELS, http)
}

/// Every trade seq the fake generated, per instrument.
pub fn generated(fake: &FakeDeribit) -> BTreeMap<String, Vec<u64>> {
    INSTRUMENTS
        .iter()
        .map(|i| {
            let seqs = fake
                .record(i)
                .iter()
                .map(|t| t["trade_seq"].as_u64().unwrap())
                .collect();
            ((*i).to_owned(), seqs)
        })
        .collect()
}

/// First occurrences only, in topic order; also how many repeats were dropped.
pub fn dedup(topic: &BTreeMap<String, Vec<u64>>) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut repeats = 0;
    let firsts = topic
        .iter()
        .map(|(instrument, seqs)| {
            let mut seen = BTreeSet::new();
            let kept: Vec<u64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
            repeats += seqs.len() - kept.len();
            (instrument.clone(), kept)
        })
        .collect();
    (firsts, repeats)
}

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
            // Progress markers have no value: skipped, as any reader of trades does.
            Some(Ok(m)) => frames.extend(m.payload().map(<[u8]>::to_vec)),
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

/// Polls the topic until it holds exactly `want` (per instrument, in topic order) or a minute
/// passes; what it held last.
pub async fn wait_for_topic(
    broker: &TestBroker,
    registry: &Registry,
    want: &BTreeMap<String, Vec<u64>>,
) -> BTreeMap<String, Vec<u64>> {
    let total = want.values().map(Vec::len).sum();
    let mut got = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        got = topic_seqs(broker, registry, TOPIC, 3, total).await;
        if &got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    got
}

/// Asserts the service still runs, then stops it with SIGTERM and asserts it exits within 15 s.
pub async fn assert_running_then_stop(child: &mut Child) {
    assert!(child.try_wait().unwrap().is_none(), "app-raw still runs");
    testkit::process::signal(child, "TERM");
    let exited = testkit::wait_for(Duration::from_secs(15), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(exited, "no exit within 15 s of SIGTERM");
}

/// The stand-ins every app-raw process test runs against: a registry stub (and a client of it)
/// and a fake Deribit market that sends `public/test` requests like the real one.
pub async fn stand_ins() -> (SchemaRegistryStub, Arc<Registry>, FakeDeribit) {
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));
    (stub, registry, fake)
}

/// `rounds` rounds of one trade per instrument, 50 ms apart.
pub async fn trade_rounds(fake: &FakeDeribit, rounds: usize) {
    for _ in 0..rounds {
        fake.trade_all(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
