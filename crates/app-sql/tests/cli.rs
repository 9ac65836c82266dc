//! app-sql's command line and start-up against hostile settings and databases: configuration
//! it refuses (one line, exit 2, no password echoed), and databases that refuse it (a wrong
//! password, a user without rights, a table changed by hand): one ERROR line naming the cause,
//! exit 1, nothing written.
#![allow(clippy::unwrap_used, clippy::panic)] // test code

use std::process::Command;

use testkit::TestPostgres;
use testkit::process::{assert_refuses_config, check_config_output};

const BIN: &str = env!("CARGO_BIN_EXE_app-sql");

const BROKER: [(&str, &str); 2] = [
    ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
    ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
];

fn with(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    BROKER.iter().chain(pairs).copied().collect()
}

#[test]
fn bad_settings_stop_start_up_with_one_line_and_no_password() {
    let url = ("DATABASE_URL", "postgres://app:s3cret@db/market");
    assert_refuses_config(BIN, &with(&[]), "DATABASE_URL=\"\": required, not set");
    assert_refuses_config(
        BIN,
        &with(&[(
            "DATABASE_URL",
            "postgres://app:s3cret@db/market?sslmode=verify-ca",
        )]),
        "DATABASE_URL=\"postgres://app:(hidden)@db/market?sslmode=verify-ca\": sslmode",
    );
    assert_refuses_config(
        BIN,
        &with(&[url, ("SQL_SCHEMA", "x;drop")]),
        "SQL_SCHEMA=\"x;drop\"",
    );
    assert_refuses_config(
        BIN,
        &with(&[url, ("SQL_TRADES_RETENTION", "36h")]),
        "SQL_TRADES_RETENTION=\"36h\": whole days",
    );
    assert_refuses_config(
        BIN,
        &with(&[url, ("SQL_TRADES", "false"), ("SQL_BARS", "no")]),
        "nothing to load",
    );
    assert_refuses_config(BIN, &[url], "KAFKA_BOOTSTRAP_SERVERS=\"\": required");
}

#[test]
fn check_config_prints_every_setting_with_the_password_hidden() {
    let settings = check_config_output(
        BIN,
        &[
            (
                "DATABASE_URL",
                "postgres://app:s3cret@db:5432/market?sslmode=require",
            ),
            ("SQL_TRADES_RETENTION", "720h"),
        ],
    );
    let get = |name: &str| settings.get(name).map(String::as_str);
    assert_eq!(
        get("DATABASE_URL"),
        Some("postgres://app:(hidden)@db:5432/market?sslmode=require")
    );
    assert_eq!(get("SQL_TRADES_RETENTION"), Some("720h"));
    assert_eq!(get("SQL_SCHEMA"), Some("public"));
    assert_eq!(get("SQL_BATCH_INTERVAL"), Some("500ms"));
    assert_eq!(get("HTTP_ADDR"), Some("0.0.0.0:8092"));
    assert_eq!(get("LOG_FORMAT"), Some("text"));
    let all: String = settings.values().cloned().collect();
    assert!(!all.contains("s3cret"), "{settings:?}");
}

/// app-sql started against `url` (a broker nowhere: it must stop before it gets there), given
/// 20 s to stop (killed after: a service that runs on has not refused).
fn start_against(url: &str) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(BROKER)
        .env("DATABASE_URL", url)
        .env("OTEL_SDK_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    (out.status.code(), errors)
}

fn assert_stops_naming(url: &str, cause: &str) {
    let (code, errors) = start_against(url);
    assert_eq!(code, Some(1), "{errors:?}");
    assert_eq!(errors.len(), 1, "one line: {errors:?}");
    assert!(errors[0].contains(cause), "{cause:?} in {errors:?}");
}

#[test]
fn databases_that_refuse_stop_start_up_with_one_line_and_write_nothing() {
    let db = TestPostgres::start().unwrap();
    let wrong = db.url().replace(db.password(), "not-the-password");
    assert_stops_naming(&wrong, "password authentication failed");

    db.psql("CREATE ROLE reader LOGIN PASSWORD 'r'").unwrap();
    assert_stops_naming(
        &db.url_as("reader", "r", "postgres"),
        "permission denied for schema public",
    );
    assert_eq!(
        db.psql(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('trades', 'bars', 'positions')"
        )
        .unwrap(),
        "0"
    );

    // `migrate` alone makes the tables (twice is fine), then a table changed by hand stops
    // the service before it writes anything.
    for _ in 0..2 {
        let migrate = Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("OTEL_SDK_DISABLED", "true")
            .output()
            .unwrap();
        assert_eq!(
            migrate.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&migrate.stdout)
        );
    }
    db.psql("ALTER TABLE bars DROP COLUMN vwap").unwrap();
    assert_stops_naming(&db.url(), "table bars: column vwap is missing");
    assert_eq!(db.psql("SELECT count(*) FROM positions").unwrap(), "0");
}
