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

    /// Publishes `batches` in order as one group; resolves once all are acknowledged. Sinks that
    /// can overlap the batches' round trips should (the default publishes one after another).
    ///
    /// # Errors
    /// [`SinkError`] if any trade could not be made durable; a prefix may have landed.
    fn publish_all(
        &self,
        batches: Vec<TradeBatch>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async move {
            for batch in batches {
                self.publish(batch).await?;
            }
            Ok(())
        }
    }

    /// Writes a progress marker carrying `completeness_ms` to every partition, behind every trade
    /// published so far (the caller has published, and had acknowledged, every trade with a
    /// timestamp at or before it). Resolves once all markers are acknowledged.
    ///
    /// # Errors
    /// [`SinkError`] if a marker could not be written; a later marker supersedes it.
    fn publish_progress(
        &self,
        completeness_ms: i64,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

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
