//! The aggregation service loop: trade log in, aggregates and state out, crash-safe.
//!
//! Per assigned source partition it keeps one [`Aggregator`]. On assignment the partition's
//! state is restored from the committer before any of its trades is processed, and the log is
//! moved to the restored position. Progress markers from the log move the partition's
//! watermark (under the fallback rule, trades and the wall clock do). Every commit interval (and
//! at shutdown and revocation) it runs a cycle: drain closed windows, collect late trades,
//! changed instrument states and per-partition markers, commit them together. A trade for a
//! closed window is never dropped in silence: a rate-limited WARN, a counter, and a copy in the
//! late-trades topic. If a cycle
//! is aborted, every partition is restored and rewound to its last commit, so the cycle repeats
//! with identical output. A log that cannot be read (broker down) is waited out, not-ready
//! meanwhile; only a failure that needs a person (configuration, credentials) stops the loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use domain::{Aggregator, AggregatorConfig, Ingested, Trade, WatermarkRule};
use ports::{
    AggregateCommitter, Clock, CommitBatch, CommitError, LateTrade, LogError, LogEvent,
    LoggedProgress, Partition, PartitionMarker, TraceContext, TradeLog,
};
use tracing::{Instrument, debug, info, info_span, warn};

/// Trace contexts linked from one commit span, at most.
pub const MAX_LINKS: usize = 32;

/// Late trades held for one cycle, at most: reaching it commits a cycle at once, so a flood of
/// late trades cannot grow memory.
pub const MAX_LATE_PER_CYCLE: usize = 10_000;

/// At most one late-trade WARN per this many milliseconds; the rest are counted in the next one.
const LATE_WARN_EVERY_MS: i64 = 5_000;

/// A marker whose completeness time is further ahead of the wall clock than this is not
/// believed (counted, WARN): one hostile or broken marker must not close every window to come.
pub const MAX_MARKER_AHEAD_MS: i64 = 120_000;

/// Under the trades rule, a trade stamped further ahead of app-agg's clock than this is not
/// aggregated but handled as late (copied to the late topic, counted, WARN): it would move the
/// watermark past every window to come. The rule already follows the wall clock when caught
/// up; the markers rule needs no such check, as trades never move its watermark.
pub const MAX_TRADE_AHEAD_MS: i64 = 120_000;

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

/// A reading of the service's counters ([`ServiceMetrics`] is where each event is counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Commit cycles completed.
    pub cycles: u64,
    /// Aggregates committed.
    pub aggregates: u64,
    /// Trades folded in, duplicates and late ones included.
    pub trades: u64,
    /// Cycles aborted and repeated.
    pub aborted: u64,
}

/// Live counters of the service, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Trades folded in.
    pub trades: AtomicU64,
    /// Trades dropped as duplicates (`trade_seq` already seen).
    pub duplicates: AtomicU64,
    /// Trades dropped because their window had closed.
    pub late: AtomicU64,
    /// Aggregates committed.
    pub windows_emitted: AtomicU64,
    /// Commit cycles completed.
    pub cycles: AtomicU64,
    /// Commit cycles aborted and repeated.
    pub aborted: AtomicU64,
    /// Duration of the last commit cycle, µs.
    pub last_cycle_us: AtomicU64,
    /// Set once the assigned partitions are restored.
    pub ready: AtomicBool,
    /// Set while the log cannot be read (broker down or unreachable); not ready meanwhile.
    pub log_unreachable: AtomicBool,
    /// Times the log became unreachable.
    pub log_outages: AtomicU64,
    /// Progress markers read.
    pub progress_markers: AtomicU64,
    /// Progress markers ignored because their time was implausibly far ahead.
    pub implausible_markers: AtomicU64,
    /// Per assigned partition: watermark and when its last marker came (refreshed each cycle).
    pub partitions: Mutex<BTreeMap<Partition, PartitionHealth>>,
}

/// How far one partition's watermark is, for readiness and the lag gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionHealth {
    /// The partition's watermark, ms.
    pub watermark: Option<i64>,
    /// Wall time its watermark last advanced (or of its assignment, before that), ms.
    pub last_advance_ms: i64,
}

impl ServiceMetrics {
    /// The counters as they are now.
    pub fn stats(&self) -> ServiceStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServiceStats {
            cycles: get(&self.cycles),
            aggregates: get(&self.windows_emitted),
            trades: get(&self.trades) + get(&self.duplicates) + get(&self.late),
            aborted: get(&self.aborted),
        }
    }

    /// The watermark and marker age of every assigned partition.
    pub fn partition_health(&self) -> BTreeMap<Partition, PartitionHealth> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Partitions whose last progress marker is older than `timeout` at `now_ms`, with its age
    /// in ms (as of the last cycle's report).
    pub fn silent_partitions(&self, now_ms: i64, timeout: Duration) -> Vec<(Partition, i64)> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self.partition_health()
            .into_iter()
            .map(|(p, h)| (p, now_ms.saturating_sub(h.last_advance_ms)))
            .filter(|&(_, age)| age > timeout_ms)
            .collect()
    }
}

