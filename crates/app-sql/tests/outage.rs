//! PostgreSQL stopped for 20 s mid-stream and started again: app-sql keeps running, is not
//! ready while the database is down (and says why), and stores every row once it is back.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::{Ground, conflict_lines, publish, stream};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::wait_for;

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];

/// How long the database stays down (`SQL_OUTAGE_SECS` shortens it for a quick look).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("SQL_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_for_twenty_seconds_loses_nothing() {
    let mut ground = Ground::start(2).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("app-sql.log");
    let batches = stream(&INSTRUMENTS, 30, 40);
    let sink = ground.trade_sink().await;
    let http = free_http_addr();
    let mut child = ground.spawn(&http, &log);
    assert!(wait_for(Duration::from_secs(60), || healthcheck(common::BIN, &http)).await);
    publish(&sink, &batches[..10]).await;
    ground.wait_rows(400, 0, Duration::from_secs(30)).await;

    ground.db.stop().unwrap();
    publish(&sink, &batches[10..20]).await;
    assert!(
        wait_for(Duration::from_secs(15), || !healthcheck(common::BIN, &http)).await,
        "not ready while the database is down"
    );
    let readyz = http_get(&http, "/readyz");
    assert!(
        readyz.contains("the database cannot be reached"),
        "{readyz}"
    );
    tokio::time::sleep(outage()).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after the outage"
    );
    ground.db.restart().unwrap();
    publish(&sink, &batches[20..]).await;

    let expected = batches.iter().map(Vec::len).sum::<usize>();
    let counts = ground.wait_rows(expected, 0, Duration::from_secs(60)).await;
    assert!(
        wait_for(Duration::from_secs(15), || healthcheck(common::BIN, &http)).await,
        "ready again"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(counts.0, expected);
    let mut all = batches.concat();
    all.sort_by(|a, b| (&a.instrument_name, a.trade_seq).cmp(&(&b.instrument_name, b.trade_seq)));
    assert_eq!(ground.stored_trades().await, all);
    assert!(
        conflict_lines(&log).is_empty(),
        "{:?}",
        conflict_lines(&log)
    );
}
