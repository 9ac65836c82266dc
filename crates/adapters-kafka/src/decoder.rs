//! Record values to domain types: Confluent framing, the writer schema from the registry (once
//! per schema id), and a fast path for trades written with our own schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use domain::{Aggregate, Trade};

use crate::avro::{decode_aggregate, decode_foreign_trade, decode_own_trade, is_own_trade_schema};
use crate::error::Result;
use crate::framing::split_frame;
use crate::registry::Registry;

/// Decodes the values of the raw and aggregates topics.
pub(crate) struct ValueDecoder {
    registry: Arc<Registry>,
    /// Per writer schema id: whether it is our trade schema (deciding costs a schema compare).
    own_trade_schema: Mutex<HashMap<u32, bool>>,
}

impl ValueDecoder {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        ValueDecoder {
            registry,
            own_trade_schema: Mutex::new(HashMap::new()),
        }
    }

    /// A trade from a raw topic's record value.
    pub(crate) async fn trade(&self, payload: &[u8]) -> Result<Trade> {
        let (id, datum) = split_frame(payload)?;
        let own = self
            .own_trade_schema
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied();
        if own == Some(true) {
            // Hot path: our own schema, read without a registry lookup or schema resolution.
            return decode_own_trade(id, datum);
        }
        let writer = self.registry.schema(id).await?;
        let own = is_own_trade_schema(&writer)?;
        self.own_trade_schema
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, own);
        if own {
            decode_own_trade(id, datum)
        } else {
            decode_foreign_trade(id, &writer, datum)
        }
    }

    /// A bar from an aggregates topic's record value, written with either schema version.
    pub(crate) async fn aggregate(&self, payload: &[u8]) -> Result<Aggregate> {
        let (id, datum) = split_frame(payload)?;
        let writer = self.registry.schema(id).await?;
        decode_aggregate(id, &writer, datum)
    }
}
