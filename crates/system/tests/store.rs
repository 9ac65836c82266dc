//! The whole pipeline into PostgreSQL, as processes: FakeDeribit → app-raw → Kafka → app-agg →
//! app-sql. Every committed aggregate is in `bars` once, field for field equal to the decoded
//! Avro record; every raw trade is in `trades` once. Mock cluster, or Apache Kafka (app-agg's
//! cycles then transactions) with `TEST_BROKER=kafka`.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::process::Stdio;
use std::time::Duration;

use adapters_kafka::avro::decode_own_trade;
use adapters_kafka::framing::split_frame;
use adapters_postgres::read;
use domain::{Aggregate, Trade};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::services::{service_binary, spawn_agg, spawn_raw, sql_command};
use testkit::topics::{AGG, RAW};
use testkit::{FakeDeribit, FakeInstrument, TestPostgres, wait_for};

const PARTITIONS: i32 = 2;

fn raw_trades(broker: &testkit::TestBroker) -> Vec<Trade> {
    let mut trades: Vec<Trade> = testkit::topics::values(broker, RAW, PARTITIONS)
        .iter()
        .map(|value| {
            let (id, datum) = split_frame(value).unwrap();
            decode_own_trade(id, datum).unwrap()
        })
        .collect();
    trades
        .sort_by(|a, b| (&a.instrument_name, a.trade_seq).cmp(&(&b.instrument_name, b.trade_seq)));
    trades
}

fn committed_bars(broker: &testkit::TestBroker) -> Vec<Aggregate> {
    let (mut bars, _) = testkit::topics::union_by(
        &testkit::topics::values(broker, AGG, 1),
        common::decode,
        |a| (a.instrument_name.clone(), a.window_ms, a.window_start),
    );
    bars.sort_by(|a, b| {
        (&a.instrument_name, a.window_ms, a.window_start).cmp(&(
            &b.instrument_name,
            b.window_ms,
            b.window_start,
        ))
    });
    bars
}

async fn stored(db: &TestPostgres) -> (Vec<Trade>, Vec<Aggregate>) {
    let client = adapters_postgres::connect::connect(&db.url().parse().unwrap(), "test", "public")
        .await
        .unwrap();
    let trades = read::trades(&client, None, 0, i64::MAX / 4).await.unwrap();
    let query = read::BarQuery {
        to_ms: i64::MAX / 4,
        limit: i64::MAX,
        ..read::BarQuery::default()
    };
    (trades, read::bars(&client, &query).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raw_trade_and_committed_bar_is_stored_once_field_for_field() {
    let (broker, stub) = testkit::topics::pipeline_ground(PARTITIONS).await;
    let db = TestPostgres::start().unwrap();
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    let (raw_http, agg_http, sql_http) = (free_http_addr(), free_http_addr(), free_http_addr());
    let paths =
        ["app-raw", "app-agg", "app-sql"].map(|s| service_binary(s).to_string_lossy().into_owned());
    let mut raw = spawn_raw(
        &paths[0],
        &broker,
        &stub,
        &fake.url(),
        "trades.future.BTC.100ms,trades.option.BTC.100ms",
        &raw_http,
    );
    let mut agg = spawn_agg(&paths[1], &broker, &stub, &agg_http, "store");
    let mut sql = sql_command(&paths[2], &broker, &stub, &db.url(), &sql_http)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || {
            healthcheck(&paths[0], &raw_http)
                && healthcheck(&paths[1], &agg_http)
                && healthcheck(&paths[2], &sql_http)
        })
        .await,
        "services never ready"
    );
    for _ in 0..40 {
        fake.trade_all(2);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Markers keep closing windows after the last trade; then the raw topic is still.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&raw, "TERM");
    assert_eq!(raw.wait().unwrap().code(), Some(0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&agg, "TERM");
    assert_eq!(agg.wait().unwrap().code(), Some(0));

    let (trades, bars) = (raw_trades(&broker), committed_bars(&broker));
    assert!(
        trades.len() > 100 && bars.len() > 10,
        "{} trades, {} bars",
        trades.len(),
        bars.len()
    );
    let mut rows = (Vec::new(), Vec::new());
    for _ in 0..100 {
        rows = stored(&db).await;
        if rows.0.len() >= trades.len() && rows.1.len() >= bars.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&sql, "TERM");
    assert_eq!(sql.wait().unwrap().code(), Some(0));
    assert_eq!(rows.0, trades, "every raw trade, once");
    assert_eq!(
        rows.1, bars,
        "every committed aggregate, once, field for field"
    );
    eprintln!("{} trades and {} bars stored", trades.len(), bars.len());
}
