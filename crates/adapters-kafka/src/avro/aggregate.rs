//! The aggregate codec (`schemas/trade_aggregate.avsc`): a hand-written encoder and a
//! resolving decoder.

use apache_avro::Schema;
use apache_avro::types::Value;
use domain::trade::MAX_TIMESTAMP_MS;
use domain::{Aggregate, EwmaValue};

use super::binary::{put_double, put_long, put_optional, put_str, seq_to_long};
use super::resolve::{Fields, decode_value};
use super::schema::aggregate_schema;
use crate::error::Result;

/// Appends the Avro datum of `aggregate` (schema `trade_aggregate.avsc`) to `buf`.
///
/// # Errors
/// [`Error::Encode`](crate::Error::Encode) if a count or `trade_seq` does not fit an Avro `long`.
pub fn encode_aggregate(buf: &mut Vec<u8>, aggregate: &Aggregate) -> Result<()> {
    put_str(buf, &aggregate.instrument_name);
    put_long(buf, aggregate.window_start);
    put_long(buf, aggregate.window_end);
    put_long(buf, seq_to_long("aggregate", aggregate.trade_count)?);
    for value in [
        aggregate.volume,
        aggregate.buy_volume,
        aggregate.sell_volume,
        aggregate.vwap,
        aggregate.open,
        aggregate.high,
        aggregate.low,
        aggregate.close,
    ] {
        put_double(buf, value);
    }
    // An array is written as one block (its length) and a closing empty block.
    if !aggregate.ewma.is_empty() {
        put_long(buf, i64::try_from(aggregate.ewma.len()).unwrap_or(i64::MAX));
        for e in &aggregate.ewma {
            put_long(buf, e.halflife_ms);
            put_double(buf, e.price);
            put_double(buf, e.vw_price);
        }
    }
    put_long(buf, 0);
    put_long(buf, seq_to_long("aggregate", aggregate.first_trade_seq)?);
    put_long(buf, seq_to_long("aggregate", aggregate.last_trade_seq)?);
    put_long(buf, aggregate.first_trade_timestamp);
    put_long(buf, aggregate.last_trade_timestamp);
    put_long(buf, aggregate.window_ms);
    for count in [aggregate.seq_gaps, aggregate.late_trades] {
        let count = count.map(|c| seq_to_long("aggregate", c)).transpose()?;
        put_optional(buf, count, put_long);
    }
    Ok(())
}

/// A timestamp field, within the range a trade's may take (`0 < ms <` [`MAX_TIMESTAMP_MS`]): a
/// record outside it is refused here rather than passed to readers that cannot hold it.
fn timestamp(fields: &mut Fields, name: &str) -> Result<i64> {
    let ms = fields.long(name)?;
    if ms <= 0 || ms >= MAX_TIMESTAMP_MS {
        return Err(fields.fail(format!(
            "field `{name}` {ms} is not a time from 1970 to 2100"
        )));
    }
    Ok(ms)
}

/// Decodes an aggregate written with schema `writer` (id `schema_id`), any version: fields a
/// version-1 writer lacked read as their defaults, and `window_ms` then as the window's length.
///
/// # Errors
/// [`Error::Decode`](crate::Error::Decode) for bytes that do not decode or resolve, and for a
/// record whose times are outside 1970–2100, whose window is empty, or whose instrument name is
/// empty or holds a NUL character.
pub fn decode_aggregate(schema_id: u32, writer: &Schema, datum: &[u8]) -> Result<Aggregate> {
    let value = decode_value(schema_id, writer, aggregate_schema()?, datum)?;
    let mut fields = Fields::of(value, schema_id)?;
    let ewma = match fields.take("ewma")? {
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                let mut e = Fields::of(item, schema_id)?;
                Ok(EwmaValue {
                    halflife_ms: e.long("halflife_ms")?,
                    price: e.double("price")?,
                    vw_price: e.double("vw_price")?,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        other => return Err(fields.fail(format!("ewma is {other:?}, not an array"))),
    };
    let count = |fields: &mut Fields, name: &str| -> Result<Option<u64>> {
        match fields.optional(name, Fields::as_long)? {
            Some(value) => u64::try_from(value)
                .map(Some)
                .map_err(|_| fields.fail(format!("field `{name}` is negative: {value}"))),
            None => Ok(None),
        }
    };
    let (window_start, window_end) = (
        timestamp(&mut fields, "window_start")?,
        timestamp(&mut fields, "window_end")?,
    );
    let window_ms = match fields.long("window_ms")? {
        0 => window_end.saturating_sub(window_start),
        ms => ms,
    };
    if window_ms <= 0 || window_end <= window_start {
        return Err(fields.fail(format!(
            "window [{window_start}, {window_end}) of {window_ms} ms is empty"
        )));
    }
    let instrument_name = fields.string("instrument_name")?;
    if instrument_name.is_empty() || instrument_name.contains('\0') {
        return Err(fields.fail(format!(
            "instrument_name {instrument_name:?} is empty or holds a NUL character"
        )));
    }
    Ok(Aggregate {
        instrument_name,
        window_start,
        window_end,
        window_ms,
        trade_count: fields.seq("trade_count")?,
        volume: fields.double("volume")?,
        buy_volume: fields.double("buy_volume")?,
        sell_volume: fields.double("sell_volume")?,
        vwap: fields.double("vwap")?,
        open: fields.double("open")?,
        high: fields.double("high")?,
        low: fields.double("low")?,
        close: fields.double("close")?,
        ewma,
        first_trade_seq: fields.seq("first_trade_seq")?,
        last_trade_seq: fields.seq("last_trade_seq")?,
        first_trade_timestamp: timestamp(&mut fields, "first_trade_timestamp")?,
        last_trade_timestamp: timestamp(&mut fields, "last_trade_timestamp")?,
        seq_gaps: count(&mut fields, "seq_gaps")?,
        late_trades: count(&mut fields, "late_trades")?,
    })
}
