//! Behaviour of the `Aggregator`: unit cases, then property tests against a naive model.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // test helpers

use domain::{
    Aggregate, Aggregator, AggregatorConfig, Direction, Error, Ingested, PartitionSnapshot, Trade,
    TradeFields, WatermarkRule, WindowSize, testing,
};
use proptest::prelude::*;

const MINUTE: i64 = 60_000;
const T0: i64 = 1_699_999_980_000; // a minute boundary (and a second boundary)

fn trade(
    instrument: &str,
    seq: u64,
    ts: i64,
    price: f64,
    amount: f64,
    direction: Direction,
) -> Trade {
    testing::validated(TradeFields {
        trade_id: format!("{instrument}-{seq}"),
        direction,
        ..testing::fields(instrument, seq, ts, price, amount)
    })
}

fn buy(instrument: &str, seq: u64, ts: i64, price: f64, amount: f64) -> Trade {
    trade(instrument, seq, ts, price, amount, Direction::Buy)
}

fn config(window_ms: i64, grace_ms: i64, halflives: &[i64]) -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(window_ms).unwrap(),
        grace_ms,
        WatermarkRule::TradeTime {
            max_delay_ms: 5_000,
        },
        halflives.to_vec(),
    )
    .unwrap()
}

#[test]
fn aggregates_one_window_with_ohlc_volumes_vwap_and_ewma() {
    let mut agg = Aggregator::new(config(MINUTE, 0, &[10_000]));
    agg.ingest(&buy("BTC-PERPETUAL", 1, T0, 100.0, 1.0));
    agg.ingest(&trade(
        "BTC-PERPETUAL",
        2,
        T0 + 10_000,
        102.0,
        3.0,
        Direction::Sell,
    ));
    agg.ingest(&buy("BTC-PERPETUAL", 3, T0 + 30_000, 99.0, 1.0));
    agg.ingest(&buy("BTC-PERPETUAL", 4, T0 + 40_000, 105.0, 1.0));
    assert!(
        agg.drain_closed().is_empty(),
        "window still open at watermark {:?}",
        agg.watermark()
    );
    agg.ingest(&buy("BTC-PERPETUAL", 5, T0 + MINUTE, 106.0, 1.0));
    let out = agg.drain_closed();
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!(
        (a.window_start, a.window_end, a.trade_count),
        (T0, T0 + MINUTE, 4)
    );
    assert_eq!(
        (a.open, a.high, a.low, a.close),
        (100.0, 105.0, 99.0, 105.0)
    );
    assert_eq!((a.volume, a.buy_volume, a.sell_volume), (6.0, 3.0, 3.0));
    assert_eq!(a.vwap, (100.0 + 306.0 + 99.0 + 105.0) / 6.0);
    assert_eq!((a.first_trade_seq, a.last_trade_seq), (1, 4));
    assert_eq!(
        (a.first_trade_timestamp, a.last_trade_timestamp),
        (T0, T0 + 40_000)
    );
    // The pandas worked example (H = 10 s): 102.81481481481481 at the fourth trade.
    assert_eq!(a.ewma.len(), 1);
    assert!((a.ewma[0].price - 102.81481481481481).abs() < 1e-12);
    // Amount-weighted: weights 0.0625, 0.125·3, 0.5, 1 on prices 100, 102, 99, 105.
    let vw = (0.0625 * 100.0 + 0.375 * 102.0 + 0.5 * 99.0 + 105.0) / (0.0625 + 0.375 + 0.5 + 1.0);
    assert!((a.ewma[0].vw_price - vw).abs() < 1e-12);
}

#[test]
fn ewma_continues_across_windows() {
    let mut agg = Aggregator::new(config(MINUTE, 0, &[MINUTE]));
    agg.ingest(&buy("X", 1, T0, 100.0, 1.0));
    agg.ingest(&buy("X", 2, T0 + MINUTE, 200.0, 1.0));
    agg.ingest(&buy("X", 3, T0 + 3 * MINUTE, 1.0, 1.0));
    let out = agg.drain_closed();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].ewma[0].price, 100.0);
    // Second window: weights 0.5 (100) and 1 (200), not a fresh start at 200.
    assert!((out[1].ewma[0].price - (50.0 + 200.0) / 1.5).abs() < 1e-12);
}

