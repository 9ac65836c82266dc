//! Several bar sizes from one stream: larger bars rolled up from the smallest at close equal
//! bars built directly at the larger size, bit for bit; completeness stamps (`seq_gaps`,
//! `late_trades`) on every bar.
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
        match entry {
            Entry::Trade(t) => {
                agg.ingest(t);
            }
            Entry::Marker(c) => {
                agg.observe_progress("raw-1", *c);
            }
        }
        out.extend(agg.drain_closed());
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
                a.seq_gaps,
            )
        })
        .collect();
    bars.sort();
    bars
}

/// A log over three instruments: per instrument increasing `trade_seq` (sometimes skipping
/// values) and non-decreasing timestamps, quiet stretches longer than a bar, prices and amounts
/// as exchanges quote them (decimals), and progress markers that never pass a trade still to
/// come (so no trade is late).
fn log() -> impl Strategy<Value = Vec<Entry>> {
    let step = (
        0usize..3,
        prop_oneof![6 => 0i64..400, 2 => 400i64..4_000, 1 => 4_000i64..40_000],
        prop_oneof![5 => Just(1u64), 1 => 2u64..5],
        (100u32..200_000, 0i32..3),
        (1u32..100_000, 0i32..4),
        any::<bool>(),
        prop::bool::weighted(0.2),
    );
    prop::collection::vec(step, 1..400).prop_map(|steps| {
        let names = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26-100000-C"];
        let mut now = T0 + 17;
        let mut seq = [10u64; 3];
        let mut log = Vec::new();
        for (i, pause, seq_step, (p, pd), (a, ad), sell, marker) in steps {
            now += pause;
            seq[i] += seq_step;
            let price = f64::from(p) / 10f64.powi(pd);
            let amount = f64::from(a) / 10f64.powi(ad);
            log.push(Entry::Trade(trade(
                names[i], seq[i], now, price, amount, sell,
            )));
            if marker {
                // Every trade up to `now` is in: later trades have later timestamps.
                log.push(Entry::Marker(now));
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
        for ms in [SECOND, 5 * SECOND, 60 * SECOND] {
            let direct = run(&config(ms, &[], grace), &log);
            prop_assert_eq!(of_size(&out, ms), of_size(&direct, ms), "{} ms bars differ", ms);
        }
        prop_assert_eq!(out.len(), out.iter().filter(|a| [SECOND, 5 * SECOND, 60 * SECOND].contains(&a.window_ms)).count());
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
    // The late trade never reached a bar, so its seq is also a gap of the bar after it.
    assert_eq!(
        stamps,
        [
            (2 * SECOND, SECOND, Some(1), Some(1)),
            (0, 5 * SECOND, Some(1), Some(1))
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

#[test]
fn state_with_rolled_up_bars_is_refused_under_other_sizes() {
    let mut agg = Aggregator::new(config(SECOND, &[5 * SECOND], 0));
    agg.ingest(&trade("BTC-PERPETUAL", 1, T0 + 100, 100.0, 1.0, false));
    agg.observe_progress("raw-1", T0 + 1_000);
    agg.drain_closed();
    let snapshot = agg.snapshot();
    assert_eq!(
        snapshot.instruments[0].rollups.len(),
        1,
        "the 5 s bar is half-built"
    );
    match Aggregator::restore(config(SECOND, &[10 * SECOND], 0), snapshot) {
        Err(Error::SnapshotMismatch { reason, .. }) => {
            assert!(reason.contains("rolled-up window"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
