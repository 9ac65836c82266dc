//! FakeDeribit → app-raw's loop → Kafka (mock cluster, or Apache Kafka with `TEST_BROKER=kafka`) with
//! the registry stub: every trade once, in order, across disconnects and a restart of app-raw.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters_deribit::config::BackoffConfig;
use adapters_deribit::{Channel, DeribitConfig, DeribitFeed};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use app_raw::run::run;
use ports::TradeSink;
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

const TOPIC: &str = "deribit.trades";
const CHANNELS: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.ETH-PERPETUAL.100ms";
const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"];

fn deribit(fake: &FakeDeribit) -> DeribitConfig {
    let mut config = DeribitConfig::new(fake.url(), Channel::parse_list(CHANNELS).unwrap());
    config.silence_timeout = Some(Duration::from_secs(2));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        ..BackoffConfig::default()
    };
    config
}

/// Runs app-raw's loop until the returned sender fires; yields its join handle.
async fn start_app_raw(
    fake: &FakeDeribit,
    kafka: &KafkaConfig,
    registry: &Arc<Registry>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<app_raw::run::RunStats>,
) {
    let sink = KafkaTradeSink::connect(kafka, Arc::clone(registry), TOPIC)
        .await
        .unwrap();
    let seed = sink.last_positions().await.unwrap();
    let mut feed = DeribitFeed::spawn(deribit(fake), seed, None).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let counters = app_raw::run::RunCounters::default();
        let stats = run(
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
        stats
    });
    (stop, task)
}

fn generated(fake: &FakeDeribit) -> BTreeMap<String, Vec<u64>> {
    INSTRUMENTS
        .iter()
        .map(|i| {
            (
                i.to_string(),
                fake.record(i)
                    .iter()
                    .map(|t| t["trade_seq"].as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trade_reaches_kafka_once_in_order_across_disconnects_and_a_restart() {
    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));

    let (stop, task) = start_app_raw(&fake, &kafka, &registry).await;
    assert!(
        wait_for(Duration::from_secs(20), || fake.subscribe_calls().len()
            == 1)
        .await
    );
    for round in 0..5 {
        fake.trade_all(4);
        fake.disconnect_all();
        fake.trade_all(2); // while app-raw reconnects
        assert!(
            wait_for(Duration::from_secs(20), || fake.subscribe_calls().len()
                > round + 1)
            .await
        );
    }
    fake.trade_all(1);
    let total: usize = generated(&fake).values().map(Vec::len).sum();
    assert!(
        wait_for(Duration::from_secs(20), || task.is_finished()
            || fake.connections_open() == 1)
        .await
    );
    // Wait until the loop has published everything generated so far, then stop app-raw.
    let sink = KafkaTradeSink::connect(&kafka, Arc::clone(&registry), TOPIC)
        .await
        .unwrap();
    let mut done = false;
    for _ in 0..200 {
        let positions = sink.last_positions().await.unwrap();
        if INSTRUMENTS
            .iter()
            .all(|i| positions.get(*i).map(|p| p.trade_seq) == Some(fake.record(i).len() as u64))
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "app-raw published everything");
    stop.send(()).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.trades, total as u64);

    // app-raw is down; the market goes on; app-raw comes back and resumes from the topic.
    fake.trade_all(5);
    let (stop, task) = start_app_raw(&fake, &kafka, &registry).await;
    fake.trade_all(1);
    let want = generated(&fake);
    let total: usize = want.values().map(Vec::len).sum();
    let mut got = BTreeMap::new();
    for _ in 0..100 {
        got = common::topic_seqs(&broker, &registry, TOPIC, 3, total).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(
        got, want,
        "every trade exactly once, in order per instrument"
    );
}
