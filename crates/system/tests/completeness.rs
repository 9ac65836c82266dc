//! The whole pipeline on a strict market (FakeDeribit → app-raw → broker → app-agg, both as
//! processes, default settings but 1 s windows): several instruments share one raw partition,
//! and the feed is lost for a while as the market keeps trading. Windows close on app-raw's
//! progress markers, so the aggregates equal `replay` over the market's full history with no
//! trade late: after a 20 s half-open connection, after app-raw is SIGKILLed during the
//! backfill that follows, through a quiet instrument, and while app-raw is stopped.
//! Mock cluster, or Apache Kafka with `TEST_BROKER=kafka`.
//!
//! `COMPLETENESS_QUIET_SECS` / `COMPLETENESS_STOP_SECS` lengthen the quiet market and the stop
//! (`just soak` runs 300 and 120).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // test helpers

mod common;

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use app_agg::replay::replay;
use common::{LATE, decode};
use domain::{Aggregate, AggregatorConfig, WatermarkRule, WindowSize};
use testkit::process::{free_http_addr, healthcheck, http_get, now_ms, signal};
use testkit::services::service_binary;
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

const CHANNELS: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.future.ETH.100ms,trades.option.ETH.100ms";

fn market() -> Vec<FakeInstrument> {
    vec![
        FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 97_000.0),
        FakeInstrument::new("BTC-26JUN26", "future", "BTC", 98_500.0),
        FakeInstrument::new("BTC-26JUN26-100000-C", "option", "BTC", 0.052),
        FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_400.0),
        FakeInstrument::new("ETH-26JUN26-3500-P", "option", "ETH", 0.081),
    ]
}

fn names() -> Vec<String> {
    market().into_iter().map(|i| i.name).collect()
}

/// Everything one test runs: the stand-ins and both services.
struct Pipeline {
    broker: TestBroker,
    stub: SchemaRegistryStub,
    fake: Arc<FakeDeribit>,
    raw: Child,
    raw_http: String,
    agg: Child,
    agg_http: String,
}

