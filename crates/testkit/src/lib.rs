//! Test-only fakes shared by the crates' tests. Never a dependency of a binary.
//!
//! * [`deribit`]: [`FakeDeribit`], a scriptable Deribit WebSocket API v2 on a loopback port.
//! * [`registry`]: [`SchemaRegistryStub`], a Confluent-compatible Schema Registry stand-in.
//! * [`wait`]: polling helpers with deadlines (no bare sleeps in tests).
//!
//! The Kafka broker harness and the OTLP collector come with the Kafka and services issues.

pub mod deribit;
pub mod registry;
pub mod wait;

pub use deribit::{FakeDeribit, FakeInstrument};
pub use registry::SchemaRegistryStub;
pub use wait::wait_for;