#[test]
fn grace_delays_closing_and_late_trades_are_dropped_and_counted() {
    let mut agg = Aggregator::new(config(MINUTE, 5_000, &[1_000]));
    agg.ingest(&buy("A", 1, T0 + 1_000, 10.0, 1.0));
    agg.ingest(&buy("B", 1, T0 + MINUTE + 4_999, 10.0, 1.0));
    assert!(agg.drain_closed().is_empty(), "end + grace not reached yet");
    // Out of order across instruments but within grace: accepted into the first window.
    assert_eq!(
        agg.ingest(&buy("A", 2, T0 + 59_000, 12.0, 1.0)),
        Ingested::Accepted
    );
    agg.ingest(&buy("B", 2, T0 + MINUTE + 5_000, 10.0, 1.0));
    let out = agg.drain_closed();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].instrument_name.as_str(),
            out[0].trade_count,
            out[0].close
        ),
        ("A", 2, 12.0)
    );
    // Now the first window is closed: a trade for it is late, for a known or a new instrument.
    assert_eq!(
        agg.ingest(&buy("A", 3, T0 + 59_500, 99.0, 1.0)),
        Ingested::Late
    );
    assert_eq!(
        agg.ingest(&buy("C", 1, T0 + 2_000, 99.0, 1.0)),
        Ingested::Late
    );
    // A late trade's trade_seq counts as seen: a copy is a duplicate, the next is no gap.
    assert_eq!(
        agg.ingest(&buy("A", 3, T0 + MINUTE + 6_000, 11.0, 1.0)),
        Ingested::Duplicate
    );
    assert_eq!(
        agg.ingest(&buy("A", 4, T0 + MINUTE + 6_000, 11.0, 1.0)),
        Ingested::Accepted
    );
    let rest = agg.flush_all();
    let a = rest.iter().find(|a| a.instrument_name == "A").unwrap();
    assert_eq!(
        (a.trade_count, a.seq_gaps, a.late_trades),
        (1, Some(0), Some(1))
    );
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut agg = Aggregator::new(config(MINUTE, 0, &[1_000]));
    assert_eq!(agg.ingest(&buy("A", 5, T0, 10.0, 1.0)), Ingested::Accepted);
    assert_eq!(agg.ingest(&buy("A", 5, T0, 10.0, 1.0)), Ingested::Duplicate);
    assert_eq!(
        agg.ingest(&buy("A", 4, T0 + 1, 10.0, 1.0)),
        Ingested::Duplicate
    );
    assert_eq!(
        agg.ingest(&buy("B", 4, T0 + 1, 10.0, 1.0)),
        Ingested::Accepted
    );
    let out = agg.flush_all();
    assert_eq!(
        out.iter().map(|a| a.trade_count).collect::<Vec<_>>(),
        vec![1, 1]
    );
}

#[test]
fn closed_windows_come_out_by_window_end_then_instrument() {
    let mut agg = Aggregator::new(config(MINUTE, 5_000, &[]));
    for (i, name) in ["ETH", "BTC", "SOL"].iter().enumerate() {
        agg.ingest(&buy(name, 1, T0 + MINUTE + i as i64, 1.0, 1.0));
        agg.ingest(&buy(name, 0, T0, 1.0, 1.0)); // duplicate (seq 0 < 1), ignored
    }
    agg.ingest(&buy("ZZZ", 1, T0 + 10, 1.0, 1.0)); // first window still in grace → accepted
    agg.ingest(&buy("AAA", 1, T0 + 3 * MINUTE, 1.0, 1.0));
    let keys: Vec<(i64, String)> = agg
        .drain_closed()
        .into_iter()
        .map(|a| (a.window_end - T0, a.instrument_name))
        .collect();
    assert_eq!(
        keys,
        vec![
            (MINUTE, "ZZZ".into()),
            (2 * MINUTE, "BTC".into()),
            (2 * MINUTE, "ETH".into()),
            (2 * MINUTE, "SOL".into()),
        ]
    );
}

