//! The service loop over in-memory ports: killed at many points and restarted on the same
//! durable store, it produces exactly the uninterrupted output.
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
    TradeFields, WindowSize, testing,
};
use ports::{
    AggregateCommitter, Clock, CommitBatch, CommitError, LogError, LogEvent, LoggedTrade,
    Partition, RestoredPartition, TradeLog,
};

/// What survives a crash: the aggregates topic, the changelog, the markers.
#[derive(Default)]
struct Store {
    aggregates: Vec<Aggregate>,
    changelog: BTreeMap<Partition, BTreeMap<String, InstrumentSnapshot>>,
    markers: BTreeMap<Partition, (i64, Option<i64>)>,
}

#[derive(Clone)]
struct FakeCommitter(Arc<Mutex<Store>>);

impl AggregateCommitter for FakeCommitter {
    async fn commit(&mut self, batch: CommitBatch) -> Result<(), CommitError> {
        let mut store = self.0.lock().unwrap();
        store.aggregates.extend(batch.aggregates);
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
                .insert(m.partition, (m.next_offset, m.watermark));
        }
        Ok(())
    }

    async fn restore(&mut self, partition: Partition) -> Result<RestoredPartition, CommitError> {
        let store = self.0.lock().unwrap();
        let instruments = store
            .changelog
            .get(&partition)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let marker = store.markers.get(&partition).copied();
        Ok(RestoredPartition {
            snapshot: PartitionSnapshot {
                watermark: marker.and_then(|m| m.1),
                instruments,
            },
            next_offset: marker.map(|m| m.0),
        })
    }
}

/// Two partitions of fixed trades; serves small batches alternately; honours seek.
struct FakeLog {
    partitions: BTreeMap<Partition, Vec<Trade>>,
    cursors: BTreeMap<Partition, usize>,
    assigned: bool,
    turn: usize,
    /// Retryable errors queued after the assignment, as librdkafka queues outage errors.
    outage_errors: usize,
}

impl FakeLog {
    fn new(partitions: BTreeMap<Partition, Vec<Trade>>) -> Self {
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
            let trades = &self.partitions[&p];
            if cursor < trades.len() {
                self.turn += 1;
                let end = (cursor + 7).min(trades.len());
                self.cursors.insert(p, end);
                let batch = (cursor..end)
                    .map(|o| LoggedTrade {
                        partition: p,
                        offset: o as i64,
                        trade: trades[o].clone(),
                        trace: None,
                    })
                    .collect();
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

fn market() -> BTreeMap<Partition, Vec<Trade>> {
    let mut partitions = BTreeMap::new();
    partitions.insert(
        0,
        (1..=150)
            .flat_map(|s| {
                [
                    trade("BTC-PERPETUAL", s, T0 + s as i64 * 2_300),
                    trade("SOL_USDC", s, T0 + s as i64 * 2_300 + 1),
                ]
            })
            .collect(),
    );
    partitions.insert(
        1,
        (1..=200)
            .map(|s| trade("ETH-PERPETUAL", s, T0 + s as i64 * 1_700))
            .collect(),
    );
    partitions
}

fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(60_000).unwrap(),
        500,
        5_000,
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
        FixedClock(T0),
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
            for (p, (offset, _)) in restored {
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
        // Everything read: let wall-clock time close the last windows.
        let mut closer = Service::new(
            FakeLog::new(BTreeMap::new()),
            FakeCommitter(Arc::clone(store)),
            FixedClock(i64::MAX / 2),
            config(),
        );
        closer
            .on_event(LogEvent::Assigned(vec![0, 1]))
            .await
            .unwrap();
        closer.cycle(None).await.unwrap();
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
    // The closing service under wall-clock time flushed the quiet tail (caught up).
    assert_eq!(expected.iter().map(|a| a.trade_count).sum::<u64>(), 500);

    for kill_at in [1, 2, 4, 5, 7, 10, 13, 17, 22, 31, 40] {
        let store = Arc::new(Mutex::new(Store::default()));
        drive(&store, Some(kill_at), false).await; // killed
        drive(&store, Some(kill_at / 2 + 3), false).await; // killed again while catching up
        drive(&store, None, true).await; // runs to the end
        let (got, _) = union(&store.lock().unwrap());
        assert_eq!(got, expected, "killed at step {kill_at}");
    }
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
