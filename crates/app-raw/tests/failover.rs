//! Three Apache Kafka brokers, the raw topic with three replicas and `min.insync.replicas=2`:
//! the leader of the busiest partition is killed (SIGKILL) while the market trades and started
//! again later. app-raw keeps running and the raw topic holds every trade once, in order.
//! Apache Kafka only: the mock cluster has no replication to fail over.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::time::{Duration, Instant};

use common::{BIN, TOPIC, generated, spawn};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::process::{free_http_addr, healthcheck};
use testkit::{KafkaCluster, KafkaOptions, TestBroker, wait_for};

/// (partition, leader node id, high watermark) of every partition of `topic`; asked again while
/// the client happens to ask the dead node.
fn partitions(bootstrap: &str, topic: &str) -> Vec<(i32, i32, i64)> {
    let ask = || -> Result<Vec<(i32, i32, i64)>, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
                Ok((p.id(), p.leader(), high))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ask() {
            Ok(partitions) => return partitions,
            Err(e) if Instant::now() < deadline => eprintln!("metadata, again: {e}"),
            Err(e) => panic!("metadata of {topic}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_partition_leader_loses_and_duplicates_nothing() {
    if TestBroker::from_env().await.unwrap().is_mock() {
        eprintln!("skipped: the mock cluster has no replication; this runs on Apache Kafka");
        return;
    }
    let mut broker = TestBroker::Kafka(
        KafkaCluster::start_nodes(3, KafkaOptions::default())
            .await
            .unwrap(),
    );
    broker
        .create_topic_with(TOPIC, 3, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    let (stub, registry, fake) = common::stand_ins().await;

    let http = free_http_addr();
    let mut child = spawn(&broker, &stub, &fake, &http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    common::trade_rounds(&fake, 40).await;

    let bootstrap = broker.bootstrap_servers();
    let (partition, leader, _) = partitions(&bootstrap, TOPIC)
        .into_iter()
        .max_by_key(|&(_, _, high)| high)
        .unwrap();
    eprintln!("killing node {leader}, leader of busy partition {partition}");
    let kafka = broker.kafka_mut().unwrap();
    kafka.kill(usize::try_from(leader).unwrap());
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        common::trade_rounds(&fake, 1).await;
    }
    let new_leader = partitions(&bootstrap, TOPIC)
        .into_iter()
        .find(|&(p, _, _)| p == partition)
        .map(|(_, l, _)| l);
    assert_ne!(new_leader, Some(leader), "another replica leads");
    kafka
        .start_node(usize::try_from(leader).unwrap())
        .await
        .unwrap();
    common::trade_rounds(&fake, 40).await;

    let want = generated(&fake);
    let total: usize = want.values().map(Vec::len).sum();
    let got = common::wait_for_topic(&broker, &registry, &want).await;
    common::assert_running_then_stop(&mut child).await;
    assert_eq!(
        got, want,
        "every trade once, in order per instrument, across the leader's death"
    );
    eprintln!("{total} trades across a leader failover");
}
