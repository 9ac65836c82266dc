//! The service binary refuses bad configuration with one line and exit code 2.

use testkit::process::{
    assert_refuses_shared_config, assert_refuses_variable, assert_survives_foreign_bytes,
    check_config_output,
};

const BINARY: &str = env!("CARGO_BIN_EXE_app-agg");

#[test]
fn missing_required_or_bad_telemetry_variables_stop_start_up_with_one_line() {
    assert_refuses_shared_config(BINARY);
}

#[test]
fn bad_aggregation_settings_stop_start_up_with_one_line() {
    assert_refuses_variable(BINARY, "AGG_WINDOWS", "a while", "AGG_WINDOWS=\"a while\"");
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

#[test]
fn check_config_prints_each_setting_as_the_variable_and_the_value_in_use() {
    let settings = check_config_output(
        BINARY,
        &[
            ("AGG_WINDOWS", "3m,90s"),
            ("AGG_TRANSACTIONAL_ID", "agg-a"),
            ("SCHEMA_REGISTRY_USER", "reader"),
            ("SCHEMA_REGISTRY_PASSWORD", "hunter2"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "s3cret"),
            ("KAFKA_PROPERTY_CLIENT_ID", "desk-7"),
        ],
    );
    let get = |name: &str| settings.get(name).map(String::as_str);
    // Set, defaulted and derived values, each in the form the variable takes.
    assert_eq!(get("AGG_WINDOWS"), Some("90s,3m"));
    assert_eq!(get("AGG_HALFLIVES"), Some("30s,5m"));
    assert_eq!(get("AGG_GRACE"), Some("0s"));
    assert_eq!(get("AGG_WATERMARK"), Some("markers"));
    assert_eq!(get("AGG_MARKER_TIMEOUT"), Some("30s"));
    assert_eq!(get("AGG_TRANSACTIONAL_ID"), Some("agg-a"));
    assert_eq!(get("HTTP_ADDR"), Some("0.0.0.0:8091"));
    assert_eq!(get("KAFKA_PROPERTY_CLIENT_ID"), Some("desk-7"));
    assert_eq!(get("SCHEMA_REGISTRY_USER"), Some("reader"));
    assert_eq!(get("LOG_FORMAT"), Some("text"));
    // Secrets: whether they are set, never their value.
    assert_eq!(get("SCHEMA_REGISTRY_PASSWORD"), Some("(set, hidden)"));
    assert_eq!(get("KAFKA_PROPERTY_SASL_PASSWORD"), Some("(set, hidden)"));
    let all: String = settings.values().cloned().collect();
    assert!(
        !all.contains("hunter2") && !all.contains("s3cret"),
        "{settings:?}"
    );
}
