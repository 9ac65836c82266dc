//! Encode + Confluent-frame one trade: our encoder vs schema_registry_converter's
//! `EasyAvroEncoder::encode_struct` (serde → Avro value → validate → encode, schema from its
//! cache after the first call). Target: ours ≥ 5× faster. Criterion prints time per trade.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use adapters_kafka::avro::{TRADE_SCHEMA_JSON, encode_trade};
use adapters_kafka::framing::start_frame;
use adapters_kafka::registry::{Registry, RegistryConfig, value_subject};
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{Direction, Trade, TradeFields};
use schema_registry_converter::async_impl::easy_avro::EasyAvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use serde::Serialize;

fn fields() -> TradeFields {
    TradeFields {
        instrument_name: "BTC-27DEC24-70000-C".into(),
        trade_id: "415305279".into(),
        trade_seq: 271_252_854,
        timestamp: 1_770_984_454_552,
        price: 0.0525,
        amount: 3.0,
        direction: Direction::Buy,
        index_price: 66_930.31,
        mark_price: 0.052_538_83,
        tick_direction: 2,
        iv: Some(45.91),
        liquidation: None,
        block_trade_id: None,
        combo_id: None,
        contracts: Some(3.0),
    }
}

/// The same trade as a serde struct shaped like `trade.avsc`, for `encode_struct`.
#[derive(Serialize)]
struct SerdeTrade {
    instrument_name: String,
    trade_id: String,
    trade_seq: i64,
    timestamp: i64,
    price: f64,
    amount: f64,
    direction: SerdeDirection,
    index_price: f64,
    mark_price: f64,
    tick_direction: i32,
    iv: Option<f64>,
    liquidation: Option<String>,
    block_trade_id: Option<String>,
    combo_id: Option<String>,
    contracts: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum SerdeDirection {
    Buy,
}

fn encode(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stub = runtime
        .block_on(testkit::SchemaRegistryStub::start())
        .unwrap();
    let registry = Registry::new(RegistryConfig::new(stub.url())).unwrap();
    let id = runtime
        .block_on(registry.register(&value_subject("bench"), TRADE_SCHEMA_JSON))
        .unwrap();
    let trade = Trade::new(fields()).unwrap();
    let f = fields();
    let serde_trade = || SerdeTrade {
        instrument_name: f.instrument_name.clone(),
        trade_id: f.trade_id.clone(),
        trade_seq: 271_252_854,
        timestamp: f.timestamp,
        price: f.price,
        amount: f.amount,
        direction: SerdeDirection::Buy,
        index_price: f.index_price,
        mark_price: f.mark_price,
        tick_direction: 2,
        iv: f.iv,
        liquidation: None,
        block_trade_id: None,
        combo_id: None,
        contracts: f.contracts,
    };
    let easy = EasyAvroEncoder::new(SrSettings::new(stub.url()));
    let strategy = SubjectNameStrategy::TopicNameStrategy("bench".into(), false);
    let theirs = runtime
        .block_on(easy.encode_struct(serde_trade(), &strategy))
        .expect("encode_struct");
    let mut ours = Vec::new();
    start_frame(&mut ours, id);
    encode_trade(&mut ours, &trade).unwrap();
    assert_eq!(ours, theirs, "both produce the same Confluent frame");

    let mut group = c.benchmark_group("encode_frame_trade");
    let mut buf = Vec::with_capacity(256);
    group.bench_function("ours", |b| {
        b.iter(|| {
            start_frame(&mut buf, id);
            encode_trade(&mut buf, std::hint::black_box(&trade)).unwrap();
            std::hint::black_box(buf.len())
        });
    });
    group.bench_function("easy_avro_encode_struct", |b| {
        b.iter(|| {
            runtime
                .block_on(easy.encode_struct(serde_trade(), &strategy))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
