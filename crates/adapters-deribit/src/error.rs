//! The one error type of the Deribit adapter.

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work: which setting, and what is accepted.
    #[error("{reason}")]
    Config {
        /// The setting at fault, so a caller can name its own variable for it.
        setting: Setting,
        /// What is wrong and what is accepted.
        reason: String,
    },
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

/// The settings of [`crate::DeribitConfig`] a configuration error can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The endpoint URL.
    Url,
    /// The channel list (including a `raw` channel without credentials).
    Channels,
    /// The `public/set_heartbeat` interval.
    HeartbeatInterval,
    /// How often Deribit's clock is read for progress.
    ProgressInterval,
    /// Queue capacity, hold limit or in-flight limit.
    Limits,
    /// Reconnect backoff.
    Backoff,
}

impl Error {
    /// A configuration error about `setting`.
    pub fn config(setting: Setting, reason: impl Into<String>) -> Self {
        Error::Config {
            setting,
            reason: reason.into(),
        }
    }
}

/// Result with the adapter's [`Error`] as default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
