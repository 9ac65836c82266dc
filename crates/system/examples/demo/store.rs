//! The demo's PostgreSQL store, when Debian's PostgreSQL binaries are on the machine: a
//! throwaway cluster (testkit's) and app-sql loading both topics into it, with the `psql` line
//! for the screen. Without the binaries the demo runs as before and says why on its footer.

use std::path::Path;

use testkit::TestPostgres;
use testkit::process::free_http_addr;

use crate::services::{Services, spawn};

/// What the store adds to the demo: the database (dropped after the services stop) and the
/// footer's line about it.
pub(crate) struct Store {
    /// The throwaway cluster, if one could start: held until the demo drops the store, after
    /// the services stopped.
    _database: Option<TestPostgres>,
    /// `psql …` and app-sql's metrics, or why there is no store.
    pub(crate) line: String,
}

/// Starts a PostgreSQL and app-sql (added to `services`) with the demo's `common` settings.
pub(crate) fn start(
    common: &[(&'static str, String)],
    logs: &Path,
    services: &mut Services,
) -> Store {
    let database = match TestPostgres::start() {
        Ok(database) => database,
        Err(e) => {
            return Store {
                _database: None,
                line: format!("no PostgreSQL store ({e})"),
            };
        }
    };
    let addr = free_http_addr();
    let mut env = common.to_vec();
    env.extend([
        ("DATABASE_URL", database.url()),
        ("HTTP_ADDR", addr.clone()),
    ]);
    let line = match spawn("app-sql", &env, logs) {
        Ok(child) => {
            services.0.push(("app-sql", child));
            format!(
                "SQL: psql {} (tables trades, bars); http://{addr}/metrics (app-sql)",
                database.url()
            )
        }
        Err(e) => format!("no PostgreSQL store (app-sql: {e:#})"),
    };
    Store {
        _database: Some(database),
        line,
    }
}
