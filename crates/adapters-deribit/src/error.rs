//! The one error type of the Deribit adapter.

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work; the message says what is accepted.
    #[error("{0}")]
    Config(String),
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A well-formed notification of a channel that carries no trades.
    #[error("not a trades notification (channel {channel:?})")]
    NotTrades {
        /// The notification's channel.
        channel: String,
    },
    /// A JSON-RPC message that is neither a notification nor a trade.
    #[error("unexpected message (method {method:?})")]
    Unexpected {
        /// Its `method` field.
        method: String,
    },
}

/// Result with the adapter's [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
