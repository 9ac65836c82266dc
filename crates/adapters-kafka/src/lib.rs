//! Kafka and Schema Registry adapters.
//!
//! * [`avro`]: the `.avsc` schemas in `schemas/`, a fast encoder for trades and aggregates, and
//!   decoding with writer-to-reader schema resolution.
//! * [`framing`]: Confluent's wire format (magic byte, schema id, datum).
//! * [`group`]: the trade log's group as the committer ([`group::GroupOffsets`]) and the lag
//!   probe ([`group::LagProbe`]) need it, without the consumer; `group_context`: what
//!   librdkafka's callbacks on the group consumer do (rebalances queued, reports logged).
//! * [`client_log`]: librdkafka's own reports into the logs, once each.
//! * [`commit`]: [`commit::KafkaCommitter`], app-agg's commit cycle and partition restore.
//! * `changelog` (crate-private): the changelog's marker record, and the state of several
//!   partitions read back in one pass.
//! * [`config`]: Kafka settings → rdkafka `ClientConfig`, with `KAFKA_PROPERTY_*` pass-through.
//! * [`consumer`]: [`consumer::KafkaTradeLog`], the `TradeLog`, with a dead-letter topic.
//! * `decoder` (crate-private): record values to trades and aggregates through the registry.
//! * [`source`]: [`source::KafkaRecordSource`], the `RecordSource` app-sql reads: the raw and
//!   aggregates topics as rows, `read_committed`, positions set by the caller.
//! * [`datum_bounds`]: sizes a foreign-schema record may claim, checked before apache-avro reads it.
//! * [`headers`]: W3C trace context in record headers.
//! * [`producer`]: [`producer::KafkaTradeSink`], the `TradeSink`, trades and progress markers.
//! * [`progress`]: the progress marker record (no value; completeness time and writer in headers).
//! * [`registry`]: Schema Registry client: register once, fetch writer schemas once, cached.
//! * `tail` (crate-private): partitions read from a start to their end; the raw topic's tail
//!   (`last_positions`) and the changelog's partitions (restore) are read with it.
//! * [`topics`]: the topics a service needs, checked (and created if allowed) at start.
//! * [`weather`]: which Kafka errors are outages to wait out and which need a person.
//! * [`error`]: the crate's error type.

pub mod avro;
mod changelog;
pub mod client_log;
pub mod commit;
pub mod config;
pub mod consumer;
pub mod datum_bounds;
mod decoder;
pub mod error;
pub mod framing;
pub mod group;
mod group_context;
pub mod headers;
pub mod producer;
pub mod progress;
pub mod registry;
pub mod source;
mod tail;
pub mod topics;
pub mod weather;

pub use error::{Error, Result};
