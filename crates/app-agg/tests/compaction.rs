//! The changelog really is compacted (small segments, eager cleaner), and a restart restores
//! from the compacted changelog exactly: the output equals an uninterrupted run. Transactions
//! off here: their commit markers take offsets too, which would blur "fewer records than
//! offsets" as the sign that the cleaner ran. Apache Kafka only: the mock never compacts.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{AGG, BIN, DLQ, LATE, RAW, STATE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::{SchemaRegistryStub, TestBroker, wait_for};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

/// Records left in changelog partition 0, and the offsets it spans.
fn changelog_records(broker: &TestBroker) -> (usize, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "changelog-check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(STATE, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(STATE, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    (count, high - low)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changelog_compacts_and_a_restart_still_restores_exactly() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("the mock cluster never compacts") {
        return;
    }
    broker.create_topic(RAW, 1, false).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
    broker
        .create_topic_with(
            STATE,
            1,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.ms", "300"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("min.compaction.lag.ms", "0"),
                ("delete.retention.ms", "0"),
            ],
        )
        .await
        .unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let batches = common::stream(&INSTRUMENTS, 40, 30);
    let expected = common::uninterrupted(&batches);
    let mut feeder =
        common::Feeder::start(&broker, &stub, batches, Duration::from_millis(100)).await;

    let without_transactions = |http: &str| {
        common::command(&broker, &stub, http, "compaction")
            .env("AGG_TRANSACTIONS", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = free_http_addr();
    let mut first = without_transactions(&http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    feeder.publish(25).await;
    signal(&first, "TERM");
    assert_eq!(first.wait().unwrap().code(), Some(0));

    // Every cycle rewrote each instrument's state: compaction keeps about one per key.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = changelog_records(&broker);
    while seen.0 as i64 >= seen.1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen = changelog_records(&broker);
    }
    let (left, spanned) = seen;
    eprintln!("changelog: {left} records left of {spanned} offsets");
    assert!(
        (left as i64) < spanned,
        "the cleaner removed superseded states ({left} of {spanned} left)"
    );

    let http = free_http_addr();
    let mut second = without_transactions(&http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    feeder.publish(usize::MAX).await;
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    signal(&second, "TERM");
    assert_eq!(second.wait().unwrap().code(), Some(0));
    let (union, _) = common::union_of(&records);
    assert_eq!(union, expected, "restored from the compacted changelog");
}
