//! Open windows cost O(log n) per trade whatever the order timestamps arrive in.
#![allow(clippy::unwrap_used)] // test helpers

use std::time::{Duration, Instant};

use domain::{Aggregator, AggregatorConfig, WatermarkRule, WindowSize, testing};

const T0: i64 = 1_699_999_980_000;

/// A 1 ms window with an hour of grace, and every trade one window before the last: each opens
/// a window ahead of all others. With a list of open windows this was quadratic (issue #16:
/// 20 k / 40 k / 80 k trades took 0.73 / 2.5 / 11.7 s); a map makes 50 k trades take tens of
/// milliseconds. The deadline is a complexity bound with about 100× headroom, not a target.
#[test]
fn backwards_stepping_timestamps_with_a_tiny_window_stay_fast_and_exact() {
    const TRADES: u64 = 50_000;
    let config = AggregatorConfig::new(
        WindowSize::from_millis(1).unwrap(),
        3_600_000,
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        vec![10_000],
    )
    .unwrap();
    let mut aggregator = Aggregator::new(config);
    let started = Instant::now();
    for seq in 1..=TRADES {
        #[allow(clippy::cast_possible_wrap)] // below 50 k
        let ts = T0 - seq as i64;
        aggregator.ingest(&testing::trade("BTC-PERPETUAL", seq, ts, 100.0, 1.0));
    }
    let closed = aggregator.flush_all();
    let elapsed = started.elapsed();

    assert_eq!(closed.len(), 50_000, "one window per trade");
    assert!(closed.iter().all(|a| a.trade_count == 1));
    assert!(
        closed
            .windows(2)
            .all(|w| w[0].window_start < w[1].window_start),
        "windows come out in order"
    );
    assert_eq!(closed.first().map(|a| a.last_trade_seq), Some(TRADES));
    assert!(
        elapsed < Duration::from_secs(5),
        "{TRADES} backwards-stepping trades took {elapsed:?}"
    );
}
