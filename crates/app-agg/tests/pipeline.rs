//! FakeDeribit → app-raw → Kafka → app-agg: the aggregates topic equals `app-agg replay` run
//! on the same trades, field for field, windows closed by app-raw's progress markers. Mock
//! cluster, or Apache Kafka with `TEST_BROKER=kafka`.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::sync::Arc;
use std::time::Duration;

use adapters_deribit::config::BackoffConfig;
use adapters_deribit::{Channel, DeribitConfig, DeribitFeed};
use adapters_kafka::commit::{CommitConfig, KafkaCommitter};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::consumer::{KafkaTradeLog, LogConfig};
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use app_agg::replay::replay;
use app_agg::service::Service;
use common::{AGG, LATE, RAW, STATE, aggregates_topic, create_topics, decode};
use domain::{Aggregate, AggregatorConfig, WatermarkRule, WindowSize};
use ports::{StartPositions, SystemClock};
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

fn aggregator_config(rule: WatermarkRule) -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        rule,
        vec![500, 5_000],
    )
    .unwrap()
}

fn sorted(mut aggregates: Vec<Aggregate>) -> Vec<Aggregate> {
    aggregates.sort_by(|a, b| {
        (&a.instrument_name, a.window_start).cmp(&(&b.instrument_name, b.window_start))
    });
    aggregates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregates_topic_equals_replay_on_the_same_trades() {
    let broker = TestBroker::from_env().await.unwrap();
    create_topics(&broker, 3).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));

    // app-raw
    let sink = KafkaTradeSink::connect(&kafka, Arc::clone(&registry), RAW)
        .await
        .unwrap();
    let mut deribit = DeribitConfig::new(
        fake.url(),
        Channel::parse_list(
            "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.future.ETH.100ms",
        )
        .unwrap(),
    );
    deribit.progress_interval = Duration::from_millis(200);
    deribit.completeness_margin = Duration::from_millis(100);
    deribit.backoff = BackoffConfig {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        ..BackoffConfig::default()
    };
    let mut feed = DeribitFeed::spawn(deribit, StartPositions::new(), None).unwrap();
    let (stop_raw, raw_stopped) = tokio::sync::oneshot::channel::<()>();
    let raw = tokio::spawn(async move {
        let counters = app_raw::run::RunCounters::default();
        app_raw::run::run(
            &mut feed,
            &sink,
            async {
                let _ = raw_stopped.await;
            },
            &counters,
            Duration::from_millis(200),
        )
        .await
        .unwrap()
    });

    // app-agg
    let log = KafkaTradeLog::connect(
        &kafka,
        Arc::clone(&registry),
        &LogConfig {
            topic: RAW.into(),
            group_id: "app-agg".into(),
            session_timeout: Duration::from_secs(3),
        },
    )
    .unwrap();
    let commit = CommitConfig {
        aggregates_topic: AGG.into(),
        changelog_topic: STATE.into(),
        source_topic: RAW.into(),
        late_topic: LATE.into(),
        transactional_id: None,
        timeout: Duration::from_secs(10),
    };
    let committer = KafkaCommitter::connect(&kafka, &registry, log.consumer(), commit)
        .await
        .unwrap();
    let (stop_agg, agg_stopped) = tokio::sync::oneshot::channel::<()>();
    let agg = tokio::spawn(async move {
        let mut service = Service::new(
            log,
            committer,
            SystemClock,
            aggregator_config(WatermarkRule::Markers),
        );
        service
            .run(Duration::from_millis(100), async {
                let _ = agg_stopped.await;
            })
            .await
            .unwrap()
    });

    // The market: bursts spread over several one-second windows.
    assert!(
        wait_for(Duration::from_secs(20), || fake.subscribe_calls().len()
            == 1)
        .await
    );
    for _ in 0..8 {
        fake.trade_all(3);
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let record: Vec<serde_json::Value> = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"]
        .iter()
        .flat_map(|i| fake.record(i))
        .collect();
    let total = record.len() as u64;

    // Wait until app-agg has closed (on app-raw's markers) and committed every window.
    let mut got = Vec::new();
    for _ in 0..60 {
        got = aggregates_topic(&broker)
            .iter()
            .map(|r| decode(r))
            .collect();
        if got.iter().map(|a| a.trade_count).sum::<u64>() == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_raw.send(()).unwrap();
    stop_agg.send(()).unwrap();
    raw.await.unwrap();
    agg.await.unwrap();

    // Replay the very same trades, in time order, through `app-agg replay`'s code path.
    let mut lines: Vec<(i64, String, u64, String)> = record
        .iter()
        .map(|t| {
            (
                t["timestamp"].as_i64().unwrap(),
                t["instrument_name"].as_str().unwrap().to_owned(),
                t["trade_seq"].as_u64().unwrap(),
                t.to_string(),
            )
        })
        .collect();
    lines.sort();
    let input: String = lines
        .into_iter()
        .map(|(_, _, _, json)| json + "\n")
        .collect();
    let mut output = Vec::new();
    let summary = replay(
        input.as_bytes(),
        &mut output,
        std::io::sink(),
        aggregator_config(WatermarkRule::TradeTime { max_delay_ms: 0 }),
    )
    .unwrap();
    assert_eq!(summary.accepted, total);
    let replayed: Vec<Aggregate> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(replayed.len() >= 6, "several windows per instrument");
    assert_eq!(
        sorted(got),
        sorted(replayed),
        "the service's output equals the replay, field for field"
    );
}
