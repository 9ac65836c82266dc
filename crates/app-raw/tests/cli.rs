//! The binary refuses bad configuration with one line and exit code 2; help, version and the
//! healthcheck answer plainly.
#![allow(clippy::unwrap_used)] // test helpers

use testkit::process::{
    assert_refuses_shared_config, assert_refuses_variable, assert_survives_foreign_bytes,
    check_config_output,
};

const BINARY: &str = env!("CARGO_BIN_EXE_app-raw");

#[test]
fn missing_required_or_bad_telemetry_variables_stop_start_up_with_one_line() {
    assert_refuses_shared_config(BINARY);
}

#[test]
fn bad_deribit_channels_stop_start_up_with_one_line() {
    assert_refuses_variable(
        BINARY,
        "DERIBIT_CHANNELS",
        "trades.nope",
        "DERIBIT_CHANNELS=\"trades.nope\"",
    );
    assert_refuses_variable(
        BINARY,
        "DERIBIT_CHANNELS",
        "trades.option.ETH.raw",
        "Deribit serves `raw` only to authenticated clients",
    );
}

#[test]
fn bytes_that_are_not_utf8_never_crash_it() {
    assert_survives_foreign_bytes(BINARY);
}

#[test]
fn help_and_version_answer_on_stdout_with_exit_zero() {
    for flag in ["--help", "-h"] {
        let out = std::process::Command::new(BINARY)
            .arg(flag)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert!(
            text.contains("check-config") && text.contains("healthcheck"),
            "{text}"
        );
    }
    let out = std::process::Command::new(BINARY)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("app-raw {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_failing_healthcheck_says_why() {
    let port = testkit::process::free_port();
    let out = std::process::Command::new(BINARY)
        .arg("healthcheck")
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with("app-raw healthcheck: not ready: cannot connect to 127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_each_setting_as_the_variable_and_the_value_in_use() {
    let settings = check_config_output(
        BINARY,
        &[
            ("DERIBIT_CLIENT_ID", "desk"),
            ("DERIBIT_CLIENT_SECRET", "hunter2"),
            ("DERIBIT_HEARTBEAT", "30s"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            (
                "SCHEMA_REGISTRY_URL",
                "https://reader:hunter2@registry:8081",
            ),
        ],
    );
    let get = |name: &str| settings.get(name).map(String::as_str);
    assert_eq!(
        get("DERIBIT_CHANNELS"),
        Some("trades.future.BTC.100ms,trades.option.BTC.100ms")
    );
    assert_eq!(get("DERIBIT_HEARTBEAT"), Some("30s"));
    assert_eq!(get("DERIBIT_CLIENT_ID"), Some("desk"));
    assert_eq!(get("DERIBIT_CLIENT_SECRET"), Some("(set, hidden)"));
    assert_eq!(get("KAFKA_COMPRESSION"), Some("lz4"));
    assert_eq!(get("RAW_TOPIC"), Some("deribit.trades"));
    assert_eq!(get("SCHEMA_REGISTRY_PASSWORD"), Some("(not set)"));
    assert_eq!(
        get("SCHEMA_REGISTRY_URL"),
        Some("https://reader:(hidden)@registry:8081")
    );
    assert_eq!(get("HTTP_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        Some("http://collector:4317")
    );
    assert!(
        !settings.values().any(|v| v.contains("hunter2")),
        "{settings:?}"
    );
}

#[test]
fn log_lines_on_a_pipe_carry_no_colour_codes() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(BINARY)
        .env_clear()
        .envs(testkit::process::REQUIRED_VARS)
        .env("HTTP_ADDR", testkit::process::free_http_addr())
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing answers on port 9: it logs its start and its wait for the broker.
    std::thread::sleep(std::time::Duration::from_secs(2));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(" INFO "), "some log lines: {text}");
    assert!(!text.contains('\u{1b}'), "escape codes on a pipe: {text:?}");
}
