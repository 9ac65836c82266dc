//! `KafkaCommitter` on a test broker (mock cluster, or Apache Kafka with `TEST_BROKER=kafka`).
//!
//! The mock cluster fakes transactions (no fencing, no read_committed filtering): there the
//! transactional test proves the calls are made in a valid order; on Apache Kafka it proves
//! the cycle commits.
#![allow(clippy::unwrap_used, clippy::panic, clippy::cast_possible_wrap)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::avro::{aggregate_schema, decode_aggregate, decode_trade, trade_schema};
use adapters_kafka::commit::{
    CommitConfig, KafkaCommitter, LATE_OFFSET, LATE_PARTITION, LATE_REASON,
};
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::consumer::{KafkaTradeLog, LogConfig};
use adapters_kafka::framing::split_frame;
use adapters_kafka::registry::Registry;
use common::Stack;
use domain::{
    Aggregate, Aggregator, AggregatorConfig, Direction, Trade, TradeFields, WatermarkRule,
    WindowSize, WriterProgress, testing,
};
use ports::{AggregateCommitter, CommitBatch, LateTrade, PartitionMarker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{SchemaRegistryStub, TestBroker};

struct Setup {
    broker: TestBroker,
    _stub: SchemaRegistryStub,
    registry: Arc<Registry>,
    name: String,
}

async fn setup(name: &str) -> Setup {
    let Stack {
        broker,
        stub,
        registry,
    } = Stack::start(&[
        (&format!("{name}.raw"), 3, false),
        (&format!("{name}.agg"), 1, false),
        (&format!("{name}.state"), 3, true),
        (&format!("{name}.late"), 1, false),
    ])
    .await;
    Setup {
        broker,
        _stub: stub,
        registry,
        name: name.into(),
    }
}

async fn committer(s: &Setup, transactional: bool) -> KafkaCommitter {
    let kafka = KafkaConfig::new(s.broker.bootstrap_servers());
    let log = KafkaTradeLog::connect(
        &kafka,
        Arc::clone(&s.registry),
        &LogConfig {
            topic: format!("{}.raw", s.name),
            group_id: format!("{}-agg", s.name),
            session_timeout: Duration::from_secs(3),
            instance_id: None,
        },
    )
    .unwrap();
    let commit = CommitConfig {
        aggregates_topic: format!("{}.agg", s.name),
        changelog_topic: format!("{}.state", s.name),
        source_topic: format!("{}.raw", s.name),
        late_topic: format!("{}.late", s.name),
        transactional_id: transactional.then(|| format!("{}-agg-0", s.name)),
        timeout: Duration::from_secs(10),
    };
    KafkaCommitter::connect(&kafka, &s.registry, log.group_offsets(), commit)
        .await
        .unwrap()
}

fn trade(instrument: &str, seq: u64, ts: i64, price: f64) -> Trade {
    Trade::new(TradeFields {
        direction: if seq.is_multiple_of(2) {
            Direction::Buy
        } else {
            Direction::Sell
        },
        ..testing::fields(instrument, seq, ts, price, 1.0 + seq as f64 / 10.0)
    })
    .unwrap()
}

fn config() -> AggregatorConfig {
    AggregatorConfig::new(
        WindowSize::from_millis(60_000).unwrap(),
        1_000,
        WatermarkRule::TradeTime {
            max_delay_ms: 5_000,
        },
        vec![30_000, 300_000],
    )
    .unwrap()
}

const T0: i64 = 1_699_999_980_000;

fn stream(range: std::ops::Range<u64>) -> Vec<Trade> {
    range
        .flat_map(|i| {
            let ts = T0 + i as i64 * 7_000;
            [
                trade("BTC-PERPETUAL", i + 1, ts, 67_000.0 + i as f64),
                trade("ETH-PERPETUAL", i + 1, ts + 3, 3_500.0 - i as f64),
            ]
        })
        .collect()
}

/// One cycle: fold trades in, commit closed windows, changed states and the marker.
async fn cycle(
    committer: &mut KafkaCommitter,
    agg: &mut Aggregator,
    trades: &[Trade],
    next_offset: i64,
) -> Vec<Aggregate> {
    for t in trades {
        agg.ingest(t);
    }
    let aggregates = agg.drain_closed();
    let states = agg.take_changed().into_iter().map(|s| (1, s)).collect();
    let markers = vec![PartitionMarker {
        partition: 1,
        next_offset,
        watermark: agg.watermark(),
        writers: agg.writers().to_vec(),
    }];
    committer
        .commit(CommitBatch {
            aggregates: aggregates.clone(),
            states,
            markers,
            links: Vec::new(),
            late: Vec::new(),
        })
        .await
        .unwrap();
    aggregates
}

fn read_aggregates(s: &Setup) -> Vec<Vec<u8>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .set("group.id", "agg-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&format!("{}.agg", s.name), 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

async fn commit_then_restore(transactional: bool) {
    let s = setup(if transactional { "txn" } else { "plain" }).await;
    let mut committer = committer(&s, transactional).await;
    let all = stream(0..40);
    let mut agg = Aggregator::new(config());
    let mut emitted = cycle(&mut committer, &mut agg, &all[..30], 30).await;
    emitted.extend(cycle(&mut committer, &mut agg, &all[30..60], 60).await);
    assert!(!emitted.is_empty());

    // Both partitions in one read: each gets its own state, the empty one none.
    let mut both = committer.restore(&[0, 1]).await.unwrap();
    let (restored, empty) = (both.remove(&1).unwrap(), both.remove(&0).unwrap());
    assert_eq!(restored.next_offset, Some(60));
    assert_eq!(
        restored.snapshot,
        agg.snapshot(),
        "the latest state of every instrument, and the watermark"
    );
    assert!(empty.snapshot.instruments.is_empty() && empty.next_offset.is_none());

    // The aggregates topic holds exactly what the cycles emitted, byte for byte decodable.
    let records = read_aggregates(&s);
    assert_eq!(records.len(), emitted.len());
    for (bytes, expected) in records.iter().zip(&emitted) {
        let (id, datum) = split_frame(bytes).unwrap();
        assert_eq!(
            &decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap(),
            expected
        );
    }

    // A restored aggregator continues exactly like the original.
    let mut resumed = Aggregator::restore(config(), restored.snapshot).unwrap();
    for t in &all[60..] {
        agg.ingest(t);
        resumed.ingest(t);
    }
    assert_eq!(resumed.flush_all(), agg.flush_all());
}

#[tokio::test]
async fn a_cycle_then_restore_gives_back_the_same_state_and_position() {
    commit_then_restore(false).await;
}

#[tokio::test]
async fn the_transactional_cycle_runs_its_calls_in_order() {
    commit_then_restore(true).await;
}

/// Where the emulated crash stops a cycle.
#[derive(Clone, Copy)]
enum CrashAfter {
    Aggregates,
    States,
}

/// The non-transactional cycle survives a crash at either step: after a restart (restore, then
/// replay from the marker) the union of everything written to the aggregates topic, deduplicated
/// by (instrument, window_start), equals the uninterrupted run, and duplicates are identical bytes.
async fn crash_and_resume(crash: CrashAfter, name: &str) {
    let s = setup(name).await;
    let all = stream(0..60);
    let uninterrupted = {
        let mut agg = Aggregator::new(config());
        let mut out = Vec::new();
        for t in &all {
            agg.ingest(t);
            out.extend(agg.drain_closed());
        }
        out.extend(agg.flush_all());
        out
    };

    let mut first = committer(&s, false).await;
    let mut agg = Aggregator::new(config());
    cycle(&mut first, &mut agg, &all[..40], 40).await;
    // The next cycle dies part-way.
    for t in &all[40..80] {
        agg.ingest(t);
    }
    let aggregates = agg.drain_closed();
    let states = match crash {
        CrashAfter::Aggregates => Vec::new(),
        CrashAfter::States => agg.take_changed().into_iter().map(|s| (1, s)).collect(),
    };
    first
        .commit(CommitBatch {
            aggregates,
            states,
            markers: Vec::new(),
            links: Vec::new(),
            late: Vec::new(),
        })
        .await
        .unwrap();
    drop(first);

    // Restart: restore, seek to the marker, replay, run to the end.
    let mut second = committer(&s, false).await;
    let restored = second.restore(&[1]).await.unwrap().remove(&1).unwrap();
    let resume_at = usize::try_from(restored.next_offset.unwrap()).unwrap();
    assert_eq!(resume_at, 40);
    let mut agg = Aggregator::restore(config(), restored.snapshot).unwrap();
    cycle(&mut second, &mut agg, &all[resume_at..], 120).await;
    let tail = agg.flush_all();
    second
        .commit(CommitBatch {
            aggregates: tail,
            states: Vec::new(),
            markers: Vec::new(),
            links: Vec::new(),
            late: Vec::new(),
        })
        .await
        .unwrap();

    let mut seen: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
    let mut duplicates = 0;
    for bytes in read_aggregates(&s) {
        let (id, datum) = split_frame(&bytes).unwrap();
        let a = decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap();
        match seen.get(&(a.instrument_name.clone(), a.window_start)) {
            Some(earlier) => {
                assert_eq!(earlier, &bytes, "a repeated aggregate is byte-identical");
                duplicates += 1;
            }
            None => {
                seen.insert((a.instrument_name.clone(), a.window_start), bytes);
            }
        }
    }
    let union: Vec<Aggregate> = seen
        .values()
        .map(|bytes| {
            let (id, datum) = split_frame(bytes).unwrap();
            decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap()
        })
        .collect();
    let mut expected = uninterrupted;
    expected.sort_by(|a, b| {
        (&a.instrument_name, a.window_start).cmp(&(&b.instrument_name, b.window_start))
    });
    assert_eq!(union, expected, "nothing lost, nothing different");
    if matches!(crash, CrashAfter::Aggregates) {
        assert!(
            duplicates > 0,
            "replaying re-emits the aggregates of the lost cycle"
        );
    }
}

#[tokio::test]
async fn a_crash_after_writing_aggregates_repeats_them_identically() {
    crash_and_resume(CrashAfter::Aggregates, "crash-a").await;
}

#[tokio::test]
async fn a_crash_after_writing_states_loses_and_changes_nothing() {
    crash_and_resume(CrashAfter::States, "crash-b").await;
}

/// Progress writers travel with the partition's marker; a late trade lands in the late-trades
/// topic, decodable with the trade schema, with its reason and source position in headers.
#[tokio::test]
async fn writers_are_restored_and_late_trades_are_kept_with_their_reason() {
    let s = setup("late").await;
    let mut committer = committer(&s, false).await;
    let writers = vec![
        WriterProgress {
            writer: "app-raw".into(),
            completeness_ms: T0 + 5_000,
        },
        WriterProgress {
            writer: "app-raw-eu".into(),
            completeness_ms: T0 + 4_000,
        },
    ];
    let late = trade("BTC-PERPETUAL", 9, T0 + 10, 67_000.0);
    committer
        .commit(CommitBatch {
            aggregates: Vec::new(),
            states: Vec::new(),
            markers: vec![PartitionMarker {
                partition: 2,
                next_offset: 17,
                watermark: Some(T0 + 4_000),
                writers: writers.clone(),
            }],
            links: Vec::new(),
            late: vec![LateTrade {
                partition: 2,
                offset: 16,
                trade: late.clone(),
                reason: "window [a, b) closed".into(),
            }],
        })
        .await
        .unwrap();
    let restored = committer.restore(&[2]).await.unwrap().remove(&2).unwrap();
    assert_eq!(restored.next_offset, Some(17));
    assert_eq!(restored.snapshot.watermark, Some(T0 + 4_000));
    assert_eq!(restored.snapshot.writers, writers);

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .set("group.id", "late-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("late.late", 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no late trade written"
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            break m;
        }
    };
    assert_eq!(message.key(), Some(&b"BTC-PERPETUAL"[..]));
    let (id, datum) = split_frame(message.payload().unwrap()).unwrap();
    assert_eq!(
        decode_trade(id, trade_schema().unwrap(), datum).unwrap(),
        late
    );
    let header = |name: &str| {
        let headers = message.headers().unwrap();
        let h = headers.iter().find(|h| h.key == name).unwrap();
        String::from_utf8(h.value.unwrap().to_vec()).unwrap()
    };
    assert_eq!(header(LATE_REASON), "window [a, b) closed");
    assert_eq!(header(LATE_PARTITION), "2");
    assert_eq!(header(LATE_OFFSET), "16");
}
