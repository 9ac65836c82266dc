//! app-sql as a process: every trade of the raw topic and every bar of the aggregates topic
//! (schema versions 1 and 2) lands in PostgreSQL once, field for field; a record that cannot be
//! decoded is counted and stepped over; SIGTERM stops it cleanly; a restart reads nothing again.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{Ground, as_v1, bars, conflict_lines, publish, stream};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::topics::RAW;
use testkit::wait_for;

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26-100000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trade_and_bar_of_both_schema_versions_lands_once_field_for_field() {
    let ground = Ground::start(3).await;
    let logs = tempfile::tempdir().unwrap();
    let batches = stream(&INSTRUMENTS, 20, 50);
    let sink = ground.trade_sink().await;
    publish(&sink, &batches[..10]).await;
    let old = bars("BTC-PERPETUAL", 12);
    let new = bars("ETH-PERPETUAL", 15);
    ground.publish_bars(&old, true).await;
    ground.publish_bars(&new, false).await;
    // A record no decoder reads: counted, logged, stepped over.
    let producer: FutureProducer =
        adapters_kafka::config::KafkaConfig::new(ground.broker.bootstrap_servers())
            .producer()
            .create()
            .unwrap();
    producer
        .send(
            FutureRecord::to(RAW)
                .key("BTC-PERPETUAL")
                .payload(&b"\x00\x00\x00\x00\x01junk"[..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let http = free_http_addr();
    let log = logs.path().join("first.log");
    let mut child = ground.spawn(&http, &log);
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(common::BIN, &http)).await,
        "ready"
    );
    publish(&sink, &batches[10..]).await;
    let expected_trades: Vec<_> = {
        let mut all: Vec<_> = batches.concat();
        all.sort_by(|a, b| {
            (&a.instrument_name, a.trade_seq).cmp(&(&b.instrument_name, b.trade_seq))
        });
        all
    };
    let counts = ground
        .wait_rows(
            expected_trades.len(),
            old.len() + new.len(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(counts, (expected_trades.len(), old.len() + new.len()));
    assert_eq!(ground.stored_trades().await, expected_trades);
    let expected_bars: Vec<_> = old.iter().map(as_v1).chain(new.iter().cloned()).collect();
    assert_eq!(ground.stored_bars().await, expected_bars);

    let metrics = http_get(&http, "/metrics");
    assert!(
        metrics.contains("app_sql_unreadable_records_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("app_sql_conflicts_total{table=\"trades\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "app_sql_rows_written_total{{table=\"trades\"}} {}",
            expected_trades.len()
        )),
        "{metrics}"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // A restart resumes from the stored positions: nothing is written again.
    let http = free_http_addr();
    let again = logs.path().join("second.log");
    let mut child = ground.spawn(&http, &again);
    assert!(wait_for(Duration::from_secs(60), || healthcheck(common::BIN, &http)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = http_get(&http, "/metrics");
    assert!(
        metrics.contains("app_sql_rows_written_total{table=\"trades\"} 0"),
        "{metrics}"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(conflict_lines(&log).is_empty() && conflict_lines(&again).is_empty());
    let positions = ground
        .db
        .psql("SELECT topic, partition, next_offset FROM positions ORDER BY 1, 2")
        .unwrap();
    assert_eq!(
        positions.lines().count(),
        4,
        "three raw partitions and one bars partition: {positions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_answer_stalls_the_store_and_loses_nothing() {
    let ground = Ground::start(2).await;
    let logs = tempfile::tempdir().unwrap();
    let batches = stream(&INSTRUMENTS, 4, 50);
    let sink = ground.trade_sink().await;
    publish(&sink, &batches).await;
    ground.publish_bars(&bars("BTC-PERPETUAL", 3), false).await;

    // No registry where it is looked for: the records cannot be read, so none is stepped over.
    let http = free_http_addr();
    let mut child = ground.spawn_with(
        &http,
        &logs.path().join("nowhere.log"),
        &[("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9")],
    );
    assert!(
        wait_for(Duration::from_secs(60), || {
            http_get(&http, "/readyz").contains("source topics cannot be read")
        })
        .await,
        "not ready, and saying why: {}",
        http_get(&http, "/readyz")
    );
    let metrics = http_get(&http, "/metrics");
    assert!(
        metrics.contains("app_sql_unreadable_records_total 0"),
        "{metrics}"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        ground.db.psql("SELECT count(*) FROM positions").unwrap(),
        "0"
    );

    // With the registry, every row lands.
    let http = free_http_addr();
    let mut child = ground.spawn(&http, &logs.path().join("registry.log"));
    let expected = batches.iter().map(Vec::len).sum::<usize>();
    assert_eq!(
        ground.wait_rows(expected, 3, Duration::from_secs(60)).await,
        (expected, 3)
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
