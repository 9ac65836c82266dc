//! The store loop: records in, rows and positions out, exactly once.
//!
//! On assignment each partition is positioned where the store says it is stored up to (the
//! consumer group's offsets are never used), so nothing is read twice into the store and
//! nothing is skipped. Records gather in a [`Pending`] batch; every batch interval, when it is
//! full, on revocation and at shutdown, the batch is written in one transaction with the
//! positions it moves. A database outage is waited out with the same batch (not ready
//! meanwhile); a write refused because another instance moved a position ends the service as
//! fenced; anything else that retrying cannot fix ends it with the reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ports::{
    Clock, ErrorKind, RecordSource, SourceError, SourceEvent, SourceRecord, StartAt, Store,
    StoreError, SystemClock, TopicPartition, Written,
};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::{SOURCE_ERROR_HOLD, SqlMetrics};
use crate::pending::Pending;

/// Why the service stopped on its own. The port's error is part of the message, not a
/// `source`, so a `{:#}` chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The source topics cannot be read without a person.
    #[error("reading the source topics: {0}")]
    Source(SourceError),
    /// The store refused for good, or another instance took a partition over (fenced).
    #[error("writing to the database: {0}")]
    Store(StoreError),
}

impl ServiceError {
    /// Whether another instance took over (exit code 3).
    pub fn is_fenced(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.kind() == ErrorKind::Fenced)
    }
}

/// How the loop batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Rows per transaction at most.
    pub rows: usize,
    /// Rows read are written at least this often.
    pub interval: Duration,
}

/// How often the store's housekeeping runs (partitions ahead, retention).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

/// How long the last write at a stop may take (database calls, outages waited out) before it
/// is abandoned: its rows are read again on the next start.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Retries after a database outage: from the first pause, doubling, to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(5);

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Transactions committed.
    pub commits: u64,
    /// Trades inserted.
    pub trades: u64,
    /// Bars inserted.
    pub bars: u64,
}

/// The service over its ports.
pub struct Service<S, T> {
    source: S,
    store: T,
    batching: Batching,
    /// Per owned partition: the position the store holds for it (`None`: none yet).
    owned: BTreeMap<TopicPartition, Option<i64>>,
    pending: Pending,
    metrics: Arc<SqlMetrics>,
    stop: watch::Receiver<bool>,
    stop_sender: Arc<watch::Sender<bool>>,
    /// Set once a stop was asked for and the last write runs.
    draining: bool,
}

impl<S: RecordSource, T: Store> Service<S, T> {
    /// A service with no partitions yet.
    pub fn new(source: S, store: T, batching: Batching) -> Self {
        let (sender, stop) = watch::channel(false);
        Service {
            source,
            store,
            batching,
            owned: BTreeMap::new(),
            pending: Pending::default(),
            metrics: Arc::default(),
            stop,
            stop_sender: Arc::new(sender),
            draining: false,
        }
    }

