//! app-agg checks its topics and its schema at start: a missing topic, a changelog partitioned
//! unlike the raw topic or not compacted stops it with one line naming the topic and the fix; with
//! `KAFKA_CREATE_TOPICS=true` missing topics are created (Apache Kafka: the mock cluster has no
//! CreateTopics or topic configs). The aggregate schema's version 2 is registered over version 1;
//! a schema the registry refuses stops start-up with the registry's reason.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use adapters_kafka::avro::AGGREGATE_SCHEMA_JSON;
use adapters_kafka::topics::COMPACTED_SEGMENT_BYTES;
use common::{AGG, BIN, DLQ, LATE, RAW, STATE};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::{SchemaRegistryStub, TestBroker, wait_for};

/// Runs app-agg until it exits (at most 60 s); its exit code and ERROR lines.
fn refused(broker: &TestBroker, stub: &SchemaRegistryStub) -> (Option<i32>, Vec<String>) {
    let out = common::command(broker, stub, &free_http_addr(), "topics")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(out, Duration::from_secs(60));
    let errors = out
        .1
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    (out.0, errors)
}

fn wait_with_deadline(child: Child, deadline: Duration) -> (Option<i32>, String) {
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(deadline);
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn assert_refused_naming(broker: &TestBroker, stub: &SchemaRegistryStub, says: &[&str]) {
    let (code, errors) = refused(broker, stub);
    assert_eq!(code, Some(1), "{errors:#?}");
    assert_eq!(errors.len(), 1, "one ERROR line: {errors:#?}");
    for part in says {
        assert!(errors[0].contains(part), "{part:?} in {}", errors[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_mispartitioned_topic_stops_start_up_naming_it() {
    let broker = TestBroker::from_env().await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    broker.create_topic(RAW, 3, false).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
    assert_refused_naming(
        &broker,
        &stub,
        &[
            &format!("topic {STATE} does not exist"),
            "cleanup.policy=compact",
            "KAFKA_CREATE_TOPICS=true",
        ],
    );
    broker.create_topic(STATE, 2, true).await.unwrap();
    assert_refused_naming(
        &broker,
        &stub,
        &[&format!("topic {STATE} has 2 partitions, {RAW} has 3")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_that_is_not_compacted_stops_start_up() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("the mock cluster has no topic configs") {
        return;
    }
    let stub = SchemaRegistryStub::start().await.unwrap();
    broker.create_topic(RAW, 2, false).await.unwrap();
    broker.create_topic(STATE, 2, false).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
    assert_refused_naming(
        &broker,
        &stub,
        &[&format!(
            "topic {STATE} is not compacted (cleanup.policy=delete)"
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_with_large_segments_starts_with_one_warning_naming_the_fix() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("the mock cluster has no topic configs") {
        return;
    }
    let stub = SchemaRegistryStub::start().await.unwrap();
    all_topics(&broker).await;
    let legacy = "deribit.trades.agg.state.legacy";
    broker
        .create_topic_with(
            legacy,
            2,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "1073741824"),
            ],
        )
        .await
        .unwrap();
    let http = free_http_addr();
    let child = common::command(&broker, &stub, &http, "segments")
        .env("AGG_CHANGELOG_TOPIC", legacy)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(BIN, &http)).await,
        "large segments slow restores down; they do not stop the service"
    );
    signal(&child, "TERM");
    let (code, out) = wait_with_deadline(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("segment"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains(legacy) && warnings[0].contains("segment.bytes=16777216"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_created_when_allowed() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("the mock cluster has no CreateTopics") {
        return;
    }
    let stub = SchemaRegistryStub::start().await.unwrap();
    let http = free_http_addr();
    let mut child = common::command(&broker, &stub, &http, "create")
        .env("KAFKA_CREATE_TOPICS", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(BIN, &http)).await,
        "ready once its topics exist"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    assert_eq!(partitions(RAW), Some(6));
    assert_eq!(partitions(STATE), Some(6), "partitioned like the raw topic");
    assert_eq!(partitions(AGG), Some(3));
    assert_eq!(partitions(DLQ), Some(1));
    assert_eq!(partitions(LATE), Some(1));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(STATE)], &AdminOptions::new())
        .await
        .unwrap();
    let config = |name| {
        described[0]
            .as_ref()
            .unwrap()
            .get(name)
            .and_then(|entry| entry.value.clone())
    };
    assert_eq!(config("cleanup.policy").as_deref(), Some("compact"));
    assert_eq!(
        config("segment.bytes"),
        Some(COMPACTED_SEGMENT_BYTES.to_string()),
        "small segments, so compaction bounds what a restore reads"
    );
}

async fn all_topics(broker: &TestBroker) {
    broker.create_topic(RAW, 2, false).await.unwrap();
    broker.create_topic(STATE, 2, true).await.unwrap();
    broker.create_topic(AGG, 1, false).await.unwrap();
    broker.create_topic(DLQ, 1, false).await.unwrap();
    broker.create_topic(LATE, 1, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_schema_version_2_is_registered_over_version_1() {
    let broker = TestBroker::from_env().await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    all_topics(&broker).await;
    let subject = format!("{AGG}-value");
    let v1 = stub
        .register(
            &subject,
            include_str!("../../adapters-kafka/schemas/trade_aggregate.v1.avsc"),
        )
        .unwrap();
    let http = free_http_addr();
    let mut child = common::command(&broker, &stub, &http, "evolve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(BIN, &http)).await,
        "ready: version 2 is backward compatible with version 1"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let versions = stub.versions(&subject);
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0], v1);
    assert_eq!(
        stub.register(&subject, AGGREGATE_SCHEMA_JSON),
        Ok(versions[1]),
        "version 2 is the schema app-agg writes with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_schema_the_registry_refuses_stops_start_up_with_its_reason() {
    let broker = TestBroker::from_env().await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    all_topics(&broker).await;
    // An earlier writer of the topic had a field our schema cannot fill in (no default).
    stub.register(
        &format!("{AGG}-value"),
        r#"{"type":"record","name":"TradeAggregate","namespace":"com.deribit.marketdata","fields":[{"name":"venue","type":"string"}]}"#,
    )
    .unwrap();
    assert_refused_naming(
        &broker,
        &stub,
        &[
            &format!("subject \\\"{AGG}-value\\\""),
            "incompatible with an earlier schema",
            // The registry's reason, as it gave it.
            "in reader schema must have a default value",
        ],
    );
}
