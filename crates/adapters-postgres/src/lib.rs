//! app-sql's store over PostgreSQL (tokio-postgres).
//!
//! * [`url`]: `DATABASE_URL` and its TLS mode.
//! * [`connect`]: opening a session (TLS, search path, time limits).
//! * [`migrate`]: the versioned SQL migrations in `migrations/`, applied under an advisory lock,
//!   and the check that the tables have what the store writes.
//! * [`store`]: [`PgStore`], the `Store` port: binary COPY into staging tables, positions
//!   checked and moved in the same transaction as the rows.
//! * [`copy`]: the binary COPY of trades and bars into staging, and the moves out of it.
//! * [`read`]: bars and trades read back over a time range (the chart's queries).
//! * [`positions`]: the positions table as a compare-and-set.
//! * [`partitions`]: the day partitions of `trades`, created ahead and dropped past retention.
//! * [`error`]: the crate's error, and which database errors are outages.

pub mod connect;
pub mod copy;
pub mod error;
pub mod migrate;
pub mod partitions;
pub mod positions;
pub mod read;
pub mod store;
pub mod url;

pub use error::{Error, Result};
pub use store::{PgStore, StoreConfig};
pub use url::{DatabaseUrl, TlsMode};
