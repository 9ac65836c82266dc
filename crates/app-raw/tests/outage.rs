//! The broker goes down while the market keeps trading and comes back: app-raw keeps running,
//! and the raw topic holds every trade once, in order (30 s down on Apache Kafka, 10 s on the
//! mock cluster).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_kafka::registry::{Registry, RegistryConfig};
use common::{BIN, TOPIC, generated, spawn};
use testkit::process::{free_http_addr, healthcheck, http_get};
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_duplicates_and_reorders_nothing() {
    let mut broker = TestBroker::from_env().await.unwrap();
    let down_for = if broker.is_mock() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(30)
    };
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));

    let http = free_http_addr();
    let mut child = spawn(&broker, &stub, &fake, &http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    let market = |rounds: usize| {
        let fake = &fake;
        async move {
            for _ in 0..rounds {
                fake.trade_all(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    market(20).await;

    broker.take_down().unwrap();
    let down = Instant::now();
    while down.elapsed() < down_for {
        market(1).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "app-raw runs through the outage"
    );
    broker.bring_up().await.unwrap();
    market(20).await;

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
