//! The aggregation service loop: trade log in, aggregates and state out, crash-safe.
//!
//! Per assigned source partition it keeps one [`Aggregator`]. On assignment the partition's
//! state is restored from the committer before any of its trades is processed, and the log is
//! moved to the restored position. Progress markers from the log move the partition's
//! watermark (under the fallback rule, trades and the wall clock do). Every commit interval (and
//! at shutdown and revocation) it runs a cycle: drain closed windows, collect late trades,
//! changed instrument states and per-partition markers, commit them together. A trade for a
//! closed window is never dropped in silence: a rate-limited WARN, a counter, and a copy in the
//! late-trades topic ([`crate::late`]). If a cycle is aborted, every partition is restored and
//! rewound to its last commit, so the cycle repeats with identical output. A log that cannot be
//! read (broker down) is waited out, not-ready meanwhile; only a failure that needs a person
//! (configuration, credentials) stops the loop. What it counts is in [`crate::metrics`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use domain::{Aggregator, AggregatorConfig, Ingested, WatermarkRule};
use ports::{
    AggregateCommitter, Clock, CommitBatch, CommitError, LateTrade, LogError, LogEvent,
    LoggedProgress, Partition, PartitionMarker, RestoredPartition, TraceContext, TradeLog,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::late::{LateTrades, WarnPace, late_reason, marker_ahead, stamped_ahead};
// Re-exported so `app_agg::service::…` keeps naming everything the loop is driven and read by.
pub use crate::late::{MAX_LATE_PER_CYCLE, MAX_MARKER_AHEAD_MS, MAX_TRADE_AHEAD_MS};
pub use crate::metrics::{PartitionHealth, ServiceMetrics, ServiceStats};

/// Trace contexts linked from one commit span, at most.
pub const MAX_LINKS: usize = 32;

/// Why the service stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The log failed for good.
    #[error("reading trades: {0}")]
    Log(LogError),
    /// Committing failed for good (fenced, misconfigured).
    #[error("committing: {0}")]
    Commit(CommitError),
    /// A restored state does not fit the configuration (window or half-lives changed).
    #[error("restoring partition {partition}: {reason}")]
    Restore {
        /// Partition.
        partition: Partition,
        /// Why.
        reason: String,
    },
}

// By hand, not `#[from]`: that would also make the cause a `source`, and `{:#}` would print it
// twice.
impl From<LogError> for ServiceError {
    fn from(e: LogError) -> Self {
        ServiceError::Log(e)
    }
}

impl From<CommitError> for ServiceError {
    fn from(e: CommitError) -> Self {
        ServiceError::Commit(e)
    }
}

struct PartitionState {
    aggregator: Aggregator,
    /// Next offset to read, as of the last trade folded in.
    next_offset: Option<i64>,
    /// `next_offset` as of the last committed marker.
    committed_offset: Option<i64>,
    /// Offset of the first record read since the assignment: where a rewind reads again when
    /// the partition has no marker yet (its first cycle aborted).
    first_offset: Option<i64>,
    /// Wall time the watermark last advanced (or of the assignment), ms.
    last_advance_ms: i64,
}

/// The service over its ports.
pub struct Service<L, C, K> {
    log: L,
    committer: C,
    clock: K,
    config: AggregatorConfig,
    partitions: BTreeMap<Partition, PartitionState>,
    links: Vec<TraceContext>,
    /// Late trades since the last cycle, for the late-trades topic.
    late: LateTrades,
    /// Paces the WARN about implausible markers.
    ahead_warnings: WarnPace,
    metrics: Arc<ServiceMetrics>,
}

impl<L: TradeLog, C: AggregateCommitter, K: Clock> Service<L, C, K> {
    /// A service with no partitions yet.
    pub fn new(log: L, committer: C, clock: K, config: AggregatorConfig) -> Self {
        Service {
            log,
            committer,
            clock,
            config,
            partitions: BTreeMap::new(),
            links: Vec::new(),
            late: LateTrades::new(),
            ahead_warnings: WarnPace::new(),
            metrics: Arc::default(),
        }
    }

