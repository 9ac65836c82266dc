//! Several bar sizes from one stream: larger bars rolled up from the smallest at close equal
//! bars built directly at the larger size, bit for bit (when no trade is late: lateness is
//! judged on the smallest window); completeness stamps (`seq_gaps`, `late_trades`) on every bar,
//! fixed by the log, not by when windows are drained; sizes changed across a restore.
#![allow(clippy::unwrap_used)] // test helpers

use domain::{
    Aggregate, Aggregator, AggregatorConfig, Direction, Error, PartitionSnapshot, Trade,
    TradeFields, WatermarkRule, WindowSize, testing,
};
use proptest::prelude::*;

const SECOND: i64 = 1_000;
const T0: i64 = 1_700_000_100_000; // a 5-minute boundary

fn size(ms: i64) -> WindowSize {
    WindowSize::from_millis(ms).unwrap()
}

fn config(window_ms: i64, rollups: &[i64], grace_ms: i64) -> AggregatorConfig {
    AggregatorConfig::new(
        size(window_ms),
        grace_ms,
        WatermarkRule::Markers,
        vec![700, 20_000],
    )
    .unwrap()
    .with_rollups(rollups.iter().map(|&ms| size(ms)))
    .unwrap()
}

fn trade(instrument: &str, seq: u64, ts: i64, price: f64, amount: f64, sell: bool) -> Trade {
    testing::validated(TradeFields {
        direction: if sell {
            Direction::Sell
        } else {
            Direction::Buy
        },
        ..testing::fields(instrument, seq, ts, price, amount)
    })
}

/// Something in a partition's log: a trade, or a progress marker with its completeness time.
#[derive(Debug, Clone)]
enum Entry {
    Trade(Trade),
    Marker(i64),
}

/// Feeds `log` in order, draining after each entry, and flushes at the end.
fn run(config: &AggregatorConfig, log: &[Entry]) -> Vec<Aggregate> {
    let mut agg = Aggregator::new(config.clone());
    let mut out = Vec::new();
    feed(&mut agg, log, &mut out);
    out.extend(agg.flush_all());
    out
}

fn feed(agg: &mut Aggregator, log: &[Entry], out: &mut Vec<Aggregate>) {
    for entry in log {
        apply(agg, entry);
        out.extend(agg.drain_closed());
    }
}

fn apply(agg: &mut Aggregator, entry: &Entry) {
    match entry {
        Entry::Trade(t) => {
            agg.ingest(t);
        }
        Entry::Marker(c) => {
            agg.observe_progress("raw-1", *c);
        }
    }
}

/// Bars of one size, as bits: equality here is bit-for-bit equality of every field.
fn of_size(out: &[Aggregate], window_ms: i64) -> Vec<String> {
    let mut bars: Vec<String> = out
        .iter()
        .filter(|a| a.window_ms == window_ms)
        .map(|a| {
            let mut floats = vec![
                a.volume,
                a.buy_volume,
                a.sell_volume,
                a.vwap,
                a.open,
                a.high,
                a.low,
                a.close,
            ];
            floats.extend(a.ewma.iter().flat_map(|e| [e.price, e.vw_price]));
            let floats: Vec<u64> = floats.iter().map(|f| f.to_bits()).collect();
            format!(
                "{} {}+{} n={} {:?} seq={}..{} ts={}..{} gaps={:?} floats={floats:?}",
                a.instrument_name,
                a.window_start,
                a.window_ms,
                a.trade_count,
                a.ewma.iter().map(|e| e.halflife_ms).collect::<Vec<_>>(),
                a.first_trade_seq,
                a.last_trade_seq,
                a.first_trade_timestamp,
                a.last_trade_timestamp,
                (a.seq_gaps, a.late_trades),
            )
        })
        .collect();
    bars.sort();
    bars
}

/// A log over three instruments: per instrument increasing `trade_seq` (sometimes skipping
/// values), timestamps that step back by up to 1.5 s (into windows still open), quiet
/// stretches longer than a bar, prices and amounts as exchanges quote them (decimals), and
/// progress markers that never pass a trade still to come (so no trade is late).
fn log() -> impl Strategy<Value = Vec<Entry>> {
    log_with(1_500)
}

