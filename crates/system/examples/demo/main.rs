//! `just demo`: the whole pipeline on one machine without Docker or internet.
//!
//! Starts the stand-ins (Apache Kafka if `just kafka` fetched it, else librdkafka's mock
//! cluster; the Schema Registry stand-in; a simulated Deribit market listing today's
//! instruments), runs app-raw and app-agg as separate processes with 10 s windows (one Kafka
//! transaction per commit cycle on Apache Kafka), and shows the aggregates as they arrive until
//! Ctrl-C, which stops the services first, then the stand-ins.
//!
//! * `--live`: app-raw subscribes to the real Deribit instead of the simulation.
//! * `--seed N`: the simulation's random seed (printed on screen; random by default).
//! * `--stack`: start only the stand-ins (and the simulated market) and print the `export` lines
//!   that point app-raw / app-agg at them.
//!
//! The services' binaries come from `testkit::services`, which has cargo build them (with the
//! demo's profile) before anything starts; the topics are those app-agg's configuration names by
//! default, and the live URL is adapters-deribit's `PRODUCTION_URL`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a terminal program

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters_deribit::config::PRODUCTION_URL;
use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::framing::split_frame;
use anyhow::{Context, bail};
use app_agg::config::{AggConfig, Settings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::signal::unix::SignalKind;

use testkit::kafka::KafkaOptions;
use testkit::process::{free_http_addr, http_get, now_ms, required_env_with};
use testkit::services::service_binaries;
use testkit::{FakeDeribit, KafkaCluster, SchemaRegistryStub, TestBroker};

mod market;
mod screen;
mod services;
mod store;

use market::{Date, Listed};
use screen::{Board, Source};
use services::{Services, spawn};

/// Partitions of the raw topic (and of the changelog, partitioned like it).
const PARTITIONS: i32 = 3;
const WINDOW_MS: i64 = 10_000;
/// How long a service may take to become ready before the screen says why it is not.
const READY_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Simulated,
    Live,
    StackOnly,
}

/// Trades in bursts: a quiet tick most of the time, now and then a sweep of many fills.
async fn simulate(fake: Arc<FakeDeribit>, names: Vec<String>, seed: u64, stop: Arc<AtomicBool>) {
    // xorshift never leaves 0.
    let mut rng: u64 = seed.max(1);
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

/// The settings app-agg runs with when only the required variables are set: the topic names
/// the services use by default.
fn default_settings() -> anyhow::Result<Settings> {
    <AggConfig as app_agg::config::ServiceVariables>::settings_from(&required_env_with(&[]))
        .context("app-agg's default settings")
}

/// What the table thread draws from.
struct Screen {
    board: Mutex<Board>,
    source: Source,
    listed: Vec<Listed>,
}

impl Screen {
    fn draw(&self) {
        let text = match self.board.lock() {
            Ok(board) => screen::render(&board, &self.source, &self.listed, WINDOW_MS),
            Err(_) => return,
        };
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

/// Reads the aggregates topic and redraws the screen on every new aggregate, and every second
/// for news about the services.
fn watch(bootstrap: &str, topic: &str, screen: &Screen, stop: &AtomicBool) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "demo-table")
        .create()
        .context("creating the table's consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let schema = aggregate_schema()?;
    screen.draw();
    let mut drawn = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if drawn.elapsed() > Duration::from_secs(1) {
            screen.draw();
            drawn = Instant::now();
        }
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
        if let Ok(mut board) = screen.board.lock() {
            match decoded {
                Ok(aggregate) => board.add(aggregate),
                Err(e) => board.problems.push(format!("undecodable aggregate: {e}")),
            }
        }
        screen.draw();
        drawn = Instant::now();
    }
    Ok(())
}

/// Why the service at `addr` is not ready (its `/readyz` answer), if it is not.
fn not_ready(addr: &str) -> Option<String> {
    let response = http_get(addr, "/readyz");
    if response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let reason = response
        .split("\r\n\r\n")
        .nth(1)
        .map(|body| {
            body.trim()
                .trim_start_matches("not ready")
                .trim_start_matches(':')
                .trim()
        })
        .filter(|r| !r.is_empty() && *r != "not ready")
        .unwrap_or("no reason given");
    Some(reason.to_owned())
}

/// The message of the last WARN or ERROR line of a service's text log, clipped to fit a line.
fn last_warning(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(" WARN ") || l.contains(" ERROR "))?;
    // `<time>  WARN <target>: <message>`: the message is what a reader needs.
    let message = line.split_once(": ").map_or(line, |(_, m)| m);
    Some(message.chars().take(100).collect())
}