    /// Live counters, for the metrics endpoint.
    pub fn metrics(&self) -> Arc<ServiceMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Counters so far.
    pub fn stats(&self) -> ServiceStats {
        self.metrics.stats()
    }

    /// Partitions assigned and restored.
    pub fn partitions(&self) -> Vec<Partition> {
        self.partitions.keys().copied().collect()
    }

    /// Runs until `shutdown` resolves, committing every `interval` and once more at the end.
    ///
    /// # Errors
    /// [`ServiceError`] when the log or the committer fails for good.
    pub async fn run(
        &mut self,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ServiceStats, ServiceError> {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = ticker.tick() => self.cycle(None).await?,
                event = self.log.next_event() => match event {
                    Ok(event) => {
                        self.log_reachable();
                        self.on_event(event).await?;
                    }
                    Err(LogError::Retryable(reason)) => self.log_unreachable(&reason),
                    Err(fatal) => return Err(fatal.into()),
                },
            }
        }
        self.cycle(None).await?;
        let stats = self.stats();
        info!(
            cycles = stats.cycles,
            aggregates = stats.aggregates,
            "Aggregation stopped."
        );
        Ok(stats)
    }

    /// A broker outage is weather: say so once, report not ready, read on. No pause here:
    /// librdkafka queues its outage errors with the records and paces them itself; pausing per
    /// error left a backlog of them that kept the service not ready long after the broker was
    /// back (found on Apache Kafka).
    fn log_unreachable(&mut self, reason: &str) {
        if !self.metrics.log_unreachable.swap(true, Ordering::Relaxed) {
            self.metrics.log_outages.fetch_add(1, Ordering::Relaxed);
            warn!(
                reason,
                "Cannot read the raw topic; waiting for the broker (not ready meanwhile)."
            );
        }
    }

    fn log_reachable(&mut self) {
        if self.metrics.log_unreachable.swap(false, Ordering::Relaxed) {
            info!("Reading the raw topic again.");
        }
    }

    /// Handles one log event (public so tests can drive the loop step by step).
    ///
    /// # Errors
    /// As [`Service::run`].
    pub async fn on_event(&mut self, event: LogEvent) -> Result<(), ServiceError> {
        match event {
            LogEvent::Assigned(partitions) => {
                self.restore(&partitions).await?;
                self.metrics.ready.store(true, Ordering::Relaxed);
            }
            LogEvent::Revoked(partitions) => {
                // Finish the revoked partitions' work, then let them go.
                self.cycle(Some(&partitions)).await?;
                for partition in partitions {
                    self.partitions.remove(&partition);
                }
                self.publish_health();
            }
            LogEvent::Progress(progress) => self.on_progress(&progress),
            LogEvent::Trades(trades) => {
                let late_before = self.late.len();
                for logged in trades {
                    let Some(state) = self.partitions.get_mut(&logged.partition) else {
                        warn!(
                            partition = logged.partition,
                            "Trade of a partition not assigned here; ignored."
                        );
                        continue;
                    };
                    if state.next_offset != Some(logged.offset) {
                        // Transaction markers make small jumps normal; anything else is worth a look.
                        debug!(partition = logged.partition, offset = logged.offset, expected = ?state.next_offset, "Offset jump.");
                    }
                    let ahead = match state.aggregator.config().rule() {
                        WatermarkRule::TradeTime { .. } => {
                            stamped_ahead(&logged.trade, self.clock.now_ms())
                        }
                        WatermarkRule::Markers => None,
                    };
                    let outcome = match ahead {
                        Some(_) => Ingested::Late,
                        None => state.aggregator.ingest(&logged.trade),
                    };
                    state.first_offset.get_or_insert(logged.offset);
                    state.next_offset = Some(logged.offset + 1);
                    let counter = match outcome {
                        Ingested::Accepted => &self.metrics.trades,
                        Ingested::Duplicate => &self.metrics.duplicates,
                        Ingested::Late => {
                            let reason = ahead
                                .unwrap_or_else(|| late_reason(&state.aggregator, &logged.trade));
                            self.late.push(LateTrade {
                                partition: logged.partition,
                                offset: logged.offset,
                                reason,
                                trade: logged.trade.clone(),
                            });
                            &self.metrics.late
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // One notification's trades share a context: link it once.
                    if let Some(trace) = logged.trace
                        && self.links.len() < MAX_LINKS
                        && !self.links.contains(&trace)
                    {
                        self.links.push(trace);
                    }
                }
                self.late.warn_since(late_before, &self.clock);
                if self.late.is_full() {
                    self.cycle(None).await?;
                }
            }
        }
        Ok(())
    }

    fn on_progress(&mut self, progress: &LoggedProgress) {
        let now = self.clock.now_ms();
        let Some(state) = self.partitions.get_mut(&progress.partition) else {
            warn!(
                partition = progress.partition,
                "Progress marker of a partition not assigned here; ignored."
            );
            return;
        };
        self.metrics
            .progress_markers
            .fetch_add(1, Ordering::Relaxed);
        state.first_offset.get_or_insert(progress.offset);
        state.next_offset = Some(progress.offset + 1);
        if marker_ahead(progress.completeness_ms, now) {
            self.metrics
                .implausible_markers
                .fetch_add(1, Ordering::Relaxed);
            if self.ahead_warnings.due(now) {
                warn!(
                    partition = progress.partition,
                    offset = progress.offset,
                    writer = %progress.writer,
                    completeness_ms = progress.completeness_ms,
                    "Progress marker far ahead of the clock ignored: it would close windows still to come."
                );
            }
            return;
        }
        if state
            .aggregator
            .observe_progress(&progress.writer, progress.completeness_ms)
        {
            state.last_advance_ms = now;
        }
    }

    /// Shares each partition's watermark and marker age with the probe.
    fn publish_health(&self) {
        let health = self
            .partitions
            .iter()
            .map(|(&p, s)| {
                (
                    p,
                    PartitionHealth {
                        watermark: s.aggregator.watermark(),
                        last_advance_ms: s.last_advance_ms,
                    },
                )
            })
            .collect();
        self.metrics.set_partition_health(health);
    }

    /// Restores `partitions` from one read of the changelog and resumes each at its marker.
    async fn restore(&mut self, partitions: &[Partition]) -> Result<(), ServiceError> {
        // Cooperative rebalances hand out empty assignments; nothing to read for those.
        if partitions.is_empty() {
            return Ok(());
        }
        let mut restored = self.committer.restore(partitions).await?;
        for &partition in partitions {
            let state = restored
                .remove(&partition)
                .ok_or_else(|| ServiceError::Restore {
                    partition,
                    reason: "the changelog read returned nothing for it".to_owned(),
                })?;
            self.restore_partition(partition, state)?;
        }
        self.publish_health();
        Ok(())
    }

    fn restore_partition(
        &mut self,
        partition: Partition,
        restored: RestoredPartition,
    ) -> Result<(), ServiceError> {
        let aggregator =
            Aggregator::restore(self.config.clone(), restored.snapshot).map_err(|e| {
                ServiceError::Restore {
                    partition,
                    reason: e.to_string(),
                }
            })?;
        let previous = self.partitions.get(&partition);
        // A rewind of a partition without a marker reads again from its first record (else the
        // trades read since the assignment would never be aggregated).
        let first_offset = previous
            .and_then(|s| s.first_offset)
            .filter(|_| restored.next_offset.is_none());
        if let Some(offset) = restored.next_offset.or(first_offset)
            && let Err(e) = self.log.seek(partition, offset)
        {
            // Reading from an earlier offset only replays duplicates, dropped by trade_seq.
            warn!(partition, offset, error = %e, "Seek after restore failed; replaying from the group offset.");
        }
        info!(partition, instruments = aggregator.instrument_count(), next_offset = ?restored.next_offset, "Partition restored.");
        // A rewind (aborted cycle) keeps how long the watermark has been still.
        let last_advance_ms = previous.map_or_else(|| self.clock.now_ms(), |s| s.last_advance_ms);
        self.partitions.insert(
            partition,
            PartitionState {
                aggregator,
                next_offset: restored.next_offset,
                committed_offset: restored.next_offset,
                first_offset,
                last_advance_ms,
            },
        );
        Ok(())
    }

    /// Commits closed windows, changed states and progress of `only` (or all) partitions.
    ///
    /// # Errors
    /// As [`Service::run`].
    pub async fn cycle(&mut self, only: Option<&[Partition]>) -> Result<(), ServiceError> {
        let now = self.clock.now_ms();
        self.publish_health();
        let mut batch = CommitBatch {
            late: self.late.take(only),
            ..CommitBatch::default()
        };
        for (&partition, state) in &mut self.partitions {
            if only.is_some_and(|o| !o.contains(&partition)) {
                continue;
            }
            state
                .aggregator
                .advance_wall_clock(now, self.log.caught_up(partition));
            batch.aggregates.extend(state.aggregator.drain_closed());
            batch.states.extend(
                state
                    .aggregator
                    .take_changed()
                    .into_iter()
                    .map(|s| (partition, s)),
            );
            if let Some(next_offset) = state.next_offset
                && state.committed_offset != Some(next_offset)
            {
                batch.markers.push(PartitionMarker {
                    partition,
                    next_offset,
                    watermark: state.aggregator.watermark(),
                    writers: state.aggregator.writers().to_vec(),
                });
            }
        }
        if batch.aggregates.is_empty()
            && batch.states.is_empty()
            && batch.markers.is_empty()
            && batch.late.is_empty()
        {
            return Ok(());
        }
        batch.links = std::mem::take(&mut self.links);
        let cycle_span = info_span!(
            "agg.commit",
            otel.kind = "client",
            messaging.system = "kafka",
            messaging.operation.type = "settle",
            aggregates = batch.aggregates.len(),
            states = batch.states.len(),
            partitions = batch.markers.len(),
            links = tracing::field::Empty,
        );
        // Batches of many trades: links, not parents, tie this cycle to the producers' traces.
        let linked = telemetry::link_span(&cycle_span, &batch.links);
        cycle_span.record("links", linked);
        let (count, markers) = (batch.aggregates.len() as u64, batch.markers.clone());
        // Bars of the smallest size only: a gap in one would count again in each larger bar.
        let smallest = self.config.window().millis();
        let with_gaps = batch
            .aggregates
            .iter()
            .filter(|a| a.window_ms == smallest && a.seq_gaps.is_some_and(|gaps| gaps > 0))
            .count() as u64;
        let started = Instant::now();
        let outcome = if batch.aggregates.is_empty() {
            self.committer
                .commit(batch)
                .instrument(cycle_span.clone())
                .await
        } else {
            let emit_span = info_span!(
                parent: &cycle_span,
                "agg.emit",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "send",
                messaging.batch.message_count = count,
                window_end_max = batch.aggregates.iter().map(|a| a.window_end).max(),
            );
            self.committer
                .commit(batch)
                .instrument(emit_span)
                .instrument(cycle_span.clone())
                .await
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.last_cycle_us.store(took, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.metrics.cycles.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .windows_emitted
                    .fetch_add(count, Ordering::Relaxed);
                self.metrics
                    .windows_with_gaps
                    .fetch_add(with_gaps, Ordering::Relaxed);
                for marker in markers {
                    if let Some(state) = self.partitions.get_mut(&marker.partition) {
                        state.committed_offset = Some(marker.next_offset);
                    }
                }
                cycle_span.in_scope(|| debug!(aggregates = count, "Cycle committed."));
                Ok(())
            }
            Err(CommitError::Aborted(reason)) => {
                // Back to the last commit: restore every partition and re-read from its marker.
                self.metrics.aborted.fetch_add(1, Ordering::Relaxed);
                warn!(reason = %reason, "Commit cycle aborted; rewinding to the last commit.");
                // Everything after the last commit is read again, late trades and links too.
                self.late.clear();
                self.links.clear();
                let partitions: Vec<Partition> = self.partitions.keys().copied().collect();
                self.restore(&partitions).await
            }
            Err(fatal) => Err(ServiceError::Commit(fatal)),
        }
    }
}