    /// Live counters, for the endpoint.
    pub fn metrics(&self) -> Arc<SqlMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` resolves, writing what was read once more at the end.
    ///
    /// # Errors
    /// [`ServiceError`] when the source or the store fails for good, or this instance is fenced.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RunStats, ServiceError> {
        let sender = Arc::clone(&self.stop_sender);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = sender.send(true);
        });
        let outcome = self.serve().await;
        watcher.abort();
        outcome?;
        let s = &self.metrics;
        let stats = RunStats {
            commits: s.commits.load(Ordering::Relaxed),
            trades: s.trades.load(Ordering::Relaxed),
            bars: s.bars.load(Ordering::Relaxed),
        };
        info!(
            commits = stats.commits,
            trades = stats.trades,
            bars = stats.bars,
            "Loading stopped."
        );
        Ok(stats)
    }

    /// The loop: events in, a write every interval, until stopped (then one last write).
    async fn serve(&mut self) -> Result<(), ServiceError> {
        let mut ticker = tokio::time::interval(self.batching.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    self.draining = true;
                    return self.flush().await;
                }
                _ = maintenance.tick() => {
                    self.with_retry(async |store: &mut T| store.maintain().await).await?;
                }
                _ = ticker.tick() => self.flush().await?,
                event = self.source.next_event() => match event {
                    Ok(event) => {
                        self.source_reachable();
                        self.on_event(event).await?;
                    }
                    Err(e) if e.kind() == ErrorKind::Transient => self.source_unreachable(&e),
                    Err(e) => return Err(ServiceError::Source(e)),
                },
            }
        }
    }

    fn source_unreachable(&self, error: &SourceError) {
        let now = SystemClock.now_ms().max(1);
        let previous = self.metrics.source_error_ms.swap(now, Ordering::Relaxed);
        let hold = i64::try_from(SOURCE_ERROR_HOLD.as_millis()).unwrap_or(i64::MAX);
        if previous == 0 || now.saturating_sub(previous) >= hold {
            warn!(error = %error, "Cannot read the source topics; waiting for the broker (not ready meanwhile).");
        }
    }

    fn source_reachable(&self) {
        if self.metrics.source_error_ms.swap(0, Ordering::Relaxed) != 0 {
            info!("Reading the source topics again.");
        }
    }

    /// Handles one event (public so tests can drive the loop step by step).
    ///
    /// # Errors
    /// As [`Service::run`].
    pub async fn on_event(&mut self, event: SourceEvent) -> Result<(), ServiceError> {
        match event {
            SourceEvent::Assigned(partitions) => self.assign(&partitions).await,
            SourceEvent::Revoked(partitions) => {
                // Another member may own them already: what was read of them is not written
                // here (it is read again from the stored positions), the rest is.
                self.let_go(&partitions);
                self.flush().await
            }
            SourceEvent::Records(records) => {
                self.take(records);
                if self.pending.rows() >= self.batching.rows {
                    self.flush().await?;
                }
                Ok(())
            }
        }
    }

    /// Positions newly owned partitions where the store says they are stored up to.
    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), ServiceError> {
        if !partitions.is_empty() {
            let Some(stored) = self
                .with_retry(async |store: &mut T| store.positions(partitions).await)
                .await?
            else {
                return Ok(());
            };
            for partition in partitions {
                let position = stored.get(partition).copied();
                let start = position.map_or(StartAt::Beginning, StartAt::Offset);
                if let Err(e) = self.source.seek(partition, start) {
                    // The group never commits offsets, so without the seek the consumer starts
                    // from the log's beginning: slower, never a loss (records before the
                    // stored position are skipped in `take`).
                    warn!(partition = %partition, error = %e, "Seek to the stored position failed; reading from the log's start instead.");
                }
                info!(partition = %partition, position = ?position, "Partition positioned from the database.");
                self.owned.insert(partition.clone(), position);
            }
        }
        self.metrics.assigned.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Adds records of owned partitions to the pending batch; records before a partition's
    /// stored position (fetched before its seek took effect) are already stored.
    fn take(&mut self, records: Vec<SourceRecord>) {
        for record in records {
            let Some(stored) = self.owned.get(&record.source) else {
                debug!(partition = %record.source, "Record of a partition not owned here; ignored.");
                continue;
            };
            if stored.is_some_and(|next| record.offset < next) {
                continue;
            }
            self.pending.add(record);
        }
    }

    /// Stops owning `partitions` and forgets what was read of them.
    fn let_go(&mut self, partitions: &[TopicPartition]) {
        self.pending.forget(partitions);
        for partition in partitions {
            if self.owned.remove(partition).is_some() {
                info!(partition = %partition, "Partition let go; its unwritten rows are another member's to read.");
            }
        }
    }

    /// Writes the pending batch (if any) with the positions it moves; partitions a rebalance
    /// has taken meanwhile (their event still queued) are let go first, never written.
    async fn flush(&mut self) -> Result<(), ServiceError> {
        let taken: Vec<TopicPartition> = self
            .owned
            .keys()
            .filter(|p| self.source.is_revoked(p))
            .cloned()
            .collect();
        self.let_go(&taken);
        let batch = self.pending.take(&self.owned);
        if batch.is_empty() {
            return Ok(());
        }
        let span = info_span!(
            "sql.commit",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "COPY",
            trades = batch.trades.len(),
            bars = batch.bars.len(),
            partitions = batch.positions.len(),
            links = tracing::field::Empty,
        );
        // Batches of many records: links, not parents, tie this write to the producers' traces.
        span.record("links", telemetry::link_span(&span, &batch.links));
        let started = Instant::now();
        let Some(written) = self
            .with_retry(async |store: &mut T| store.write(&batch).await)
            .instrument(span.clone())
            .await?
        else {
            return Ok(());
        };
        self.metrics.committed(&written, started.elapsed());
        warn_conflicts(&written);
        for moved in &batch.positions {
            self.owned.insert(moved.source.clone(), Some(moved.to));
        }
        span.in_scope(|| debug!(trades = written.trades, bars = written.bars, "Written."));
        Ok(())
    }

    /// When a database call is abandoned: once a stop is asked for; while the last write at a
    /// stop drains, after [`DRAIN_DEADLINE`].
    fn give_up(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        if self.draining {
            return Box::pin(tokio::time::sleep(DRAIN_DEADLINE));
        }
        let mut stop = self.stop.clone();
        Box::pin(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        })
    }

    /// Calls `call` on the store until it succeeds, waiting out outages (not ready meanwhile);
    /// a fenced or refused call ends the service. Stopping while waiting gives `None`: what
    /// was not written is read again from the stored positions on the next start.
    async fn with_retry<R>(
        &mut self,
        mut call: impl AsyncFnMut(&mut T) -> Result<R, StoreError>,
    ) -> Result<Option<R>, ServiceError> {
        let mut pause = RETRY_FIRST;
        let mut give_up = self.give_up();
        loop {
            // A database that stops answering mid-call must not keep a stop waiting: the call
            // is dropped (its transaction never commits) and read again on the next start.
            let outcome = tokio::select! {
                outcome = call(&mut self.store) => outcome,
                () = &mut give_up => {
                    info!("Stopping during a database call; what it held is read again on the next start.");
                    return Ok(None);
                }
            };
            match outcome {
                Ok(value) => {
                    if self.metrics.database_down.swap(false, Ordering::Relaxed) {
                        info!("The database is back.");
                    }
                    return Ok(Some(value));
                }
                Err(e) if e.kind() == ErrorKind::Transient => {
                    if !self.metrics.database_down.swap(true, Ordering::Relaxed) {
                        warn!(error = %e, "Cannot write to the database; retrying with the same rows (not ready meanwhile).");
                    }
                }
                Err(e) => {
                    if e.kind() == ErrorKind::Fenced {
                        self.metrics.fenced.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(ServiceError::Store(e));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut give_up => {
                    info!("Stopping while the database is down; unwritten rows are read again on the next start.");
                    return Ok(None);
                }
            }
            pause = (pause * 2).min(RETRY_LAST);
        }
    }
}

/// Conflicts mean a row was stored before: never expected, so never silent.
fn warn_conflicts(written: &Written) {
    if written.trade_conflicts > 0 || written.bar_conflicts > 0 {
        warn!(
            trades = written.trade_conflicts,
            bars = written.bar_conflicts,
            "Rows already stored were skipped (counted in app_sql_conflicts_total); exactly once means this should not happen."
        );
    }
}
