//! The per-instrument, per-window aggregate and the accumulator that builds it.

use serde::{Deserialize, Serialize};

use crate::compensated::CompensatedSum;
use crate::ewma::EwmaValue;
use crate::trade::{Direction, Trade};

/// One closed window of one instrument. Field names are the wire names (Avro and JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Instrument the window belongs to.
    pub instrument_name: String,
    /// Inclusive window start, ms since the epoch.
    pub window_start: i64,
    /// Exclusive window end, ms since the epoch.
    pub window_end: i64,
    /// Window length, ms (`window_end − window_start`): with several bar sizes, readers tell
    /// bars apart by (instrument, window_start, window_ms).
    pub window_ms: i64,
    /// Number of trades in the window (≥ 1).
    pub trade_count: u64,
    /// Sum of amounts.
    pub volume: f64,
    /// Sum of amounts of taker buys.
    pub buy_volume: f64,
    /// Sum of amounts of taker sells.
    pub sell_volume: f64,
    /// `Σ price·amount / Σ amount`.
    pub vwap: f64,
    /// Price of the first trade (lowest `trade_seq`).
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Price of the last trade.
    pub close: f64,
    /// EWMA values at the window's last trade, one per configured half-life, in config order.
    pub ewma: Vec<EwmaValue>,
    /// `trade_seq` of the first trade.
    pub first_trade_seq: u64,
    /// `trade_seq` of the last trade.
    pub last_trade_seq: u64,
    /// Timestamp of the first trade, ms.
    pub first_trade_timestamp: i64,
    /// Timestamp of the last trade, ms.
    pub last_trade_timestamp: i64,
    /// `trade_seq` values skipped by the window's trades: each trade adds the distance to the
    /// instrument's previous trade (in any window) less one, so a gap before the window's first
    /// trade counts here. 0 when the window saw every trade. `None` only in records written
    /// before it was measured.
    #[serde(default)]
    pub seq_gaps: Option<u64>,
    /// Trades of the instrument that arrived after their own window had closed (and went to the
    /// late path instead), counted on the instrument's next window to close. `None` as above.
    #[serde(default)]
    pub late_trades: Option<u64>,
}

/// Running totals of one open window (serialisable: it is part of an instrument's state).
///
/// Sums are [`CompensatedSum`]s, so a window rolled up from smaller ones ([`merge`](Self::merge))
/// carries exactly the values the same window built trade by trade would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAccumulator {
    /// Inclusive start, ms.
    pub window_start: i64,
    /// Exclusive end, ms.
    pub window_end: i64,
    /// Trades folded in so far.
    pub trade_count: u64,
    /// Sum of buy amounts (the volume is this and the sell amounts, added once at close).
    pub buy_volume: CompensatedSum,
    /// Sum of sell amounts.
    pub sell_volume: CompensatedSum,
    /// `Σ price·amount`.
    pub notional: CompensatedSum,
    /// Price of the trade with the lowest `trade_seq`.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Price of the trade with the highest `trade_seq`.
    pub close: f64,
    /// Lowest `trade_seq`.
    pub first_trade_seq: u64,
    /// Highest `trade_seq` (the latest trade: the log holds an instrument's trades by seq).
    pub last_trade_seq: u64,
    /// Earliest timestamp.
    pub first_trade_timestamp: i64,
    /// Latest timestamp.
    pub last_trade_timestamp: i64,
    /// EWMA values captured after the window's last trade; empty while the instrument's live
    /// EWMA still belongs to this window (they are read from the live sums at close).
    pub ewma: Vec<EwmaValue>,
    /// `trade_seq` values skipped by the trades folded in (see [`Aggregate::seq_gaps`]).
    #[serde(default)]
    pub seq_gaps: u64,
    /// Late trades counted on this window (see [`Aggregate::late_trades`]).
    #[serde(default)]
    pub late_trades: u64,
}

