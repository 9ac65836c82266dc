//! The services as child processes of a test or of the demo: their binaries, and each started
//! with the tests' settings ([`spawn_agg`], [`spawn_raw`], [`sql_command`]).
//!
//! A package's tests get `CARGO_BIN_EXE_<name>` for that package's own binaries only, and cargo
//! builds no other package's binaries for them. Whatever runs the services (the `system`
//! crate's tests, the demo) asks [`service_binary`] or [`service_binaries`]: once per process
//! they run `cargo build --locked -p app-raw -p app-agg -p app-sql --bins` with the profile of the running
//! executable and take the paths from cargo's own report. A fresh pair costs a no-op build (a
//! second); a missing or stale one is built, so no test runs old code, even on a clean checkout
//! where only `cargo test -p system` ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::{SchemaRegistryStub, TestBroker};

/// The service packages, each with one binary of its name.
pub const SERVICES: [&str; 3] = ["app-raw", "app-agg", "app-sql"];

/// The workspace manifest (testkit is `crates/testkit`).
const WORKSPACE_MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");

/// Variables cargo sets for the crate it builds or runs (besides `CARGO_PKG_*` and
/// `CARGO_BIN_EXE_*`), which a nested build must not inherit.
const CRATE_VARIABLES: [&str; 9] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Package name → path of its binary, for every one of [`SERVICES`], built first (once per
/// process: later calls return the first answer).
///
/// # Errors
/// Why they could not be had: cargo could not be run or failed (its diagnostics went to
/// stderr), or the running executable is not in a cargo target directory.
pub fn service_binaries() -> Result<&'static BTreeMap<String, PathBuf>, String> {
    static BUILT: OnceLock<Result<BTreeMap<String, PathBuf>, String>> = OnceLock::new();
    BUILT.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// The path of `package`'s binary (one of [`SERVICES`]), as [`service_binaries`] built it.
///
/// # Panics
/// If it cannot be built, or `package` is not a service: the test cannot run.
#[must_use]
#[allow(clippy::panic)] // test harness: without the binary the test cannot run
pub fn service_binary(package: &str) -> &'static Path {
    match service_binaries() {
        Ok(binaries) => binaries
            .get(package)
            .map(PathBuf::as_path)
            .unwrap_or_else(|| panic!("{package} is not one of {SERVICES:?}")),
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<BTreeMap<String, PathBuf>, String> {
    let profile = running_profile()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args([
        "build",
        "--locked",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
        WORKSPACE_MANIFEST,
        "--profile",
        &profile,
        "--bins",
    ]);
    for package in SERVICES {
        command.args(["-p", package]);
    }
    // What cargo set for the crate running now (its name, manifest, version) is no setting of
    // this build; build scripts that watch such a variable (ring does) would rerun and rebuild
    // everything above them, so the binaries would be built twice, here and by a plain `cargo
    // build` before or after.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || CRATE_VARIABLES.contains(&name)
        {
            command.env_remove(name);
        }
    }
    let what = format!(
        "cargo build --profile {profile} -p {} --bins",
        SERVICES.join(" -p ")
    );
    // Progress and compiler errors go where the caller's stderr goes; the report comes back.
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{what}: cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}); its errors are above",
            output.status
        ));
    }
    let mut built = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str();
        let executable = message["executable"].as_str();
        if let (Some(name), Some(executable)) = (name, executable)
            && message["reason"] == "compiler-artifact"
            && SERVICES.contains(&name)
        {
            built.insert(name.to_owned(), PathBuf::from(executable));
        }
    }
    match SERVICES.iter().find(|s| !built.contains_key(**s)) {
        Some(missing) => Err(format!("{what}: cargo reported no binary {missing}")),
        None => Ok(built),
    }
}

/// The cargo profile the running executable was built with, named by the directory cargo put
/// it in: `<target>/<profile dir>/{deps,examples}/<executable>`, where `debug` holds the `dev`
/// and `test` profiles and `release` the `release` and `bench` ones.
fn running_profile() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let mut dir = exe.parent();
    if dir
        .and_then(Path::file_name)
        .is_some_and(|name| name == "deps" || name == "examples")
    {
        dir = dir.and_then(Path::parent);
    }
    match dir.and_then(Path::file_name).and_then(|name| name.to_str()) {
        Some("debug") => Ok("dev".to_owned()),
        Some(name) => Ok(name.to_owned()),
        None => Err(format!(
            "{}: not in a cargo target directory, so no profile to build the services with",
            exe.display()
        )),
    }
}

