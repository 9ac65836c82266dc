//! History equals live: the pipeline (FakeDeribit → app-raw → broker → app-agg, processes) runs
//! on a trading market for a while; then `app-raw history` fetches a range from the same
//! Deribit and `app-agg replay` makes bars of the file. Every bar of a window fully inside the
//! range equals the bar the live pipeline committed for it, whole decoded aggregate for whole
//! aggregate (so fields added to the aggregate are compared too). The range starts before the
//! market's first trade, so the EWMA, which is continuous across windows, starts alike.
//! Mock cluster, or Apache Kafka with `TEST_BROKER=kafka`.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use app_raw::history::args::format_utc;
use domain::Aggregate;
use testkit::process::{free_http_addr, healthcheck, now_ms};
use testkit::services::service_binary;
use testkit::{FakeDeribit, FakeInstrument, wait_for};

const CHANNELS: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.future.ETH.100ms";

fn market() -> Vec<FakeInstrument> {
    vec![
        FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 97_000.0),
        FakeInstrument::new("BTC-26JUN26", "future", "BTC", 98_500.0),
        FakeInstrument::new("BTC-26JUN26-100000-C", "option", "BTC", 0.052),
        FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_400.0),
    ]
}

/// Both services; killed if the test fails.
struct Services(Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

type Key = (String, i64, i64);

fn key(a: &Aggregate) -> Key {
    (a.instrument_name.clone(), a.window_start, a.window_end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_from_history_equal_the_live_bars_of_the_same_windows() {
    let (broker, stub) = testkit::topics::pipeline_ground(3).await;
    let fake = Arc::new(FakeDeribit::start(market()).await.unwrap());
    let (raw_http, agg_http) = (free_http_addr(), free_http_addr());
    let raw_bin = service_binary("app-raw").to_str().unwrap();
    let _services = Services(vec![
        testkit::services::spawn_raw(raw_bin, &broker, &stub, &fake.url(), CHANNELS, &raw_http),
        common::spawn(&broker, &stub, &agg_http),
    ]);
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            common::bin(),
            &agg_http
        ) && healthcheck(
            common::bin(),
            &raw_http
        ))
        .await,
        "both services ready"
    );

    // The market: a trade every 15 ms in turn, one burst of more than a page on one timestamp.
    let from = (now_ms() / 1000 - 1) * 1000;
    let names: Vec<String> = market().into_iter().map(|i| i.name).collect();
    let mut to = 0;
    for i in 0..400 {
        fake.trade(&names[i % names.len()], 1 + i % 3);
        if i == 120 {
            fake.trade("BTC-PERPETUAL", 1_500);
        }
        if i == 300 {
            // The range ends on a second boundary while the market trades on.
            to = (now_ms() / 1000) * 1000;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    // History over [from, to), then replay with the live app-agg's settings.
    let dir = tempfile::tempdir().unwrap();
    let trades = dir.path().join("history.jsonl");
    let bars = dir.path().join("bars.jsonl");
    // `app-raw history` over [from, to) of the fake's channels; the caller adds where to.
    let (from_utc, to_utc) = (format_utc(from), format_utc(to));
    let history_command =
        || testkit::services::history_command(raw_bin, &fake.url(), &from_utc, &to_utc, CHANNELS);
    let history = history_command()
        .arg("--output")
        .arg(&trades)
        .output()
        .unwrap();
    let history_err = String::from_utf8_lossy(&history.stderr);
    assert!(history.status.success(), "{history_err}");
    assert!(history_err.contains("done: 4 instruments"), "{history_err}");
    let replay = Command::new(common::bin())
        .env_clear()
        .args([
            "replay",
            "--window",
            "1s",
            "--halflife",
            "2s,30s",
            "--grace",
            "0s",
            "--input",
        ])
        .arg(&trades)
        .arg("--output")
        .arg(&bars)
        .output()
        .unwrap();
    let replay_err = String::from_utf8_lossy(&replay.stderr);
    // What a person sees (the README's example comes from here; `-- --nocapture` shows it).
    let text = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    eprintln!(
        "{history_err}{replay_err}first trade: {}\nfirst bar: {}",
        text(&trades).lines().next().unwrap_or_default(),
        text(&bars).lines().next().unwrap_or_default()
    );
    assert!(replay.status.success(), "{replay_err}");
    assert!(replay_err.contains("0 duplicates, 0 late"), "{replay_err}");
    let from_history: BTreeMap<Key, Aggregate> = std::fs::read_to_string(&bars)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Aggregate>(l).unwrap())
        .filter(|a| a.window_start >= from && a.window_end <= to)
        .map(|a| (key(&a), a))
        .collect();
    assert!(from_history.len() >= 4 * 3, "{} bars", from_history.len());

    // The live bars of the same windows, once app-agg has committed them all.
    let wanted: BTreeSet<Key> = from_history.keys().cloned().collect();
    let mut live: BTreeMap<Key, Aggregate> = BTreeMap::new();
    let complete = wait_for(Duration::from_secs(60), || {
        live = common::aggregates_topic(&broker)
            .iter()
            .map(|r| common::decode(r))
            .filter(|a| wanted.contains(&key(a)))
            .map(|a| (key(&a), a))
            .collect();
        live.len() == wanted.len()
    })
    .await;
    assert!(
        complete,
        "live committed {} of {} windows",
        live.len(),
        wanted.len()
    );
    for (k, bar) in &from_history {
        assert_eq!(Some(bar), live.get(k), "bar {k:?}");
    }
    // And the live pipeline has no bar inside the range that history lacks.
    let live_keys: BTreeSet<Key> = common::aggregates_topic(&broker)
        .iter()
        .map(|r| key(&common::decode(r)))
        .filter(|(_, start, end)| *start >= from && *end <= to)
        .collect();
    assert_eq!(live_keys, wanted, "the same windows have bars");

    // With --topic, the same trades in the same order go to a topic through app-raw's sink.
    broker.create_topic(HISTORY_TOPIC, 1, false).await.unwrap();
    let published = history_command()
        .envs([
            ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
            ("SCHEMA_REGISTRY_URL", stub.url()),
        ])
        .args(["--topic", HISTORY_TOPIC])
        .output()
        .unwrap();
    let published_err = String::from_utf8_lossy(&published.stderr);
    assert!(published.status.success(), "{published_err}");
    let in_file: Vec<(String, u64)> = std::fs::read_to_string(&trades)
        .unwrap()
        .lines()
        .map(|l| {
            let t: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                t["instrument_name"].as_str().unwrap().to_owned(),
                t["trade_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        topic_trades(&broker),
        in_file,
        "the topic holds the file's trades in its order"
    );
}

const HISTORY_TOPIC: &str = "history.trades";

/// (instrument, trade_seq) of every trade in partition 0 of [`HISTORY_TOPIC`], in order.
fn topic_trades(broker: &testkit::TestBroker) -> Vec<(String, u64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "history-check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(HISTORY_TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let schema = adapters_kafka::avro::trade_schema().unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(value) = m.payload() else { continue };
                let (id, datum) = adapters_kafka::framing::split_frame(value).unwrap();
                let trade = adapters_kafka::avro::decode_trade(id, schema, datum).unwrap();
                out.push((trade.instrument_name.clone(), trade.trade_seq));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}
