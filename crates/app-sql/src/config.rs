//! app-sql's settings, each declared once ([`shell::declare_settings!`]): the declaration reads
//! the environment, prints `check-config` and writes the reference in `docs/configuration.md`.
//! Kafka and the Schema Registry are the block every service reads ([`BrokerVariables`]).

use std::net::SocketAddr;
use std::time::Duration;

use adapters_kafka::source::SourceConfig;
use adapters_kafka::topics::TopicSpec;
use adapters_postgres::{DatabaseUrl, StoreConfig};
use envconfig::Envconfig;
use shell::broker::{Broker, BrokerVariables};
use shell::settings::{Shown, flag, optional, positive_duration, required, socket_addr, text};
use shell::{ConfigError, Effective};

pub use shell::config::ServiceVariables;

/// The default of `HTTP_ADDR`, as declared (8092: app-agg has 8091, the registry 8081).
#[must_use]
pub fn default_http_addr() -> &'static str {
    SqlVariables::DECLARED
        .iter()
        .find(|d| d.variable == "HTTP_ADDR")
        .and_then(|d| d.default)
        .unwrap_or_default()
}

/// A `DatabaseUrl` as a setting: `check-config` prints it with the password hidden.
#[derive(Debug, Clone)]
pub struct Database(pub DatabaseUrl);

impl Shown for Database {
    fn shown(&self) -> String {
        self.0.redacted()
    }
}

fn database_url(text: &str) -> Result<Database, String> {
    text.parse().map(Database)
}

/// A schema name app-sql can put in a search path unquoted: lower-case letters, digits and `_`,
/// not starting with a digit, at most 63 bytes (PostgreSQL's limit).
fn schema_name(text: &str) -> Result<String, String> {
    let plain = text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(text.to_owned())
    } else {
        Err("a schema name of lower-case letters, digits and _ (at most 63), such as public".into())
    }
}

/// A batch interval from 1 ms to 1 h (a longer one would hold rows for no reason, and one far
/// beyond the clock's range would overflow its timer).
fn batch_interval(text: &str) -> Result<Duration, String> {
    positive_duration(text)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| "a duration from 1ms to 1h, such as 500ms".to_owned())
}

/// A session timeout librdkafka and brokers accept.
fn session_timeout(text: &str) -> Result<Duration, String> {
    positive_duration(text)
        .ok()
        .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(1800)).contains(d))
        .ok_or_else(|| "a duration from 1s to 30m (brokers accept 6s to 30m by default)".to_owned())
}

fn rows(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| "a number of rows from 1 to 1000000".to_owned())
}

/// Retention in whole days, at least one (partitions are dropped a day at a time).
fn retention(text: &str) -> Result<Duration, String> {
    positive_duration(text)
        .ok()
        .filter(|d| d.as_secs() >= 86_400 && d.as_secs().is_multiple_of(86_400))
        .ok_or_else(|| "whole days of at least one, in hours: 24h, 720h (30 days)".to_owned())
}

shell::declare_settings! {
    /// The variables only app-sql reads.
    pub struct SqlVariables => SqlSettings {
        /// PostgreSQL to write to (libpq URL; `sslmode=disable|prefer|require|verify-full`, `sslrootcert=FILE`).
        database_url: Database = |v| required(v, database_url), "DATABASE_URL";
        /// Schema the tables are created and read in.
        schema: String = |v| required(v, schema_name), "SQL_SCHEMA", default = "public";
        /// Load the raw topic's trades into `trades`.
        trades: bool = |v| required(v, flag), "SQL_TRADES", default = "true";
        /// Load the aggregates topic's bars into `bars`.
        bars: bool = |v| required(v, flag), "SQL_BARS", default = "true";
        /// Topic with the raw trades.
        raw_topic: String = |v| required(v, text), "RAW_TOPIC", default = "deribit.trades";
        /// Topic with the bars.
        agg_topic: String = |v| required(v, text), "AGG_TOPIC", default = "deribit.trades.agg";
        /// Consumer group (its offsets are advisory: positions live in the database).
        group_id: String = |v| required(v, text), "SQL_GROUP_ID", default = "app-sql";
        /// Rows per database transaction at most.
        batch_rows: usize = |v| required(v, rows), "SQL_BATCH_ROWS", default = "20000";
        /// Rows read are written at least this often.
        batch_interval: Duration = |v| required(v, batch_interval), "SQL_BATCH_INTERVAL", default = "500ms";
        /// Keep trades this long (whole days), dropping day partitions past it; unset keeps all.
        trades_retention: Option<Duration> = |v| optional(v, retention), "SQL_TRADES_RETENTION";
        /// Consumer `session.timeout.ms`.
        session_timeout: Duration = |v| required(v, session_timeout), "KAFKA_SESSION_TIMEOUT", default = "10s";
        /// Address of `/healthz`, `/readyz` and `/metrics`.
        http_addr: SocketAddr = |v| required(v, socket_addr), "HTTP_ADDR", default = "0.0.0.0:8092";
        /// Host name, part of the writer id stored with each position.
        hostname: Option<String> = |v| optional(v, text), "HOSTNAME";
    }
}

