//! The service loop: trades from the feed into the sink until shutdown, nothing lost or doubled;
//! and the feed's completeness as progress markers behind them.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ports::{FeedError, FeedEvent, SinkError, TradeBatch, TradeFeed, TradeSink};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Why the loop stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The feed cannot go on (bad credentials, bad configuration).
    #[error("deribit feed: {0}")]
    Feed(#[from] FeedError),
    /// Publishing failed in a way retrying cannot fix.
    #[error("kafka sink: {0}")]
    Sink(#[from] SinkError),
}

/// Live counters of the loop, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct RunCounters {
    /// Batches published.
    pub batches: AtomicU64,
    /// Trades published (acknowledged by Kafka).
    pub trades: AtomicU64,
    /// Publish attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Progress markers written (one per partition each).
    pub progress_markers: AtomicU64,
    /// Gauge: completeness time of the last marker written, ms (0 before the first).
    pub marked_to_ms: AtomicI64,
}

/// A reading of [`RunCounters`], where each event is counted (since they were created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Batches published.
    pub batches: u64,
    /// Trades published.
    pub trades: u64,
    /// Publish attempts that failed and were retried.
    pub retries: u64,
}

impl RunCounters {
    /// The counters as they are now.
    pub fn stats(&self) -> RunStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RunStats {
            batches: get(&self.batches),
            trades: get(&self.trades),
            retries: get(&self.retries),
        }
    }
}

/// Trades gathered into one publish, at most. Waiting for the broker's acknowledgement once per
/// notification would cap throughput at one batch per round trip (≈ 18 k trades/s measured);
/// publishing whatever the feed has ready as one group amortises it.
pub const MAX_TRADES_PER_PUBLISH: usize = 20_000;

/// Progress the feed reported and the markers written for it.
#[derive(Debug)]
struct Progress {
    /// At most one marker write per this.
    interval: Duration,
    /// The feed's latest completeness time: every trade up to it has been handed to the sink
    /// once the group being published is acknowledged.
    reported: Option<i64>,
    /// Completeness time of the last marker written.
    written: Option<i64>,
    last_write: Option<Instant>,
}

impl Progress {
    fn report(&mut self, complete_to: i64) {
        self.reported = self.reported.max(Some(complete_to));
    }

    /// When a marker should be written next, if one is owed.
    fn due_at(&self) -> Option<Instant> {
        if self.reported <= self.written {
            return None;
        }
        Some(
            self.last_write
                .map_or_else(Instant::now, |t| t + self.interval),
        )
    }

