//! Tracing across the services: the trace backend (the in-process OTLP collector, or a real
//! Jaeger with `TEST_TRACES=jaeger`, read through its query API) lists all three; app-agg's
//! commit span and app-sql's database commit span each link to a trace that app-raw started
//! for a Deribit notification (so a trade's trace reaches its SQL row); app-agg's JSON log
//! lines carry its span's ids.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::services::service_binary;
use testkit::{CollectedSpan, FakeDeribit, FakeInstrument, TestTraces, wait_for};

/// An app-agg commit span linked to an app-raw notification span, and the emit span under it.
fn linked_pair(spans: &[CollectedSpan]) -> Option<(CollectedSpan, CollectedSpan)> {
    let notifications: Vec<&CollectedSpan> = spans
        .iter()
        .filter(|s| s.service_name == "app-raw" && s.name == "deribit.notification")
        .collect();
    spans
        .iter()
        .filter(|s| s.service_name == "app-agg" && s.name == "agg.commit")
        .find_map(|commit| {
            let raw = notifications.iter().find(|n| {
                commit
                    .links
                    .iter()
                    .any(|(trace, span)| *trace == n.trace_id && *span == n.span_id)
            })?;
            Some((commit.clone(), (*raw).clone()))
        })
}

/// Whether an app-sql database commit links to a trace app-raw started.
fn sql_commit_linked(spans: &[CollectedSpan]) -> bool {
    spans
        .iter()
        .filter(|s| s.service_name == "app-sql" && s.name == "sql.commit")
        .any(|commit| {
            spans.iter().any(|n| {
                n.service_name == "app-raw"
                    && n.name == "deribit.notification"
                    && commit
                        .links
                        .iter()
                        .any(|(trace, span)| *trace == n.trace_id && *span == n.span_id)
            })
        })
}

/// Whether an app-agg emit span has a commit cycle span as its parent.
fn emit_under_commit(spans: &[CollectedSpan]) -> bool {
    spans
        .iter()
        .filter(|s| s.service_name == "app-agg" && s.name == "agg.emit")
        .any(|e| {
            spans.iter().any(|c| {
                c.name == "agg.commit" && c.span_id == e.parent_span_id && c.trace_id == e.trace_id
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_agg_commit_spans_link_to_the_traces_app_raw_started() {
    let (broker, stub) = testkit::topics::pipeline_ground(2).await;
    let traces = TestTraces::from_env().await.unwrap();
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    let common = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", traces.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("KAFKA_SESSION_TIMEOUT", "3s".to_owned()),
    ];
    let (raw_http, agg_http) = (free_http_addr(), free_http_addr());
    let raw_bin = service_binary("app-raw");
    let mut raw = Command::new(raw_bin)
        .env_clear()
        .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
        .envs([
            ("DERIBIT_URL", fake.url()),
            ("DERIBIT_CHANNELS", "trades.future.BTC.100ms".to_owned()),
            ("HTTP_ADDR", raw_http.clone()),
            ("RUST_LOG", "warn".to_owned()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agg = Command::new(common::bin())
        .env_clear()
        .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
        .envs([
            ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
            ("AGG_TRANSACTIONAL_ID", "app-agg-process-test".to_owned()),
            ("AGG_WINDOWS", "1s".to_owned()),
            ("AGG_MAX_DELAY", "5s".to_owned()),
            ("AGG_COMMIT_INTERVAL", "200ms".to_owned()),
            ("HTTP_ADDR", agg_http.clone()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn,app_agg=debug".to_owned()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = testkit::TestPostgres::start().unwrap();
    let sql_http = free_http_addr();
    let sql_bin = service_binary("app-sql").to_string_lossy().into_owned();
    let sql = Command::new(&sql_bin)
        .env_clear()
        .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
        .envs([
            ("DATABASE_URL", db.url()),
            ("SQL_BATCH_INTERVAL", "200ms".to_owned()),
            ("HTTP_ADDR", sql_http.clone()),
            ("RUST_LOG", "warn".to_owned()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let raw_path = raw_bin.to_string_lossy().into_owned();
    assert!(
        wait_for(Duration::from_secs(30), || healthcheck(
            &raw_path, &raw_http
        ) && healthcheck(
            common::bin(),
            &agg_http
        ) && healthcheck(
            &sql_bin, &sql_http
        ))
        .await,
        "services never ready"
    );

    let pair = {
        let mut found = None;
        for _ in 0..60 {
            fake.trade("BTC-PERPETUAL", 3);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let spans = traces.spans().await.unwrap();
            found = linked_pair(&spans);
            if found.is_some() && emit_under_commit(&spans) && sql_commit_linked(&spans) {
                break;
            }
        }
        found
    };
    signal(&raw, "TERM");
    signal(&agg, "TERM");
    signal(&sql, "TERM");
    let (raw_status, agg_output) = (raw.wait().unwrap(), agg.wait_with_output().unwrap());
    let sql_status = sql.wait_with_output().unwrap().status;
    assert!(raw_status.success() && agg_output.status.success() && sql_status.success());

    let spans = traces.spans().await.unwrap();
    assert_eq!(
        traces.services().await.unwrap(),
        ["app-agg", "app-raw", "app-sql"],
        "each service under its own name"
    );
    assert!(
        sql_commit_linked(&spans),
        "an app-sql database commit links to the trace app-raw started for the trades it stores"
    );
    let (commit, notification) = pair.unwrap_or_else(|| {
        let names: Vec<(&str, &str, usize)> = spans
            .iter()
            .map(|s| (s.service_name.as_str(), s.name.as_str(), s.links.len()))
            .collect();
        panic!("no app-agg span links to an app-raw trace; received {names:?}")
    });
    assert_ne!(
        commit.trace_id, notification.trace_id,
        "linked, not parented"
    );
    assert_eq!(notification.parent_span_id, "", "app-raw starts the trace");
    assert!(
        emit_under_commit(&spans),
        "a batch of aggregates is a child span of its commit cycle"
    );

    // JSON logs: every line parses; the cycle's log line carries its span's ids.
    let stdout = String::from_utf8(agg_output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let commit_spans: Vec<(&str, &str)> = spans
        .iter()
        .filter(|s| s.name == "agg.commit")
        .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
        .collect();
    let traced = lines
        .iter()
        .filter(|l| l["message"] == "Cycle committed.")
        .filter(|l| {
            let ids = (
                l["trace_id"].as_str().unwrap_or_default(),
                l["span_id"].as_str().unwrap_or_default(),
            );
            commit_spans.contains(&ids)
        })
        .count();
    assert!(
        traced > 0,
        "no 'Cycle committed.' line with its span's ids in:\n{stdout}"
    );
}
