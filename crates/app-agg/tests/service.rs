//! The service loop over in-memory ports: killed at many points and restarted on the same
//! durable store, it produces exactly the uninterrupted output; windows close on progress
//! markers, and a late trade is counted and handed to the committer, never dropped.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)] // test helpers

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use app_agg::service::Service;
use domain::{
    Aggregate, AggregatorConfig, Direction, InstrumentSnapshot, PartitionSnapshot, Trade,
    TradeFields, WatermarkRule, WindowSize, WriterProgress, testing,
};
use ports::{
    AggregateCommitter, Clock, CommitBatch, CommitError, LateTrade, LogError, LogEvent,
    LoggedProgress, LoggedTrade, Partition, RestoredPartition, TradeLog,
};

/// What survives a crash: the aggregates topic, the changelog, the markers.
#[derive(Default)]
struct Store {
    aggregates: Vec<Aggregate>,
    changelog: BTreeMap<Partition, BTreeMap<String, InstrumentSnapshot>>,
    markers: BTreeMap<Partition, (i64, Option<i64>, Vec<WriterProgress>)>,
    late: Vec<LateTrade>,
    /// Commits with something in them to refuse (as an aborted transaction), before any lands.
    abort_next: usize,
}

#[derive(Clone)]
struct FakeCommitter(Arc<Mutex<Store>>);

impl AggregateCommitter for FakeCommitter {
    async fn commit(&mut self, batch: CommitBatch) -> Result<(), CommitError> {
        let mut store = self.0.lock().unwrap();
        if store.abort_next > 0 && !(batch.aggregates.is_empty() && batch.states.is_empty()) {
            store.abort_next -= 1;
            return Err(CommitError::Aborted("transaction aborted".into()));
        }
        store.aggregates.extend(batch.aggregates);
        store.late.extend(batch.late);
        for (p, s) in batch.states {
            store
                .changelog
                .entry(p)
                .or_default()
                .insert(s.instrument_name.clone(), s);
        }
        for m in batch.markers {
            store
                .markers
                .insert(m.partition, (m.next_offset, m.watermark, m.writers));
        }
        Ok(())
    }

    async fn restore(
        &mut self,
        partitions: &[Partition],
    ) -> Result<BTreeMap<Partition, RestoredPartition>, CommitError> {
        let store = self.0.lock().unwrap();
        let restored = |partition| {
            let instruments = store
                .changelog
                .get(&partition)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let marker = store.markers.get(&partition).cloned();
            RestoredPartition {
                next_offset: marker.as_ref().map(|m| m.0),
                snapshot: PartitionSnapshot {
                    watermark: marker.as_ref().and_then(|m| m.1),
                    writers: marker.map(|m| m.2).unwrap_or_default(),
                    instruments,
                },
            }
        };
        Ok(partitions.iter().map(|&p| (p, restored(p))).collect())
    }
}

/// A record of the raw topic: a trade, or a progress marker with its completeness time.
#[derive(Clone)]
enum Record {
    Trade(Trade),
    Marker(i64),
}

/// Two partitions of fixed records; serves small batches alternately, a marker on its own (as
/// the Kafka log does); honours seek.
struct FakeLog {
    partitions: BTreeMap<Partition, Vec<Record>>,
    cursors: BTreeMap<Partition, usize>,
    assigned: bool,
    turn: usize,
    /// Retryable errors queued after the assignment, as librdkafka queues outage errors.
    outage_errors: usize,
}

impl FakeLog {
    fn new(partitions: BTreeMap<Partition, Vec<Record>>) -> Self {
        let cursors = partitions.keys().map(|p| (*p, 0)).collect();
        FakeLog {
            partitions,
            cursors,
            assigned: false,
            turn: 0,
            outage_errors: 0,
        }
    }

    fn exhausted(&self) -> bool {
        self.partitions
            .iter()
            .all(|(p, t)| self.cursors[p] >= t.len())
    }
}

