//! app-agg's service configuration: environment variables read with envconfig, then validated
//! into [`Settings`] with one-line errors naming the variable, the value and what is accepted.

use std::time::Duration;

use adapters_kafka::commit::{CommitConfig, late_topic};
use adapters_kafka::consumer::{LogConfig, dlq_topic};
use adapters_kafka::topics::TopicSpec;
use domain::{AggregatorConfig, WatermarkRule, WindowSize};
use envconfig::Envconfig;
use shell::broker::{Broker, BrokerVariables};
use shell::config::{flag, http_addr, millis, non_empty};
use shell::duration::parse_millis_list;
use shell::{Effective, duration_text};

/// The raw variables (strings; checked by [`AggConfig::settings`]).
#[derive(Envconfig)]
pub struct AggConfig {
    /// Kafka and the Schema Registry, as app-raw reads them.
    #[envconfig(nested)]
    pub broker: BrokerVariables,
    /// Topic with the raw trades.
    #[envconfig(from = "RAW_TOPIC", default = "deribit.trades")]
    pub raw_topic: String,
    /// Topic the aggregates go to.
    #[envconfig(from = "AGG_TOPIC", default = "deribit.trades.agg")]
    pub agg_topic: String,
    /// Compacted state changelog (as many partitions as the raw topic).
    #[envconfig(from = "AGG_CHANGELOG_TOPIC", default = "deribit.trades.agg.state")]
    pub agg_changelog_topic: String,
    /// Consumer group.
    #[envconfig(from = "AGG_GROUP_ID", default = "app-agg")]
    pub agg_group_id: String,
    /// Bar sizes, comma-separated (default `1m`); larger ones are rolled up from the smallest
    /// and must be multiples of it.
    #[envconfig(from = "AGG_WINDOWS")]
    pub agg_windows: Option<String>,
    /// One bar size: the older name of `AGG_WINDOWS`, read when that is unset.
    #[envconfig(from = "AGG_WINDOW")]
    pub agg_window: Option<String>,
    /// EWMA half-lives, comma-separated.
    #[envconfig(from = "AGG_HALFLIVES", default = "30s,5m")]
    pub agg_halflives: String,
    /// How long after its end a window still accepts trades (beyond the watermark).
    #[envconfig(from = "AGG_GRACE", default = "0s")]
    pub agg_grace: String,
    /// What closes windows: `markers` (app-raw's progress markers) or `trades` (for raw topics
    /// without markers: trade time, and wall clock when caught up).
    #[envconfig(from = "AGG_WATERMARK", default = "markers")]
    pub agg_watermark: String,
    /// With `AGG_WATERMARK=markers`: a partition without a marker this long is not ready.
    #[envconfig(from = "AGG_MARKER_TIMEOUT", default = "30s")]
    pub agg_marker_timeout: String,
    /// With `AGG_WATERMARK=trades`: when caught up, the watermark follows wall-clock time minus
    /// this.
    #[envconfig(from = "AGG_MAX_DELAY", default = "10s")]
    pub agg_max_delay: String,
    /// Commit cycle period.
    #[envconfig(from = "AGG_COMMIT_INTERVAL", default = "1s")]
    pub agg_commit_interval: String,
    /// One Kafka transaction per cycle (needs Apache Kafka; `false` for brokers without them).
    #[envconfig(from = "AGG_TRANSACTIONS", default = "true")]
    pub agg_transactions: String,
    /// `transactional.id`, stable per instance (default `app-agg-<host name>`).
    #[envconfig(from = "AGG_TRANSACTIONAL_ID")]
    pub agg_transactional_id: Option<String>,
    /// Host name, for the default transactional id.
    #[envconfig(from = "HOSTNAME")]
    pub hostname: Option<String>,
    /// Consumer `session.timeout.ms`.
    #[envconfig(from = "KAFKA_SESSION_TIMEOUT", default = "10s")]
    pub kafka_session_timeout: String,
    /// Address of the `/healthz`, `/readyz`, `/metrics` endpoint (8091: Schema Registry has 8081).
    #[envconfig(from = "HTTP_ADDR", default = "0.0.0.0:8091")]
    pub http_addr: String,
}