impl WindowAccumulator {
    /// A window `[start, end)` holding only `trade`, which skipped `seq_gap` values of
    /// `trade_seq` after the instrument's previous trade.
    pub fn open(window_start: i64, window_end: i64, trade: &Trade, seq_gap: u64) -> Self {
        let mut window = WindowAccumulator {
            window_start,
            window_end,
            trade_count: 1,
            buy_volume: CompensatedSum::default(),
            sell_volume: CompensatedSum::default(),
            notional: CompensatedSum::of(trade.notional()),
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            first_trade_seq: trade.trade_seq,
            last_trade_seq: trade.trade_seq,
            first_trade_timestamp: trade.timestamp,
            last_trade_timestamp: trade.timestamp,
            ewma: Vec::new(),
            seq_gaps: seq_gap,
            late_trades: 0,
        };
        window.add_sides(trade);
        window
    }

    /// Folds in a later trade of the same instrument (see [`open`](Self::open) for `seq_gap`).
    #[inline]
    pub fn add(&mut self, trade: &Trade, seq_gap: u64) {
        self.trade_count += 1;
        self.add_sides(trade);
        self.notional.add(trade.notional());
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.last_trade_seq = trade.trade_seq;
        self.last_trade_timestamp = self.last_trade_timestamp.max(trade.timestamp);
        self.first_trade_timestamp = self.first_trade_timestamp.min(trade.timestamp);
        self.seq_gaps = self.seq_gaps.saturating_add(seq_gap);
    }

    /// An empty window `[start, end)` that a smaller closed window is rolled up into: `sub` with
    /// the larger bounds.
    pub fn rolled_up_from(window_start: i64, window_end: i64, sub: &WindowAccumulator) -> Self {
        WindowAccumulator {
            window_start,
            window_end,
            ..sub.clone()
        }
    }

    /// Folds in a closed smaller window of the same instrument inside this one: exactly what
    /// adding its trades one by one would have given (open and close follow `trade_seq`, the
    /// EWMA values those of the sub-window holding the latest trade).
    pub fn merge(&mut self, sub: &WindowAccumulator) {
        self.trade_count += sub.trade_count;
        self.buy_volume.merge(&sub.buy_volume);
        self.sell_volume.merge(&sub.sell_volume);
        self.notional.merge(&sub.notional);
        self.high = self.high.max(sub.high);
        self.low = self.low.min(sub.low);
        if sub.first_trade_seq < self.first_trade_seq {
            self.first_trade_seq = sub.first_trade_seq;
            self.open = sub.open;
        }
        if sub.last_trade_seq > self.last_trade_seq {
            self.last_trade_seq = sub.last_trade_seq;
            self.close = sub.close;
            self.ewma.clone_from(&sub.ewma);
        }
        self.first_trade_timestamp = self.first_trade_timestamp.min(sub.first_trade_timestamp);
        self.last_trade_timestamp = self.last_trade_timestamp.max(sub.last_trade_timestamp);
        self.seq_gaps = self.seq_gaps.saturating_add(sub.seq_gaps);
        self.late_trades = self.late_trades.saturating_add(sub.late_trades);
    }

    /// The window's length, ms.
    pub fn millis(&self) -> i64 {
        self.window_end.saturating_sub(self.window_start)
    }

    /// The finished record, with the EWMA values held in [`ewma`](Self::ewma).
    pub fn into_aggregate(self, instrument_name: &str) -> Aggregate {
        let mut volume = self.buy_volume;
        volume.merge(&self.sell_volume);
        let volume = volume.value();
        Aggregate {
            instrument_name: instrument_name.to_owned(),
            window_start: self.window_start,
            window_end: self.window_end,
            window_ms: self.millis(),
            trade_count: self.trade_count,
            volume,
            buy_volume: self.buy_volume.value(),
            sell_volume: self.sell_volume.value(),
            vwap: self.notional.value() / volume,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            ewma: self.ewma,
            first_trade_seq: self.first_trade_seq,
            last_trade_seq: self.last_trade_seq,
            first_trade_timestamp: self.first_trade_timestamp,
            last_trade_timestamp: self.last_trade_timestamp,
            seq_gaps: Some(self.seq_gaps),
            late_trades: Some(self.late_trades),
        }
    }

    /// Adds the amount to its side's sum (one compensated addition; the volume is summed from
    /// the two sides at close).
    #[inline]
    fn add_sides(&mut self, trade: &Trade) {
        match trade.direction {
            Direction::Buy => self.buy_volume.add(trade.amount),
            Direction::Sell => self.sell_volume.add(trade.amount),
        }
    }
}
