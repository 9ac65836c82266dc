//! Two live instances in one group while trades flow: a second joins (a rebalance moves
//! partitions to it), then leaves (they move back). Neither is fenced, since an instance never
//! writes a partition a rebalance has taken from it, and every row is stored once.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{Ground, conflict_lines, publish, stream};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::wait_for;

const INSTRUMENTS: [&str; 4] = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC-27DEC26",
    "ETH-27DEC26",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_are_never_fenced_and_store_each_row_once() {
    let ground = Ground::start(4).await;
    let logs = tempfile::tempdir().unwrap();
    let batches = stream(&INSTRUMENTS, 120, 150);
    let sink = ground.trade_sink().await;
    let (http_a, http_b) = (free_http_addr(), free_http_addr());
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    // A writes every 3 s: when a rebalance takes partitions from it, it holds many unwritten
    // rows of them, which it must not write (their new owner reads them again).
    let mut a = ground.spawn_with(&http_a, &log_a, &[("SQL_BATCH_INTERVAL", "3s")]);
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            common::BIN,
            &http_a
        ))
        .await
    );
    let mut next = 0;
    let mut flow = async |until: usize| {
        while next < until {
            publish(&sink, &batches[next..=next]).await;
            next += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    };
    flow(30).await;
    let mut b = ground.spawn(&http_b, &log_b);
    flow(60).await;
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            common::BIN,
            &http_b
        ))
        .await
    );
    flow(90).await;
    signal(&b, "TERM");
    flow(120).await;
    assert_eq!(b.wait().unwrap().code(), Some(0), "B left cleanly");
    let expected = batches.iter().map(Vec::len).sum::<usize>();
    let counts = ground.wait_rows(expected, 0, Duration::from_secs(60)).await;
    assert!(a.try_wait().unwrap().is_none(), "A was never fenced");
    signal(&a, "TERM");
    assert_eq!(a.wait().unwrap().code(), Some(0));
    assert_eq!(counts.0, expected);
    let mut all = batches.concat();
    all.sort_by(|x, y| (&x.instrument_name, x.trade_seq).cmp(&(&y.instrument_name, y.trade_seq)));
    assert_eq!(ground.stored_trades().await, all);
    for log in [&log_a, &log_b] {
        assert!(conflict_lines(log).is_empty(), "{:?}", conflict_lines(log));
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("fenced"), "{text}");
    }
}
