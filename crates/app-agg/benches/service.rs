//! app-agg end to end: the real binary consumes a raw topic (`BENCH_INSTRUMENTS`, default 10k,
//! `BENCH_TRADES` trades, default 10 M) on the mock cluster (or Apache Kafka with
//! TEST_BROKER=kafka, one transaction per cycle), aggregates and commits. Prints trades/s, the
//! process's resident memory as it goes and its trades per CPU-second, then, side by side, a bare
//! rdkafka consumer reading the same topic (same reader settings): its records per CPU-second.
//! Target: app-agg ≥ 0.5× the bare consumer.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // a bench binary

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_kafka::avro::{TRADE_SCHEMA_JSON, encode_trade};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::start_frame;
use adapters_kafka::registry::{Registry, RegistryConfig, value_subject};
use domain::{Direction, Trade, TradeFields, testing};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::process::{free_http_addr, http_get, now_ms, rss_mib, signal};
use testkit::{SchemaRegistryStub, TestBroker};

const RAW: &str = "deribit.trades";

/// Until `/readyz` answers 200; a child that exits first (e.g. a refused `KAFKA_PROPERTY_*`)
/// ends the bench with its exit status.
async fn wait_ready(child: &mut std::process::Child, http: &str, every: Duration) {
    while !testkit::process::healthcheck(env!("CARGO_BIN_EXE_app-agg"), http) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("app-agg exited before it was ready: {status}");
        }
        tokio::time::sleep(every).await;
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn metric(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const BACKLOG: u64 = 300_000;

fn consumed(http: &str) -> u64 {
    metric(&http_get(http, "/metrics"), "app_agg_trades_total")
}

/// Every 500 ms: (seconds, trades aggregated, RSS MiB) until all are in; and when the first was.
async fn sample(http: String, pid: u32, total: usize) -> (Vec<(f64, u64, f64)>, f64) {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut first_trade_at = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let trades = consumed(&http);
        if trades > 0 && first_trade_at.is_none() {
            first_trade_at = Some(started.elapsed().as_secs_f64());
        }
        samples.push((started.elapsed().as_secs_f64(), trades, rss_mib(pid)));
        if trades as usize >= total || started.elapsed() > Duration::from_secs(900) {
            return (samples, first_trade_at.unwrap_or(0.0));
        }
    }
}

