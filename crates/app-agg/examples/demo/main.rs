//! `just demo`: the whole pipeline on one machine without Docker or internet.
//!
//! Starts the stand-ins (Apache Kafka if `just kafka` fetched it, else librdkafka's mock
//! cluster; the Schema Registry stand-in; a simulated Deribit market), runs app-raw and app-agg
//! as separate processes with 10 s windows (one Kafka transaction per commit cycle on Apache
//! Kafka), and shows the aggregates as they arrive until Ctrl-C.
//!
//! * `--live`: app-raw subscribes to the real Deribit instead of the simulation.
//! * `--stack`: start only the stand-ins (and the simulated market) and print the `export` lines
//!   that point app-raw / app-agg at them.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a terminal program

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::framing::split_frame;
use anyhow::{Context, bail};
use domain::Aggregate;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{FakeDeribit, FakeInstrument, KafkaCluster, SchemaRegistryStub, TestBroker};

const RAW: &str = "deribit.trades";
const AGG: &str = "deribit.trades.agg";
const STATE: &str = "deribit.trades.agg.state";
const PARTITIONS: i32 = 3;
const LIVE_URL: &str = "wss://www.deribit.com/ws/api/v2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Simulated,
    Live,
    StackOnly,
}

fn market() -> Vec<FakeInstrument> {
    vec![
        FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 97_250.0),
        FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_420.0),
        FakeInstrument::new("BTC-26DEC25", "future", "BTC", 98_100.0),
        FakeInstrument::new("BTC-26DEC25-100000-C", "option", "BTC", 0.0315),
        FakeInstrument::new("BTC-26DEC25-90000-P", "option", "BTC", 0.0240),
        FakeInstrument::new("ETH-26DEC25-3500-C", "option", "ETH", 0.0610),
    ]
}

/// Trades in bursts: a quiet tick most of the time, now and then a sweep of many fills.
async fn simulate(fake: Arc<FakeDeribit>, stop: Arc<AtomicBool>) {
    let names: Vec<String> = market().into_iter().map(|i| i.name).collect();
    let mut rng: u64 = 0x5DEE_CE66_D1CE_4E5B;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while !stop.load(Ordering::Relaxed) {
        let r = next();
        // Perpetuals trade most; options least.
        let index = match r % 10 {
            0..=3 => 0,
            4..=6 => 1,
            7 => 2,
            _ => 3 + usize::try_from(r / 10 % 3).unwrap_or(0),
        };
        let burst = if r % 17 == 0 {
            5 + r / 17 % 30
        } else {
            1 + r / 7 % 3
        };
        let drift = 1.0 + (f64::from(u32::try_from(r % 2_001).unwrap_or(1_000)) - 1_000.0) * 2e-6;
        fake.move_price(&names[index], drift);
        fake.trade(&names[index], usize::try_from(burst).unwrap_or(1));
        tokio::time::sleep(Duration::from_millis(30 + next() % 250)).await;
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    // target/<profile>/examples/demo → target/<profile>/<name>
    let exe = std::env::current_exe().context("locating the demo binary")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the demo binary has no target directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} missing: build it first (`just demo` does)",
            path.display()
        );
    }
    Ok(path)
}

fn spawn(name: &str, env: &[(&str, String)], log_dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
    Command::new(sibling(name)?)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {name}"))
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..100 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn render(latest: &BTreeMap<String, Aggregate>, received: usize) -> String {
    let mut out = String::from("\x1b[2J\x1b[H");
    out.push_str(&format!(
        "deribit-kafka demo: aggregates from app-agg ({received} received). Ctrl-C stops.\n\n"
    ));
    out.push_str(&format!(
        "{:<22} {:>8} {:>6} {:>10} {:>12} {:>12} {:>12} {:>12} {:>12}  {}\n",
        "instrument",
        "window",
        "trades",
        "volume",
        "vwap",
        "open",
        "high",
        "low",
        "close",
        "ewma price per half-life"
    ));
    for a in latest.values() {
        let window = chrono_like(a.window_start);
        let ewma: Vec<String> = a
            .ewma
            .iter()
            .map(|e| format!("{}s:{:.4}", e.halflife_ms / 1000, e.price))
            .collect();
        out.push_str(&format!(
            "{:<22} {:>8} {:>6} {:>10.1} {:>12.4} {:>12.4} {:>12.4} {:>12.4} {:>12.4}  {}\n",
            a.instrument_name,
            window,
            a.trade_count,
            a.volume,
            a.vwap,
            a.open,
            a.high,
            a.low,
            a.close,
            ewma.join(" ")
        ));
    }
    out
}

/// `HH:MM:SS` (UTC) of an epoch-ms timestamp.
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Reads the aggregates topic and redraws the table on every new aggregate.
fn watch(bootstrap: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "demo-table")
        .create()
        .context("creating the table's consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(AGG, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let schema = aggregate_schema()?;
    let mut latest = BTreeMap::new();
    let mut received = 0;
    print!("{}", render(&latest, received));
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(message) = message else { continue };
        let Some(payload) = message.payload() else {
            continue;
        };
        let decoded = split_frame(payload)
            .map_err(anyhow::Error::from)
            .and_then(|(id, datum)| Ok(decode_aggregate(id, schema, datum)?));
        match decoded {
            Ok(aggregate) => {
                received += 1;
                latest.insert(aggregate.instrument_name.clone(), aggregate);
                print!("{}", render(&latest, received));
                let _ = std::io::stdout().flush();
            }
            Err(e) => eprintln!("undecodable aggregate: {e}"),
        }
    }
    Ok(())
}

