//! `replay` is the oracle whatever the interleaving: a file that keeps each instrument's order
//! gives the same output however instruments are interleaved (time order, one instrument after
//! another as a partition dump reads, or any shuffle), byte for byte.
#![allow(clippy::unwrap_used, clippy::cast_possible_wrap)] // test helpers

use app_agg::replay::replay;
use domain::{AggregatorConfig, WatermarkRule, WindowSize};
use proptest::prelude::*;

const T0: i64 = 1_732_500_000_000;
const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(1_000).unwrap(),
        0,
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        vec![500, 5_000],
    )
    .unwrap()
}

/// One Deribit trade line.
fn line(instrument: &str, seq: u64, ts: i64, price: f64) -> String {
    format!(
        r#"{{"trade_seq":{seq},"trade_id":"{instrument}-{seq}","timestamp":{ts},"tick_direction":0,"price":{price},"mark_price":{price},"instrument_name":"{instrument}","index_price":{price},"direction":"buy","amount":{}}}"#,
        seq % 7 + 1
    )
}

fn run(lines: &[String]) -> (String, app_agg::replay::ReplaySummary) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut output = Vec::new();
    let summary = replay(input.as_bytes(), &mut output, std::io::sink(), config()).unwrap();
    (String::from_utf8(output).unwrap(), summary)
}

proptest! {
    #[test]
    fn any_interleaving_that_keeps_each_instruments_order_gives_the_same_output(
        steps in prop::collection::vec(
            prop::collection::vec((0i64..900, 1u32..2_000), 1..40),
            INSTRUMENTS.len(),
        ),
        choices in prop::collection::vec(0usize..INSTRUMENTS.len(), 0..200),
    ) {
        // Per instrument: trades in time order (steps may be 0: equal timestamps).
        let per_instrument: Vec<Vec<(i64, String)>> = steps
            .iter()
            .zip(INSTRUMENTS)
            .map(|(steps, instrument)| {
                let mut ts = T0;
                steps
                    .iter()
                    .enumerate()
                    .map(|(i, &(step, price))| {
                        ts += step;
                        (ts, line(instrument, i as u64 + 1, ts, f64::from(price) / 4.0))
                    })
                    .collect()
            })
            .collect();
        let mut time_order: Vec<(i64, String)> = per_instrument.iter().flatten().cloned().collect();
        time_order.sort_by_key(|(ts, _)| *ts);
        let time_order: Vec<String> = time_order.into_iter().map(|(_, l)| l).collect();
        let dump_order: Vec<String> = per_instrument.iter().flatten().map(|(_, l)| l.clone()).collect();
        // A random merge: the choices pick which instrument goes next, the rest follows.
        let mut cursors = vec![0; INSTRUMENTS.len()];
        let mut shuffled = Vec::new();
        for &c in &choices {
            if let Some((_, l)) = per_instrument[c].get(cursors[c]) {
                shuffled.push(l.clone());
                cursors[c] += 1;
            }
        }
        for (i, trades) in per_instrument.iter().enumerate() {
            shuffled.extend(trades[cursors[i]..].iter().map(|(_, l)| l.clone()));
        }

        let (expected, summary) = run(&time_order);
        prop_assert_eq!(summary.late, 0);
        prop_assert_eq!(summary.accepted, time_order.len() as u64);
        prop_assert_eq!(&run(&dump_order).0, &expected);
        prop_assert_eq!(&run(&shuffled).0, &expected);
    }
}
