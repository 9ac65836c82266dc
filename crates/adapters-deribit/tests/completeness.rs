//! The feed's completeness time against `testkit::FakeDeribit`: every trade up to it comes
//! before it, it advances in a quiet market, holds through a disconnect and a slow backfill,
//! then jumps; a broken server clock stops it instead of racing it ahead.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use adapters_deribit::{DeribitConfig, FeedMetrics};
use common::{ALL, Collector, DEADLINE, config, market, subscribed};
use ports::StartPositions;
use serde_json::json;
use testkit::{FakeDeribit, wait_for};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"];

fn fast(fake: &FakeDeribit) -> DeribitConfig {
    let mut config = config(fake, ALL);
    config.progress_interval = Duration::from_millis(100);
    config.completeness_margin = Duration::from_millis(50);
    config
}

fn now_ms() -> i64 {
    testkit::process::now_ms()
}

/// Every trade the fake generated with a timestamp at or before a progress event came before
/// that event; progress never moves back. Returns the number of progress events checked.
fn assert_complete_before_each_progress(fake: &FakeDeribit, feed: &Collector) -> usize {
    let trades = feed.trades.lock().unwrap().clone();
    let progress = feed.progress.lock().unwrap().clone();
    let generated: Vec<(i64, String, u64)> = INSTRUMENTS
        .iter()
        .flat_map(|i| fake.record(i))
        .map(|t| {
            (
                t["timestamp"].as_i64().unwrap(),
                t["instrument_name"].as_str().unwrap().to_owned(),
                t["trade_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut delivered = BTreeSet::new();
    let mut previous = i64::MIN;
    for &(before, complete_to) in &progress {
        assert!(complete_to > previous, "progress only moves forward");
        previous = complete_to;
        for t in &trades[delivered.len()..before] {
            delivered.insert((t.instrument_name.clone(), t.trade_seq));
        }
        for (ts, instrument, seq) in &generated {
            assert!(
                *ts > complete_to || delivered.contains(&(instrument.clone(), *seq)),
                "{instrument} #{seq} at {ts} was not delivered before progress {complete_to}"
            );
        }
    }
    progress.len()
}

fn last_progress(feed: &Collector) -> Option<i64> {
    feed.progress.lock().unwrap().last().map(|p| p.1)
}

#[tokio::test]
async fn every_trade_up_to_the_completeness_time_comes_before_it_and_a_quiet_market_advances_it() {
    let fake = market().await;
    let feed = Collector::spawn(fast(&fake), StartPositions::new());
    subscribed(&feed).await;
    for _ in 0..10 {
        fake.trade_all(2);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let last_trade = now_ms();
    // A quiet market: completeness keeps moving past the last trade.
    assert!(
        wait_for(DEADLINE, || last_progress(&feed)
            .is_some_and(|c| c > last_trade + 300))
        .await,
        "progress stalled at {:?}",
        last_progress(&feed)
    );
    assert!(
        last_progress(&feed).unwrap() <= now_ms(),
        "never ahead of the clock"
    );
    let checked = assert_complete_before_each_progress(&fake, &feed);
    assert!(checked >= 5, "progress comes every interval: {checked}");
}

#[tokio::test]
async fn completeness_holds_through_a_disconnect_and_a_slow_backfill_then_jumps() {
    let fake = market().await;
    let feed = Collector::spawn(fast(&fake), StartPositions::new());
    subscribed(&feed).await;
    fake.trade_all(2);
    assert!(wait_for(DEADLINE, || feed.count() == 6).await);

    // The connection drops; trades made before the feed is back are only in history, and
    // history answers slowly. Meanwhile the market goes on (live trades are held back).
    fake.delay_history(Some(Duration::from_millis(1_500)));
    fake.disconnect_all();
    fake.trade_all(3);
    let missed_at = now_ms();
    assert!(wait_for(DEADLINE, || fake.connections_total() >= 2).await);
    subscribed(&feed).await;
    for _ in 0..5 {
        fake.trade_all(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = last_progress(&feed).unwrap_or(i64::MIN);
    assert!(
        held < missed_at,
        "completeness held below the missed trades during the backfill: {held} vs {missed_at}"
    );
    // Once the backfill is done it jumps past everything.
    let last_trade = now_ms();
    assert!(
        wait_for(DEADLINE, || last_progress(&feed)
            .is_some_and(|c| c > last_trade))
        .await,
        "progress never resumed: {:?}",
        last_progress(&feed)
    );
    assert_eq!(feed.count(), 6 + 9 + 15, "every trade, once");
    assert_complete_before_each_progress(&fake, &feed);
}

#[tokio::test]
async fn a_broken_server_clock_stops_progress_instead_of_racing_it() {
    let fake = market().await;
    fake.set_us_out(Some(json!(-1)));
    let feed = Collector::spawn(fast(&fake), StartPositions::new());
    subscribed(&feed).await;
    assert!(
        wait_for(DEADLINE, || feed.metric(|m| &m.implausible_server_times)
            >= 3)
        .await
    );
    // A clock five minutes ahead is refused too.
    fake.set_us_out(Some(json!((now_ms() + 300_000) * 1000)));
    let refused = feed.metric(|m| &m.implausible_server_times);
    assert!(
        wait_for(DEADLINE, || feed.metric(|m| &m.implausible_server_times)
            > refused + 2)
        .await
    );
    assert_eq!(
        last_progress(&feed),
        None,
        "no progress from a broken clock"
    );

    fake.set_us_out(None);
    assert!(wait_for(DEADLINE, || last_progress(&feed).is_some()).await);
    let complete_to = last_progress(&feed).unwrap();
    assert!((now_ms() - 5_000..=now_ms()).contains(&complete_to));
    assert_eq!(
        FeedMetrics::get(&feed.metrics.reconnects),
        0,
        "a bad clock reading is no reason to reconnect"
    );
}

#[tokio::test]
async fn a_channel_deribit_did_not_confirm_holds_completeness() {
    let fake = market().await;
    fake.leave_unconfirmed("trades.ETH-PERPETUAL.100ms");
    let feed = Collector::spawn(fast(&fake), StartPositions::new());
    subscribed(&feed).await;
    fake.trade_all(1);
    assert!(
        wait_for(DEADLINE, || feed.count() >= 2).await,
        "the other channels flow"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        last_progress(&feed),
        None,
        "not complete while a channel is missing"
    );
}
