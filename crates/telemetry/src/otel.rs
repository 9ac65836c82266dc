//! OpenTelemetry: one `init` for both services, OTLP/gRPC span export, W3C propagation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use ports::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;

use crate::json_log::JsonLines;

/// Where spans go when `OTEL_EXPORTER_OTLP_ENDPOINT` is not set.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4317";

/// How long shutdown waits for pending spans; a service must exit well within 10 s.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);

/// Per export attempt unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every environment variable the telemetry of a service reads (ours and the SDK's).
pub const TELEMETRY_VARIABLES: &[&str] = &[
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
];

/// A telemetry environment variable with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// One variable, its value and what would have been accepted.
    #[error("{name}={value:?}: accepted {accepted}")]
    InvalidVariable {
        /// The variable's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// The accepted forms.
        accepted: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The endpoint used.
        endpoint: String,
        /// The SDK's reason.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, with `trace_id` and `span_id` inside spans.
    Json,
}

/// Telemetry settings read from the standard environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `OTEL_SDK_DISABLED=true` turns span export off (the Rust SDK itself ignores it).
    pub otel_disabled: bool,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else the default.
    pub otlp_endpoint: String,
}

/// The samplers the SDK reads from `OTEL_TRACES_SAMPLER`; it falls back to the default in
/// silence for any other name, so a typo would go unnoticed.
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// `OTEL_TRACES_SAMPLER` names a sampler the SDK knows, and a ratio sampler's
/// `OTEL_TRACES_SAMPLER_ARG` is a number from 0 to 1.
fn check_sampler(lookup: &impl Fn(&str) -> Option<String>) -> Result<(), TelemetryError> {
    // Checked as the SDK reads it: untrimmed (" always_on" would fall back in silence).
    let Some(sampler) = lookup("OTEL_TRACES_SAMPLER").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    if !SAMPLERS.contains(&sampler.as_str()) {
        return Err(TelemetryError::InvalidVariable {
            name: "OTEL_TRACES_SAMPLER",
            value: sampler,
            accepted: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
        });
    }
    if sampler.ends_with("traceidratio")
        && let Some(arg) = lookup("OTEL_TRACES_SAMPLER_ARG").filter(|v| !v.trim().is_empty())
        && !arg
            .trim()
            .parse::<f64>()
            .is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        return Err(TelemetryError::InvalidVariable {
            name: "OTEL_TRACES_SAMPLER_ARG",
            value: arg,
            accepted: "a sampling ratio from 0 to 1, such as 0.25",
        });
    }
    Ok(())
}

impl TelemetryConfig {
    /// Reads and validates the variables from the process environment.
    ///
    /// # Errors
    /// [`TelemetryError::InvalidVariable`] for a value outside the accepted forms.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`TelemetryConfig::from_env`], from any lookup (tests pass a map).
    ///
    /// # Errors
    /// As [`TelemetryConfig::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let log_format = match lookup("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("" | "text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(TelemetryError::InvalidVariable {
                    name: "LOG_FORMAT",
                    value: other.to_owned(),
                    accepted: "text or json",
                });
            }
        };
        let otel_disabled = match lookup("OTEL_SDK_DISABLED")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(TelemetryError::InvalidVariable {
                    name: "OTEL_SDK_DISABLED",
                    value: other.to_owned(),
                    accepted: "true or false",
                });
            }
        };
        check_sampler(&lookup)?;
        let otlp_endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        });
        let otlp_endpoint = match otlp_endpoint {
            None => DEFAULT_OTLP_ENDPOINT.to_owned(),
            Some((name, value)) => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(TelemetryError::InvalidVariable {
                        name,
                        value,
                        accepted: "an http:// or https:// URL of an OTLP/gRPC receiver",
                    });
                }
                value
            }
        };
        Ok(Self {
            log_format,
            otel_disabled,
            otlp_endpoint,
        })
    }
}

/// Spans handed to the exporter and their fate, process-wide (for `/metrics`).
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because an export failed (collector unreachable, timeout, refusal).
    pub dropped: AtomicU64,
    /// Export attempts that failed.
    pub failed_exports: AtomicU64,
    warned: AtomicBool,
}

impl ExportStats {
    /// Adds `otel_spans_exported_total` and `otel_spans_dropped_total` to a scrape.
    pub fn write_to(&self, e: &mut crate::prometheus::Exposition) {
        e.counter(
            "otel_spans_exported_total",
            "Spans the OTLP collector accepted.",
            self.exported.load(Ordering::Relaxed),
        )
        .counter(
            "otel_spans_dropped_total",
            "Spans dropped because their export failed.",
            self.dropped.load(Ordering::Relaxed),
        );
    }
}

