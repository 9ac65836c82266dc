//! The demo's screen: a banner that says where the data comes from, then per window the latest
//! aggregate of each instrument at its tick precision, with units, the buy/sell split and a
//! sparkline of recent closes; problems of the child processes at the bottom, with their logs.

use std::collections::{BTreeMap, VecDeque};

use domain::Aggregate;

use crate::market::{Date, Listed};

/// Closes kept per instrument for the sparkline.
pub const TREND_LEN: usize = 10;

/// Where the trades come from, for the banner.
#[derive(Debug, Clone)]
pub enum Source {
    /// The fake Deribit, with the seed that replays its prices.
    Simulated {
        /// The market's random seed.
        seed: u64,
    },
    /// The real Deribit.
    Live {
        /// Its WebSocket URL.
        url: String,
    },
}

/// Everything the screen shows.
#[derive(Debug, Default)]
pub struct Board {
    /// The latest aggregate per instrument.
    pub latest: BTreeMap<String, Aggregate>,
    /// Recent closes per instrument, oldest first.
    pub closes: BTreeMap<String, VecDeque<f64>>,
    /// Aggregates received so far.
    pub received: usize,
    /// Lines about what went wrong (a service that exited, an undecodable aggregate).
    pub problems: Vec<String>,
    /// Lines about services that are not ready, each with its reason and log.
    pub not_ready: Vec<String>,
    /// Where the services' metrics and logs are.
    pub footer: String,
}

impl Board {
    /// Takes a new aggregate in.
    pub fn add(&mut self, aggregate: Aggregate) {
        self.received += 1;
        let closes = self
            .closes
            .entry(aggregate.instrument_name.clone())
            .or_default();
        closes.push_back(aggregate.close);
        while closes.len() > TREND_LEN {
            closes.pop_front();
        }
        self.latest
            .insert(aggregate.instrument_name.clone(), aggregate);
    }
}

/// `2026-12-02 10:15–10:16 UTC`, with seconds when the window is not whole minutes.
pub fn window_label(start_ms: i64, end_ms: i64) -> String {
    let with_seconds = start_ms % 60_000 != 0 || end_ms % 60_000 != 0;
    let time = |ms: i64| {
        let secs = ms.div_euclid(1000).rem_euclid(86_400);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if with_seconds {
            format!("{h:02}:{m:02}:{s:02}")
        } else {
            format!("{h:02}:{m:02}")
        }
    };
    format!(
        "{} {}–{} UTC",
        Date::of_millis(start_ms).iso(),
        time(start_ms),
        time(end_ms)
    )
}

/// Decimal places of a tick size (`0.5` → 1, `0.0005` → 4).
pub fn tick_decimals(tick: f64) -> usize {
    (0..8)
        .find(|&d| {
            let scaled = tick * 10f64.powi(i32::try_from(d).unwrap_or(0));
            (scaled - scaled.round()).abs() < 1e-9
        })
        .unwrap_or(8)
}

/// `price` rounded to the instrument's tick, shown to its precision.
pub fn price_text(price: f64, tick: f64) -> String {
    let on_tick = (price / tick).round() * tick;
    format!("{on_tick:.*}", tick_decimals(tick))
}

/// An amount with its unit, short enough for its column: `1.25M USD`, `840k USD`, `12.5 BTC`.
pub fn amount_text(amount: f64, unit: &str) -> String {
    if unit == "USD" {
        if amount >= 1e6 {
            format!("{:.2}M {unit}", amount / 1e6)
        } else if amount >= 1e4 {
            format!("{:.0}k {unit}", amount / 1e3)
        } else {
            format!("{amount:.0} {unit}")
        }
    } else {
        format!("{amount:.1} {unit}")
    }
}

/// Buy share / sell share of the volume in percent, `62/38`.
pub fn split_text(buy: f64, sell: f64) -> String {
    let total = buy + sell;
    if total <= 0.0 {
        return "–".to_owned();
    }
    let buy_pct = (buy / total * 100.0).round();
    format!("{buy_pct:.0}/{:.0}", 100.0 - buy_pct)
}

/// A sparkline of `values` scaled between their own low and high.
pub fn sparkline(values: &VecDeque<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|&v| {
            if high - low <= f64::EPSILON {
                BARS[3]
            } else {
                // 0.0 ..= 7.0 by construction.
                let level = ((v - low) / (high - low) * 7.0).round();
                BARS.into_iter()
                    .zip(0..)
                    .find(|&(_, step)| f64::from(step) >= level)
                    .map_or(BARS[7], |(bar, _)| bar)
            }
        })
        .collect()
}

