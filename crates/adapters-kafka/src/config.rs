//! Kafka client settings, turned into rdkafka `ClientConfig`s: every kind of client (producer,
//! reader, group consumer, admin) is configured here, with `KAFKA_PROPERTY_*` applied last so
//! they win. Callers add only what is theirs alone and must not be overridden: a transactional
//! id, the producer's gap-less guarantee, end-of-partition events for a tail read.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

/// Environment prefix for raw librdkafka properties: `KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_SSL`
/// sets `security.protocol`.
pub const PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

/// Connection and tuning settings shared by producers and consumers.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `compression.type` for producers (default `lz4`).
    pub compression: String,
    /// Any other librdkafka property (SASL, TLS, timeouts…); applied last, so it wins.
    pub properties: BTreeMap<String, String>,
}

/// Checks a `bootstrap.servers` list: each entry `host:port` (an optional `scheme://` before
/// it, IPv6 hosts in brackets), the port in 1–65535. librdkafka would take a bare host with
/// port 9092 implied; requiring the port catches `localhost` typed for `localhost:9092` and a
/// value pasted into the wrong variable.
///
/// # Errors
/// A sentence naming the first entry that is not `host:port`.
pub fn check_bootstrap_servers(value: &str) -> Result<(), String> {
    for entry in value.split(',').map(str::trim) {
        let address = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(ipv6) => {
                    !ipv6.is_empty() && ipv6.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
                }
                None => {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                }
            };
            host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!(
                "host:port[,host:port…] (entry {entry:?} is not host:port with a port in 1–65535)"
            ));
        }
    }
    Ok(())
}

