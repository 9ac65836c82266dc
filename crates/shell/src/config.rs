//! Pieces of environment validation both services use: the one-line error and common checks.

/// A configuration error: one line naming the variable, the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {accepted}")]
pub struct ConfigError {
    /// The variable: a name the service knows, or (a value that is not UTF-8) the name found
    /// in the environment.
    pub variable: std::borrow::Cow<'static, str>,
    /// Its value as given (secrets are never put here).
    pub value: String,
    /// What would have been accepted.
    pub accepted: String,
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`), or an error naming `variable`.
///
/// # Errors
/// [`ConfigError`] with `accepted` as the explanation.
pub fn flag(variable: &'static str, value: &str, accepted: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError {
            variable: variable.into(),
            value: value.to_owned(),
            accepted: accepted.to_owned(),
        }),
    }
}

/// `value` trimmed, or an error naming `variable` when it is blank.
///
/// # Errors
/// [`ConfigError`] with `accepted` as the explanation.
pub fn non_empty(
    variable: &'static str,
    value: &str,
    accepted: &str,
) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ConfigError {
            variable: variable.into(),
            value: value.to_owned(),
            accepted: accepted.to_owned(),
        });
    }
    Ok(trimmed.to_owned())
}

/// `value` if `check` accepts it, else an error naming `variable` with `check`'s explanation.
///
/// # Errors
/// [`ConfigError`] carrying what `check` says is accepted.
pub fn checked(
    variable: &'static str,
    value: String,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, ConfigError> {
    match check(&value) {
        Ok(()) => Ok(value),
        Err(accepted) => Err(ConfigError {
            variable: variable.into(),
            value,
            accepted,
        }),
    }
}

/// A duration variable (`500ms`, `10s`, `1m`).
///
/// # Errors
/// [`ConfigError`] naming `variable` if `value` is not a duration.
pub fn duration(variable: &'static str, value: &str) -> Result<std::time::Duration, ConfigError> {
    crate::duration::parse_duration(value).map_err(|accepted| ConfigError {
        variable: variable.into(),
        value: value.to_owned(),
        accepted,
    })
}

/// A duration variable in whole milliseconds.
///
/// # Errors
/// [`ConfigError`] naming `variable` if `value` is not a whole number of milliseconds.
pub fn millis(variable: &'static str, value: &str) -> Result<i64, ConfigError> {
    crate::duration::parse_millis(value).map_err(|accepted| ConfigError {
        variable: variable.into(),
        value: value.to_owned(),
        accepted,
    })
}

/// Parses `HTTP_ADDR`; `example` (the service's default) goes into the error.
///
/// # Errors
/// [`ConfigError`] if it is not an IP address and port.
pub fn http_addr(value: &str, example: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError {
        variable: "HTTP_ADDR".into(),
        value: value.to_owned(),
        accepted: format!("an IP address and port such as {example}"),
    })
}

/// Names (or prefixes of names) of the variables the services read. A value of one of them
/// that is not UTF-8 is an error naming it; any other variable is none of the services'
/// business, whatever its bytes.
pub const READ_PREFIXES: [&str; 11] = [
    "KAFKA_",
    "SCHEMA_REGISTRY_",
    "DERIBIT_",
    "RAW_",
    "AGG_",
    "OTEL_",
    "HTTP_ADDR",
    "RUST_LOG",
    "LOG_FORMAT",
    "SHUTDOWN_TIMEOUT",
    "HOSTNAME",
];

/// The process environment as UTF-8 pairs (see [`utf8_vars`]); `std::env::vars` would panic on
/// the first variable that is not UTF-8, even one the service never reads.
///
/// # Errors
/// As [`utf8_vars`].
pub fn utf8_env() -> Result<std::collections::HashMap<String, String>, ConfigError> {
    utf8_vars(std::env::vars_os())
}

/// `vars` as UTF-8 pairs: a variable the services read ([`READ_PREFIXES`]) whose value is not
/// UTF-8 is an error naming it; other variables that are not UTF-8 are left out.
///
/// # Errors
/// [`ConfigError`] naming the first read variable whose value is not UTF-8.
pub fn utf8_vars(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    let mut out = std::collections::HashMap::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => {
                out.insert(name, value);
            }
            Err(value) if READ_PREFIXES.iter().any(|p| name.starts_with(p)) => {
                return Err(ConfigError {
                    value: value.to_string_lossy().into_owned(),
                    variable: name.into(),
                    accepted: "valid UTF-8 text".into(),
                });
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// A service's variables: an envconfig struct validated into the service's settings, read from
/// the process environment or (tests) from a map.
pub trait ServiceVariables: envconfig::Envconfig + Sized {
    /// What the variables validate into.
    type Settings;

    /// Validates the variables; `all` supplies pass-through variables (`KAFKA_PROPERTY_*`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid variable.
    fn settings(
        self,
        all: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self::Settings, ConfigError>;

    /// Reads and validates the variables in `vars`.
    ///
    /// # Errors
    /// [`ConfigError`] for a missing required variable or any invalid value.
    fn settings_from(
        vars: &std::collections::HashMap<String, String>,
    ) -> Result<Self::Settings, ConfigError> {
        let variables = Self::init_from_hashmap(vars).map_err(from_envconfig)?;
        variables.settings(vars.iter().map(|(k, v)| (k.clone(), v.clone())))
    }

    /// Reads and validates the process environment.
    ///
    /// # Errors
    /// As [`ServiceVariables::settings_from`], and for a variable the services read whose value
    /// is not UTF-8.
    fn settings_from_env() -> Result<Self::Settings, ConfigError> {
        Self::settings_from(&utf8_env()?)
    }
}

/// envconfig's error as ours.
// By value: it is the `map_err` adapter for envconfig's error.
#[allow(clippy::needless_pass_by_value)]
#[must_use]
pub fn from_envconfig(e: envconfig::Error) -> ConfigError {
    match e {
        envconfig::Error::EnvVarMissing { name } => ConfigError {
            variable: name.into(),
            value: String::new(),
            accepted: "required, not set".into(),
        },
        envconfig::Error::ParseError { name } => ConfigError {
            variable: name.into(),
            value: String::new(),
            accepted: "a valid value".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_bytes_are_an_error_only_in_a_variable_the_services_read() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |b: &[u8]| std::ffi::OsString::from_vec(b.to_vec());
        let vars = || {
            vec![
                (bytes(b"FOO"), bytes(b"\xff")),
                (bytes(b"\xfe"), bytes(b"x")),
                (bytes(b"AGG_WINDOW"), bytes(b"1m")),
            ]
        };
        let read = utf8_vars(vars()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read["AGG_WINDOW"], "1m");
        let mut hostile = vars();
        hostile.push((bytes(b"KAFKA_PROPERTY_CLIENT_ID"), bytes(b"a\xffb")));
        assert_eq!(
            utf8_vars(hostile).unwrap_err().to_string(),
            "KAFKA_PROPERTY_CLIENT_ID=\"a\u{fffd}b\": valid UTF-8 text"
        );
    }

    #[test]
    fn checks_name_the_variable_value_and_accepted_form() {
        assert_eq!(non_empty("X", "  a ", "a name").unwrap(), "a");
        assert_eq!(
            non_empty("X", "  ", "a name").unwrap_err().to_string(),
            "X=\"  \": a name"
        );
        assert_eq!(
            http_addr(" 127.0.0.1:80 ", "0.0.0.0:8080").unwrap().port(),
            80
        );
        assert_eq!(
            http_addr("nowhere", "0.0.0.0:8080")
                .unwrap_err()
                .to_string(),
            "HTTP_ADDR=\"nowhere\": an IP address and port such as 0.0.0.0:8080"
        );
    }
}
