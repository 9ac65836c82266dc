//! app-agg killed with SIGKILL ten times at random moments while trades flow, and restarted:
//! the union of its output, deduplicated by (instrument, window_start), equals an uninterrupted
//! run, and every repeated aggregate is byte-identical. Windows close by event time only
//! (trades an hour old, AGG_MAX_DELAY=24h), so the expected output is exact.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)] // test helpers

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::split_frame;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use domain::{Aggregate, Aggregator, AggregatorConfig, Direction, Trade, TradeFields, WindowSize};
use ports::{TradeBatch, TradeSink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{SchemaRegistryStub, TestBroker};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];
const BATCHES: usize = 40;
const PER_BATCH: usize = 60;

fn stream() -> Vec<Vec<Trade>> {
    let base = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
        - 3_600_000;
    let base = base - base.rem_euclid(1_000);
    let mut seq = [0u64; 3];
    (0..BATCHES)
        .map(|b| {
            (0..PER_BATCH)
                .map(|k| {
                    let n = b * PER_BATCH + k;
                    let i = (n * 7 + n / 5) % 3;
                    seq[i] += 1;
                    Trade::new(TradeFields {
                        instrument_name: INSTRUMENTS[i].into(),
                        trade_id: format!("{n}"),
                        trade_seq: seq[i],
                        timestamp: base + n as i64 * 37,
                        price: 100.0 + ((n * 13) % 29) as f64 / 7.0,
                        amount: 1.0 + (n % 4) as f64,
                        direction: if n.is_multiple_of(3) {
                            Direction::Sell
                        } else {
                            Direction::Buy
                        },
                        index_price: 100.0,
                        mark_price: 100.0,
                        tick_direction: 1,
                        iv: None,
                        liquidation: None,
                        block_trade_id: None,
                        combo_id: None,
                        contracts: None,
                    })
                    .unwrap()
                })
                .collect()
        })
        .collect()
}

fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        86_400_000,
        vec![2_000, 30_000],
    )
    .unwrap()
}

fn free_addr() -> String {
    format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    )
}

fn ready(addr: &str) -> bool {
    Command::new(env!("CARGO_BIN_EXE_app-agg"))
        .arg("healthcheck")
        .env_clear()
        .env("HTTP_ADDR", addr)
        .status()
        .unwrap()
        .success()
}

fn spawn(broker: &TestBroker, stub: &SchemaRegistryStub, http: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_app-agg"))
        .env_clear()
        .envs([
            ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
            ("SCHEMA_REGISTRY_URL", stub.url()),
            ("AGG_TRANSACTIONS", "false".into()),
            ("AGG_WINDOW", "1s".into()),
            ("AGG_GRACE", "0s".into()),
            ("AGG_MAX_DELAY", "24h".into()),
            ("AGG_HALFLIVES", "2s,30s".into()),
            ("AGG_COMMIT_INTERVAL", "50ms".into()),
            ("KAFKA_SESSION_TIMEOUT", "3s".into()),
            ("HTTP_ADDR", http.to_owned()),
            ("RUST_LOG", "error".into()),
            ("OTEL_SDK_DISABLED", "true".into()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every record of the aggregates topic, raw.
fn aggregates_topic(broker: &TestBroker) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "crash-check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("deribit.trades.agg", 0, Offset::Beginning)
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ten_times_and_restart_gives_the_uninterrupted_output() {
    let broker = TestBroker::from_env().await.unwrap();
    broker
        .create_topic("deribit.trades", 1, false)
        .await
        .unwrap();
    broker
        .create_topic("deribit.trades.agg", 1, false)
        .await
        .unwrap();
    broker
        .create_topic("deribit.trades.agg.state", 1, true)
        .await
        .unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let sink = KafkaTradeSink::connect(
        &KafkaConfig::new(broker.bootstrap_servers()),
        registry,
        "deribit.trades",
    )
    .await
    .unwrap();

    // The uninterrupted run: windows closed by event time, in order.
    let batches = stream();
    let expected: Vec<Aggregate> = {
        let mut agg = Aggregator::new(config());
        let mut out = Vec::new();
        for t in batches.iter().flatten() {
            agg.ingest(t);
            out.extend(agg.drain_closed());
        }
        out
    };
    assert!(expected.len() > 60, "many windows: {}", expected.len());

    // Trades flow while app-agg is killed and restarted.
    let publisher = tokio::spawn(async move {
        for batch in batches {
            sink.publish(TradeBatch {
                trades: batch,
                trace: None,
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    });
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10 {
        let http = free_addr();
        let mut child = spawn(&broker, &stub, &http);
        // Killed only once it has restored its partitions and is working.
        assert!(
            testkit::wait_for(Duration::from_secs(30), || ready(&http)).await,
            "never ready"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(rng % 1_200)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    publisher.await.unwrap();

    // A last run to the end.
    let mut child = spawn(&broker, &stub, &free_addr());
    let mut records = Vec::new();
    for _ in 0..120 {
        records = aggregates_topic(&broker);
        let distinct: std::collections::BTreeSet<Vec<u8>> = records.iter().cloned().collect();
        if distinct.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let mut seen: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
    let mut duplicates = 0;
    for bytes in &records {
        let (id, datum) = split_frame(bytes).unwrap();
        let a = decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap();
        match seen.get(&(a.instrument_name.clone(), a.window_start)) {
            Some(earlier) => {
                assert_eq!(earlier, bytes, "a repeated aggregate is byte-identical");
                duplicates += 1;
            }
            None => {
                seen.insert((a.instrument_name.clone(), a.window_start), bytes.clone());
            }
        }
    }
    let union: Vec<Aggregate> = seen
        .values()
        .map(|b| {
            let (id, datum) = split_frame(b).unwrap();
            decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap()
        })
        .collect();
    let mut expected = expected;
    expected.sort_by(|a, b| {
        (&a.instrument_name, a.window_start).cmp(&(&b.instrument_name, b.window_start))
    });
    eprintln!(
        "{} aggregates, {duplicates} repeated after kills",
        union.len()
    );
    assert_eq!(
        union, expected,
        "killed ten times, the output is the uninterrupted one"
    );
}