    /// Writes a marker if one is owed and the interval has passed. Only a fatal sink error is
    /// returned: a marker that failed is owed still, and the next one supersedes it.
    async fn write_if_due<S: TradeSink>(
        &mut self,
        sink: &S,
        counters: &RunCounters,
    ) -> Result<(), SinkError> {
        let (Some(due), Some(complete_to)) = (self.due_at(), self.reported) else {
            return Ok(());
        };
        if due > Instant::now() {
            return Ok(());
        }
        self.last_write = Some(Instant::now());
        match sink.publish_progress(complete_to).await {
            Ok(()) => {
                self.written = Some(complete_to);
                counters.progress_markers.fetch_add(1, Ordering::Relaxed);
                counters.marked_to_ms.store(complete_to, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.is_retryable() => {
                debug!(error = %e, "Progress marker not written; the next one will be.");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Publishes every batch of `feed` to `sink` until `shutdown` resolves or the feed ends, then
/// flushes. Batches that are ready together go out as one group (in order), so the broker round
/// trip is paid per group, not per notification. A group that fails in a retryable way is
/// retried with backoff; before each retry the sink's positions are read back so trades that did
/// land are not sent twice (while they cannot be read, nothing is re-sent).
///
/// The feed's progress becomes a marker on every partition once every trade before it is
/// acknowledged, at most once per `progress_interval`, and only when it advanced.
///
/// # Errors
/// [`RunError`] when the feed or the sink fails for good.
pub async fn run<F: TradeFeed, S: TradeSink>(
    feed: &mut F,
    sink: &S,
    shutdown: impl Future<Output = ()>,
    counters: &RunCounters,
    progress_interval: Duration,
) -> Result<RunStats, RunError> {
    tokio::pin!(shutdown);
    let mut progress = Progress {
        interval: progress_interval,
        reported: None,
        written: None,
        last_write: None,
    };
    loop {
        let due = progress.due_at();
        let first = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = sleep_until_some(due) => {
                progress.write_if_due(sink, counters).await?;
                continue;
            }
            next = feed.next_event() => match next? {
                Some(FeedEvent::Trades(batch)) => batch,
                Some(FeedEvent::Progress(complete_to)) => {
                    // Every trade before it is published and acknowledged already.
                    progress.report(complete_to);
                    progress.write_if_due(sink, counters).await?;
                    continue;
                }
                None => break,
            },
        };
        let (mut pending, reported, feed_failed) = gather(feed, first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let count: u64 = pending.iter().map(|b| b.trades.len() as u64).sum();
            let batches = pending.len() as u64;
            match sink.publish_all(pending.clone()).await {
                Ok(()) => {
                    counters.batches.fetch_add(batches, Ordering::Relaxed);
                    counters.trades.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, trades = count, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "Publishing failed; retrying.");
                    // Re-send only what the topic lacks; until its tail can be read, wait:
                    // re-sending blindly could double trades that did land.
                    pending = loop {
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut shutdown => return Err(RunError::Sink(e)),
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        match unpublished(sink, &pending).await {
                            Ok(rest) => break rest,
                            Err(read) => {
                                warn!(error = %read, "Cannot read the topic's tail back; waiting before re-sending.");
                            }
                        }
                    };
                }
                Err(e) => return Err(RunError::Sink(e)),
            }
        }
        if let Some(complete_to) = reported {
            // The group that went before it is acknowledged now.
            progress.report(complete_to);
        }
        progress.write_if_due(sink, counters).await?;
        if let Some(e) = feed_failed {
            return Err(RunError::Feed(e));
        }
    }
    let stats = counters.stats();
    info!(
        batches = stats.batches,
        trades = stats.trades,
        "Stopping: flushing the producer."
    );
    sink.flush().await?;
    // The last word on completeness, so readers can close what the stream finished.
    progress.last_write = None;
    progress.write_if_due(sink, counters).await?;
    Ok(stats)
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `first` plus the batches the feed already has, up to [`MAX_TRADES_PER_PUBLISH`] trades; the
/// latest progress among them (true once the group is acknowledged: every trade before it is in
/// the group or was published earlier); and the feed's error if it failed meanwhile (raised
/// once the group is published).
fn gather<F: TradeFeed>(
    feed: &mut F,
    first: TradeBatch,
) -> (Vec<TradeBatch>, Option<i64>, Option<FeedError>) {
    let mut trades = first.trades.len();
    let mut group = vec![first];
    let mut reported = None;
    while trades < MAX_TRADES_PER_PUBLISH {
        // `next_event` is cancel-safe (the port says so): polling it once takes nothing it
        // does not return.
        match feed.next_event().now_or_never() {
            Some(Ok(Some(FeedEvent::Trades(batch)))) => {
                trades += batch.trades.len();
                group.push(batch);
            }
            Some(Ok(Some(FeedEvent::Progress(complete_to)))) => {
                reported = reported.max(Some(complete_to));
            }
            // Nothing ready, or the end: publish what we have; the outer loop sees the rest.
            None | Some(Ok(None)) => break,
            Some(Err(e)) => return (group, reported, Some(e)),
        }
    }
    (group, reported, None)
}

/// The part of `group` the sink does not have yet, by the positions read back from it.
async fn unpublished<S: TradeSink>(
    sink: &S,
    group: &[TradeBatch],
) -> Result<Vec<TradeBatch>, SinkError> {
    let positions = sink.last_positions().await?;
    let mut rest = group.to_vec();
    for batch in &mut rest {
        batch.trades.retain(|t| {
            positions
                .get(&t.instrument_name)
                .is_none_or(|p| t.trade_seq > p.trade_seq)
        });
    }
    rest.retain(|b| !b.trades.is_empty());
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use domain::TradeFields;
    use ports::{Position, StartPositions};

    use super::*;

    /// Events in order; `None` is a pause (nothing ready for a moment), as between two
    /// notifications.
    struct ScriptedFeed(VecDeque<Option<FeedEvent>>);

    impl ScriptedFeed {
        fn trades(batches: VecDeque<TradeBatch>) -> Self {
            ScriptedFeed(
                batches
                    .into_iter()
                    .map(FeedEvent::Trades)
                    .map(Some)
                    .collect(),
            )
        }
    }

    impl TradeFeed for ScriptedFeed {
        async fn next_event(&mut self) -> Result<Option<FeedEvent>, FeedError> {
            loop {
                match self.0.pop_front() {
                    Some(Some(event)) => return Ok(Some(event)),
                    Some(None) => {
                        // Cancel-safe: a dropped call has taken only the pause.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    None => return Ok(None),
                }
            }
        }
    }

    /// A topic in memory that, like a gapless idempotent producer, fails every publish from the
    /// injected failure on until someone reads its positions back; a failing publish may have
    /// landed a prefix of its trades.
    #[derive(Default)]
    struct FlakySink {
        topic: Mutex<Vec<(String, u64)>>,
        publishes: AtomicU64,
        fail_at: Vec<u64>,
        broken: AtomicBool,
        /// Position reads that fail before one succeeds (a broker still down).
        unreadable_positions: AtomicU64,
        /// Everything that landed, in order: trades as (instrument, seq), markers as ("", ms).
        log: Mutex<Vec<(String, i64)>>,
    }

    impl TradeSink for FlakySink {
        async fn publish(&self, batch: TradeBatch) -> Result<(), SinkError> {
            let n = self.publishes.fetch_add(1, Ordering::SeqCst);
            // Overlap: later publishes may start before earlier ones finish.
            tokio::time::sleep(Duration::from_micros(50 * (n % 7))).await;
            if self.fail_at.contains(&n) {
                let landed = batch.trades.len() / 2;
                let mut topic = self.topic.lock().unwrap();
                topic.extend(
                    batch.trades[..landed]
                        .iter()
                        .map(|t| (t.instrument_name.clone(), t.trade_seq)),
                );
                self.log.lock().unwrap().extend(
                    batch.trades[..landed]
                        .iter()
                        .map(|t| (t.instrument_name.clone(), t.timestamp)),
                );
                self.broken.store(true, Ordering::SeqCst);
                return Err(SinkError::Retryable(format!("injected at publish {n}")));
            }
            if self.broken.load(Ordering::SeqCst) {
                return Err(SinkError::Retryable("producer failed earlier".to_owned()));
            }
            let mut topic = self.topic.lock().unwrap();
            topic.extend(
                batch
                    .trades
                    .iter()
                    .map(|t| (t.instrument_name.clone(), t.trade_seq)),
            );
            self.log.lock().unwrap().extend(
                batch
                    .trades
                    .iter()
                    .map(|t| (t.instrument_name.clone(), t.timestamp)),
            );
            Ok(())
        }

        async fn publish_progress(&self, complete_to: i64) -> Result<(), SinkError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(SinkError::Retryable("producer failed earlier".to_owned()));
            }
            self.log.lock().unwrap().push((String::new(), complete_to));
            Ok(())
        }

        async fn flush(&self) -> Result<(), SinkError> {
            Ok(())
        }

        async fn last_positions(&self) -> Result<StartPositions, SinkError> {
            let unreadable = self.unreadable_positions.load(Ordering::SeqCst);
            if unreadable > 0 {
                self.unreadable_positions
                    .store(unreadable - 1, Ordering::SeqCst);
                // Like a replaced producer, the sink takes writes again: a blind re-send lands.
                self.broken.store(false, Ordering::SeqCst);
                return Err(SinkError::Retryable("tail unreadable".to_owned()));
            }
            self.broken.store(false, Ordering::SeqCst);
            let mut positions = StartPositions::new();
            for (instrument, seq) in self.topic.lock().unwrap().iter() {
                positions.insert(
                    instrument.clone(),
                    Position {
                        trade_seq: *seq,
                        timestamp: 0,
                    },
                );
            }
            Ok(positions)
        }
    }

    fn batches() -> VecDeque<TradeBatch> {
        let mut seq = [0u64; 3];
        (0..200)
            .map(|b| TradeBatch {
                trades: (0..5)
                    .map(|k| {
                        let i = (b + k) % 3;
                        seq[i] += 1;
                        domain::testing::validated(TradeFields {
                            trade_id: format!("{b}-{k}"),
                            ..domain::testing::fields(["A", "B", "C"][i], seq[i], 1, 1.0, 1.0)
                        })
                    })
                    .collect(),
                trace: None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_publishing_with_failures_lands_every_trade_once_in_order() {
        let input = batches();
        let mut want: Vec<(String, u64)> = input
            .iter()
            .flat_map(|b| {
                b.trades
                    .iter()
                    .map(|t| (t.instrument_name.clone(), t.trade_seq))
            })
            .collect();
        let sink = FlakySink {
            fail_at: vec![3, 40, 41, 120],
            // Re-sending before the tail can be read would double the half that landed.
            unreadable_positions: AtomicU64::new(2),
            ..FlakySink::default()
        };
        let counters = RunCounters::default();
        let stats = run(
            &mut ScriptedFeed::trades(input),
            &sink,
            std::future::pending(),
            &counters,
            Duration::ZERO,
        )
        .await
        .unwrap();
        let topic = sink.topic.lock().unwrap().clone();
        for instrument in ["A", "B", "C"] {
            let got: Vec<u64> = topic
                .iter()
                .filter(|(i, _)| i == instrument)
                .map(|(_, s)| *s)
                .collect();
            let expected: Vec<u64> = want
                .iter()
                .filter(|(i, _)| i == instrument)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(got, expected, "{instrument}: once each, in order");
        }
        want.sort();
        let mut all = topic;
        all.sort();
        assert_eq!(all, want);
        assert!(stats.retries >= 3, "{stats:?}");
    }

    fn batch_at(instrument: &str, seq: u64, timestamp: i64) -> FeedEvent {
        FeedEvent::Trades(TradeBatch {
            trades: vec![domain::testing::trade(instrument, seq, timestamp, 1.0, 1.0)],
            trace: None,
        })
    }

    async fn landed(events: Vec<Option<FeedEvent>>, interval: Duration) -> Vec<(String, i64)> {
        let sink = FlakySink::default();
        let counters = RunCounters::default();
        run(
            &mut ScriptedFeed(events.into()),
            &sink,
            std::future::pending(),
            &counters,
            interval,
        )
        .await
        .unwrap();
        sink.log.into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_marker_follows_the_trades_before_it_and_only_when_progress_advanced() {
        let events = vec![
            Some(batch_at("A", 1, 5)),
            None,
            Some(FeedEvent::Progress(10)),
            None,
            Some(batch_at("B", 1, 12)),
            Some(batch_at("A", 2, 18)),
            None,
            Some(FeedEvent::Progress(20)),
            None,
            Some(FeedEvent::Progress(20)),
            None,
            Some(FeedEvent::Progress(15)),
            None,
            Some(batch_at("A", 3, 25)),
        ];
        let marker = |ms| (String::new(), ms);
        assert_eq!(
            landed(events, Duration::ZERO).await,
            vec![
                ("A".into(), 5),
                marker(10),
                ("B".into(), 12),
                ("A".into(), 18),
                marker(20),
                ("A".into(), 25),
            ]
        );
    }

    #[tokio::test]
    async fn markers_are_paced_by_the_interval_and_the_last_is_written_at_the_end() {
        let events = vec![
            Some(batch_at("A", 1, 5)),
            None,
            Some(FeedEvent::Progress(10)),
            None,
            Some(FeedEvent::Progress(20)),
            None,
            Some(batch_at("A", 2, 25)),
            None,
            Some(FeedEvent::Progress(30)),
        ];
        let marker = |ms| (String::new(), ms);
        assert_eq!(
            landed(events, Duration::from_secs(3600)).await,
            vec![("A".into(), 5), marker(10), ("A".into(), 25), marker(30)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_failures_and_retries_no_marker_lands_before_a_trade_it_covers() {
        let mut events = Vec::new();
        let mut seq = [0u64; 3];
        for b in 0..60i64 {
            for k in 0..5 {
                let i = usize::try_from((b + k) % 3).unwrap();
                seq[i] += 1;
                events.push(Some(batch_at(
                    ["A", "B", "C"][i],
                    seq[i],
                    1_000 + b * 10 + k,
                )));
            }
            events.push(Some(FeedEvent::Progress(1_000 + b * 10 + 4)));
            if b % 4 == 0 {
                events.push(None);
            }
        }
        let sink = FlakySink {
            fail_at: vec![3, 10, 11, 40],
            ..FlakySink::default()
        };
        let counters = RunCounters::default();
        run(
            &mut ScriptedFeed(events.into()),
            &sink,
            std::future::pending(),
            &counters,
            Duration::ZERO,
        )
        .await
        .unwrap();
        let log = sink.log.into_inner().unwrap();
        let markers: Vec<(usize, i64)> = log
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| i.is_empty())
            .map(|(at, (_, c))| (at, *c))
            .collect();
        assert!(markers.len() >= 5, "{markers:?}");
        assert_eq!(markers.last().map(|m| m.1), Some(1_000 + 59 * 10 + 4));
        // Every trade a marker covers landed before it (possibly twice: a retried half).
        for &(at, c) in &markers {
            let before: std::collections::BTreeSet<i64> = log[..at]
                .iter()
                .filter(|(i, _)| !i.is_empty())
                .map(|(_, ts)| *ts)
                .collect();
            for ts in (0..60i64).flat_map(|b| (0..5).map(move |k| 1_000 + b * 10 + k)) {
                assert!(
                    ts > c || before.contains(&ts),
                    "trade at {ts} after marker {c}"
                );
            }
        }
    }
}
