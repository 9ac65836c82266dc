//! The one error type of the domain crate.

/// Everything the domain can refuse: a trade that breaks a rule, a bad configuration, a snapshot
/// that does not fit the configuration it is restored into. None of these is retryable: the input
/// itself is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A trade field breaks a validation rule.
    #[error("invalid trade {instrument:?} seq {trade_seq}: field `{field}` {rule}")]
    InvalidTrade {
        /// Instrument as given (may be empty, which is itself the error).
        instrument: String,
        /// `trade_seq` as given, to find the trade in a capture.
        trade_seq: u64,
        /// Name of the offending field, as Deribit spells it.
        field: &'static str,
        /// The rule it breaks, e.g. "must be finite and > 0, got NaN".
        rule: String,
    },
    /// The aggregator configuration is unusable.
    #[error("invalid aggregator config: {0}")]
    InvalidConfig(String),
    /// A snapshot does not match the configuration it is restored into.
    #[error("cannot restore snapshot of {instrument:?}: {reason}")]
    SnapshotMismatch {
        /// Instrument whose state does not fit.
        instrument: String,
        /// What differs.
        reason: String,
    },
}

/// Result with the domain [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
