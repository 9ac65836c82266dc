//! A validated Deribit trade.
//!
//! [`TradeFields`] is the plain, unchecked record (what a parser fills in); [`Trade`] is the same
//! record after [`Trade::new`] checked it. Code past the adapters only ever sees `Trade`, so the
//! aggregation math can rely on finite, positive prices and amounts whose products and sums stay
//! finite, identifiers that fit an Avro `long`, and timestamps a window can hold.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Side of the taker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The taker bought.
    Buy,
    /// The taker sold.
    Sell,
}

impl Direction {
    /// The lower-case wire name (`"buy"` / `"sell"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Buy => "buy",
            Direction::Sell => "sell",
        }
    }

    /// The side a wire name stands for (`"buy"` / `"sell"`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Direction::Buy, Direction::Sell]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// Who was liquidated in a liquidation trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Liquidation {
    /// The maker side (`"M"`).
    #[serde(rename = "M")]
    Maker,
    /// The taker side (`"T"`).
    #[serde(rename = "T")]
    Taker,
    /// Both sides (`"MT"`).
    #[serde(rename = "MT")]
    Both,
}

impl Liquidation {
    /// The wire code Deribit uses (`"M"`, `"T"`, `"MT"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Liquidation::Maker => "M",
            Liquidation::Taker => "T",
            Liquidation::Both => "MT",
        }
    }

    /// The side a wire code stands for (`"M"`, `"T"`, `"MT"`).
    pub fn from_code(code: &str) -> Option<Self> {
        [Liquidation::Maker, Liquidation::Taker, Liquidation::Both]
            .into_iter()
            .find(|l| l.as_str() == code)
    }
}

/// Largest `trade_seq` accepted: the Avro `long` range the raw topic stores it in.
pub const MAX_TRADE_SEQ: u64 = i64::MAX as u64;
/// Timestamps must be before this (2100-01-01T00:00:00Z, ms): a trade dated further out would
/// move a watermark past every window to come.
pub const MAX_TIMESTAMP_MS: i64 = 4_102_444_800_000;
/// Prices and amounts must not exceed this, so `price · amount` and its sums over any window
/// stay finite (1e12 · 1e12 = 1e24, far below `f64::MAX`).
pub const MAX_MAGNITUDE: f64 = 1e12;

/// The fields of a trade as Deribit sends them, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeFields {
    /// Instrument, e.g. `BTC-PERPETUAL`.
    pub instrument_name: String,
    /// Exchange trade id, unique per currency; kept verbatim.
    pub trade_id: String,
    /// Sequence number of the trade within its instrument.
    pub trade_seq: u64,
    /// Trade time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Price in the instrument's quote terms.
    pub price: f64,
    /// Traded amount (USD for inverse futures, base coin for options and linear futures).
    pub amount: f64,
    /// Taker side.
    pub direction: Direction,
    /// Index price at the time of the trade.
    pub index_price: f64,
    /// Mark price at the time of the trade.
    pub mark_price: f64,
    /// 0 plus tick, 1 zero-plus tick, 2 minus tick, 3 zero-minus tick.
    pub tick_direction: u8,
    /// Implied volatility (options only).
    pub iv: Option<f64>,
    /// Set on liquidation trades.
    pub liquidation: Option<Liquidation>,
    /// Set when the trade is part of a block trade.
    pub block_trade_id: Option<String>,
    /// Combo instrument name for combo and combo-leg trades.
    pub combo_id: Option<String>,
    /// Number of contracts (may be absent in historical trades).
    pub contracts: Option<f64>,
}

/// A trade that passed validation. Read its fields through `Deref` to [`TradeFields`].
#[derive(Clone, PartialEq)]
pub struct Trade(TradeFields);

