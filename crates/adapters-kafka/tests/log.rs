//! `KafkaTradeLog` on a test broker (mock cluster, or Apache Kafka with `TEST_BROKER=kafka`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_wrap
)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapters_kafka::avro::encode_trade;
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::consumer::{DLQ_ERROR, DLQ_OFFSET, DLQ_TOPIC, KafkaTradeLog, LogConfig};
use adapters_kafka::framing::start_frame;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use common::Stack;
use domain::{Direction, Trade, TradeFields, testing};
use ports::{LogEvent, TraceContext, TradeBatch, TradeLog, TradeSink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::{SchemaRegistryStub, TestBroker};

const PARTITIONS: i32 = 3;

fn trade(instrument: &str, seq: u64, price: f64) -> TradeFields {
    TradeFields {
        direction: Direction::Sell,
        index_price: 100.0,
        mark_price: 100.0,
        tick_direction: 1,
        ..testing::fields(instrument, seq, 1_700_000_000_000 + seq as i64, price, 1.0)
    }
}

struct Setup {
    broker: TestBroker,
    _stub: SchemaRegistryStub,
    registry: Arc<Registry>,
    topic: String,
}

async fn setup(name: &str) -> Setup {
    let topic = format!("log-{name}");
    let Stack {
        broker,
        stub,
        registry,
    } = Stack::start(&[
        (&topic, PARTITIONS, false),
        (&format!("{topic}.dlq"), 1, false),
    ])
    .await;
    Setup {
        broker,
        _stub: stub,
        registry,
        topic,
    }
}

fn log(s: &Setup) -> KafkaTradeLog {
    let config = KafkaConfig::new(s.broker.bootstrap_servers());
    let log = LogConfig {
        topic: s.topic.clone(),
        group_id: format!("{}-group", s.topic),
        session_timeout: Duration::from_secs(3),
        instance_id: None,
    };
    KafkaTradeLog::connect(&config, Arc::clone(&s.registry), &log).unwrap()
}

async fn sink(s: &Setup) -> KafkaTradeSink {
    KafkaTradeSink::connect(
        &KafkaConfig::new(s.broker.bootstrap_servers()),
        Arc::clone(&s.registry),
        &s.topic,
    )
    .await
    .unwrap()
}

async fn next(log: &mut KafkaTradeLog) -> LogEvent {
    tokio::time::timeout(Duration::from_secs(30), log.next_event())
        .await
        .expect("an event in time")
        .unwrap()
}

#[tokio::test]
async fn assignment_comes_before_records_and_trades_arrive_in_order_with_their_trace() {
    let s = setup("order").await;
    let trades: Vec<Trade> = (1..=40)
        .flat_map(|seq| {
            ["BTC-PERPETUAL", "ETH-PERPETUAL", "SOL_USDC"]
                .map(|i| Trade::new(trade(i, seq, 100.0)).unwrap())
        })
        .collect();
    let trace = TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: None,
    };
    sink(&s)
        .await
        .publish(TradeBatch {
            trades,
            trace: Some(trace.clone()),
        })
        .await
        .unwrap();

    let mut log = log(&s);
    let LogEvent::Assigned(mut assigned) = next(&mut log).await else {
        panic!("first event must be the assignment")
    };
    assigned.sort_unstable();
    assert_eq!(assigned, vec![0, 1, 2]);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    while seqs.values().map(Vec::len).sum::<usize>() < 120 {
        let LogEvent::Trades(batch) = next(&mut log).await else {
            panic!("no further rebalance expected")
        };
        for t in batch {
            assert_eq!(t.trace.as_ref(), Some(&trace));
            assert!(
                last_offset.get(&t.partition).is_none_or(|&o| o < t.offset),
                "offsets increase per partition"
            );
            last_offset.insert(t.partition, t.offset);
            seqs.entry(t.trade.instrument_name.clone())
                .or_default()
                .push(t.trade.trade_seq);
        }
    }
    for v in seqs.values() {
        assert_eq!(*v, (1..=40).collect::<Vec<_>>());
    }
    // Reaching the end of each partition marks it caught up.
    let _ = tokio::time::timeout(Duration::from_secs(2), log.next_event()).await;
    assert!(
        (0..PARTITIONS).all(|p| log.caught_up(p)),
        "caught up on every partition"
    );

    // Seeking replays from the given offset.
    let (partition, offset) = last_offset.iter().next().map(|(p, o)| (*p, *o)).unwrap();
    log.seek(partition, offset).unwrap();
    assert!(!log.caught_up(partition));
    let LogEvent::Trades(again) = next(&mut log).await else {
        panic!("trades after seek")
    };
    assert_eq!((again[0].partition, again[0].offset), (partition, offset));
}

