//! The `check-config` subcommand: every setting printed as the variable that sets it and the
//! value the service will use, secrets hidden, nothing connected to.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use telemetry::{LogFormat, TelemetryConfig};

use crate::run::refuse;

/// Settings as `check-config` prints them: each as the variable that sets it and the value the
/// service will use, secrets hidden.
pub trait Effective {
    /// `(variable, value)` pairs, in the order of the README's tables.
    fn effective(&self) -> Vec<(String, String)>;
}

/// A duration as the variables take it, in its largest whole unit (`1m`, `90s`, `500ms`).
#[must_use]
pub fn duration_text(duration: std::time::Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    const UNITS: [(&str, u128); 6] = [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    UNITS
        .iter()
        .find(|(_, size)| nanos.is_multiple_of(*size))
        .map_or_else(
            || format!("{nanos}ns"),
            |(unit, size)| format!("{}{unit}", nanos / size),
        )
}

/// A value as `check-config` prints it: on one line (a PEM's newlines as `\n`), and a URL's
/// password (`https://user:secret@host`) hidden.
#[must_use]
pub fn printable(value: &str) -> String {
    let one_line = value.replace('\r', "\\r").replace('\n', "\\n");
    let Some((scheme, rest)) = one_line.split_once("://") else {
        return one_line;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!(
                "{scheme}://{user}:(hidden)@{host}{}",
                &rest[authority_end..]
            )
        }
        None => one_line,
    }
}

/// The `check-config` subcommand: validates `settings` and the telemetry variables as the
/// service would, prints every setting as `VARIABLE=value` (the value the service will use,
/// defaults included, secrets hidden), connects to nothing.
pub fn check_config_command<S: Effective, E: Display>(
    service: &str,
    settings: Result<S, E>,
) -> ExitCode {
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => return refuse(service, &e),
    };
    match TelemetryConfig::from_env() {
        Ok(telemetry) => {
            let mut text = format!("{service}: configuration OK\n");
            for (variable, value) in settings
                .effective()
                .into_iter()
                .chain(telemetry.effective())
            {
                text.push_str(&format!("{variable}={}\n", printable(&value)));
            }
            // `| head` closing the pipe early is fine.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => refuse(service, &e),
    }
}

impl Effective for TelemetryConfig {
    fn effective(&self) -> Vec<(String, String)> {
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        vec![
            ("LOG_FORMAT".into(), format.into()),
            ("OTEL_SDK_DISABLED".into(), self.otel_disabled.to_string()),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                self.otlp_endpoint.clone(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        let text = |ms| duration_text(Duration::from_millis(ms));
        assert_eq!(text(0), "0s");
        assert_eq!(text(60_000), "1m");
        assert_eq!(text(90_000), "90s");
        assert_eq!(text(7_200_000), "2h");
        assert_eq!(text(1_500), "1500ms");
        assert_eq!(duration_text(Duration::from_micros(1_500)), "1500us");
    }

    #[test]
    fn values_print_on_one_line_without_a_url_password() {
        assert_eq!(
            printable("https://reader:hunter2@registry:8081/path?q=1"),
            "https://reader:(hidden)@registry:8081/path?q=1"
        );
        assert_eq!(printable("http://registry:8081"), "http://registry:8081");
        assert_eq!(
            printable("http://token@host/a@b"),
            "http://token:(hidden)@host/a@b"
        );
        assert_eq!(
            printable("-----BEGIN\nabc\n-----END"),
            "-----BEGIN\\nabc\\n-----END"
        );
        assert_eq!(printable("a@b"), "a@b");
    }
}
