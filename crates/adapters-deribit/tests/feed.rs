//! `DeribitFeed` against `testkit::FakeDeribit`: handshake, heartbeat, reconnects, backfill,
//! seeding, bad input, auth, rate limits, gaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use adapters_deribit::{Credentials, DeribitFeed, FeedMetrics};
use common::{ALL, Collector, DEADLINE, config, expected, market, subscribed, subscribed_feed};
use ports::{FeedError, FeedEvent, Position, StartPositions, TradeFeed};
use testkit::wait_for;

#[tokio::test]
async fn handshake_runs_in_order_for_both_channel_forms_and_trades_flow() {
    let (fake, c) = subscribed_feed().await;
    let methods = fake.methods();
    assert_eq!(
        &methods[..3],
        ["public/hello", "public/set_heartbeat", "public/subscribe"]
    );
    assert_eq!(
        fake.subscribe_calls()[0].1,
        vec![
            "trades.future.BTC.100ms",
            "trades.option.BTC.100ms",
            "trades.ETH-PERPETUAL.100ms"
        ]
    );
    fake.trade_all(3);
    assert!(wait_for(DEADLINE, || c.count() == 9).await);
    let t = &c.trades.lock().unwrap()[0];
    assert_eq!(
        (t.instrument_name.as_str(), t.trade_seq),
        ("BTC-PERPETUAL", 1)
    );
}

#[tokio::test]
async fn test_requests_are_answered_at_once() {
    let fake = market().await;
    fake.send_test_requests_every(Duration::from_millis(50));
    let c = Collector::spawn(config(&fake, ALL), StartPositions::new());
    subscribed(&c).await;
    assert!(wait_for(DEADLINE, || fake.test_reply_delays().len() >= 10).await);
    let delays = fake.test_reply_delays();
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(200)),
        "{delays:?}"
    );
    assert!(c.metric(|m| &m.test_requests_answered) >= 10);
    assert_eq!(fake.connections_total(), 1, "a healthy connection is kept");
}

#[tokio::test]
async fn a_silent_server_is_detected_and_replaced_within_two_intervals() {
    let fake = market().await;
    fake.send_test_requests_every(Duration::from_millis(400)); // silence timeout 800 ms = 2 intervals
    let c = Collector::spawn(config(&fake, ALL), StartPositions::new());
    subscribed(&c).await;
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || c.count() == 1).await);
    let silenced = std::time::Instant::now();
    fake.go_silent();
    fake.trade("BTC-PERPETUAL", 2); // swallowed by the silent connection
    assert!(wait_for(DEADLINE, || fake.connections_total() == 2).await);
    let detected = silenced.elapsed();
    assert!(
        detected < Duration::from_millis(1_500),
        "replaced after {detected:?}"
    );
    assert!(
        wait_for(DEADLINE, || c.count() == 3).await,
        "trades swallowed by the silence are backfilled"
    );
    assert_eq!(c.seqs()["BTC-PERPETUAL"], vec![1, 2, 3]);
}

#[tokio::test]
async fn a_hundred_disconnects_lose_and_repeat_nothing() {
    let (fake, c) = subscribed_feed().await;
    let instruments = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"];
    for round in 0..100u64 {
        fake.trade_all(2);
        if round % 3 == 0 {
            fake.drop_after(1); // mid-stream: after one more message
            fake.trade_all(1);
        } else {
            fake.disconnect_all();
        }
        fake.trade_all(3); // while disconnected (or reconnecting)
        assert!(
            wait_for(DEADLINE, || fake.connections_total() > round + 1
                && fake.connections_open() == 1)
            .await,
            "round {round}: no reconnect"
        );
    }
    fake.trade_all(1);
    let want = expected(&fake, &instruments);
    let total: usize = want.values().map(Vec::len).sum();
    let done = wait_for(Duration::from_secs(30), || c.count() >= total).await;
    if !done {
        for (i, want) in &want {
            let got = c.seqs().get(i).cloned().unwrap_or_default();
            eprintln!(
                "{i}: want {} got {} first missing {:?} got tail {:?}",
                want.len(),
                got.len(),
                want.iter().find(|s| !got.contains(s)),
                &got[got.len().saturating_sub(5)..]
            );
        }
        eprintln!("metrics {:?}", c.metrics);
    }
    assert!(done, "got {} of {total}", c.count());
    tokio::time::sleep(Duration::from_millis(200)).await; // nothing extra may follow
    assert_eq!(
        c.seqs(),
        want,
        "every trade exactly once, in order per instrument"
    );
    assert!(c.metric(|m| &m.reconnects) >= 100);
    assert_eq!(c.metric(|m| &m.gaps_unfilled), 0);
}