#[tokio::test]
async fn undecodable_records_go_to_the_dead_letter_topic_and_the_rest_flows() {
    let s = setup("dlq").await;
    let id = s
        .registry
        .register("log-dlq-value", adapters_kafka::avro::TRADE_SCHEMA_JSON)
        .await
        .unwrap();
    let frame = |fields: TradeFields| {
        let mut buf = Vec::new();
        start_frame(&mut buf, id);
        encode_trade(&mut buf, &Trade::new(fields).unwrap()).unwrap();
        buf
    };
    let good = frame(trade("BTC-PERPETUAL", 1, 100.0));
    let mut nan_price = good.clone();
    // price sits after name (14 bytes), id (2), seq (1), timestamp (6): overwrite with NaN.
    let at = 5 + 14 + 2 + 1 + 6;
    nan_price[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&999u32.to_be_bytes());
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", vec![7, 0, 0, 0, 1, 2, 3]),
        ("unknown schema", unknown_id),
        ("corrupt avro", good[..good.len() - 3].to_vec()),
        ("nan price", nan_price),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .create()
        .unwrap();
    for (what, value) in &bad {
        producer
            .send(
                FutureRecord::to(&s.topic)
                    .key("BTC-PERPETUAL")
                    .payload(value)
                    .headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: "what",
                            value: Some(*what),
                        },
                    ))
                    .partition(0),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    producer
        .send(
            FutureRecord::to(&s.topic)
                .key("BTC-PERPETUAL")
                .payload(&good)
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    let mut log = log(&s);
    let mut trades = Vec::new();
    while trades.is_empty() {
        if let LogEvent::Trades(batch) = next(&mut log).await {
            trades.extend(batch);
        }
    }
    assert_eq!(trades.len(), 1);
    assert_eq!((trades[0].offset, trades[0].trade.trade_seq), (4, 1));
    assert_eq!(log.dead_lettered().load(Ordering::Relaxed), 4);

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&format!("{}.dlq", s.topic), 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            assert_eq!(m.key(), Some(&b"BTC-PERPETUAL"[..]), "original key kept");
            assert_eq!(header(DLQ_TOPIC).as_deref(), Some(s.topic.as_str()));
            dead.push((
                header("what").unwrap(),
                header(DLQ_OFFSET).unwrap(),
                header(DLQ_ERROR).unwrap(),
                m.payload().unwrap().to_vec(),
            ));
        }
    }
    assert_eq!(dead.len(), 4);
    for (i, (what, offset, error, payload)) in dead.iter().enumerate() {
        assert_eq!(what, bad[i].0);
        assert_eq!(offset, &i.to_string());
        assert_eq!(payload, &bad[i].1, "original value kept");
        let expected = [
            "magic byte 7",
            "unknown schema id 999",
            "cannot decode Avro",
            "`price` must be finite",
        ][i];
        assert!(error.contains(expected), "{what}: {error}");
    }
}

/// The service races `next_event` against its commit timer; a dropped call must lose nothing,
/// even when it is dropped while a record waits for its schema from the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_event_dropped_at_any_await_loses_no_record() {
    let s = setup("cancel").await;
    let trades: Vec<Trade> = (1..=60)
        .map(|seq| Trade::new(trade(["A", "B", "C"][(seq % 3) as usize], seq, 100.0)).unwrap())
        .collect();
    sink(&s)
        .await
        .publish(TradeBatch {
            trades,
            trace: None,
        })
        .await
        .unwrap();
    // A registry client of its own: its first lookup of the schema id really waits on HTTP.
    let config = KafkaConfig::new(s.broker.bootstrap_servers());
    let cold = Arc::new(Registry::new(RegistryConfig::new(s._stub.url())).unwrap());
    let mut log = KafkaTradeLog::connect(
        &config,
        cold,
        &LogConfig {
            topic: s.topic.clone(),
            group_id: "cancel-group".to_owned(),
            session_timeout: Duration::from_secs(3),
            instance_id: None,
        },
    )
    .unwrap();
    let mut seqs = Vec::new();
    let mut cancelled = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seqs.len() < 60 && std::time::Instant::now() < deadline {
        // Mostly too short to finish: the future is dropped wherever it stands.
        match tokio::time::timeout(Duration::from_micros(200), log.next_event()).await {
            Ok(Ok(LogEvent::Trades(batch))) => seqs.extend(batch.iter().map(|t| t.trade.trade_seq)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => cancelled += 1,
        }
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<u64>>(),
        "after {cancelled} cancellations"
    );
    assert!(cancelled > 0, "the test must actually cancel");
}

