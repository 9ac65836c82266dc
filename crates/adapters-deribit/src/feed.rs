//! [`DeribitFeed`]: the `TradeFeed` over Deribit's WebSocket API.
//!
//! A supervisor task runs sessions one after another: connect, handshake, stream, and on any
//! failure reconnect with jittered backoff, forever, until shutdown or a fatal error. The
//! sequencer lives in the supervisor, so positions survive reconnects and every reconnect
//! backfills from them; so does the completeness clock, which holds through a reconnect and its
//! backfill and jumps once they are done.

use std::sync::Arc;

use ports::{Clock, FeedError, FeedEvent, StartPositions, SystemClock, TradeFeed};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::completeness::CompletenessClock;
use crate::config::DeribitConfig;
use crate::error::Result;
use crate::metrics::FeedMetrics;
use crate::sequencer::Sequencer;
use crate::session::{self, Context, FeedItem, SessionEnd, TraceExtractor};

/// How far before our latest trade instrument discovery starts searching.
const DISCOVERY_MARGIN_MS: i64 = 5_000;

/// Deribit trades as a [`TradeFeed`]. Dropping it stops the connection.
pub struct DeribitFeed {
    rx: mpsc::Receiver<FeedItem>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    metrics: Arc<FeedMetrics>,
}

impl std::fmt::Debug for DeribitFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeribitFeed")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl DeribitFeed {
    /// Validates `config` and starts streaming in the background. `seed` holds the last
    /// delivered position per instrument (e.g. read back from Kafka): nothing at or before it is
    /// delivered again, and everything after it is fetched from history first.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if the configuration cannot work.
    pub fn spawn(
        config: DeribitConfig,
        seed: StartPositions,
        trace: Option<TraceExtractor>,
    ) -> Result<Self> {
        Self::spawn_with_clock(config, seed, trace, Arc::new(SystemClock))
    }

    /// As [`DeribitFeed::spawn`], with wall-clock time from `clock` (the plausibility of trade
    /// timestamps and of Deribit's clock readings, the discovery range).
    ///
    /// # Errors
    /// [`crate::Error::Config`] if the configuration cannot work.
    pub fn spawn_with_clock(
        config: DeribitConfig,
        seed: StartPositions,
        trace: Option<TraceExtractor>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(FeedMetrics::default());
        let task = tokio::spawn(supervise(
            config,
            seed,
            trace,
            clock,
            tx,
            stop_rx,
            Arc::clone(&metrics),
        ));
        Ok(DeribitFeed {
            rx,
            stop,
            task: Some(task),
            metrics,
        })
    }

    /// The feed's counters.
    pub fn metrics(&self) -> Arc<FeedMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Asks the feed to stop: the connection is closed, batches already queued are still
    /// returned, then `next_event` returns `Ok(None)`.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops and waits for the background task to finish.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DeribitFeed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TradeFeed for DeribitFeed {
    async fn next_event(&mut self) -> Result<Option<FeedEvent>, FeedError> {
        match self.rx.recv().await {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

async fn supervise(
    config: DeribitConfig,
    seed: StartPositions,
    trace: Option<TraceExtractor>,
    wall: Arc<dyn Clock>,
    tx: mpsc::Sender<FeedItem>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<FeedMetrics>,
) {
    let mut sequencer = Sequencer::new(config.max_held_per_instrument);
    sequencer.seed(&seed);
    let mut backoff = Backoff::new(config.backoff);
    let mut completeness = CompletenessClock::new(config.completeness_margin);
    let mut recover = !seed.is_empty();
    let started_ms = wall.now_ms();
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Instruments without a position that traded while we were away are found by
        // discovery, searching from our latest trade (or our start). The margin covers clock
        // skew; overlap is harmless, trades are deduplicated by trade_seq.
        let discover_since = recover.then(|| {
            let latest = sequencer.positions().values().map(|p| p.timestamp).max();
            latest.unwrap_or(started_ms) - DISCOVERY_MARGIN_MS
        });
        // Requests of the previous connection are gone; recovery asks again from the positions.
        sequencer.abandon_backfills();
        let started = tokio::time::Instant::now();
        let end = session::run(Context {
            config: &config,
            metrics: &metrics,
            trace: trace.as_ref(),
            sequencer: &mut sequencer,
            completeness: &mut completeness,
            wall: &*wall,
            tx: &tx,
            shutdown: &mut shutdown,
            recover,
            discover_since,
        })
        .await;
        match end {
            SessionEnd::Shutdown | SessionEnd::ConsumerGone => break,
            SessionEnd::Fatal(e) => {
                error!(error = %e, "Deribit feed stopped.");
                let _ = tx.send(Err(e)).await;
                break;
            }
            SessionEnd::Retry { reason, min_delay } => {
                FeedMetrics::add(&metrics.reconnects, 1);
                backoff.connection_lasted(started.elapsed());
                let delay = backoff.next_delay().max(min_delay);
                warn!(reason = %reason, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "Reconnecting to Deribit.");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        recover = true;
    }
    info!("Deribit feed finished.");
}
