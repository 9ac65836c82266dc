//! Trace context that travels with data from one hop to the next.

/// A W3C trace context in its header form. Adapters convert to and from their tracing library;
/// the ports stay free of any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceContext {
    /// The `traceparent` header, e.g. `00-<trace id>-<span id>-01`.
    pub traceparent: String,
    /// The `tracestate` header, if any.
    pub tracestate: Option<String>,
}
