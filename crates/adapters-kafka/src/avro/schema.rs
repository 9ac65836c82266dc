//! The schema files in `schemas/`, embedded at build time and parsed once.
//!
//! The encoders write against these files by hand and the decoders resolve other writers'
//! schemas to them, so they are the one statement of what a trade and an aggregate look like.

use std::sync::OnceLock;

use apache_avro::Schema;

use crate::error::{Error, Result};

/// `schemas/trade.avsc`.
pub const TRADE_SCHEMA_JSON: &str = include_str!("../../schemas/trade.avsc");
/// `schemas/trade_aggregate.avsc`.
pub const AGGREGATE_SCHEMA_JSON: &str = include_str!("../../schemas/trade_aggregate.avsc");

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
