//! app-sql killed with SIGKILL twenty times at random moments (some inside a database
//! transaction) while trades and bars flow, and restarted: every row is stored once, none
//! missing, and no run ever met a row already stored (exactly once, not "at least once, then
//! deduplicated").
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{Ground, bars, conflict_lines, publish, stream};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::wait_for;

const KILLS: usize = 20;
const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26-100000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_and_restart_stores_every_row_exactly_once() {
    let ground = Ground::start(6).await;
    let logs = tempfile::Builder::new()
        .disable_cleanup(true)
        .tempdir()
        .unwrap();
    eprintln!("LOGS {}", logs.path().display());
    let batches = stream(&INSTRUMENTS, 40 * KILLS, 200);
    let bar_list = bars("BTC-PERPETUAL", 2 * KILLS);
    let sink = ground.trade_sink().await;
    let mut next = 0;
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for kill in 0..KILLS {
        let http = free_http_addr();
        let mut child = ground.spawn(&http, &logs.path().join(format!("run-{kill}.log")));
        assert!(
            wait_for(Duration::from_secs(60), || healthcheck(common::BIN, &http)).await,
            "run {kill} never ready"
        );
        ground
            .publish_bars(&bar_list[2 * kill..2 * kill + 2], false)
            .await;
        // Trades flow while it works; the kill comes at a random moment among its writes.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let until = tokio::time::Instant::now() + Duration::from_millis(300 + rng % 900);
        while tokio::time::Instant::now() < until && next < batches.len() {
            publish(&sink, &batches[next..=next]).await;
            next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    publish(&sink, &batches[next..]).await;
    let http = free_http_addr();
    let last = logs.path().join("last.log");
    let mut child = ground.spawn(&http, &last);
    assert!(wait_for(Duration::from_secs(60), || healthcheck(common::BIN, &http)).await);
    let expected = batches.iter().map(Vec::len).sum::<usize>();
    let counts = ground
        .wait_rows(expected, bar_list.len(), Duration::from_secs(90))
        .await;
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(counts, (expected, bar_list.len()));
    let mut all = batches.concat();
    all.sort_by(|a, b| (&a.instrument_name, a.trade_seq).cmp(&(&b.instrument_name, b.trade_seq)));
    assert_eq!(
        ground.stored_trades().await,
        all,
        "no trade missing, none changed"
    );
    assert_eq!(ground.stored_bars().await, bar_list);
    let conflicts: Vec<String> = (0..KILLS)
        .map(|k| logs.path().join(format!("run-{k}.log")))
        .chain([last])
        .flat_map(|log| conflict_lines(&log))
        .collect();
    assert!(conflicts.is_empty(), "rows met twice: {conflicts:?}");
    let server_log = ground.db.log_tail(1_000_000);
    let inside = server_log
        .matches("unexpected EOF on client connection with an open transaction")
        .count();
    eprintln!("{inside} of {KILLS} kills landed inside a database transaction");
    assert!(inside > 0, "some kills land inside a transaction");
}