/// The banner: what the data is and where it comes from.
pub fn banner(source: &Source) -> String {
    match source {
        Source::Simulated { seed } => format!(
            "SIMULATED MARKET (not real prices): a fake Deribit in this process, seed {seed} (`just demo --seed {seed}` replays it)"
        ),
        Source::Live { url } => format!("LIVE: trades from Deribit at {url}"),
    }
}

/// The whole screen, each line within 120 columns (the banner and problems may wrap).
pub fn render(board: &Board, source: &Source, listed: &[Listed], window_ms: i64) -> String {
    let mut out = String::from("\x1b[2J\x1b[H");
    out.push_str(&banner(source));
    out.push('\n');
    out.push_str(&format!(
        "deribit-kafka demo: {} s windows, closed on app-raw's progress markers; {} aggregates so far. Ctrl-C stops.\n\n",
        window_ms / 1000,
        board.received
    ));
    let header = format!(
        "{:<21}{:>6} {:>12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
        "instrument",
        "trades",
        "volume",
        "b/s %",
        "open",
        "high",
        "low",
        "close",
        "vwap",
        "ewma",
        "closes"
    );
    // Newest window first; within it, instruments in listing order.
    let mut windows: BTreeMap<std::cmp::Reverse<i64>, Vec<&Aggregate>> = BTreeMap::new();
    for aggregate in board.latest.values() {
        windows
            .entry(std::cmp::Reverse(aggregate.window_start))
            .or_default()
            .push(aggregate);
    }
    let rank = |name: &str| {
        listed
            .iter()
            .position(|l| l.instrument.name == name)
            .unwrap_or(usize::MAX)
    };
    if windows.is_empty() {
        out.push_str("(waiting for the first window to close)\n");
    }
    for (std::cmp::Reverse(start), mut rows) in windows {
        rows.sort_by_key(|a| (rank(&a.instrument_name), a.instrument_name.clone()));
        let end = rows.first().map_or(start, |a| a.window_end);
        out.push_str(&format!("window {}\n{header}\n", window_label(start, end)));
        for a in rows {
            let (tick, unit) = listed
                .iter()
                .find(|l| l.instrument.name == a.instrument_name)
                .map_or_else(
                    || crate::market::conventions(&a.instrument_name),
                    |l| (l.tick, l.amount_unit),
                );
            let price = |p: f64| price_text(p, tick);
            let ewma = a.ewma.first().map_or_else(String::new, |e| price(e.price));
            // On the tick, so that a flat line on screen is a flat sparkline.
            let trend = board
                .closes
                .get(&a.instrument_name)
                .map(|closes| {
                    sparkline(&closes.iter().map(|c| (c / tick).round() * tick).collect())
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<21}{:>6} {:>12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
                a.instrument_name,
                a.trade_count,
                amount_text(a.volume, unit),
                split_text(a.buy_volume, a.sell_volume),
                price(a.open),
                price(a.high),
                price(a.low),
                price(a.close),
                price(a.vwap),
                ewma,
                trend
            ));
        }
        out.push('\n');
    }
    out.push_str(
        "futures: prices in USD, volume in USD; options: premium and volume in the coin (BTC, ETH)\n",
    );
    out.push_str(
        "b/s %: buy and sell shares of the volume; ewma: the first half-life's time-decayed price; closes: the last ten windows\n",
    );
    if !board.footer.is_empty() {
        out.push_str(&format!("{}\n", board.footer));
    }
    // The last few, so that a stream of bad records cannot push the table off the screen.
    let recent = board.problems.len().saturating_sub(5);
    for problem in board.problems[recent..].iter().chain(&board.not_ready) {
        out.push_str(&format!("\n! {problem}"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{Date, market};

    /// The screen's width budget.
    const WIDTH: usize = 120;

    fn aggregate(name: &str, start: i64, close: f64) -> Aggregate {
        Aggregate {
            instrument_name: name.to_owned(),
            window_start: start,
            window_end: start + 10_000,
            trade_count: 14,
            volume: 123_450.0,
            buy_volume: 76_539.0,
            sell_volume: 46_911.0,
            vwap: close,
            open: close,
            high: close,
            low: close,
            close,
            ewma: Vec::new(),
            first_trade_seq: 1,
            last_trade_seq: 14,
            first_trade_timestamp: start,
            last_trade_timestamp: start + 9_000,
            window_ms: 10_000,
            seq_gaps: Some(0),
            late_trades: Some(0),
        }
    }

    #[test]
    fn windows_read_as_dates_and_times_in_utc() {
        let start = Date {
            year: 2026,
            month: 12,
            day: 2,
        }
        .days()
            * 86_400_000
            + 36_900_000;
        assert_eq!(
            window_label(start, start + 60_000),
            "2026-12-02 10:15–10:16 UTC"
        );
        assert_eq!(
            window_label(start + 10_000, start + 20_000),
            "2026-12-02 10:15:10–10:15:20 UTC"
        );
    }

    #[test]
    fn prices_sit_on_the_tick_and_amounts_carry_units() {
        assert_eq!(tick_decimals(0.5), 1);
        assert_eq!(tick_decimals(0.05), 2);
        assert_eq!(tick_decimals(0.0005), 4);
        assert_eq!(price_text(97_250.26, 0.5), "97250.5");
        assert_eq!(price_text(0.031_27, 0.0005), "0.0315");
        assert_eq!(amount_text(1_254_000.0, "USD"), "1.25M USD");
        assert_eq!(amount_text(123_450.0, "USD"), "123k USD");
        assert_eq!(amount_text(950.0, "USD"), "950 USD");
        assert_eq!(amount_text(12.5, "BTC"), "12.5 BTC");
        assert_eq!(split_text(62.0, 38.0), "62/38");
        assert_eq!(split_text(0.0, 0.0), "–");
    }

    #[test]
    fn a_sparkline_spans_its_own_range() {
        let closes: VecDeque<f64> = [1.0, 2.0, 3.0, 2.0, 8.0].into_iter().collect();
        assert_eq!(sparkline(&closes), "▁▂▃▂█");
        assert_eq!(sparkline(&[5.0, 5.0].into_iter().collect()), "▄▄");
    }

    #[test]
    fn the_screen_fits_120_columns_groups_windows_and_names_its_source() {
        let listed = market(Date {
            year: 2026,
            month: 12,
            day: 2,
        });
        let mut board = Board::default();
        let names: Vec<String> = listed.iter().map(|l| l.instrument.name.clone()).collect();
        for round in 0..12 {
            for (i, name) in names.iter().enumerate() {
                // Two windows on screen: the options lag one window behind.
                let start = 1_780_000_000_000 + round * 10_000 - if i >= 3 { 10_000 } else { 0 };
                let price = listed[i].instrument.price * (1.0 + 0.0012 * round as f64);
                board.add(aggregate(name, start, price));
            }
        }
        board
            .problems
            .push("app-raw exited (exit status: 1); its log: /tmp/x/app-raw.log".into());
        let screen = render(&board, &Source::Simulated { seed: 42 }, &listed, 10_000);
        assert!(screen.contains("SIMULATED MARKET"), "{screen}");
        assert!(screen.contains("seed 42"));
        let body = screen.lines().skip(2).filter(|l| !l.starts_with('!'));
        for line in body {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        // Each window once, newest first, and every row under its own window.
        let windows: Vec<&str> = screen
            .lines()
            .filter(|l| l.starts_with("window "))
            .collect();
        assert_eq!(windows.len(), 2, "{screen}");
        assert!(windows[0] > windows[1]);
        let perpetual = screen
            .lines()
            .find(|l| l.starts_with("BTC-PERPETUAL"))
            .unwrap();
        assert!(
            perpetual.contains("123k USD") && perpetual.contains("62/38"),
            "{perpetual}"
        );
        // 97 250 × 1.0132 = 98 533.7, on the 0.5 tick.
        assert!(perpetual.contains("98533.5"), "{perpetual}");
        assert!(perpetual.ends_with("▁▂▃▃▄▅▆▆▇█"), "{perpetual}");
        let option = screen
            .lines()
            .find(|l| l.starts_with("BTC-25DEC26-100000-C"))
            .unwrap();
        assert!(
            option.contains("BTC") && option.contains("0.0320"),
            "{option}"
        );
        assert!(screen.contains("! app-raw exited (exit status: 1); its log: /tmp/x/app-raw.log"));
        let live = render(
            &board,
            &Source::Live {
                url: "wss://x".into(),
            },
            &listed,
            10_000,
        );
        assert!(live.contains("LIVE: trades from Deribit at wss://x"));
    }
}
