//! Compose, Dockerfile, Prometheus and the code cannot drift apart silently: checked without
//! Docker by reading the files and running the binaries' `check-config` / `healthcheck`.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)] // test helpers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use testkit::process::sibling_binary;

const AGG_BIN: &str = env!("CARGO_BIN_EXE_app-agg");
/// (compose service, Dockerfile stage, binary, default HTTP port)
const APPS: [(&str, &str, &str, u16); 2] = [
    ("app-raw", "app-raw", "app-raw", 8080),
    ("app-agg", "app-agg", "app-agg", 8091),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    let mut compose: Value = serde_yaml_ng::from_str(&read("docker/compose.yaml")).unwrap();
    compose.apply_merge().unwrap(); // `<<: *app-build`, as compose resolves it
    compose
}

fn binary(name: &str) -> PathBuf {
    if name == "app-agg" {
        PathBuf::from(AGG_BIN)
    } else {
        sibling_binary(AGG_BIN, name)
    }
}

/// `${NAME:-default}` as compose would resolve it with NAME unset.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${…}") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn environment(service: &str) -> BTreeMap<String, String> {
    let compose = compose();
    let env = &compose["services"][service]["environment"];
    let map = env
        .as_mapping()
        .unwrap_or_else(|| panic!("{service}: environment as a map"));
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("{service}: unexpected value {other:?}"),
            };
            (k.as_str().unwrap().to_owned(), interpolate(&value))
        })
        .collect()
}

