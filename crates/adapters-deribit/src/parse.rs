//! Pure mapping of Deribit frames to domain trades.
//!
//! Each trade of a notification is parsed and validated on its own: one bad element is reported
//! as a [`TradeRejection`] (with its raw JSON, for the log) and never costs the rest of its batch.
//! Arrays of trades (a notification's `data`, a history page's `trades`) are read one element
//! at a time: memory follows the trades that parse, never the element count the peer sends.

use domain::{Direction, Liquidation, Trade, TradeFields};
use serde::Deserializer;
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::messages::{
    MaybeNotification, NotificationParams, WireDirection, WireLiquidation, WireTrade,
};

/// A trade element that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeRejection {
    /// Position in the notification's `data` or the history page's `trades` (0 for a bare trade).
    pub index: usize,
    /// The element's JSON as received, its first [`MAX_KEPT_BYTES`] bytes (it is for the log).
    pub raw: String,
    /// Why: a missing or mistyped field, or the domain rule it breaks (its first
    /// [`MAX_KEPT_BYTES`] bytes: serde quotes a mistyped string whole).
    pub reason: String,
}

/// The usable trades of one frame, and the rejected ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedTrades {
    /// Channel of the notification; `None` for a bare trade object.
    pub channel: Option<String>,
    /// Valid trades in frame order.
    pub trades: Vec<Trade>,
    /// Elements that failed, in frame order: the first [`MAX_REJECTIONS_KEPT`] in detail.
    pub rejected: Vec<TradeRejection>,
    /// Elements that failed beyond those kept in `rejected` (counted, not copied).
    pub rejected_more: u64,
}

/// Rejected elements of one frame kept with their text and reason; the rest are counted. A
/// frame of a million bad elements must not cost a million copies.
pub const MAX_REJECTIONS_KEPT: usize = 16;

/// Bytes of a rejected element's text and of its reason kept: one huge bad element must not
/// be copied whole into the log record.
pub const MAX_KEPT_BYTES: usize = 1_024;

/// The first `max` bytes of `text` (cut at a character boundary), marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Longest channel name a notification may carry (Deribit's are a few dozen bytes).
pub const MAX_CHANNEL_BYTES: usize = 256;

/// A trade stamped further ahead of this host's clock than this is refused (counted, WARN): a
/// broken or hostile timestamp would open windows nothing closes downstream, and Kafka refuses
/// records stamped far ahead (`log.message.timestamp.after.max.ms`, an hour by default).
pub const MAX_TRADE_AHEAD_MS: i64 = 120_000;

/// Removes from `trades` those stamped more than [`MAX_TRADE_AHEAD_MS`] after `now_ms`, and
/// returns them.
pub fn take_future_stamped(trades: &mut Vec<Trade>, now_ms: i64) -> Vec<Trade> {
    let limit = now_ms.saturating_add(MAX_TRADE_AHEAD_MS);
    if trades.iter().all(|t| t.timestamp <= limit) {
        return Vec::new();
    }
    let (future, believed): (Vec<Trade>, Vec<Trade>) = std::mem::take(trades)
        .into_iter()
        .partition(|t| t.timestamp > limit);
    *trades = believed;
    future
}

/// Maps a wire trade to a validated domain trade.
///
/// # Errors
/// The domain validation error (field and rule).
pub fn trade_from_wire(wire: WireTrade) -> domain::Result<Trade> {
    Trade::new(TradeFields {
        instrument_name: wire.instrument_name,
        trade_id: wire.trade_id.into_string(),
        trade_seq: wire.trade_seq,
        timestamp: wire.timestamp,
        price: wire.price,
        amount: wire.amount,
        direction: match wire.direction {
            WireDirection::Buy => Direction::Buy,
            WireDirection::Sell => Direction::Sell,
        },
        index_price: wire.index_price,
        mark_price: wire.mark_price,
        tick_direction: wire.tick_direction,
        iv: wire.iv,
        liquidation: wire.liquidation.map(|l| match l {
            WireLiquidation::M => Liquidation::Maker,
            WireLiquidation::T => Liquidation::Taker,
            WireLiquidation::MT => Liquidation::Both,
        }),
        block_trade_id: wire.block_trade_id.map(|b| b.into_string()),
        combo_id: wire.combo_id,
        contracts: wire.contracts,
    })
}

/// Parses and validates one trade object.
///
/// # Errors
/// A one-line reason: the JSON error (missing field, wrong type) or the broken domain rule.
pub fn parse_trade(json: &str) -> Result<Trade, String> {
    let wire: WireTrade = serde_json::from_str(json).map_err(|e| e.to_string())?;
    trade_from_wire(wire).map_err(|e| e.to_string())
}