impl Trade {
    /// Validates `fields` and wraps them.
    ///
    /// # Errors
    /// [`Error::InvalidTrade`] naming the first field that breaks a rule: empty instrument or
    /// trade id, a NUL character in a text field, `trade_seq` above [`MAX_TRADE_SEQ`], timestamp ≤ 0 or ≥ [`MAX_TIMESTAMP_MS`],
    /// price or amount not in (0, [`MAX_MAGNITUDE`]], index or mark price not finite, tick
    /// direction outside 0..=3, iv or contracts not finite.
    pub fn new(fields: TradeFields) -> Result<Self> {
        let fail = |field: &'static str, rule: String| Error::InvalidTrade {
            instrument: fields.instrument_name.clone(),
            trade_seq: fields.trade_seq,
            field,
            rule,
        };
        if fields.instrument_name.is_empty() {
            return Err(fail("instrument_name", "must not be empty".into()));
        }
        if fields.trade_id.is_empty() {
            return Err(fail("trade_id", "must not be empty".into()));
        }
        // No text store holds a NUL character (PostgreSQL refuses it), so no trade carries one.
        let texts = [
            ("instrument_name", Some(&fields.instrument_name)),
            ("trade_id", Some(&fields.trade_id)),
            ("block_trade_id", fields.block_trade_id.as_ref()),
            ("combo_id", fields.combo_id.as_ref()),
        ];
        if let Some((field, _)) = texts
            .iter()
            .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
        {
            return Err(fail(field, "must not contain a NUL character".into()));
        }
        if fields.trade_seq > MAX_TRADE_SEQ {
            return Err(fail(
                "trade_seq",
                format!(
                    "must be ≤ {MAX_TRADE_SEQ} (an Avro long), got {}",
                    fields.trade_seq
                ),
            ));
        }
        if fields.timestamp <= 0 || fields.timestamp >= MAX_TIMESTAMP_MS {
            return Err(fail(
                "timestamp",
                format!(
                    "must be > 0 and < {MAX_TIMESTAMP_MS} ms (year 2100), got {}",
                    fields.timestamp
                ),
            ));
        }
        bounded(fields.price).map_err(|rule| fail("price", rule))?;
        bounded(fields.amount).map_err(|rule| fail("amount", rule))?;
        finite(fields.index_price).map_err(|rule| fail("index_price", rule))?;
        finite(fields.mark_price).map_err(|rule| fail("mark_price", rule))?;
        if fields.tick_direction > 3 {
            return Err(fail(
                "tick_direction",
                format!("must be in 0..=3, got {}", fields.tick_direction),
            ));
        }
        if let Some(iv) = fields.iv {
            finite(iv).map_err(|rule| fail("iv", rule))?;
        }
        if let Some(contracts) = fields.contracts {
            positive_finite(contracts).map_err(|rule| fail("contracts", rule))?;
        }
        Ok(Trade(fields))
    }

    /// Gives the fields back, e.g. to re-encode them.
    pub fn into_fields(self) -> TradeFields {
        self.0
    }

    /// The trade's notional, `price · amount`.
    pub fn notional(&self) -> f64 {
        self.0.price * self.0.amount
    }
}

impl Deref for Trade {
    type Target = TradeFields;

    fn deref(&self) -> &TradeFields {
        &self.0
    }
}

impl fmt::Debug for Trade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn finite(value: f64) -> Result<(), String> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(format!("must be finite, got {value}"))
    }
}

fn bounded(value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 && value <= MAX_MAGNITUDE {
        Ok(())
    } else {
        Err(format!(
            "must be finite, > 0 and ≤ {MAX_MAGNITUDE:e}, got {value}"
        ))
    }
}

