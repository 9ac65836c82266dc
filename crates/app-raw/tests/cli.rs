//! The binary refuses bad configuration with one line and exit code 2; help, version and the
//! healthcheck answer plainly.
#![allow(clippy::unwrap_used)] // test helpers

use testkit::process::{
    assert_refuses_shared_config, assert_refuses_variable, assert_survives_foreign_bytes,
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