/// app-agg at `binary` as the tests run it, output not yet directed: 1 s windows, no grace,
/// windows closed by event time only, 50 ms commit cycles, on `http`, one transaction per cycle
/// on Apache Kafka (the mock only fakes them) under an id made of `instance` (a restarted
/// instance keeps its id, so its new producer aborts what the old one left open; two live
/// instances need two). `CHILD_LOG` sets its `RUST_LOG` (default `error`).
#[must_use]
pub fn agg_command(
    binary: &str,
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    http: &str,
    instance: &str,
) -> Command {
    let mut command = Command::new(binary);
    command.env_clear().envs([
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("AGG_TRANSACTIONS", (!broker.is_mock()).to_string()),
        ("AGG_TRANSACTIONAL_ID", format!("app-agg-test-{instance}")),
        ("AGG_WINDOWS", "1s".into()),
        ("AGG_GRACE", "0s".into()),
        ("AGG_MAX_DELAY", "24h".into()),
        ("AGG_HALFLIVES", "2s,30s".into()),
        ("AGG_COMMIT_INTERVAL", "50ms".into()),
        ("KAFKA_SESSION_TIMEOUT", "3s".into()),
        ("HTTP_ADDR", http.to_owned()),
        (
            "RUST_LOG",
            std::env::var("CHILD_LOG").unwrap_or_else(|_| "error".into()),
        ),
        ("OTEL_SDK_DISABLED", "true".into()),
    ]);
    command
}

/// Starts [`agg_command`]; its log goes to `$CHILD_LOG_DIR/app-agg-<http>.log` if that is set,
/// else nowhere.
///
/// # Panics
/// If the log file cannot be created or the binary cannot be started.
#[must_use]
#[allow(clippy::unwrap_used)] // test harness
pub fn spawn_agg(
    binary: &str,
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    http: &str,
    instance: &str,
) -> Child {
    agg_command(binary, broker, stub, http, instance)
        .stdout(child_log("app-agg", http))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts app-raw at `binary` as the tests run it: `channels` of the fake Deribit at
/// `deribit_url`, into `broker` and `stub`, probes on `http`. `CHILD_LOG` sets its `RUST_LOG`
/// (default `error`); its log goes to `$CHILD_LOG_DIR/app-raw-<http>.log` if that is set.
///
/// # Panics
/// If the log file cannot be created or the binary cannot be started.
#[must_use]
#[allow(clippy::unwrap_used)] // test harness
pub fn spawn_raw(
    binary: &str,
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    deribit_url: &str,
    channels: &str,
    http: &str,
) -> Child {
    Command::new(binary)
        .env_clear()
        .envs([
            ("DERIBIT_URL", deribit_url.to_owned()),
            ("DERIBIT_CHANNELS", channels.to_owned()),
            ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
            ("SCHEMA_REGISTRY_URL", stub.url()),
            ("HTTP_ADDR", http.to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
            (
                "RUST_LOG",
                std::env::var("CHILD_LOG").unwrap_or_else(|_| "error".into()),
            ),
        ])
        .stdout(child_log("app-raw", http))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// app-sql at `binary` as the tests run it, output not yet directed: the raw and aggregates
/// topics of `broker` into the PostgreSQL at `database_url`, 100 ms batches, 3 s sessions, probes
/// on `http`. `CHILD_LOG` sets its `RUST_LOG` (default `warn`).
#[must_use]
pub fn sql_command(
    binary: &str,
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    database_url: &str,
    http: &str,
) -> Command {
    let mut command = Command::new(binary);
    command.env_clear().envs([
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
        ("SCHEMA_REGISTRY_URL", stub.url()),
        ("DATABASE_URL", database_url.to_owned()),
        ("SQL_BATCH_INTERVAL", "100ms".into()),
        ("KAFKA_SESSION_TIMEOUT", "3s".into()),
        ("HTTP_ADDR", http.to_owned()),
        ("OTEL_SDK_DISABLED", "true".into()),
        (
            "RUST_LOG",
            std::env::var("CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]);
    command
}

/// `app-raw history` at `binary` over [`from`, `to`) (UTC text, as `--from`/`--to` take it) of
/// `channels` on the Deribit at `deribit_url`, spans off; the caller adds where the trades go.
/// `CHILD_LOG` sets its `RUST_LOG` (default `warn`: the progress line and the summary).
#[must_use]
pub fn history_command(
    binary: &str,
    deribit_url: &str,
    from: &str,
    to: &str,
    channels: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs([
            ("DERIBIT_URL", deribit_url.to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
            (
                "RUST_LOG",
                std::env::var("CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ])
        .args([
            "history",
            "--from",
            from,
            "--to",
            to,
            "--channels",
            channels,
        ]);
    command
}

/// Where a child's log goes: `$CHILD_LOG_DIR/<service>-<http>.log` if that is set (with
/// `CHILD_LOG=info` for detail), else nowhere.
#[allow(clippy::unwrap_used)] // test harness
pub fn child_log(service: &str, http: &str) -> Stdio {
    match std::env::var("CHILD_LOG_DIR") {
        Ok(dir) => Stdio::from(
            std::fs::File::create(format!("{dir}/{service}-{}.log", http.replace(':', "_")))
                .unwrap(),
        ),
        Err(_) => Stdio::null(),
    }
}