impl KafkaConfig {
    /// Settings for `bootstrap_servers` with defaults.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            compression: "lz4".into(),
            properties: BTreeMap::new(),
        }
    }

    /// Adds every `KAFKA_PROPERTY_*` variable of `vars` as a property (`_` → `.`, lower case).
    pub fn with_env_properties(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in vars {
            if let Some(rest) = name.strip_prefix(PROPERTY_PREFIX)
                && !rest.is_empty()
            {
                self.properties
                    .insert(rest.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        self
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }

    fn with_properties(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer: `acks=all`, Java-compatible `murmur2_random` partitioning,
    /// batches lingering 1 ms (librdkafka's default 5 ms put p99 frame → ack at 11+ ms at
    /// 5 k trades/s; 1 ms keeps it under 10 ms for 3 % less flood throughput).
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", &self.compression)
            .set("linger.ms", "1");
        self.with_properties(config)
    }

    /// A consumer for reading a topic directly (assign, no group commits).
    pub fn reader(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", "deribit-kafka-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed");
        self.with_properties(config)
    }
}

impl KafkaConfig {
    /// A group member reading the raw topic: cooperative-sticky assignment, from the earliest
    /// offset when the group has none, end-of-partition events, small fetches into a 2 MiB queue,
    /// heartbeats at a third of `session_timeout`, static membership under `instance_id` if given.
    pub fn group_consumer(
        &self,
        group_id: &str,
        session_timeout: std::time::Duration,
        instance_id: Option<&str>,
    ) -> ClientConfig {
        let mut config = self.reader();
        if let Some(id) = instance_id {
            config.set("group.instance.id", id);
        }
        config
            .set("group.id", group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // Prefetch kept small, so resident memory is. librdkafka holds a ~500-byte
            // operation per fetched record, and a compressed fetch of 1 MiB per partition (its
            // default) unpacks to tens of thousands of trades: 25–50 MB of them on Apache
            // Kafka. Small fetches, a 2 MiB queue (which also caps a whole fetch, unless
            // `message.max.bytes` is larger: `fetch.max.bytes` is left to librdkafka so that
            // one stays valid), and a 10 ms pause when it is full (not 1 s, which starved the
            // loop: half the throughput).
            .set("max.partition.fetch.bytes", "262144")
            .set("queued.max.messages.kbytes", "2048")
            .set("fetch.queue.backoff.ms", "10")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            // Heartbeats well inside the session timeout, or short sessions expire.
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 3).max(100).to_string(),
            );
        self.with_properties(config)
    }

    /// Settings for an admin client (topic checks and creation).
    pub fn admin(&self) -> ClientConfig {
        self.with_properties(self.base())
    }
}

/// SASL mechanisms this build of librdkafka has (GSSAPI would need Cyrus SASL).
pub const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl KafkaConfig {
    /// Checks every client setting with librdkafka itself, connecting to nothing: an unknown
    /// property, a value it refuses, or a feature this build lacks is an error naming it.
    ///
    /// # Errors
    /// The reason, e.g. `Invalid value "brotli" for configuration property "compression.codec"`.
    pub fn validate(&self) -> Result<(), String> {
        for key in ["sasl.mechanism", "sasl.mechanisms"] {
            if let Some(mechanism) = self.properties.get(key)
                && !SASL_MECHANISMS.contains(&mechanism.to_ascii_uppercase().as_str())
            {
                return Err(format!(
                    "{key}={mechanism}: this build has SASL {}; {} is not built in",
                    SASL_MECHANISMS.join(", "),
                    mechanism.to_ascii_uppercase()
                ));
            }
        }
        let group = self.group_consumer("check-config", std::time::Duration::from_secs(10), None);
        for (client, config) in [
            ("producer", self.producer()),
            ("reader", self.reader()),
            ("group consumer", group),
        ] {
            config
                .create_native_config()
                .map_err(|e| format!("{client} settings: {e}"))?;
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// The variables that set this configuration and the values in use, for `check-config`:
    /// `KAFKA_BOOTSTRAP_SERVERS` and each `KAFKA_PROPERTY_*` (secret values hidden).
    pub fn effective_variables(&self) -> Vec<(String, String)> {
        let mut variables = vec![(
            "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
            self.bootstrap_servers.clone(),
        )];
        for (key, value) in &self.properties {
            let variable = format!(
                "{PROPERTY_PREFIX}{}",
                key.to_ascii_uppercase().replace('.', "_")
            );
            let shown = if is_secret(key) {
                HIDDEN.to_owned()
            } else {
                value.clone()
            };
            variables.push((variable, shown));
        }
        variables
    }
}

/// What `check-config` shows for a secret that is set.
pub const HIDDEN: &str = "(set, hidden)";
/// What `check-config` shows for an optional setting that is not set.
pub const NOT_SET: &str = "(not set)";

/// What `check-config` shows for a secret (a Kafka, registry or Deribit one): whether it is
/// set, never its value.
#[must_use]
pub fn shown_secret(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => HIDDEN.to_owned(),
        _ => NOT_SET.to_owned(),
    }
}

/// Whether a property's value must not be shown.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "key.pem", "private"]
        .iter()
        .any(|s| key.contains(s))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) { "REDACTED" } else { v.as_str() },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("compression", &self.compression)
            .field("properties", &properties)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_as_set_or_not() {
        assert_eq!(shown_secret(Some("hunter2")), "(set, hidden)");
        assert_eq!(shown_secret(Some("")), "(not set)");
        assert_eq!(shown_secret(None), "(not set)");
    }

    #[test]
    fn bootstrap_servers_need_host_and_port() {
        for good in [
            "localhost:9092",
            "a:1,b:65535",
            "SASL_SSL://broker-1.example:9093",
            "[::1]:9092",
        ] {
            assert_eq!(check_bootstrap_servers(good), Ok(()), "{good}");
        }
        for bad in [
            "notaport",
            "host:",
            ":9092",
            "host:0",
            "host:65536",
            "host:x",
            "a:1,,b:2",
            "a:1;b:2",
            "[::1:9092",
        ] {
            let reason = check_bootstrap_servers(bad).unwrap_err();
            assert!(reason.contains("is not host:port"), "{bad}: {reason}");
        }
    }

    #[test]
    fn what_this_build_cannot_do_is_refused_with_the_property() {
        let with = |key: &str, value: &str| {
            let mut config = KafkaConfig::new("k:9092");
            config.properties.insert(key.into(), value.into());
            config.validate()
        };
        assert_eq!(with("security.protocol", "SASL_SSL"), Ok(()));
        assert_eq!(with("sasl.mechanism", "SCRAM-SHA-512"), Ok(()));
        assert_eq!(with("compression.type", "zstd"), Ok(()));
        let refused = [
            ("sasl.mechanism", "GSSAPI", "GSSAPI"),
            ("sasl.mechanisms", "gssapi", "GSSAPI"),
            ("compression.type", "brotli", "brotli"),
            ("no.such.property", "1", "no.such.property"),
            (
                "sasl.oauthbearer.method",
                "oidc",
                "not supported in this build",
            ),
        ];
        for (key, value, says) in refused {
            let error = with(key, value).unwrap_err();
            assert!(error.contains(says), "{key}={value}: {error}");
        }
    }

    #[test]
    fn env_properties_pass_through_and_secrets_stay_hidden() {
        let config = KafkaConfig::new("k:9092").with_env_properties([
            (
                "KAFKA_PROPERTY_SECURITY_PROTOCOL".to_owned(),
                "SASL_SSL".to_owned(),
            ),
            (
                "KAFKA_PROPERTY_SASL_PASSWORD".to_owned(),
                "hunter2".to_owned(),
            ),
            ("KAFKA_PROPERTY_".to_owned(), "ignored".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ]);
        let producer = config.producer();
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("sasl.password"), Some("hunter2"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        assert_eq!(producer.get("compression.type"), Some("lz4"));
        assert_eq!(config.properties.len(), 2);
        let debug = format!("{config:?}");
        assert!(
            debug.contains("SASL_SSL") && debug.contains("REDACTED") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}