/// As [`log`], but markers at the newest trade's time, so the trades that step back after one
/// are late.
fn log_with_late_trades() -> impl Strategy<Value = Vec<Entry>> {
    log_with(0)
}

/// Markers trail the newest trade by `marker_lag` ms; with 1.5 s or more no trade is late.
fn log_with(marker_lag: i64) -> impl Strategy<Value = Vec<Entry>> {
    let step = (
        0usize..3,
        prop_oneof![6 => 0i64..400, 2 => 400i64..4_000, 1 => 4_000i64..40_000],
        prop_oneof![5 => Just(1u64), 1 => 2u64..5],
        (100u32..200_000, 0i32..3),
        (1u32..100_000, 0i32..4),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop_oneof![3 => Just(0i64), 1 => 0i64..=1_500],
    );
    prop::collection::vec(step, 1..400).prop_map(move |steps| {
        let names = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26-100000-C"];
        let mut now = T0 + 17;
        let mut seq = [10u64; 3];
        let mut log = Vec::new();
        for (i, pause, seq_step, (p, pd), (a, ad), sell, marker, back) in steps {
            now += pause;
            seq[i] += seq_step;
            let price = f64::from(p) / 10f64.powi(pd);
            let amount = f64::from(a) / 10f64.powi(ad);
            log.push(Entry::Trade(trade(
                names[i],
                seq[i],
                now - back,
                price,
                amount,
                sell,
            )));
            if marker {
                // Later trades are stamped at least `now - 1.5 s`.
                log.push(Entry::Marker(now - marker_lag));
            }
        }
        log
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The property: 5 s and 60 s bars rolled up from 1 s bars equal bars computed
    /// directly with a 5 s or 60 s window, bit for bit; the 1 s bars are those of a 1 s
    /// aggregator.
    #[test]
    fn rolled_up_bars_equal_bars_built_directly(log in log(), grace in prop_oneof![Just(0i64), 0i64..3_000]) {
        let out = run(&config(SECOND, &[5 * SECOND, 60 * SECOND], grace), &log);
        let mut direct_bars = 0;
        for ms in [SECOND, 5 * SECOND, 60 * SECOND] {
            let direct = run(&config(ms, &[], grace), &log);
            prop_assert_eq!(of_size(&out, ms), of_size(&direct, ms), "{} ms bars differ", ms);
            direct_bars += direct.len();
        }
        prop_assert_eq!(out.len(), direct_bars, "no bar of another size");
    }

    /// A restart at any point (state through JSON, as the changelog carries it) continues with
    /// exactly the output of the uninterrupted run, rolled-up bars half-built at the cut included.
    #[test]
    fn snapshot_restore_at_any_point_continues_identically(log in log(), cut in any::<prop::sample::Index>()) {
        let config = config(SECOND, &[5 * SECOND, 60 * SECOND], 500);
        let uninterrupted = run(&config, &log);
        let cut = cut.index(log.len() + 1);
        let mut agg = Aggregator::new(config.clone());
        let mut out = Vec::new();
        feed(&mut agg, &log[..cut], &mut out);
        let json = serde_json::to_string(&agg.snapshot()).unwrap();
        let snapshot: PartitionSnapshot = serde_json::from_str(&json).unwrap();
        let mut restored = Aggregator::restore(config, snapshot).unwrap();
        feed(&mut restored, &log[cut..], &mut out);
        out.extend(restored.flush_all());
        prop_assert_eq!(out, uninterrupted);
    }

    /// The service drains once per commit cycle, whenever its timer fires: what a bar holds
    /// (`late_trades` included) must not depend on it, or a bar repeated after a crash would
    /// differ from the first copy.
    #[test]
    fn output_does_not_depend_on_when_windows_are_drained(
        log in log_with_late_trades(),
        drains in prop::collection::vec(any::<bool>(), 1..64),
    ) {
        let config = config(SECOND, &[5 * SECOND], 300);
        let mut every_entry = run(&config, &log);
        let mut agg = Aggregator::new(config);
        let mut now_and_then = Vec::new();
        for (i, entry) in log.iter().enumerate() {
            apply(&mut agg, entry);
            if drains[i % drains.len()] {
                now_and_then.extend(agg.drain_closed());
            }
        }
        now_and_then.extend(agg.flush_all());
        let key = |a: &Aggregate| (a.instrument_name.clone(), a.window_start, a.window_ms);
        every_entry.sort_by_key(key);
        now_and_then.sort_by_key(key);
        prop_assert_eq!(now_and_then, every_entry);
    }
}

#[test]
fn a_larger_bar_closes_when_the_watermark_passes_it_even_if_its_last_sub_bars_were_empty() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    agg.ingest(&trade("BTC-PERPETUAL", 1, T0 + 100, 100.0, 1.0, false));
    agg.ingest(&trade("BTC-PERPETUAL", 2, T0 + 1_500, 102.0, 2.0, true));
    agg.observe_progress("raw-1", T0 + 2_000);
    let first = agg.drain_closed();
    assert_eq!(
        first
            .iter()
            .map(|a| (a.window_start, a.window_ms))
            .collect::<Vec<_>>(),
        [(T0, SECOND), (T0 + SECOND, SECOND)],
        "only the 1 s bars are complete"
    );
    agg.observe_progress("raw-1", T0 + 4_999);
    assert!(
        agg.drain_closed().is_empty(),
        "the 5 s bar ends at T0 + 5 s"
    );
    agg.observe_progress("raw-1", T0 + 5_000);
    let five = agg.drain_closed();
    assert_eq!(five.len(), 1);
    let bar = &five[0];
    assert_eq!(
        (bar.window_start, bar.window_end, bar.window_ms),
        (T0, T0 + 5 * SECOND, 5 * SECOND)
    );
    assert_eq!(
        (bar.trade_count, bar.open, bar.close, bar.high, bar.low),
        (2, 100.0, 102.0, 102.0, 100.0)
    );
    assert_eq!(
        (bar.volume, bar.buy_volume, bar.sell_volume),
        (3.0, 1.0, 2.0)
    );
    assert_eq!(bar.vwap, (100.0 + 204.0) / 3.0);
    assert_eq!(
        bar.ewma, first[1].ewma,
        "EWMA values of the last non-empty sub-bar"
    );
}

#[test]
fn a_bar_counts_the_trade_seq_values_its_trades_skipped() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    for (seq, ts) in [(7, 0), (8, 100), (11, 1_200), (12, 1_300), (20, 2_100)] {
        agg.ingest(&trade("BTC-PERPETUAL", seq, T0 + ts, 100.0, 1.0, false));
    }
    agg.observe_progress("raw-1", T0 + 5_000);
    let gaps: Vec<(i64, i64, Option<u64>)> = agg
        .drain_closed()
        .iter()
        .map(|a| (a.window_start - T0, a.window_ms, a.seq_gaps))
        .collect();
    // The first trade seen has nothing to compare with; 9 and 10 are missing before 11 (that
    // bar's first trade), 13 to 19 before 20.
    assert_eq!(
        gaps,
        [
            (0, SECOND, Some(0)),
            (SECOND, SECOND, Some(2)),
            (2 * SECOND, SECOND, Some(7)),
            (0, 5 * SECOND, Some(9)),
        ]
    );
}

