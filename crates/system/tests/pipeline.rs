//! FakeDeribit → app-raw → Kafka → app-agg: the aggregates topic equals `app-agg replay` run
//! on the same trades, field for field, 1 s bars and 2 s bars rolled up from them, windows
//! closed by app-raw's progress markers; also
//! when poisonous trades come from Deribit and poisonous records sit in the raw topic. Mock
//! cluster, or Apache Kafka with `TEST_BROKER=kafka`.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
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
use common::{AGG, LATE, RAW, STATE, aggregates_topic, decode};
use domain::{Aggregate, AggregatorConfig, WatermarkRule, WindowSize};
use ports::{StartPositions, SystemClock};
use testkit::{FakeDeribit, FakeInstrument, TestBroker, wait_for};

fn aggregator_config(rule: WatermarkRule) -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        rule,
        vec![500, 5_000],
    )
    .and_then(|c| c.with_rollups([WindowSize::from_millis(2_000).unwrap()]))
    .unwrap()
}

fn sorted(mut aggregates: Vec<Aggregate>) -> Vec<Aggregate> {
    aggregates.sort_by(|a, b| {
        (&a.instrument_name, a.window_start, a.window_ms).cmp(&(
            &b.instrument_name,
            b.window_start,
            b.window_ms,
        ))
    });
    aggregates
}

/// Trades counted by the bars of one size.
fn counted(aggregates: &[Aggregate], window_ms: i64) -> u64 {
    aggregates
        .iter()
        .filter(|a| a.window_ms == window_ms)
        .map(|a| a.trade_count)
        .sum()
}

/// What a pipeline run produced, and what replay makes of the same trades.
struct Outcome {
    got: Vec<Aggregate>,
    replayed: Vec<Aggregate>,
    invalid_from_deribit: u64,
    dead_lettered: u64,
    late_copies: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregates_topic_equals_replay_on_the_same_trades() {
    let outcome = run_pipeline(false).await;
    assert_eq!(outcome.invalid_from_deribit, 0);
    assert_eq!((outcome.dead_lettered, outcome.late_copies), (0, 0));
    assert_eq!(
        sorted(outcome.got),
        sorted(outcome.replayed),
        "the service's output equals the replay, field for field"
    );
}

/// Deribit sends trades that would stop or poison the pipeline (identifiers beyond a long, a
/// time at `i64::MAX` or in 2099, a price of 1.79e308, a negative amount) and another
/// writer puts undecodable records and a trade stamped 2099 into the raw topic. Both services
/// keep running; each is refused and counted where it enters (the 2099 trade waits in its own
/// window: under markers it cannot move the watermark); every other aggregate is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisonous_trades_are_refused_where_they_enter_and_the_rest_stays_exact() {
    let outcome = run_pipeline(true).await;
    assert_eq!(
        outcome.invalid_from_deribit, 6,
        "app-raw refused and counted each"
    );
    assert_eq!(
        outcome.dead_lettered, 2,
        "app-agg dead-lettered the undecodable records"
    );
    assert_eq!(
        outcome.late_copies, 0,
        "nothing closed early, so nothing is late"
    );
    assert_eq!(
        sorted(outcome.got),
        sorted(outcome.replayed),
        "the other trades' aggregates are exact"
    );
}

/// Deribit's poison: one notification of six trades, each breaking one bound.
fn poison_from_deribit(fake: &FakeDeribit) {
    let template = fake.record("BTC-PERPETUAL").pop().unwrap();
    let kinds: [(&str, serde_json::Value); 6] = [
        (
            "trade_seq",
            serde_json::json!(9_223_372_036_854_775_808_u64),
        ),
        ("trade_seq", serde_json::json!(u64::MAX)),
        ("timestamp", serde_json::json!(i64::MAX)),
        ("timestamp", serde_json::json!(4_070_908_800_000_i64)),
        ("price", serde_json::json!(1.79e308)),
        ("amount", serde_json::json!(-1.0)),
    ];
    let next_seq = template["trade_seq"].as_u64().unwrap() + 1;
    let data: Vec<serde_json::Value> = kinds
        .into_iter()
        .map(|(field, value)| {
            let mut trade = template.clone();
            if field == "timestamp" {
                // Taken for the next trade, it would turn the real one into a duplicate.
                trade["trade_seq"] = serde_json::json!(next_seq);
            }
            trade[field] = value;
            trade
        })
        .collect();
    fake.send_raw(
        &serde_json::json!({"jsonrpc": "2.0", "method": "subscription",
            "params": {"channel": "trades.future.BTC.100ms", "data": data}})
        .to_string(),
    );
}

/// Another writer's poison in the raw topic: bad framing, a cut-off record, and a trade of an
/// instrument of its own stamped 2099 (under the trades rule it would close every window).
async fn poison_in_raw_topic(broker: &TestBroker, registry: &Registry) {
    let id = registry
        .register(
            &adapters_kafka::registry::value_subject(RAW),
            adapters_kafka::avro::TRADE_SCHEMA_JSON,
        )
        .await
        .unwrap();
    let mut far_ahead = Vec::new();
    adapters_kafka::framing::start_frame(&mut far_ahead, id);
    let trade = domain::testing::trade("FAR-FUTURE-PERPETUAL", 1, 4_070_908_800_000, 1.0, 1.0);
    adapters_kafka::avro::encode_trade(&mut far_ahead, &trade).unwrap();
    let cut_off = far_ahead[..far_ahead.len() - 3].to_vec();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    for value in [vec![7, 0, 0, 0, 1, 2], cut_off, far_ahead] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(RAW)
                    .key("BTC-PERPETUAL")
                    .payload(&value)
                    .partition(0),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
}

/// Runs the pipeline over a market of bursts; with `poison`, both kinds of poison mid-way.
async fn run_pipeline(poison: bool) -> Outcome {
    let (broker, stub) = testkit::topics::pipeline_ground(3).await;
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
    let feed_metrics = feed.metrics();
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
            instance_id: None,
        },
    )
    .unwrap();
    let dead_lettered = log.dead_lettered();
    let commit = CommitConfig {
        aggregates_topic: AGG.into(),
        changelog_topic: STATE.into(),
        source_topic: RAW.into(),
        late_topic: LATE.into(),
        transactional_id: None,
        timeout: Duration::from_secs(10),
    };
    let committer = KafkaCommitter::connect(&kafka, &registry, log.group_offsets(), commit)
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
    for round in 0..8 {
        fake.trade_all(3);
        if poison && round == 3 {
            poison_from_deribit(&fake);
            poison_in_raw_topic(&broker, &registry).await;
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let record: Vec<serde_json::Value> = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"]
        .iter()
        .flat_map(|i| fake.record(i))
        .collect();
    let total = record.len() as u64;

    // Wait until app-agg has closed (on app-raw's markers) and committed every window, of both
    // sizes.
    let mut got = Vec::new();
    for _ in 0..60 {
        got = aggregates_topic(&broker)
            .iter()
            .map(|r| decode(r))
            .collect();
        if counted(&got, 1_000) == total && counted(&got, 2_000) == total {
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
    Outcome {
        got,
        replayed,
        invalid_from_deribit: feed_metrics.invalid_trades.load(Ordering::Relaxed),
        dead_lettered: dead_lettered.load(Ordering::Relaxed),
        late_copies: common::raw_end_offset(&broker, LATE, 0),
    }
}
