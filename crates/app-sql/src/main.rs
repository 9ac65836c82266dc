//! app-sql binary: with no subcommand, the service (configured from the environment);
//! `app-sql migrate` applies the database migrations and exits.

// As in the other services: jemalloc returns freed memory to the system steadily.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adapters_kafka::registry::Registry;
use adapters_kafka::source::KafkaRecordSource;
use adapters_postgres::connect::connect;
use adapters_postgres::migrate::migrate;
use adapters_postgres::{DatabaseUrl, PgStore};
use anyhow::Context;
use app_sql::config::{Settings, SqlConfig, SqlVariables, default_http_addr};
use app_sql::metrics::{SqlMetrics, SqlProbe};
use app_sql::service::{Batching, Service, ServiceError};
use clap::{Parser, Subcommand};
use envconfig::Envconfig;
use futures::FutureExt;
use ports::{Clock, SystemClock};
use shell::config::ServiceVariables as _;
use shell::http::ProbeServer;
use tracing::{info, warn};

/// Trades and bars from Kafka into PostgreSQL, exactly once.
#[derive(Debug, Parser)]
#[command(name = "app-sql", version, about)]
struct Cli {
    /// What to do; without one, run the service.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (DATABASE_URL, SQL_SCHEMA) and exit.
    Migrate,
    /// Exit 0 only if the running service's /readyz (at HTTP_ADDR) answers OK.
    Healthcheck,
    /// Validate the environment as the service would, print the result, connect to nothing.
    CheckConfig,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        None => {
            shell::run_service_with("app-sql", SqlConfig::settings_from_env(), serve, exit_code)
        }
        Some(Command::Migrate) => {
            shell::run_service("app-sql migrate", migrate_settings(), migrate_only)
        }
        Some(Command::Healthcheck) => {
            shell::http::healthcheck_command("app-sql", default_http_addr())
        }
        Some(Command::CheckConfig) => {
            shell::check_config_command("app-sql", SqlConfig::settings_from_env())
        }
    }
}

/// Fenced (another instance took a partition over) exits 3; any other failure 1.
fn exit_code(error: &anyhow::Error) -> u8 {
    let fenced = error.chain().any(|cause| {
        cause
            .downcast_ref::<ServiceError>()
            .is_some_and(ServiceError::is_fenced)
    });
    if fenced { shell::EXIT_FENCED } else { 1 }
}

/// `migrate` reads only the database settings.
fn migrate_settings() -> Result<app_sql::config::SqlSettings, shell::ConfigError> {
    let vars = shell::config::utf8_env()?;
    SqlVariables::init_from_hashmap(&vars)
        .map_err(shell::config::from_envconfig)?
        .parse()
}

async fn migrate_only(settings: app_sql::config::SqlSettings) -> anyhow::Result<()> {
    let applied = migrate_database(&settings.database_url.0, &settings.schema).await?;
    info!(applied = ?applied, "Migrations done.");
    Ok(())
}

async fn migrate_database(url: &DatabaseUrl, schema: &str) -> anyhow::Result<Vec<i32>> {
    let mut client = connect(url, "app-sql migrate", schema)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    migrate(&mut client)
        .await
        .with_context(|| format!("migrating schema {schema}"))
}

/// Migrations at start, waiting for a database that cannot be reached yet (not ready
/// meanwhile; said once); a refusal stops the service. `false` if stopped while waiting.
async fn migrate_when_reachable(
    settings: &Settings,
    metrics: &SqlMetrics,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<bool> {
    let mut pause = Duration::from_millis(200);
    loop {
        match migrate_database(&settings.sql.database_url.0, &settings.sql.schema).await {
            Ok(_) => {
                metrics.database_down.store(false, Ordering::Relaxed);
                return Ok(true);
            }
            Err(e) if transient(&e) => {
                if !metrics.database_down.swap(true, Ordering::Relaxed) {
                    warn!(
                        error = format!("{e:#}"),
                        "The database cannot be reached yet; waiting (not ready meanwhile)."
                    );
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut *shutdown => return Ok(false),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

fn transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<adapters_postgres::Error>()
            .is_some_and(adapters_postgres::Error::is_transient)
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mut shutdown = shell::http::shutdown_signal().boxed().shared();
    // Polled once now, so SIGTERM is handled from here on, not only once the loop runs.
    let _ = shutdown.clone().now_or_never();
    let registry = Registry::new(settings.broker.registry.clone())
        .map(Arc::new)
        .context("configuring the schema registry client")?;
    let source = KafkaRecordSource::connect(&settings.broker.kafka, registry, &settings.source())
        .context("joining the consumer group")?;
    let (unreadable, lag) = (source.unreadable(), source.lag_probes());
    let store = PgStore::new(settings.store(SystemClock.now_ms()), SystemClock);
    let batching = Batching {
        rows: settings.sql.batch_rows,
        interval: settings.sql.batch_interval,
    };
    let mut service = Service::new(source, store, batching);
    let metrics = service.metrics();
    let probe = Arc::new(SqlProbe {
        service: Arc::clone(&metrics),
        unreadable,
        lag,
    });
    let http = ProbeServer::start(settings.sql.http_addr, probe)
        .await
        .with_context(|| format!("listening on HTTP_ADDR {}", settings.sql.http_addr))?;
    let stats = match migrate_when_reachable(&settings, &metrics, &mut shutdown).await {
        Ok(true) => service.run(shutdown).await.context("loading").map(Some),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    http.stop().await;
    if let Some(stats) = stats? {
        info!(
            commits = stats.commits,
            trades = stats.trades,
            bars = stats.bars,
            "app-sql stopped cleanly."
        );
    }
    Ok(())
}
