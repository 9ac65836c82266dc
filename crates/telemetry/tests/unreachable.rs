//! An unreachable collector costs nothing but the spans: no blocking, a bounded shutdown, a count.
//!
//! Its own test binary: `init` installs the process-wide subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use telemetry::{LogFormat, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_dropped_and_counted_and_shutdown_is_bounded() {
    // A port that was free a moment ago: nothing listens there.
    let closed = testkit::process::free_http_addr();
    let config = TelemetryConfig {
        log_format: LogFormat::Text,
        otel_disabled: false,
        otlp_endpoint: format!("http://{closed}"),
    };
    let guard = telemetry::init("telemetry-test", &config).unwrap();
    let started = Instant::now();
    for i in 0..5_000 {
        let span = tracing::info_span!("work", i);
        let _entered = span.enter();
    }
    let creating = started.elapsed();
    assert!(
        creating < Duration::from_secs(1),
        "5,000 spans took {creating:?}"
    );
    let stopping = Instant::now();
    guard.shutdown();
    let shutdown = stopping.elapsed();
    assert!(
        shutdown < Duration::from_secs(5),
        "shutdown took {shutdown:?}"
    );
    let stats = telemetry::export_stats();
    assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    assert!(
        stats.dropped.load(Ordering::Relaxed) > 0,
        "failed exports are counted"
    );
    assert!(stats.failed_exports.load(Ordering::Relaxed) > 0);
}
