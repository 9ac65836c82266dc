//! A real Jaeger v2 for one test: the binary `just jaeger` builds from the Go module proxy
//! (`tools/jaeger/go.mod`), on free loopback ports with in-memory storage, read back through
//! Jaeger's query API as the UI reads it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::CollectedSpan;
use crate::process::free_port;

/// The command that builds the binary.
pub const JAEGER_BUILD: &str = "just jaeger";

/// How long Jaeger may take to serve its query API.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The Go module that pins the Jaeger version `just jaeger` builds.
const GO_MOD: &str = include_str!("../../../tools/jaeger/go.mod");

/// The Jaeger module version `tools/jaeger/go.mod` requires (e.g. `v1.76.0`).
#[must_use]
pub fn jaeger_version() -> &'static str {
    GO_MOD
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("github.com/jaegertracing/jaeger "))
        .map_or("unknown", |rest| {
            rest.split_whitespace().next().unwrap_or("unknown")
        })
}

/// The Jaeger release of that module version, as `tools/jaeger/go.mod` names it (`2.13.0`): the
/// tag of the `jaegertracing/jaeger` image.
#[must_use]
pub fn jaeger_release() -> &'static str {
    GO_MOD
        .split_once("Jaeger release ")
        .and_then(|(_, rest)| rest.split(|c: char| c.is_whitespace() || c == ',').next())
        .map_or("unknown", |v| v.trim_end_matches('.'))
}

/// Where `just jaeger` puts the binary (`JAEGER_BIN` overrides it).
#[must_use]
pub fn jaeger_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("JAEGER_BIN") {
        return Some(PathBuf::from(bin));
    }
    Some(
        crate::process::tool_cache()?
            .join(format!("jaeger-{}", jaeger_version()))
            .join("jaeger"),
    )
}

/// A running Jaeger; dropping it stops the process (and prints its log if the test failed).
#[derive(Debug)]
pub struct Jaeger {
    child: Child,
    dir: Option<tempfile::TempDir>,
    otlp_port: u16,
    query_port: u16,
}

impl Jaeger {
    /// Starts Jaeger with an OTLP/gRPC receiver and the query API on free ports.
    ///
    /// # Errors
    /// If the binary is missing (the message names `just jaeger`) or Jaeger does not serve in
    /// time (the message holds its log).
    pub async fn start() -> Result<Self, String> {
        let binary = jaeger_binary()
            .filter(|b| b.is_file())
            .ok_or_else(|| format!("no Jaeger binary; run `{JAEGER_BUILD}` first"))?;
        let dir = tempfile::Builder::new()
            .prefix("jaeger-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let (otlp_port, query_port) = (free_port(), free_port());
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(otlp_port, query_port, free_port()))
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log_path = dir.path().join("jaeger.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("jaeger log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(format!("file:{}", config.display()))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut jaeger = Self {
            child,
            dir: Some(dir),
            otlp_port,
            query_port,
        };
        jaeger.wait_serving().await?;
        Ok(jaeger)
    }

    async fn wait_serving(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if self.get("/api/services").await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "Jaeger exited ({status}) before serving; its log:\n{}",
                    self.log_tail(60)
                ));
            }
            if started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "Jaeger did not serve in {START_DEADLINE:?}; its log:\n{}",
                    self.log_tail(60)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// The query API and UI address, `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    /// The services Jaeger has spans of (`/api/services`).
    ///
    /// # Errors
    /// If the query API does not answer with the expected JSON.
    pub async fn services(&self) -> Result<Vec<String>, String> {
        let body = self.get("/api/services").await?;
        Ok(body["data"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every span of every service, as the query API returns them (`/api/traces`).
    ///
    /// # Errors
    /// If the query API does not answer with the expected JSON.
    pub async fn spans(&self) -> Result<Vec<CollectedSpan>, String> {
        let mut seen = HashSet::new();
        let mut spans = Vec::new();
        for service in self.services().await? {
            let body = self
                .get(&format!("/api/traces?service={service}&limit=1000"))
                .await?;
            for trace in body["data"].as_array().into_iter().flatten() {
                for span in spans_of(trace) {
                    if seen.insert((span.trace_id.clone(), span.span_id.clone())) {
                        spans.push(span);
                    }
                }
            }
        }
        Ok(spans)
    }

    async fn get(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("{}{path_and_query}", self.query_url());
        let response = reqwest::get(&url)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: not JSON ({e}): {text}"))
    }

    /// The last `lines` lines of Jaeger's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let text = std::fs::read_to_string(dir.path().join("jaeger.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- Jaeger log (tail) ----\n{}", self.log_tail(40));
            if let Some(dir) = self.dir.take() {
                eprintln!("(kept in {})", dir.keep().display());
            }
        }
    }
}

/// Jaeger v2 (an OpenTelemetry Collector distribution): OTLP/gRPC in, in-memory storage, the
/// query API; its own telemetry off so that no fixed port (8888) is bound.
fn config_yaml(otlp: u16, query_http: u16, query_grpc: u16) -> String {
    format!(
        "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
    )
}

/// The spans of one trace of the query API: the parent is the `CHILD_OF` reference, links are
/// the others (Jaeger turns OTLP links into `FOLLOWS_FROM` references).
fn spans_of(trace: &Value) -> Vec<CollectedSpan> {
    let service_of = |process: &str| {
        trace["processes"][process]["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let trace_id = text(&span["traceID"]);
            let mut parent_span_id = String::new();
            let mut links = Vec::new();
            for reference in span["references"].as_array().into_iter().flatten() {
                let (ref_trace, ref_span) =
                    (text(&reference["traceID"]), text(&reference["spanID"]));
                if reference["refType"] == "CHILD_OF"
                    && ref_trace == trace_id
                    && parent_span_id.is_empty()
                {
                    parent_span_id = ref_span;
                } else {
                    links.push((ref_trace, ref_span));
                }
            }
            let attributes: BTreeMap<String, String> = span["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|tag| {
                    let value = match &tag["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (text(&tag["key"]), value)
                })
                .collect();
            CollectedSpan {
                service_name: service_of(span["processID"].as_str().unwrap_or_default()),
                name: text(&span["operationName"]),
                trace_id,
                span_id: text(&span["spanID"]),
                parent_span_id,
                links,
                attributes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_go_module() {
        assert_eq!(jaeger_version(), "v1.76.0");
        assert_eq!(jaeger_release(), "2.13.0");
    }

    #[test]
    fn a_query_api_trace_becomes_spans_with_parents_and_links() {
        let trace = serde_json::json!({
            "traceID": "aa", "processes": {"p1": {"serviceName": "app-agg"}},
            "spans": [
                {"traceID": "aa", "spanID": "01", "operationName": "agg.commit", "processID": "p1",
                 "references": [{"refType": "FOLLOWS_FROM", "traceID": "bb", "spanID": "02"}],
                 "tags": [{"key": "partition", "type": "int64", "value": 3}]},
                {"traceID": "aa", "spanID": "03", "operationName": "agg.emit", "processID": "p1",
                 "references": [{"refType": "CHILD_OF", "traceID": "aa", "spanID": "01"}]}
            ]
        });
        let spans = spans_of(&trace);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].service_name, "app-agg");
        assert_eq!(spans[0].parent_span_id, "");
        assert_eq!(spans[0].links, vec![("bb".to_owned(), "02".to_owned())]);
        assert_eq!(spans[0].attributes["partition"], "3");
        assert_eq!(spans[1].parent_span_id, "01");
        assert!(spans[1].links.is_empty());
    }
}