#[test]
fn wall_clock_closes_quiet_windows_only_when_caught_up() {
    let mut agg = Aggregator::new(config(MINUTE, 1_000, &[1_000])); // max delay 5 s
    agg.ingest(&buy("A", 1, T0 + 10, 1.0, 1.0));
    let now = T0 + MINUTE + 6_000; // end + grace + max delay
    agg.advance_wall_clock(now, false);
    assert!(
        agg.drain_closed().is_empty(),
        "replaying a backlog must not close windows"
    );
    agg.advance_wall_clock(now - 1, true);
    assert!(agg.drain_closed().is_empty(), "one ms short of end + grace");
    agg.advance_wall_clock(now, true);
    assert_eq!(agg.drain_closed().len(), 1);
    assert_eq!(agg.watermark(), Some(T0 + MINUTE + 1_000));
    agg.advance_wall_clock(T0, true);
    assert_eq!(
        agg.watermark(),
        Some(T0 + MINUTE + 1_000),
        "the watermark never moves back"
    );
}

#[test]
fn restore_refuses_a_snapshot_from_another_configuration() {
    let mut agg = Aggregator::new(config(MINUTE, 0, &[1_000, 2_000]));
    agg.ingest(&buy("A", 1, T0, 1.0, 1.0));
    let snapshot = agg.snapshot();
    let err = Aggregator::restore(config(MINUTE, 0, &[1_000]), snapshot.clone()).unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotMismatch { instrument, reason }
        if instrument == "A" && reason.contains("half-lives")),
        "{err}"
    );
    let err = Aggregator::restore(config(30_000, 0, &[1_000, 2_000]), snapshot).unwrap_err();
    assert!(
        err.to_string().contains("is not a 30000 ms window"),
        "{err}"
    );
}

#[test]
fn take_changed_reports_each_changed_instrument_once() {
    let mut agg = Aggregator::new(config(MINUTE, 0, &[1_000]));
    agg.ingest(&buy("B", 1, T0, 1.0, 1.0));
    agg.ingest(&buy("A", 1, T0, 1.0, 1.0));
    agg.ingest(&buy("B", 2, T0, 1.0, 1.0));
    let names: Vec<String> = agg
        .take_changed()
        .into_iter()
        .map(|s| s.instrument_name)
        .collect();
    assert_eq!(names, vec!["A", "B"]);
    assert!(agg.take_changed().is_empty());
    agg.ingest(&buy("A", 2, T0 + MINUTE, 1.0, 1.0));
    agg.drain_closed(); // closes A's and B's first windows: both states change
    let changed = agg.take_changed();
    assert_eq!(
        changed
            .iter()
            .map(|s| s.instrument_name.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "B"]
    );
    assert!(changed[1].windows.is_empty());
}

// ---------------------------------------------------------------- properties

/// A stream over a few instruments: per instrument strictly increasing `trade_seq` and
/// non-decreasing timestamps; across instruments, timestamps jitter backwards (so some trades
/// fall into grace and some arrive late).
fn stream() -> impl Strategy<Value = Vec<Trade>> {
    let step = (
        0usize..7,
        prop_oneof![4 => 0i64..50, 3 => 50i64..600, 1 => 600i64..5_000],
        prop_oneof![3 => Just(0i64), 1 => 0i64..2_500],
        1.0f64..2_000.0,
        0.001f64..50.0,
        any::<bool>(),
    );
    prop::collection::vec(step, 1..250).prop_map(|steps| {
        // Both key forms of the aggregator's name table: up to 23 bytes packed, longer hashed
        // (two long names sharing a 25-byte prefix, one name of exactly 23 bytes).
        let names = [
            "BTC-PERPETUAL",
            "ETH-PERPETUAL",
            "BTC-27MAY20-9000-C",
            "SOL_USDC",
            "ETH_USDC-27DEC24-4000-C",
            "BTC-CS-27DEC24-60000_70000",
            "BTC-CS-27DEC24-60000_70000_80000",
        ];
        let mut base = T0 + 123;
        let mut seq = [0u64; 7];
        let mut last_ts = [0i64; 7];
        steps
            .into_iter()
            .map(|(i, gap, jitter, price, amount, is_buy)| {
                base += gap;
                seq[i] += 1;
                last_ts[i] = last_ts[i].max(base - jitter);
                let direction = if is_buy {
                    Direction::Buy
                } else {
                    Direction::Sell
                };
                trade(names[i], seq[i], last_ts[i], price, amount, direction)
            })
            .collect()
    })
}

fn prop_config() -> AggregatorConfig {
    config(1_000, 400, &[300, 5_000])
}

