//! Avro encoding of trades and aggregates.
//!
//! Encoding is hand-written against the schema files in `schemas/` (a test checks it produces
//! the very bytes apache-avro produces from those files): it writes straight into a reusable
//! buffer, with no intermediate value tree, because it runs once per published record.
//! Decoding goes through apache-avro with schema resolution, so records written with any
//! compatible writer schema (an evolved producer) decode into our types.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use domain::{Aggregate, Direction, EwmaValue, Liquidation, Trade, TradeFields};

use crate::error::{Error, Result};

/// `schemas/trade.avsc`.
pub const TRADE_SCHEMA_JSON: &str = include_str!("../schemas/trade.avsc");
/// `schemas/trade_aggregate.avsc`.
pub const AGGREGATE_SCHEMA_JSON: &str = include_str!("../schemas/trade_aggregate.avsc");

/// The parsed trade schema.
///
/// # Errors
/// [`Error::Schema`] if the file does not parse (a build defect, caught by the tests).
pub fn trade_schema() -> Result<&'static Schema> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Schema::parse_str(TRADE_SCHEMA_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|reason| Error::Schema {
            name: "Trade",
            reason: reason.clone(),
        })
}

/// The parsed aggregate schema.
///
/// # Errors
/// [`Error::Schema`] if the file does not parse.
pub fn aggregate_schema() -> Result<&'static Schema> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Schema::parse_str(AGGREGATE_SCHEMA_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|reason| Error::Schema {
            name: "TradeAggregate",
            reason: reason.clone(),
        })
}

// ------------------------------------------------------------------ binary encoding primitives

#[allow(clippy::cast_possible_truncation)] // taking the low 7 bits is the point
fn put_long(buf: &mut Vec<u8>, value: i64) {
    // Zig-zag, then base-128 varint, least significant group first.
    let mut n = ((value << 1) ^ (value >> 63)).cast_unsigned();
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn put_double(buf: &mut Vec<u8>, value: f64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, value: &str) {
    // A string longer than i64::MAX bytes cannot exist in memory.
    put_long(buf, i64::try_from(value.len()).unwrap_or(i64::MAX));
    buf.extend_from_slice(value.as_bytes());
}

/// A `["null", T]` union: branch 0 for none, 1 then the value for some.
fn put_optional<T>(buf: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => put_long(buf, 0),
        Some(v) => {
            put_long(buf, 1);
            put(buf, v);
        }
    }
}

fn seq_to_long(what: &'static str, seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::Encode {
        what,
        reason: format!("trade_seq {seq} exceeds an Avro long"),
    })
}

/// Appends the Avro datum of `trade` (schema `trade.avsc`) to `buf`.
///
/// # Errors
/// [`Error::Encode`] if `trade_seq` does not fit an Avro `long`.
pub fn encode_trade(buf: &mut Vec<u8>, trade: &Trade) -> Result<()> {
    put_str(buf, &trade.instrument_name);
    put_str(buf, &trade.trade_id);
    put_long(buf, seq_to_long("trade", trade.trade_seq)?);
    put_long(buf, trade.timestamp);
    put_double(buf, trade.price);
    put_double(buf, trade.amount);
    put_long(
        buf,
        match trade.direction {
            Direction::Buy => 0,
            Direction::Sell => 1,
        },
    );
    put_double(buf, trade.index_price);
    put_double(buf, trade.mark_price);
    put_long(buf, i64::from(trade.tick_direction));
    put_optional(buf, trade.iv, put_double);
    put_optional(buf, trade.liquidation, |b, l| {
        put_long(
            b,
            match l {
                Liquidation::Maker => 0,
                Liquidation::Taker => 1,
                Liquidation::Both => 2,
            },
        );
    });
    put_optional(buf, trade.block_trade_id.as_deref(), put_str);
    put_optional(buf, trade.combo_id.as_deref(), put_str);
    put_optional(buf, trade.contracts, put_double);
    Ok(())
}

/// Appends the Avro datum of `aggregate` (schema `trade_aggregate.avsc`) to `buf`.
///
/// # Errors
/// [`Error::Encode`] if a count or `trade_seq` does not fit an Avro `long`.
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
    Ok(())
}

// ------------------------------------------------------------------ decoding

/// Decodes a datum written with `writer` into a value of `reader`'s shape.
///
/// The datum is first checked against [`crate::datum_bounds`], so a foreign record cannot make
/// apache-avro reserve more than the record's own size suggests.
///
/// # Errors
/// [`Error::Decode`] if the bytes break those bounds, do not decode or do not resolve.
pub fn decode_value(
    schema_id: u32,
    writer: &Schema,
    reader: &Schema,
    mut datum: &[u8],
) -> Result<Value> {
    let decode = |reason: String| Error::Decode { schema_id, reason };
    crate::datum_bounds::check(writer, datum).map_err(decode)?;
    let value = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(|e| decode(e.to_string()))?
        .read_value(&mut datum)
        .map_err(|e| decode(e.to_string()))?;
    // `check` read the same bytes with the same schema; this holds should the two ever differ.
    if !datum.is_empty() {
        return Err(decode(format!(
            "{} bytes left after the record",
            datum.len()
        )));
    }
    Ok(value)
}

