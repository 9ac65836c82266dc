//! The store's write rate, side by side with its references, on one throwaway PostgreSQL
//! (fsync off for all of them alike), `BENCH_TRADES` trades (default 500 000):
//! 1. a bare binary COPY of the rows into `trades` from a plain Rust loop (the limit here);
//! 2. app-sql's write path (`PgStore::write`: COPY into staging, positions, INSERT … SELECT);
//! 3. the JDBC sinks' pattern: one prepared INSERT per row, 1 000 rows per transaction;
//! 4. the app-sql binary end to end, from a raw topic already holding the trades;
//! 5. app-sql under 5 000 trades/s for `BENCH_LOAD_SECS` (default 30): commit latency p50/p99
//!    (from its histogram's buckets) and resident memory.
//!
//! Targets: (4) ≥ 0.7 × (1); (2) ≥ 10 × (3). Parts 4 and 5 need a broker: the mock cluster, or
//! Apache Kafka with `TEST_BROKER=kafka`.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_kafka::avro::{TRADE_SCHEMA_JSON, encode_trade};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::start_frame;
use adapters_kafka::registry::{Registry, RegistryConfig, value_subject};
use adapters_postgres::copy::{TRADE_COLUMNS, TRADE_TYPES, time};
use adapters_postgres::{DatabaseUrl, PgStore, StoreConfig};
use domain::{Direction, Trade, TradeFields, testing};
use futures::pin_mut;
use ports::{PositionMove, Store, StoreBatch, SystemClock, TopicPartition};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use testkit::process::{free_http_addr, http_get, now_ms, rss_mib, signal};
use testkit::{SchemaRegistryStub, TestBroker, TestPostgres};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;

const RAW: &str = "deribit.trades";
const BATCH: usize = 20_000;

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn trades(n: usize, base: i64) -> Vec<Trade> {
    let instruments = [
        "BTC-PERPETUAL",
        "ETH-PERPETUAL",
        "BTC-27DEC26",
        "BTC-27DEC26-100000-C",
    ];
    (0..n)
        .map(|i| {
            Trade::new(TradeFields {
                direction: if i % 3 == 0 {
                    Direction::Sell
                } else {
                    Direction::Buy
                },
                ..testing::fields(
                    instruments[i % instruments.len()],
                    (i / instruments.len()) as u64 + 1,
                    base + i as i64,
                    100.0 + (i % 97) as f64,
                    1.0 + (i % 7) as f64,
                )
            })
            .unwrap()
        })
        .collect()
}

async fn client(db: &TestPostgres) -> tokio_postgres::Client {
    adapters_postgres::connect::connect(&db.url().parse().unwrap(), "bench", "public")
        .await
        .unwrap()
}

async fn fresh(db: &TestPostgres) {
    db.psql("TRUNCATE trades; DELETE FROM positions").unwrap();
}

/// A trade's values that are not its fields as they are (converted for the columns).
struct Owned {
    seq: i64,
    at: std::time::SystemTime,
    tick: i16,
    direction: &'static str,
    liquidation: Option<&'static str>,
}

impl Owned {
    fn of(t: &Trade) -> Owned {
        Owned {
            seq: t.trade_seq as i64,
            at: time(t.timestamp),
            tick: i16::from(t.tick_direction),
            direction: t.direction.as_str(),
            liquidation: t.liquidation.map(domain::Liquidation::as_str),
        }
    }

    /// The row, in `TRADE_COLUMNS` order.
    fn row<'a>(&'a self, t: &'a Trade) -> [&'a (dyn ToSql + Sync); 15] {
        [
            &t.instrument_name,
            &t.trade_id,
            &self.seq,
            &self.at,
            &t.price,
            &t.amount,
            &self.direction,
            &t.index_price,
            &t.mark_price,
            &self.tick,
            &t.iv,
            &self.liquidation,
            &t.block_trade_id,
            &t.combo_id,
            &t.contracts,
        ]
    }
}