pub use shell::ConfigError;
pub use shell::config::ServiceVariables;

/// Everything the service needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka and the Schema Registry.
    pub broker: Broker,
    /// The trade log (raw topic, group).
    pub log: LogConfig,
    /// The commit port (topics, transactions).
    pub commit: CommitConfig,
    /// Windows, grace, watermark rule, half-lives.
    pub aggregator: AggregatorConfig,
    /// A partition without a progress marker this long makes the service not ready (markers
    /// rule only).
    pub marker_timeout: Option<Duration>,
    /// Commit cycle period.
    pub commit_interval: Duration,
    /// Where the health and metrics endpoint listens.
    pub http_addr: std::net::SocketAddr,
}

impl Settings {
    /// The topics app-agg needs: the raw topic, its changelog (compacted, partitioned like
    /// it), the aggregates, the dead-letter and the late-trades topic; created with these
    /// partition counts.
    pub fn topics(&self) -> Vec<TopicSpec> {
        vec![
            TopicSpec::new(&self.log.topic, DEFAULT_PARTITIONS),
            TopicSpec::compacted_like(&self.commit.changelog_topic, &self.log.topic),
            TopicSpec::new(&self.commit.aggregates_topic, AGGREGATE_PARTITIONS),
            TopicSpec::new(dlq_topic(&self.log.topic), 1),
            TopicSpec::new(&self.commit.late_topic, 1),
        ]
    }
}