#[test]
fn a_late_trade_is_counted_on_its_instruments_next_bar_to_close() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    agg.ingest(&trade("BTC-PERPETUAL", 1, T0 + 100, 100.0, 1.0, false));
    agg.observe_progress("raw-1", T0 + 1_000);
    assert_eq!(agg.drain_closed().len(), 1);
    agg.ingest(&trade("BTC-PERPETUAL", 2, T0 + 2_500, 100.0, 1.0, false));
    // Trade 3 belongs to the closed first second: late.
    assert_eq!(
        agg.ingest(&trade("BTC-PERPETUAL", 3, T0 + 900, 100.0, 1.0, false)),
        domain::Ingested::Late
    );
    agg.ingest(&trade("BTC-PERPETUAL", 4, T0 + 2_600, 100.0, 1.0, false));
    agg.observe_progress("raw-1", T0 + 5_000);
    let stamps: Vec<(i64, i64, Option<u64>, Option<u64>)> = agg
        .drain_closed()
        .iter()
        .map(|a| (a.window_start - T0, a.window_ms, a.late_trades, a.seq_gaps))
        .collect();
    // Counted once, as late, on the bar of the instrument's next trade; its seq was seen, so
    // it is no gap.
    assert_eq!(
        stamps,
        [
            (2 * SECOND, SECOND, Some(1), Some(0)),
            (0, 5 * SECOND, Some(1), Some(0))
        ]
    );
}

