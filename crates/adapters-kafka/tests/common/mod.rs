//! The stand-ins every Kafka test of this crate starts: a broker (mock cluster, or Apache Kafka with
//! `TEST_BROKER=kafka`) with the test's topics, and a schema registry stub.
#![allow(clippy::unwrap_used, dead_code)] // test helpers; each test file uses its part

use std::sync::Arc;

use adapters_kafka::registry::{Registry, RegistryConfig};
use testkit::{SchemaRegistryStub, TestBroker};

/// A topic to create: name, partitions, compacted.
pub type TopicSpec<'a> = (&'a str, i32, bool);

/// Broker, registry stub and a registry client pointed at the stub.
pub struct Stack {
    /// The broker the environment chose.
    pub broker: TestBroker,
    /// Keeps the stub serving for as long as the stack lives.
    pub stub: SchemaRegistryStub,
    /// Client of the stub.
    pub registry: Arc<Registry>,
}

impl Stack {
    /// Starts both stand-ins and creates `topics`.
    pub async fn start(topics: &[TopicSpec<'_>]) -> Stack {
        let broker = TestBroker::from_env().await.unwrap();
        for &(name, partitions, compacted) in topics {
            broker
                .create_topic(name, partitions, compacted)
                .await
                .unwrap();
        }
        let stub = SchemaRegistryStub::start().await.unwrap();
        let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
        Stack {
            broker,
            stub,
            registry,
        }
    }
}
