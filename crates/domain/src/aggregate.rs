//! The per-instrument, per-window aggregate and the accumulator that builds it.

use serde::{Deserialize, Serialize};

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
}

/// Running totals of one open window (serialisable: it is part of an instrument's state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAccumulator {
    /// Inclusive start, ms.
    pub window_start: i64,
    /// Exclusive end, ms.
    pub window_end: i64,
    /// Trades folded in so far.
    pub trade_count: u64,
    /// Sum of amounts.
    pub volume: f64,
    /// Sum of buy amounts.
    pub buy_volume: f64,
    /// Sum of sell amounts.
    pub sell_volume: f64,
    /// `Σ price·amount`.
    pub notional: f64,
    /// First price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Latest price.
    pub close: f64,
    /// First `trade_seq`.
    pub first_trade_seq: u64,
    /// Latest `trade_seq`.
    pub last_trade_seq: u64,
    /// First timestamp.
    pub first_trade_timestamp: i64,
    /// Latest timestamp.
    pub last_trade_timestamp: i64,
    /// EWMA values captured after the window's last trade; empty while the instrument's live
    /// EWMA still belongs to this window (they are read from the live sums at close).
    pub ewma: Vec<EwmaValue>,
}

impl WindowAccumulator {
    /// A window `[start, end)` holding only `trade`.
    pub fn open(window_start: i64, window_end: i64, trade: &Trade) -> Self {
        let (buy, sell) = split_by_side(trade);
        WindowAccumulator {
            window_start,
            window_end,
            trade_count: 1,
            volume: trade.amount,
            buy_volume: buy,
            sell_volume: sell,
            notional: trade.notional(),
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            first_trade_seq: trade.trade_seq,
            last_trade_seq: trade.trade_seq,
            first_trade_timestamp: trade.timestamp,
            last_trade_timestamp: trade.timestamp,
            ewma: Vec::new(),
        }
    }

    /// Folds in a later trade of the same instrument.
    #[inline]
    pub fn add(&mut self, trade: &Trade) {
        let (buy, sell) = split_by_side(trade);
        self.trade_count += 1;
        self.volume += trade.amount;
        self.buy_volume += buy;
        self.sell_volume += sell;
        self.notional += trade.notional();
        self.high = self.high.max(trade.price);
        self.low = self.low.min(trade.price);
        self.close = trade.price;
        self.last_trade_seq = trade.trade_seq;
        self.last_trade_timestamp = self.last_trade_timestamp.max(trade.timestamp);
        self.first_trade_timestamp = self.first_trade_timestamp.min(trade.timestamp);
    }

    /// The finished record.
    pub fn into_aggregate(self, instrument_name: &str, ewma: Vec<EwmaValue>) -> Aggregate {
        Aggregate {
            instrument_name: instrument_name.to_owned(),
            window_start: self.window_start,
            window_end: self.window_end,
            trade_count: self.trade_count,
            volume: self.volume,
            buy_volume: self.buy_volume,
            sell_volume: self.sell_volume,
            vwap: self.notional / self.volume,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            ewma,
            first_trade_seq: self.first_trade_seq,
            last_trade_seq: self.last_trade_seq,
            first_trade_timestamp: self.first_trade_timestamp,
            last_trade_timestamp: self.last_trade_timestamp,
        }
    }
}

fn split_by_side(trade: &Trade) -> (f64, f64) {
    match trade.direction {
        Direction::Buy => (trade.amount, 0.0),
        Direction::Sell => (0.0, trade.amount),
    }
}
