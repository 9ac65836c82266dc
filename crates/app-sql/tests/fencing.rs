//! A zombie: instance A is frozen (SIGSTOP) while it holds rows read and not yet written,
//! instance B takes its partitions and stores on, A is resumed: A's write is refused because
//! B moved the positions, A exits with the fenced code 3, and no row is stored twice.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{Ground, conflict_lines, publish, stream};
use testkit::process::{exit_code_within, free_http_addr, healthcheck, signal};
use testkit::wait_for;

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_zombie_exits_fenced_and_no_row_is_stored_twice() {
    let ground = Ground::start(2).await;
    let logs = tempfile::tempdir().unwrap();
    let batches = stream(&INSTRUMENTS, 30, 40);
    let sink = ground.trade_sink().await;
    let (http_a, http_b) = (free_http_addr(), free_http_addr());
    let log_a = logs.path().join("a.log");
    // A writes every 3 s, so it holds unwritten rows most of the time.
    let mut a = ground.spawn_with(&http_a, &log_a, &[("SQL_BATCH_INTERVAL", "3s")]);
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            common::BIN,
            &http_a
        ))
        .await
    );
    publish(&sink, &batches[..10]).await;
    ground.wait_rows(400, 0, Duration::from_secs(30)).await;
    publish(&sink, &batches[10..15]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&a, "STOP");

    let log_b = logs.path().join("b.log");
    let mut b = ground.spawn(&http_b, &log_b);
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            common::BIN,
            &http_b
        ))
        .await
    );
    publish(&sink, &batches[15..25]).await;
    ground.wait_rows(1000, 0, Duration::from_secs(60)).await;

    signal(&a, "CONT");
    assert_eq!(
        exit_code_within(&mut a, Duration::from_secs(60)).await,
        Some(3),
        "A exits fenced"
    );
    let fenced = std::fs::read_to_string(&log_a).unwrap();
    assert!(fenced.contains("fenced"), "{fenced}");
    publish(&sink, &batches[25..]).await;
    let expected = batches.iter().map(Vec::len).sum::<usize>();
    let counts = ground.wait_rows(expected, 0, Duration::from_secs(60)).await;
    signal(&b, "TERM");
    assert_eq!(b.wait().unwrap().code(), Some(0));
    assert_eq!(counts.0, expected);
    let mut all = batches.concat();
    all.sort_by(|a, b| (&a.instrument_name, a.trade_seq).cmp(&(&b.instrument_name, b.trade_seq)));
    assert_eq!(ground.stored_trades().await, all);
    for log in [&log_a, &log_b] {
        assert!(conflict_lines(log).is_empty(), "{:?}", conflict_lines(log));
    }
}
