//! The day partitions of `trades` (`trades_YYYYMMDD`, one UTC day each): created before rows of
//! their day arrive (ahead of time for the days to come, on demand for older ones), and dropped
//! whole once their day has passed the retention. Creation and dropping take an advisory lock,
//! so instances sharing a database never race on the catalogue.

use std::collections::BTreeSet;

use domain::calendar::{DAY_MS, civil_from_days, day_of};
use tokio_postgres::Client;
use tracing::info;

use crate::error::{Error, Result};

/// The advisory lock partition changes hold ("trades!!" in ASCII).
const PARTITION_LOCK: i64 = 0x7472_6164_6573_2121;

/// Days created ahead of today.
pub const DAYS_AHEAD: i64 = 2;

/// The name of the partition holding day `day` (days since the epoch).
#[must_use]
pub fn partition_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("trades_{y:04}{m:02}{d:02}")
}

/// The day a partition name stands for, if it is one of ours.
#[must_use]
pub fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("trades_")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: i64 = digits.parse().ok()?;
    let (y, m, d) = (number / 10_000, number / 100 % 100, number % 100);
    let day = domain::calendar::days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// `ms` as an SQL timestamptz literal (UTC, whole days only).
fn day_start_literal(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("'{y:04}-{m:02}-{d:02} 00:00:00+00'")
}

/// Takes the advisory lock partition changes hold, and bounds how long the DDL may wait for
/// its lock on `trades`: queued behind a long read, it would hold every insert behind it.
async fn take_partition_lock(transaction: &tokio_postgres::Transaction<'_>) -> Result<()> {
    transaction
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; SELECT pg_advisory_xact_lock({PARTITION_LOCK})",
            DDL_LOCK_TIMEOUT.as_millis()
        ))
        .await
        .map_err(Error::db("taking the partition lock"))
}

/// How long creating or dropping a partition may wait for its lock (then it fails as an outage
/// and is tried again later).
const DDL_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The day partitions known to exist (a cache: asking the catalogue per write costs a round
/// trip).
#[derive(Debug, Default)]
pub struct DayPartitions {
    known: BTreeSet<i64>,
}

impl DayPartitions {
    /// Creates the partitions of `days` not known to exist.
    ///
    /// # Errors
    /// [`Error::Database`] if one cannot be created.
    pub async fn ensure(&mut self, client: &mut Client, days: &BTreeSet<i64>) -> Result<()> {
        let missing: Vec<i64> = days.difference(&self.known).copied().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let transaction = client
            .transaction()
            .await
            .map_err(Error::db("creating day partitions"))?;
        take_partition_lock(&transaction).await?;
        for &day in &missing {
            transaction
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF trades FOR VALUES FROM ({}) TO ({})",
                    partition_name(day),
                    day_start_literal(day),
                    day_start_literal(day + 1)
                ))
                .await
                .map_err(Error::db("creating a day partition"))?;
        }
        transaction
            .commit()
            .await
            .map_err(Error::db("creating day partitions"))?;
        self.known.extend(missing);
        Ok(())
    }

    /// Creates today's partition and the next [`DAYS_AHEAD`] days'.
    ///
    /// # Errors
    /// As [`DayPartitions::ensure`].
    pub async fn create_ahead(&mut self, client: &mut Client, now_ms: i64) -> Result<()> {
        let today = day_of(now_ms);
        self.ensure(client, &(today..=today + DAYS_AHEAD).collect())
            .await
    }

    /// Drops every partition whose whole day ended before `horizon_ms`; returns their names.
    ///
    /// # Errors
    /// [`Error::Database`] if the catalogue cannot be read or a partition cannot be dropped.
    pub async fn drop_before(
        &mut self,
        client: &mut Client,
        horizon_ms: i64,
    ) -> Result<Vec<String>> {
        let transaction = client
            .transaction()
            .await
            .map_err(Error::db("dropping day partitions"))?;
        take_partition_lock(&transaction).await?;
        let rows = transaction
            .query(
                "SELECT c.relname::text FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'trades'::regclass",
                &[],
            )
            .await
            .map_err(Error::db("listing day partitions"))?;
        let mut dropped = Vec::new();
        for name in rows.iter().map(|r| r.get::<_, String>(0)) {
            let Some(day) = partition_day(&name) else {
                continue;
            };
            if (day + 1) * DAY_MS <= horizon_ms {
                transaction
                    .batch_execute(&format!("DROP TABLE {name}"))
                    .await
                    .map_err(Error::db("dropping a day partition"))?;
                self.known.remove(&day);
                dropped.push(name);
            }
        }
        transaction
            .commit()
            .await
            .map_err(Error::db("dropping day partitions"))?;
        if !dropped.is_empty() {
            info!(partitions = ?dropped, "Trade partitions past retention dropped.");
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = domain::calendar::days_from_civil(2026, 12, 7);
        assert_eq!(partition_name(day), "trades_20261207");
        assert_eq!(partition_day("trades_20261207"), Some(day));
        assert_eq!(day_start_literal(day), "'2026-12-07 00:00:00+00'");
        for foreign in [
            "trades_2026120",
            "trades_20261332",
            "bars_20261207",
            "trades_2026-12-07",
        ] {
            assert_eq!(partition_day(foreign), None, "{foreign}");
        }
    }
}
