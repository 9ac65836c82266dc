//! Avro encoding of trades and aggregates.
//!
//! Encoding is hand-written against the schema files in `schemas/` (a test checks it produces
//! the very bytes apache-avro produces from those files): it writes straight into a reusable
//! buffer, with no intermediate value tree, because it runs once per published record.
//! Decoding goes through apache-avro with schema resolution, so records written with any
//! compatible writer schema (an evolved producer) decode into our types.
//!
//! * `schema`: the `.avsc` files, embedded and parsed once.
//! * `binary`: Avro's binary primitives, written to a buffer and read back strictly.
//! * `resolve`: apache-avro decoding with schema resolution, and the resolved record's fields.
//! * `trade`: the trade codec, with a fast path for records written with our own schema.
//! * `aggregate`: the aggregate codec.
//!
//! The parts are private; everything callers use is re-exported here, so paths stay
//! `adapters_kafka::avro::…`.

mod aggregate;
mod binary;
mod resolve;
mod schema;
mod trade;

pub use aggregate::{decode_aggregate, encode_aggregate};
pub use resolve::decode_value;
pub use schema::{AGGREGATE_SCHEMA_JSON, TRADE_SCHEMA_JSON, aggregate_schema, trade_schema};
pub use trade::{
    decode_foreign_trade, decode_own_trade, decode_trade, encode_trade, is_own_trade_schema,
};
