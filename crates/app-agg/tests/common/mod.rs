//! Helpers shared by app-agg's Kafka-level tests (pipeline, process, tracing, crash, scale-out).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    dead_code
)] // test helpers; not every test uses every helper

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::split_frame;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use domain::{
    Aggregate, Aggregator, AggregatorConfig, Direction, Trade, TradeFields, WatermarkRule,
    WindowSize, testing,
};
use ports::{TradeBatch, TradeSink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{SchemaRegistryStub, TestBroker};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_app-agg");
/// Topic names (the services' defaults).
pub const RAW: &str = "deribit.trades";
/// See [`RAW`].
pub const AGG: &str = "deribit.trades.agg";
/// See [`RAW`].
pub const STATE: &str = "deribit.trades.agg.state";

/// The dead-letter topic (the service's default).
pub const DLQ: &str = "deribit.trades.dlq";
/// The late-trades topic (the service's default).
pub const LATE: &str = "deribit.trades.late";

/// Creates the five topics app-agg checks at start: raw and changelog with `partitions`,
/// aggregates, dead letters and late trades with one.
pub async fn create_topics(broker: &TestBroker, partitions: i32) {
    broker.create_topic(RAW, partitions, false).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(STATE, partitions, true).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
}

/// A deterministic stream an hour old, in `batches` of `per_batch` trades over `instruments`,
/// timestamps strictly increasing; then one trade per instrument a minute later, so every
/// partition's watermark passes every window of the stream.
pub fn stream(instruments: &[&str], batches: usize, per_batch: usize) -> Vec<Vec<Trade>> {
    let base = testkit::process::now_ms() - 3_600_000;
    let base = base - base.rem_euclid(1_000);
    let mut seq = vec![0u64; instruments.len()];
    let mut trade = |n: usize, i: usize, timestamp: i64| {
        seq[i] += 1;
        Trade::new(TradeFields {
            trade_id: n.to_string(),
            direction: if n.is_multiple_of(3) {
                Direction::Sell
            } else {
                Direction::Buy
            },
            tick_direction: 1,
            ..testing::fields(
                instruments[i],
                seq[i],
                timestamp,
                100.0 + ((n * 13) % 29) as f64 / 7.0,
                1.0 + (n % 4) as f64,
            )
        })
        .unwrap()
    };
    let mut out: Vec<Vec<Trade>> = (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|k| {
                    let n = b * per_batch + k;
                    let i = (n * 7 + n / 5) % instruments.len();
                    trade(n, i, base + n as i64 * 37)
                })
                .collect()
        })
        .collect();
    let end = base + (batches * per_batch) as i64 * 37 + 60_000;
    let closing = (0..instruments.len())
        .map(|i| trade(batches * per_batch + i, i, end + i as i64))
        .collect();
    out.push(closing);
    out
}

/// 1 s windows, no grace, windows closed by event time only (the oracle for a stream whose
/// progress markers follow each batch at its last trade's time; see [`Feeder`]).
pub fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        WatermarkRule::TradeTime {
            max_delay_ms: 86_400_000,
        },
        vec![2_000, 30_000],
    )
    .unwrap()
}

/// What one uninterrupted aggregator emits for `batches`, sorted by (instrument, window_start).
pub fn uninterrupted(batches: &[Vec<Trade>]) -> Vec<Aggregate> {
    let mut agg = Aggregator::new(config());
    let mut out = Vec::new();
    for t in batches.iter().flatten() {
        agg.ingest(t);
        out.extend(agg.drain_closed());
    }
    sort(&mut out);
    out
}

fn sort(aggregates: &mut [Aggregate]) {
    aggregates.sort_by(|a, b| {
        (&a.instrument_name, a.window_start).cmp(&(&b.instrument_name, b.window_start))
    });
}

/// Starts app-agg as configured by [`config`], on `http`; one transaction per cycle on Apache
/// Kafka (the mock only fakes them), as instance `0`.
pub fn spawn(broker: &TestBroker, stub: &SchemaRegistryStub, http: &str) -> Child {
    spawn_instance(broker, stub, http, "0")
}