impl TradeLog for FakeLog {
    async fn next_event(&mut self) -> Result<LogEvent, LogError> {
        if !self.assigned {
            self.assigned = true;
            return Ok(LogEvent::Assigned(
                self.partitions.keys().copied().collect(),
            ));
        }
        if self.outage_errors > 0 {
            self.outage_errors -= 1;
            return Err(LogError::Retryable("AllBrokersDown".to_owned()));
        }
        let keys: Vec<Partition> = self.partitions.keys().copied().collect();
        for i in 0..keys.len() {
            let p = keys[(self.turn + i) % keys.len()];
            let cursor = self.cursors[&p];
            let records = &self.partitions[&p];
            if cursor < records.len() {
                self.turn += 1;
                if let Record::Marker(complete_to) = records[cursor] {
                    self.cursors.insert(p, cursor + 1);
                    return Ok(LogEvent::Progress(LoggedProgress {
                        partition: p,
                        offset: cursor as i64,
                        writer: "app-raw".into(),
                        completeness_ms: complete_to,
                    }));
                }
                let mut batch = Vec::new();
                for (o, record) in records.iter().enumerate().skip(cursor).take(7) {
                    let Record::Trade(trade) = record else { break };
                    batch.push(LoggedTrade {
                        partition: p,
                        offset: o as i64,
                        trade: trade.clone(),
                        trace: None,
                    });
                }
                self.cursors.insert(p, cursor + batch.len());
                return Ok(LogEvent::Trades(batch));
            }
        }
        std::future::pending().await
    }

    fn caught_up(&self, partition: Partition) -> bool {
        // A partition this log does not hold has nothing left to read.
        self.partitions
            .get(&partition)
            .is_none_or(|t| self.cursors.get(&partition).is_some_and(|&c| c >= t.len()))
    }

    fn seek(&mut self, partition: Partition, offset: i64) -> Result<(), LogError> {
        self.cursors.insert(partition, offset as usize);
        Ok(())
    }
}

struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

const T0: i64 = 1_699_999_980_000;

fn trade(instrument: &str, seq: u64, ts: i64) -> Trade {
    Trade::new(TradeFields {
        direction: if seq.is_multiple_of(3) {
            Direction::Sell
        } else {
            Direction::Buy
        },
        ..testing::fields(
            instrument,
            seq,
            ts,
            100.0 + (seq % 17) as f64,
            1.0 + (seq % 5) as f64,
        )
    })
    .unwrap()
}

/// Trades in time order with a marker at the last one's time every `every` trades, and a final
/// marker an hour later (app-raw's last word once the market is over).
fn with_markers(trades: &[Trade], every: usize) -> Vec<Record> {
    let mut records = Vec::new();
    for chunk in trades.chunks(every) {
        records.extend(chunk.iter().cloned().map(Record::Trade));
        records.push(Record::Marker(chunk[chunk.len() - 1].timestamp));
    }
    let last = trades.last().map_or(T0, |t| t.timestamp);
    records.push(Record::Marker(last + 3_600_000));
    records
}

/// The wall clock of the crash runs: after the whole market, so every marker is plausible.
const LATER: i64 = T0 + 2 * 3_600_000;

fn market() -> BTreeMap<Partition, Vec<Record>> {
    let mut partitions = BTreeMap::new();
    partitions.insert(
        0,
        with_markers(
            &(1..=150)
                .flat_map(|s| {
                    [
                        trade("BTC-PERPETUAL", s, T0 + s as i64 * 2_300),
                        trade("SOL_USDC", s, T0 + s as i64 * 2_300 + 1),
                    ]
                })
                .collect::<Vec<_>>(),
            10,
        ),
    );
    partitions.insert(
        1,
        with_markers(
            &(1..=200)
                .map(|s| trade("ETH-PERPETUAL", s, T0 + s as i64 * 1_700))
                .collect::<Vec<_>>(),
            13,
        ),
    );
    partitions
}

fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(60_000).unwrap(),
        500,
        WatermarkRule::Markers,
        vec![10_000, 120_000],
    )
    .unwrap()
}

/// Drives a service for `steps` log events (cycling every 3), or to the end if `None`; the
/// service is then dropped without a final cycle, as a crash would.
async fn drive(store: &Arc<Mutex<Store>>, steps: Option<usize>, finish: bool) {
    let mut log = FakeLog::new(market());
    let mut service = Service::new(
        FakeLog::new(BTreeMap::new()),
        FakeCommitter(Arc::clone(store)),
        FixedClock(LATER),
        config(),
    );
    // The service owns its log; feed it events from ours so we can stop at any step.
    let mut step = 0;
    while steps.is_none_or(|s| step < s) && !(log.exhausted() && log.assigned) {
        let event = log.next_event().await.unwrap();
        if let LogEvent::Assigned(partitions) = &event {
            // Restore, then honour the restored positions on our log.
            service
                .on_event(LogEvent::Assigned(partitions.clone()))
                .await
                .unwrap();
            let restored = store.lock().unwrap().markers.clone();
            for (p, (offset, _, _)) in restored {
                log.seek(p, offset).unwrap();
            }
        } else {
            service.on_event(event).await.unwrap();
        }
        step += 1;
        if step.is_multiple_of(3) {
            service.cycle(None).await.unwrap();
        }
    }
    if finish {
        service.cycle(None).await.unwrap();
    }
}

fn union(store: &Store) -> (Vec<Aggregate>, usize) {
    let mut seen: BTreeMap<(String, i64), Aggregate> = BTreeMap::new();
    let mut duplicates = 0;
    for a in &store.aggregates {
        if let Some(earlier) = seen.get(&(a.instrument_name.clone(), a.window_start)) {
            assert_eq!(earlier, a, "a repeated aggregate is identical");
            duplicates += 1;
        } else {
            seen.insert((a.instrument_name.clone(), a.window_start), a.clone());
        }
    }
    (seen.into_values().collect(), duplicates)
}

#[tokio::test]
async fn killed_at_any_point_and_restarted_it_produces_the_uninterrupted_output() {
    let reference = Arc::new(Mutex::new(Store::default()));
    drive(&reference, None, true).await;
    let (expected, duplicates) = union(&reference.lock().unwrap());
    assert_eq!(duplicates, 0);
    assert!(expected.len() > 10);
    // The final markers closed the tail; no trade was late.
    assert_eq!(expected.iter().map(|a| a.trade_count).sum::<u64>(), 500);
    assert!(reference.lock().unwrap().late.is_empty());

    for kill_at in [1, 2, 4, 5, 7, 10, 13, 17, 22, 31, 40] {
        let store = Arc::new(Mutex::new(Store::default()));
        drive(&store, Some(kill_at), false).await; // killed
        drive(&store, Some(kill_at / 2 + 3), false).await; // killed again while catching up
        drive(&store, None, true).await; // runs to the end
        let (got, _) = union(&store.lock().unwrap());
        assert_eq!(got, expected, "killed at step {kill_at}");
    }
}