/// Progress markers come as their own events, after the trades before them in their partition
/// and before the trades after; valueless records that are not well-formed markers go to the
/// dead-letter topic; Confluent's Avro deserializer reads a marker as null, not as an error.
#[tokio::test]
async fn progress_markers_sit_between_the_trades_around_them() {
    let s = setup("progress").await;
    let sink = sink(&s).await;
    let batch = |seqs: std::ops::RangeInclusive<u64>| TradeBatch {
        trades: seqs
            .flat_map(|seq| {
                ["BTC-PERPETUAL", "ETH-PERPETUAL", "SOL_USDC"]
                    .map(|i| Trade::new(trade(i, seq, 100.0)).unwrap())
            })
            .collect(),
        trace: None,
    };
    sink.publish(batch(1..=3)).await.unwrap();
    sink.publish_progress(1_700_000_000_003).await.unwrap();
    sink.publish(batch(4..=5)).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .create()
        .unwrap();
    let headers = |completeness: &str| {
        rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: adapters_kafka::progress::COMPLETENESS_HEADER,
                value: Some(completeness),
            })
            .insert(rdkafka::message::Header {
                key: adapters_kafka::progress::WRITER_HEADER,
                value: Some("app-raw"),
            })
    };
    for (partition, record) in [
        (
            0,
            FutureRecord::<(), ()>::to(&s.topic).headers(headers("soon")),
        ),
        (1, FutureRecord::<(), ()>::to(&s.topic)),
    ] {
        producer
            .send(record.partition(partition), Duration::from_secs(5))
            .await
            .unwrap();
    }
    sink.publish_progress(1_700_000_000_005).await.unwrap();

    // Per partition, in order: trade seqs as positive numbers, markers as their time.
    let mut log = log(&s);
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let markers = || 2 * PARTITIONS as usize;
    while seen.values().flatten().filter(|&&v| v > 1_000).count() < markers() {
        match next(&mut log).await {
            LogEvent::Trades(trades) => {
                for t in trades {
                    seen.entry(t.partition)
                        .or_default()
                        .push(t.trade.trade_seq as i64);
                }
            }
            LogEvent::Progress(p) => {
                assert_eq!(p.writer, "app-raw");
                seen.entry(p.partition).or_default().push(p.completeness_ms);
            }
            _ => {}
        }
    }
    for (partition, items) in &seen {
        let first = items.iter().position(|&v| v == 1_700_000_000_003).unwrap();
        let second = items.iter().position(|&v| v == 1_700_000_000_005).unwrap();
        assert!(
            items[..first].iter().all(|&seq| (1..=3).contains(&seq))
                && items[first + 1..second]
                    .iter()
                    .all(|&seq| (4..=5).contains(&seq))
                && second == items.len() - 1,
            "partition {partition}: {items:?}"
        );
    }
    let trades: usize = seen.values().map(|v| v.len()).sum::<usize>() - markers();
    assert_eq!(trades, 15);
    assert_eq!(
        log.dead_lettered().load(Ordering::Relaxed),
        2,
        "a marker with an unreadable time and a bare null value"
    );

    // What a Confluent consumer of the raw topic sees for a marker: a null value, no error.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", s.broker.bootstrap_servers())
        .set("group.id", "confluent-reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&s.topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let decoder = schema_registry_converter::async_impl::easy_avro::EasyAvroDecoder::new(
        schema_registry_converter::async_impl::schema_registry::SrSettings::new(s._stub.url()),
    );
    let mut nulls = 0;
    loop {
        let m = match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => m,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => continue,
        };
        let decoded = decoder.decode(m.payload()).await.unwrap();
        if m.payload().is_none() {
            assert_eq!(decoded.value, apache_avro::types::Value::Null);
            nulls += 1;
        }
    }
    assert_eq!(
        nulls, 3,
        "two markers and the malformed one, all read as null"
    );
}

/// The lag probe reports every assigned partition; where the log has read, high watermark minus
/// position: 0 once everything is handed out, then the records written since.
#[tokio::test]
async fn the_lag_probe_counts_what_the_log_has_not_handed_out() {
    let s = setup("lag").await;
    let sink = sink(&s).await;
    let batch = |seqs: std::ops::RangeInclusive<u64>| TradeBatch {
        trades: seqs
            .map(|seq| Trade::new(trade("BTC-PERPETUAL", seq, 100.0)).unwrap())
            .collect(),
        trace: None,
    };
    sink.publish(batch(1..=10)).await.unwrap();
    let mut log = log(&s);
    let probe = log.lag_probe();
    let lag = || {
        let probe = probe.clone();
        async move {
            tokio::task::spawn_blocking(move || probe.lag())
                .await
                .unwrap()
        }
    };
    let (mut handed_out, mut partition) = (0, None);
    while handed_out < 10 {
        if let LogEvent::Trades(trades) = next(&mut log).await {
            handed_out += trades.len();
            partition = partition.or(trades.first().map(|t| t.partition));
        }
    }
    let partition = partition.unwrap();
    // A partition whose watermarks the broker does not give within a second is left out of
    // one reading: ask until every assigned partition is in.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let reading = lag().await;
        if reading.len() == PARTITIONS as usize || std::time::Instant::now() > deadline {
            break reading;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(caught_up.contains(&(partition, 0)), "{caught_up:?}");
    let mut reported: Vec<i32> = caught_up.iter().map(|&(p, _)| p).collect();
    reported.sort_unstable();
    assert_eq!(
        reported,
        (0..PARTITIONS).collect::<Vec<_>>(),
        "one entry per assigned partition"
    );
    // The other partitions never had a record: nothing to read, whatever librdkafka's
    // "no position yet" (-1001) says.
    assert!(caught_up.iter().all(|&(_, lag)| lag == 0), "{caught_up:?}");

    sink.publish(batch(11..=15)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let behind = lag().await;
        if behind.contains(&(partition, 5)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag never reached 5: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