async fn broker() -> anyhow::Result<TestBroker> {
    match KafkaCluster::start().await {
        Ok(kafka) => Ok(TestBroker::Kafka(kafka)),
        Err(e) => {
            eprintln!(
                "Apache Kafka unavailable ({e}); using librdkafka's in-process mock cluster."
            );
            TestBroker::mock().map_err(anyhow::Error::msg)
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mode = match std::env::args().nth(1).as_deref() {
        None => Mode::Simulated,
        Some("--live") => Mode::Live,
        Some("--stack") => Mode::StackOnly,
        Some(other) => bail!("unknown option {other:?}; accepted: --live, --stack"),
    };
    let broker = broker().await?;
    for (topic, partitions, compacted) in [
        (RAW, PARTITIONS, false),
        (AGG, 1, false),
        (STATE, PARTITIONS, true),
        ("deribit.trades.dlq", 1, false),
        ("deribit.trades.late", 1, false),
    ] {
        broker
            .create_topic(topic, partitions, compacted)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let registry = SchemaRegistryStub::start().await?;
    let stop_market = Arc::new(AtomicBool::new(false));
    let (deribit_url, channels) = if mode == Mode::Live {
        (
            LIVE_URL.to_owned(),
            "trades.future.BTC.100ms,trades.future.ETH.100ms".to_owned(),
        )
    } else {
        let fake = Arc::new(FakeDeribit::start(market()).await?);
        tokio::spawn(simulate(Arc::clone(&fake), Arc::clone(&stop_market)));
        let url = fake.url();
        // The fake lives as long as the simulation task holds it.
        (url, "trades.future.BTC.100ms,trades.future.ETH.100ms,trades.option.BTC.100ms,trades.option.ETH.100ms".to_owned())
    };
    let common = vec![
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", registry.url()),
        ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
        (
            "OTEL_SDK_DISABLED",
            std::env::var("OTEL_SDK_DISABLED").unwrap_or_else(|_| "true".to_owned()),
        ),
    ];
    if mode == Mode::StackOnly {
        println!(
            "# Stand-ins are up; paste these, then run app-raw / app-agg (Ctrl-C here stops all):"
        );
        for (k, v) in &common {
            println!("export {k}={v}");
        }
        println!("export DERIBIT_URL={deribit_url}");
        println!("export DERIBIT_CHANNELS={channels}");
        println!("export AGG_WINDOW=10s");
        tokio::signal::ctrl_c().await?;
        stop_market.store(true, Ordering::Relaxed);
        return Ok(());
    }

    let logs = tempfile::Builder::new()
        .prefix("deribit-kafka-demo-")
        .tempdir()?
        .keep();
    let mut raw_env = common.clone();
    raw_env.extend([
        ("DERIBIT_URL", deribit_url),
        ("DERIBIT_CHANNELS", channels),
        ("HTTP_ADDR", "127.0.0.1:18080".to_owned()),
    ]);
    let mut agg_env = common.clone();
    agg_env.extend([
        ("AGG_WINDOW", "10s".to_owned()),
        ("AGG_HALFLIVES", "10s,1m".to_owned()),
        // Windows close on app-raw's progress markers, within about 2 s of their end.
        ("AGG_GRACE", "0s".to_owned()),
        ("HTTP_ADDR", "127.0.0.1:18081".to_owned()),
    ]);
    let mut raw = spawn("app-raw", &raw_env, &logs)?;
    let mut agg = spawn("app-agg", &agg_env, &logs)?;
    eprintln!(
        "app-raw: http://127.0.0.1:18080/metrics, app-agg: http://127.0.0.1:18081/metrics, logs in {}",
        logs.display()
    );

    let stop_table = Arc::new(AtomicBool::new(false));
    let table = {
        let stop = Arc::clone(&stop_table);
        let bootstrap = broker.bootstrap_servers();
        std::thread::spawn(move || watch(&bootstrap, &stop))
    };
    tokio::signal::ctrl_c().await?;
    eprintln!("\nStopping…");
    stop_market.store(true, Ordering::Relaxed);
    stop_table.store(true, Ordering::Relaxed);
    stop(&mut raw);
    stop(&mut agg);
    if let Ok(Err(e)) = table.join() {
        eprintln!("table: {e:#}");
    }
    eprintln!("Stopped. Logs kept in {}", logs.display());
    Ok(())
}