static EXPORT_STATS: std::sync::LazyLock<Arc<ExportStats>> =
    std::sync::LazyLock::new(|| Arc::new(ExportStats::default()));

/// The process-wide span export counters.
#[must_use]
pub fn export_stats() -> &'static ExportStats {
    &EXPORT_STATS
}

/// Counts what the wrapped exporter delivers or loses and warns once when it starts failing.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    stats: Arc<ExportStats>,
    endpoint: String,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let spans = batch.len() as u64;
        let stats = Arc::clone(&self.stats);
        let endpoint = self.endpoint.clone();
        let exported = self.inner.export(batch);
        async move {
            let outcome = exported.await;
            match &outcome {
                Ok(()) => {
                    stats.exported.fetch_add(spans, Ordering::Relaxed);
                    // A later outage deserves its own warning.
                    stats.warned.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.dropped.fetch_add(spans, Ordering::Relaxed);
                    stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                    if !stats.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(target: "telemetry", endpoint = %endpoint, error = %e, spans,
                            "Span export failed; spans are dropped and counted (otel_spans_dropped_total) until the collector answers.");
                    }
                }
            }
            outcome
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Keeps span export alive; [`Telemetry::shutdown`] (or drop) flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    #[must_use]
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is pending, waiting at most a few seconds, then stops exporting.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_BUDGET)
        {
            tracing::warn!(target: "telemetry", error = %e, "Pending spans could not all be exported at shutdown.");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs logging and, unless disabled, OTLP span export for `service_name`.
///
/// Call it inside a multi-threaded tokio runtime: the gRPC exporter needs one.
///
/// # Errors
/// [`TelemetryError::Exporter`] if the exporter cannot be built,
/// [`TelemetryError::AlreadyInstalled`] if another subscriber was installed first.
pub fn init(
    service_name: &'static str,
    config: &TelemetryConfig,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if config.otel_disabled {
        None
    } else {
        Some(provider(service_name, &config.otlp_endpoint)?)
    };
    // The exporter's own transport must not trace itself into the export queue.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name))
            .with_filter(
                Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target("h2", tracing::level_filters::LevelFilter::OFF)
                    .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
                    .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
                    .with_target("tower", tracing::level_filters::LevelFilter::OFF)
                    .with_target("telemetry", tracing::level_filters::LevelFilter::OFF),
            )
    });
    let (text, json) = match config.log_format {
        // Colour only for a person at a terminal: files and pipes get plain lines.
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(tracing_subscriber::fmt::layer().event_format(JsonLines)),
        ),
    };
    let subscriber = tracing_subscriber::registry()
        .with(otel_layer)
        .with(text.with_filter(filter.clone()))
        .with(json.with_filter(filter));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    // After the subscriber, so `log` gets its max level.
    crate::log_bridge::install().map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if provider.is_some() {
        tracing::info!(service = service_name, endpoint = %config.otlp_endpoint, "Exporting spans over OTLP/gRPC.");
    } else {
        tracing::info!(
            service = service_name,
            "Span export off (OTEL_SDK_DISABLED=true)."
        );
    }
    Ok(Telemetry { provider })
}