/// As [`spawn`], as `instance`: a restarted instance keeps its transactional id, so its new
/// producer aborts what the old one left open; two live instances need two.
pub fn spawn_instance(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    http: &str,
    instance: &str,
) -> Child {
    let stdout = match std::env::var("CHILD_LOG_DIR") {
        Ok(dir) => Stdio::from(
            std::fs::File::create(format!("{dir}/app-agg-{}.log", http.replace(':', "_"))).unwrap(),
        ),
        Err(_) => Stdio::null(),
    };
    command(broker, stub, http, instance)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The command [`spawn_instance`] runs, output not yet directed.
pub fn command(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    http: &str,
    instance: &str,
) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().envs([
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
        ("AGG_TRANSACTIONAL_ID", format!("app-agg-test-{instance}")),
        ("AGG_WINDOW", "1s".into()),
        ("AGG_GRACE", "0s".into()),
        ("AGG_MAX_DELAY", "24h".into()),
        ("AGG_HALFLIVES", "2s,30s".into()),
        ("AGG_COMMIT_INTERVAL", "50ms".into()),
        ("KAFKA_SESSION_TIMEOUT", "3s".into()),
        ("HTTP_ADDR", http.to_owned()),
        (
            "RUST_LOG",
            std::env::var("CHILD_LOG").unwrap_or_else(|_| "error".into()),
        ),
        ("OTEL_SDK_DISABLED", "true".into()),
    ]);
    command
}

/// The raw topic's producer in a test: publishes a stream's batches in order, a pause before
/// each (so a kill right after `publish` returns lands while app-agg works on the last one),
/// each followed by a progress marker at its last trade's time, as app-raw would write (the
/// stream is in time order, so the batch completes everything up to there).
pub struct Feeder {
    sink: KafkaTradeSink,
    batches: std::vec::IntoIter<Vec<Trade>>,
    pause: Duration,
    markers: bool,
}

impl Feeder {
    /// A producer on the raw topic (its schema registered in `stub`) for `batches`.
    pub async fn start(
        broker: &TestBroker,
        stub: &SchemaRegistryStub,
        batches: Vec<Vec<Trade>>,
        pause: Duration,
    ) -> Feeder {
        let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        Feeder {
            sink: KafkaTradeSink::connect(&kafka, registry, RAW)
                .await
                .unwrap(),
            batches: batches.into_iter(),
            pause,
            markers: true,
        }
    }

    /// Publishes trades only, as a producer that knows nothing of progress markers.
    #[must_use]
    pub fn without_markers(mut self) -> Feeder {
        self.markers = false;
        self
    }

    /// The raw-topic producer, for trades and markers beyond the stream.
    pub fn sink(&self) -> &KafkaTradeSink {
        &self.sink
    }

    /// Publishes the next `count` batches (`usize::MAX`: all that are left).
    pub async fn publish(&mut self, count: usize) {
        for trades in self.batches.by_ref().take(count) {
            tokio::time::sleep(self.pause).await;
            let batch = TradeBatch {
                trades,
                trace: None,
            };
            let complete_to = batch.trades.iter().map(|t| t.timestamp).max();
            self.sink.publish(batch).await.unwrap();
            if let Some(complete_to) = complete_to.filter(|_| self.markers) {
                self.sink.publish_progress(complete_to).await.unwrap();
            }
        }
    }
}

/// Every record of the aggregates topic, raw, as a `read_committed` reader sees it.
pub fn aggregates_topic(broker: &TestBroker) -> Vec<Vec<u8>> {
    aggregates_topic_as(broker, "read_committed")
}

/// Every record of the aggregates topic, raw, at `isolation` (`read_committed` or
/// `read_uncommitted`: the latter also sees records of aborted transactions).
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

/// Polls the aggregates topic until it holds at least `want` distinct records.
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

/// The records deduplicated by (instrument, window_start), sorted, after asserting that every
/// repeat is byte-identical to its first; also the number of repeats.
pub fn union_of(records: &[Vec<u8>]) -> (Vec<Aggregate>, usize) {
    let mut seen: BTreeMap<(String, i64), &Vec<u8>> = BTreeMap::new();
    let mut repeats = 0;
    for bytes in records {
        let a = decode(bytes);
        match seen.get(&(a.instrument_name.clone(), a.window_start)) {
            Some(earlier) => {
                assert_eq!(*earlier, bytes, "a repeated aggregate is byte-identical");
                repeats += 1;
            }
            None => {
                seen.insert((a.instrument_name, a.window_start), bytes);
            }
        }
    }
    let mut union: Vec<Aggregate> = seen.values().map(|b| decode(b)).collect();
    sort(&mut union);
    (union, repeats)
}

/// One framed aggregate record, decoded.
pub fn decode(record: &[u8]) -> Aggregate {
    let (id, datum) = split_frame(record).unwrap();
    decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap()
}

/// The end offset (next offset to be written) of `topic`'s `partition`.
pub fn raw_end_offset(broker: &TestBroker, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap()
        .1
}
