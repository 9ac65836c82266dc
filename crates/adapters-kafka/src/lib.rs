//! Kafka and Schema Registry adapters (`TradeSink`, `TradeLog`, the aggregate commit port).
//!
//! Shell: filled by the adapters-kafka issue (Avro with Confluent framing, idempotent producer,
//! consumer group with restore, changelog commit cycle, trace headers, dead-letter topic).
