//! Versioned SQL migrations, embedded in the binary and applied at start under an advisory
//! lock (several instances starting together apply each once), then a check that the tables
//! have every column the store writes, with its type: a database ahead of the binary, or a
//! table changed by hand, stops start-up with one line naming what is wrong.

use tokio_postgres::Client;
use tracing::info;

use crate::error::{Error, Result};

/// One migration: its version, name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order, each once.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: [Migration; 1] = [Migration {
    version: 1,
    name: "store",
    sql: include_str!("../migrations/0001_store.sql"),
}];

/// The advisory lock key migrations hold ("app-sql!" in ASCII).
const MIGRATION_LOCK: i64 = 0x6170_702d_7371_6c21;

/// A table's columns as `information_schema` names them: (name, data type).
type Columns = &'static [(&'static str, &'static str)];

/// Columns the store reads and writes, per table, with `information_schema`'s type names, and
/// the migration that made them.
const EXPECTED: [(&str, i32, Columns); 3] = [
    (
        "trades",
        1,
        &[
            ("instrument_name", "text"),
            ("trade_id", "text"),
            ("trade_seq", "bigint"),
            ("timestamp", "timestamp with time zone"),
            ("price", "double precision"),
            ("amount", "double precision"),
            ("direction", "text"),
            ("index_price", "double precision"),
            ("mark_price", "double precision"),
            ("tick_direction", "smallint"),
            ("iv", "double precision"),
            ("liquidation", "text"),
            ("block_trade_id", "text"),
            ("combo_id", "text"),
            ("contracts", "double precision"),
        ],
    ),
    (
        "bars",
        1,
        &[
            ("instrument_name", "text"),
            ("window_start", "timestamp with time zone"),
            ("window_end", "timestamp with time zone"),
            ("window_ms", "bigint"),
            ("trade_count", "bigint"),
            ("volume", "double precision"),
            ("buy_volume", "double precision"),
            ("sell_volume", "double precision"),
            ("vwap", "double precision"),
            ("open", "double precision"),
            ("high", "double precision"),
            ("low", "double precision"),
            ("close", "double precision"),
            ("ewma", "jsonb"),
            ("ewma_halflife_ms", "bigint"),
            ("ewma_price", "double precision"),
            ("ewma_vw_price", "double precision"),
            ("first_trade_seq", "bigint"),
            ("last_trade_seq", "bigint"),
            ("first_trade_timestamp", "timestamp with time zone"),
            ("last_trade_timestamp", "timestamp with time zone"),
            ("seq_gaps", "bigint"),
            ("late_trades", "bigint"),
        ],
    ),
    (
        "positions",
        1,
        &[
            ("consumer_group", "text"),
            ("topic", "text"),
            ("partition", "integer"),
            ("next_offset", "bigint"),
            ("writer", "text"),
            ("updated_at", "timestamp with time zone"),
        ],
    ),
];

/// Applies the migrations the database lacks (under the advisory lock) and checks the tables.
/// Returns the versions it applied.
///
/// # Errors
/// [`Error::SchemaAhead`] for a database newer than this binary, [`Error::SchemaDrift`] for a
/// table without a column the store needs, [`Error::Database`] for a statement that failed
/// (rights, a lost connection).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Error::db("taking the migration lock"))?;
    let applied = apply_missing(client).await;
    // Released in any case; the session's end would release it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = applied?;
    check_tables(client).await?;
    Ok(applied)
}

async fn apply_missing(client: &mut Client) -> Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(Error::db("creating schema_migrations"))?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(Error::db("reading schema_migrations"))?;
    let current: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(Error::SchemaAhead {
            found: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let transaction = client
            .transaction()
            .await
            .map_err(Error::db("starting a migration"))?;
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(Error::db("applying a migration"))?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(Error::db("recording a migration"))?;
        transaction
            .commit()
            .await
            .map_err(Error::db("committing a migration"))?;
        info!(
            version = migration.version,
            name = migration.name,
            "Migration applied."
        );
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Checks every table has every expected column with its type.
async fn check_tables(client: &Client) -> Result<()> {
    for (table, migration, columns) in EXPECTED {
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .await
            .map_err(Error::db("reading the tables' columns"))?;
        let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (column, data_type) in columns {
            let problem = match found.iter().find(|(name, _)| name == column) {
                None if found.is_empty() => "missing (the table itself is gone)".to_owned(),
                None => format!("column {column} is missing"),
                Some((_, actual)) if actual != data_type => {
                    format!("column {column} is {actual}, not {data_type}")
                }
                Some(_) => continue,
            };
            return Err(Error::SchemaDrift {
                table,
                problem,
                migration,
            });
        }
    }
    Ok(())
}
