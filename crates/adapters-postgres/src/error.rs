//! The one error type of the PostgreSQL adapter, and the one place that decides which database
//! errors are outages to wait out and which need a person.

use ports::StoreError;
use tokio_postgres::error::SqlState;

/// What can go wrong between the store and PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A statement or the connection failed. The client's error is part of the message, not
    /// a `source`: its own text ("db error") says nothing, so the server's is spelled out here
    /// once.
    #[error("{what}: {}", describe(error))]
    Database {
        /// What was being done.
        what: &'static str,
        /// The client's error (its SQLSTATE, if the server sent one).
        error: tokio_postgres::Error,
    },
    /// The TLS settings cannot work (an unreadable `sslrootcert`, a host name that is no DNS
    /// name).
    #[error("TLS: {0}")]
    Tls(String),
    /// A row breaks a rule of the domain (a table changed by hand, or written by another tool).
    #[error("a row is not a valid trade: {0}")]
    Invalid(#[from] domain::Error),
    /// The database's schema is newer than this binary's migrations.
    #[error(
        "the database's schema is at version {found}, newer than this app-sql's {known}: run the newer app-sql, or restore the database"
    )]
    SchemaAhead {
        /// The version the database records.
        found: i32,
        /// The newest version this binary knows.
        known: i32,
    },
    /// A table lacks a column the store writes, or has it with another type (changed by hand).
    #[error(
        "table {table}: {problem} (changed by hand? restore it as migration {migration} made it)"
    )]
    SchemaDrift {
        /// The table.
        table: &'static str,
        /// The column and what is wrong with it.
        problem: String,
        /// The migration that made the table.
        migration: i32,
    },
}

/// The adapter's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A database error while doing `what`.
    pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |error| Error::Database { what, error }
    }

    /// Whether waiting and trying again can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database { error, .. } => is_transient(error),
            Error::Tls(_)
            | Error::Invalid(_)
            | Error::SchemaAhead { .. }
            | Error::SchemaDrift { .. } => false,
        }
    }
}

/// The server's message (`FATAL: password authentication failed …`) when there is one, else
/// the client's, with the cause the client keeps (an I/O error, say).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Whether an I/O error (a socket refused, reset or timed out) is among the error's causes.
fn io_cause(error: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// Whether a database error is an outage or a passing refusal (connection lost or refused,
/// server starting or shutting down, serialisation failure, deadlock, out of resources).
/// Everything the server refuses for cause (authentication, rights, schema, constraints) is not.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    let Some(state) = error.code() else {
        // No SQLSTATE: transient if the connection failed (refused, reset, closed, timed out);
        // a TLS handshake or configuration the client refuses stays refused.
        return error.is_closed() || io_cause(error);
    };
    let code = state.code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
        || *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED
        || *state == SqlState::LOCK_NOT_AVAILABLE
        || *state == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        || *state == SqlState::QUERY_CANCELED
}

impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        let transient = error.is_transient();
        let source = Box::new(error);
        if transient {
            StoreError::Unavailable { source }
        } else {
            StoreError::Refused { source }
        }
    }
}
