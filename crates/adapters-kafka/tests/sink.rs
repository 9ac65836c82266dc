//! `KafkaTradeSink` on a test broker (mock cluster, or Apache Kafka with `TEST_BROKER=kafka`).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::decode_trade;
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::split_frame;
use adapters_kafka::headers;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::Registry;
use common::Stack;
use domain::{Trade, testing};
use ports::{Position, SinkError, TraceContext, TradeBatch, TradeSink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{SchemaRegistryStub, TestBroker};

const PARTITIONS: i32 = 3;

struct Setup {
    broker: TestBroker,
    stub: SchemaRegistryStub,
    registry: Arc<Registry>,
    topic: String,
}

async fn setup() -> Setup {
    let topic = format!(
        "trades-{}",
        std::process::id() as u64 * 1000 + rand_suffix()
    );
    let Stack {
        broker,
        stub,
        registry,
    } = Stack::start(&[(&topic, PARTITIONS, false)]).await;
    Setup {
        broker,
        stub,
        registry,
        topic,
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 1000
}

/// The mock cluster, for fault injection; `None` (and a note) on a real broker.
fn mock(setup: &Setup) -> Option<&MockCluster<'static, DefaultProducerContext>> {
    match &setup.broker {
        TestBroker::Mock(cluster) => Some(cluster),
        TestBroker::Kafka(_) => {
            eprintln!("skipped: needs the mock cluster's fault injection");
            None
        }
    }
}

fn kafka(setup: &Setup) -> KafkaConfig {
    KafkaConfig::new(setup.broker.bootstrap_servers())
}

fn trade(instrument: &str, seq: u64) -> Trade {
    testing::trade(
        instrument,
        seq,
        1_700_000_000_000 + seq as i64,
        100.0 + seq as f64,
        1.0,
    )
}

const INSTRUMENTS: [&str; 5] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-27DEC24-70000-C",
    "SOL_USDC-PERPETUAL",
    "XRP_USDC",
];

fn batch(range: std::ops::RangeInclusive<u64>) -> TradeBatch {
    let trades = range
        .flat_map(|seq| INSTRUMENTS.iter().map(move |i| trade(i, seq)))
        .collect();
    TradeBatch {
        trades,
        trace: Some(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("vendor=x".into()),
        }),
    }
}

/// One record read back: (partition, key, frame, timestamp, traceparent).
type Record = (i32, String, Vec<u8>, i64, Option<String>);

/// Every record of the topic.
fn read_all(setup: &Setup, expected: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", setup.broker.bootstrap_servers())
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(&setup.topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let Timestamp::CreateTime(ts) = m.timestamp() else {
                panic!("no create time")
            };
            let trace = m
                .headers()
                .and_then(headers::extract)
                .map(|t| t.traceparent);
            out.push((
                m.partition(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().unwrap().to_vec(),
                ts,
                trace,
            ));
        }
    }
    // Anything beyond the expected count would be a duplicate.
    while let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
        out.push((m.partition(), String::new(), Vec::new(), 0, None));
    }
    out
}

