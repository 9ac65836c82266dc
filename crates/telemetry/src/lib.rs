//! Observability shared by both services.
//!
//! * [`init`]: logs (text or JSON with trace ids) and OTLP span export, one call per service.
//! * [`http`]: the `/healthz`, `/readyz` and `/metrics` endpoint, and the client side of the
//!   `healthcheck` subcommand.
//! * [`prometheus`]: a writer for the Prometheus text exposition format.

pub mod config;
pub mod http;
mod json_log;
mod otel;
pub mod prometheus;
pub mod service;

pub use json_log::JsonLines;
pub use otel::{
    DEFAULT_OTLP_ENDPOINT, ExportStats, LogFormat, TELEMETRY_VARIABLES, Telemetry, TelemetryConfig,
    TelemetryError, export_stats, init, link_span, remote_span_context, span_trace_context,
};
