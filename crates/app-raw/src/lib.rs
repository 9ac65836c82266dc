//! app-raw: Deribit trades into the raw Kafka topic.
//!
//! * [`config`]: environment variables → validated [`config::Settings`].
//! * [`history`]: the `history` subcommand: a range of trades from Deribit's history into a
//!   file or topic, resumable.
//! * [`probe`]: what `/readyz` and `/metrics` report.
//! * [`run`]: the feed → sink loop with retries and a flushing shutdown.
//!
//! `main` wires them: settings, registry, sink, positions from the topic's tail, the Deribit
//! feed seeded with them, then `run` until SIGTERM or SIGINT.

pub mod config;
pub mod history;
pub mod probe;
pub mod run;
