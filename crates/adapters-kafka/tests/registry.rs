//! The registry client against `testkit::SchemaRegistryStub`, and the aggregate schema's
//! evolution through it.
#![allow(clippy::unwrap_used)] // test helpers

use std::time::{Duration, Instant};

use adapters_kafka::Error;
use adapters_kafka::avro::{
    AGGREGATE_SCHEMA_JSON, TRADE_SCHEMA_JSON, decode_aggregate, decode_trade, encode_aggregate,
    encode_trade,
};
use adapters_kafka::framing::{split_frame, start_frame};
use adapters_kafka::registry::{BasicAuth, Registry, RegistryConfig, value_subject};
use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use domain::{Aggregate, Direction, Trade, TradeFields};
use testkit::SchemaRegistryStub;

fn trade() -> Trade {
    domain::testing::validated(TradeFields {
        direction: Direction::Sell,
        ..domain::testing::fields("BTC-PERPETUAL", 30_289_442, 1_590_484_512_188, 8950.0, 10.0)
    })
}

fn config(url: String) -> RegistryConfig {
    RegistryConfig {
        attempts: 3,
        initial_backoff: Duration::from_millis(20),
        ..RegistryConfig::new(url)
    }
}

#[tokio::test]
async fn registers_once_and_round_trips_a_framed_trade_through_the_registry() {
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Registry::new(config(stub.url())).unwrap();
    let subject = value_subject("deribit.trades");
    assert_eq!(subject, "deribit.trades-value");
    let id = registry
        .register(&subject, TRADE_SCHEMA_JSON)
        .await
        .unwrap();
    let again = registry
        .register(&subject, TRADE_SCHEMA_JSON)
        .await
        .unwrap();
    assert_eq!(id, again);
    assert_eq!(
        stub.requests(),
        1,
        "the second registration is served from the cache"
    );

    let mut frame = Vec::new();
    start_frame(&mut frame, id);
    encode_trade(&mut frame, &trade()).unwrap();
    // A consumer in another process knows nothing but the frame and the registry.
    let reader = Registry::new(config(stub.url())).unwrap();
    let (writer_id, datum) = split_frame(&frame).unwrap();
    let writer = reader.schema(writer_id).await.unwrap();
    assert_eq!(decode_trade(writer_id, &writer, datum).unwrap(), trade());
    reader.schema(writer_id).await.unwrap();
    assert_eq!(stub.requests(), 2, "a writer schema is fetched once");
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_the_subject_and_the_reason() {
    let stub = SchemaRegistryStub::start().await.unwrap();
    // An earlier producer registered a schema our reader cannot stand in for (`venue` has no default).
    stub.register(
        "deribit.trades-value",
        r#"{"type":"record","name":"Trade","namespace":"com.deribit.marketdata","fields":[{"name":"venue","type":"string"}]}"#,
    )
    .unwrap();
    let registry = Registry::new(config(stub.url())).unwrap();
    let err = registry
        .register("deribit.trades-value", TRADE_SCHEMA_JSON)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            Error::Registry {
                retryable: false,
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("\"deribit.trades-value\"") && message.contains("incompatible"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_with_backoff_then_reported() {
    let registry = Registry::new(config("http://127.0.0.1:9".into())).unwrap();
    let started = Instant::now();
    let err = registry
        .register("t-value", TRADE_SCHEMA_JSON)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(20 + 40),
        "two backoffs before giving up"
    );
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            Error::Registry {
                retryable: true,
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("unreachable after 3 attempts") && message.contains("127.0.0.1:9"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_schema_ids_are_a_typed_error() {
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Registry::new(config(stub.url())).unwrap();
    assert!(matches!(
        registry.schema(42).await,
        Err(Error::UnknownSchema(42))
    ));
}

#[tokio::test]
async fn basic_auth_is_sent_and_the_password_never_shows() {
    let stub = SchemaRegistryStub::start().await.unwrap();
    stub.require_basic_auth("svc", "hunter2");
    let mut with_auth = config(stub.url());
    with_auth.basic_auth = Some(BasicAuth {
        user: "svc".into(),
        password: "hunter2".into(),
    });
    assert!(!format!("{with_auth:?}").contains("hunter2"));
    Registry::new(with_auth)
        .unwrap()
        .register("t-value", TRADE_SCHEMA_JSON)
        .await
        .unwrap();
    let err = Registry::new(config(stub.url()))
        .unwrap()
        .register("t-value", TRADE_SCHEMA_JSON)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

/// Like Confluent's, the stand-in serves a schema back as registered (docs, logical types), so
/// a consumer recognises our own trade schema and takes the direct decoder.
#[tokio::test]
async fn a_schema_read_back_by_id_is_our_own_trade_schema() {
    let stub = testkit::SchemaRegistryStub::start().await.unwrap();
    let writer = Registry::new(RegistryConfig::new(stub.url())).unwrap();
    let id = writer
        .register(
            "deribit.trades-value",
            adapters_kafka::avro::TRADE_SCHEMA_JSON,
        )
        .await
        .unwrap();
    let reader = Registry::new(RegistryConfig::new(stub.url())).unwrap();
    let schema = reader.schema(id).await.unwrap();
    assert!(adapters_kafka::avro::is_own_trade_schema(&schema).unwrap());
}

/// A consumer that knows only version 1 of the aggregate schema.
const AGGREGATE_V1: &str = include_str!("../schemas/trade_aggregate.v1.avsc");

fn v1_aggregate_value() -> AvroValue {
    let long = AvroValue::Long;
    let ts = AvroValue::TimestampMillis;
    let double = AvroValue::Double;
    AvroValue::Record(vec![
        (
            "instrument_name".into(),
            AvroValue::String("ETH-PERPETUAL".into()),
        ),
        ("window_start".into(), ts(1_732_500_000_000)),
        ("window_end".into(), ts(1_732_500_060_000)),
        ("trade_count".into(), long(2)),
        ("volume".into(), double(3.0)),
        ("buy_volume".into(), double(1.0)),
        ("sell_volume".into(), double(2.0)),
        ("vwap".into(), double(3501.0)),
        ("open".into(), double(3500.0)),
        ("high".into(), double(3502.0)),
        ("low".into(), double(3500.0)),
        ("close".into(), double(3502.0)),
        ("ewma".into(), AvroValue::Array(vec![])),
        ("first_trade_seq".into(), long(7)),
        ("last_trade_seq".into(), long(8)),
        ("first_trade_timestamp".into(), ts(1_732_500_000_001)),
        ("last_trade_timestamp".into(), ts(1_732_500_059_999)),
    ])
}

/// Schema evolution as Confluent consumers meet it: records of either version in one topic, the
/// writer's schema fetched by the id in each frame. Our reader (version 2) reads version-1
/// records with the defaults; a consumer that knows only version 1 reads version-2 records by
/// resolving the writer's schema to its own (the new fields are skipped).
#[tokio::test]
async fn aggregate_records_of_either_version_are_read_by_readers_of_either_version() {
    let stub = SchemaRegistryStub::start().await.unwrap();
    let subject = value_subject("deribit.trades.agg");
    let producer = Registry::new(config(stub.url())).unwrap();
    let v1_id = producer.register(&subject, AGGREGATE_V1).await.unwrap();
    let v1 = Schema::parse_str(AGGREGATE_V1).unwrap();
    let mut old_frame = Vec::new();
    start_frame(&mut old_frame, v1_id);
    old_frame.extend(
        GenericDatumWriter::builder(&v1)
            .build()
            .unwrap()
            .write_value_to_vec(v1_aggregate_value())
            .unwrap(),
    );
    let v2_id = producer
        .register(&subject, AGGREGATE_SCHEMA_JSON)
        .await
        .unwrap();
    assert_ne!(v1_id, v2_id, "version 2 is a new version of the subject");
    assert_eq!(stub.versions(&subject), [v1_id, v2_id]);
    let mut new_frame = Vec::new();
    start_frame(&mut new_frame, v2_id);
    let written = Aggregate {
        seq_gaps: Some(2),
        late_trades: Some(0),
        window_ms: 60_000,
        ..decode_aggregate(v1_id, &v1, split_frame(&old_frame).unwrap().1).unwrap()
    };
    encode_aggregate(&mut new_frame, &written).unwrap();

    // Our reader, in another process: only frames and the registry.
    let reader = Registry::new(config(stub.url())).unwrap();
    let (id, datum) = split_frame(&old_frame).unwrap();
    let old = decode_aggregate(id, &reader.schema(id).await.unwrap(), datum).unwrap();
    assert_eq!(
        (old.window_ms, old.seq_gaps, old.late_trades),
        (60_000, None, None),
        "a version-1 record: its window's length, completeness not measured"
    );
    assert_eq!(
        (old.trade_count, old.vwap, old.last_trade_seq),
        (2, 3501.0, 8)
    );
    let (id, datum) = split_frame(&new_frame).unwrap();
    assert_eq!(
        decode_aggregate(id, &reader.schema(id).await.unwrap(), datum).unwrap(),
        written
    );

    // A consumer built against version 1 only.
    let writer = reader.schema(id).await.unwrap();
    let mut bytes = datum;
    let seen = GenericDatumReader::builder(&writer)
        .reader_schema(&v1)
        .build()
        .unwrap()
        .read_value(&mut bytes)
        .unwrap();
    assert!(bytes.is_empty());
    assert_eq!(
        seen,
        v1_aggregate_value(),
        "exactly the version-1 fields, new ones skipped"
    );
}