/// Kafka's Java `Utils.murmur2`, to check records land where Java clients put them.
fn java_murmur2(data: &[u8]) -> i32 {
    let (m, r): (u32, u32) = (0x5bd1_e995, 24);
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

#[tokio::test]
async fn records_carry_key_timestamp_trace_headers_and_decode_in_order_per_key() {
    let s = setup().await;
    let sink = KafkaTradeSink::connect(&kafka(&s), Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    sink.publish(batch(1..=20)).await.unwrap();
    sink.flush().await.unwrap();
    let records = read_all(&s, 100);
    assert_eq!(records.len(), 100, "every trade once");
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (partition, key, frame, ts, trace) in &records {
        let (id, datum) = split_frame(frame).unwrap();
        assert_eq!(id, sink.schema_id());
        let t = decode_trade(id, &s.registry.schema(id).await.unwrap(), datum).unwrap();
        assert_eq!(&t.instrument_name, key);
        assert_eq!(*ts, t.timestamp, "record time is trade time");
        assert_eq!(
            trace.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let java_partition = (java_murmur2(key.as_bytes()) & 0x7fff_ffff) % PARTITIONS;
        assert_eq!(
            *partition, java_partition,
            "{key} lands where a Java client puts it"
        );
        seqs.entry(key.clone()).or_default().push(t.trade_seq);
    }
    for instrument in INSTRUMENTS {
        assert_eq!(
            seqs[instrument],
            (1..=20).collect::<Vec<_>>(),
            "{instrument} in order"
        );
    }
    assert!(
        records
            .iter()
            .map(|r| r.0)
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "several partitions used"
    );
}

#[tokio::test]
async fn broker_errors_are_retried_without_duplicates() {
    let s = setup().await;
    let Some(cluster) = mock(&s) else { return };
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let sink = KafkaTradeSink::connect(&kafka(&s), Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    sink.publish(batch(1..=40)).await.unwrap();
    let records = read_all(&s, 200);
    assert_eq!(
        records.len(),
        200,
        "idempotent retries: nothing lost, nothing doubled"
    );
}

#[tokio::test]
async fn a_full_local_queue_is_back_pressure_not_loss() {
    let s = setup().await;
    let mut config = kafka(&s);
    config
        .properties
        .insert("queue.buffering.max.messages".into(), "16".into());
    let sink = KafkaTradeSink::connect(&config, Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    sink.publish(batch(1..=200)).await.unwrap();
    assert_eq!(read_all(&s, 1000).len(), 1000);
}

#[tokio::test]
async fn delivery_failures_reach_the_caller() {
    let s = setup().await;
    let mut config = kafka(&s);
    config
        .properties
        .insert("message.timeout.ms".into(), "500".into());
    let sink = KafkaTradeSink::connect(&config, Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    let Some(cluster) = mock(&s) else { return };
    cluster.broker_down(1).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sink.publish(batch(1..=1)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Retryable(m) if m.contains("timed out")),
        "{err}"
    );
}

#[tokio::test]
async fn last_positions_recovers_the_newest_trade_per_instrument() {
    let s = setup().await;
    let sink = KafkaTradeSink::connect(&kafka(&s), Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    assert!(
        sink.last_positions().await.unwrap().is_empty(),
        "empty topic: no positions"
    );
    sink.publish(batch(1..=30)).await.unwrap();
    sink.publish(TradeBatch {
        trades: vec![trade("BTC-PERPETUAL", 31)],
        trace: None,
    })
    .await
    .unwrap();
    let positions = sink.with_lookback(1_000).last_positions().await.unwrap();
    assert_eq!(positions.len(), INSTRUMENTS.len());
    assert_eq!(
        positions["BTC-PERPETUAL"],
        Position {
            trade_seq: 31,
            timestamp: 1_700_000_000_031
        }
    );
    assert_eq!(
        positions["XRP_USDC"],
        Position {
            trade_seq: 30,
            timestamp: 1_700_000_000_030
        }
    );
    assert_eq!(
        s.stub.requests(),
        1,
        "the writer schema came from the registration cache"
    );
}

#[tokio::test]
async fn a_broker_restart_loses_nothing_acknowledged() {
    let mut s = setup().await;
    let bootstrap = s.broker.bootstrap_servers();
    let Some(kafka) = s.broker.kafka_mut() else {
        eprintln!("skipped: restarting a broker needs Apache Kafka (TEST_BROKER=kafka)");
        return;
    };
    let config = KafkaConfig::new(bootstrap);
    let sink = KafkaTradeSink::connect(&config, Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    sink.publish(batch(1..=50)).await.unwrap();
    kafka.restart(1).await.unwrap(); // SIGKILL, then start on the same storage
    sink.publish(batch(51..=100)).await.unwrap();
    let records = read_all(&s, 500);
    assert_eq!(
        records.len(),
        500,
        "every acknowledged trade survived, once"
    );
    let positions = sink.last_positions().await.unwrap();
    assert!(positions.values().all(|p| p.trade_seq == 100));
}

/// A producer that fails fatally (an out-of-order sequence, as after a broker lost its
/// state) is replaced; the caller, as app-raw's loop does, reads the tail back and re-sends what
/// is missing: the topic holds every trade once, in order.
#[tokio::test]
async fn a_fatally_failed_producer_is_replaced_and_nothing_is_lost_or_doubled() {
    let s = setup().await;
    let Some(cluster) = mock(&s) else { return };
    let sink = KafkaTradeSink::connect(&kafka(&s), Arc::clone(&s.registry), &s.topic)
        .await
        .unwrap();
    sink.publish(batch(1..=5)).await.unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let mut pending = batch(6..=10);
    let mut failures = 0;
    while let Err(e) = sink.publish(pending.clone()).await {
        assert!(e.is_retryable(), "never fatal for the caller: {e}");
        failures += 1;
        assert!(failures < 5, "recovers: {e}");
        let positions = sink.last_positions().await.unwrap();
        pending.trades.retain(|t| {
            positions
                .get(&t.instrument_name)
                .is_none_or(|p| t.trade_seq > p.trade_seq)
        });
    }
    sink.publish(batch(11..=15)).await.unwrap();
    let records = read_all(&s, 75);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, key, frame, _, _) in &records {
        let (id, datum) = split_frame(frame).unwrap();
        let trade = decode_trade(id, &s.registry.schema(id).await.unwrap(), datum).unwrap();
        assert_eq!(&trade.instrument_name, key);
        seqs.entry(key.clone()).or_default().push(trade.trade_seq);
    }
    assert!(failures > 0, "the injected error was met");
    for (instrument, seqs) in seqs {
        assert_eq!(seqs, (1..=15).collect::<Vec<u64>>(), "{instrument}");
    }
}
