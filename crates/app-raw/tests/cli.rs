//! The binary refuses bad configuration with one line and exit code 2.
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
            [&base[..], &[("DERIBIT_CHANNELS", "trades.nope")]].concat(),
            "DERIBIT_CHANNELS=\"trades.nope\"",
        ),
        (
            [&base[..], &[("DERIBIT_CHANNELS", "trades.option.ETH.raw")]].concat(),
            "Deribit serves `raw` only to authenticated clients",
        ),
        (
            [&base[..], &[("LOG_FORMAT", "yaml")]].concat(),
            "LOG_FORMAT=\"yaml\": accepted text or json",
        ),
        (
            [&base[..], &[("OTEL_SDK_DISABLED", "1")]].concat(),
            "OTEL_SDK_DISABLED=\"1\": accepted true or false",
        ),
        (
            [&base[..], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4317")]].concat(),
            "OTEL_EXPORTER_OTLP_ENDPOINT=\"jaeger:4317\"",
        ),
    ];
    for (vars, expected) in cases {
        assert_refuses_config(env!("CARGO_BIN_EXE_app-raw"), &vars, expected);
    }
}
