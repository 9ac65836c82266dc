//! Where fetched trades go: a JSON-lines file (one trade object per line, flushed and synced
//! before progress is recorded), or a topic through any [`TradeSink`] (app-raw's Kafka sink:
//! Avro, keyed by instrument), each chunk acknowledged before the next.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters_deribit::history_fetch::FetchedTrade;
use ports::{SinkError, TradeBatch, TradeSink};

use super::HistoryError;

/// Attempts to publish one chunk while the sink says a retry can help.
const PUBLISH_ATTEMPTS: u32 = 5;

/// A destination for chunks of trades in order.
pub trait TradeOutput {
    /// Writes `trades` durably; returns the output's length in bytes after them (0 for a topic).
    fn write(
        &mut self,
        trades: &[FetchedTrade],
    ) -> impl Future<Output = Result<u64, HistoryError>> + Send;
}

/// A JSON-lines file.
#[derive(Debug)]
pub struct FileOutput {
    writer: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
}

impl FileOutput {
    /// Writes to `file` (at `path`), which is `bytes` long and positioned at its end.
    pub fn new(file: File, path: &Path, bytes: u64) -> Self {
        FileOutput {
            writer: BufWriter::with_capacity(1 << 16, file),
            path: path.to_owned(),
            bytes,
        }
    }
}

impl TradeOutput for FileOutput {
    async fn write(&mut self, trades: &[FetchedTrade]) -> Result<u64, HistoryError> {
        let io = |e| HistoryError::io(&self.path, e);
        for trade in trades {
            self.writer.write_all(trade.line.as_bytes()).map_err(io)?;
            self.writer.write_all(b"\n").map_err(io)?;
            self.bytes += trade.line.len() as u64 + 1;
        }
        self.writer.flush().map_err(io)?;
        // On disk before the progress file says so: a crash must never leave progress ahead.
        self.writer.get_ref().sync_data().map_err(io)?;
        Ok(self.bytes)
    }
}

/// A topic, through a sink.
#[derive(Debug)]
pub struct TopicOutput<S> {
    sink: S,
}

impl<S: TradeSink> TopicOutput<S> {
    /// Publishes through `sink`.
    pub fn new(sink: S) -> Self {
        TopicOutput { sink }
    }
}

impl<S: TradeSink> TradeOutput for TopicOutput<S> {
    async fn write(&mut self, trades: &[FetchedTrade]) -> Result<u64, HistoryError> {
        if trades.is_empty() {
            return Ok(0);
        }
        let batch = TradeBatch {
            trades: trades.iter().map(|t| t.trade.clone()).collect(),
            trace: None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.sink.publish(batch.clone()).await {
                Ok(()) => return Ok(0),
                Err(SinkError::Retryable(reason)) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(attempt, %reason, "Publishing history trades failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(e) => return Err(HistoryError::Publish(e.to_string())),
            }
        }
    }
}
