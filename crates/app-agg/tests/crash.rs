//! app-agg killed with SIGKILL ten times at random moments while trades flow, and restarted:
//! the union of its output, deduplicated by (instrument, window_start), equals an uninterrupted
//! run, and every repeated aggregate is byte-identical. Windows close by event time only
//! (trades an hour old, AGG_MAX_DELAY=24h), so the expected output is exact.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::config::KafkaConfig;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use common::{BIN, RAW, spawn};
use ports::{TradeBatch, TradeSink};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::{SchemaRegistryStub, TestBroker, wait_for};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ten_times_and_restart_gives_the_uninterrupted_output() {
    let broker = TestBroker::from_env().await.unwrap();
    common::create_topics(&broker, 1).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let sink =
        KafkaTradeSink::connect(&KafkaConfig::new(broker.bootstrap_servers()), registry, RAW)
            .await
            .unwrap();

    let batches = common::stream(&INSTRUMENTS, 40, 60);
    let expected = common::uninterrupted(&batches);
    assert!(expected.len() > 60, "many windows: {}", expected.len());

    // Trades flow while app-agg is killed and restarted.
    let publisher = tokio::spawn(async move {
        for batch in batches {
            sink.publish(TradeBatch {
                trades: batch,
                trace: None,
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    });
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10 {
        let http = free_http_addr();
        let mut child = spawn(&broker, &stub, &http);
        // Killed only once it has restored its partitions and is working.
        assert!(
            wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await,
            "never ready"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(rng % 1_200)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    publisher.await.unwrap();

    // A last run to the end.
    let mut child = spawn(&broker, &stub, &free_http_addr());
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let (union, repeats) = common::union_of(&records);
    eprintln!("{} aggregates, {repeats} repeated after kills", union.len());
    assert_eq!(
        union, expected,
        "killed ten times, the output is the uninterrupted one"
    );
}