/// A partition's first cycle aborts before it has a marker: the rewind reads it again from its
/// first record, and the output is the uninterrupted one (it used to carry on from where the
/// log was, so the trades read before the abort were never aggregated).
#[tokio::test]
async fn a_first_cycle_that_aborts_is_read_again_from_the_first_record() {
    let reference = Arc::new(Mutex::new(Store::default()));
    drive(&reference, None, true).await;
    let (expected, _) = union(&reference.lock().unwrap());

    let store = Arc::new(Mutex::new(Store {
        abort_next: 1,
        ..Store::default()
    }));
    let mut service = Service::new(
        FakeLog::new(market()),
        FakeCommitter(Arc::clone(&store)),
        FixedClock(LATER),
        config(),
    );
    let stats = service
        .run(
            std::time::Duration::from_millis(5),
            tokio::time::sleep(std::time::Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let store = store.lock().unwrap();
    assert_eq!(store.abort_next, 0, "the abort happened");
    let (got, _) = union(&store);
    assert_eq!(got, expected);
    assert!(stats.cycles > 0);
}

/// Outage errors queued in the log are read through at once: the service reaches the records
/// behind them and reports ready again (it used to pause 500 ms per error, which on Apache Kafka
/// kept it not ready long after the broker was back).
#[tokio::test]
async fn queued_outage_errors_are_read_through_without_pausing() {
    let store = Arc::new(Mutex::new(Store::default()));
    let mut log = FakeLog::new(market());
    log.outage_errors = 200;
    let mut service = Service::new(
        log,
        FakeCommitter(Arc::clone(&store)),
        FixedClock(T0 + 1_000_000),
        config(),
    );
    let metrics = service.metrics();
    let stop = tokio::time::sleep(std::time::Duration::from_secs(2));
    service
        .run(std::time::Duration::from_millis(50), stop)
        .await
        .unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        metrics.trades.load(Relaxed),
        500,
        "every trade behind the errors"
    );
    assert_eq!(
        metrics.log_outages.load(Relaxed),
        1,
        "one outage, reported once"
    );
    assert!(!metrics.log_unreachable.load(Relaxed), "reachable again");
}

/// One partition: A trades, then B's catch-up far ahead (as after a reconnect, one instrument
/// backfilled before the other), then A's older trades, then app-raw's marker.
fn reconnect_interleaving() -> BTreeMap<Partition, Vec<Record>> {
    let mut records: Vec<Record> = (1..=3)
        .map(|s| Record::Trade(trade("A", s, T0 + s as i64 * 1_000)))
        .collect();
    records.extend((1..=3).map(|s| Record::Trade(trade("B", s, T0 + 600_000 + s as i64))));
    records.extend((4..=6).map(|s| Record::Trade(trade("A", s, T0 + s as i64 * 1_000))));
    records.push(Record::Marker(T0 + 700_000));
    BTreeMap::from([(0, records)])
}

async fn run_to_end(
    records: BTreeMap<Partition, Vec<Record>>,
    config: AggregatorConfig,
    now: i64,
) -> (Arc<Mutex<Store>>, Arc<app_agg::service::ServiceMetrics>) {
    let store = Arc::new(Mutex::new(Store::default()));
    let mut log = FakeLog::new(records);
    let mut service = Service::new(
        FakeLog::new(BTreeMap::new()),
        FakeCommitter(Arc::clone(&store)),
        FixedClock(now),
        config,
    );
    while !(log.exhausted() && log.assigned) {
        let event = log.next_event().await.unwrap();
        service.on_event(event).await.unwrap();
        service.cycle(None).await.unwrap();
    }
    (store, service.metrics())
}

#[tokio::test]
async fn another_instruments_catch_up_closes_nothing_only_the_marker_does() {
    let (store, metrics) = run_to_end(reconnect_interleaving(), config(), T0 + 700_000).await;
    let store = store.lock().unwrap();
    assert!(store.late.is_empty(), "no trade of A is late");
    let a: Vec<&Aggregate> = store
        .aggregates
        .iter()
        .filter(|a| a.instrument_name == "A")
        .collect();
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].trade_count, a[0].last_trade_seq), (6, 6));
    assert_eq!(metrics.late.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_trade_for_a_closed_window_is_counted_and_handed_to_the_committer() {
    let mut records = reconnect_interleaving();
    let late = trade("A", 7, T0 + 7_000);
    records
        .get_mut(&0)
        .unwrap()
        .push(Record::Trade(late.clone()));
    let (store, metrics) = run_to_end(records, config(), T0 + 700_000).await;
    let store = store.lock().unwrap();
    assert_eq!(metrics.late.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(store.late.len(), 1);
    let copy = &store.late[0];
    assert_eq!((copy.partition, copy.offset), (0, 10));
    assert_eq!(copy.trade, late);
    assert!(
        copy.reason
            .contains(&format!("window [{T0}, {})", T0 + 60_000))
            && copy.reason.contains("progress markers"),
        "{}",
        copy.reason
    );
    let a: Vec<&Aggregate> = store
        .aggregates
        .iter()
        .filter(|a| a.instrument_name == "A")
        .collect();
    assert_eq!(a[0].trade_count, 6, "the closed window is not changed");
}

#[tokio::test]
async fn a_partition_without_markers_is_reported_silent_after_the_timeout() {
    let timeout = std::time::Duration::from_secs(30);
    let records = BTreeMap::from([(0, vec![Record::Trade(trade("A", 1, T0))])]);
    let (_, metrics) = run_to_end(records, config(), T0).await;
    assert!(metrics.silent_partitions(T0 + 30_000, timeout).is_empty());
    assert_eq!(
        metrics.silent_partitions(T0 + 30_001, timeout),
        vec![(0, 30_001)]
    );
    let (_, metrics) = run_to_end(reconnect_interleaving(), config(), T0 + 700_000).await;
    assert!(
        metrics.silent_partitions(T0 + 730_000, timeout).is_empty(),
        "a marker that advances the watermark restarts the clock"
    );
    assert_eq!(metrics.partition_health()[&0].watermark, Some(T0 + 700_000));
}

/// A clock the test moves.
#[derive(Clone)]
struct SharedClock(Arc<std::sync::atomic::AtomicI64>);

impl Clock for SharedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn marker(writer: &str, offset: i64, completeness_ms: i64) -> LogEvent {
    LogEvent::Progress(LoggedProgress {
        partition: 0,
        offset,
        writer: writer.into(),
        completeness_ms,
    })
}

async fn assigned_service(clock: &SharedClock) -> Service<FakeLog, FakeCommitter, SharedClock> {
    let mut service = Service::new(
        FakeLog::new(BTreeMap::new()),
        FakeCommitter(Arc::default()),
        clock.clone(),
        config(),
    );
    service.on_event(LogEvent::Assigned(vec![0])).await.unwrap();
    service
}

#[tokio::test]
async fn a_marker_far_ahead_of_the_clock_is_ignored_and_counted() {
    let clock = SharedClock(Arc::new(T0.into()));
    let mut service = assigned_service(&clock).await;
    let metrics = service.metrics();
    service
        .on_event(LogEvent::Trades(vec![LoggedTrade {
            partition: 0,
            offset: 0,
            trade: trade("A", 1, T0 - 30_000),
            trace: None,
        }]))
        .await
        .unwrap();
    service
        .on_event(marker("app-raw", 1, T0 + 3_600_000))
        .await
        .unwrap();
    service.cycle(None).await.unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(metrics.implausible_markers.load(Relaxed), 1);
    assert_eq!(metrics.partition_health()[&0].watermark, None);
    assert_eq!(metrics.windows_emitted.load(Relaxed), 0, "nothing closed");
    // A plausible one (its clock a little ahead of ours) is taken.
    service
        .on_event(marker("app-raw", 2, T0 + 60_000))
        .await
        .unwrap();
    service.cycle(None).await.unwrap();
    assert_eq!(metrics.partition_health()[&0].watermark, Some(T0 + 60_000));
    assert_eq!(metrics.windows_emitted.load(Relaxed), 1);
}

#[tokio::test]
async fn bars_whose_trades_skipped_a_trade_seq_are_counted() {
    let clock = SharedClock(Arc::new(T0.into()));
    let mut service = assigned_service(&clock).await;
    let metrics = service.metrics();
    // A's trades run 1, 2 (complete); B's skip 3 to 9 (a bar that may miss trades).
    let logged =
        [("A", 1, 0), ("A", 2, 1), ("B", 2, 2), ("B", 10, 3)].map(|(name, seq, offset)| {
            LoggedTrade {
                partition: 0,
                offset,
                trade: trade(name, seq, T0 + 1_000 * offset),
                trace: None,
            }
        });
    service
        .on_event(LogEvent::Trades(logged.to_vec()))
        .await
        .unwrap();
    service
        .on_event(marker("app-raw", 4, T0 + 61_000))
        .await
        .unwrap();
    service.cycle(None).await.unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(metrics.windows_emitted.load(Relaxed), 2);
    assert_eq!(metrics.windows_with_gaps.load(Relaxed), 1);
}

#[tokio::test]
async fn a_writer_that_stopped_holds_the_watermark_and_makes_the_partition_silent() {
    let timeout = std::time::Duration::from_secs(30);
    let clock = SharedClock(Arc::new(T0.into()));
    let mut service = assigned_service(&clock).await;
    let metrics = service.metrics();
    service.on_event(marker("eu", 0, T0 - 1_000)).await.unwrap();
    service.on_event(marker("us", 1, T0 - 2_000)).await.unwrap();
    // "us" stops; "eu" goes on for 40 s: markers arrive, the watermark does not move.
    for s in 1..=40 {
        clock
            .0
            .store(T0 + s * 1_000, std::sync::atomic::Ordering::Relaxed);
        service
            .on_event(marker("eu", 1 + s, T0 + s * 1_000))
            .await
            .unwrap();
        service.cycle(None).await.unwrap();
    }
    assert_eq!(metrics.partition_health()[&0].watermark, Some(T0 - 1_000));
    assert_eq!(
        metrics.silent_partitions(T0 + 40_000, timeout),
        vec![(0, 40_000)],
        "markers that do not move the watermark are no sign of progress"
    );
}

#[tokio::test]
async fn under_the_trades_rule_a_trade_stamped_far_ahead_is_late_and_moves_no_watermark() {
    let clock = SharedClock(Arc::new(T0.into()));
    let store = Arc::new(Mutex::new(Store::default()));
    let trades_rule = AggregatorConfig::new(
        WindowSize::from_millis(60_000).unwrap(),
        0,
        WatermarkRule::TradeTime { max_delay_ms: 0 },
        vec![10_000],
    )
    .unwrap();
    let mut service = Service::new(
        FakeLog::new(BTreeMap::new()),
        FakeCommitter(Arc::clone(&store)),
        clock.clone(),
        trades_rule,
    );
    let metrics = service.metrics();
    service.on_event(LogEvent::Assigned(vec![0])).await.unwrap();
    let logged = |offset, trade| LoggedTrade {
        partition: 0,
        offset,
        trade,
        trace: None,
    };
    // B's trade says 2096; C's is under 2 minutes ahead of app-agg's clock and believed.
    let poison = trade("B", 1, 4_000_000_000_000);
    service
        .on_event(LogEvent::Trades(vec![
            logged(0, trade("A", 1, T0 - 30_000)),
            logged(1, poison.clone()),
            logged(2, trade("A", 2, T0 - 20_000)),
            logged(3, trade("C", 1, T0 + 110_000)),
        ]))
        .await
        .unwrap();
    service.cycle(None).await.unwrap();

    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(metrics.late.load(Relaxed), 1);
    assert_eq!(metrics.trades.load(Relaxed), 3, "A's two trades and C's");
    assert_eq!(
        metrics.partition_health()[&0].watermark,
        Some(T0 + 110_000),
        "the watermark follows the believed trades only"
    );
    let store = store.lock().unwrap();
    assert_eq!(store.late.len(), 1);
    assert_eq!(store.late[0].trade, poison);
    assert_eq!(store.late[0].offset, 1);
    assert!(
        store.late[0].reason.contains("ms ahead"),
        "{}",
        store.late[0].reason
    );
    let closed: Vec<(&str, u64)> = store
        .aggregates
        .iter()
        .map(|a| (a.instrument_name.as_str(), a.trade_count))
        .collect();
    assert_eq!(closed, [("A", 2)], "A's window closed by C, B opened none");
}
