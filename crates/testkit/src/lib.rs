//! Test-only fakes shared by the crates' tests. Never a dependency of a binary.
//!
//! * [`broker`]: [`TestBroker`]: librdkafka's mock cluster, or Tansu with `TEST_BROKER=tansu`.
//! * [`deribit`]: [`FakeDeribit`], a scriptable Deribit WebSocket API v2 on a loopback port.
//! * [`registry`]: [`SchemaRegistryStub`], a Confluent-compatible Schema Registry stand-in.
//! * [`wait`]: polling helpers with deadlines (no bare sleeps in tests).
//!
//! The OTLP collector comes with the services issue.

pub mod broker;
pub mod deribit;
pub mod otlp;
pub mod process;
pub mod registry;
pub mod wait;

pub use broker::{Tansu, TestBroker};
pub use deribit::{FakeDeribit, FakeInstrument};
pub use otlp::{CollectedSpan, OtlpCollector};
pub use registry::SchemaRegistryStub;
pub use wait::wait_for;