impl Drop for Pipeline {
    /// A failed test leaves no service behind.
    fn drop(&mut self) {
        for child in [&mut self.raw, &mut self.agg] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pipeline {
    async fn start() -> Pipeline {
        let broker = TestBroker::from_env().await.unwrap();
        // One raw partition: every instrument shares it.
        common::create_topics(&broker, 1).await;
        let stub = SchemaRegistryStub::start().await.unwrap();
        let fake = Arc::new(FakeDeribit::start(market()).await.unwrap());
        let raw_http = free_http_addr();
        let raw = spawn_raw(&broker, &stub, &fake, &raw_http);
        let agg_http = free_http_addr();
        let agg = common::spawn(&broker, &stub, &agg_http);
        let pipeline = Pipeline {
            broker,
            stub,
            fake,
            raw,
            raw_http,
            agg,
            agg_http,
        };
        assert!(
            wait_for(Duration::from_secs(60), || healthcheck(
                common::bin(),
                &pipeline.agg_http
            ) && healthcheck(
                common::bin(),
                &pipeline.raw_http
            ))
            .await,
            "both services ready"
        );
        pipeline
    }

    fn restart_raw(&mut self) {
        self.raw = spawn_raw(&self.broker, &self.stub, &self.fake, &self.raw_http);
    }

    /// Waits until app-agg has committed every window of the market's history (the market has
    /// stopped), then stops both services; returns the deduplicated aggregates.
    async fn finish(mut self, expected: &[Aggregate]) -> Vec<Aggregate> {
        let records = common::wait_for_aggregates(&self.broker, expected.len()).await;
        let metrics = http_get(&self.agg_http, "/metrics");
        assert!(
            metrics.contains("app_agg_trades_late_total 0"),
            "no trade late:\n{metrics}"
        );
        assert_eq!(common::raw_end_offset(&self.broker, LATE, 0), 0);
        for child in [&mut self.raw, &mut self.agg] {
            assert!(child.try_wait().unwrap().is_none(), "still running");
            signal(child, "TERM");
            assert_eq!(child.wait().unwrap().code(), Some(0));
        }
        let (union, repeats) = common::union_of(&records);
        assert!(self.broker.is_mock() || repeats == 0, "exactly once");
        union
    }
}

fn spawn_raw(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    fake: &FakeDeribit,
    http: &str,
) -> Child {
    testkit::services::spawn_raw(
        service_binary("app-raw").to_str().unwrap(),
        broker,
        stub,
        &fake.url(),
        CHANNELS,
        http,
    )
}

/// Trades `instruments` in turn, one trade every 20 ms, until stopped.
struct Trader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Trader {
    fn start(fake: &Arc<FakeDeribit>, instruments: Vec<String>) -> Trader {
        let stop = Arc::new(AtomicBool::new(false));
        let (fake, flag) = (Arc::clone(fake), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                fake.trade(&instruments[i % instruments.len()], 1 + i % 2);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Trader { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

/// What `app-agg replay` makes of the market's whole history (its order does not matter).
fn replayed(fake: &FakeDeribit) -> Vec<Aggregate> {
    let input: String = names()
        .iter()
        .flat_map(|i| fake.record(i))
        .map(|t| t.to_string() + "\n")
        .collect();
    let config = AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        vec![2_000, 30_000],
    )
    .unwrap();
    let mut output = Vec::new();
    let summary = replay(input.as_bytes(), &mut output, std::io::sink(), config).unwrap();
    assert_eq!((summary.late, summary.duplicates), (0, 0));
    let mut aggregates: Vec<Aggregate> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    aggregates.sort_by(|a, b| {
        (&a.instrument_name, a.window_start).cmp(&(&b.instrument_name, b.window_start))
    });
    aggregates
}

/// The history calls app-raw has made so far.
fn history_calls(fake: &FakeDeribit) -> usize {
    fake.methods()
        .iter()
        .filter(|m| m.starts_with("public/get_last_trades"))
        .count()
}

async fn half_open_connection_for_20s(kill_during_backfill: bool) {
    let mut p = Pipeline::start().await;
    let trader = Trader::start(&p.fake, names());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The socket goes half-open: nothing more arrives, the market trades on. app-raw notices
    // after two heartbeat intervals (20 s by default), reconnects and backfills.
    if kill_during_backfill {
        p.fake.delay_history(Some(Duration::from_secs(2)));
    }
    let calls = history_calls(&p.fake);
    p.fake.go_silent();
    let silent = Instant::now();
    assert!(
        wait_for(Duration::from_secs(60), || p.fake.connections_total() >= 2).await,
        "app-raw reconnected"
    );
    assert!(
        silent.elapsed() >= Duration::from_secs(19),
        "{:?}",
        silent.elapsed()
    );
    if kill_during_backfill {
        assert!(
            wait_for(Duration::from_secs(20), || history_calls(&p.fake) > calls).await,
            "backfilling"
        );
        p.raw.kill().unwrap(); // SIGKILL, answers to its history requests still pending
        p.raw.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.fake.delay_history(None);
        p.restart_raw();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    trader.stop().await;

    let expected = replayed(&p.fake);
    assert!(expected.len() > 100, "many windows: {}", expected.len());
    let got = p.finish(&expected).await;
    assert_eq!(
        got, expected,
        "the aggregates equal replay over the full history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20s_half_open_connection_loses_no_trade_to_lateness() {
    half_open_connection_for_20s(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_raw_killed_during_its_backfill_loses_no_trade_to_lateness() {
    half_open_connection_for_20s(true).await;
}

fn secs_from_env(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// A `read_committed` reader of the aggregates topic that remembers what it has seen, so the
/// moment an aggregate becomes readable is measured to within a poll (50 ms).
struct AggregateWatch {
    consumer: rdkafka::consumer::BaseConsumer,
    seen: Vec<(String, i64, i64)>,
}

impl AggregateWatch {
    fn start(broker: &TestBroker) -> AggregateWatch {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "latency-watch")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(common::AGG, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        AggregateWatch {
            consumer,
            seen: Vec::new(),
        }
    }

    /// When `instrument`'s window starting at `start` became readable (wall clock, ms).
    fn arrival_of(&mut self, instrument: &str, start: i64, within: Duration) -> i64 {
        use rdkafka::message::Message;
        let deadline = Instant::now() + within;
        loop {
            if let Some(&(_, _, at)) = self
                .seen
                .iter()
                .find(|(i, s, _)| i == instrument && *s == start)
            {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "{instrument}'s window at {start} never closed"
            );
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                let a = decode(m.payload().unwrap());
                self.seen
                    .push((a.instrument_name, a.window_start, now_ms()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_instrument_closes_on_time_and_a_stopped_app_raw_closes_nothing_early() {
    let quiet_for = secs_from_env("COMPLETENESS_QUIET_SECS", 15);
    let stopped_for = secs_from_env("COMPLETENESS_STOP_SECS", 15);
    let mut p = Pipeline::start().await;
    let (quiet, busy) = ("ETH-26JUN26-3500-P", names());
    let others: Vec<String> = busy.into_iter().filter(|i| i != quiet).collect();
    let trader = Trader::start(&p.fake, others);
    let mut watch = AggregateWatch::start(&p.broker);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One trade on the quiet instrument, then nothing from it: its window still closes, within
    // margin (1 s) + progress interval (1 s) + commit interval of its end, and nothing follows.
    let trade = p.fake.trade(quiet, 1);
    let ts = trade[0]["timestamp"].as_i64().unwrap();
    let (start, end) = (ts - ts.rem_euclid(1_000), ts - ts.rem_euclid(1_000) + 1_000);
    let arrived =
        tokio::task::block_in_place(|| watch.arrival_of(quiet, start, Duration::from_secs(20)));
    let latency = arrived - end;
    eprintln!("quiet window closed {latency} ms after its end");
    assert!(
        latency <= 1_000 + 1_000 + 50 + 2_000,
        "latency {latency} ms: margin + interval + commit, plus 2 s for scheduling"
    );
    // A busy instrument's window, for comparison: the same rule, the same latency.
    let busy = "BTC-PERPETUAL";
    let busy_start = now_ms() - now_ms().rem_euclid(1_000) + 1_000;
    let arrived =
        tokio::task::block_in_place(|| watch.arrival_of(busy, busy_start, Duration::from_secs(20)));
    let busy_latency = arrived - (busy_start + 1_000);
    eprintln!("busy window closed {busy_latency} ms after its end");
    assert!(
        busy_latency <= 1_000 + 1_000 + 50 + 2_000,
        "latency {busy_latency} ms"
    );
    tokio::time::sleep(quiet_for).await;
    let quiet_aggregates = common::aggregates_topic(&p.broker)
        .iter()
        .map(|r| decode(r))
        .filter(|a| a.instrument_name == quiet)
        .count();
    assert!(quiet_aggregates >= 1);

    // app-raw stops for a while; the market does not. No window after the stop closes.
    signal(&p.raw, "TERM");
    assert_eq!(p.raw.wait().unwrap().code(), Some(0));
    let stopped_at = now_ms();
    tokio::time::sleep(stopped_for).await;
    let latest_end = common::aggregates_topic(&p.broker)
        .iter()
        .map(|r| decode(r).window_end)
        .max()
        .unwrap();
    assert!(
        latest_end <= stopped_at,
        "a window ending {} ms after app-raw stopped closed early",
        latest_end - stopped_at
    );
    p.restart_raw();
    assert!(
        wait_for(Duration::from_secs(30), || healthcheck(
            common::bin(),
            &p.raw_http
        ))
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    trader.stop().await;

    let expected = replayed(&p.fake);
    // The reader goes before the broker does (closing it against none would wait for good).
    drop(watch);
    let got = p.finish(&expected).await;
    assert_eq!(
        got, expected,
        "after the stop every window has the right content"
    );
}
