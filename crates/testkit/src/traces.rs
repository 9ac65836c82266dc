//! Where a test's spans go: the in-process OTLP collector, or a real Jaeger with
//! `TEST_TRACES=jaeger`. The test body is the same for both.

use crate::{CollectedSpan, Jaeger, OtlpCollector};

/// The trace backend of one test.
#[derive(Debug)]
pub enum TestTraces {
    /// [`OtlpCollector`], in process (the fast suite).
    Collector(OtlpCollector),
    /// [`Jaeger`], the real thing (`TEST_TRACES=jaeger`; `just jaeger` builds it).
    Jaeger(Jaeger),
}

impl TestTraces {
    /// Jaeger if `TEST_TRACES=jaeger`, else the in-process collector.
    ///
    /// # Errors
    /// If the backend does not start; with `TEST_TRACES=jaeger` a missing binary is an error,
    /// never a skip.
    pub async fn from_env() -> Result<Self, String> {
        match std::env::var("TEST_TRACES").as_deref() {
            Ok("jaeger") => Ok(Self::Jaeger(Jaeger::start().await?)),
            Ok("" | "collector") | Err(_) => OtlpCollector::start()
                .await
                .map(Self::Collector)
                .map_err(|e| format!("OTLP collector: {e}")),
            Ok(other) => Err(format!(
                "TEST_TRACES={other:?}: expected jaeger or collector"
            )),
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        match self {
            Self::Collector(c) => c.endpoint(),
            Self::Jaeger(j) => j.endpoint(),
        }
    }

    /// Every span stored so far (Jaeger: as its query API returns them).
    ///
    /// # Errors
    /// If Jaeger's query API fails.
    pub async fn spans(&self) -> Result<Vec<CollectedSpan>, String> {
        match self {
            Self::Collector(c) => Ok(c.spans()),
            Self::Jaeger(j) => j.spans().await,
        }
    }

    /// The services that sent spans (Jaeger: its service list), sorted.
    ///
    /// # Errors
    /// If Jaeger's query API fails.
    pub async fn services(&self) -> Result<Vec<String>, String> {
        let mut services = match self {
            Self::Collector(c) => c.spans().into_iter().map(|s| s.service_name).collect(),
            Self::Jaeger(j) => j.services().await?,
        };
        services.sort();
        services.dedup();
        Ok(services)
    }
}
