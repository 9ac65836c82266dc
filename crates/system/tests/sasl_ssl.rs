//! The whole pipeline over a `SASL_SSL` listener (TLS with a CA the test made, SCRAM-SHA-256
//! logins) on Apache Kafka, both services configured only through `KAFKA_PROPERTY_*`, app-raw
//! compressing with zstd: every trade reaches the raw topic and aggregates come out. A wrong
//! password stops app-raw at start with a line that says so, instead of hanging. Apache Kafka
//! only.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::kafka::ExtraListener;
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::services::service_binary;
use testkit::tls::{TestTls, scram_user};
use testkit::{
    FakeDeribit, FakeInstrument, KafkaCluster, KafkaOptions, SchemaRegistryStub, TestBroker,
    wait_for,
};

const USER: &str = "pipeline";
const PASSWORD: &str = "s3cret-Scram";

/// The client side of the secure listener, as environment variables.
fn secure_env(bootstrap: &str, tls: &TestTls, password: &str) -> Vec<(String, String)> {
    [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.to_owned()),
        ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
        ("KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-256".to_owned()),
        ("KAFKA_PROPERTY_SASL_USERNAME", USER.to_owned()),
        ("KAFKA_PROPERTY_SASL_PASSWORD", password.to_owned()),
        (
            "KAFKA_PROPERTY_SSL_CA_LOCATION",
            tls.ca_file().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn raw_command(
    binary: &std::path::Path,
    broker_env: &[(String, String)],
    stub: &SchemaRegistryStub,
    fake: &FakeDeribit,
    http: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(broker_env.iter().map(|(k, v)| (k, v)))
        .envs([
            ("SCHEMA_REGISTRY_URL", stub.url()),
            ("DERIBIT_URL", fake.url()),
            ("DERIBIT_CHANNELS", "trades.future.BTC.100ms".to_owned()),
            ("HTTP_ADDR", http.to_owned()),
            // zstd is built in too: the broker must accept what it compresses.
            ("KAFKA_COMPRESSION", "zstd".to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_sasl_ssl_and_a_wrong_password_is_a_clear_error() {
    if TestBroker::from_env().await.unwrap().is_mock() {
        eprintln!("skipped: the mock cluster has no TLS or SASL; this runs on Apache Kafka");
        return;
    }
    let tls = TestTls::new().unwrap();
    let options = KafkaOptions {
        properties: tls.sasl_ssl_listener_properties("SECURE"),
        extra_listener: Some(ExtraListener {
            name: "SECURE".to_owned(),
            protocol: "SASL_SSL".to_owned(),
        }),
        scram_users: vec![scram_user(USER, PASSWORD)],
        ..KafkaOptions::default()
    };
    let broker = TestBroker::Kafka(KafkaCluster::start_nodes(1, options).await.unwrap());
    let TestBroker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    let secure = cluster.extra_bootstrap_servers().unwrap();
    common::create_topics(&broker, 2).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));

    // A wrong password: a clear start-up error, not a hang.
    let raw_bin = service_binary("app-raw");
    let started = Instant::now();
    let refused = raw_command(
        raw_bin,
        &secure_env(&secure, &tls, "wrong"),
        &stub,
        &fake,
        &free_http_addr(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused in {:?}",
        started.elapsed()
    );
    let error_lines: Vec<&str> = said.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(error_lines.len(), 1, "one ERROR line: {error_lines:#?}");
    assert!(
        error_lines[0].contains("Authentication failed"),
        "says why: {}",
        error_lines[0]
    );

    // The right one: trades in, aggregates out, over TLS + SCRAM only.
    let env = secure_env(&secure, &tls, PASSWORD);
    let raw_http = free_http_addr();
    let mut raw = raw_command(raw_bin, &env, &stub, &fake, &raw_http)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agg_http = free_http_addr();
    let mut agg = common::command(&broker, &stub, &agg_http, "tls")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AGG_MAX_DELAY", "1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let raw_path = raw_bin.to_string_lossy();
    assert!(
        wait_for(Duration::from_secs(60), || healthcheck(
            &raw_path, &raw_http
        ) && healthcheck(
            common::bin(),
            &agg_http
        ))
        .await,
        "both services ready over SASL_SSL"
    );
    for _ in 0..30 {
        fake.trade("BTC-PERPETUAL", 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = wait_for(Duration::from_secs(30), || {
        http_get(&raw_http, "/metrics").contains("app_raw_trades_published_total 60\n")
    })
    .await;
    let aggregates = common::wait_for_aggregates(&broker, 2).await;
    for child in [&mut raw, &mut agg] {
        signal(child, "TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
    assert!(published, "all 60 trades acknowledged over SASL_SSL");
    assert!(
        aggregates.len() >= 2,
        "aggregates committed over SASL_SSL: {}",
        aggregates.len()
    );
}
