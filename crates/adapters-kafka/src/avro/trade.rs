//! The trade codec (`schemas/trade.avsc`): a hand-written encoder, a strict fast decoder for
//! our own schema, and a resolving decoder for any compatible writer schema.

use apache_avro::Schema;
use domain::{Direction, Liquidation, Trade, TradeFields};

use super::binary::{Cursor, put_double, put_long, put_optional, put_str, seq_to_long};
use super::resolve::{Fields, decode_value};
use super::schema::trade_schema;
use crate::error::Result;

/// Appends the Avro datum of `trade` (schema `trade.avsc`) to `buf`.
///
/// # Errors
/// [`Error::Encode`](crate::Error::Encode) if `trade_seq` does not fit an Avro `long`.
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

/// Decodes a trade written with schema `writer` (id `schema_id`) and validates it.
///
/// Records written with our own schema take a strict, fast path. Other writer schemas are
/// checked by [`crate::datum_bounds`] (a record cut short is refused there, even inside a
/// trailing nullable union that apache-avro alone would read as null) and then resolved by
/// apache-avro.
///
/// # Errors
/// [`Error::Decode`](crate::Error::Decode) for bytes that do not decode or resolve,
/// [`Error::InvalidTrade`](crate::Error::InvalidTrade) for a trade that breaks a domain rule.
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
            Some(code) => match Liquidation::from_code(code) {
                Some(liquidation) => Some(liquidation),
                None => return Err(fields.fail(format!("unknown liquidation {code:?}"))),
            },
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
