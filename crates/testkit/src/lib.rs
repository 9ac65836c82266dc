//! Test-only fakes shared by the crates' tests: a scripted fake Deribit, a Schema Registry
//! stand-in, a Kafka broker harness and an in-process OTLP collector. Never a dependency of a
//! binary.
//!
//! Shell: filled by the Deribit, Kafka and services issues.