#[test]
fn sizes_must_be_multiples_of_the_smallest_and_listed_once() {
    let base = || AggregatorConfig::new(size(60_000), 0, WatermarkRule::Markers, vec![]).unwrap();
    for (larger, words) in [
        (vec![90_000], "not a multiple"),
        (vec![30_000], "not a multiple"),
        (vec![60_000], "not a multiple"),
        (vec![300_000, 300_000], "listed twice"),
    ] {
        match base().with_rollups(larger.iter().map(|&ms| size(ms))) {
            Err(Error::InvalidConfig(reason)) => assert!(reason.contains(words), "{reason}"),
            other => panic!("{larger:?}: {other:?}"),
        }
    }
    let ok = base()
        .with_rollups([size(3_600_000), size(300_000)])
        .unwrap();
    assert_eq!(
        ok.window_sizes()
            .map(WindowSize::millis)
            .collect::<Vec<_>>(),
        [60_000, 300_000, 3_600_000]
    );
}

/// Restarted with other sizes: bars of a removed size are dropped, and a new size's first bar,
/// whose early sub-windows closed before it was configured, is never emitted as if complete.
#[test]
fn sizes_changed_across_a_restore_drop_what_is_gone_and_emit_no_partial_bar() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    agg.ingest(&trade("BTC-PERPETUAL", 1, T0 + 100, 100.0, 1.0, false));
    agg.ingest(&trade("BTC-PERPETUAL", 2, T0 + 1_100, 100.0, 1.0, false));
    agg.observe_progress("raw-1", T0 + 2_000);
    assert_eq!(agg.drain_closed().len(), 2, "two 1 s bars");
    let snapshot = agg.snapshot();
    assert_eq!(
        snapshot.instruments[0].rollups.len(),
        1,
        "the 5 s bar is half-built"
    );

    // 5 s removed, 10 s added: its bar [T0, T0 + 10 s) lost the first two seconds.
    let mut restored = Aggregator::restore(config(SECOND, &[10 * SECOND], 0), snapshot).unwrap();
    for (seq, ts) in [(3, 2_100), (4, 10_100)] {
        restored.ingest(&trade("BTC-PERPETUAL", seq, T0 + ts, 100.0, 1.0, false));
    }
    restored.observe_progress("raw-1", T0 + 20_000);
    let bars: Vec<(i64, i64)> = restored
        .drain_closed()
        .iter()
        .map(|a| (a.window_start - T0, a.window_ms))
        .collect();
    assert_eq!(
        bars,
        [
            (2 * SECOND, SECOND),
            (10 * SECOND, SECOND),
            (10 * SECOND, 10 * SECOND)
        ],
        "no 5 s bar, no partial 10 s bar; the next 10 s bar is whole"
    );
    // The sizes travel with the state, so a second restart adds no floor of its own.
    let again = restored.snapshot();
    assert_eq!(again.instruments[0].rollup_sizes_ms, [10 * SECOND]);
}

#[test]
fn state_with_a_misaligned_rolled_up_bar_is_refused() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    agg.ingest(&trade("BTC-PERPETUAL", 1, T0 + 100, 100.0, 1.0, false));
    agg.observe_progress("raw-1", T0 + 1_000);
    agg.drain_closed();
    let mut snapshot = agg.snapshot();
    snapshot.instruments[0].rollups[0].window_start += 1;
    snapshot.instruments[0].rollups[0].window_end += 1;
    match Aggregator::restore(config(SECOND, &[5 * SECOND], 0), snapshot) {
        Err(Error::SnapshotMismatch { reason, .. }) => {
            assert!(reason.contains("rolled-up window"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
