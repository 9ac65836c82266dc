//! Helpers shared by app-agg's Kafka-level tests (process, crash, fencing, outage, scale-out,
//! topics, watermark, compaction): app-agg started from this package's binary, a test stream
//! and its oracle, the raw topic's producer; topics and their readers come from testkit.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    dead_code,
    unused_imports
)] // test helpers; not every test uses every helper

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
use testkit::services::{agg_command, child_log};
use testkit::{SchemaRegistryStub, TestBroker};

pub use testkit::topics::{
    AGG, DLQ, LATE, RAW, STATE, aggregates_topic, aggregates_topic_as, create_topics,
    end_offset as raw_end_offset, wait_for_aggregates,
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_app-agg");

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

/// The bar sizes app-agg runs with here: 1 s bars, and 3 s bars rolled up from them (so crashes,
/// fencing and rebalances are proven for rolled-up bars, whose half-built state lives in the
/// changelog, too).
pub const WINDOWS: &str = "1s,3s";

/// [`WINDOWS`], no grace, windows closed by event time only (the oracle for a stream whose
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
    .and_then(|c| c.with_rollups([WindowSize::from_millis(3_000).unwrap()]))
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
        (&a.instrument_name, a.window_start, a.window_ms).cmp(&(
            &b.instrument_name,
            b.window_start,
            b.window_ms,
        ))
    });
}

/// Starts app-agg as configured by [`config`], on `http`, as instance `0`
/// (`testkit::services::agg_command`).
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
    command(broker, stub, http, instance)
        .stdout(child_log("app-agg", http))
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
    let mut command = agg_command(BIN, broker, stub, http, instance);
    command.env("AGG_WINDOWS", WINDOWS);
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

/// The records deduplicated by (instrument, window_start, window_ms), sorted, after asserting
/// that every repeat is byte-identical to its first; also the number of repeats.
pub fn union_of(records: &[Vec<u8>]) -> (Vec<Aggregate>, usize) {
    testkit::topics::union_by(records, decode, |a| {
        (a.instrument_name.clone(), a.window_start, a.window_ms)
    })
}

/// One framed aggregate record, decoded.
pub fn decode(record: &[u8]) -> Aggregate {
    let (id, datum) = split_frame(record).unwrap();
    decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap()
}
