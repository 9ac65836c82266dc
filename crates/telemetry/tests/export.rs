//! Spans reach an OTLP collector with the service's name, parents and links intact.
//!
//! Its own test binary: `init` installs the process-wide subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use telemetry::{LogFormat, TelemetryConfig};
use testkit::OtlpCollector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_with_service_name_parent_and_links() {
    let collector = OtlpCollector::start().await.unwrap();
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        otel_disabled: false,
        otlp_endpoint: collector.endpoint(),
    };
    let guard = telemetry::init("telemetry-test", &config).unwrap();
    assert!(guard.exporting());

    let upstream = ports::TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        tracestate: None,
    };
    let (parent_context, child_context) = {
        let parent = tracing::info_span!("parent.op");
        let linked = telemetry::link_span(
            &parent,
            &[
                upstream,
                ports::TraceContext {
                    traceparent: "junk".to_owned(),
                    tracestate: None,
                },
            ],
        );
        assert_eq!(linked, 1, "the malformed context is skipped");
        let _entered = parent.enter();
        let child = tracing::info_span!("child.op");
        tracing::info!(parent: &child, "inside the child");
        (
            telemetry::span_trace_context(&parent).unwrap(),
            telemetry::span_trace_context(&child).unwrap(),
        )
    };
    let trace_id = parent_context.traceparent[3..35].to_owned();
    assert_eq!(
        &child_context.traceparent[3..35],
        trace_id,
        "child shares the trace"
    );

    guard.shutdown();
    let spans = collector.spans();
    let parent = spans.iter().find(|s| s.name == "parent.op").unwrap();
    let child = spans.iter().find(|s| s.name == "child.op").unwrap();
    assert_eq!(parent.service_name, "telemetry-test");
    assert_eq!(parent.trace_id, trace_id);
    assert_eq!(child.parent_span_id, parent.span_id);
    assert_eq!(
        parent.links,
        vec![(
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            "00f067aa0ba902b7".to_owned()
        )]
    );
    let stats = telemetry::export_stats();
    assert!(stats.exported.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}