/// (1) COPY straight into `trades`, one transaction per batch.
async fn bare_copy(db: &TestPostgres, rows: &[Trade]) -> f64 {
    let mut client = client(db).await;
    let started = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let tx = client.transaction().await.unwrap();
        let sink = tx
            .copy_in(&format!("COPY trades ({TRADE_COLUMNS}) FROM STDIN BINARY"))
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(sink, &TRADE_TYPES);
        pin_mut!(writer);
        for t in chunk {
            let owned = Owned::of(t);
            writer.as_mut().write(&owned.row(t)).await.unwrap();
        }
        writer.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

/// (2) app-sql's store, batch by batch with their positions.
async fn store_path(db: &TestPostgres, rows: &[Trade]) -> f64 {
    let config = StoreConfig {
        url: db.url().parse::<DatabaseUrl>().unwrap(),
        schema: "public".into(),
        group: "bench".into(),
        writer: "bench".into(),
        retention: None,
    };
    let mut store = PgStore::new(config, SystemClock);
    let source = TopicPartition::new(RAW, 0);
    let started = Instant::now();
    let mut from = None;
    for (i, chunk) in rows.chunks(BATCH).enumerate() {
        let to = ((i + 1) * BATCH) as i64;
        let batch = StoreBatch {
            trades: chunk.to_vec(),
            positions: vec![PositionMove {
                source: source.clone(),
                from,
                to,
            }],
            ..StoreBatch::default()
        };
        store.write(&batch).await.unwrap();
        from = Some(to);
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

/// (3) One prepared INSERT per row, 1 000 rows per transaction.
async fn row_inserts(db: &TestPostgres, rows: &[Trade]) -> f64 {
    let mut client = client(db).await;
    let insert = client
        .prepare(&format!(
            "INSERT INTO trades ({TRADE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) ON CONFLICT DO NOTHING"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in rows.chunks(1_000) {
        let tx = client.transaction().await.unwrap();
        for t in chunk {
            let owned = Owned::of(t);
            tx.execute(&insert, &owned.row(t)).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

fn produce(broker: &TestBroker, schema_id: u32, rows: &[Trade]) {
    let producer: BaseProducer = KafkaConfig::new(broker.bootstrap_servers())
        .producer()
        .create()
        .unwrap();
    let mut value = Vec::new();
    for t in rows {
        value.clear();
        start_frame(&mut value, schema_id);
        encode_trade(&mut value, t).unwrap();
        loop {
            match producer.send(BaseRecord::to(RAW).key(&t.instrument_name).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn scrape_count(http: &str, name: &str) -> f64 {
    http_get(http, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn buckets(scrape: &str) -> Vec<(String, f64)> {
    scrape
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("app_sql_commit_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// The smallest bucket bound below which `quantile` of the commits between the two scrapes
/// fall.
fn quantile(before: &str, after: &str, quantile: f64) -> String {
    let earlier = buckets(before);
    let buckets: Vec<(String, f64)> = buckets(after)
        .into_iter()
        .map(|(le, c)| {
            let was = earlier.iter().find(|(l, _)| *l == le).map_or(0.0, |e| e.1);
            (le, c - was)
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, c)| *c >= quantile * total)
        .map_or_else(|| "?".into(), |(le, _)| format!("≤ {le} s"))
}

fn spawn_sql(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    db: &TestPostgres,
    http: &str,
) -> std::process::Child {
    testkit::services::sql_command(env!("CARGO_BIN_EXE_app-sql"), broker, stub, &db.url(), http)
        .env("SQL_BARS", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = count("BENCH_TRADES", 500_000);
    let base = now_ms() - 3_600_000;
    let rows = trades(n, base);
    let db = TestPostgres::start().unwrap();
    let mut c = client(&db).await;
    adapters_postgres::migrate::migrate(&mut c).await.unwrap();
    // The day partitions the rows need exist before any writer starts.
    PgStore::new(
        StoreConfig {
            url: db.url().parse().unwrap(),
            schema: "public".into(),
            group: "warm".into(),
            writer: "warm".into(),
            retention: None,
        },
        SystemClock,
    )
    .maintain()
    .await
    .unwrap();
    println!("{n} trades, batches of {BATCH}, PostgreSQL with fsync off");
    let copy = bare_copy(&db, &rows).await;
    fresh(&db).await;
    let store = store_path(&db, &rows).await;
    fresh(&db).await;
    let slow_rows = &rows[..rows.len().min(100_000)];
    let inserts = row_inserts(&db, slow_rows).await;
    fresh(&db).await;
    println!("bare binary COPY (reference)      {copy:>12.0} trades/s");
    println!(
        "app-sql store path                {store:>12.0} trades/s  ({:.2}× COPY)",
        store / copy
    );
    println!(
        "row-at-a-time INSERT (JDBC sinks) {inserts:>12.0} trades/s  (store path {:.1}× it)",
        store / inserts
    );

    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(RAW, 6, false).await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let schema_id = registry
        .register(&value_subject(RAW), TRADE_SCHEMA_JSON)
        .await
        .unwrap();
    produce(&broker, schema_id, &rows);
    let http = free_http_addr();
    let mut child = spawn_sql(&broker, &stub, &db, &http);
    // Timed from the first rows stored (start-up and the group join are not the write rate).
    let (mut first, mut first_at) = (0.0, None);
    loop {
        let written = scrape_count(&http, "app_sql_rows_written_total{table=\"trades\"}");
        if first_at.is_none() && written > 0.0 {
            (first, first_at) = (written, Some(Instant::now()));
        }
        if written >= n as f64 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "app-sql exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end_to_end = (n as f64 - first) / first_at.map_or(1.0, |t| t.elapsed().as_secs_f64());
    println!(
        "app-sql binary, Kafka → PostgreSQL {end_to_end:>12.0} trades/s  ({:.2}× COPY; {broker:?})",
        end_to_end / copy
    );

    let load_secs = count("BENCH_LOAD_SECS", 30);
    let load = trades(5_000 * load_secs, base + n as i64 + 1);
    let mut peak_rss: f64 = 0.0;
    let before = http_get(&http, "/metrics");
    for second in load.chunks(5_000) {
        let tick = Instant::now();
        produce(&broker, schema_id, second);
        peak_rss = peak_rss.max(rss_mib(child.id()));
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = http_get(&http, "/metrics");
    println!(
        "at 5000 trades/s for {load_secs} s: commit latency p50 {}, p99 {} (histogram buckets); resident memory peak {peak_rss:.1} MiB",
        quantile(&before, &after, 0.5),
        quantile(&before, &after, 0.99)
    );
    signal(&child, "TERM");
    child.wait().unwrap();
}
