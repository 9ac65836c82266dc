//! JSON-RPC 2.0 framing for Deribit: requests out, responses and notifications in.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::parse::ParsedTrades;

/// A frame from the server, classified.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Answer to our request `id`.
    Response {
        /// The request id.
        id: u64,
        /// `result` or `error`.
        outcome: Result<&'a RawValue, RpcError>,
        /// Deribit's `usOut`: server time the answer left, µs (absent or unreadable: `None`).
        us_out: Option<i64>,
    },
    /// A subscription notification: its `params`, borrowed from the frame, for
    /// [`crate::parse::parse_notification_params`] (the frame itself is not read again).
    Notification(Option<&'a RawValue>),
    /// `heartbeat` with `type` `test_request` (must be answered) or `heartbeat`.
    Heartbeat {
        /// Whether the server expects a `public/test`.
        test_request: bool,
    },
    /// An error frame without an id (e.g. `-32600` for an oversized request).
    OrphanError(RpcError),
    /// Something else: logged and ignored.
    Other,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RpcError {
    /// Deribit or JSON-RPC error code.
    pub code: i64,
    /// Short description, e.g. `too_many_requests`.
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What to do about an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Out of credits (10028): wait for the pool to refill, then go on.
    RateLimited,
    /// Platform maintenance (11051) or public requests disabled (11056): back off longer.
    Maintenance,
    /// Transient on Deribit's side: retry.
    Retryable,
    /// Credentials rejected: stop, retrying cannot help.
    BadCredentials,
    /// `raw` refused to an unauthenticated client: a configuration error.
    RawNeedsAuth,
    /// Anything else: the request itself is wrong.
    Other,
}

impl RpcError {
    /// Classifies the code per Deribit's error table.
    pub fn class(&self) -> ErrorClass {
        match self.code {
            10028 => ErrorClass::RateLimited,
            11051 | 11056 => ErrorClass::Maintenance,
            10040 | 10041 | 10047 | 10066 | 11094 | 13028 | 13888 => ErrorClass::Retryable,
            13004 | 13009 | 13021 => ErrorClass::BadCredentials,
            13778 => ErrorClass::RawNeedsAuth,
            _ => ErrorClass::Other,
        }
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
    /// Kept raw: an odd `usOut` must not spoil the answer it comes with.
    #[serde(default, borrow, rename = "usOut")]
    us_out: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HeartbeatParams<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Classifies one text frame.
///
/// # Errors
/// The JSON error if the frame is not a JSON object of the expected shape.
pub fn classify(text: &str) -> Result<Incoming<'_>, serde_json::Error> {
    let frame: Frame<'_> = serde_json::from_str(text)?;
    if let Some(id) = frame.id {
        let outcome = match (frame.result, frame.error) {
            (_, Some(error)) => Err(error),
            (Some(result), None) => Ok(result),
            (None, None) => Err(RpcError {
                code: 0,
                message: "response without result".into(),
            }),
        };
        let us_out = frame.us_out.and_then(|raw| raw.get().parse::<i64>().ok());
        return Ok(Incoming::Response {
            id,
            outcome,
            us_out,
        });
    }
    match frame.method.as_deref() {
        Some("subscription") => Ok(Incoming::Notification(frame.params)),
        Some("heartbeat") => {
            let test_request = frame
                .params
                .and_then(|p| serde_json::from_str::<HeartbeatParams<'_>>(p.get()).ok())
                .is_some_and(|p| p.kind == "test_request");
            Ok(Incoming::Heartbeat { test_request })
        }
        _ => Ok(frame.error.map_or(Incoming::Other, Incoming::OrphanError)),
    }
}

/// Serialises a request.
pub fn request(id: u64, method: &str, params: &serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// `result` of the history methods.
#[derive(Debug, Deserialize)]
pub struct TradesPage {
    /// Trades, each parsed on its own so one bad element does not spoil the page.
    #[serde(deserialize_with = "crate::parse::deserialize_trade_array")]
    pub trades: ParsedTrades,
    /// Whether more trades match.
    #[serde(default)]
    pub has_more: bool,
}

/// `result` of `public/auth`.
#[derive(Debug, Deserialize)]
pub struct AuthResult {
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Token for `grant_type=refresh_token`.
    pub refresh_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_frame_kind() {
        let response = classify(r#"{"jsonrpc":"2.0","id":42,"result":["trades.BTC-PERPETUAL.100ms"],"usIn":1,"usOut":2,"usDiff":1,"testnet":false}"#).unwrap();
        assert!(
            matches!(response, Incoming::Response { id: 42, outcome: Ok(r), us_out: Some(2) } if r.get().starts_with('['))
        );
        let error = classify(
            r#"{"jsonrpc":"2.0","id":7,"error":{"message":"too_many_requests","code":10028}}"#,
        )
        .unwrap();
        assert!(
            matches!(&error, Incoming::Response { id: 7, outcome: Err(e), us_out: None } if e.class() == ErrorClass::RateLimited)
        );
        // An odd usOut is dropped, the answer kept.
        for odd in [r#""soon""#, "1e400", "-1.5", "null", "{}"] {
            let frame = format!(r#"{{"jsonrpc":"2.0","id":3,"result":"ok","usOut":{odd}}}"#);
            assert!(
                matches!(
                    classify(&frame).unwrap(),
                    Incoming::Response {
                        id: 3,
                        outcome: Ok(_),
                        us_out: None
                    }
                ),
                "{odd}"
            );
        }
        let test =
            classify(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#)
                .unwrap();
        assert!(matches!(test, Incoming::Heartbeat { test_request: true }));
        let beat =
            classify(r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}"#)
                .unwrap();
        assert!(matches!(
            beat,
            Incoming::Heartbeat {
                test_request: false
            }
        ));
        let orphan = classify(
            r#"{"jsonrpc":"2.0","error":{"message":"request entity too large","code":-32600}}"#,
        )
        .unwrap();
        assert!(matches!(
            orphan,
            Incoming::OrphanError(RpcError { code: -32600, .. })
        ));
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","method":"subscription","params":{}}"#).unwrap(),
            Incoming::Notification(Some(p)) if p.get() == "{}"
        ));
        assert!(classify("[1,2").is_err());
    }

    #[test]
    fn classes_follow_the_error_table() {
        let class = |code| {
            RpcError {
                code,
                message: String::new(),
            }
            .class()
        };
        assert_eq!(class(11051), ErrorClass::Maintenance);
        assert_eq!(class(13004), ErrorClass::BadCredentials);
        assert_eq!(class(13778), ErrorClass::RawNeedsAuth);
        assert_eq!(class(10047), ErrorClass::Retryable);
        assert_eq!(class(11050), ErrorClass::Other);
    }

    #[test]
    fn pages_keep_good_trades_and_report_bad_ones() {
        let text = r#"{"trades":[{"trade_seq":1,"trade_id":"1","timestamp":1,"tick_direction":0,"price":1,"mark_price":1,"instrument_name":"X","index_price":1,"direction":"buy","amount":1},{"oops":1}],"has_more":true}"#;
        let page: TradesPage = serde_json::from_str(text).unwrap();
        let trades = &page.trades;
        assert_eq!(
            (trades.trades.len(), trades.rejected.len(), page.has_more),
            (1, 1, true)
        );
        assert!(trades.rejected[0].reason.contains("missing field"));
    }
}
