//! Why a history fetch stopped.

/// A fetch that cannot go on; retryable answers were retried before this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Deribit refused the request with an error retrying cannot help (bad params, auth).
    #[error("Deribit refused {method}: {message} ({code})")]
    Rejected {
        /// The JSON-RPC method.
        method: String,
        /// Deribit's error code.
        code: i64,
        /// Deribit's error message.
        message: String,
    },
    /// Retries were exhausted (connection lost, timeouts, 10028 or other retryable codes).
    #[error("{method} failed {attempts} times, last: {last}")]
    GaveUp {
        /// The JSON-RPC method.
        method: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// An answer of the wrong shape where a result was expected.
    #[error("malformed answer to {method}: {reason}")]
    Malformed {
        /// The JSON-RPC method.
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// A page said `has_more` but held no valid trade: no cursor can move past it, and
    /// taking it as the end would lose the rest silently.
    #[error(
        "{instrument}: Deribit says more trades follow but its page held no valid one ({rejected} invalid); cannot page past them"
    )]
    Unpageable {
        /// The instrument.
        instrument: String,
        /// Elements of the page that failed to parse or validate.
        rejected: u64,
    },
    /// The endpoint cannot be used (URL, TLS setup).
    #[error("{0}")]
    Config(String),
}
