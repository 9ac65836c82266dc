//! Helpers shared by app-sql's process tests: the ground they stand on (a broker, the registry
//! stand-in, a throwaway PostgreSQL), app-sql started from this package's binary, producers of
//! trades and bars (both schema versions), and the rows read back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    dead_code
)] // test helpers; not every test uses every helper

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::{AGGREGATE_SCHEMA_JSON, encode_aggregate};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::start_frame;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use adapters_postgres::read;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use domain::{Aggregate, Direction, EwmaValue, Trade, TradeFields, testing};
use ports::{TradeBatch, TradeSink};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::topics::{AGG, RAW};
use testkit::{SchemaRegistryStub, TestBroker, TestPostgres};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_app-sql");

/// Version 1 of the aggregate schema, as it was published.
pub const AGGREGATE_V1: &str =
    include_str!("../../../adapters-kafka/schemas/trade_aggregate.v1.avsc");

/// Where app-sql's tests stand: a broker with the raw and aggregates topics, the registry
/// stand-in, a PostgreSQL.
pub struct Ground {
    /// The broker `TEST_BROKER` names.
    pub broker: TestBroker,
    /// The registry stand-in.
    pub stub: SchemaRegistryStub,
    /// The database.
    pub db: TestPostgres,
}

impl Ground {
    /// A ground with `partitions` raw partitions and one aggregates partition.
    pub async fn start(partitions: i32) -> Ground {
        let broker = TestBroker::from_env().await.unwrap();
        broker.create_topic(RAW, partitions, false).await.unwrap();
        broker.create_topic(AGG, 1, false).await.unwrap();
        let stub = SchemaRegistryStub::start().await.unwrap();
        let db = TestPostgres::start().unwrap();
        Ground { broker, stub, db }
    }

    /// app-sql as the tests run it (`testkit::services::sql_command`): 100 ms batches, 3 s
    /// sessions, on `http`; `CHILD_LOG` sets its `RUST_LOG` (default `warn`).
    pub fn command(&self, http: &str) -> Command {
        testkit::services::sql_command(BIN, &self.broker, &self.stub, &self.db.url(), http)
    }

    /// Starts [`Ground::command`] with its log in `log`.
    pub fn spawn(&self, http: &str, log: &std::path::Path) -> Child {
        self.spawn_with(http, log, &[])
    }

