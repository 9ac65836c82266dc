//! Test-only fakes shared by the crates' tests. Never a dependency of a binary.
//!
//! * [`broker`]: [`TestBroker`]: librdkafka's mock cluster, or Apache Kafka with
//!   `TEST_BROKER=kafka`.
//! * [`kafka`]: [`KafkaCluster`], Apache Kafka KRaft nodes from the jars `just kafka` fetched.
//! * [`deribit`]: [`FakeDeribit`], a scriptable Deribit WebSocket API v2 on a loopback port.
//! * [`registry`]: [`SchemaRegistryStub`], a Confluent-compatible Schema Registry stand-in.
//! * [`otlp`]: [`OtlpCollector`], an in-process OTLP/gRPC trace collector.
//! * [`jaeger`]: [`Jaeger`], a real Jaeger v2 built by `just jaeger`, read through its query API.
//! * [`postgres`]: [`TestPostgres`], a throwaway PostgreSQL from Debian's binaries (run as a
//!   non-root user when the tests run as root), fsync off.
//! * [`traces`]: [`TestTraces`], the collector, or Jaeger with `TEST_TRACES=jaeger`.
//! * [`process`]: helpers for tests that run the service binaries (ports, signals, probes).
//! * [`services`]: the service binaries, built for tests that run both, and app-agg started
//!   with the tests' settings.
//! * [`topics`]: the pipeline's topics: their default names, creating them, reading back what
//!   app-agg wrote.
//! * [`tls`]: [`tls::TestTls`], a throw-away CA and broker certificate for TLS listeners.
//! * [`wait`]: polling helpers with deadlines (no bare sleeps in tests).

pub mod broker;
pub mod deribit;
pub mod jaeger;
pub mod kafka;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod registry;
pub mod services;
pub mod tls;
pub mod topics;
pub mod traces;
pub mod wait;

pub use broker::TestBroker;
pub use deribit::{FakeDeribit, FakeInstrument};
pub use jaeger::Jaeger;
pub use kafka::{KafkaCluster, KafkaOptions};
pub use otlp::{CollectedSpan, OtlpCollector};
pub use postgres::TestPostgres;
pub use registry::SchemaRegistryStub;
pub use traces::TestTraces;
pub use wait::wait_for;
