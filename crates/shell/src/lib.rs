//! The service shell both binaries share: what runs around a service, not the service itself.
//!
//! * [`run`]: start-up and exit: settings validated, runtime and telemetry set up, exit codes.
//! * [`check_config`]: the `check-config` subcommand and how settings print.
//! * [`config`]: the one-line configuration error and the checks every variable goes through
//!   (flags, durations, addresses, UTF-8).
//! * [`duration`]: human durations (`1m`, `30s`), for variables and command lines alike.
//! * [`settings`]: settings declared once ([`declare_settings!`]): reading, `check-config`
//!   and the docs' reference from one declaration.
//! * [`broker`]: the Kafka and Schema Registry settings block both services read.
//! * [`http`]: the `/healthz`, `/readyz` and `/metrics` endpoint, the `healthcheck`
//!   subcommand, and the shutdown signal.

pub mod broker;
pub mod check_config;
pub mod config;
pub mod duration;
pub mod http;
pub mod run;
pub mod settings;

pub use check_config::{Effective, check_config_command, duration_text};
pub use config::ConfigError;
pub use run::{EXIT_BAD_CONFIG, EXIT_FENCED, run_service, run_service_with};