fn run(config: AggregatorConfig, trades: &[Trade]) -> Vec<Aggregate> {
    let mut agg = Aggregator::new(config);
    let mut out = Vec::new();
    for t in trades {
        agg.ingest(t);
        out.extend(agg.drain_closed());
    }
    out.extend(agg.flush_all());
    out
}

/// The rules spelled out naively: which trades count, then each window recomputed from them.
fn naive(config: &AggregatorConfig, trades: &[Trade]) -> Vec<Aggregate> {
    let size = config.window().millis();
    let mut watermark = i64::MIN;
    let mut accepted: Vec<&Trade> = Vec::new();
    // Late trades of instruments already seen: they count as seen (for duplicates and gaps)
    // and are counted on the window of the instrument's next accepted trade.
    let mut late_known: Vec<&Trade> = Vec::new();
    for t in trades {
        let end = t.timestamp - t.timestamp.rem_euclid(size) + size;
        let seen = accepted
            .iter()
            .any(|a| a.instrument_name == t.instrument_name);
        let duplicate = accepted
            .iter()
            .chain(&late_known)
            .any(|a| a.instrument_name == t.instrument_name && a.trade_seq >= t.trade_seq);
        let late = watermark >= end + config.grace_ms();
        if !duplicate && !late {
            accepted.push(t);
        } else if !duplicate && seen {
            late_known.push(t);
        }
        watermark = watermark.max(t.timestamp);
    }
    let mut keys: Vec<(i64, String)> = accepted
        .iter()
        .map(|t| {
            (
                t.timestamp - t.timestamp.rem_euclid(size) + size,
                t.instrument_name.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(end, name)| {
            let history: Vec<&&Trade> = accepted
                .iter()
                .filter(|t| t.instrument_name == name)
                .collect();
            let window: Vec<&&Trade> = history
                .iter()
                .copied()
                .filter(|t| t.timestamp >= end - size && t.timestamp < end)
                .collect();
            let last = window[window.len() - 1];
            // The trade_seq values between each trade and the instrument's previous accepted
            // one that were seen neither accepted nor late.
            let seq_gaps = window
                .iter()
                .map(|t| {
                    let previous = history
                        .iter()
                        .map(|h| h.trade_seq)
                        .filter(|&s| s < t.trade_seq)
                        .max();
                    previous.map_or(0, |p| {
                        let late_between = late_known
                            .iter()
                            .filter(|l| l.instrument_name == name)
                            .filter(|l| p < l.trade_seq && l.trade_seq < t.trade_seq)
                            .count() as u64;
                        t.trade_seq - p - 1 - late_between
                    })
                })
                .sum();
            // A late trade counts on the window of its instrument's next accepted trade.
            let late_trades = late_known
                .iter()
                .filter(|l| l.instrument_name == name)
                .filter(|l| {
                    let next = history
                        .iter()
                        .filter(|h| h.trade_seq > l.trade_seq)
                        .min_by_key(|h| h.trade_seq);
                    next.is_some_and(|n| window.iter().any(|w| w.trade_seq == n.trade_seq))
                })
                .count() as u64;
            let upto: Vec<&&Trade> = history
                .iter()
                .copied()
                .take_while(|t| t.trade_seq <= last.trade_seq)
                .collect();
            let ewma = config
                .halflives_ms()
                .iter()
                .map(|&h| {
                    let (mut wp, mut wpa, mut wa, mut w) = (0.0, 0.0, 0.0, 0.0);
                    for t in &upto {
                        let weight = 0.5f64.powf((last.timestamp - t.timestamp) as f64 / h as f64);
                        wp += weight * t.price;
                        wpa += weight * t.price * t.amount;
                        wa += weight * t.amount;
                        w += weight;
                    }
                    domain::EwmaValue {
                        halflife_ms: h,
                        price: wp / w,
                        vw_price: wpa / wa,
                    }
                })
                .collect();
            let side = |d| {
                window
                    .iter()
                    .filter(|t| t.direction == d)
                    .map(|t| t.amount)
                    .sum::<f64>()
            };
            let volume: f64 = window.iter().map(|t| t.amount).sum();
            let notional: f64 = window.iter().map(|t| t.price * t.amount).sum();
            Aggregate {
                instrument_name: name,
                window_start: end - size,
                window_end: end,
                window_ms: size,
                trade_count: window.len() as u64,
                volume,
                buy_volume: side(Direction::Buy),
                sell_volume: side(Direction::Sell),
                vwap: notional / volume,
                open: window[0].price,
                high: window.iter().map(|t| t.price).fold(f64::MIN, f64::max),
                low: window.iter().map(|t| t.price).fold(f64::MAX, f64::min),
                close: last.price,
                ewma,
                first_trade_seq: window[0].trade_seq,
                last_trade_seq: last.trade_seq,
                first_trade_timestamp: window[0].timestamp,
                last_trade_timestamp: last.timestamp,
                seq_gaps: Some(seq_gaps),
                late_trades: Some(late_trades),
            }
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    a == b || ((a - b) / b).abs() < 1e-12
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn output_equals_naive_recomputation(trades in stream()) {
        let config = prop_config();
        let got = run(config.clone(), &trades);
        let expected = naive(&config, &trades);
        prop_assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            // Everything but the sums and the EWMA is bit-identical; the aggregator's sums are
            // compensated (exact, rounded once), the model's plain ones.
            for (field, gv, ev) in [
                ("volume", g.volume, e.volume),
                ("buy_volume", g.buy_volume, e.buy_volume),
                ("sell_volume", g.sell_volume, e.sell_volume),
                ("vwap", g.vwap, e.vwap),
            ] {
                prop_assert!(close(gv, ev), "{} {} vs {}", field, gv, ev);
            }
            let plain = |a: &Aggregate| Aggregate {
                ewma: Vec::new(),
                volume: 0.0,
                buy_volume: 0.0,
                sell_volume: 0.0,
                vwap: 0.0,
                ..a.clone()
            };
            prop_assert_eq!(plain(g), plain(e));
            prop_assert_eq!(g.ewma.len(), e.ewma.len());
            for (gv, ev) in g.ewma.iter().zip(&e.ewma) {
                prop_assert_eq!(gv.halflife_ms, ev.halflife_ms);
                prop_assert!(close(gv.price, ev.price), "price {} vs {}", gv.price, ev.price);
                prop_assert!(close(gv.vw_price, ev.vw_price), "vw {} vs {}", gv.vw_price, ev.vw_price);
            }
        }
    }

    #[test]
    fn windows_align_to_the_epoch_and_hold_only_their_trades(trades in stream()) {
        let config = prop_config();
        let size = config.window().millis();
        for a in run(config, &trades) {
            prop_assert_eq!(a.window_start.rem_euclid(size), 0);
            prop_assert_eq!(a.window_end, a.window_start + size);
            prop_assert!(a.window_start <= a.first_trade_timestamp);
            prop_assert!(a.last_trade_timestamp < a.window_end);
        }
    }

    #[test]
    fn output_is_ordered_by_window_end_then_instrument(trades in stream()) {
        let out = run(prop_config(), &trades);
        for pair in out.windows(2) {
            prop_assert!(
                (pair[0].window_end, &pair[0].instrument_name) < (pair[1].window_end, &pair[1].instrument_name)
            );
        }
    }

    #[test]
    fn snapshot_restore_at_any_point_continues_identically(
        trades in stream(), cut in any::<prop::sample::Index>(), via_json in any::<bool>()
    ) {
        let config = prop_config();
        let uninterrupted = run(config.clone(), &trades);
        let cut = cut.index(trades.len() + 1);
        let mut agg = Aggregator::new(config.clone());
        let mut out = Vec::new();
        for t in &trades[..cut] {
            agg.ingest(t);
            out.extend(agg.drain_closed());
        }
        let mut snapshot = agg.snapshot();
        if via_json {
            let json = serde_json::to_string(&snapshot).unwrap();
            snapshot = serde_json::from_str::<PartitionSnapshot>(&json).unwrap();
        }
        let mut restored = Aggregator::restore(config, snapshot).unwrap();
        for t in &trades[cut..] {
            restored.ingest(t);
            out.extend(restored.drain_closed());
        }
        out.extend(restored.flush_all());
        prop_assert_eq!(out, uninterrupted);
    }

    #[test]
    fn duplicates_never_change_output(
        trades in stream(), picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..30)
    ) {
        let config = prop_config();
        let expected = run(config.clone(), &trades);
        let mut noisy = trades.clone();
        for (at, of) in picks {
            // Re-deliver a trade that was already delivered (as after a reconnect or a replay).
            let at = at.index(noisy.len()) + 1;
            let copy = noisy[of.index(at)].clone();
            noisy.insert(at, copy);
        }
        let mut agg = Aggregator::new(config);
        let mut out = Vec::new();
        let mut dropped = 0;
        for t in &noisy {
            dropped += usize::from(agg.ingest(t) != Ingested::Accepted);
            out.extend(agg.drain_closed());
        }
        out.extend(agg.flush_all());
        // A copy of a trade that was itself late can be late again rather than a duplicate.
        prop_assert_eq!(
            dropped,
            noisy.len() - trades.len() + late_count(&trades) as usize
        );
        // ... and is then counted again on a window: all else is unchanged.
        prop_assert_eq!(without_late_counts(out), without_late_counts(expected));
    }

    #[test]
    fn late_trades_never_change_output(trades in stream(), at in any::<prop::sample::Index>()) {
        let config = prop_config();
        // Find a point where some window is already closed, and inject a trade for it there,
        // carrying the next trade_seq of its instrument (the instrument's later trades move up
        // by one, in the stream without the injection too).
        let at = at.index(trades.len());
        let watermark = trades[..=at].iter().map(|t| t.timestamp).max().unwrap();
        let size = config.window().millis();
        let late_ts = watermark - config.grace_ms() - size;
        prop_assume!(late_ts > 0);
        let victim = trades[at].instrument_name.clone();
        let next_seq = trades[..=at]
            .iter()
            .filter(|t| t.instrument_name == victim)
            .map(|t| t.trade_seq)
            .max()
            .unwrap() + 1;
        let moved_up = |t: &Trade| {
            let mut fields = t.clone().into_fields();
            if fields.instrument_name == victim {
                fields.trade_seq += 1;
            }
            testing::validated(fields)
        };
        let base: Vec<Trade> = trades[..=at]
            .iter()
            .cloned()
            .chain(trades[at + 1..].iter().map(moved_up))
            .collect();
        let expected = run(config.clone(), &base);
        let mut noisy = base.clone();
        noisy.insert(at + 1, buy(&victim, next_seq, late_ts, 1e6, 1e6));
        let mut agg = Aggregator::new(config.clone());
        let mut out = Vec::new();
        let mut late = 0;
        for t in &noisy {
            late += u64::from(agg.ingest(t) == Ingested::Late);
            out.extend(agg.drain_closed());
        }
        out.extend(agg.flush_all());
        prop_assert_eq!(late, 1 + late_count(&base));
        // If the aggregator knew the instrument (a first trade that is late leaves no state)
        // and a trade of it is accepted later, the late one is counted on that trade's window
        // instead of being a gap there; nothing else changes.
        let mut probe = Aggregator::new(config);
        let mut known = false;
        let mut accepted_after = false;
        for (i, t) in base.iter().enumerate() {
            let accepted = probe.ingest(t) == Ingested::Accepted;
            if t.instrument_name == victim && accepted {
                known |= i <= at;
                accepted_after |= i > at;
            }
        }
        let moved = u64::from(known && accepted_after);
        let sum = |out: &[Aggregate], field: fn(&Aggregate) -> Option<u64>| {
            out.iter().filter_map(field).sum::<u64>()
        };
        prop_assert_eq!(sum(&out, |a| a.late_trades), sum(&expected, |a| a.late_trades) + moved);
        prop_assert_eq!(sum(&out, |a| a.seq_gaps) + moved, sum(&expected, |a| a.seq_gaps));
        prop_assert_eq!(without_stamps(out), without_stamps(expected));
    }
}

fn without_late_counts(out: Vec<Aggregate>) -> Vec<Aggregate> {
    out.into_iter()
        .map(|a| Aggregate {
            late_trades: None,
            ..a
        })
        .collect()
}

fn without_stamps(out: Vec<Aggregate>) -> Vec<Aggregate> {
    out.into_iter()
        .map(|a| Aggregate {
            late_trades: None,
            seq_gaps: None,
            ..a
        })
        .collect()
}

/// How many of `trades` are late, fed in order.
fn late_count(trades: &[Trade]) -> u64 {
    let mut agg = Aggregator::new(prop_config());
    trades
        .iter()
        .map(|t| u64::from(agg.ingest(t) == Ingested::Late))
        .sum()
}
