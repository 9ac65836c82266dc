//! W3C trace context in Kafka record headers (`traceparent`, `tracestate`).

use ports::TraceContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header carrying the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Headers for a record produced under `trace` (none without one).
pub fn inject(trace: Option<&TraceContext>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(trace) = trace {
        headers = headers.insert(Header {
            key: TRACEPARENT,
            value: Some(trace.traceparent.as_str()),
        });
        if let Some(state) = &trace.tracestate {
            headers = headers.insert(Header {
                key: TRACESTATE,
                value: Some(state.as_str()),
            });
        }
    }
    headers
}

/// The trace context found in `headers`, if a valid UTF-8 `traceparent` is there.
pub fn extract(headers: &impl Headers) -> Option<TraceContext> {
    let text = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    Some(TraceContext {
        traceparent: text(TRACEPARENT)?,
        tracestate: text(TRACESTATE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_what_is_not_a_context() {
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        assert_eq!(extract(&inject(Some(&trace))), Some(trace));
        assert_eq!(extract(&inject(None)), None);
        let binary = OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some(&[0xff, 0xfe][..]),
        });
        assert_eq!(extract(&binary), None);
    }
}
