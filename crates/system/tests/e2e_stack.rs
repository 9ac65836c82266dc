//! End-to-end checks against a running `just up` stack (Docker, internet for Deribit).
//! Ignored by `just test`; `just e2e` runs them. Ports as published by docker/compose.yaml.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::framing::split_frame;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::process::http_get;

const KAFKA: &str = "localhost:9092";

fn status_ok(addr: &str, path: &str) -> bool {
    http_get(addr, path).starts_with("HTTP/1.1 200")
}

fn consumer(isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", "e2e-check")
        .set("isolation.level", isolation)
        .create()
        .unwrap()
}

#[test]
#[ignore = "needs the compose stack: run `just up`, then `just e2e`"]
fn services_are_ready_and_registered_their_schemas() {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(status_ok("127.0.0.1:8080", "/readyz") && status_ok("127.0.0.1:8091", "/readyz")) {
        assert!(Instant::now() < deadline, "app-raw / app-agg not ready");
        std::thread::sleep(Duration::from_secs(2));
    }
    let subjects = http_get("127.0.0.1:8081", "/subjects");
    assert!(subjects.contains("deribit.trades-value"), "{subjects}");
    assert!(subjects.contains("deribit.trades.agg-value"), "{subjects}");
}

#[test]
#[ignore = "needs the compose stack: run `just up`, then `just e2e`"]
fn committed_aggregates_are_consistent_and_unique() {
    let consumer = consumer("read_committed");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("deribit.trades.agg", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let schema = aggregate_schema().unwrap();
    let mut seen = BTreeSet::new();
    // One 1-minute window plus grace and commit interval, with margin.
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline && seen.len() < 3 {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let (id, datum) = split_frame(m.payload().unwrap()).unwrap();
        let a = decode_aggregate(id, schema, datum).unwrap();
        assert!(a.trade_count > 0);
        assert!(a.low <= a.open && a.open <= a.high, "{a:?}");
        assert!(a.low <= a.close && a.close <= a.high, "{a:?}");
        assert!(a.low <= a.vwap && a.vwap <= a.high, "{a:?}");
        assert!((a.buy_volume + a.sell_volume - a.volume).abs() <= 1e-9 * a.volume);
        assert_eq!(a.window_end - a.window_start, 60_000);
        assert!(
            seen.insert((a.instrument_name.clone(), a.window_start)),
            "exactly once: {} {} twice",
            a.instrument_name,
            a.window_start
        );
    }
    assert!(seen.len() >= 3, "aggregates arrived: {seen:?}");
}

#[test]
#[ignore = "needs the compose stack: run `just up`, then `just e2e`"]
fn jaeger_has_spans_from_both_services() {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let services = http_get("127.0.0.1:16686", "/api/v3/services");
        if services.contains("\"app-raw\"") && services.contains("\"app-agg\"") {
            break;
        }
        assert!(Instant::now() < deadline, "Jaeger services: {services}");
        std::thread::sleep(Duration::from_secs(3));
    }
}
