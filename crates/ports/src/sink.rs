//! Outbound port: publish trades durably.

use std::future::Future;

use crate::feed::{StartPositions, TradeBatch};

/// Errors from publishing.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A transient failure; the same batch may be published again (the sink is idempotent).
    #[error("retryable publish failure: {0}")]
    Retryable(String),
    /// A failure retrying will not fix (bad config, authorisation, schema rejected).
    #[error("publish failed: {0}")]
    Fatal(String),
}

impl SinkError {
    /// Whether publishing the same batch again can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable(_))
    }
}

/// Where trades go (the raw topic).
pub trait TradeSink: Send + Sync {
    /// Publishes every trade of `batch`; resolves once all are acknowledged.
    ///
    /// # Errors
    /// [`SinkError`] if any trade could not be made durable.
    fn publish(&self, batch: TradeBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Waits until everything published so far is acknowledged.
    ///
    /// # Errors
    /// [`SinkError`] if outstanding records failed.
    fn flush(&self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The last published position per instrument, read back from the sink, to seed the feed.
    ///
    /// # Errors
    /// [`SinkError`] if the sink cannot be read.
    fn last_positions(&self) -> impl Future<Output = Result<StartPositions, SinkError>> + Send;
}
