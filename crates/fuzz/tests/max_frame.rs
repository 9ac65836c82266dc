//! Parsing one maximum-size frame (16 MiB, app-raw's frame limit) peaks under 4× its size,
//! whatever the frame claims (issue #16, finding 4: `"data":[1,1,…]` reserved 1.54 GB).
#![allow(clippy::unwrap_used)] // test helpers

use std::sync::Mutex;

use fuzz::{Target, measure};

/// The frame size: app-raw's default WebSocket frame limit, 16 MiB, in release builds; 4 MiB
/// in debug builds, where parsing 16 MiB five times takes over a minute (the ratio does not
/// depend on the size: every cost here is linear). `FUZZ_FRAME_BYTES` overrides.
fn frame_size() -> usize {
    let default = if cfg!(debug_assertions) {
        4 << 20
    } else {
        16 << 20
    };
    std::env::var("FUZZ_FRAME_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The allocator's peak is process-wide: measurements take turns.
static MEASURING: Mutex<()> = Mutex::new(());

/// `prefix`, then `element` repeated until the frame is full, then `suffix`.
fn frame(prefix: &str, element: &str, suffix: &str) -> Vec<u8> {
    let size = frame_size();
    let count = (size - prefix.len() - suffix.len()) / (element.len() + 1);
    let mut text = String::with_capacity(size);
    text.push_str(prefix);
    for i in 0..count {
        if i > 0 {
            text.push(',');
        }
        text.push_str(element);
    }
    text.push_str(suffix);
    text.into_bytes()
}

/// Builds the input, measures `target` on it and drops it, all in this test's turn: another
/// test's 16 MiB frame allocated or freed meanwhile would skew the process-wide peak.
fn assert_peak_under_four_times(target: Target, build: impl FnOnce() -> Vec<u8>) {
    let _turn = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let input = build();
    let input = input.as_slice();
    let cost = measure(target, input);
    let (peak, took) = (cost.peak, cost.took);
    #[allow(clippy::cast_precision_loss)] // a ratio for the message
    let ratio = peak as f64 / input.len() as f64;
    eprintln!(
        "{}: {} bytes, peak {peak} bytes ({ratio:.2}×), {took:?}",
        target.name(),
        input.len()
    );
    assert!(
        peak < 4 * input.len(),
        "peak {peak} bytes is {ratio:.2}× the frame"
    );
}

const NOTIFICATION: &str = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.future.BTC.100ms","data":["#;
const PAGE: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"has_more":true,"trades":["#;
const TRADE: &str = r#"{"trade_seq":1,"trade_id":"1","timestamp":1733000000000,"tick_direction":0,"price":96000.5,"mark_price":96000.1,"instrument_name":"BTC-PERPETUAL","index_price":96001.2,"direction":"buy","amount":10}"#;

#[test]
fn a_notification_of_numbers_costs_no_more_than_four_frames() {
    assert_peak_under_four_times(Target::DeribitFrame, || frame(NOTIFICATION, "1", "]}}"));
}

#[test]
fn a_notification_of_empty_objects_costs_no_more_than_four_frames() {
    assert_peak_under_four_times(Target::DeribitFrame, || frame(NOTIFICATION, "{}", "]}}"));
}

#[test]
fn a_notification_of_valid_trades_costs_no_more_than_four_frames() {
    assert_peak_under_four_times(Target::DeribitFrame, || frame(NOTIFICATION, TRADE, "]}}"));
}

#[test]
fn a_history_page_of_numbers_costs_no_more_than_four_frames() {
    assert_peak_under_four_times(Target::DeribitHistory, || frame(PAGE, "1", "]}}"));
}

#[test]
fn a_history_page_of_valid_trades_costs_no_more_than_four_frames() {
    assert_peak_under_four_times(Target::DeribitHistory, || frame(PAGE, TRADE, "]}}"));
}

#[test]
fn a_replay_line_of_numbers_costs_no_more_than_four_lines() {
    // `app-agg replay` on one such line peaked at 1.6 GB RSS before.
    assert_peak_under_four_times(Target::Replay, || frame(NOTIFICATION, "1", "]}}"));
}

#[test]
fn a_trade_whose_id_is_a_huge_array_costs_no_more_than_four_frames() {
    // `trade_id` takes a string or a number; an untagged enum buffered the whole array first
    // (16 bytes per byte of input).
    let prefix = format!(r#"{NOTIFICATION}{{"trade_id":["#);
    assert_peak_under_four_times(Target::DeribitFrame, || frame(&prefix, "1", "]}]}}"));
}

#[test]
fn a_huge_channel_name_costs_no_more_than_four_frames() {
    // Found by `just fuzz`: the channel was copied, then copied again into the error naming it
    // (6× the frame). It is borrowed now, and one longer than Deribit's is refused, clipped.
    let prefix = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"erades."#;
    assert_peak_under_four_times(Target::DeribitFrame, || {
        frame(prefix, "x", r#"","data":[]}}"#)
    });
    let trades = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades."#;
    assert_peak_under_four_times(Target::DeribitFrame, || {
        frame(trades, "x", r#"","data":[]}}"#)
    });
}