impl Effective for Settings {
    fn effective(&self) -> Vec<(String, String)> {
        let ms = |ms: i64| duration_text(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let halflives: Vec<String> = self
            .aggregator
            .halflives_ms()
            .iter()
            .map(|&h| ms(h))
            .collect();
        let mut variables = self.broker.effective(vec![(
            "KAFKA_SESSION_TIMEOUT".into(),
            duration_text(self.log.session_timeout),
        )]);
        variables.extend([
            ("RAW_TOPIC".into(), self.log.topic.clone()),
            ("AGG_TOPIC".into(), self.commit.aggregates_topic.clone()),
            (
                "AGG_CHANGELOG_TOPIC".into(),
                self.commit.changelog_topic.clone(),
            ),
            ("AGG_GROUP_ID".into(), self.log.group_id.clone()),
            (
                "AGG_WINDOWS".into(),
                self.aggregator
                    .window_sizes()
                    .map(|w| ms(w.millis()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("AGG_HALFLIVES".into(), halflives.join(",")),
            ("AGG_GRACE".into(), ms(self.aggregator.grace_ms())),
        ]);
        match self.aggregator.rule() {
            WatermarkRule::Markers => variables.push(("AGG_WATERMARK".into(), "markers".into())),
            WatermarkRule::TradeTime { max_delay_ms } => variables.extend([
                ("AGG_WATERMARK".into(), "trades".into()),
                ("AGG_MAX_DELAY".into(), ms(max_delay_ms)),
            ]),
        }
        if let Some(timeout) = self.marker_timeout {
            variables.push(("AGG_MARKER_TIMEOUT".into(), duration_text(timeout)));
        }
        variables.extend([
            (
                "AGG_COMMIT_INTERVAL".into(),
                duration_text(self.commit_interval),
            ),
            (
                "AGG_TRANSACTIONS".into(),
                self.commit.transactional_id.is_some().to_string(),
            ),
        ]);
        if let Some(id) = &self.commit.transactional_id {
            variables.push(("AGG_TRANSACTIONAL_ID".into(), id.clone()));
        }
        variables.push(("HTTP_ADDR".into(), self.http_addr.to_string()));
        variables
    }
}

/// Partitions of a raw topic app-agg creates (`KAFKA_CREATE_TOPICS`), as in compose.
pub const DEFAULT_PARTITIONS: i32 = 6;
/// Partitions of an aggregates topic app-agg creates.
pub const AGGREGATE_PARTITIONS: i32 = 3;

fn positive(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let ms = millis(variable, value)?;
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| ConfigError {
            variable: variable.into(),
            value: value.to_owned(),
            accepted: "a positive duration such as 1s".into(),
        })
}

/// `KAFKA_SESSION_TIMEOUT` within what brokers and librdkafka accept.
fn session_timeout(value: &str) -> Result<Duration, ConfigError> {
    let timeout = positive("KAFKA_SESSION_TIMEOUT", value)?;
    if (Duration::from_secs(1)..=Duration::from_secs(1_800)).contains(&timeout) {
        return Ok(timeout);
    }
    Err(ConfigError {
        variable: "KAFKA_SESSION_TIMEOUT".into(),
        value: value.to_owned(),
        accepted: "a duration from 1s to 30m (brokers accept 6s to 30m by default)".into(),
    })
}

/// The aggregates and changelog topics may not be the raw topic, its dead-letter or late-trades
/// topic, or each other: the service would read its own output or compact its input.
fn distinct_topics(commit: &CommitConfig) -> Result<(), ConfigError> {
    let dlq = dlq_topic(&commit.source_topic);
    let mut taken = vec![
        ("RAW_TOPIC", commit.source_topic.as_str()),
        ("RAW_TOPIC's dead-letter topic", dlq.as_str()),
        ("RAW_TOPIC's late-trades topic", commit.late_topic.as_str()),
    ];
    for (variable, topic) in [
        ("AGG_TOPIC", &commit.aggregates_topic),
        ("AGG_CHANGELOG_TOPIC", &commit.changelog_topic),
    ] {
        if let Some((other, _)) = taken.iter().find(|(_, name)| name == topic) {
            return Err(ConfigError {
                variable: variable.into(),
                value: topic.clone(),
                accepted: format!("a topic of its own, not the same as {other}"),
            });
        }
        taken.push((variable, topic));
    }
    Ok(())
}

/// Splits bar sizes (ms, any order) into the smallest, which trades are folded into, and the
/// larger ones rolled up from it.
///
/// # Errors
/// [`domain::Error::InvalidConfig`] for an empty list or a size that is not positive; the
/// multiples are checked by [`AggregatorConfig::with_rollups`].
pub fn bar_sizes(sizes_ms: &[i64]) -> Result<(WindowSize, Vec<WindowSize>), domain::Error> {
    let mut sizes = sizes_ms
        .iter()
        .map(|&ms| WindowSize::from_millis(ms))
        .collect::<Result<Vec<_>, _>>()?;
    sizes.sort_unstable_by_key(|w| w.millis());
    if let Some(twice) = sizes.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(domain::Error::InvalidConfig(format!(
            "window {} ms is listed twice",
            twice[0].millis()
        )));
    }
    if sizes.is_empty() {
        return Err(domain::Error::InvalidConfig(
            "at least one window size is needed".into(),
        ));
    }
    let smallest = sizes.remove(0);
    Ok((smallest, sizes))
}

/// The kernel's host name (Linux), for when `HOSTNAME` is not exported.
fn kernel_host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

impl ServiceVariables for AggConfig {
    type Settings = Settings;

    /// Validates the variables; `all` supplies the `KAFKA_PROPERTY_*` pass-through.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid variable.
    fn settings(
        self,
        all: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let broker = self.broker.settings(all)?;
        let (windows_variable, windows) = match (&self.agg_windows, &self.agg_window) {
            (Some(list), Some(one)) if list.trim() != one.trim() => {
                return Err(ConfigError {
                    variable: "AGG_WINDOW".into(),
                    value: one.clone(),
                    accepted: format!(
                        "unset: AGG_WINDOWS={list} is set and takes its place (one variable, not both)"
                    ),
                });
            }
            (Some(list), _) => ("AGG_WINDOWS", list.clone()),
            (None, Some(one)) => ("AGG_WINDOW", one.clone()),
            (None, None) => ("AGG_WINDOWS", "1m".to_owned()),
        };
        let bad_windows = |accepted: String| ConfigError {
            variable: windows_variable.into(),
            value: windows.clone(),
            accepted,
        };
        let sizes = parse_millis_list(&windows).map_err(bad_windows)?;
        let (window, rollups) = bar_sizes(&sizes).map_err(|e| bad_windows(e.to_string()))?;
        let halflives = parse_millis_list(&self.agg_halflives).map_err(|accepted| ConfigError {
            variable: "AGG_HALFLIVES".into(),
            value: self.agg_halflives.clone(),
            accepted,
        })?;
        let grace = millis("AGG_GRACE", &self.agg_grace)?;
        if grace < 0 {
            return Err(ConfigError {
                variable: "AGG_GRACE".into(),
                value: self.agg_grace,
                accepted: "a duration ≥ 0 such as 0s or 2s".into(),
            });
        }
        let (rule, marker_timeout) = match self.agg_watermark.trim() {
            "markers" => (
                WatermarkRule::Markers,
                Some(positive("AGG_MARKER_TIMEOUT", &self.agg_marker_timeout)?),
            ),
            "trades" => {
                let max_delay_ms = millis("AGG_MAX_DELAY", &self.agg_max_delay)?;
                if max_delay_ms < 0 {
                    return Err(ConfigError {
                        variable: "AGG_MAX_DELAY".into(),
                        value: self.agg_max_delay,
                        accepted: "a duration ≥ 0 such as 10s".into(),
                    });
                }
                (WatermarkRule::TradeTime { max_delay_ms }, None)
            }
            _ => {
                return Err(ConfigError {
                    variable: "AGG_WATERMARK".into(),
                    value: self.agg_watermark,
                    accepted: "markers (app-raw's progress markers close windows) or trades (for a raw topic without markers)".into(),
                });
            }
        };
        let aggregator =
            AggregatorConfig::new(window, grace, rule, halflives).map_err(|e| ConfigError {
                variable: "AGG_HALFLIVES".into(),
                value: self.agg_halflives.clone(),
                accepted: e.to_string(),
            })?;
        let aggregator = aggregator
            .with_rollups(rollups)
            .map_err(|e| bad_windows(e.to_string()))?;
        let transactions = flag(
            "AGG_TRANSACTIONS",
            &self.agg_transactions,
            "true or false (false for brokers without transactions)",
        )?;
        let transactional_id = match (transactions, self.agg_transactional_id) {
            (false, _) => None,
            (true, Some(id)) => Some(id),
            // Shells do not export HOSTNAME: the kernel's name keeps two hosts' ids apart.
            (true, None) => match self.hostname.or_else(kernel_host_name) {
                Some(host) => Some(format!("app-agg-{host}")),
                None => {
                    return Err(ConfigError {
                        variable: "AGG_TRANSACTIONAL_ID".into(),
                        value: String::new(),
                        accepted: "required when the host name cannot be read: an id stable across restarts, unique per instance".into(),
                    });
                }
            },
        };
        let raw_topic = non_empty("RAW_TOPIC", &self.raw_topic, "a Kafka topic name")?;
        let log = LogConfig {
            topic: raw_topic.clone(),
            group_id: non_empty("AGG_GROUP_ID", &self.agg_group_id, "a consumer group id")?,
            session_timeout: session_timeout(&self.kafka_session_timeout)?,
            // The transactional id is stable across restarts and unique per live instance,
            // which is what a static group member's id must be.
            instance_id: transactional_id.clone(),
        };
        let commit = CommitConfig {
            aggregates_topic: non_empty("AGG_TOPIC", &self.agg_topic, "a Kafka topic name")?,
            changelog_topic: non_empty(
                "AGG_CHANGELOG_TOPIC",
                &self.agg_changelog_topic,
                "a Kafka topic name",
            )?,
            late_topic: late_topic(&raw_topic),
            source_topic: raw_topic,
            transactional_id,
            timeout: Duration::from_secs(30),
        };
        distinct_topics(&commit)?;
        let commit_interval = positive("AGG_COMMIT_INTERVAL", &self.agg_commit_interval)?;
        let http_addr = http_addr(&self.http_addr, "0.0.0.0:8091")?;
        Ok(Settings {
            broker,
            log,
            commit,
            aggregator,
            marker_timeout,
            commit_interval,
            http_addr,
        })
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
        let s = AggConfig::settings_from(&vars(&[("HOSTNAME", "agg-7")])).unwrap();
        assert_eq!(s.aggregator.window().millis(), 60_000);
        assert_eq!(s.aggregator.halflives_ms(), &[30_000, 300_000]);
        assert_eq!(
            (s.aggregator.grace_ms(), s.aggregator.rule()),
            (0, WatermarkRule::Markers)
        );
        assert_eq!(s.marker_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.commit.late_topic, "deribit.trades.late");
        let trades = AggConfig::settings_from(&vars(&[("AGG_WATERMARK", "trades")])).unwrap();
        assert_eq!(
            (trades.aggregator.rule(), trades.marker_timeout),
            (
                WatermarkRule::TradeTime {
                    max_delay_ms: 10_000
                },
                None
            )
        );
        assert_eq!(s.commit_interval, Duration::from_secs(1));
        assert_eq!(s.commit.transactional_id.as_deref(), Some("app-agg-agg-7"));
        assert_eq!(
            (s.log.topic.as_str(), s.commit.aggregates_topic.as_str()),
            ("deribit.trades", "deribit.trades.agg")
        );
    }

    #[test]
    fn each_bad_value_names_the_variable_the_value_and_the_accepted_form() {
        let cases: [(&[(&str, &str)], &str); 22] = [
            (
                &[("RAW_TOPIC", "x"), ("AGG_TOPIC", "x")],
                "AGG_TOPIC=\"x\": a topic of its own, not the same as RAW_TOPIC",
            ),
            (
                &[("AGG_CHANGELOG_TOPIC", "deribit.trades")],
                "AGG_CHANGELOG_TOPIC=\"deribit.trades\": a topic of its own, not the same as RAW_TOPIC",
            ),
            (
                &[("AGG_CHANGELOG_TOPIC", "deribit.trades.agg")],
                "AGG_CHANGELOG_TOPIC=\"deribit.trades.agg\": a topic of its own, not the same as AGG_TOPIC",
            ),
            (
                &[("AGG_TOPIC", "deribit.trades.dlq")],
                "AGG_TOPIC=\"deribit.trades.dlq\": a topic of its own, not the same as RAW_TOPIC's dead-letter topic",
            ),
            (
                &[("KAFKA_BOOTSTRAP_SERVERS", "notaport")],
                "KAFKA_BOOTSTRAP_SERVERS=\"notaport\": host:port[,host:port…] (entry \"notaport\" is not host:port",
            ),
            (
                &[("KAFKA_SESSION_TIMEOUT", "1ms")],
                "KAFKA_SESSION_TIMEOUT=\"1ms\": a duration from 1s to 30m",
            ),
            (
                &[("KAFKA_SESSION_TIMEOUT", "2h")],
                "KAFKA_SESSION_TIMEOUT=\"2h\": a duration from 1s to 30m",
            ),
            (
                &[("SCHEMA_REGISTRY_USER", "u")],
                "SCHEMA_REGISTRY_PASSWORD=\"\": required: SCHEMA_REGISTRY_USER is set",
            ),
            (
                &[("AGG_WATERMARK", "wallclock")],
                "AGG_WATERMARK=\"wallclock\": markers (app-raw's progress markers close windows) or trades",
            ),
            (
                &[("AGG_MARKER_TIMEOUT", "0s")],
                "AGG_MARKER_TIMEOUT=\"0s\": a positive duration",
            ),
            (&[("AGG_GRACE", "-1s")], "AGG_GRACE=\"-1s\": "),
            (
                &[("AGG_WINDOW", "soon")],
                "AGG_WINDOW=\"soon\": invalid duration",
            ),
            (
                &[("AGG_WINDOW", "0s")],
                "AGG_WINDOW=\"0s\": invalid aggregator config: window size must be > 0 ms",
            ),
            (
                &[("AGG_WINDOWS", "1m,90s")],
                "AGG_WINDOWS=\"1m,90s\": invalid aggregator config: window 90000 ms is not a multiple of the smallest window (60000 ms)",
            ),
            (
                &[("AGG_WINDOWS", "5m,1m,5m")],
                "AGG_WINDOWS=\"5m,1m,5m\": invalid aggregator config: window 300000 ms is listed twice",
            ),
            (
                &[("AGG_WINDOWS", "1m,0s")],
                "AGG_WINDOWS=\"1m,0s\": invalid aggregator config: window size must be > 0 ms",
            ),
            (
                &[("AGG_WINDOWS", "1m,5m"), ("AGG_WINDOW", "5m")],
                "AGG_WINDOW=\"5m\": unset: AGG_WINDOWS=1m,5m is set and takes its place",
            ),
            (
                &[("AGG_HALFLIVES", "30s,30s")],
                "AGG_HALFLIVES=\"30s,30s\": invalid aggregator config: half-life 30000 ms is listed twice",
            ),
            (
                &[("AGG_HALFLIVES", "")],
                "AGG_HALFLIVES=\"\": expected at least one duration",
            ),
            (
                &[("AGG_TRANSACTIONS", "maybe")],
                "AGG_TRANSACTIONS=\"maybe\": true or false",
            ),
            (
                &[("AGG_COMMIT_INTERVAL", "0s")],
                "AGG_COMMIT_INTERVAL=\"0s\": a positive duration",
            ),
            (
                &[("SCHEMA_REGISTRY_URL", "registry")],
                "SCHEMA_REGISTRY_URL=\"registry\": an http(s):// URL",
            ),
        ];
        for (pairs, expected) in cases {
            let message = AggConfig::settings_from(&vars(pairs))
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(expected), "{message}");
        }
        let mut v = vars(&[]);
        v.remove("SCHEMA_REGISTRY_URL");
        assert_eq!(
            AggConfig::settings_from(&v).unwrap_err().to_string(),
            "SCHEMA_REGISTRY_URL=\"\": required, not set"
        );
    }

    #[test]
    fn several_bar_sizes_come_from_agg_windows_in_any_order() {
        let s = AggConfig::settings_from(&vars(&[("AGG_WINDOWS", "1h, 1m,5m")])).unwrap();
        let sizes: Vec<i64> = s
            .aggregator
            .window_sizes()
            .map(WindowSize::millis)
            .collect();
        assert_eq!(sizes, [60_000, 300_000, 3_600_000]);
        assert!(
            s.effective()
                .contains(&("AGG_WINDOWS".into(), "1m,5m,1h".into())),
            "{:?}",
            s.effective()
        );
        // The older single-size name still works when AGG_WINDOWS is unset.
        let one = AggConfig::settings_from(&vars(&[("AGG_WINDOW", "5m")])).unwrap();
        assert_eq!(one.aggregator.window().millis(), 300_000);
        assert!(one.aggregator.rollups().is_empty());
    }

    #[test]
    fn the_default_transactional_id_names_the_host_even_without_hostname_exported() {
        let exported = AggConfig::settings_from(&vars(&[("HOSTNAME", "agg-7")])).unwrap();
        assert_eq!(
            exported.commit.transactional_id.as_deref(),
            Some("app-agg-agg-7")
        );
        let mut v = vars(&[]);
        v.remove("HOSTNAME");
        let kernel = kernel_host_name().unwrap();
        let s = AggConfig::settings_from(&v).unwrap();
        assert_eq!(s.commit.transactional_id, Some(format!("app-agg-{kernel}")));
        assert_ne!(s.commit.transactional_id.as_deref(), Some("app-agg-0"));
        assert_eq!(s.http_addr.port(), 8091, "not Schema Registry's 8081");
    }

    #[test]
    fn transactions_off_means_no_transactional_id() {
        let s = AggConfig::settings_from(&vars(&[("AGG_TRANSACTIONS", "false")])).unwrap();
        assert_eq!(s.commit.transactional_id, None);
    }
}
