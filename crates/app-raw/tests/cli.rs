//! The binary refuses bad configuration with one line and exit code 2.

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
