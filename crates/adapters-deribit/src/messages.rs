//! Serde models of Deribit JSON-RPC frames (only what the trade feed reads).
//!
//! Unknown fields are ignored on purpose: Deribit adds fields (e.g. `legs` on combo trades)
//! without notice, and a new field must never stop the feed.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A public trade as in `trades.*` notifications and `get_last_trades_*` results.
#[derive(Debug, Clone, Deserialize)]
pub struct WireTrade {
    /// Instrument, e.g. `BTC-PERPETUAL`.
    pub instrument_name: String,
    /// Unique per currency; a string on the wire, tolerated as a number.
    pub trade_id: StringOrNumber,
    /// Sequence number within the instrument.
    pub trade_seq: u64,
    /// Trade time, ms.
    pub timestamp: i64,
    /// Price.
    pub price: f64,
    /// Amount.
    pub amount: f64,
    /// Taker side.
    pub direction: WireDirection,
    /// Index price.
    pub index_price: f64,
    /// Mark price.
    pub mark_price: f64,
    /// 0..=3.
    pub tick_direction: u8,
    /// Implied volatility (options).
    #[serde(default)]
    pub iv: Option<f64>,
    /// `M`, `T` or `MT` on liquidations.
    #[serde(default)]
    pub liquidation: Option<WireLiquidation>,
    /// Block trade id.
    #[serde(default)]
    pub block_trade_id: Option<StringOrNumber>,
    /// Combo instrument name.
    #[serde(default)]
    pub combo_id: Option<String>,
    /// Documented as a number, sent as a string in live captures: both accepted, not used.
    #[serde(default)]
    pub combo_trade_id: Option<StringOrNumber>,
    /// Contracts.
    #[serde(default)]
    pub contracts: Option<f64>,
}

/// Taker side on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDirection {
    /// `"buy"`.
    Buy,
    /// `"sell"`.
    Sell,
}

/// Liquidation code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum WireLiquidation {
    /// `"M"`.
    M,
    /// `"T"`.
    T,
    /// `"MT"`.
    MT,
}

/// A field Deribit sends as a string but documents (or sometimes sends) as a number.
///
/// Deserialized by hand: serde's `untagged` would first buffer the whole value, so a hostile
/// `[1,1,1,…]` in its place cost 16 bytes of memory per byte of input before being refused.
#[derive(Debug, Clone, PartialEq)]
pub enum StringOrNumber {
    /// The usual form.
    String(String),
    /// An integer.
    Integer(i64),
    /// Anything else numeric.
    Float(f64),
}

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOrNumberVisitor)
    }
}

/// Takes a string or a number and refuses anything else without reading it into memory.
struct StringOrNumberVisitor;

impl serde::de::Visitor<'_> for StringOrNumberVisitor {
    type Value = StringOrNumber;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<StringOrNumber, E> {
        Ok(StringOrNumber::String(value.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<StringOrNumber, E> {
        Ok(StringOrNumber::String(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<StringOrNumber, E> {
        Ok(StringOrNumber::Integer(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<StringOrNumber, E> {
        #[allow(clippy::cast_precision_loss)] // as the untagged form did: beyond i64, a float
        Ok(i64::try_from(value)
            .map_or(StringOrNumber::Float(value as f64), StringOrNumber::Integer))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<StringOrNumber, E> {
        Ok(StringOrNumber::Float(value))
    }
}

impl StringOrNumber {
    /// The value as text, numbers in their shortest form.
    pub fn into_string(self) -> String {
        match self {
            StringOrNumber::String(s) => s,
            StringOrNumber::Integer(i) => i.to_string(),
            StringOrNumber::Float(f) => f.to_string(),
        }
    }
}

/// A JSON-RPC message that may be a subscription notification. Everything is optional so that
/// one pass tells a notification from a bare trade object.
#[derive(Debug, Deserialize)]
pub struct MaybeNotification<'a> {
    /// `"subscription"` for notifications, `"heartbeat"` for heartbeats.
    #[serde(default, borrow)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// The payload, parsed once `method` says what it is.
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
}

/// `params` of a subscription notification; `data` is kept raw so each trade parses on its own.
#[derive(Debug, Deserialize)]
pub struct NotificationParams<'a> {
    /// E.g. `trades.future.BTC.100ms`; borrowed from the frame (a hostile one may be huge).
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// For trade channels, an array of trades.
    #[serde(borrow)]
    pub data: &'a RawValue,
}
