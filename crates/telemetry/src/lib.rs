//! Observability shared by both services.
//!
//! * [`init_logs`]: the log subscriber both services install.
//! * [`http`]: the `/healthz`, `/readyz` and `/metrics` endpoint, and the client side of the
//!   `healthcheck` subcommand.
//! * [`prometheus`]: a writer for the Prometheus text exposition format.
//!
//! OpenTelemetry setup (`init()`, OTLP export, W3C propagation) comes with the services issue.

pub mod http;
pub mod prometheus;

/// Logs to stdout through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`).
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