/// Every 2 s after [`READY_GRACE`], asks each service whether it is ready and puts the answer
/// of those that are not on the screen (off the signal loop: a hung service can take seconds).
fn watch_readiness(
    services: &[(&'static str, String)],
    logs: &Path,
    screen: &Screen,
    stop: &AtomicBool,
) {
    let mut next_check = Instant::now() + READY_GRACE;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() < next_check {
            continue;
        }
        next_check = Instant::now() + Duration::from_secs(2);
        let lines: Vec<String> = services
            .iter()
            .filter_map(|(name, addr)| {
                not_ready(addr).map(|reason| {
                    let log = logs.join(format!("{name}.log"));
                    let last = last_warning(&log)
                        .map_or_else(String::new, |w| format!("; last warning: {w}"));
                    format!(
                        "{name} not ready: {reason}{last}; its log: {}",
                        log.display()
                    )
                })
            })
            .collect();
        if let Ok(mut board) = screen.board.lock() {
            board.not_ready = lines;
        }
    }
}

async fn broker() -> anyhow::Result<TestBroker> {
    let options = KafkaOptions {
        own_process_group: true,
        ..KafkaOptions::default()
    };
    match KafkaCluster::start_nodes(1, options).await {
        Ok(kafka) => Ok(TestBroker::Kafka(kafka)),
        Err(e) => {
            eprintln!(
                "Apache Kafka unavailable ({e}); using librdkafka's in-process mock cluster."
            );
            TestBroker::mock().map_err(anyhow::Error::msg)
        }
    }
}

const USAGE: &str = "\
Usage: demo [--live | --stack] [--seed N]

Both services and every stand-in on this machine (Apache Kafka if `just kafka` fetched it, else
librdkafka's mock cluster; the Schema Registry stand-in; a simulated Deribit market), aggregates
shown as they arrive until Ctrl-C.

  --live      app-raw subscribes to the real Deribit instead of the simulation
  --stack     start only the stand-ins and print the `export` lines for app-raw / app-agg
  --seed N    the simulation's random seed (random by default; shown on screen)
  --help      this text";

/// The command line: `[--live | --stack] [--seed N]`; `None` for `--help`.
fn arguments() -> anyhow::Result<Option<(Mode, u64)>> {
    let mut mode = Mode::Simulated;
    // A new market each run unless a seed is given.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::from(d.subsec_micros()) % 1_000_000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--live" => mode = Mode::Live,
            "--stack" => mode = Mode::StackOnly,
            "--seed" => {
                let value = args.next().context("--seed needs a number")?;
                seed = value
                    .parse()
                    .with_context(|| format!("--seed {value:?}: expected a whole number"))?;
            }
            "--help" | "-h" => return Ok(None),
            other => bail!("unknown option {other:?}; accepted: --live, --stack, --seed N, --help"),
        }
    }
    Ok(Some((mode, seed)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let Some((mode, seed)) = arguments()? else {
        println!("{USAGE}");
        return Ok(());
    };
    if mode != Mode::StackOnly {
        // Built (or found fresh) before anything starts: cargo's output stays above the table.
        service_binaries().map_err(anyhow::Error::msg)?;
    }
    let listed = market::market(Date::of_millis(now_ms()));
    let settings = default_settings()?;
    let broker = broker().await?;
    for topic in settings.topics() {
        // The raw topic and its changelog with a few partitions; the others with one (the table
        // reads partition 0 of the aggregates topic).
        let partitions = if topic.name == settings.log.topic || topic.partitioned_like.is_some() {
            PARTITIONS
        } else {
            1
        };
        broker
            .create_topic(&topic.name, partitions, topic.compacted)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let registry = SchemaRegistryStub::start().await?;
    let stop_market = Arc::new(AtomicBool::new(false));
    let (deribit_url, channels, source) = if mode == Mode::Live {
        (
            PRODUCTION_URL.to_owned(),
            "trades.future.BTC.100ms,trades.future.ETH.100ms".to_owned(),
            Source::Live {
                url: PRODUCTION_URL.to_owned(),
            },
        )
    } else {
        let instruments = listed.iter().map(|l| l.instrument.clone()).collect();
        let fake = Arc::new(FakeDeribit::start(instruments).await?);
        let names = listed.iter().map(|l| l.instrument.name.clone()).collect();
        tokio::spawn(simulate(
            Arc::clone(&fake),
            names,
            seed,
            Arc::clone(&stop_market),
        ));
        let url = fake.url();
        // The fake lives as long as the simulation task holds it.
        (
            url,
            "trades.future.BTC.100ms,trades.future.ETH.100ms,trades.option.BTC.100ms,trades.option.ETH.100ms".to_owned(),
            Source::Simulated { seed },
        )
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
        println!("export AGG_WINDOWS=10s");
        tokio::signal::ctrl_c().await?;
        stop_market.store(true, Ordering::Relaxed);
        return Ok(());
    }

    let logs = tempfile::Builder::new()
        .prefix("deribit-kafka-demo-")
        .tempdir()?
        .keep();
    let (raw_addr, agg_addr) = (free_http_addr(), free_http_addr());
    let mut raw_env = common.clone();
    raw_env.extend([
        ("DERIBIT_URL", deribit_url),
        ("DERIBIT_CHANNELS", channels),
        ("HTTP_ADDR", raw_addr.clone()),
    ]);
    let mut agg_env = common.clone();
    agg_env.extend([
        ("AGG_WINDOWS", format!("{}s", WINDOW_MS / 1000)),
        ("AGG_HALFLIVES", "10s,1m".to_owned()),
        // Windows close on app-raw's progress markers, within about 2 s of their end.
        ("AGG_GRACE", "0s".to_owned()),
        ("HTTP_ADDR", agg_addr.clone()),
    ]);
    let mut services = Services(vec![("app-raw", spawn("app-raw", &raw_env, &logs)?)]);
    services
        .0
        .push(("app-agg", spawn("app-agg", &agg_env, &logs)?));
    let store = store::start(&common, &logs, &mut services);

    let board = Board {
        footer: format!(
            "metrics: http://{raw_addr}/metrics (app-raw), http://{agg_addr}/metrics (app-agg); logs in {}\n{}",
            logs.display(),
            store.line
        ),
        ..Board::default()
    };
    let screen = Arc::new(Screen {
        board: Mutex::new(board),
        source,
        listed,
    });
    let stop_table = Arc::new(AtomicBool::new(false));
    let table = {
        let (stop, screen) = (Arc::clone(&stop_table), Arc::clone(&screen));
        let bootstrap = broker.bootstrap_servers();
        let topic = settings.commit.aggregates_topic.clone();
        std::thread::spawn(move || watch(&bootstrap, &topic, &screen, &stop))
    };
    let readiness = {
        let (stop, screen) = (Arc::clone(&stop_table), Arc::clone(&screen));
        let addrs = vec![("app-raw", raw_addr.clone()), ("app-agg", agg_addr.clone())];
        let logs = logs.clone();
        std::thread::spawn(move || watch_readiness(&addrs, &logs, &screen, &stop))
    };
    // Ctrl-C, `kill` or a closed terminal: the same orderly stop.
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for (name, status) in services.exited() {
                    let log = logs.join(format!("{name}.log"));
                    if let Ok(mut board) = screen.board.lock() {
                        board.problems.push(format!("{name} exited ({status}); its log: {}", log.display()));
                    }
                }
            }
        }
    }
    let stopping = Instant::now();
    eprintln!("\nStopping the services, then the stand-ins…");
    stop_table.store(true, Ordering::Relaxed);
    services.stop();
    let _ = readiness.join();
    stop_market.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = table.join() {
        eprintln!("table: {e:#}");
    }
    drop(store);
    drop(registry);
    drop(broker);
    eprintln!(
        "Stopped in {:.1} s. Logs kept in {}",
        stopping.elapsed().as_secs_f64(),
        logs.display()
    );
    Ok(())
}
