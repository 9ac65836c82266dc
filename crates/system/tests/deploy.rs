//! Compose, Dockerfile, Prometheus, `just up` and the code cannot drift apart silently: checked
//! without Docker by reading the files and running the binaries' `check-config` / `healthcheck`.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)] // test helpers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use testkit::services::service_binary;

/// (compose service, Dockerfile stage, binary, default HTTP port)
const APPS: [(&str, &str, &str, u16); 3] = [
    ("app-raw", "app-raw", "app-raw", 8080),
    ("app-agg", "app-agg", "app-agg", 8091),
    ("app-sql", "app-sql", "app-sql", 8092),
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

fn binary(name: &str) -> &'static Path {
    service_binary(name)
}

/// `${NAME:-default}` as compose would resolve it with NAME unset.
fn interpolate(value: &str) -> String {
    interpolate_with(value, &[])
}

/// `${NAME:-default}` as compose would resolve it with the variables `set` and no other.
fn interpolate_with(value: &str, set: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${…}") + start;
        let inner = &rest[start + 2..end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let given = set.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        out.push_str(given.unwrap_or(default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `${NAME…}` variables a compose value reads.
fn variables_in(value: &str) -> Vec<&str> {
    value
        .match_indices("${")
        .map(|(i, m)| {
            let inner = &value[i + m.len()..];
            let inner = &inner[..inner.find('}').expect("closed ${…}")];
            inner.split_once(":-").map_or(inner, |(name, _)| name)
        })
        .collect()
}

/// The `ports` entries of a compose service, as written (`HOST:CONTAINER`).
fn ports(compose: &Value, service: &str) -> Vec<String> {
    compose["services"][service]["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .map(|p| p.as_str().expect("ports as strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The host ports a resolved `HOST:CONTAINER` entry publishes (`8101-8109:8091`: nine).
fn host_ports(entry: &str) -> std::ops::RangeInclusive<u16> {
    let (host, _) = entry
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{entry}: HOST:CONTAINER"));
    let parse = |p: &str| -> u16 { p.parse().unwrap_or_else(|_| panic!("{entry}: port {p}")) };
    match host.split_once('-') {
        Some((low, high)) => parse(low)..=parse(high),
        None => parse(host)..=parse(host),
    }
}

/// The container port of a `HOST:CONTAINER` entry.
fn container_port(entry: &str) -> u16 {
    entry.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The host port `service` publishes its container port `port` on, with compose's defaults.
fn published(compose: &Value, service: &str, port: u16) -> u16 {
    let entry = ports(compose, service)
        .into_iter()
        .map(|p| interpolate(&p))
        .find(|p| container_port(p) == port)
        .unwrap_or_else(|| panic!("{service} does not publish {port}"));
    let hosts = host_ports(&entry);
    assert_eq!(
        hosts.start(),
        hosts.end(),
        "{service}: one host port by default"
    );
    *hosts.start()
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

/// Variable names the app's config reads: its envconfig struct's (`from = "NAME"`), its
/// `shell::declare_settings!` entries' (`field: Type = |v| parse(v, …), "NAME" …;`), and those
/// of the Kafka and registry block every app nests (`shell::broker::BrokerVariables`).
fn config_variables(app: &str) -> Vec<String> {
    let mut source = read(&format!("crates/{app}/src/config.rs"));
    if source.contains("#[envconfig(nested)]") {
        source.push_str(&read("crates/shell/src/broker.rs"));
    }
    let envconfig = source.match_indices("from = \"").map(|(i, m)| {
        let rest = &source[i + m.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    });
    let declared = source.lines().filter_map(|line| {
        let rest = &line[line.find("= |v| ")?..];
        let rest = &rest[rest.find(", \"")? + 3..];
        Some(rest[..rest.find('"')?].to_owned())
    });
    envconfig.chain(declared).collect()
}

/// Whether the service reads `name` (its config, telemetry or a librdkafka pass-through).
fn reads(known: &[String], name: &str) -> bool {
    known.iter().any(|k| k == name)
        || telemetry::TELEMETRY_VARIABLES.contains(&name)
        || name.starts_with("KAFKA_PROPERTY_")
}

#[test]
fn compose_passes_only_variables_the_apps_read_and_values_they_accept() {
    for (service, _, bin, _) in APPS {
        let env = environment(service);
        let known = config_variables(service);
        assert!(known.len() > 8, "{service}: found {known:?}");
        for name in env.keys() {
            assert!(reads(&known, name), "{service}: {name} is read by nothing");
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
        // The list above is what the binary reads: each setting it prints is found in it.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let printed: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(printed.contains(&"HTTP_ADDR"), "{service}: {stdout}");
        for name in printed {
            assert!(
                reads(&known, name),
                "{service}: check-config prints {name}, not found in its config"
            );
        }
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
    for service in [
        "kafka",
        "schema-registry",
        "jaeger",
        "postgres",
        "app-raw",
        "app-agg",
        "app-sql",
    ] {
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
    assert!(
        changelog_line.contains(&format!(
            "segment.bytes={}",
            adapters_kafka::topics::COMPACTED_SEGMENT_BYTES
        )),
        "the segments app-agg would create it with, so compaction bounds a restore: {changelog_line}"
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
    // app-sql loads what app-raw and app-agg write (topics found created above).
    let sql_env = environment("app-sql");
    assert_eq!(
        sql_env["RAW_TOPIC"], *raw_topic,
        "app-sql reads app-raw's topic"
    );
    assert_eq!(
        sql_env["AGG_TOPIC"], agg_env["AGG_TOPIC"],
        "app-sql reads app-agg's topic"
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
fn compose_gives_app_sql_the_postgres_it_runs() {
    let compose = compose();
    let services = &compose["services"];
    let postgres = &services["postgres"];
    assert_eq!(postgres["image"].as_str(), Some("postgres:17"));
    let pg = environment("postgres");
    let (user, password, db) = (
        &pg["POSTGRES_USER"],
        &pg["POSTGRES_PASSWORD"],
        &pg["POSTGRES_DB"],
    );
    // app-sql connects as the user the image creates, to the database it creates.
    assert_eq!(
        environment("app-sql")["DATABASE_URL"],
        format!("postgres://{user}:{password}@postgres:5432/{db}")
    );
    assert_eq!(
        condition(&compose, "app-sql", "postgres").as_deref(),
        Some("service_healthy"),
        "app-sql starts once PostgreSQL accepts connections"
    );
    let test: Vec<&str> = postgres["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(test, ["CMD", "pg_isready", "-U", user, "-d", db]);
    // The data outlives the container, in a named volume.
    let volume = postgres["volumes"][0].as_str().unwrap();
    let (name, path) = volume.split_once(':').unwrap();
    assert_eq!(path, "/var/lib/postgresql/data", "postgres:17's PGDATA");
    assert!(
        compose["volumes"].as_mapping().unwrap().contains_key(name),
        "volume {name} declared"
    );
    assert_eq!(published(&compose, "postgres", 5432), 5432);
    // The app-sql binary accepts the URL (and the rest of compose's environment): checked in
    // compose_passes_only_variables_the_apps_read_and_values_they_accept.
}

/// Every host port `service` publishes, with compose's defaults.
fn all_host_ports(compose: &Value, service: &str) -> Vec<u16> {
    ports(compose, service)
        .iter()
        .flat_map(|p| host_ports(&interpolate(p)))
        .collect()
}

#[test]
fn compose_publishes_each_host_port_once() {
    let compose = compose();
    let mut owner: BTreeMap<u16, String> = BTreeMap::new();
    for (service, _) in compose["services"].as_mapping().unwrap() {
        let service = service.as_str().unwrap();
        for port in all_host_ports(&compose, service) {
            if let Some(other) = owner.insert(port, service.to_owned()) {
                panic!("host port {port}: {other} and {service}");
            }
        }
    }
    // Each app on its own port number, inside the container and out.
    for (service, _, _, port) in APPS {
        assert_eq!(published(&compose, service, port), port, "{service}");
    }
}

#[test]
fn just_up_prints_where_compose_publishes() {
    let compose = compose();
    let justfile = read("justfile");
    let up = &justfile[justfile.find("\nup ").expect("an `up` recipe")..];
    let up = &up[..up[1..].find("\n\n").map_or(up.len(), |i| i + 1)];
    for (service, _, _, port) in APPS {
        let host = published(&compose, service, port);
        let line = format!("{service:<17}http://localhost:{host}/metrics  (/readyz, /healthz)");
        assert!(up.contains(&line), "`just up` prints {line:?}:\n{up}");
    }
    let pg = environment("postgres");
    let psql = format!(
        "psql postgresql://{}:{}@localhost:{}/{}",
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        published(&compose, "postgres", 5432),
        pg["POSTGRES_DB"]
    );
    assert!(up.contains(&psql), "`just up` prints {psql:?}:\n{up}");
}

/// The `depends_on` condition of `service` on `on`, if it depends on it.
fn condition(compose: &Value, service: &str, on: &str) -> Option<String> {
    compose["services"][service]["depends_on"][on]["condition"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn compose_waits_only_for_what_a_service_cannot_start_without() {
    let compose = compose();
    // The services run without a trace collector: an unreachable one costs only spans.
    for (service, ..) in APPS {
        assert_ne!(
            condition(&compose, service, "jaeger").as_deref(),
            Some("service_healthy"),
            "{service} must not wait for Jaeger to be healthy"
        );
    }
    // Dashboards come up while a service is not ready (offline, Deribit maintenance): that is
    // when they are needed.
    for service in ["prometheus", "grafana"] {
        for (app, ..) in APPS {
            assert_ne!(
                condition(&compose, service, app).as_deref(),
                Some("service_healthy"),
                "{service} must not wait for {app} to be ready"
            );
        }
    }
}

#[test]
fn compose_lets_app_agg_scale_out() {
    let compose = compose();
    // A fixed id would make every replica fence the others.
    assert!(
        !environment("app-agg").contains_key("AGG_TRANSACTIONAL_ID"),
        "replicas need distinct transactional ids (the default names the host)"
    );
    // One replica answers on 8091, where `just up` says; N replicas need N host ports, which a
    // variable gives without editing the file. The range compose's comment suggests is one
    // that no other service publishes on.
    let text = read("docker/compose.yaml");
    let others: Vec<u16> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .filter(|s| *s != "app-agg")
        .flat_map(|s| all_host_ports(&compose, s))
        .collect();
    let entries = ports(&compose, "app-agg");
    assert!(!entries.is_empty());
    for entry in entries {
        let variables = variables_in(&entry);
        let [variable] = variables[..] else {
            panic!("app-agg publishes {entry}: a fixed host port allows one replica")
        };
        let advice = format!("{variable}=");
        let suggested = text[text
            .find(&advice)
            .unwrap_or_else(|| panic!("no example of {advice}"))
            + advice.len()..]
            .split_whitespace()
            .next()
            .unwrap();
        let scaled = interpolate_with(&entry, &[(variable, suggested)]);
        let hosts = host_ports(&scaled);
        assert!(hosts.clone().count() >= 3, "{scaled}: room for replicas");
        assert!(
            !hosts.clone().any(|p| others.contains(&p)),
            "{scaled} takes a host port another service publishes"
        );
    }
    // Prometheus scrapes every replica, not the one the name happens to resolve to.
    let config: Value = serde_yaml_ng::from_str(&read("observability/prometheus.yml")).unwrap();
    let job = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some("app-agg"))
        .unwrap();
    assert_eq!(
        job["dns_sd_configs"][0]["names"][0].as_str(),
        Some("app-agg")
    );
}

#[test]
fn dockerfile_builds_and_checks_the_workspace_binaries() {
    let dockerfile = read("docker/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    // Instructions whole, continuation lines joined.
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::to_owned)
        .collect();
    let instruction = |what: &str| -> &str {
        instructions
            .iter()
            .find(|i| i.contains(what))
            .unwrap_or_else(|| panic!("no instruction with {what}"))
    };
    let (cook, build, strip) = (
        instruction("cargo chef cook"),
        instruction("cargo build --release"),
        instruction("strip --strip-debug"),
    );
    for (_, stage, bin, port) in APPS {
        assert!(stages.contains(&stage), "stage {stage} in {stages:?}");
        let flag = format!("--bin {bin} ");
        assert!(
            format!("{cook} ").contains(&flag),
            "{bin}'s dependencies are cooked"
        );
        assert!(build.contains(&flag), "{bin} is built");
        assert!(
            build.contains(&format!(" target/release/{bin} ")),
            "{bin} is copied out"
        );
        // Debug line tables are for local profiling; images carry symbols only.
        assert!(
            format!("{strip} ").contains(&format!("/out/{bin} ")),
            "{bin} is stripped"
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
        let target = job["static_configs"][0]["targets"][0]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                let sd = &job["dns_sd_configs"][0];
                Some(format!(
                    "{}:{}",
                    sd["names"][0].as_str()?,
                    sd["port"].as_u64()?
                ))
            });
        assert_eq!(target, Some(format!("{service}:{port}")));
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

#[test]
fn compose_runs_the_jaeger_release_the_tests_run() {
    let want = format!("jaegertracing/jaeger:{}", testkit::jaeger::jaeger_release());
    assert_eq!(
        compose()["services"]["jaeger"]["image"].as_str(),
        Some(want.as_str()),
        "the Jaeger image is the release tools/jaeger/go.mod builds for the tests"
    );
}

#[test]
fn dashboard_panels_plot_one_unit_and_show_health_and_load_shedding() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("observability/grafana/dashboards/pipeline.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut plotted = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            plotted.push(expr.to_owned());
            // A count drawn on a seconds axis reads as a duration.
            if unit == "s" {
                assert!(
                    expr.contains("_seconds") && !expr.contains("_total"),
                    "{title}: {expr} is not a duration in seconds"
                );
            }
        }
    }
    for metric in [
        "up{",
        "app_agg_ready",
        "app_raw_subscribed",
        "app_raw_shed_batches_total",
        "app_raw_rate_limit_hits_total",
        "app_agg_windows_with_gaps_total",
    ] {
        assert!(
            plotted.iter().any(|e| e.contains(metric)),
            "no panel plots {metric}"
        );
    }
}