#[tokio::test]
async fn a_seeded_start_repeats_nothing_before_and_misses_nothing_after() {
    let fake = market().await;
    fake.trade("BTC-PERPETUAL", 50);
    fake.trade("ETH-PERPETUAL", 5);
    let last = |i: &str, seq: usize| fake.record(i)[seq - 1]["timestamp"].as_i64().unwrap();
    let seed = StartPositions::from([
        (
            "BTC-PERPETUAL".to_owned(),
            Position {
                trade_seq: 20,
                timestamp: last("BTC-PERPETUAL", 20),
            },
        ),
        (
            "ETH-PERPETUAL".to_owned(),
            Position {
                trade_seq: 5,
                timestamp: last("ETH-PERPETUAL", 5),
            },
        ),
    ]);
    // An option that first traded while we were away is found by discovery.
    fake.trade("BTC-27DEC24-70000-C", 4);
    let c = Collector::spawn(config(&fake, ALL), seed);
    subscribed(&c).await;
    fake.trade_all(2);
    let want = BTreeMap::from([
        (
            "BTC-27DEC24-70000-C".to_owned(),
            (1..=6).collect::<Vec<u64>>(),
        ),
        ("BTC-PERPETUAL".to_owned(), (21..=52).collect()),
        ("ETH-PERPETUAL".to_owned(), vec![6, 7]),
    ]);
    assert!(
        wait_for(DEADLINE, || c.seqs() == want).await,
        "{:?}",
        c.seqs()
    );
    assert!(c.metric(|m| &m.backfilled_trades) >= 30 + 4);
}

#[tokio::test]
async fn malformed_invalid_and_oversized_input_is_counted_and_survived() {
    let fake = market().await;
    let mut cfg = config(&fake, ALL);
    cfg.max_frame_bytes = 64 * 1024;
    let c = Collector::spawn(cfg, StartPositions::new());
    subscribed(&c).await;
    fake.trade("BTC-PERPETUAL", 1);
    fake.send_raw("{not json");
    fake.send_raw(
        r#"{"jsonrpc":"2.0","error":{"message":"request entity too large","code":-32600}}"#,
    );
    fake.send_raw(r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.future.BTC.100ms","data":[
        {"trade_seq":2,"trade_id":"9","timestamp":1590484512188,"tick_direction":2,"price":-1,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"sell","amount":10},
        {"trade_seq":2,"trade_id":"9","timestamp":1590484512188,"tick_direction":2,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"sell","amount":10}]}}"#);
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || c.count() == 2).await);
    assert_eq!(c.metric(|m| &m.malformed_frames), 1);
    assert_eq!(c.metric(|m| &m.invalid_trades), 2);
    assert_eq!(
        fake.connections_total(),
        1,
        "bad input does not cost the connection"
    );
    // An oversized frame is refused: the connection is replaced and nothing is lost.
    fake.send_raw(&format!(
        r#"{{"jsonrpc":"2.0","method":"x","params":"{}"}}"#,
        "x".repeat(100_000)
    ));
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || fake.connections_total() == 2).await);
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || c.count() == 4).await);
    assert_eq!(c.seqs()["BTC-PERPETUAL"], vec![1, 2, 3, 4]);
    assert_eq!(c.metric(|m| &m.oversized_frames), 1);
}

#[tokio::test]
async fn authenticates_refreshes_and_re_authenticates_after_reconnect() {
    let fake = market().await;
    fake.require_credentials("id", "s3cr3t");
    fake.send_test_requests_every(Duration::from_millis(200));
    let mut cfg = config(&fake, "trades.future.BTC.raw");
    cfg.credentials = Some(Credentials {
        client_id: "id".into(),
        client_secret: "s3cr3t".into(),
    });
    let c = Collector::spawn(cfg, StartPositions::new());
    subscribed(&c).await;
    assert_eq!(
        &fake.methods()[..4],
        [
            "public/hello",
            "public/auth",
            "public/set_heartbeat",
            "public/subscribe"
        ]
    );
    // The fake's tokens live 2 s: a refresh comes at 80 %.
    assert!(wait_for(DEADLINE, || fake.auth_counts().1 >= 1).await);
    fake.disconnect_all();
    assert!(
        wait_for(DEADLINE, || fake.auth_counts().0 == 2).await,
        "auth repeated on reconnect"
    );
    fake.trade("BTC-PERPETUAL", 2);
    assert!(wait_for(DEADLINE, || c.count() == 2).await);
}

#[tokio::test]
async fn bad_credentials_stop_the_feed_with_a_clear_error() {
    let fake = market().await;
    fake.require_credentials("id", "right");
    let mut cfg = config(&fake, ALL);
    cfg.credentials = Some(Credentials {
        client_id: "id".into(),
        client_secret: "wrong".into(),
    });
    let c = Collector::spawn(cfg, StartPositions::new());
    assert!(wait_for(DEADLINE, || c.task.is_finished()).await);
    let error = c.error.lock().unwrap().take().unwrap();
    assert!(
        matches!(&error, FeedError::Auth(m) if m.contains("invalid_credentials")),
        "{error}"
    );
    assert_eq!(
        fake.connections_total(),
        1,
        "no retry loop against bad credentials"
    );
}