    /// As [`Ground::spawn`], with `settings` added to (or overriding) the tests' ones.
    pub fn spawn_with(
        &self,
        http: &str,
        log: &std::path::Path,
        settings: &[(&str, &str)],
    ) -> Child {
        self.command(http)
            .envs(settings.iter().copied())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The trades stored, in (instrument, trade_seq) order.
    pub async fn stored_trades(&self) -> Vec<Trade> {
        let client = self.client().await;
        read::trades(&client, None, 0, i64::MAX / 4).await.unwrap()
    }

    /// The bars stored, in (instrument, window_ms, window_start) order.
    pub async fn stored_bars(&self) -> Vec<Aggregate> {
        let client = self.client().await;
        let query = read::BarQuery {
            from_ms: 0,
            to_ms: i64::MAX / 4,
            limit: i64::MAX,
            ..read::BarQuery::default()
        };
        read::bars(&client, &query).await.unwrap()
    }

    async fn client(&self) -> tokio_postgres::Client {
        adapters_postgres::connect::connect(&self.db.url().parse().unwrap(), "test", "public")
            .await
            .unwrap()
    }

    /// Waits until `trades` trades and `bars` bars are stored (at most `within`).
    pub async fn wait_rows(&self, trades: usize, bars: usize, within: Duration) -> (usize, usize) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let counts = self
                .db
                .psql("SELECT (SELECT count(*) FROM trades) || ' ' || (SELECT count(*) FROM bars)")
                .ok()
                .and_then(|text| {
                    let (t, b) = text.split_once(' ')?;
                    Some((t.parse().ok()?, b.parse().ok()?))
                })
                .unwrap_or((0, 0));
            if counts >= (trades, bars) || tokio::time::Instant::now() >= deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A producer of raw trades (the raw schema registered).
    pub async fn trade_sink(&self) -> KafkaTradeSink {
        let kafka = KafkaConfig::new(self.broker.bootstrap_servers());
        KafkaTradeSink::connect(&kafka, self.registry(), RAW)
            .await
            .unwrap()
    }

    fn registry(&self) -> Arc<Registry> {
        Arc::new(Registry::new(RegistryConfig::new(self.stub.url())).unwrap())
    }

    /// Publishes `bars` to the aggregates topic, written with schema version 2, or version 1
    /// (`v1`: without window_ms, seq_gaps, late_trades).
    pub async fn publish_bars(&self, bars: &[Aggregate], v1: bool) {
        let subject = format!("{AGG}-value");
        let producer: FutureProducer = KafkaConfig::new(self.broker.bootstrap_servers())
            .producer()
            .create()
            .unwrap();
        let (schema, id) = if v1 {
            let id = self.stub.register(&subject, AGGREGATE_V1).unwrap();
            (
                Some(apache_avro::Schema::parse_str(AGGREGATE_V1).unwrap()),
                id,
            )
        } else {
            (
                None,
                self.stub.register(&subject, AGGREGATE_SCHEMA_JSON).unwrap(),
            )
        };
        for bar in bars {
            let mut value = Vec::new();
            start_frame(&mut value, id);
            match &schema {
                Some(v1) => value.extend(
                    GenericDatumWriter::builder(v1)
                        .build()
                        .unwrap()
                        .write_value_to_vec(v1_value(bar))
                        .unwrap(),
                ),
                None => encode_aggregate(&mut value, bar).unwrap(),
            }
            producer
                .send(
                    FutureRecord::to(AGG)
                        .key(&bar.instrument_name)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
}

fn v1_value(bar: &Aggregate) -> Value {
    let long = |v: u64| Value::Long(v as i64);
    Value::Record(vec![
        (
            "instrument_name".into(),
            Value::String(bar.instrument_name.clone()),
        ),
        (
            "window_start".into(),
            Value::TimestampMillis(bar.window_start),
        ),
        ("window_end".into(), Value::TimestampMillis(bar.window_end)),
        ("trade_count".into(), long(bar.trade_count)),
        ("volume".into(), Value::Double(bar.volume)),
        ("buy_volume".into(), Value::Double(bar.buy_volume)),
        ("sell_volume".into(), Value::Double(bar.sell_volume)),
        ("vwap".into(), Value::Double(bar.vwap)),
        ("open".into(), Value::Double(bar.open)),
        ("high".into(), Value::Double(bar.high)),
        ("low".into(), Value::Double(bar.low)),
        ("close".into(), Value::Double(bar.close)),
        (
            "ewma".into(),
            Value::Array(
                bar.ewma
                    .iter()
                    .map(|e| {
                        Value::Record(vec![
                            ("halflife_ms".into(), Value::Long(e.halflife_ms)),
                            ("price".into(), Value::Double(e.price)),
                            ("vw_price".into(), Value::Double(e.vw_price)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("first_trade_seq".into(), long(bar.first_trade_seq)),
        ("last_trade_seq".into(), long(bar.last_trade_seq)),
        (
            "first_trade_timestamp".into(),
            Value::TimestampMillis(bar.first_trade_timestamp),
        ),
        (
            "last_trade_timestamp".into(),
            Value::TimestampMillis(bar.last_trade_timestamp),
        ),
    ])
}

/// A deterministic stream of `batches` × `per_batch` trades over `instruments`, an hour old,
/// trade_seq increasing per instrument, some sells, some with optional fields.
pub fn stream(instruments: &[&str], batches: usize, per_batch: usize) -> Vec<Vec<Trade>> {
    let base = testkit::process::now_ms() - 3_600_000;
    let mut seq = vec![0u64; instruments.len()];
    (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|k| {
                    let n = b * per_batch + k;
                    let i = (n * 7 + n / 5) % instruments.len();
                    seq[i] += 1;
                    Trade::new(TradeFields {
                        direction: if n.is_multiple_of(3) {
                            Direction::Sell
                        } else {
                            Direction::Buy
                        },
                        iv: n.is_multiple_of(4).then_some(40.0 + (n % 9) as f64),
                        block_trade_id: n.is_multiple_of(50).then(|| format!("B{n}")),
                        ..testing::fields(
                            instruments[i],
                            seq[i],
                            base + n as i64 * 37,
                            100.0 + ((n * 13) % 29) as f64 / 8.0,
                            1.0 + (n % 4) as f64,
                        )
                    })
                    .unwrap()
                })
                .collect()
        })
        .collect()
}

/// Publishes `batches` through `sink`, each followed by a progress marker (as app-raw writes).
pub async fn publish(sink: &KafkaTradeSink, batches: &[Vec<Trade>]) {
    for trades in batches {
        let complete_to = trades.iter().map(|t| t.timestamp).max();
        sink.publish(TradeBatch {
            trades: trades.clone(),
            trace: None,
        })
        .await
        .unwrap();
        if let Some(at) = complete_to {
            sink.publish_progress(at).await.unwrap();
        }
    }
}

/// `count` distinct 1-minute bars of `instrument`, an hour old, with two half-lives.
pub fn bars(instrument: &str, count: usize) -> Vec<Aggregate> {
    let base = testkit::process::now_ms() - 3_600_000;
    let base = base - base.rem_euclid(60_000);
    (0..count)
        .map(|i| {
            let start = base + i as i64 * 60_000;
            let price = 100.0 + i as f64 / 4.0;
            Aggregate {
                instrument_name: instrument.into(),
                window_start: start,
                window_end: start + 60_000,
                window_ms: 60_000,
                trade_count: 1 + i as u64,
                volume: 10.0 + i as f64,
                buy_volume: 6.0 + i as f64,
                sell_volume: 4.0,
                vwap: price + 0.125,
                open: price,
                high: price + 1.5,
                low: price - 0.75,
                close: price + 0.5,
                ewma: vec![
                    EwmaValue {
                        halflife_ms: 30_000,
                        price: price + 0.25,
                        vw_price: price + 0.375,
                    },
                    EwmaValue {
                        halflife_ms: 300_000,
                        price: price - 0.25,
                        vw_price: price - 0.375,
                    },
                ],
                first_trade_seq: 10 * i as u64 + 1,
                last_trade_seq: 10 * i as u64 + 1 + i as u64,
                first_trade_timestamp: start + 10,
                last_trade_timestamp: start + 59_000,
                seq_gaps: Some(i as u64 % 3),
                late_trades: Some(i as u64 % 2),
            }
        })
        .collect()
}

/// A bar as a version-1 reader would have it: no completeness stamp.
pub fn as_v1(bar: &Aggregate) -> Aggregate {
    Aggregate {
        seq_gaps: None,
        late_trades: None,
        ..bar.clone()
    }
}

/// The lines of `log` that report rows already stored (exactly once means none).
pub fn conflict_lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Rows already stored were skipped"))
        .map(str::to_owned)
        .collect()
}
