//! Observability shared by both services: tracing and OpenTelemetry, and the metrics format.
//!
//! * [`init`]: logs (text or JSON with trace ids) and OTLP span export, one call per service;
//!   trace context to and from Kafka headers ([`span_trace_context`], [`link_span`]); records of
//!   the `log` crate (rdkafka, tungstenite) join the same logs (`log_bridge`).
//! * [`prometheus`]: a writer for the Prometheus text exposition format.
//!
//! The service shell (start-up, configuration helpers, the health endpoint) is the `shell`
//! crate.

mod json_log;
mod log_bridge;
mod otel;
pub mod prometheus;

pub use json_log::JsonLines;
pub use otel::{
    DEFAULT_OTLP_ENDPOINT, ExportStats, LogFormat, TELEMETRY_VARIABLES, Telemetry, TelemetryConfig,
    TelemetryError, export_stats, init, link_span, remote_span_context, span_trace_context,
};
