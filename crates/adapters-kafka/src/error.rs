//! The one error type of the Kafka adapter.

/// What can go wrong between our types and Kafka bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not in Confluent's wire format (magic byte 0, 4-byte schema id, datum).
    #[error("not Confluent-framed Avro: {0}")]
    Framing(String),
    /// The frame names a schema id we do not know and could not fetch.
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    /// The datum does not decode with its writer schema, or does not resolve to ours.
    #[error("cannot decode Avro (writer schema id {schema_id}): {reason}")]
    Decode {
        /// Writer schema id from the frame.
        schema_id: u32,
        /// What failed.
        reason: String,
    },
    /// A value cannot be written in our schema (e.g. a `trade_seq` above `i64::MAX`).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// A schema file does not parse.
    #[error("invalid Avro schema {name}: {reason}")]
    Schema {
        /// Schema name.
        name: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The Schema Registry refused or could not be reached.
    #[error("schema registry, subject {subject:?}: {reason}")]
    Registry {
        /// Subject (or schema id) concerned.
        subject: String,
        /// The registry's reason, e.g. why a schema is incompatible.
        reason: String,
        /// Whether trying again later can help.
        retryable: bool,
    },
    /// A setting cannot work; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    /// A Kafka client operation failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A topic the service needs is missing or set up wrongly; the reason says how to fix it.
    #[error("topic {topic} {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// A decoded trade breaks a domain rule (e.g. NaN or negative price).
    #[error("decoded trade is invalid: {0}")]
    InvalidTrade(#[from] domain::Error),
}

/// Result with the adapter's [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