/// Every variable app-sql reads: the broker block and its own.
#[derive(Envconfig)]
pub struct SqlConfig {
    /// Kafka and the Schema Registry, as the other services read them.
    #[envconfig(nested)]
    pub broker: BrokerVariables,
    /// app-sql's own.
    #[envconfig(nested)]
    pub sql: SqlVariables,
}

/// Everything app-sql needs, validated.
#[derive(Clone)]
pub struct Settings {
    /// Kafka and the Schema Registry.
    pub broker: Broker,
    /// app-sql's own settings.
    pub sql: SqlSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("broker", &self.broker)
            .field("database", &self.sql.database_url.0)
            .finish_non_exhaustive()
    }
}

impl ServiceVariables for SqlConfig {
    type Settings = Settings;

    fn settings(
        self,
        all: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let broker = self.broker.settings(all)?;
        let sql = self.sql.parse()?;
        if !sql.trades && !sql.bars {
            return Err(ConfigError {
                variable: "SQL_BARS".into(),
                value: "false".into(),
                accepted: "true, or SQL_TRADES=true: with both false there is nothing to load"
                    .into(),
            });
        }
        if sql.trades && sql.bars && sql.raw_topic == sql.agg_topic {
            return Err(ConfigError {
                variable: "AGG_TOPIC".into(),
                value: sql.agg_topic,
                accepted: "a topic other than RAW_TOPIC".into(),
            });
        }
        Ok(Settings { broker, sql })
    }
}

impl Effective for Settings {
    fn effective(&self) -> Vec<(String, String)> {
        let mut lines = self.broker.effective(Vec::new());
        lines.extend(self.sql.effective());
        lines
    }
}

impl Settings {
    /// The topics app-sql reads; it never creates them (app-raw and app-agg own them).
    pub fn topics(&self) -> Vec<TopicSpec> {
        self.source()
            .trades_topic
            .iter()
            .chain(self.source().bars_topic.iter())
            .map(|t| TopicSpec::new(t, 1))
            .collect()
    }

    /// What the source reads.
    pub fn source(&self) -> SourceConfig {
        SourceConfig {
            trades_topic: self.sql.trades.then(|| self.sql.raw_topic.clone()),
            bars_topic: self.sql.bars.then(|| self.sql.agg_topic.clone()),
            group_id: self.sql.group_id.clone(),
            session_timeout: self.sql.session_timeout,
        }
    }

    /// What the store needs; `started_ms` makes this process's writer id unique.
    pub fn store(&self, started_ms: i64) -> StoreConfig {
        let host = self.sql.hostname.as_deref().unwrap_or("localhost");
        StoreConfig {
            url: self.sql.database_url.0.clone(),
            schema: self.sql.schema.clone(),
            group: self.sql.group_id.clone(),
            writer: format!(
                "{}/{host}/{}/{started_ms}",
                self.sql.group_id,
                std::process::id()
            ),
            retention: self.sql.trades_retention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut vars = testkit::process::required_env_with(pairs);
        vars.entry("DATABASE_URL".into())
            .or_insert_with(|| "postgres://app:pw@db:5432/market".into());
        SqlConfig::settings_from(&vars)
    }

    #[test]
    fn defaults_and_check_config_lines() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.sql.http_addr.to_string(), default_http_addr());
        assert_eq!(s.sql.batch_interval, Duration::from_millis(500));
        let lines = s.effective();
        let line = |name: &str| {
            lines
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            line("DATABASE_URL").as_deref(),
            Some("postgres://app:(hidden)@db:5432/market")
        );
        assert_eq!(line("SQL_TRADES_RETENTION").as_deref(), Some(""));
        assert_eq!(line("SQL_BATCH_ROWS").as_deref(), Some("20000"));
    }

    #[test]
    fn hostile_values_are_refused_with_one_line() {
        let refused = |pairs: &[(&str, &str)]| settings(pairs).unwrap_err().to_string();
        assert!(refused(&[("SQL_SCHEMA", "public; drop table x")]).starts_with("SQL_SCHEMA="));
        assert!(refused(&[("SQL_TRADES_RETENTION", "36h")]).contains("whole days"));
        assert!(refused(&[("SQL_BATCH_ROWS", "0")]).contains("from 1 to 1000000"));
        assert!(refused(&[("SQL_BATCH_INTERVAL", "300000000h")]).contains("from 1ms to 1h"));
        assert!(refused(&[("KAFKA_SESSION_TIMEOUT", "100ms")]).contains("from 1s to 30m"));
        assert!(
            refused(&[("SQL_TRADES", "false"), ("SQL_BARS", "false")]).contains("nothing to load")
        );
        let url = refused(&[(
            "DATABASE_URL",
            "postgres://app:s3cret@db/x?sslmode=verify-ca",
        )]);
        assert!(
            url.contains("verify-full") && !url.contains("s3cret"),
            "{url}"
        );
        assert!(refused(&[("DATABASE_URL", "")]).contains("DATABASE_URL=\"\": required"));
    }
}
