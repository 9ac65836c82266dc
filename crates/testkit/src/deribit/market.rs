//! The fake's market: the instruments it trades, the trades it makes up, and which
//! subscription channel carries which of them.
//!
//! Prices, sizes and sides come from a seeded xorshift, so they repeat from run to run; trades
//! are shaped like Deribit's documented `trades.*` notification data (options in coin
//! contracts, with `iv`).

use serde_json::{Value, json};

use super::State;
use super::connection::Outbound;
use super::frames::{notification, server_us};

/// An instrument the fake trades, with the kind and currency its kind/currency channel uses.
#[derive(Debug, Clone)]
pub struct FakeInstrument {
    /// Instrument name.
    pub name: String,
    /// `future`, `option`, …
    pub kind: String,
    /// `BTC`, `ETH`, …
    pub currency: String,
    /// Starting price.
    pub price: f64,
}

impl FakeInstrument {
    /// An instrument.
    pub fn new(name: &str, kind: &str, currency: &str, price: f64) -> Self {
        FakeInstrument {
            name: name.into(),
            kind: kind.into(),
            currency: currency.into(),
            price,
        }
    }

    /// BTC-PERPETUAL, a BTC option and ETH-PERPETUAL.
    pub fn default_market() -> Vec<Self> {
        vec![
            FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 67_000.0),
            FakeInstrument::new("BTC-27DEC24-70000-C", "option", "BTC", 0.045),
            FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_500.0),
        ]
    }
}

/// Generates `n` trades of `instrument` (none if it is not listed): recorded, and pushed as one
/// notification per matching subscription to every connected client.
pub(super) fn generate(state: &mut State, instrument: &str, n: usize) -> Vec<Value> {
    let Some(spec) = state
        .instruments
        .iter()
        .find(|i| i.name == instrument)
        .cloned()
    else {
        return Vec::new();
    };
    let now = server_us(state.clock_offset_ms) / 1000;
    let mut trades = Vec::with_capacity(n);
    for _ in 0..n {
        state.rng ^= state.rng << 13;
        state.rng ^= state.rng >> 7;
        state.rng ^= state.rng << 17;
        let r = state.rng;
        let record = state.record.entry(spec.name.clone()).or_default();
        let seq = record.len() as u64 + 1;
        let last_ts = state.last_ts.entry(spec.name.clone()).or_insert(now);
        *last_ts = (*last_ts).max(now);
        #[allow(clippy::cast_precision_loss)]
        let price = spec.price * (1.0 + ((r % 2001) as f64 - 1000.0) * 1e-6);
        let mut trade = json!({
            "trade_seq": seq,
            "trade_id": format!("{}", 300_000_000 + r % 100_000_000),
            "timestamp": *last_ts,
            "tick_direction": r % 4,
            "price": price,
            "mark_price": price,
            "instrument_name": spec.name,
            "index_price": spec.price,
            "direction": if r & 1 == 0 { "buy" } else { "sell" },
            "amount": (r % 50 + 1) * 10,
        });
        if spec.kind == "option" {
            // Options trade in coin contracts of 0.1 (futures in USD, multiples of 10).
            #[allow(clippy::cast_precision_loss)]
            let contracts = (r % 50 + 1) as f64 / 10.0;
            trade["amount"] = json!(contracts);
            trade["iv"] = json!(55.5);
            trade["contracts"] = json!(contracts);
        }
        record.push(trade.clone());
        trades.push(trade);
    }
    for connection in state.connections.values() {
        for channel in &connection.subscriptions {
            if matches(channel, &spec) {
                let _ = connection
                    .tx
                    .send(Outbound::Text(notification(channel, &trades)));
            }
        }
    }
    trades
}

/// Whether `channel` (`trades.{instrument}.{interval}` or `trades.{kind}.{currency}.{interval}`)
/// carries trades of `spec`.
fn matches(channel: &str, spec: &FakeInstrument) -> bool {
    let parts: Vec<&str> = channel.split('.').collect();
    match parts.as_slice() {
        ["trades", instrument, _] => *instrument == spec.name,
        ["trades", kind, currency, _] => {
            *kind == spec.kind && (*currency == spec.currency || *currency == "any")
        }
        _ => false,
    }
}
