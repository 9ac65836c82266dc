//! app-sql: the raw and aggregates topics into PostgreSQL, exactly once.
//!
//! * [`service`]: the loop over its ports: partitions positioned from the database, rows
//!   batched, each batch written with the positions it moves, outages waited out.
//! * [`pending`]: the rows read since the last write and the positions they reach.
//! * [`metrics`]: what it counts, and what `/readyz` and `/metrics` report.
//! * [`config`]: its settings, each declared once.

pub mod config;
pub mod metrics;
pub mod pending;
pub mod service;