/// Variable names the app's envconfig struct reads (`from = "NAME"`).
fn config_variables(app: &str) -> Vec<String> {
    let source = read(&format!("crates/{app}/src/config.rs"));
    source
        .match_indices("from = \"")
        .map(|(i, m)| {
            let rest = &source[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[test]
fn compose_passes_only_variables_the_apps_read_and_values_they_accept() {
    for (service, _, bin, _) in APPS {
        let env = environment(service);
        let known = config_variables(service);
        assert!(known.len() > 8, "{service}: found {known:?}");
        for name in env.keys() {
            let accepted = known.contains(name)
                || telemetry::TELEMETRY_VARIABLES.contains(&name.as_str())
                || name.starts_with("KAFKA_PROPERTY_");
            assert!(accepted, "{service}: {name} is read by nothing");
        }
        // Every required variable set, every value valid: the binary's own check says so.
        let out = Command::new(binary(bin))
            .arg("check-config")
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And the check is real: without the compose environment it refuses.
        let bare = Command::new(binary(bin))
            .arg("check-config")
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(
            bare.status.code(),
            Some(2),
            "{service} accepts an empty environment"
        );
    }
}

#[test]
fn compose_wires_healthchecks_dependencies_and_the_changelog() {
    let compose = compose();
    let services = &compose["services"];
    for (service, stage, bin, port) in APPS {
        let s = &services[service];
        assert_eq!(
            s["build"]["target"].as_str(),
            Some(stage),
            "{service}: build target"
        );
        assert_eq!(s["build"]["dockerfile"].as_str(), Some("docker/Dockerfile"));
        let test: Vec<&str> = s["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            test,
            ["CMD", &format!("/usr/local/bin/{bin}"), "healthcheck"]
        );
        let http = environment(service)["HTTP_ADDR"].clone();
        assert_eq!(http, format!("0.0.0.0:{port}"), "{service}: HTTP_ADDR");
        assert_eq!(
            s["depends_on"]["kafka-init"]["condition"].as_str(),
            Some("service_completed_successfully")
        );
        assert_eq!(
            s["depends_on"]["schema-registry"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_eq!(
            environment(service)["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://jaeger:4317"
        );
    }
    for service in ["kafka", "schema-registry", "jaeger", "app-raw", "app-agg"] {
        assert!(
            services[service]["healthcheck"]["test"].is_sequence(),
            "{service} has a healthcheck"
        );
    }
    // Topics: the changelog compacted and partitioned like the raw topic.
    let init = services["kafka-init"]["command"][0].as_str().unwrap();
    let partitions = |topic: &str| -> String {
        let line = init
            .lines()
            .find(|l| l.contains(&format!("--topic {topic} ")))
            .unwrap_or_else(|| panic!("{topic} not created"));
        let after = &line[line.find("--partitions ").unwrap() + 13..];
        after.split_whitespace().next().unwrap().to_owned()
    };
    let agg_env = environment("app-agg");
    let raw_topic = &agg_env["RAW_TOPIC"];
    let changelog = &agg_env["AGG_CHANGELOG_TOPIC"];
    assert_eq!(partitions(raw_topic), partitions(changelog));
    assert!(partitions(&agg_env["AGG_TOPIC"]).parse::<u32>().unwrap() >= 1);
    let changelog_line = init
        .lines()
        .find(|l| l.contains(changelog.as_str()))
        .unwrap();
    assert!(
        changelog_line.contains("cleanup.policy=compact"),
        "{changelog_line}"
    );
    assert_eq!(environment("app-raw")["RAW_TOPIC"], *raw_topic);
    assert!(
        init.contains(&format!("--topic {raw_topic}.dlq ")),
        "the DLQ topic exists"
    );
    assert!(
        init.contains(&format!("--topic {raw_topic}.late ")),
        "the late-trades topic exists"
    );
    // Monitoring stays optional.
    for service in ["prometheus", "grafana"] {
        assert_eq!(
            services[service]["profiles"][0].as_str(),
            Some("monitoring")
        );
    }
}

#[test]
fn dockerfile_builds_and_checks_the_workspace_binaries() {
    let dockerfile = read("docker/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    for (_, stage, bin, port) in APPS {
        assert!(stages.contains(&stage), "stage {stage} in {stages:?}");
        assert!(
            dockerfile.contains(&format!("--bin {bin}")),
            "{bin} is built"
        );
        let section = &dockerfile[dockerfile.find(&format!(" AS {stage}\n")).unwrap()..];
        let section = &section[..section[1..]
            .find("\nFROM ")
            .map_or(section.len(), |i| i + 1)];
        let path = format!("/usr/local/bin/{bin}");
        assert!(
            section.contains(&format!("COPY --from=builder /out/{bin} {path}")),
            "{section}"
        );
        assert!(
            section.contains(&format!("CMD [\"{path}\", \"healthcheck\"]")),
            "{stage}: HEALTHCHECK uses the binary"
        );
        assert!(section.contains(&format!("ENTRYPOINT [\"{path}\"]")));
        assert!(section.contains(&format!("EXPOSE {port}")));
        assert!(section.contains(&format!("HTTP_ADDR=0.0.0.0:{port}")));
        // The subcommand exists and fails when nothing answers.
        let status = Command::new(binary(bin))
            .arg("healthcheck")
            .env_clear()
            .env(
                "HTTP_ADDR",
                format!("127.0.0.1:{}", testkit::process::free_port()),
            )
            .status()
            .unwrap();
        assert_eq!(
            status.code(),
            Some(1),
            "{bin} healthcheck with nothing listening"
        );
    }
    assert!(dockerfile.contains("USER 10001"), "runs as non-root");
    assert!(dockerfile.contains("ca-certificates"));
    assert!(
        dockerfile.contains("cargo chef cook"),
        "dependencies in their own layer"
    );
    assert!(dockerfile.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore: {entry}"
        );
    }
}

#[test]
fn prometheus_scrapes_the_services_where_compose_runs_them() {
    let config: Value = serde_yaml_ng::from_str(&read("observability/prometheus.yml")).unwrap();
    let jobs = config["scrape_configs"].as_sequence().unwrap();
    for (service, _, _, port) in APPS {
        let job = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some(service))
            .unwrap_or_else(|| panic!("no scrape job {service}"));
        assert_eq!(
            job["static_configs"][0]["targets"][0].as_str(),
            Some(format!("{service}:{port}").as_str())
        );
        assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    }
    let compose = compose();
    let volumes = compose["services"]["prometheus"]["volumes"][0]
        .as_str()
        .unwrap();
    assert!(volumes.starts_with("../observability/prometheus.yml:"));
}

#[test]
fn compose_runs_the_kafka_release_the_tests_run() {
    let compose = compose();
    let want = format!("apache/kafka:{}", testkit::kafka::kafka_version());
    for service in ["kafka", "kafka-init"] {
        assert_eq!(
            compose["services"][service]["image"].as_str(),
            Some(want.as_str()),
            "{service}: the broker image is the release tools/kafka/pom.xml fetches for the tests"
        );
    }
}
