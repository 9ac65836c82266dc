//! Helpers for tests that run the service binaries as child processes.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::Duration;

/// The cache `just kafka` and `just jaeger` install into: `$XDG_CACHE_HOME` (else
/// `~/.cache`), then `deribit-pipeline`.
#[must_use]
pub fn tool_cache() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".cache"))
        })?;
    Some(cache.join("deribit-pipeline"))
}

/// A TCP port that was free a moment ago on 127.0.0.1.
///
/// # Panics
/// If no port can be bound (the test cannot run anyway).
#[must_use]
#[allow(clippy::expect_used)] // test harness: no port means no test
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// `127.0.0.1:<free port>`, for `HTTP_ADDR`.
#[must_use]
pub fn free_http_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The whole HTTP/1.1 response to `GET path`, or an empty string if nothing answers.
#[must_use]
pub fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Whether `binary healthcheck` exits 0 against `HTTP_ADDR=addr`.
#[must_use]
pub fn healthcheck(binary: &str, addr: &str) -> bool {
    Command::new(binary)
        .arg("healthcheck")
        .env_clear()
        .env("HTTP_ADDR", addr)
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `signal` (`"TERM"`, `"KILL"`, …) to the child.
pub fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status();
}

/// The exit code of `child` once it has exited, waiting at most `within`.
///
/// # Panics
/// If it has not exited by then (naming how long it had), or waiting on it fails.
#[allow(clippy::unwrap_used, clippy::panic)] // test harness
pub async fn exit_code_within(child: &mut Child, within: Duration) -> Option<i32> {
    let exited = crate::wait_for(within, || child.try_wait().unwrap().is_some()).await;
    assert!(exited, "no exit within {within:?}");
    child.wait().unwrap().code()
}

/// Resident memory of process `pid`, MiB (`VmRSS` in `/proc/PID/status`; 0 if unreadable).
#[must_use]
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Wall-clock milliseconds since the epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Metric families the Grafana dashboard queries whose names start with `prefix`
/// (`_bucket`/`_sum`/`_count` reduced to the histogram's family).
///
/// # Panics
/// If the dashboard cannot be read.
#[must_use]
#[allow(clippy::panic)] // test harness: a missing dashboard fails the test that asked
pub fn dashboard_metrics(prefix: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../observability/grafana/dashboards/pipeline.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names: Vec<String> = text
        .match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a Prometheus scrape has a `# TYPE` line for `family`.
#[must_use]
pub fn has_family(scrape: &str, family: &str) -> bool {
    scrape.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .is_some_and(|t| t.split_whitespace().next() == Some(family))
    })
}

/// Asserts that `binary`, started with only `vars` in its environment, refuses to start: exit
/// code 2 and exactly one line on stderr that contains `expected`.
///
/// # Panics
/// When it does not (that is the test failing), or the binary cannot be run.
#[allow(clippy::panic, clippy::expect_used)] // test harness
pub fn assert_refuses_config(binary: &str, vars: &[(&str, &str)], expected: &str) {
    let out = Command::new(binary)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{vars:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{vars:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{vars:?}: expected {expected:?} in {stderr}"
    );
}

/// The variables both services require, pointing at closed local ports.
pub const REQUIRED_VARS: [(&str, &str); 2] = [
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
    ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
];

/// Asserts that `binary` refuses, as both services must: either required variable missing, and
/// malformed telemetry variables (each with [`assert_refuses_config`]).
///
/// # Panics
/// As [`assert_refuses_config`].
pub fn assert_refuses_shared_config(binary: &str) {
    assert_refuses_config(
        binary,
        &REQUIRED_VARS[1..],
        "KAFKA_BOOTSTRAP_SERVERS=\"\": required",
    );
    assert_refuses_config(
        binary,
        &REQUIRED_VARS[..1],
        "SCHEMA_REGISTRY_URL=\"\": required",
    );
    for (var, value, expected) in [
        (
            "LOG_FORMAT",
            "yaml",
            "LOG_FORMAT=\"yaml\": accepted text or json",
        ),
        (
            "OTEL_SDK_DISABLED",
            "1",
            "OTEL_SDK_DISABLED=\"1\": accepted true or false",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "jaeger:4317",
            "OTEL_EXPORTER_OTLP_ENDPOINT=\"jaeger:4317\"",
        ),
        (
            "OTEL_TRACES_SAMPLER",
            "foo",
            "OTEL_TRACES_SAMPLER=\"foo\": accepted always_on, always_off",
        ),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "notaport",
            "KAFKA_BOOTSTRAP_SERVERS=\"notaport\": host:port",
        ),
        (
            "SCHEMA_REGISTRY_USER",
            "u",
            "SCHEMA_REGISTRY_PASSWORD=\"\": required: SCHEMA_REGISTRY_USER is set",
        ),
        // What this build of librdkafka cannot do is refused before anything connects.
        (
            "KAFKA_PROPERTY_SASL_MECHANISM",
            "GSSAPI",
            "GSSAPI is not built in",
        ),
        (
            "KAFKA_PROPERTY_COMPRESSION_TYPE",
            "brotli",
            "Invalid value \"brotli\"",
        ),
    ] {
        assert_refuses_config(
            binary,
            &[&REQUIRED_VARS[..], &[(var, value)]].concat(),
            expected,
        );
    }
}