fn positive_finite(value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("must be finite and > 0, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fields() -> TradeFields {
        TradeFields {
            instrument_name: "BTC-PERPETUAL".into(),
            trade_id: "48079269".into(),
            trade_seq: 30289442,
            timestamp: 1590484512188,
            price: 8950.0,
            amount: 10.0,
            direction: Direction::Sell,
            index_price: 8955.88,
            mark_price: 8948.9,
            tick_direction: 2,
            iv: None,
            liquidation: None,
            block_trade_id: None,
            combo_id: None,
            contracts: None,
        }
    }

    fn rejected_field(mutate: impl FnOnce(&mut TradeFields)) -> (&'static str, String) {
        let mut f = fields();
        mutate(&mut f);
        match Trade::new(f) {
            Err(Error::InvalidTrade { field, rule, .. }) => (field, rule),
            other => panic!("expected InvalidTrade, got {other:?}"),
        }
    }

    #[test]
    fn accepts_documented_future_trade() {
        let trade = Trade::new(fields()).unwrap();
        assert_eq!(trade.instrument_name, "BTC-PERPETUAL");
        assert_eq!(trade.notional(), 89500.0);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn FnOnce(&mut TradeFields)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("instrument_name", Box::new(|f| f.instrument_name.clear())),
            ("trade_id", Box::new(|f| f.trade_id.clear())),
            ("timestamp", Box::new(|f| f.timestamp = 0)),
            ("timestamp", Box::new(|f| f.timestamp = -5)),
            ("timestamp", Box::new(|f| f.timestamp = i64::MAX)),
            ("timestamp", Box::new(|f| f.timestamp = MAX_TIMESTAMP_MS)),
            (
                "trade_seq",
                Box::new(|f| f.trade_seq = 9_223_372_036_854_775_808),
            ),
            ("trade_seq", Box::new(|f| f.trade_seq = u64::MAX)),
            ("price", Box::new(|f| f.price = 1.7e308)),
            ("price", Box::new(|f| f.price = 1.000_001e12)),
            ("amount", Box::new(|f| f.amount = 1e300)),
            ("price", Box::new(|f| f.price = f64::NAN)),
            ("price", Box::new(|f| f.price = -1.0)),
            ("price", Box::new(|f| f.price = 0.0)),
            ("price", Box::new(|f| f.price = f64::INFINITY)),
            ("amount", Box::new(|f| f.amount = 0.0)),
            ("amount", Box::new(|f| f.amount = f64::NAN)),
            ("index_price", Box::new(|f| f.index_price = f64::NAN)),
            ("mark_price", Box::new(|f| f.mark_price = f64::NEG_INFINITY)),
            ("tick_direction", Box::new(|f| f.tick_direction = 4)),
            ("iv", Box::new(|f| f.iv = Some(f64::NAN))),
            ("contracts", Box::new(|f| f.contracts = Some(-3.0))),
            (
                "instrument_name",
                Box::new(|f| f.instrument_name.push('\0')),
            ),
            ("trade_id", Box::new(|f| f.trade_id = "4\08".into())),
            (
                "block_trade_id",
                Box::new(|f| f.block_trade_id = Some("\0".into())),
            ),
            ("combo_id", Box::new(|f| f.combo_id = Some("a\0".into()))),
        ];
        for (expected, mutate) in cases {
            let (field, rule) = rejected_field(mutate);
            assert_eq!(field, expected, "rule was: {rule}");
        }
    }

    #[test]
    fn error_message_carries_value_and_rule() {
        let mut f = fields();
        f.price = f64::NAN;
        let message = Trade::new(f).unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid trade \"BTC-PERPETUAL\" seq 30289442: field `price` must be finite, > 0 and ≤ 1e12, got NaN"
        );
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let mut f = fields();
        f.trade_seq = MAX_TRADE_SEQ;
        f.timestamp = MAX_TIMESTAMP_MS - 1;
        f.price = MAX_MAGNITUDE;
        f.amount = MAX_MAGNITUDE;
        let trade = Trade::new(f).unwrap();
        assert!(trade.notional().is_finite());
    }

    #[test]
    fn optional_fields_are_accepted_when_valid() {
        let mut f = fields();
        f.iv = Some(47.58);
        f.liquidation = Some(Liquidation::Both);
        f.block_trade_id = Some("154".into());
        f.combo_id = Some("BTC-FS-29APR22_PERP".into());
        f.contracts = Some(3.0);
        let trade = Trade::new(f.clone()).unwrap();
        assert_eq!(trade.into_fields(), f);
    }
}
