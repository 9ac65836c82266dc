//! The registry client against `testkit::SchemaRegistryStub`.
#![allow(clippy::unwrap_used)] // test helpers

use std::time::{Duration, Instant};

use adapters_kafka::Error;
use adapters_kafka::avro::{TRADE_SCHEMA_JSON, decode_trade, encode_trade};
use adapters_kafka::framing::{split_frame, start_frame};
use adapters_kafka::registry::{BasicAuth, Registry, RegistryConfig, value_subject};
use domain::{Direction, Trade, TradeFields};
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
