//! The app-agg binary as a process: ready after assignment, aggregating, scraped, then stopped
//! by SIGTERM with exit code 0.
#![allow(clippy::unwrap_used, clippy::panic, clippy::cast_possible_wrap)] // test helpers

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::config::KafkaConfig;
use adapters_kafka::producer::KafkaTradeSink;
use adapters_kafka::registry::{Registry, RegistryConfig};
use domain::{Trade, testing};
use ports::{TradeBatch, TradeSink};
use testkit::process::{free_http_addr, healthcheck, http_get, now_ms};
use testkit::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becomes_ready_aggregates_serves_metrics_and_stops_cleanly() {
    let (broker, stub) = testkit::topics::pipeline_ground(2).await;
    let http = free_http_addr();
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
        ("AGG_TRANSACTIONAL_ID", "app-agg-process-test".to_owned()),
        ("AGG_WINDOWS", "1s".to_owned()),
        ("AGG_GRACE", "0s".to_owned()),
        ("AGG_MAX_DELAY", "5s".to_owned()),
        ("AGG_COMMIT_INTERVAL", "200ms".to_owned()),
        ("KAFKA_SESSION_TIMEOUT", "3s".to_owned()),
        ("HTTP_ADDR", http.clone()),
        ("RUST_LOG", "warn".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_app-agg"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthcheck = |addr: &str| healthcheck(env!("CARGO_BIN_EXE_app-agg"), addr);
    assert!(
        wait_for(Duration::from_secs(30), || healthcheck(&http)).await,
        "never ready"
    );

    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let sink = KafkaTradeSink::connect(
        &KafkaConfig::new(broker.bootstrap_servers()),
        registry,
        "deribit.trades",
    )
    .await
    .unwrap();
    let start = now_ms();
    let trades: Vec<Trade> = (1..=20u64)
        .flat_map(|seq| {
            ["BTC-PERPETUAL", "ETH-PERPETUAL"]
                .map(|i| testing::trade(i, seq, start + seq as i64 * 50, 100.0, 1.0))
        })
        .collect();
    sink.publish(TradeBatch {
        trades,
        trace: None,
    })
    .await
    .unwrap();
    // app-raw's word that the stream is complete past the trades' windows (1 m by default).
    sink.publish_progress(start + 61_000).await.unwrap();

    let addr = http.clone();
    let done = wait_for(Duration::from_secs(20), move || {
        let m = http_get(&addr, "/metrics");
        m.contains("app_agg_trades_total 40") && !m.contains("app_agg_windows_emitted_total 0")
    })
    .await;
    let metrics = http_get(&http, "/metrics");
    assert!(done, "never aggregated everything:\n{metrics}");
    for name in [
        "app_agg_ready 1",
        "app_agg_trades_late_total 0",
        "app_agg_dlq_records_total 0",
        "otel_spans_dropped_total 0",
        "app_agg_consumer_lag{partition=",
        "app_agg_watermark_lag_seconds{partition=",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    testkit::process::assert_scrape_covers_dashboard(&metrics, "app_agg_");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        testkit::process::exit_code_within(&mut child, Duration::from_secs(10)).await,
        Some(0)
    );
}
