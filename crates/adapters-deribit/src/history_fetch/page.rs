//! One answer of a history method, `{"trades": [...], "has_more": bool}`, read element by
//! element through [`crate::parse::parse_trade`] (the validation path live frames take): a bad
//! element is counted and logged, never costs its page. `has_more` is required: an answer
//! without it cannot say whether the instrument ends there, so it is malformed (the fetch
//! stops with one line, exit code 1, resumable) rather than read as the end.

use domain::Trade;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::warn;

use crate::parse::{MAX_KEPT_BYTES, clip};

/// A validated trade and its JSON object as one line (Deribit's own field names), which is
/// what `app-agg replay` reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedTrade {
    /// The trade, validated.
    pub trade: Trade,
    /// Its JSON object on one line, without the newline.
    pub line: String,
}

/// The usable part of one history answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Valid trades in answer order.
    pub trades: Vec<FetchedTrade>,
    /// Whether Deribit has more trades matching the request.
    pub has_more: bool,
    /// Elements that failed to parse or validate (logged).
    pub rejected: u64,
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    trades: Vec<&'a RawValue>,
    has_more: Option<bool>,
}

/// Parses a history method's `result`.
///
/// # Errors
/// A one-line reason if `result` is not an object with a `trades` array and a boolean
/// `has_more`.
pub fn parse_page(result: &str) -> Result<Page, String> {
    let raw: RawPage<'_> = serde_json::from_str(result).map_err(|e| e.to_string())?;
    let has_more = raw.has_more.ok_or_else(|| {
        "no has_more (a boolean) beside trades: cannot tell whether more follow".to_owned()
    })?;
    let mut page = Page {
        trades: Vec::with_capacity(raw.trades.len()),
        has_more,
        rejected: 0,
    };
    for (index, element) in raw.trades.into_iter().enumerate() {
        match crate::parse::parse_trade(element.get()) {
            Ok(trade) => page.trades.push(FetchedTrade {
                trade,
                line: one_line(element),
            }),
            Err(reason) => {
                page.rejected += 1;
                warn!(index, reason = %clip(&reason, MAX_KEPT_BYTES), raw = %clip(element.get(), MAX_KEPT_BYTES), "Skipped an invalid trade in a history page.");
            }
        }
    }
    Ok(page)
}

/// The element as sent if it is one line already (Deribit sends compact JSON), else re-written
/// compactly: a line of the output is one trade.
fn one_line(element: &RawValue) -> String {
    let text = element.get();
    if !text.contains(['\n', '\r']) {
        return text.to_owned();
    }
    serde_json::from_str::<serde_json::Value>(text).map_or_else(
        |_| text.replace(['\n', '\r'], " "),
        |value| value.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_trades_as_lines_and_counts_bad_ones() {
        let page = parse_page(
            "{\"trades\":[{\"trade_seq\":1,\"trade_id\":\"1\",\"timestamp\":5,\"tick_direction\":0,\"price\":1,\n\"mark_price\":1,\"instrument_name\":\"X\",\"index_price\":1,\"direction\":\"buy\",\"amount\":1},{\"trade_seq\":2},7],\"has_more\":true}",
        )
        .unwrap();
        assert_eq!(
            (page.trades.len(), page.rejected, page.has_more),
            (1, 2, true)
        );
        assert!(!page.trades[0].line.contains('\n'));
        assert_eq!(page.trades[0].trade.trade_seq, 1);
        assert!(parse_page("[]").is_err());
        assert!(parse_page("{\"has_more\":false}").is_err());
        assert_eq!(
            parse_page("{\"trades\":[],\"has_more\":false}").map(|p| p.has_more),
            Ok(false)
        );
        // Without has_more the end of the instrument cannot be told: malformed, not the end.
        let missing = parse_page("{\"trades\":[]}").unwrap_err();
        assert!(missing.contains("has_more"), "{missing}");
        assert!(parse_page("{\"trades\":[],\"has_more\":null}").is_err());
    }
}
