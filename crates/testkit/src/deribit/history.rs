//! The history methods (`public/get_last_trades_*`), answered from the fake's record: by
//! sequence or time range, less the trades withheld to make a gap unfillable, paged with
//! `has_more` as Deribit does, in the order `sorting` asks: `asc` oldest first, `desc` newest
//! first, and `default` (also when absent) Deribit's undocumented database order, which the
//! fake answers newest first (what "last trades" suggests): a client that forgets
//! `"sorting":"asc"` gets the newest page of its range, not the oldest. Another value is
//! `-32602 Invalid params`.

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

/// The `sorting` param: whether the answer is oldest first.
fn ascending(params: &Value) -> Result<bool, (i64, &'static str)> {
    match params.get("sorting").map(Value::as_str) {
        Some(Some("asc")) => Ok(true),
        None | Some(Some("desc" | "default")) => Ok(false),
        Some(_) => Err((-32602, "Invalid params")),
    }
}

/// The first `count` (param, default 10, at most 1000) of `trades`, with `has_more`.
fn page(params: &Value, mut trades: Vec<Value>) -> Value {
    let count = count(params);
    let has_more = trades.len() > count;
    trades.truncate(count);
    json!({"trades": trades, "has_more": has_more})
}

/// The recorded trades of one instrument history still has (not withheld) and `keep` accepts,
/// oldest or newest first; at most `limit` (a page and one more is all an answer needs:
/// copying the whole record per request made the fake, not the client, the bottleneck of big
/// fetches).
fn history(
    s: &State,
    instrument: &str,
    keep: impl Fn(&Value) -> bool,
    ascending: bool,
    limit: usize,
) -> Vec<Value> {
    let record = s
        .record
        .get(instrument)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let kept = |t: &&Value| {
        let key = (instrument.to_owned(), t["trade_seq"].as_u64().unwrap_or(0));
        !s.withheld.contains(&key) && keep(t)
    };
    if ascending {
        record.iter().filter(kept).take(limit).cloned().collect()
    } else {
        record
            .iter()
            .rev()
            .filter(kept)
            .take(limit)
            .cloned()
            .collect()
    }
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
pub(super) fn by_instrument(s: &State, params: &Value) -> Result<Value, (i64, &'static str)> {
    let ascending = ascending(params)?;
    let start = params.get("start_seq").and_then(Value::as_u64).unwrap_or(1);
    let end = params
        .get("end_seq")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let trades = history(
        s,
        str_param(params, "instrument_name"),
        |t| (start..=end).contains(&t["trade_seq"].as_u64().unwrap_or(0)),
        ascending,
        count(params) + 1,
    );
    Ok(page(params, trades))
}

/// `public/get_last_trades_by_currency_and_time`: every matching instrument, in time order.
pub(super) fn by_currency_and_time(
    s: &State,
    params: &Value,
) -> Result<Value, (i64, &'static str)> {
    let ascending = ascending(params)?;
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
    let mut trades: Vec<Value> = instruments
        .flat_map(|i| history(s, i, |t| range.contains(&timestamp(t)), true, usize::MAX))
        .collect();
    trades.sort_by_key(|t| (timestamp(t), t["trade_seq"].as_u64().unwrap_or(0)));
    if !ascending {
        trades.reverse();
    }
    Ok(page(params, trades))
}

/// `public/get_last_trades_by_instrument_and_time`: one instrument, by time range.
pub(super) fn by_instrument_and_time(
    s: &State,
    params: &Value,
) -> Result<Value, (i64, &'static str)> {
    let ascending = ascending(params)?;
    let range = time_range(params);
    let instrument = str_param(params, "instrument_name");
    Ok(page(
        params,
        history(
            s,
            instrument,
            |t| {
                let seq = t["trade_seq"].as_u64().unwrap_or(0);
                range.contains(&timestamp(t))
                    && (s.hidden_from_time.is_empty()
                        || !s.hidden_from_time.contains(&(instrument.to_owned(), seq)))
            },
            ascending,
            count(params) + 1,
        ),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state() -> State {
        let record = (1..=5_u64)
            .map(|seq| json!({"instrument_name": "X", "trade_seq": seq, "timestamp": 100 + seq}))
            .collect();
        State {
            record: [("X".to_owned(), record)].into(),
            ..State::default()
        }
    }

    fn seqs(answer: &Value) -> Vec<u64> {
        answer["trades"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trade_seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn sorting_is_honoured_and_default_is_not_ascending() {
        let s = state();
        for (sorting, want) in [
            (Some("asc"), vec![2, 3]),
            (Some("desc"), vec![5, 4]),
            (Some("default"), vec![5, 4]),
            (None, vec![5, 4]),
        ] {
            let mut params = json!({"instrument_name": "X", "start_seq": 2, "count": 2});
            let mut timed = json!({"instrument_name": "X", "start_timestamp": 102, "count": 2});
            if let Some(sorting) = sorting {
                params["sorting"] = json!(sorting);
                timed["sorting"] = json!(sorting);
            }
            let answer = by_instrument(&s, &params).unwrap();
            assert_eq!(seqs(&answer), want, "{sorting:?} by sequence");
            assert_eq!(answer["has_more"], json!(true));
            let answer = by_instrument_and_time(&s, &timed).unwrap();
            assert_eq!(seqs(&answer), want, "{sorting:?} by time");
        }
        let bad = json!({"instrument_name": "X", "sorting": "up"});
        assert_eq!(by_instrument(&s, &bad), Err((-32602, "Invalid params")));
    }
}
