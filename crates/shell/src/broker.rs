//! The Kafka and Schema Registry settings both services read, as one block: the same
//! variables, checked the same way, printed the same way by `check-config`.

use std::sync::Arc;

use adapters_kafka::config::{KafkaConfig, check_bootstrap_servers};
use adapters_kafka::registry::{Registry, RegistryConfig};
use adapters_kafka::topics::TopicSpec;
use envconfig::Envconfig;

use crate::config::{ConfigError, checked, flag, non_empty};

/// The variables of the block (strings; checked by [`BrokerVariables::settings`]). A service
/// nests it in its own envconfig struct with `#[envconfig(nested)]`.
#[derive(Envconfig)]
pub struct BrokerVariables {
    /// Kafka `bootstrap.servers`.
    #[envconfig(from = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: String,
    /// Create missing topics at start instead of refusing to start.
    #[envconfig(from = "KAFKA_CREATE_TOPICS", default = "false")]
    pub kafka_create_topics: String,
    /// Schema Registry base URL.
    #[envconfig(from = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: String,
    /// Schema Registry basic-auth user.
    #[envconfig(from = "SCHEMA_REGISTRY_USER")]
    pub schema_registry_user: Option<String>,
    /// Schema Registry basic-auth password (never logged).
    #[envconfig(from = "SCHEMA_REGISTRY_PASSWORD")]
    pub schema_registry_password: Option<String>,
}

impl std::fmt::Debug for BrokerVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerVariables")
            .field("kafka_bootstrap_servers", &self.kafka_bootstrap_servers)
            .field("kafka_create_topics", &self.kafka_create_topics)
            .field("schema_registry_url", &self.schema_registry_url)
            .field("schema_registry_user", &self.schema_registry_user)
            .finish_non_exhaustive()
    }
}

/// Kafka and the Schema Registry, validated.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Kafka connection, `KAFKA_PROPERTY_*` included.
    pub kafka: KafkaConfig,
    /// Schema Registry.
    pub registry: RegistryConfig,
    /// Create missing topics at start.
    pub create_topics: bool,
}

impl BrokerVariables {
    /// Validates the block; `all` supplies the `KAFKA_PROPERTY_*` pass-through.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid variable.
    pub fn settings(
        self,
        all: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Broker, ConfigError> {
        let bootstrap = checked(
            "KAFKA_BOOTSTRAP_SERVERS",
            non_empty(
                "KAFKA_BOOTSTRAP_SERVERS",
                &self.kafka_bootstrap_servers,
                "host:port[,host:port…]",
            )?,
            check_bootstrap_servers,
        )?;
        let kafka = KafkaConfig::new(bootstrap).with_env_properties(all);
        check_kafka(&kafka)?;
        let create_topics = flag(
            "KAFKA_CREATE_TOPICS",
            &self.kafka_create_topics,
            "true or false",
        )?;
        let url = non_empty(
            "SCHEMA_REGISTRY_URL",
            &self.schema_registry_url,
            "an http(s):// URL",
        )?;
        let registry = RegistryConfig::from_settings(
            &url,
            self.schema_registry_user,
            self.schema_registry_password,
        )
        .map_err(|e| ConfigError {
            variable: e.variable.into(),
            value: e.value,
            accepted: e.accepted.into(),
        })?;
        Ok(Broker {
            kafka,
            registry,
            create_topics,
        })
    }
}

/// The client settings librdkafka would refuse (a property, a protocol or codec this build
/// lacks), as an error naming `KAFKA_PROPERTY_*`.
///
/// # Errors
/// [`ConfigError`] with librdkafka's reason.
pub fn check_kafka(kafka: &KafkaConfig) -> Result<(), ConfigError> {
    kafka.validate().map_err(|reason| ConfigError {
        variable: "KAFKA_PROPERTY_*".into(),
        value: String::new(),
        accepted: reason,
    })
}

/// Why a service could not start on its broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A topic is missing or wrong (and was not to be created), or could not be checked.
    #[error("checking topics")]
    Topics(#[source] adapters_kafka::Error),
    /// The registry client could not be made.
    #[error("configuring the schema registry client")]
    Registry(#[source] adapters_kafka::Error),
}

impl Broker {
    /// What both services do first: check `topics` (creating the missing ones if
    /// `KAFKA_CREATE_TOPICS` says so), then make the Schema Registry client.
    ///
    /// # Errors
    /// [`BrokerError`] naming the step, its cause as the source.
    pub async fn prepare(&self, topics: &[TopicSpec]) -> Result<Arc<Registry>, BrokerError> {
        adapters_kafka::topics::ensure(&self.kafka, topics, self.create_topics)
            .await
            .map_err(BrokerError::Topics)?;
        Registry::new(self.registry.clone())
            .map(Arc::new)
            .map_err(BrokerError::Registry)
    }

    /// `check-config`'s lines for the Kafka variables (`KAFKA_BOOTSTRAP_SERVERS`,
    /// `KAFKA_PROPERTY_*`; `extra` after them) and the registry's.
    pub fn effective(&self, extra: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut variables = self.kafka.effective_variables();
        variables.extend(extra);
        variables.push(("KAFKA_CREATE_TOPICS".into(), self.create_topics.to_string()));
        variables.extend(self.registry.effective_variables());
        variables
    }
}
