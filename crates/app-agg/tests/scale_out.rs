//! Two app-agg instances in one consumer group share the partitions; one is stopped mid-run and
//! the other takes its partitions over from the changelog; then a new instance joins and takes
//! half back (2 → 1 → 2): the output is still complete, any aggregate written twice is
//! byte-identical, and on Apache Kafka (one transaction per cycle) none is written twice.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::{BIN, spawn_instance};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::wait_for;

const INSTRUMENTS: [&str; 8] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "SOL_USDC-PERPETUAL",
    "BTC-27DEC24-70000-C",
    "BTC-27DEC24-60000-P",
    "ETH-27DEC24-4000-C",
    "BTC-28MAR25",
    "ETH-28MAR25",
];

/// The partitions an instance reports lag for, i.e. holds.
fn held_partitions(http: &str) -> usize {
    http_get(http, "/metrics")
        .lines()
        .filter(|l| l.starts_with("app_agg_consumer_lag{"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_work_through_two_to_one_to_two() {
    let (broker, stub) = testkit::topics::pipeline_ground(4).await;
    let batches = common::stream(&INSTRUMENTS, 30, 80);
    let expected = common::uninterrupted(&batches);

    let (a_http, b_http) = (free_http_addr(), free_http_addr());
    let mut a = spawn_instance(&broker, &stub, &a_http, "a");
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &a_http)).await);
    let mut b = spawn_instance(&broker, &stub, &b_http, "b");
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &b_http)).await);
    let shared = wait_for(Duration::from_secs(30), || {
        held_partitions(&a_http) == 2 && held_partitions(&b_http) == 2
    })
    .await;
    assert!(
        shared,
        "4 partitions split 2/2: a {}, b {}",
        held_partitions(&a_http),
        held_partitions(&b_http)
    );

    let third = batches.len() / 3;
    let mut feeder =
        common::Feeder::start(&broker, &stub, batches, Duration::from_millis(60)).await;
    feeder.publish(third).await;
    // B stops (SIGTERM: it finishes its cycle and leaves the group); A takes everything over.
    signal(&b, "TERM");
    assert_eq!(b.wait().unwrap().code(), Some(0));
    feeder.publish(third).await;
    assert!(
        wait_for(Duration::from_secs(30), || held_partitions(&a_http) == 4).await,
        "the survivor holds every partition"
    );
    // A new instance joins (B's transactional id again, as a restarted B would) and takes half.
    let c_http = free_http_addr();
    let mut c = spawn_instance(&broker, &stub, &c_http, "b");
    feeder.publish(usize::MAX).await;
    assert!(
        wait_for(Duration::from_secs(30), || held_partitions(&a_http) == 2
            && held_partitions(&c_http) == 2)
        .await,
        "split 2/2 again: a {}, c {}",
        held_partitions(&a_http),
        held_partitions(&c_http)
    );
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    for instance in [&mut a, &mut c] {
        signal(instance, "TERM");
        assert_eq!(instance.wait().unwrap().code(), Some(0));
    }

    let (union, repeats) = common::union_of(&records);
    eprintln!(
        "{} aggregates from two instances, {repeats} repeated",
        union.len()
    );
    if union != expected {
        let missing: Vec<(&str, i64)> = expected
            .iter()
            .filter(|e| !union.contains(e))
            .map(|e| (e.instrument_name.as_str(), e.window_start))
            .collect();
        let unexpected: Vec<&domain::Aggregate> =
            union.iter().filter(|u| !expected.contains(u)).collect();
        panic!(
            "{} expected, {} got; missing {missing:?}; unexpected {unexpected:#?}",
            expected.len(),
            union.len()
        );
    }
    if !broker.is_mock() {
        assert_eq!(repeats, 0, "read_committed: each aggregate once");
    }
}
