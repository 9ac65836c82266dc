//! Settings declared once: each setting's variable, default, parser, secrecy and help line are
//! written in one place, a [`declare_settings!`](crate::declare_settings) block, and that one
//! declaration drives reading the environment (through envconfig), `check-config`'s output and
//! the configuration reference in `docs/`.
//!
//! A block declares two structs: the raw variables (envconfig, every field `Option<String>`)
//! and the typed settings, plus `DECLARED`, the table of [`Declared`] settings. Parsers take the
//! value with its default applied (`None` when unset and without a default) and say what they
//! accept; [`required`] and [`optional`] turn a parser of text into one of those.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ConfigError;

/// One declared setting, as `check-config` and the docs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The environment variable.
    pub variable: &'static str,
    /// Its default, as text; `None` when it has none.
    pub default: Option<&'static str>,
    /// Whether its value is a secret (never printed).
    pub secret: bool,
    /// One line saying what it sets (a doc comment's text: it may start with a space).
    pub help: &'static str,
}

/// A parser of a setting's value (its default applied): the value, or what it accepts.
pub type Parser<T> = fn(Option<&str>) -> Result<T, String>;

/// Reads one declared setting from its raw value.
///
/// # Errors
/// [`ConfigError`] naming the variable, the value (hidden for a secret, a URL's password always)
/// and what is accepted.
pub fn read<T>(
    declared: &Declared,
    raw: Option<&str>,
    parse: impl FnOnce(Option<&str>) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = raw.or(declared.default);
    parse(value).map_err(|accepted| ConfigError {
        variable: declared.variable.into(),
        value: match (declared.secret, value) {
            (true, Some(_)) => "(hidden)".to_owned(),
            // A URL's password is hidden even in a value that is refused.
            (_, value) => crate::check_config::printable(value.unwrap_or_default()),
        },
        accepted,
    })
}

/// A parser of a setting that must have a value, from a parser of its text.
///
/// # Errors
/// `required, not set` when there is no value, else what `parse` says.
pub fn required<T>(value: Option<&str>, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    match value {
        Some(text) if !text.trim().is_empty() => parse(text.trim()),
        _ => Err("required, not set".to_owned()),
    }
}

