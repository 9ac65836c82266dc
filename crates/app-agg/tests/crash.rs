//! app-agg killed with SIGKILL twenty times at random moments while trades flow, and restarted:
//! the union of its output, deduplicated by (instrument, window_start), equals an uninterrupted
//! run, and every repeated aggregate is byte-identical. Windows close by event time only
//! (trades an hour old, AGG_MAX_DELAY=24h), so the expected output is exact.
//!
//! On Apache Kafka each cycle is a transaction: a `read_committed` reader sees every aggregate
//! exactly once, and a `read_uncommitted` reader sees more records than that (the aborted
//! transactions of kills that landed mid-cycle), which proves the kills did.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::{BIN, spawn};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::wait_for;

const KILLS: usize = 20;
const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_and_restart_gives_the_uninterrupted_output_exactly_once() {
    let (broker, stub) = testkit::topics::pipeline_ground(1).await;

    let batches = common::stream(&INSTRUMENTS, 4 * KILLS, 60);
    let expected = common::uninterrupted(&batches);
    assert!(expected.len() > 60, "many windows: {}", expected.len());

    // Trades flow while app-agg is killed and restarted; each kill comes a few ms after a
    // batch was published, when the cycle that writes its closed windows is likely running.
    let mut feeder =
        common::Feeder::start(&broker, &stub, batches, Duration::from_millis(150)).await;
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..KILLS {
        let http = free_http_addr();
        let mut child = spawn(&broker, &stub, &http);
        // Killed only once it has restored its partitions and is working.
        assert!(
            wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await,
            "never ready"
        );
        feeder.publish(3).await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(rng % 80)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    feeder.publish(usize::MAX).await;

    // A last run to the end.
    let mut child = spawn(&broker, &stub, &free_http_addr());
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let (union, repeats) = common::union_of(&records);
    eprintln!("{} aggregates, {repeats} repeated after kills", union.len());
    assert_eq!(
        union, expected,
        "killed {KILLS} times, the output is the uninterrupted one"
    );
    if !broker.is_mock() {
        assert_eq!(
            repeats, 0,
            "read_committed sees each aggregate exactly once"
        );
        let uncommitted = common::aggregates_topic_as(&broker, "read_uncommitted");
        eprintln!(
            "read_uncommitted: {} records, {} of aborted transactions",
            uncommitted.len(),
            uncommitted.len() - records.len()
        );
        assert!(
            uncommitted.len() > records.len(),
            "some kills landed inside a transaction (aborted records visible uncommitted)"
        );
    }
}