/// Parses a `trades.*` subscription notification.
///
/// # Errors
/// [`Error::Malformed`] if it is not a JSON-RPC notification with an array `data`,
/// [`Error::NotTrades`] for another channel, [`Error::Unexpected`] for another method.
pub fn parse_notification(text: &str) -> Result<ParsedTrades> {
    let message: MaybeNotification<'_> =
        serde_json::from_str(text).map_err(|e| Error::Malformed(e.to_string()))?;
    match message.method.as_deref() {
        Some("subscription") => {}
        Some(other) => {
            return Err(Error::Unexpected {
                method: other.to_owned(),
            });
        }
        None => return Err(Error::Malformed("no `method`: not a notification".into())),
    }
    parse_notification_params(message.params)
}

/// Parses the `params` of a subscription notification: the live path, where
/// [`crate::rpc::classify`] has read the frame around them once already.
///
/// # Errors
/// As [`parse_notification`], but for the `params` object alone (`None`: the frame had none).
pub fn parse_notification_params(params: Option<&RawValue>) -> Result<ParsedTrades> {
    let params = params.ok_or_else(|| Error::Malformed("notification without `params`".into()))?;
    let params: NotificationParams<'_> = serde_json::from_str(params.get())
        .map_err(|e| Error::Malformed(format!("notification `params`: {e}")))?;
    if params.channel.len() > MAX_CHANNEL_BYTES {
        // Deribit's channel names are short; a huge one is only copied in part, to the log.
        return Err(Error::Malformed(format!(
            "channel name of {} bytes, longer than {MAX_CHANNEL_BYTES}: {}",
            params.channel.len(),
            clip(&params.channel, 64)
        )));
    }
    if !params.channel.starts_with("trades.") {
        return Err(Error::NotTrades {
            channel: params.channel.into_owned(),
        });
    }
    let mut parsed = parse_trade_array(params.data.get())
        .map_err(|e| Error::Malformed(format!("`data` is not an array: {e}")))?;
    parsed.channel = Some(params.channel.into_owned());
    Ok(parsed)
}

/// Parses a JSON array of trades element by element, never holding the list of elements.
///
/// # Errors
/// The JSON error if `json` is not an array.
pub fn parse_trade_array(json: &str) -> serde_json::Result<ParsedTrades> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let parsed = deserializer.deserialize_seq(TradeArray)?;
    deserializer.end()?;
    Ok(parsed)
}

/// `deserialize_with` for a field holding an array of trades (a history page's `trades`).
///
/// # Errors
/// The deserializer's error if the field is not an array.
pub fn deserialize_trade_array<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ParsedTrades, D::Error> {
    deserializer.deserialize_seq(TradeArray)
}

/// Visits an array of trades, parsing each element as it is read.
struct TradeArray;

impl<'de> Visitor<'de> for TradeArray {
    type Value = ParsedTrades;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of trades")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<ParsedTrades, A::Error> {
        let mut parsed = ParsedTrades::default();
        let mut index = 0;
        while let Some(element) = elements.next_element::<&'de RawValue>()? {
            push(&mut parsed, index, element.get());
            index += 1;
        }
        Ok(parsed)
    }
}

/// Parses one line of a capture: either a whole notification or a bare trade object.
///
/// # Errors
/// As [`parse_notification`]; a bare object that is not a valid trade is not an error but a
/// rejection in the result.
pub fn parse_json_line(text: &str) -> Result<ParsedTrades> {
    let message: MaybeNotification<'_> =
        serde_json::from_str(text).map_err(|e| Error::Malformed(e.to_string()))?;
    match message.method.as_deref() {
        Some("subscription") => return parse_notification_params(message.params),
        Some(other) => {
            return Err(Error::Unexpected {
                method: other.to_owned(),
            });
        }
        None if message.params.is_some() => {
            return Err(Error::Malformed("no `method`: not a notification".into()));
        }
        None => {}
    }
    let mut parsed = ParsedTrades::default();
    push(&mut parsed, 0, text);
    Ok(parsed)
}

