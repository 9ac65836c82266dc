//! app-agg: windowed aggregates of the raw trade topic.
//!
//! * [`replay`]: the offline path — a file of captured Deribit trades in, aggregates out,
//!   through the same [`domain::Aggregator`] the service runs.
//! * [`service`]: the Kafka service loop over its ports: restore, aggregate, commit cycles.
//! * [`metrics`]: the service's counters and per-partition health, read by the probe.
//! * [`late`]: what the service does not fold in (late trades; trades and markers stamped
//!   implausibly far ahead), why, and the paced WARN about it.
//! * [`config`]: the service's environment variables, validated.
//! * [`probe`]: what `/readyz` and `/metrics` report.

pub mod config;
pub mod late;
pub mod metrics;
pub mod probe;
pub mod replay;
pub mod service;
