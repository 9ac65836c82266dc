//! The service binary refuses bad configuration with one line and exit code 2.
#![allow(clippy::unwrap_used)] // test helpers

use testkit::process::assert_refuses_config;

#[test]
fn missing_and_malformed_variables_stop_start_up_with_one_line() {
    let base = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
    ];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9")],
            "KAFKA_BOOTSTRAP_SERVERS=\"\": required",
        ),
        (
            vec![("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")],
            "SCHEMA_REGISTRY_URL=\"\": required",
        ),
        (
            [&base[..], &[("AGG_WINDOW", "a while")]].concat(),
            "AGG_WINDOW=\"a while\"",
        ),
        (
            [&base[..], &[("AGG_TRANSACTIONS", "perhaps")]].concat(),
            "AGG_TRANSACTIONS=\"perhaps\"",
        ),
        (
            [&base[..], &[("LOG_FORMAT", "xml")]].concat(),
            "LOG_FORMAT=\"xml\": accepted text or json",
        ),
    ];
    for (vars, expected) in cases {
        assert_refuses_config(env!("CARGO_BIN_EXE_app-agg"), &vars, expected);
    }
}