/// A parser of a setting that may be unset (or blank), from a parser of its text.
///
/// # Errors
/// What `parse` says of a value that is set.
pub fn optional<T>(
    value: Option<&str>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match value {
        Some(text) if !text.trim().is_empty() => parse(text.trim()).map(Some),
        _ => Ok(None),
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`).
///
/// # Errors
/// What is accepted, for anything else.
pub fn flag(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("true or false".to_owned()),
    }
}

/// A positive duration (`500ms`, `10s`, `1m`, `7d` is not: days are `168h`).
///
/// # Errors
/// What is accepted, for anything else.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "a positive duration such as 500ms, 10s, 1m or 24h".to_owned())
}

/// A socket address (`0.0.0.0:8092`).
///
/// # Errors
/// What is accepted, for anything else.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "an IP address and port such as 0.0.0.0:8092".to_owned())
}

/// Any non-blank text.
///
/// # Errors
/// Never: blank text is handled by [`required`] and [`optional`].
pub fn text(text: &str) -> Result<String, String> {
    Ok(text.to_owned())
}

/// A value as `check-config` prints it.
pub trait Shown {
    /// The value, as the variable would be written to get it.
    fn shown(&self) -> String;
}

impl Shown for bool {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl Shown for Duration {
    fn shown(&self) -> String {
        crate::duration_text(*self)
    }
}

impl Shown for SocketAddr {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u32 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref().map(Shown::shown).unwrap_or_default()
    }
}

/// How a secret prints: whether it is set, never its value.
#[must_use]
pub fn hidden(set: bool) -> String {
    if set { "(set, hidden)" } else { "(not set)" }.to_owned()
}

/// The configuration reference of a service as a Markdown table: one row per declared setting.
#[must_use]
pub fn reference(declared: &[Declared]) -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for setting in declared {
        let default = match setting.default {
            Some("") | None => "—".to_owned(),
            Some(value) => format!("`{value}`"),
        };
        let secret = if setting.secret { " (secret)" } else { "" };
        table.push_str(&format!(
            "| `{}` | {default} | {}{secret} |\n",
            setting.variable,
            // A `|` in the text would end the cell.
            setting.help.trim().replace('|', "\\|")
        ));
    }
    table
}

/// Declares a service's settings once. Each field names its type, its parser (a
/// [`Parser`]), its variable, optionally `default = "…"` and `secret`, and a one-line doc
/// comment that is its help line (`secret = true` hides its value):
///
/// ```ignore
/// shell::declare_settings! {
///     /// The variables app-sql reads.
///     pub struct SqlVariables => SqlSettings {
///         /// Load trades into `trades`.
///         trades: bool = |v| required(v, flag), "SQL_TRADES", default = "true";
///     }
/// }
/// ```
///
/// The caller has `envconfig::Envconfig` in scope (the derive names it). It generates the
/// envconfig struct `SqlVariables` (each field an `Option<String>`), the typed
/// `SqlSettings`, `SqlVariables::DECLARED` (the [`Declared`] table), `SqlVariables::parse`
/// (every value read through its parser, the first failure as a [`ConfigError`]) and
/// `SqlSettings::effective` (`check-config`'s lines, secrets hidden).
#[macro_export]
macro_rules! declare_settings {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $raw:ident => $typed:ident {
            $(
                #[doc = $help:literal]
                $field:ident : $ty:ty = $parse:expr, $var:literal
                    $(, default = $default:literal)? $(, secret = $secret:tt)? ;
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(envconfig::Envconfig)]
        $vis struct $raw {
            $(
                #[doc = $help]
                #[envconfig(from = $var)]
                pub $field: Option<String>,
            )*
        }

        $(#[doc = $doc])*
        #[derive(Clone)]
        $vis struct $typed {
            $(
                #[doc = $help]
                pub $field: $ty,
            )*
        }

        impl $raw {
            /// Every setting as declared: variable, default, secrecy, help.
            pub const DECLARED: &'static [$crate::settings::Declared] = &[
                $( $crate::declare_settings!(@declared $var, $help $(, $default)? ; $($secret)?), )*
            ];

            /// Reads every setting through its parser.
            ///
            /// # Errors
            /// The first setting whose value its parser refuses.
            pub fn parse(self) -> Result<$typed, $crate::ConfigError> {
                Ok($typed {
                    $(
                        $field: {
                            let parse: $crate::settings::Parser<$ty> = $parse;
                            $crate::settings::read(
                                &$crate::declare_settings!(@declared $var, $help $(, $default)? ; $($secret)?),
                                self.$field.as_deref(),
                                parse,
                            )?
                        },
                    )*
                })
            }
        }

        impl $typed {
            /// `check-config`'s lines: every setting as its variable and the value in use,
            /// secrets hidden.
            #[allow(unused_imports)]
            pub fn effective(&self) -> Vec<(String, String)> {
                use $crate::settings::Shown as _;
                vec![
                    $(
                        (
                            $var.to_owned(),
                            $crate::declare_settings!(@show self.$field $(, $secret)?),
                        ),
                    )*
                ]
            }
        }
    };
    (@declared $var:literal, $help:literal $(, $default:literal)? ; $($secret:tt)?) => {
        $crate::settings::Declared {
            variable: $var,
            default: $crate::declare_settings!(@default $($default)?),
            secret: $crate::declare_settings!(@secret $($secret)?),
            help: $help,
        }
    };
    (@default) => { None };
    (@default $default:literal) => { Some($default) };
    (@secret) => { false };
    (@secret $secret:tt) => { $secret };
    (@show $value:expr) => { $value.shown() };
    (@show $value:expr, false) => { $value.shown() };
    (@show $value:expr, true) => { $crate::settings::hidden($crate::settings::Secret::is_set(&$value)) };
}

/// A secret setting's value: whether it is set is all `check-config` shows.
pub trait Secret {
    /// Whether a value was given.
    fn is_set(&self) -> bool;
}

impl<T> Secret for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envconfig::Envconfig;
    use std::collections::HashMap;

    #[derive(Clone, Debug, PartialEq)]
    struct Token(String);

    impl Secret for Token {
        fn is_set(&self) -> bool {
            true
        }
    }

    fn token(text: &str) -> Result<Token, String> {
        Ok(Token(text.to_owned()))
    }

    crate::declare_settings! {
        /// Test variables.
        struct TestVariables => TestSettings {
            /// Whether to do it.
            enabled: bool = |v| required(v, flag), "T_ENABLED", default = "true";
            /// How often.
            every: Duration = |v| required(v, positive_duration), "T_EVERY", default = "1s";
            /// Where.
            addr: Option<SocketAddr> = |v| optional(v, socket_addr), "T_ADDR";
            /// The key.
            key: Token = |v| required(v, token), "T_KEY", secret = true;
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TestSettings, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TestVariables::init_from_hashmap(&vars)
            .map_err(crate::config::from_envconfig)?
            .parse()
    }

    #[test]
    fn one_declaration_reads_defaults_checks_values_and_hides_secrets() {
        let settings = parse(&[("T_KEY", "hunter2")]).unwrap();
        assert!(settings.enabled);
        assert_eq!(settings.every, Duration::from_secs(1));
        assert_eq!(settings.addr, None);
        assert_eq!(
            settings.effective(),
            [
                ("T_ENABLED", "true"),
                ("T_EVERY", "1s"),
                ("T_ADDR", ""),
                ("T_KEY", "(set, hidden)"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let refused = |pairs: &[(&str, &str)]| parse(pairs).err().unwrap().to_string();
        assert_eq!(refused(&[]), "T_KEY=\"\": required, not set");
        assert_eq!(
            refused(&[("T_KEY", "k"), ("T_EVERY", "0s")]),
            "T_EVERY=\"0s\": a positive duration such as 500ms, 10s, 1m or 24h"
        );
        assert_eq!(
            refused(&[("T_KEY", "k"), ("T_ENABLED", "maybe")]),
            "T_ENABLED=\"maybe\": true or false"
        );
    }

    #[test]
    fn a_refused_secret_is_never_echoed() {
        fn never(_: &str) -> Result<Token, String> {
            Err("a token".to_owned())
        }
        let declared = Declared {
            variable: "T_KEY",
            default: None,
            secret: true,
            help: "The key.",
        };
        let error = read(&declared, Some("hunter2"), |v| required(v, never)).unwrap_err();
        assert_eq!(error.to_string(), "T_KEY=\"(hidden)\": a token");
    }

    #[test]
    fn the_reference_has_a_row_per_setting() {
        let table = reference(TestVariables::DECLARED);
        assert!(
            table.contains("| `T_EVERY` | `1s` | How often. |"),
            "{table}"
        );
        assert!(
            table.contains("| `T_KEY` | — | The key. (secret) |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + TestVariables::DECLARED.len());
    }
}
