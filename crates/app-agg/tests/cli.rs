//! The service binary refuses bad configuration with one line and exit code 2.

use testkit::process::{
    assert_refuses_shared_config, assert_refuses_variable, assert_survives_foreign_bytes,
};

const BINARY: &str = env!("CARGO_BIN_EXE_app-agg");

#[test]
fn missing_required_or_bad_telemetry_variables_stop_start_up_with_one_line() {
    assert_refuses_shared_config(BINARY);
}

#[test]
fn bad_aggregation_settings_stop_start_up_with_one_line() {
    assert_refuses_variable(BINARY, "AGG_WINDOW", "a while", "AGG_WINDOW=\"a while\"");
    assert_refuses_variable(
        BINARY,
        "AGG_TRANSACTIONS",
        "perhaps",
        "AGG_TRANSACTIONS=\"perhaps\"",
    );
}

#[test]
fn bytes_that_are_not_utf8_never_crash_it() {
    assert_survives_foreign_bytes(BINARY);
}
