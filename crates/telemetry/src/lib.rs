//! Observability shared by both services.
//!
//! * [`http`]: the `/healthz`, `/readyz` and `/metrics` endpoint, and the client side of the
//!   `healthcheck` subcommand.
//! * [`prometheus`]: a writer for the Prometheus text exposition format.
//!
//! OpenTelemetry setup (`init()`, OTLP export, W3C propagation) comes with the services issue.

pub mod http;
pub mod prometheus;