/// Asserts that bytes that are not UTF-8 in the environment never crash `binary`: in a variable
/// it does not read, `check-config` passes; in one it reads, it refuses with one line naming it.
///
/// # Panics
/// When it does not (that is the test failing), or the binary cannot be run.
#[allow(clippy::expect_used)] // test harness
pub fn assert_survives_foreign_bytes(binary: &str) {
    use std::os::unix::ffi::OsStrExt;
    let foreign = std::ffi::OsStr::from_bytes(b"a\xffb");
    let run = |name: &str| {
        Command::new(binary)
            .arg("check-config")
            .env_clear()
            .envs(REQUIRED_VARS.iter().copied())
            .env(name, foreign)
            .output()
            .expect("the binary runs")
    };
    let unread = run("FOO");
    assert_eq!(
        unread.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&unread.stderr)
    );
    let read = run("KAFKA_PROPERTY_CLIENT_ID");
    let stderr = String::from_utf8_lossy(&read.stderr);
    assert_eq!(read.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("KAFKA_PROPERTY_CLIENT_ID=\"a\u{fffd}b\": valid UTF-8 text"),
        "{stderr}"
    );
}

/// Asserts that `binary`, given the required variables plus `var=value`, refuses with a line
/// containing `expected`.
///
/// # Panics
/// As [`assert_refuses_config`].
pub fn assert_refuses_variable(binary: &str, var: &str, value: &str, expected: &str) {
    assert_refuses_config(
        binary,
        &[&REQUIRED_VARS[..], &[(var, value)]].concat(),
        expected,
    );
}

/// What `binary check-config` prints for [`REQUIRED_VARS`] plus `pairs`, as variable → value.
///
/// # Panics
/// When it does not pass, or a line after the first is not `VARIABLE=value` (a Rust `Debug`
/// dump, say): that is the test failing.
#[allow(clippy::expect_used, clippy::panic)] // test harness
pub fn check_config_output(binary: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let out = Command::new(binary)
        .arg("check-config")
        .env_clear()
        .envs(REQUIRED_VARS.iter().chain(pairs).copied())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.ends_with(": configuration OK")),
        "{stdout}"
    );
    lines
        .map(|line| {
            let (variable, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not VARIABLE=value: {line:?}\n{stdout}"));
            assert!(
                !variable.is_empty()
                    && variable
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "not a variable name: {line:?}"
            );
            (variable.to_owned(), value.to_owned())
        })
        .collect()
}

/// An environment of [`REQUIRED_VARS`] with `pairs` added or overriding, as the services'
/// `settings_from` take it.
pub fn required_env_with(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    REQUIRED_VARS
        .iter()
        .chain(pairs)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts that a service's `/metrics` scrape has every series the Grafana dashboard plots under
/// its `prefix`, and every `otel_` one.
///
/// # Panics
/// When one is missing (that is the test failing), or the dashboard cannot be read.
#[allow(clippy::panic)] // test harness
pub fn assert_scrape_covers_dashboard(scrape: &str, prefix: &str) {
    let families = [dashboard_metrics(prefix), dashboard_metrics("otel_")].concat();
    assert!(families.len() > 2, "{families:?}");
    for family in families {
        assert!(
            has_family(scrape, &family),
            "the dashboard plots {family}, which /metrics lacks"
        );
    }
}
