//! One `init()` for both services: logs through `tracing-subscriber`, spans over OTLP.
//!
//! Shell: filled by the services issue.