/// Delivery failures of the fill, with the first reason.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, (): ()) {
        if let Err((e, _)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first
                .lock()
                .unwrap()
                .get_or_insert_with(|| e.to_string());
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instruments: usize = std::env::var("BENCH_INSTRUMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let total: usize = std::env::var("BENCH_TRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(RAW, 3, false).await.unwrap();
    broker
        .create_topic("deribit.trades.agg", 1, false)
        .await
        .unwrap();
    broker
        .create_topic("deribit.trades.agg.state", 3, true)
        .await
        .unwrap();
    broker
        .create_topic("deribit.trades.dlq", 1, false)
        .await
        .unwrap();
    broker
        .create_topic("deribit.trades.late", 1, false)
        .await
        .unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let schema_id = registry
        .register(&value_subject(RAW), TRADE_SCHEMA_JSON)
        .await
        .unwrap();

    // BENCH_RESTART_LOG=FILE keeps the restarted instance's log (at info) to time its start-up.
    let restart_log = std::env::var_os("BENCH_RESTART_LOG").map(std::path::PathBuf::from);
    let spawn = |http: &str, log: Option<&std::path::Path>| {
        let stdout = log.map_or_else(Stdio::null, |path| {
            Stdio::from(std::fs::File::create(path).unwrap())
        });
        Command::new(env!("CARGO_BIN_EXE_app-agg"))
            .env_clear()
            .envs([
                ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
                ("SCHEMA_REGISTRY_URL", stub.url()),
                ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
                ("AGG_TRANSACTIONAL_ID", "app-agg-bench".to_owned()),
                ("AGG_WINDOWS", "1m".to_owned()),
                // The fill writes trades only (no progress markers): trade time closes windows.
                ("AGG_WATERMARK", "trades".to_owned()),
                ("AGG_MAX_DELAY", "24h".to_owned()),
                ("HTTP_ADDR", http.to_owned()),
                (
                    "RUST_LOG",
                    if log.is_some() {
                        "info,adapters_kafka::changelog=debug,adapters_kafka::tail=debug"
                    } else {
                        "warn"
                    }
                    .to_owned(),
                ),
                ("OTEL_SDK_DISABLED", "true".to_owned()),
            ])
            // Allocator and librdkafka knobs pass through for comparison runs.
            .envs(std::env::vars().filter(|(k, _)| {
                k.starts_with("MALLOC_")
                    || k.starts_with("_RJEM_MALLOC_")
                    || k.starts_with("KAFKA_PROPERTY_")
            }))
            .stdout(stdout)
            .spawn()
            .unwrap()
    };
    let http = free_http_addr();
    let mut child = spawn(&http, None);
    wait_ready(&mut child, &http, Duration::from_millis(50)).await;
    let pid = child.id();
    let sampler = tokio::spawn(sample(http.clone(), pid, total));
    // Fill: half an hour of event time an hour ago, round-robin over the instruments.
    let names: Vec<String> = (0..instruments)
        .map(|i| format!("BTC-INSTR-{i:05}"))
        .collect();
    let producer: BaseProducer<Deliveries> = KafkaConfig::new(broker.bootstrap_servers())
        .producer()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create_with_context(Deliveries::default())
        .unwrap();
    let base = now_ms() - 3_600_000;
    let span_ms = 1_800_000.0;
    let mut buf = Vec::with_capacity(256);
    for n in 0..total {
        let i = n % instruments;
        let trade = Trade::new(TradeFields {
            trade_id: n.to_string(),
            direction: if n % 3 == 0 {
                Direction::Sell
            } else {
                Direction::Buy
            },
            ..testing::fields(
                &names[i],
                (n / instruments) as u64 + 1,
                base + (n as f64 * span_ms / total as f64) as i64,
                100.0 + (n % 97) as f64 * 0.01,
                1.0 + (n % 5) as f64,
            )
        })
        .unwrap();
        buf.clear();
        start_frame(&mut buf, schema_id);
        encode_trade(&mut buf, &trade).unwrap();
        let mut record = BaseRecord::to(RAW).key(names[i].as_str()).payload(&buf);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
            }
        }
        if n % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
        // The mock cluster keeps a bounded log: stay at most BACKLOG trades ahead of app-agg.
        if n % 50_000 == 0 {
            while n as u64 > consumed(&http) + BACKLOG {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "produced {total} trades over {instruments} instruments, at most {BACKLOG} ahead of app-agg"
    );
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        println!(
            "fill: {failed} deliveries failed, first: {:?}",
            producer.context().first.lock().unwrap()
        );
    }

    let (samples, first_trade_at) = sampler.await.unwrap();
    let (elapsed, done, _) = *samples.last().unwrap();
    let windows = metric(
        &http_get(&http, "/metrics"),
        "app_agg_windows_emitted_total",
    );
    let cpu = cpu_seconds(pid);
    // Restart with every instrument's state in the changelog: SIGKILL, start, until ready.
    child.kill().unwrap();
    let _ = child.wait();
    let http = free_http_addr();
    let restarted = Instant::now();
    let mut child = spawn(&http, restart_log.as_deref());
    wait_ready(&mut child, &http, Duration::from_millis(10)).await;
    let restart = restarted.elapsed();
    signal(&child, "TERM");
    let _ = child.wait();
    let from = first_trade_at;
    println!(
        "app-agg: {done} trades in {:.1} s = {:.0} trades/s (from the first trade; {windows} windows emitted)",
        elapsed - from,
        done as f64 / (elapsed - from)
    );
    println!(
        "app-agg used {cpu:.1} CPU-seconds: {:.0} trades per CPU-second (this machine's 2 cores also run the broker and the producer)",
        done as f64 / cpu
    );
    println!(
        "restart with {instruments} instruments' state: SIGKILL → /readyz 200 in {:.2} s (target ≤ 2 s)",
        restart.as_secs_f64()
    );
    println!("resident memory (MiB) by progress:");
    let mut next = 0.0;
    for (t, trades, rss) in &samples {
        let progress = *trades as f64 / total as f64;
        if progress >= next {
            println!(
                "  {:>5.1} s  {:>5.1} %  {rss:>6.1} MiB",
                t,
                progress * 100.0
            );
            next = progress + 0.1;
        }
    }
    let max = samples.iter().map(|s| s.2).fold(0.0, f64::max);
    println!("  max {max:.1} MiB (target ≤ 64 MiB)");

    let (read, bare_cpu, bare_wall) = bare_consumer(&broker.bootstrap_servers(), total);
    println!(
        "bare rdkafka consumer: {read} records in {bare_wall:.1} s, {bare_cpu:.1} CPU-seconds = {:.0} records per CPU-second",
        read as f64 / bare_cpu
    );
    println!(
        "ratio app-agg/bare per CPU-second: {:.2} (target >= 0.5)",
        (done as f64 / cpu) / (read as f64 / bare_cpu)
    );
}

/// Reads the whole raw topic with a plain consumer (the consumer settings app-agg uses, no
/// decoding): records read, CPU-seconds this process spent, wall seconds.
fn bare_consumer(bootstrap: &str, total: usize) -> (usize, f64, f64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = KafkaConfig::new(bootstrap)
        .group_consumer("bench-bare", Duration::from_secs(10), None)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(RAW, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (cpu_before, started) = (cpu_seconds(std::process::id()), Instant::now());
    let (mut read, mut eof, mut bytes) = (0usize, 0, 0usize);
    while read < total && eof < 3 && started.elapsed() < Duration::from_secs(600) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                read += 1;
                bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    std::hint::black_box(bytes);
    (
        read,
        cpu_seconds(std::process::id()) - cpu_before,
        started.elapsed().as_secs_f64(),
    )
}
