//! The run: instrument after instrument (in the order the progress file fixed), chunk after
//! chunk, each written and made durable before the progress saying so is saved.

use std::path::Path;
use std::time::{Duration, Instant};

use adapters_deribit::history_fetch::{Cursor, InstrumentPager, TradeSource};
use tracing::info;

use super::HistoryError;
use super::bar::ProgressBar;
use super::output::TradeOutput;
use super::progress::Progress;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// Instruments in the run.
    pub instruments: usize,
    /// Trades written by this run (a resumed run counts only its own).
    pub trades: u64,
    /// Trades written by the run and those it resumed.
    pub total_trades: u64,
    /// Trades skipped: invalid, or another instrument's.
    pub skipped: u64,
    /// `trade_seq` values in holes Deribit did not return.
    pub unfillable: u64,
    /// History requests made (retries not counted).
    pub requests: u64,
    /// How long this run took.
    pub elapsed: Duration,
}

/// Fetches what `progress` has left into `output`, saving `progress` to `progress_path` after
/// each chunk (if there is one).
///
/// # Errors
/// The first [`HistoryError`]: a fetch that failed, an output or progress file that could not
/// be written. What was saved before it stays valid for a resume.
pub async fn fetch<S: TradeSource, O: TradeOutput>(
    source: &mut S,
    output: &mut O,
    progress: &mut Progress,
    progress_path: Option<&Path>,
    bar: &mut ProgressBar,
) -> Result<FetchSummary, HistoryError> {
    let started = Instant::now();
    let mut summary = FetchSummary {
        instruments: progress.instruments.len(),
        ..FetchSummary::default()
    };
    let save = |progress: &Progress| progress_path.map_or(Ok(()), |path| progress.save(path));
    while let Some(instrument) = progress.instruments.get(progress.next).cloned() {
        let mut pager = InstrumentPager::new(
            &instrument,
            progress.from_ms,
            progress.to_ms,
            progress.cursor,
        );
        let mut trades = 0;
        while !pager.is_done() {
            let chunk = pager.next_chunk(source).await?;
            let bytes = output.write(&chunk.trades).await?;
            let n = chunk.trades.len() as u64;
            trades += n;
            summary.trades += n;
            summary.skipped += chunk.skipped;
            summary.unfillable += chunk.unfillable;
            summary.requests += chunk.requests;
            progress.trades += n;
            progress.output_bytes = bytes;
            progress.cursor = pager.cursor();
            if pager.is_done() {
                break;
            }
            save(progress)?;
            bar.update(progress.next, progress.trades, &instrument);
        }
        info!(%instrument, trades, "Instrument done.");
        progress.next += 1;
        progress.cursor = Cursor::default();
        save(progress)?;
        bar.update(progress.next, progress.trades, &instrument);
    }
    summary.total_trades = progress.trades;
    summary.elapsed = started.elapsed();
    Ok(summary)
}