/// Decodes a trade written with schema `writer` (id `schema_id`) and validates it.
///
/// Records written with our own schema take a strict, fast path. Other writer schemas are
/// checked by [`crate::datum_bounds`] (a record cut short is refused there, even inside a
/// trailing nullable union that apache-avro alone would read as null) and then resolved by
/// apache-avro.
///
/// # Errors
/// [`Error::Decode`] for bytes that do not decode or resolve, [`Error::InvalidTrade`] for a
/// trade that breaks a domain rule.
pub fn decode_trade(schema_id: u32, writer: &Schema, datum: &[u8]) -> Result<Trade> {
    if is_own_trade_schema(writer)? {
        return decode_own_trade(schema_id, datum);
    }
    decode_foreign_trade(schema_id, writer, datum)
}

/// Whether `writer` is our trade schema (then [`decode_own_trade`] reads it directly). Costly
/// (canonical forms are compared): callers decoding many records cache it per schema id.
///
/// # Errors
/// If our own schema does not parse (a build defect).
pub fn is_own_trade_schema(writer: &Schema) -> Result<bool> {
    let ours = trade_schema()?;
    Ok(std::ptr::eq(writer, ours) || writer == ours)
}

/// Decodes a trade written with another (compatible) schema, resolved against ours.
///
/// # Errors
/// As [`decode_trade`].
pub fn decode_foreign_trade(schema_id: u32, writer: &Schema, datum: &[u8]) -> Result<Trade> {
    let value = decode_value(schema_id, writer, trade_schema()?, datum)?;
    let mut fields = Fields::of(value, schema_id)?;
    let trade = TradeFields {
        instrument_name: fields.string("instrument_name")?,
        trade_id: fields.string("trade_id")?,
        trade_seq: fields.seq("trade_seq")?,
        timestamp: fields.long("timestamp")?,
        price: fields.double("price")?,
        amount: fields.double("amount")?,
        direction: match fields.symbol("direction")?.as_str() {
            "buy" => Direction::Buy,
            "sell" => Direction::Sell,
            other => return Err(fields.fail(format!("unknown direction {other:?}"))),
        },
        index_price: fields.double("index_price")?,
        mark_price: fields.double("mark_price")?,
        tick_direction: {
            let tick = fields.long("tick_direction")?;
            u8::try_from(tick)
                .map_err(|_| fields.fail(format!("tick_direction {tick} out of range")))?
        },
        iv: fields.optional("iv", Fields::as_double)?,
        liquidation: match fields
            .optional("liquidation", Fields::as_symbol)?
            .as_deref()
        {
            None => None,
            Some("M") => Some(Liquidation::Maker),
            Some("T") => Some(Liquidation::Taker),
            Some("MT") => Some(Liquidation::Both),
            Some(other) => return Err(fields.fail(format!("unknown liquidation {other:?}"))),
        },
        block_trade_id: fields.optional("block_trade_id", Fields::as_string)?,
        combo_id: fields.optional("combo_id", Fields::as_string)?,
        contracts: fields.optional("contracts", Fields::as_double)?,
    };
    Ok(Trade::new(trade)?)
}

/// Decodes a trade written with exactly `trade.avsc`, refusing anything short, long or malformed.
///
/// # Errors
/// As [`decode_trade`].
pub fn decode_own_trade(schema_id: u32, datum: &[u8]) -> Result<Trade> {
    let mut r = Cursor {
        bytes: datum,
        schema_id,
    };
    let trade = TradeFields {
        instrument_name: r.string()?,
        trade_id: r.string()?,
        trade_seq: {
            let seq = r.long()?;
            u64::try_from(seq)
                .map_err(|_| r.fail(format!("field `trade_seq` is negative: {seq}")))?
        },
        timestamp: r.long()?,
        price: r.double()?,
        amount: r.double()?,
        direction: match r.long()? {
            0 => Direction::Buy,
            1 => Direction::Sell,
            other => return Err(r.fail(format!("direction symbol {other} out of range"))),
        },
        index_price: r.double()?,
        mark_price: r.double()?,
        tick_direction: {
            let tick = r.long()?;
            u8::try_from(tick).map_err(|_| r.fail(format!("tick_direction {tick} out of range")))?
        },
        iv: r.optional(Cursor::double)?,
        liquidation: match r.optional(Cursor::long)? {
            None => None,
            Some(0) => Some(Liquidation::Maker),
            Some(1) => Some(Liquidation::Taker),
            Some(2) => Some(Liquidation::Both),
            Some(other) => return Err(r.fail(format!("liquidation symbol {other} out of range"))),
        },
        block_trade_id: r.optional(Cursor::string)?,
        combo_id: r.optional(Cursor::string)?,
        contracts: r.optional(Cursor::double)?,
    };
    if !r.bytes.is_empty() {
        return Err(r.fail(format!("{} bytes left after the record", r.bytes.len())));
    }
    Ok(Trade::new(trade)?)
}

