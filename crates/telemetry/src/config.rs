//! Pieces of environment validation both services use: the one-line error and common checks.

/// A configuration error: one line naming the variable, the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {accepted}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
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
            variable,
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
            variable,
            value: value.to_owned(),
            accepted: accepted.to_owned(),
        });
    }
    Ok(trimmed.to_owned())
}

/// Parses `HTTP_ADDR`; `example` (the service's default) goes into the error.
///
/// # Errors
/// [`ConfigError`] if it is not an IP address and port.
pub fn http_addr(value: &str, example: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError {
        variable: "HTTP_ADDR",
        value: value.to_owned(),
        accepted: format!("an IP address and port such as {example}"),
    })
}

/// envconfig's error as ours.
// By value: it is the `map_err` adapter for envconfig's error.
#[allow(clippy::needless_pass_by_value)]
#[must_use]
pub fn from_envconfig(e: envconfig::Error) -> ConfigError {
    match e {
        envconfig::Error::EnvVarMissing { name } => ConfigError {
            variable: name,
            value: String::new(),
            accepted: "required, not set".into(),
        },
        envconfig::Error::ParseError { name } => ConfigError {
            variable: name,
            value: String::new(),
            accepted: "a valid value".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
