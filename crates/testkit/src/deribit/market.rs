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
    /// When it was listed, ms (`creation_timestamp` in `public/get_instruments`).
    pub creation_timestamp: i64,
    /// When it expires, ms; `None` for a perpetual (Deribit lists year 3000 for those).
    pub expiration_timestamp: Option<i64>,
}

impl FakeInstrument {
    /// An instrument.
    pub fn new(name: &str, kind: &str, currency: &str, price: f64) -> Self {
        FakeInstrument {
            name: name.into(),
            kind: kind.into(),
            currency: currency.into(),
            price,
            creation_timestamp: LISTED_MS,
            expiration_timestamp: None,
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

/// When the fake's instruments were listed unless told otherwise: 2020-01-01.
const LISTED_MS: i64 = 1_577_836_800_000;

/// Deribit's `expiration_timestamp` of a perpetual: 3000-01-01.
const PERPETUAL_EXPIRY_MS: i64 = 32_503_708_800_000;

/// `public/get_instruments`: the instruments of `currency` (or `any`) and `kind` (all if
/// absent), active ones, or with `expired: true` those expired by now, as Deribit lists them.
pub(super) fn instruments(s: &State, params: &Value) -> Value {
    let currency = params
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("any");
    let kind = params.get("kind").and_then(Value::as_str);
    let expired = params
        .get("expired")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = server_us(s.clock_offset_ms) / 1000;
    let listed: Vec<Value> = s
        .instruments
        .iter()
        .filter(|i| {
            (currency == "any" || i.currency == currency)
                && kind.is_none_or(|k| k == i.kind)
                && i.expiration_timestamp.is_some_and(|e| e <= now) == expired
        })
        .map(|i| {
            let expiry = i.expiration_timestamp.unwrap_or(PERPETUAL_EXPIRY_MS);
            let option = i.kind == "option";
            json!({
                "tick_size": if option { 0.0005 } else { 0.5 },
                "taker_commission": 0.0005,
                "settlement_period": if i.expiration_timestamp.is_some() { "month" } else { "perpetual" },
                "settlement_currency": i.currency,
                "rfq": false,
                "quote_currency": if option { i.currency.as_str() } else { "USD" },
                "price_index": format!("{}_usd", i.currency.to_lowercase()),
                "min_trade_amount": if option { 0.1 } else { 10.0 },
                "maker_commission": 0.0,
                "kind": i.kind,
                "is_active": !expired,
                "instrument_name": i.name,
                "instrument_id": 100_000 + (i.name.len() as u64),
                "expiration_timestamp": expiry,
                "creation_timestamp": i.creation_timestamp,
                "counter_currency": "USD",
                "contract_size": if option { 1.0 } else { 10.0 },
                "block_trade_commission": 0.00025,
                "base_currency": i.currency,
            })
        })
        .collect();
    json!(listed)
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
