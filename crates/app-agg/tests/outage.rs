//! The broker goes down mid-stream and comes back: app-agg keeps running (not ready while it
//! cannot read), and its output equals an uninterrupted run. With transactions on Apache Kafka
//! (30 s down), without on the mock cluster (10 s down).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::time::{Duration, Instant};

use common::{BIN, spawn};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::{SchemaRegistryStub, TestBroker, wait_for};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_waited_out_and_changes_no_aggregate() {
    let mut broker = TestBroker::from_env().await.unwrap();
    let down_for = if broker.is_mock() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(30)
    };
    common::create_topics(&broker, 2).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let batches = common::stream(&INSTRUMENTS, 20, 60);
    let expected = common::uninterrupted(&batches);
    let half = batches.len() / 2;
    let mut feeder = common::Feeder::start(&broker, &stub, batches, Duration::ZERO).await;

    let http = free_http_addr();
    let mut child = spawn(&broker, &stub, &http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    feeder.publish(half).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    broker.take_down().unwrap();
    let down = Instant::now();
    let not_ready = wait_for(down_for, || !healthcheck(BIN, &http)).await;
    let remaining = down_for.saturating_sub(down.elapsed());
    tokio::time::sleep(remaining).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "app-agg runs through the outage"
    );
    assert!(not_ready, "not ready while the broker is down");
    broker.bring_up().await.unwrap();
    feeder.publish(usize::MAX).await;
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(BIN, &http)).await,
        "ready again once the broker is back"
    );

    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "app-agg still runs after the outage"
    );
    signal(&child, "TERM");
    assert_eq!(
        testkit::process::exit_code_within(&mut child, Duration::from_secs(15)).await,
        Some(0)
    );
    let (union, repeats) = common::union_of(&records);
    assert_eq!(
        union, expected,
        "after {down_for:?} without a broker the output is the uninterrupted one"
    );
    if !broker.is_mock() {
        assert_eq!(repeats, 0, "read_committed: each aggregate once");
    }
}
