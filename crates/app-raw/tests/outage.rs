//! The broker goes down while the market keeps trading and comes back: app-raw keeps running,
//! and the raw topic holds every trade once, in order (30 s down on Apache Kafka, 10 s on the
//! mock cluster).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::time::{Duration, Instant};

use common::{BIN, TOPIC, generated, spawn};
use testkit::process::{free_http_addr, healthcheck, http_get};
use testkit::{TestBroker, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_duplicates_and_reorders_nothing() {
    let mut broker = TestBroker::from_env().await.unwrap();
    let down_for = if broker.is_mock() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(30)
    };
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let (stub, registry, fake) = common::stand_ins().await;

    let http = free_http_addr();
    let mut child = spawn(&broker, &stub, &fake, &http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    common::trade_rounds(&fake, 20).await;

    broker.take_down().unwrap();
    let down = Instant::now();
    while down.elapsed() < down_for {
        common::trade_rounds(&fake, 1).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "app-raw runs through the outage"
    );
    broker.bring_up().await.unwrap();
    common::trade_rounds(&fake, 20).await;

    let want = generated(&fake);
    let total: usize = want.values().map(Vec::len).sum();
    let got = common::wait_for_topic(&broker, &registry, &want).await;
    let metrics = http_get(&http, "/metrics");
    common::assert_running_then_stop(&mut child).await;
    assert_eq!(
        got, want,
        "every trade once, in order per instrument, after {down_for:?} without a broker\n{metrics}"
    );
    eprintln!("{total} trades across a {down_for:?} outage");
}
