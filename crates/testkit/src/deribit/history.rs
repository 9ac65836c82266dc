//! The history methods (`public/get_last_trades_*`), answered from the fake's record: by
//! sequence or time range, less the trades withheld to make a gap unfillable, paged with
//! `has_more` as Deribit does.

use serde_json::{Value, json};

use super::State;

/// The `count` param: default 10, at most 1000.
fn count(params: &Value) -> usize {
    let count = params
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 1000);
    usize::try_from(count).unwrap_or(1000)
}

/// The first `count` (param, default 10, at most 1000) of `trades`, with `has_more`.
fn page(params: &Value, mut trades: Vec<Value>) -> Value {
    let count = count(params);
    let has_more = trades.len() > count;
    trades.truncate(count);
    json!({"trades": trades, "has_more": has_more})
}

/// The recorded trades of `instruments`, history still has (not withheld) and `keep` accepts;
/// at most `limit` (a page and one more is all a one-instrument answer needs: copying the
/// whole record per request made the fake, not the client, the bottleneck of big fetches).
fn history<'a>(
    s: &State,
    instruments: impl IntoIterator<Item = &'a str>,
    keep: impl Fn(&Value) -> bool,
    limit: usize,
) -> Vec<Value> {
    instruments
        .into_iter()
        .flat_map(|i| s.record.get(i).map(Vec::as_slice).unwrap_or_default())
        .filter(|t| {
            let key = (
                t["instrument_name"].as_str().unwrap_or_default().to_owned(),
                t["trade_seq"].as_u64().unwrap_or(0),
            );
            !s.withheld.contains(&key) && keep(t)
        })
        .take(limit)
        .cloned()
        .collect()
}

fn str_param<'a>(params: &'a Value, name: &str) -> &'a str {
    params.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// `start_timestamp..=end_timestamp`, open where absent.
fn time_range(params: &Value) -> std::ops::RangeInclusive<i64> {
    let start = params
        .get("start_timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let end = params
        .get("end_timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    start..=end
}

/// A recorded trade's timestamp.
fn timestamp(t: &Value) -> i64 {
    t["timestamp"].as_i64().unwrap_or(0)
}

/// `public/get_last_trades_by_instrument`: by `trade_seq` range.
pub(super) fn by_instrument(s: &State, params: &Value) -> Value {
    let start = params.get("start_seq").and_then(Value::as_u64).unwrap_or(1);
    let end = params
        .get("end_seq")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let trades = history(
        s,
        [str_param(params, "instrument_name")],
        |t| (start..=end).contains(&t["trade_seq"].as_u64().unwrap_or(0)),
        count(params) + 1,
    );
    page(params, trades)
}

/// `public/get_last_trades_by_currency_and_time`: every matching instrument, in time order.
pub(super) fn by_currency_and_time(s: &State, params: &Value) -> Value {
    let currency = str_param(params, "currency");
    let kind = params.get("kind").and_then(Value::as_str).unwrap_or("any");
    let range = time_range(params);
    let instruments = s
        .instruments
        .iter()
        .filter(|i| {
            (i.currency == currency || currency == "any") && (i.kind == kind || kind == "any")
        })
        .map(|i| i.name.as_str());
    let mut trades = history(
        s,
        instruments,
        |t| range.contains(&timestamp(t)),
        usize::MAX,
    );
    trades.sort_by_key(|t| (timestamp(t), t["trade_seq"].as_u64().unwrap_or(0)));
    page(params, trades)
}

/// `public/get_last_trades_by_instrument_and_time`: one instrument, by time range.
pub(super) fn by_instrument_and_time(s: &State, params: &Value) -> Value {
    let range = time_range(params);
    let instrument = str_param(params, "instrument_name");
    page(
        params,
        history(
            s,
            [instrument],
            |t| {
                let seq = t["trade_seq"].as_u64().unwrap_or(0);
                range.contains(&timestamp(t))
                    && (s.hidden_from_time.is_empty()
                        || !s.hidden_from_time.contains(&(instrument.to_owned(), seq)))
            },
            count(params) + 1,
        ),
    )
}
