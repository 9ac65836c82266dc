//! A `log` question ("is debug enabled?") does not make tracing drop its own next event
//! (tokio-rs/tracing#2519: rdkafka asks at every `ClientConfig::new()`); `log` records still
//! reach the log, filtered by `RUST_LOG`.
//!
//! The checks run in a child process of this test binary: `init` installs the process-wide
//! subscriber, and the lines are read from the child's standard output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use telemetry::{LogFormat, TelemetryConfig};

/// Set in the child: emit instead of checking. Its value says whether spans are exported.
const CHILD: &str = "TELEMETRY_LOG_BRIDGE_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_questions_lose_no_event_and_log_records_are_filtered() {
    if let Some(export) = std::env::var_os(CHILD) {
        emit(export == "export");
        return;
    }
    for export in ["off", "export"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "log_questions_lose_no_event_and_log_records_are_filtered",
                "--nocapture",
            ])
            .env(CHILD, export)
            // A debug directive for some target is what made the next line disappear.
            .env("RUST_LOG", "info,some_crate=debug")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "spans {export}: {stdout}");
        for line in [
            "after a question",
            "after an unwanted record",
            "a wanted record",
        ] {
            assert!(
                stdout.contains(line),
                "spans {export}: {line:?} missing from:\n{stdout}"
            );
        }
        assert!(!stdout.contains("unwanted debug"), "{stdout}");
    }
}

fn emit(export: bool) {
    // A port that was free a moment ago: spans go nowhere, but their layer and filter are there.
    let closed = testkit::process::free_http_addr();
    let config = TelemetryConfig {
        log_format: LogFormat::Text,
        otel_disabled: !export,
        otlp_endpoint: format!("http://{closed}"),
    };
    let _telemetry = telemetry::init("log-bridge-test", &config).unwrap();
    let question = log::Metadata::builder()
        .level(log::Level::Debug)
        .target("librdkafka")
        .build();
    let _ = log::logger().enabled(&question);
    tracing::info!("after a question");
    log::debug!(target: "other_crate", "unwanted debug");
    tracing::info!("after an unwanted record");
    log::info!(target: "other_crate", "a wanted record");
}