#[tokio::test]
async fn a_subscription_set_is_never_doubled_across_reconnects() {
    let fake = market().await;
    let c = Collector::spawn(config(&fake, ALL), StartPositions::new());
    for round in 1..=5u64 {
        subscribed(&c).await;
        assert!(wait_for(DEADLINE, || fake.subscribe_calls().len() as u64 == round).await);
        fake.disconnect_all();
        assert!(wait_for(DEADLINE, || fake.connections_total() > round).await);
    }
    let calls = fake.subscribe_calls();
    let mut connections: Vec<u64> = calls.iter().map(|(c, _)| *c).collect();
    connections.dedup();
    assert_eq!(
        connections.len(),
        calls.len(),
        "one subscribe per connection"
    );
    assert!(calls.iter().all(|(_, channels)| channels.len() == 3));
}

#[tokio::test]
async fn rate_limit_and_maintenance_errors_are_survived() {
    let fake = market().await;
    fake.fail_next("public/subscribe", 10028, "too_many_requests");
    fake.fail_next("public/subscribe", 11051, "system_maintenance");
    let c = Collector::spawn(config(&fake, ALL), StartPositions::new());
    subscribed(&c).await;
    assert_eq!(fake.connections_total(), 3);
    assert_eq!(c.metric(|m| &m.rate_limit_hits), 1);
    // A rate-limited history request is retried.
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || c.count() == 1).await);
    fake.fail_next(
        "public/get_last_trades_by_instrument",
        10028,
        "too_many_requests",
    );
    fake.disconnect_all();
    fake.trade("BTC-PERPETUAL", 3);
    assert!(wait_for(DEADLINE, || c.count() == 4).await);
    assert_eq!(c.seqs()["BTC-PERPETUAL"], vec![1, 2, 3, 4]);
    assert_eq!(c.metric(|m| &m.rate_limit_hits), 2);
}

#[tokio::test]
async fn a_gap_history_cannot_fill_is_reported_not_skipped_silently() {
    let (fake, c) = subscribed_feed().await;
    fake.trade("BTC-PERPETUAL", 1);
    assert!(wait_for(DEADLINE, || c.count() == 1).await);
    fake.disconnect_all();
    fake.trade("BTC-PERPETUAL", 3); // seq 2..=4 while away
    fake.withhold_from_history("BTC-PERPETUAL", 3);
    assert!(wait_for(DEADLINE, || fake.connections_open() == 1 && c.subscribed()).await);
    fake.trade("BTC-PERPETUAL", 1);
    assert!(
        wait_for(DEADLINE, || c.seqs()["BTC-PERPETUAL"] == vec![1, 2, 4, 5]).await,
        "{:?}",
        c.seqs()
    );
    assert_eq!(c.metric(|m| &m.gaps_unfilled), 1);
}

#[tokio::test]
async fn stop_closes_the_connection_and_ends_the_stream() {
    let fake = market().await;
    let feed = DeribitFeed::spawn(config(&fake, ALL), StartPositions::new(), None).unwrap();
    let metrics = feed.metrics();
    assert!(
        wait_for(DEADLINE, || metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed))
        .await
    );
    tokio::time::timeout(Duration::from_secs(5), feed.shutdown())
        .await
        .unwrap();
    assert!(wait_for(DEADLINE, || fake.connections_open() == 0).await);
}

#[tokio::test]
async fn a_stalled_consumer_costs_nothing_shed_batches_are_fetched_again() {
    let fake = market().await;
    fake.send_test_requests_every(Duration::from_millis(200));
    let mut cfg = config(&fake, ALL);
    cfg.queue_capacity = 2;
    let mut feed = DeribitFeed::spawn(cfg, StartPositions::new(), None).unwrap();
    let metrics = feed.metrics();
    assert!(
        wait_for(DEADLINE, || metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed))
        .await
    );
    // Nobody reads while 60 notifications arrive: the queue holds 2, the rest are shed.
    for _ in 0..20 {
        fake.trade_all(2);
    }
    assert!(wait_for(DEADLINE, || FeedMetrics::get(&metrics.shed_batches) > 0).await);
    fake.trade_all(1); // reveals the holes left by shedding
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let want = expected(
        &fake,
        &["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"],
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got != want && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(FeedEvent::Trades(batch)))) =
            tokio::time::timeout(Duration::from_millis(200), feed.next_event()).await
        {
            for t in batch.trades {
                got.entry(t.instrument_name.clone())
                    .or_default()
                    .push(t.trade_seq);
            }
        }
    }
    assert_eq!(got, want, "every trade once, in order, despite shedding");
    assert_eq!(
        fake.connections_total(),
        1,
        "shedding never costs the connection"
    );
}