fn push(parsed: &mut ParsedTrades, index: usize, raw: &str) {
    match parse_trade(raw) {
        Ok(trade) => parsed.trades.push(trade),
        Err(_) if parsed.rejected.len() >= MAX_REJECTIONS_KEPT => parsed.rejected_more += 1,
        Err(reason) => parsed.rejected.push(TradeRejection {
            index,
            raw: clip(raw, MAX_KEPT_BYTES),
            reason: clip(&reason, MAX_KEPT_BYTES),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUTURE_NOTIFICATION: &str = include_str!("../test_data/ws_trades_future.json");
    const OPTION_TRADE: &str = include_str!("../test_data/trade_option.json");
    const OPTION_WITH_CONTRACTS: &str = include_str!("../test_data/trade_option_contracts.json");
    const COMBO_NOTIFICATION: &str = include_str!("../test_data/ws_trades_combo.json");

    #[test]
    fn values_that_would_stop_or_poison_the_pipeline_are_rejected_by_name() {
        for (from, to, field) in [
            (
                "\"trade_seq\":2",
                "\"trade_seq\":9223372036854775808",
                "trade_seq",
            ),
            (
                "\"timestamp\":1590484589306",
                "\"timestamp\":9223372036854775807",
                "timestamp",
            ),
            ("\"price\":0.0075", "\"price\":1.7e308", "price"),
            ("\"amount\":3", "\"amount\":1e300", "amount"),
        ] {
            let hostile = OPTION_TRADE.replace(from, to);
            assert_ne!(hostile, OPTION_TRADE);
            let reason = parse_trade(&hostile).unwrap_err();
            assert!(reason.contains(&format!("`{field}`")), "{to}: {reason}");
        }
    }

    #[test]
    fn a_frame_of_a_million_bad_elements_reserves_and_copies_next_to_nothing() {
        let data = vec!["1"; 1_000_000].join(",");
        let frame = format!(
            r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"trades.BTC-PERPETUAL.100ms","data":[{data}]}}}}"#
        );
        let parsed = parse_notification(&frame).unwrap();
        assert!(parsed.trades.is_empty());
        assert_eq!(
            parsed.trades.capacity(),
            0,
            "reserved for trades that did not parse"
        );
        assert_eq!(parsed.rejected.len(), MAX_REJECTIONS_KEPT);
        assert_eq!(parsed.rejected_more, 1_000_000 - MAX_REJECTIONS_KEPT as u64);
    }

    #[test]
    fn a_huge_bad_element_is_kept_in_the_rejection_only_in_part() {
        let name = "X".repeat(1 << 20);
        // serde quotes a mistyped string whole in its message.
        let element = format!(r#"{{"trade_seq":"{name}","pad":"{name}"}}"#);
        let mut parsed = ParsedTrades::default();
        push(&mut parsed, 0, &element);
        let rejected = &parsed.rejected[0];
        assert!(
            rejected.raw.len() < MAX_KEPT_BYTES + 32,
            "{}",
            rejected.raw.len()
        );
        assert!(
            rejected
                .raw
                .ends_with(&format!("… ({} bytes)", element.len()))
        );
        assert!(
            rejected.reason.starts_with("invalid type: string \"XXX"),
            "{}",
            &rejected.reason[..40]
        );
        assert!(
            rejected.reason.len() < MAX_KEPT_BYTES + 32,
            "{}",
            rejected.reason.len()
        );
        assert_eq!(
            clip("añb", 2),
            "a… (4 bytes)",
            "cut at a character boundary"
        );
    }

    #[test]
    fn takes_out_trades_stamped_more_than_two_minutes_ahead() {
        let now = 1_733_000_000_000;
        let at = |ts: i64| parse_trade(&OPTION_TRADE.replace("1590484589306", &ts.to_string()));
        let mut trades = vec![
            at(now - 5_000).unwrap(),
            at(now + MAX_TRADE_AHEAD_MS + 1).unwrap(),
            at(now + MAX_TRADE_AHEAD_MS).unwrap(),
        ];
        let future = take_future_stamped(&mut trades, now);
        assert_eq!(
            future.iter().map(|t| t.timestamp).collect::<Vec<_>>(),
            [now + MAX_TRADE_AHEAD_MS + 1]
        );
        assert_eq!(
            trades.iter().map(|t| t.timestamp).collect::<Vec<_>>(),
            [now - 5_000, now + MAX_TRADE_AHEAD_MS],
            "the believed ones stay, in order"
        );
    }

    #[test]
    fn parses_documented_future_notification() {
        let parsed = parse_notification(FUTURE_NOTIFICATION).unwrap();
        assert_eq!(
            parsed.channel.as_deref(),
            Some("trades.BTC-PERPETUAL.100ms")
        );
        assert!(parsed.rejected.is_empty());
        let t = &parsed.trades[0];
        assert_eq!(
            (
                t.instrument_name.as_str(),
                t.trade_id.as_str(),
                t.trade_seq,
                t.timestamp
            ),
            ("BTC-PERPETUAL", "48079269", 30289442, 1590484512188)
        );
        assert_eq!(
            (t.price, t.amount, t.direction),
            (8950.0, 10.0, Direction::Sell)
        );
        assert_eq!(
            (t.index_price, t.mark_price, t.tick_direction),
            (8955.88, 8948.9, 2)
        );
        assert_eq!((t.iv, t.contracts, t.liquidation), (None, None, None));
    }

    #[test]
    fn parses_option_trades_with_optional_fields() {
        let t = parse_trade(OPTION_TRADE).unwrap();
        assert_eq!(
            (t.instrument_name.as_str(), t.iv),
            ("BTC-27MAY20-9000-C", Some(47.58))
        );
        let t = parse_trade(OPTION_WITH_CONTRACTS).unwrap();
        assert_eq!((t.contracts, t.direction), (Some(3.0), Direction::Buy));
    }

    #[test]
    fn combo_trades_with_legs_and_string_combo_trade_id_parse() {
        let parsed = parse_notification(COMBO_NOTIFICATION).unwrap();
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        assert_eq!(parsed.trades.len(), 2);
        assert_eq!(
            parsed.trades[0].combo_id.as_deref(),
            Some("BTC-CS-28JUN24-60000_65000")
        );
        assert_eq!(parsed.trades[1].liquidation, Some(Liquidation::Both));
        assert_eq!(parsed.trades[1].block_trade_id.as_deref(), Some("154"));
    }

    #[test]
    fn one_bad_element_does_not_cost_the_batch() {
        let text = r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.future.BTC.100ms","data":[
            {"trade_seq":1,"trade_id":"1","timestamp":1590484512188,"tick_direction":0,"price":8950,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"buy","amount":10},
            {"trade_seq":2,"trade_id":"2","timestamp":1590484512188,"tick_direction":0,"price":-3,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"buy","amount":10},
            {"trade_seq":3,"trade_id":"3","timestamp":1590484512188,"tick_direction":0,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"buy","amount":10},
            {"trade_seq":4,"trade_id":"4","timestamp":1590484512188,"tick_direction":0,"price":8951,"mark_price":1,"instrument_name":"BTC-PERPETUAL","index_price":1,"direction":"buy","amount":10}
        ]}}"#;
        let parsed = parse_notification(text).unwrap();
        let seqs: Vec<u64> = parsed.trades.iter().map(|t| t.trade_seq).collect();
        assert_eq!(seqs, vec![1, 4]);
        assert_eq!(parsed.rejected.len(), 2);
        assert_eq!(parsed.rejected[0].index, 1);
        assert!(
            parsed.rejected[0]
                .reason
                .contains("`price` must be finite, > 0 and ≤ 1e12, got -3")
        );
        assert!(parsed.rejected[0].raw.contains("\"price\":-3"));
        assert_eq!(parsed.rejected[1].index, 2);
        assert!(parsed.rejected[1].reason.contains("missing field `price`"));
    }

    #[test]
    fn bad_values_are_rejected_with_reasons() {
        let base = r#""trade_seq":1,"trade_id":"1","timestamp":1590484512188,"mark_price":1,"instrument_name":"X","index_price":1,"amount":1"#;
        let cases = [
            (
                r#""price":1,"direction":"hold","tick_direction":0"#,
                "unknown variant `hold`",
            ),
            (
                r#""price":null,"direction":"buy","tick_direction":0"#,
                "invalid type: null",
            ),
            (
                r#""price":"NaN","direction":"buy","tick_direction":0"#,
                "invalid type: string",
            ),
            (
                r#""price":1,"direction":"buy","tick_direction":9"#,
                "`tick_direction` must be in 0..=3",
            ),
            (
                r#""price":1e999,"direction":"buy","tick_direction":0"#,
                "number out of range",
            ),
        ];
        for (fields, expected) in cases {
            let reason = parse_trade(&format!("{{{base},{fields}}}")).unwrap_err();
            assert!(reason.contains(expected), "{fields}: {reason}");
        }
    }

    #[test]
    fn frame_level_errors_are_typed() {
        assert!(matches!(
            parse_notification("{not json"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse_notification(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#),
            Err(Error::Unexpected { method }) if method == "heartbeat"
        ));
        assert!(matches!(
            parse_notification(r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms","data":{}}}"#),
            Err(Error::NotTrades { channel }) if channel == "book.BTC-PERPETUAL.100ms"
        ));
        assert!(matches!(
            parse_notification(r#"{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.X.raw","data":{"a":1}}}"#),
            Err(Error::Malformed(m)) if m.contains("not an array")
        ));
    }

    #[test]
    fn json_line_accepts_both_forms() {
        assert_eq!(
            parse_json_line(FUTURE_NOTIFICATION).unwrap().trades.len(),
            1
        );
        let bare = parse_json_line(OPTION_TRADE).unwrap();
        assert_eq!((bare.channel, bare.trades.len()), (None, 1));
        let bad = parse_json_line(r#"{"foo":1}"#).unwrap();
        assert!(bad.trades.is_empty());
        assert!(bad.rejected[0].reason.contains("missing field"));
    }
}
