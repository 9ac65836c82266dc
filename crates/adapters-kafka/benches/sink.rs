//! `KafkaTradeSink` throughput vs a bare rdkafka producer sending the same bytes (same keys,
//! timestamps, headers and producer settings: idempotent, acks=all), both on the broker
//! `TEST_BROKER` names (librdkafka's mock cluster, or Apache Kafka with `TEST_BROKER=kafka`),
//! 200,000 trades in batches of 1,000, every record acknowledged. Target: sink ≥ 0.5× bare.
//! Prints trades/s for each and the ratio (best of three runs each).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_kafka::avro::encode_trade;
use adapters_kafka::config::KafkaConfig;
use adapters_kafka::framing::start_frame;
use adapters_kafka::headers;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use domain::{Trade, TradeFields, testing};
use ports::{TraceContext, TradeBatch, TradeSink};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TRADES: usize = 200_000;
const BATCH: usize = 1_000;

fn trades() -> Vec<Trade> {
    (0..TRADES)
        .map(|i| {
            Trade::new(TradeFields {
                index_price: 66_930.31,
                mark_price: 0.0525,
                tick_direction: 2,
                iv: Some(45.9),
                contracts: Some(3.0),
                ..testing::fields(
                    &format!("BTC-{}-C", i % 200),
                    i as u64 + 1,
                    1_700_000_000_000 + i as i64,
                    0.05,
                    3.0,
                )
            })
            .unwrap()
        })
        .collect()
}

fn trace() -> Option<TraceContext> {
    Some(TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: None,
    })
}

#[tokio::main]
async fn main() {
    let broker = testkit::TestBroker::from_env().await.unwrap();
    broker.create_topic("sink-bench", 6, false).await.unwrap();
    broker.create_topic("bare-bench", 6, false).await.unwrap();
    let stub = testkit::SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let trades = trades();

    let sink = KafkaTradeSink::connect(&kafka, Arc::clone(&registry), "sink-bench")
        .await
        .unwrap();
    let mut sink_best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        for chunk in trades.chunks(BATCH) {
            sink.publish(TradeBatch {
                trades: chunk.to_vec(),
                trace: trace(),
            })
            .await
            .unwrap();
        }
        sink_best = sink_best.min(started.elapsed());
    }

    // The bare producer sends bytes encoded beforehand: it does strictly less work.
    let frames: Vec<Vec<u8>> = trades
        .iter()
        .map(|t| {
            let mut buf = Vec::new();
            start_frame(&mut buf, sink.schema_id());
            encode_trade(&mut buf, t).unwrap();
            buf
        })
        .collect();
    let bare: FutureProducer = kafka.producer().create().unwrap();
    let mut bare_best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        for (chunk, frames) in trades.chunks(BATCH).zip(frames.chunks(BATCH)) {
            let headers = headers::inject(trace().as_ref());
            let mut pending = Vec::with_capacity(BATCH);
            for (t, frame) in chunk.iter().zip(frames) {
                let record = FutureRecord::to("bare-bench")
                    .key(t.instrument_name.as_str())
                    .payload(frame.as_slice())
                    .timestamp(t.timestamp)
                    .headers(headers.clone());
                pending.push(bare.send_result(record).map_err(|(e, _)| e).unwrap());
            }
            for delivery in pending {
                delivery.await.unwrap().unwrap();
            }
        }
        bare_best = bare_best.min(started.elapsed());
    }
    let rate = |d: Duration| TRADES as f64 / d.as_secs_f64();
    println!("broker: {broker:?}");
    println!(
        "KafkaTradeSink: {:>10.0} trades/s ({TRADES} trades, batches of {BATCH}, acked)",
        rate(sink_best)
    );
    println!(
        "bare producer:  {:>10.0} trades/s (same bytes, keys, headers, settings)",
        rate(bare_best)
    );
    println!(
        "ratio sink/bare: {:.2} (target >= 0.5)",
        rate(sink_best) / rate(bare_best)
    );
}