/// A strict reader of Avro binary primitives.
struct Cursor<'a> {
    bytes: &'a [u8],
    schema_id: u32,
}

impl Cursor<'_> {
    fn fail(&self, reason: String) -> Error {
        Error::Decode {
            schema_id: self.schema_id,
            reason,
        }
    }

    fn long(&mut self) -> Result<i64> {
        let mut value: u64 = 0;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                // Undo the zig-zag.
                return Ok((value >> 1).cast_signed() ^ -((value & 1).cast_signed()));
            }
        }
        Err(self.fail("truncated or overlong varint".into()))
    }

    fn double(&mut self) -> Result<f64> {
        match self.bytes.split_first_chunk::<8>() {
            Some((raw, rest)) => {
                self.bytes = rest;
                Ok(f64::from_le_bytes(*raw))
            }
            None => Err(self.fail("truncated double".into())),
        }
    }

    fn string(&mut self) -> Result<String> {
        let len = self.long()?;
        let len =
            usize::try_from(len).map_err(|_| self.fail(format!("negative string length {len}")))?;
        if len > self.bytes.len() {
            return Err(self.fail(format!("string of {len} bytes, {} left", self.bytes.len())));
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(text.to_vec()).map_err(|e| self.fail(format!("string is not UTF-8: {e}")))
    }

    fn optional<T>(&mut self, read: fn(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.long()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(self.fail(format!("union branch {other} out of range"))),
        }
    }
}

/// Decodes an aggregate written with schema `writer` (id `schema_id`).
///
/// # Errors
/// [`Error::Decode`] for bytes that do not decode or resolve.
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
    Ok(Aggregate {
        instrument_name: fields.string("instrument_name")?,
        window_start: fields.long("window_start")?,
        window_end: fields.long("window_end")?,
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
        first_trade_timestamp: fields.long("first_trade_timestamp")?,
        last_trade_timestamp: fields.long("last_trade_timestamp")?,
    })
}

/// The fields of a decoded record, taken out by name.
struct Fields {
    values: Vec<(String, Value)>,
    schema_id: u32,
}

impl Fields {
    fn of(value: Value, schema_id: u32) -> Result<Self> {
        match value {
            Value::Record(values) => Ok(Fields { values, schema_id }),
            other => Err(Error::Decode {
                schema_id,
                reason: format!("expected a record, got {other:?}"),
            }),
        }
    }

    fn fail(&self, reason: String) -> Error {
        Error::Decode {
            schema_id: self.schema_id,
            reason,
        }
    }

    fn take(&mut self, name: &str) -> Result<Value> {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some((_, value)) => Ok(std::mem::replace(value, Value::Null)),
            None => Err(self.fail(format!("field `{name}` missing"))),
        }
    }

    fn typed<T>(&mut self, name: &str, convert: fn(Value) -> Option<T>) -> Result<T> {
        let value = self.take(name)?;
        convert(value).ok_or_else(|| self.fail(format!("field `{name}` has the wrong type")))
    }

    fn string(&mut self, name: &str) -> Result<String> {
        self.typed(name, Fields::as_string)
    }

    fn long(&mut self, name: &str) -> Result<i64> {
        self.typed(name, Fields::as_long)
    }

    fn seq(&mut self, name: &str) -> Result<u64> {
        let value = self.long(name)?;
        u64::try_from(value).map_err(|_| self.fail(format!("field `{name}` is negative: {value}")))
    }

    fn double(&mut self, name: &str) -> Result<f64> {
        self.typed(name, Fields::as_double)
    }

    fn symbol(&mut self, name: &str) -> Result<String> {
        self.typed(name, Fields::as_symbol)
    }

    fn optional<T>(&mut self, name: &str, convert: fn(Value) -> Option<T>) -> Result<Option<T>> {
        match self.take(name)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                value => convert(value)
                    .map(Some)
                    .ok_or_else(|| self.fail(format!("field `{name}` has the wrong type"))),
            },
            Value::Null => Ok(None),
            value => convert(value)
                .map(Some)
                .ok_or_else(|| self.fail(format!("field `{name}` has the wrong type"))),
        }
    }

    fn as_string(value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    // By value like the other converters: they share the `fn(Value) -> Option<T>` shape.
    #[allow(clippy::needless_pass_by_value)]
    fn as_long(value: Value) -> Option<i64> {
        match value {
            Value::Long(v) | Value::TimestampMillis(v) => Some(v),
            Value::Int(v) => Some(i64::from(v)),
            _ => None,
        }
    }

    #[allow(clippy::needless_pass_by_value)]
    fn as_double(value: Value) -> Option<f64> {
        match value {
            Value::Double(v) => Some(v),
            Value::Float(v) => Some(f64::from(v)),
            Value::Long(v) => i32::try_from(v).ok().map(f64::from),
            Value::Int(v) => Some(f64::from(v)),
            _ => None,
        }
    }

    fn as_symbol(value: Value) -> Option<String> {
        match value {
            Value::Enum(_, symbol) => Some(symbol),
            _ => None,
        }
    }
}
