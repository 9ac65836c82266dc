//! Test-only fakes shared by the crates' tests. Never a dependency of a binary.
//!
//! * [`deribit`]: [`FakeDeribit`], a scriptable Deribit WebSocket API v2 on a loopback port.
//! * [`wait`]: polling helpers with deadlines (no bare sleeps in tests).
//!
//! The Schema Registry stand-in, the Kafka broker harness and the OTLP collector come with the
//! Kafka and services issues.

pub mod deribit;
pub mod wait;

pub use deribit::{FakeDeribit, FakeInstrument};
pub use wait::wait_for;
