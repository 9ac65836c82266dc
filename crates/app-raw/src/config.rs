//! app-raw's configuration: environment variables read with envconfig, then validated into
//! [`Settings`] with one-line errors that name the variable, the value and what is accepted.

use std::fmt;
use std::time::Duration;

use adapters_deribit::config::{DEFAULT_CHANNELS, PRODUCTION_URL};
use adapters_deribit::{Channel, Credentials, DeribitConfig, Setting};
use adapters_kafka::config::{NOT_SET, shown_secret};
use envconfig::Envconfig;
use shell::broker::{Broker, BrokerVariables, check_kafka};
use shell::config::{duration, http_addr, non_empty};
use shell::{Effective, duration_text};

/// The raw variables (strings; checked by [`RawConfig::settings`]).
#[derive(Envconfig)]
pub struct RawConfig {
    /// Deribit WebSocket endpoint.
    #[envconfig(from = "DERIBIT_URL", default = "wss://www.deribit.com/ws/api/v2")]
    pub deribit_url: String,
    /// Comma-separated trades channels.
    #[envconfig(
        from = "DERIBIT_CHANNELS",
        default = "trades.future.BTC.100ms,trades.option.BTC.100ms"
    )]
    pub deribit_channels: String,
    /// API client id (optional; needed for `raw` channels).
    #[envconfig(from = "DERIBIT_CLIENT_ID")]
    pub deribit_client_id: Option<String>,
    /// API client secret (never logged).
    #[envconfig(from = "DERIBIT_CLIENT_SECRET")]
    pub deribit_client_secret: Option<String>,
    /// `public/set_heartbeat` interval.
    #[envconfig(from = "DERIBIT_HEARTBEAT", default = "10s")]
    pub deribit_heartbeat: String,
    /// Subtracted from Deribit's clock for its notification batching.
    #[envconfig(from = "DERIBIT_COMPLETENESS_MARGIN", default = "1s")]
    pub deribit_completeness_margin: String,
    /// At most one progress marker per this (and Deribit's clock is read as often).
    #[envconfig(from = "RAW_PROGRESS_INTERVAL", default = "1s")]
    pub raw_progress_interval: String,
    /// Id on this deployment's progress markers; several app-raw writing one topic need
    /// different ones.
    #[envconfig(from = "RAW_WRITER_ID", default = "app-raw")]
    pub raw_writer_id: String,
    /// Kafka and the Schema Registry, as app-agg reads them.
    #[envconfig(nested)]
    pub broker: BrokerVariables,
    /// Topic the trades go to.
    #[envconfig(from = "RAW_TOPIC", default = "deribit.trades")]
    pub raw_topic: String,
    /// Producer compression.
    #[envconfig(from = "KAFKA_COMPRESSION", default = "lz4")]
    pub kafka_compression: String,
    /// How long shutdown may take to flush.
    #[envconfig(from = "SHUTDOWN_TIMEOUT", default = "10s")]
    pub shutdown_timeout: String,
    /// Address of the `/healthz`, `/readyz`, `/metrics` endpoint.
    #[envconfig(from = "HTTP_ADDR", default = "0.0.0.0:8080")]
    pub http_addr: String,
}

pub use shell::ConfigError;
pub use shell::config::ServiceVariables;

/// Everything app-raw needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Deribit feed.
    pub deribit: DeribitConfig,
    /// Kafka (with the producer's compression) and the Schema Registry.
    pub broker: Broker,
    /// Raw topic.
    pub topic: String,
    /// Progress marker pace.
    pub progress_interval: Duration,
    /// Id on progress markers.
    pub writer_id: String,
    /// Flush deadline at shutdown.
    pub shutdown_timeout: Duration,
    /// Where the health and metrics endpoint listens.
    pub http_addr: std::net::SocketAddr,
}

