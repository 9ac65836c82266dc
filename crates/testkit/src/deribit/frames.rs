//! The frames the fake sends, shaped like Deribit's: answers and errors carrying the server's
//! `usIn`/`usOut`/`usDiff`/`testnet`, subscription notifications, heartbeat test requests.

use serde_json::{Value, json};

use super::State;

/// A `result` answer to request `id`, with the server's times.
pub(super) fn result_frame(id: &Value, result: &Value, s: &State) -> String {
    with_server_times(json!({"jsonrpc": "2.0", "id": id, "result": result}), s).to_string()
}

/// An `error` answer to request `id`.
pub(super) fn error_frame(id: &Value, code: i64, message: &str) -> String {
    let now = server_us(0);
    json!({"jsonrpc": "2.0", "id": id, "error": {"message": message, "code": code}, "usIn": now, "usOut": now, "usDiff": 0, "testnet": true})
        .to_string()
}

/// The server's clock in µs: the wall clock shifted by `offset_ms`.
pub(super) fn server_us(offset_ms: i64) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    wall.saturating_add(offset_ms.saturating_mul(1000))
}

/// Adds Deribit's `usIn`/`usOut`/`usDiff`/`testnet` to an answer, `usOut` as scripted.
fn with_server_times(mut frame: Value, s: &State) -> Value {
    let now = server_us(s.clock_offset_ms);
    frame["usIn"] = json!(now);
    frame["usOut"] = match &s.us_out_override {
        Some(v) => v.clone(),
        None => json!(now),
    };
    frame["usDiff"] = json!(0);
    frame["testnet"] = json!(true);
    frame
}

/// A `subscription` notification carrying `trades` on `channel`.
pub(super) fn notification(channel: &str, trades: &[Value]) -> String {
    json!({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": trades}})
        .to_string()
}

/// A `heartbeat` of type `test_request`: the client must answer with `public/test`.
pub(super) fn test_request() -> String {
    json!({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}).to_string()
}
