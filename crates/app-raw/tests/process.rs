//! The app-raw binary as a process: ready, scraped, then stopped by SIGTERM within 10 s.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::process::{free_http_addr, healthcheck, http_get};
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becomes_ready_serves_metrics_and_stops_cleanly_on_sigterm() {
    let broker = TestBroker::from_env().await.unwrap();
    broker
        .create_topic("deribit.trades", 3, false)
        .await
        .unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    let http = free_http_addr();
    let env = [
        ("DERIBIT_URL", fake.url()),
        (
            "DERIBIT_CHANNELS",
            "trades.future.BTC.100ms,trades.ETH-PERPETUAL.100ms".to_owned(),
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("HTTP_ADDR", http.clone()),
        ("RUST_LOG", "warn".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_app-raw"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthcheck = |addr: &str| healthcheck(env!("CARGO_BIN_EXE_app-raw"), addr);
    let ready = wait_for(Duration::from_secs(30), || healthcheck(&http)).await;
    assert!(ready, "app-raw healthcheck never passed");
    fake.trade("BTC-PERPETUAL", 5);
    fake.trade("ETH-PERPETUAL", 3);
    let addr = http.clone();
    let published = wait_for(Duration::from_secs(20), move || {
        http_get(&addr, "/metrics").contains("app_raw_trades_published_total 8")
    })
    .await;
    assert!(published, "metrics never showed 8 published trades");
    let metrics = http_get(&http, "/metrics");
    for name in [
        "app_raw_trades_received_total 8",
        "app_raw_reconnects_total 0",
        "app_raw_subscribed 1",
        "app_raw_trade_latency_ms_count 8",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    testkit::process::assert_scrape_covers_dashboard(&metrics, "app_raw_");

    let stopping = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = wait_for(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(exited, "app-raw did not stop within 10 s of SIGTERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(10));
    assert!(!healthcheck(&http), "nothing answers after shutdown");
    assert!(!healthcheck("not an address"));
}