impl Effective for Settings {
    fn effective(&self) -> Vec<(String, String)> {
        let channels: Vec<String> = self
            .deribit
            .channels
            .iter()
            .map(ToString::to_string)
            .collect();
        let credentials = self.deribit.credentials.as_ref();
        let mut variables: Vec<(String, String)> = vec![
            ("DERIBIT_URL".into(), self.deribit.url.clone()),
            ("DERIBIT_CHANNELS".into(), channels.join(",")),
            (
                "DERIBIT_CLIENT_ID".into(),
                credentials.map_or_else(|| NOT_SET.into(), |c| c.client_id.clone()),
            ),
            (
                "DERIBIT_CLIENT_SECRET".into(),
                shown_secret(credentials.map(|c| c.client_secret.as_str())),
            ),
            (
                "DERIBIT_HEARTBEAT".into(),
                duration_text(self.deribit.heartbeat_interval),
            ),
            (
                "DERIBIT_COMPLETENESS_MARGIN".into(),
                duration_text(self.deribit.completeness_margin),
            ),
            (
                "RAW_PROGRESS_INTERVAL".into(),
                duration_text(self.progress_interval),
            ),
            ("RAW_WRITER_ID".into(), self.writer_id.clone()),
        ];
        variables.extend(self.broker.effective(vec![(
            "KAFKA_COMPRESSION".into(),
            self.broker.kafka.compression.clone(),
        )]));
        variables.extend([
            ("RAW_TOPIC".into(), self.topic.clone()),
            (
                "SHUTDOWN_TIMEOUT".into(),
                duration_text(self.shutdown_timeout),
            ),
            ("HTTP_ADDR".into(), self.http_addr.to_string()),
        ]);
        variables
    }
}

/// Partitions of a raw topic app-raw creates (`KAFKA_CREATE_TOPICS`), as in compose.
pub const DEFAULT_PARTITIONS: i32 = 6;

impl ServiceVariables for RawConfig {
    type Settings = Settings;

    /// Validates the variables; `all` supplies the `KAFKA_PROPERTY_*` pass-through.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid variable.
    fn settings(
        self,
        all: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let url = non_empty(
            "DERIBIT_URL",
            &self.deribit_url,
            &format!("a wss:// URL such as {PRODUCTION_URL}"),
        )?;
        let channels = Channel::parse_list(&self.deribit_channels).map_err(|e| ConfigError {
            variable: "DERIBIT_CHANNELS".into(),
            value: self.deribit_channels.clone(),
            accepted: format!("{e} (default {DEFAULT_CHANNELS})"),
        })?;
        let mut deribit = DeribitConfig::new(url, channels);
        deribit.heartbeat_interval = duration("DERIBIT_HEARTBEAT", &self.deribit_heartbeat)?;
        deribit.completeness_margin = duration(
            "DERIBIT_COMPLETENESS_MARGIN",
            &self.deribit_completeness_margin,
        )?;
        let progress_interval = duration("RAW_PROGRESS_INTERVAL", &self.raw_progress_interval)?;
        if progress_interval < Duration::from_millis(100) {
            return Err(ConfigError {
                variable: "RAW_PROGRESS_INTERVAL".into(),
                value: self.raw_progress_interval,
                accepted: "at least 100ms (each one reads Deribit's clock)".into(),
            });
        }
        deribit.progress_interval = progress_interval;
        let writer_id = self.raw_writer_id.trim().to_owned();
        if writer_id.is_empty() || writer_id.len() > adapters_kafka::progress::MAX_WRITER_LEN {
            return Err(ConfigError {
                variable: "RAW_WRITER_ID".into(),
                value: self.raw_writer_id,
                accepted: format!(
                    "1 to {} bytes, one id per app-raw deployment writing the topic",
                    adapters_kafka::progress::MAX_WRITER_LEN
                ),
            });
        }
        deribit.credentials = match (self.deribit_client_id, self.deribit_client_secret) {
            (Some(client_id), Some(client_secret)) => Some(Credentials {
                client_id,
                client_secret,
            }),
            (None, None) => None,
            (Some(id), None) => {
                return Err(ConfigError {
                    variable: "DERIBIT_CLIENT_SECRET".into(),
                    value: String::new(),
                    accepted: format!("set together with DERIBIT_CLIENT_ID (given: {id:?})"),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    variable: "DERIBIT_CLIENT_ID".into(),
                    value: String::new(),
                    accepted: "set together with DERIBIT_CLIENT_SECRET".into(),
                });
            }
        };
        if let Err(e) = deribit.validate() {
            let (variable, value) = match &e {
                adapters_deribit::Error::Config { setting, .. } => match setting {
                    Setting::HeartbeatInterval => ("DERIBIT_HEARTBEAT", self.deribit_heartbeat),
                    Setting::Channels => ("DERIBIT_CHANNELS", self.deribit_channels),
                    Setting::ProgressInterval => {
                        ("RAW_PROGRESS_INTERVAL", self.raw_progress_interval)
                    }
                    Setting::Url => ("DERIBIT_URL", deribit.url),
                    // No variable sets these; their built-in values are valid.
                    Setting::Limits | Setting::Backoff => ("DERIBIT_*", String::new()),
                },
                _ => ("DERIBIT_*", String::new()),
            };
            return Err(ConfigError {
                variable: variable.into(),
                value,
                accepted: e.to_string(),
            });
        }
        let mut broker = self.broker.settings(all)?;
        const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.kafka_compression.as_str()) {
            return Err(ConfigError {
                variable: "KAFKA_COMPRESSION".into(),
                value: self.kafka_compression,
                accepted: format!("one of {CODECS:?}"),
            });
        }
        broker.kafka.compression = self.kafka_compression;
        // Again with the codec: librdkafka refuses one this build lacks.
        check_kafka(&broker.kafka)?;
        let topic = non_empty("RAW_TOPIC", &self.raw_topic, "a Kafka topic name")?;
        let shutdown_timeout = duration("SHUTDOWN_TIMEOUT", &self.shutdown_timeout)?;
        let http_addr = http_addr(&self.http_addr, "0.0.0.0:8080")?;
        Ok(Settings {
            deribit,
            broker,
            topic,
            progress_interval,
            writer_id,
            shutdown_timeout,
            http_addr,
        })
    }
}

impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        testkit::process::required_env_with(pairs)
    }

    #[test]
    fn defaults_need_only_kafka_and_the_registry() {
        let settings = RawConfig::settings_from(&vars(&[])).unwrap();
        assert_eq!(settings.deribit.url, PRODUCTION_URL);
        assert_eq!(settings.deribit.channels.len(), 2);
        assert_eq!(settings.topic, "deribit.trades");
        assert_eq!(settings.broker.kafka.compression, "lz4");
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn each_bad_value_names_the_variable_the_value_and_the_accepted_form() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (
                &[("DERIBIT_CHANNELS", "book.BTC.100ms")],
                "DERIBIT_CHANNELS=\"book.BTC.100ms\": invalid channel",
            ),
            (
                &[("DERIBIT_CHANNELS", "trades.future.BTC.raw")],
                "DERIBIT_CHANNELS=\"trades.future.BTC.raw\": channel trades.future.BTC.raw needs credentials",
            ),
            (
                &[("DERIBIT_HEARTBEAT", "ten")],
                "DERIBIT_HEARTBEAT=\"ten\": invalid duration \"ten\"",
            ),
            (
                &[("DERIBIT_HEARTBEAT", "5s")],
                "DERIBIT_HEARTBEAT=\"5s\": heartbeat interval 5s is below",
            ),
            (
                &[("KAFKA_COMPRESSION", "brotli")],
                "KAFKA_COMPRESSION=\"brotli\": one of",
            ),
            (
                &[("SCHEMA_REGISTRY_URL", "registry:8081")],
                "SCHEMA_REGISTRY_URL=\"registry:8081\": an http(s):// URL",
            ),
            (
                &[("DERIBIT_CLIENT_ID", "abc")],
                "DERIBIT_CLIENT_SECRET=\"\": set together with DERIBIT_CLIENT_ID",
            ),
            (
                &[("SHUTDOWN_TIMEOUT", "-1s")],
                "SHUTDOWN_TIMEOUT=\"-1s\": invalid duration \"-1s\"",
            ),
        ];
        for (pairs, expected) in cases {
            let message = RawConfig::settings_from(&vars(pairs))
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn required_variables_are_named_when_missing() {
        let mut v = vars(&[]);
        v.remove("KAFKA_BOOTSTRAP_SERVERS");
        assert_eq!(
            RawConfig::settings_from(&v).unwrap_err().to_string(),
            "KAFKA_BOOTSTRAP_SERVERS=\"\": required, not set"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let settings = RawConfig::settings_from(&vars(&[
            ("DERIBIT_CLIENT_ID", "id"),
            ("DERIBIT_CLIENT_SECRET", "s3cr3t"),
            ("SCHEMA_REGISTRY_USER", "u"),
            ("SCHEMA_REGISTRY_PASSWORD", "hunter2"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "pw-123"),
        ]))
        .unwrap();
        let debug = format!("{settings:?}");
        for secret in ["s3cr3t", "hunter2", "pw-123"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }
}