struct PartitionState {
    aggregator: Aggregator,
    /// Next offset to read, as of the last trade folded in.
    next_offset: Option<i64>,
    /// `next_offset` as of the last committed marker.
    committed_offset: Option<i64>,
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
    late: Vec<LateTrade>,
    /// Wall time of the last late-trade WARN, and late trades since then.
    late_warned_ms: i64,
    late_unwarned: u64,
    /// Wall time of the last WARN about an implausible marker.
    ahead_warned_ms: i64,
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
            late: Vec::new(),
            late_warned_ms: i64::MIN,
            late_unwarned: 0,
            ahead_warned_ms: i64::MIN,
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
                for partition in partitions {
                    self.restore(partition).await?;
                }
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
                self.warn_late(late_before);
                if self.late.len() >= MAX_LATE_PER_CYCLE {
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
        state.next_offset = Some(progress.offset + 1);
        if progress.completeness_ms > now.saturating_add(MAX_MARKER_AHEAD_MS) {
            self.metrics
                .implausible_markers
                .fetch_add(1, Ordering::Relaxed);
            if now.saturating_sub(self.ahead_warned_ms) >= LATE_WARN_EVERY_MS {
                self.ahead_warned_ms = now;
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

    /// Counts the late trades from `self.late[first..]`; one WARN per [`LATE_WARN_EVERY_MS`]
    /// names the first of them and how many came since the last WARN. Every late trade is
    /// counted and copied regardless.
    fn warn_late(&mut self, first: usize) {
        let Some(newest) = self.late.get(first) else {
            return;
        };
        self.late_unwarned += (self.late.len() - first) as u64;
        let now = self.clock.now_ms();
        if now.saturating_sub(self.late_warned_ms) < LATE_WARN_EVERY_MS {
            return;
        }
        warn!(
            instrument = %newest.trade.instrument_name,
            trade_seq = newest.trade.trade_seq,
            partition = newest.partition,
            offset = newest.offset,
            reason = %newest.reason,
            late_since_last_warning = self.late_unwarned,
            "Trade arrived after its window closed: not aggregated, copied to the late-trades topic (recompute with `app-agg replay`)."
        );
        self.late_warned_ms = now;
        self.late_unwarned = 0;
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
        *self
            .metrics
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = health;
    }

    async fn restore(&mut self, partition: Partition) -> Result<(), ServiceError> {
        let restored = self.committer.restore(partition).await?;
        let aggregator =
            Aggregator::restore(self.config.clone(), restored.snapshot).map_err(|e| {
                ServiceError::Restore {
                    partition,
                    reason: e.to_string(),
                }
            })?;
        if let Some(offset) = restored.next_offset
            && let Err(e) = self.log.seek(partition, offset)
        {
            // Reading from an earlier offset only replays duplicates, dropped by trade_seq.
            warn!(partition, offset, error = %e, "Seek after restore failed; replaying from the group offset.");
        }
        info!(partition, instruments = aggregator.instrument_count(), next_offset = ?restored.next_offset, "Partition restored.");
        // A rewind (aborted cycle) keeps how long the watermark has been still.
        let last_advance_ms = self
            .partitions
            .get(&partition)
            .map_or_else(|| self.clock.now_ms(), |s| s.last_advance_ms);
        self.partitions.insert(
            partition,
            PartitionState {
                aggregator,
                next_offset: restored.next_offset,
                committed_offset: restored.next_offset,
                last_advance_ms,
            },
        );
        self.publish_health();
        Ok(())
    }

    /// Commits closed windows, changed states and progress of `only` (or all) partitions.
    ///
    /// # Errors
    /// As [`Service::run`].
    pub async fn cycle(&mut self, only: Option<&[Partition]>) -> Result<(), ServiceError> {
        let now = self.clock.now_ms();
        self.publish_health();
        let mut batch = CommitBatch::default();
        let (late, kept): (Vec<LateTrade>, Vec<LateTrade>) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|l| only.is_none_or(|o| o.contains(&l.partition)));
        self.late = kept;
        batch.late = late;
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
                for partition in partitions {
                    self.restore(partition).await?;
                }
                Ok(())
            }
            Err(fatal) => Err(ServiceError::Commit(fatal)),
        }
    }
}

/// Why `trade` is not believed, if it is stamped more than [`MAX_TRADE_AHEAD_MS`] after `now`.
fn stamped_ahead(trade: &Trade, now: i64) -> Option<String> {
    let ahead = trade.timestamp.saturating_sub(now);
    (ahead > MAX_TRADE_AHEAD_MS).then(|| {
        format!(
            "timestamp {} is {ahead} ms ahead of this host's clock ({now}): more than {MAX_TRADE_AHEAD_MS} ms, not aggregated",
            trade.timestamp
        )
    })
}

/// Why `trade` is late on `aggregator`: its window and the watermark that closed it.
fn late_reason(aggregator: &Aggregator, trade: &Trade) -> String {
    let config = aggregator.config();
    let start = config.window().start_of(trade.timestamp);
    let end = config.window().end_of_window_starting(start);
    let rule = match config.rule() {
        WatermarkRule::Markers => "progress markers",
        WatermarkRule::TradeTime { .. } => "trade time",
    };
    format!(
        "window [{start}, {end}) closed: watermark {} ({rule}) >= end + grace {} ms",
        aggregator.watermark().unwrap_or(i64::MIN),
        config.grace_ms()
    )
}
