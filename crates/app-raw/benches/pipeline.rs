//! app-raw end to end, in process: FakeDeribit → DeribitFeed → run loop → KafkaTradeSink →
//! broker ack (mock cluster, or Apache Kafka with TEST_BROKER=kafka).
//!
//! 1. Throughput: the fake floods `FLOOD` trades as fast as it can; trades/s until all acked.
//! 2. Latency at 5,000 trades/s for 20 s: trade generated (its `timestamp`, which the fake sets
//!    when it writes the frame) → broker acknowledgement, p50 / p99 / max.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a bench binary

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters_deribit::{Channel, DeribitConfig, DeribitFeed};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use app_raw::run::{RunCounters, run};
use ports::{SinkError, StartPositions, TradeBatch, TradeSink};
use testkit::process::now_ms;
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker};

const TOPIC: &str = "deribit.trades";
const FLOOD: usize = 200_000;

/// Records, per acknowledged trade, milliseconds since the trade's timestamp.
struct Timed<S> {
    inner: S,
    latencies: Arc<Mutex<Vec<i64>>>,
}

impl<S> Timed<S> {
    /// Records the latency of trades with these timestamps, acknowledged now.
    fn acknowledged(&self, stamps: Vec<i64>) {
        let now = now_ms();
        self.latencies
            .lock()
            .unwrap()
            .extend(stamps.into_iter().map(|t| now - t));
    }
}

impl<S: TradeSink + Sync> TradeSink for Timed<S> {
    async fn publish(&self, batch: TradeBatch) -> Result<(), SinkError> {
        let stamps: Vec<i64> = batch.trades.iter().map(|t| t.timestamp).collect();
        self.inner.publish(batch).await?;
        self.acknowledged(stamps);
        Ok(())
    }

    async fn publish_all(&self, batches: Vec<TradeBatch>) -> Result<(), SinkError> {
        let stamps: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.trades.iter().map(|t| t.timestamp))
            .collect();
        self.inner.publish_all(batches).await?;
        self.acknowledged(stamps);
        Ok(())
    }

    async fn publish_progress(&self, complete_to: i64) -> Result<(), SinkError> {
        self.inner.publish_progress(complete_to).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.inner.flush().await
    }

    async fn last_positions(&self) -> Result<StartPositions, SinkError> {
        self.inner.last_positions().await
    }
}

fn market() -> Vec<FakeInstrument> {
    (0..10)
        .map(|i| FakeInstrument::new(&format!("BTC-FUT-{i}"), "future", "BTC", 97_000.0))
        .collect()
}

async fn pipeline(
    broker: &TestBroker,
    registry: &Arc<Registry>,
    fake: &FakeDeribit,
) -> (
    Arc<RunCounters>,
    Arc<Mutex<Vec<i64>>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    Arc<adapters_deribit::FeedMetrics>,
) {
    let sink = KafkaTradeSink::connect(
        &KafkaConfig::new(broker.bootstrap_servers()),
        Arc::clone(registry),
        TOPIC,
    )
    .await
    .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let sink = Timed {
        inner: sink,
        latencies: Arc::clone(&latencies),
    };
    let config = DeribitConfig::new(
        fake.url(),
        Channel::parse_list("trades.future.BTC.100ms").unwrap(),
    );
    let mut feed = DeribitFeed::spawn(config, StartPositions::new(), None).unwrap();
    let metrics = feed.metrics();
    let counters = Arc::new(RunCounters::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            run(
                &mut feed,
                &sink,
                async {
                    let _ = stopped.await;
                },
                &counters,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
            feed.shutdown().await;
        })
    };
    while !metrics.subscribed.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (counters, latencies, stop, task, metrics)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());

    // 1. Flood.
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (counters, _, stop, task, feed_metrics) = pipeline(&broker, &registry, &fake).await;
    let names: Vec<String> = market().into_iter().map(|i| i.name).collect();
    let started = Instant::now();
    for k in 0..FLOOD / 100 {
        fake.trade(&names[k % names.len()], 100);
        if k % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let generated = started.elapsed();
    let mut received_all = None;
    while counters.trades.load(Ordering::Relaxed) < FLOOD as u64 {
        if received_all.is_none()
            && adapters_deribit::FeedMetrics::get(&feed_metrics.trades_received) >= FLOOD as u64
        {
            received_all = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("  (the feed had parsed all {FLOOD} after {received_all:?})");
    let acked = started.elapsed();
    let _ = stop.send(());
    task.await.unwrap();
    println!(
        "throughput: {FLOOD} trades acked in {:.2} s = {:.0} trades/s (the fake needed {:.2} s to send them)",
        acked.as_secs_f64(),
        FLOOD as f64 / acked.as_secs_f64(),
        generated.as_secs_f64()
    );

    // 2. Latency at 5,000 trades/s: 50 trades every 10 ms, 5 per instrument.
    let fake = FakeDeribit::start(market()).await.unwrap();
    let (counters, latencies, stop, task, _) = pipeline(&broker, &registry, &fake).await;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let total = 5_000 * 20;
    for _ in 0..total / 50 {
        tick.tick().await;
        for name in &names {
            fake.trade(name, 5);
        }
    }
    while counters.trades.load(Ordering::Relaxed) < total as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort_unstable();
    println!(
        "latency at 5k trades/s ({} trades): frame → broker ack p50 {} ms, p99 {} ms, max {} ms",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or_default()
    );
}
