//! Kafka-protocol brokers for tests: librdkafka's in-process mock cluster, or Apache Kafka.
//!
//! `TEST_BROKER=kafka` selects Apache Kafka (one KRaft node from [`crate::kafka`]); nothing, or
//! `TEST_BROKER=mock`, the mock cluster. The same test bodies run on both. The mock fakes
//! transactions (no markers, no fencing, no `read_committed` filtering) and has no CreateTopics
//! or topic configs: never trust a transactional, `read_committed` or compaction result from it.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::kafka::KafkaCluster;

/// A broker for one test.
pub enum TestBroker {
    /// In-process mock cluster (one broker).
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// Apache Kafka processes.
    Kafka(KafkaCluster),
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestBroker::Mock(_) => f.write_str("TestBroker::Mock"),
            TestBroker::Kafka(k) => write!(f, "TestBroker::Kafka({})", k.bootstrap_servers()),
        }
    }
}

impl TestBroker {
    /// The broker `TEST_BROKER` names (`kafka` or `mock`, the default).
    ///
    /// # Errors
    /// A message if the broker cannot be started (e.g. Kafka is not fetched: it says how) or
    /// `TEST_BROKER` names no known broker.
    pub async fn from_env() -> Result<Self, String> {
        match std::env::var("TEST_BROKER").as_deref() {
            Ok("kafka") => Ok(TestBroker::Kafka(KafkaCluster::start().await?)),
            Ok("mock" | "") | Err(_) => TestBroker::mock(),
            Ok(other) => Err(format!(
                "TEST_BROKER={other:?} is not a test broker; use kafka or mock"
            )),
        }
    }

    /// A mock cluster.
    ///
    /// # Errors
    /// If librdkafka cannot create it.
    pub fn mock() -> Result<Self, String> {
        MockCluster::new(1)
            .map(TestBroker::Mock)
            .map_err(|e| format!("mock cluster: {e}"))
    }

    /// Whether this is the mock cluster.
    pub fn is_mock(&self) -> bool {
        matches!(self, TestBroker::Mock(_))
    }

    /// For a test that only means something on Apache Kafka: on the mock cluster it says on
    /// stderr that it is skipped and why (`lacks`: what the mock cannot do), and returns `true`.
    pub fn skips_on_mock(&self, lacks: &str) -> bool {
        if self.is_mock() {
            eprintln!("skipped: {lacks}; this runs on Apache Kafka");
        }
        self.is_mock()
    }

    /// The Apache Kafka cluster, if this is one (to kill or restart nodes).
    pub fn kafka_mut(&mut self) -> Option<&mut KafkaCluster> {
        match self {
            TestBroker::Kafka(cluster) => Some(cluster),
            TestBroker::Mock(_) => None,
        }
    }

    /// Takes the (first) broker down: Apache Kafka's node is killed (SIGKILL), the mock's broker
    /// stops answering.
    ///
    /// # Errors
    /// If the mock refuses.
    pub fn take_down(&mut self) -> Result<(), String> {
        match self {
            TestBroker::Mock(cluster) => cluster.broker_down(1).map_err(|e| e.to_string()),
            TestBroker::Kafka(cluster) => {
                cluster.kill(1);
                Ok(())
            }
        }
    }

    /// Brings the broker [`TestBroker::take_down`] took down back, on the same storage.
    ///
    /// # Errors
    /// If it does not come back.
    pub async fn bring_up(&mut self) -> Result<(), String> {
        match self {
            TestBroker::Mock(cluster) => cluster.broker_up(1).map_err(|e| e.to_string()),
            TestBroker::Kafka(cluster) => cluster.start_node(1).await,
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            TestBroker::Mock(cluster) => cluster.bootstrap_servers(),
            TestBroker::Kafka(cluster) => cluster.bootstrap_servers(),
        }
    }

    /// Creates a topic (`compacted` sets `cleanup.policy=compact`).
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<(), String> {
        // Segments as small as app-agg creates its changelog with (16 MiB).
        let configs: &[(&str, &str)] = if compacted {
            &[("cleanup.policy", "compact"), ("segment.bytes", "16777216")]
        } else {
            &[]
        };
        self.create_topic_with(name, partitions, 1, configs).await
    }

    /// Creates a topic with a replication factor and topic configs (the mock ignores configs).
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), String> {
        match self {
            TestBroker::Mock(cluster) => cluster
                .create_topic(name, partitions, replication)
                .map_err(|e| e.to_string()),
            TestBroker::Kafka(cluster) => {
                create_topic(
                    &cluster.bootstrap_servers(),
                    name,
                    partitions,
                    replication,
                    configs,
                )
                .await
            }
        }
    }
}

/// Creates a topic through the admin API of the broker at `bootstrap`.
///
/// # Errors
/// The broker's refusal.
pub async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        result.map_err(|(topic, code)| format!("creating {topic}: {code}"))?;
    }
    Ok(())
}
