//! The default watermark rule: only progress markers close windows.
#![allow(clippy::unwrap_used)] // test helpers

use domain::{
    Aggregator, AggregatorConfig, Ingested, MAX_WRITERS, WatermarkRule, WindowSize, WriterProgress,
    testing,
};
use proptest::prelude::*;

const MINUTE: i64 = 60_000;
const T0: i64 = 1_699_999_980_000; // a minute boundary

fn markers(grace_ms: i64) -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(MINUTE).unwrap(),
        grace_ms,
        WatermarkRule::Markers,
        vec![10_000],
    )
    .unwrap()
}

#[test]
fn trades_and_wall_clock_close_nothing_a_marker_at_end_plus_grace_closes() {
    let mut agg = Aggregator::new(markers(500));
    agg.ingest(&testing::trade("A", 1, T0 + 10, 100.0, 1.0));
    // Another instrument far ahead (its catch-up after a reconnect) and the wall clock.
    agg.ingest(&testing::trade("B", 1, T0 + 10 * MINUTE, 100.0, 1.0));
    agg.advance_wall_clock(T0 + 20 * MINUTE, true);
    assert_eq!(agg.watermark(), None);
    assert!(agg.drain_closed().is_empty());
    // A's older trade is still on time: nothing but a marker closes its window.
    assert_eq!(
        agg.ingest(&testing::trade("A", 2, T0 + 20, 101.0, 1.0)),
        Ingested::Accepted
    );

    assert!(agg.observe_progress("raw", T0 + MINUTE + 499));
    assert!(agg.drain_closed().is_empty(), "one ms short of end + grace");
    assert!(agg.observe_progress("raw", T0 + MINUTE + 500));
    let closed = agg.drain_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].instrument_name.as_str(), closed[0].trade_count),
        ("A", 2)
    );
    assert_eq!(
        agg.ingest(&testing::trade("A", 3, T0 + 30, 101.0, 1.0)),
        Ingested::Late
    );
}

#[test]
fn the_watermark_is_the_slowest_writer_and_never_moves_back() {
    let mut agg = Aggregator::new(markers(0));
    assert!(agg.observe_progress("eu", T0 + 5_000));
    assert_eq!(agg.watermark(), Some(T0 + 5_000));
    // A second writer joins behind: the watermark stays (it never moves back).
    assert!(!agg.observe_progress("us", T0 + 1_000));
    assert_eq!(agg.watermark(), Some(T0 + 5_000));
    // The first races ahead: the slowest one holds the watermark.
    assert!(!agg.observe_progress("eu", T0 + 60_000));
    assert_eq!(agg.watermark(), Some(T0 + 5_000));
    assert!(agg.observe_progress("us", T0 + 30_000));
    assert_eq!(agg.watermark(), Some(T0 + 30_000));
    // An older marker of a writer (a repeat after a crash) changes nothing.
    assert!(!agg.observe_progress("us", T0 + 2_000));
    assert_eq!(agg.watermark(), Some(T0 + 30_000));
    assert_eq!(
        agg.writers(),
        [
            WriterProgress {
                writer: "eu".into(),
                completeness_ms: T0 + 60_000
            },
            WriterProgress {
                writer: "us".into(),
                completeness_ms: T0 + 30_000
            }
        ]
    );
}

#[test]
fn writers_beyond_the_cap_are_ignored() {
    let mut agg = Aggregator::new(markers(0));
    for i in 0..MAX_WRITERS {
        agg.observe_progress(&format!("w{i}"), T0 + 1_000);
    }
    assert!(!agg.observe_progress("one-too-many", T0));
    assert_eq!(agg.writers().len(), MAX_WRITERS);
    assert_eq!(agg.watermark(), Some(T0 + 1_000));
}

#[test]
fn markers_are_ignored_under_the_trade_time_rule() {
    let config = AggregatorConfig::new(
        WindowSize::from_millis(MINUTE).unwrap(),
        0,
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        vec![10_000],
    )
    .unwrap();
    let mut agg = Aggregator::new(config);
    agg.ingest(&testing::trade("A", 1, T0 + 10, 100.0, 1.0));
    assert!(!agg.observe_progress("raw", T0 + 5 * MINUTE));
    assert_eq!(agg.watermark(), Some(T0 + 10));
    assert!(agg.writers().is_empty());
}

#[test]
fn writers_and_watermark_survive_a_snapshot() {
    let mut agg = Aggregator::new(markers(0));
    agg.ingest(&testing::trade("A", 1, T0 + 10, 100.0, 1.0));
    agg.observe_progress("eu", T0 + 500);
    agg.observe_progress("us", T0 + 700);
    let json = serde_json::to_string(&agg.snapshot()).unwrap();
    let mut restored =
        Aggregator::restore(markers(0), serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(restored.writers(), agg.writers());
    assert_eq!(restored.watermark(), Some(T0 + 500));
    // The restored one goes on exactly as the original.
    for a in [&mut agg, &mut restored] {
        a.observe_progress("eu", T0 + 2 * MINUTE);
        assert!(a.observe_progress("us", T0 + MINUTE));
    }
    assert_eq!(restored.drain_closed(), agg.drain_closed());
}

#[test]
fn a_snapshot_from_before_markers_restores_without_writers() {
    let old = r#"{"watermark":1699999980000,"instruments":[]}"#;
    let agg = Aggregator::restore(markers(0), serde_json::from_str(old).unwrap()).unwrap();
    assert_eq!(agg.watermark(), Some(T0));
    assert!(agg.writers().is_empty());
}

proptest! {
    /// Trades of several instruments interleaved in any way, then one marker past them all:
    /// nothing is late and every trade is in some aggregate.
    #[test]
    fn no_trade_is_late_before_the_marker_says_so(
        offsets in prop::collection::vec((0usize..4, 0i64..5 * MINUTE), 1..200),
    ) {
        let mut agg = Aggregator::new(markers(0));
        let mut seq = [0u64; 4];
        let mut last_ts = [T0; 4];
        for (i, step) in offsets {
            seq[i] += 1;
            // Per instrument in time order; across instruments in any order.
            last_ts[i] = (last_ts[i] + step / 50).max(last_ts[i]);
            let trade = testing::trade(&format!("I{i}"), seq[i], last_ts[i], 100.0, 1.0);
            prop_assert_eq!(agg.ingest(&trade), Ingested::Accepted);
        }
        agg.observe_progress("raw", i64::MAX / 2);
        let closed = agg.drain_closed();
        let total: u64 = closed.iter().map(|a| a.trade_count).sum();
        prop_assert_eq!(total, seq.iter().sum::<u64>());
    }
}
