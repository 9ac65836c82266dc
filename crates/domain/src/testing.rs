//! Trade fixtures for tests and benchmarks (cargo feature `testing`).
//!
//! One plain, valid trade that tests vary with struct update syntax, instead of every test file
//! spelling out all fifteen fields.

use crate::trade::{Direction, Trade, TradeFields};

/// Fields of a valid trade: a buy of `amount` at `price`, trade id = `trade_seq`, index and mark
/// price = `price`, tick direction 0, no optional fields.
pub fn fields(
    instrument: &str,
    trade_seq: u64,
    timestamp: i64,
    price: f64,
    amount: f64,
) -> TradeFields {
    TradeFields {
        instrument_name: instrument.into(),
        trade_id: trade_seq.to_string(),
        trade_seq,
        timestamp,
        price,
        amount,
        direction: Direction::Buy,
        index_price: price,
        mark_price: price,
        tick_direction: 0,
        iv: None,
        liquidation: None,
        block_trade_id: None,
        combo_id: None,
        contracts: None,
    }
}

/// [`fields`], validated.
///
/// # Panics
/// If the arguments break a rule of [`Trade::new`]: a bug in the fixture, not in data.
pub fn trade(instrument: &str, trade_seq: u64, timestamp: i64, price: f64, amount: f64) -> Trade {
    validated(fields(instrument, trade_seq, timestamp, price, amount))
}

/// `fields` validated.
///
/// # Panics
/// If `fields` break a rule of [`Trade::new`]: a bug in the fixture, not in data.
#[allow(clippy::panic, clippy::needless_pass_by_value)] // a fixture: loud and simple
pub fn validated(fields: TradeFields) -> Trade {
    Trade::new(fields).unwrap_or_else(|e| panic!("invalid test trade: {e}"))
}