fn provider(
    service_name: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = OtlpExporter::builder().with_tonic().with_endpoint(endpoint);
    if std::env::var_os("OTEL_EXPORTER_OTLP_TIMEOUT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_none()
    {
        builder = builder.with_timeout(DEFAULT_EXPORT_TIMEOUT);
    }
    let exporter = builder.build().map_err(|e| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    let exporter = CountingExporter {
        inner: exporter,
        stats: Arc::clone(&EXPORT_STATS),
        endpoint: endpoint.to_owned(),
    };
    // The SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; a name given in
    // code would win over both, so ours is only the default.
    let builder = Resource::builder();
    let resource = match explicit_service_name(|name| std::env::var(name).ok()) {
        Some(_) => builder.build(),
        None => builder.with_service_name(service_name).build(),
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// `OTEL_SERVICE_NAME` if the operator set one (non-empty).
fn explicit_service_name(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    lookup("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty())
}

/// The W3C trace context of `span`, if it is being traced.
#[must_use]
pub fn span_trace_context(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(TraceContext {
        traceparent: carrier.remove("traceparent")?,
        tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
    })
}

/// The span context a W3C header pair names, if it parses.
#[must_use]
pub fn remote_span_context(trace: &TraceContext) -> Option<SpanContext> {
    if !well_formed_traceparent(&trace.traceparent) {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".to_owned(), trace.traceparent.clone());
    if let Some(state) = &trace.tracestate {
        carrier.insert("tracestate".to_owned(), state.clone());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// `version-traceid-spanid-flags` with exactly 2, 32, 16 and 2 hex digits (the SDK's parser
/// accepts shorter ids).
fn well_formed_traceparent(header: &str) -> bool {
    let widths = [2, 32, 16, 2];
    let parts: Vec<&str> = header.trim().split('-').collect();
    parts.len() >= widths.len()
        && parts
            .iter()
            .zip(widths)
            .all(|(part, width)| part.len() == width && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Links `span` to each valid context in `traces`; returns how many links were added.
pub fn link_span(span: &tracing::Span, traces: &[TraceContext]) -> usize {
    let mut linked = 0;
    for span_context in traces.iter().filter_map(remote_span_context) {
        span.add_link(span_context);
        linked += 1;
    }
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn unknown_samplers_and_ratios_outside_zero_to_one_are_refused() {
        let refused = |vars: &[(&str, &str)]| match config(vars) {
            Err(TelemetryError::InvalidVariable { name, .. }) => Some(name),
            _ => None,
        };
        assert_eq!(
            refused(&[("OTEL_TRACES_SAMPLER", "foo")]),
            Some("OTEL_TRACES_SAMPLER")
        );
        assert_eq!(
            refused(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5")
            ]),
            Some("OTEL_TRACES_SAMPLER_ARG")
        );
        assert_eq!(
            refused(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "x")
            ]),
            Some("OTEL_TRACES_SAMPLER_ARG")
        );
        assert_eq!(
            refused(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25")
            ]),
            None
        );
        assert_eq!(refused(&[("OTEL_TRACES_SAMPLER", "always_off")]), None);
        assert_eq!(
            refused(&[("OTEL_TRACES_SAMPLER", " always_on")]),
            Some("OTEL_TRACES_SAMPLER")
        );
    }

    #[test]
    fn defaults_are_text_logs_and_export_to_localhost() {
        let c = config(&[]).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.otel_disabled);
        assert_eq!(c.otlp_endpoint, DEFAULT_OTLP_ENDPOINT);
    }

    #[test]
    fn traces_endpoint_beats_the_general_one() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ])
        .unwrap();
        assert_eq!(c.otlp_endpoint, "http://b:4317");
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")]).unwrap();
        assert_eq!(c.otlp_endpoint, "http://jaeger:4317");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_accepted_forms() {
        let e = config(&[("LOG_FORMAT", "yaml")]).unwrap_err().to_string();
        assert_eq!(e, "LOG_FORMAT=\"yaml\": accepted text or json");
        let e = config(&[("OTEL_SDK_DISABLED", "yes")])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "OTEL_SDK_DISABLED=\"yes\": accepted true or false");
        let e = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4317")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT=\"jaeger:4317\""),
            "{e}"
        );
    }

    #[test]
    fn sdk_disabled_accepts_any_case() {
        assert!(
            config(&[("OTEL_SDK_DISABLED", "TRUE")])
                .unwrap()
                .otel_disabled
        );
        assert!(
            !config(&[("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .otel_disabled
        );
        assert_eq!(
            config(&[("LOG_FORMAT", "json")]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn an_operator_service_name_replaces_the_default_and_blank_does_not() {
        let set =
            |v: &'static str| move |name: &str| (name == "OTEL_SERVICE_NAME").then(|| v.to_owned());
        assert_eq!(
            explicit_service_name(set("raw-eu")),
            Some("raw-eu".to_owned())
        );
        assert_eq!(explicit_service_name(set("  ")), None);
        assert_eq!(explicit_service_name(|_| None), None);
    }

    #[test]
    fn remote_contexts_parse_only_when_valid() {
        let good = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            tracestate: Some("vendor=x".to_owned()),
        };
        let sc = remote_span_context(&good).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let trace = TraceContext {
                traceparent: bad.to_owned(),
                tracestate: None,
            };
            assert!(remote_span_context(&trace).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spans_without_opentelemetry_have_no_context() {
        let span = tracing::info_span!("untraced");
        assert!(span_trace_context(&span).is_none());
    }
}
