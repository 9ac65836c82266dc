//! [`PgStore`]: the [`Store`] port over PostgreSQL. One session, opened on first use and again
//! after any failure; every write is one transaction: rows copied into the session's staging
//! tables, the positions locked and checked (fenced if another instance moved one), the
//! positions advanced, the rows moved into `trades` and `bars`, committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use domain::Trade;
use domain::calendar::{DAY_MS, day_of};
use ports::{Clock, PositionMove, Store, StoreBatch, StoreError, TopicPartition, Written};
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::connect::connect;
use crate::copy::{Table, create_staging, insert_staged, stage_bars, stage_trades};
use crate::error::{Error, Result};
use crate::partitions::DayPartitions;
use crate::positions::{self, Check};
use crate::url::DatabaseUrl;

/// What the store needs to know.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where the database is.
    pub url: DatabaseUrl,
    /// The schema the tables live in.
    pub schema: String,
    /// The consumer group whose positions these are.
    pub group: String,
    /// Who writes (stored with each position; tells this instance's own commits apart).
    pub writer: String,
    /// Trades older than this (by whole days) are neither stored nor kept.
    pub retention: Option<Duration>,
}

/// The store over one PostgreSQL session.
pub struct PgStore<K> {
    config: StoreConfig,
    client: Option<Client>,
    partitions: DayPartitions,
    clock: K,
}

impl<K> std::fmt::Debug for PgStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.config.url)
            .field("group", &self.config.group)
            .finish_non_exhaustive()
    }
}

impl<K: Clock> PgStore<K> {
    /// A store that connects on first use.
    pub fn new(config: StoreConfig, clock: K) -> Self {
        PgStore {
            config,
            client: None,
            partitions: DayPartitions::default(),
            clock,
        }
    }

    /// Creates the coming days' trade partitions and drops those past retention.
    async fn maintain_partitions(&mut self) -> std::result::Result<(), StoreError> {
        let now = self.clock.now_ms();
        let horizon = self.horizon_ms();
        let outcome = async {
            let client = session(&mut self.client, &self.config).await?;
            self.partitions.create_ahead(client, now).await?;
            if let Some(horizon) = horizon {
                self.partitions.drop_before(client, horizon).await?;
            }
            Ok(())
        }
        .await;
        self.settle(outcome)
    }

    /// The time before which trades are past retention.
    fn horizon_ms(&self) -> Option<i64> {
        let retention = i64::try_from(self.config.retention?.as_millis()).ok()?;
        Some(self.clock.now_ms().saturating_sub(retention))
    }

    /// Drops the session after a failure (the next call opens a new one), and converts.
    fn settle<T>(&mut self, outcome: Result<T>) -> std::result::Result<T, StoreError> {
        outcome.map_err(|e| {
            self.client = None;
            StoreError::from(e)
        })
    }

    async fn write_once(&mut self, batch: &StoreBatch) -> std::result::Result<Written, StoreError> {
        let (kept, expired) = self.unexpired(&batch.trades);
        let days: BTreeSet<i64> = kept.iter().map(|t| day_of(t.timestamp)).collect();
        let outcome = async {
            let client = session(&mut self.client, &self.config).await?;
            self.partitions.ensure(client, &days).await?;
            let (group, writer) = (&self.config.group, &self.config.writer);
            transact(client, group, writer, batch, &kept).await
        }
        .await;
        let mut written = self.settle(outcome)??;
        written.expired = expired;
        Ok(written)
    }

    /// The trades whose day is within retention, and how many are not.
    fn unexpired<'a>(&self, trades: &'a [Trade]) -> (Vec<&'a Trade>, u64) {
        let Some(horizon) = self.horizon_ms() else {
            return (trades.iter().collect(), 0);
        };
        let kept: Vec<&Trade> = trades
            .iter()
            .filter(|t| (day_of(t.timestamp) + 1) * DAY_MS > horizon)
            .collect();
        let expired = (trades.len() - kept.len()) as u64;
        (kept, expired)
    }
}

/// The open session in `slot`, opening one (with its staging tables) if there is none.
async fn session<'a>(slot: &'a mut Option<Client>, config: &StoreConfig) -> Result<&'a mut Client> {
    let client = match slot.take() {
        Some(client) if !client.is_closed() => client,
        _ => {
            let client = connect(&config.url, "app-sql", &config.schema).await?;
            create_staging(&client).await?;
            info!(database = %config.url, "Connected to PostgreSQL.");
            client
        }
    };
    Ok(slot.insert(client))
}

/// One write's transaction. The outer result is the database's; the inner one says whether
/// the positions held (fenced if not).
async fn transact(
    client: &mut Client,
    group: &str,
    writer: &str,
    batch: &StoreBatch,
    trades: &[&Trade],
) -> Result<std::result::Result<Written, StoreError>> {
    let mut transaction = client
        .transaction()
        .await
        .map_err(Error::db("starting a write"))?;
    // Copies first: they lock nothing others need, so a writer frozen here blocks nobody.
    if !trades.is_empty() {
        stage_trades(&transaction, trades).await?;
    }
    if !batch.bars.is_empty() {
        stage_bars(&transaction, &batch.bars).await?;
    }
    match positions::check(&transaction, group, writer, &batch.positions).await? {
        Check::Holds => {}
        Check::AlreadyWritten => {
            info!(
                partitions = batch.positions.len(),
                "This write was committed before (its commit's answer was lost); not written again."
            );
            return Ok(Ok(Written::default()));
        }
        Check::Moved(partition, expected) => {
            return Ok(Err(fenced(partition, expected, &batch.positions)));
        }
    }
    let advanced = positions::advance(&transaction, group, writer, &batch.positions).await?;
    if advanced != batch.positions.len() as u64 {
        let first_new = batch.positions.iter().find(|m| m.from.is_none());
        if let Some(m) = first_new {
            return Ok(Err(fenced(m.source.clone(), None, &batch.positions)));
        }
    }
    let trades_new = if trades.is_empty() {
        0
    } else {
        insert_staged(&mut transaction, Table::Trades).await?
    };
    let bars_new = if batch.bars.is_empty() {
        0
    } else {
        insert_staged(&mut transaction, Table::Bars).await?
    };
    transaction
        .commit()
        .await
        .map_err(Error::db("committing a write"))?;
    Ok(Ok(Written {
        trades: trades_new,
        bars: bars_new,
        trade_conflicts: trades.len() as u64 - trades_new,
        bar_conflicts: batch.bars.len() as u64 - bars_new,
        expired: 0,
    }))
}

fn fenced(partition: TopicPartition, held: Option<i64>, moves: &[PositionMove]) -> StoreError {
    let expected = moves
        .iter()
        .find(|m| m.source == partition)
        .and_then(|m| m.from);
    warn!(partition = %partition, expected = ?expected, held = ?held, "Position moved by another instance; this write is rolled back.");
    StoreError::Fenced {
        partition,
        expected,
    }
}

impl<K: Clock> Store for PgStore<K> {
    async fn positions(
        &mut self,
        sources: &[TopicPartition],
    ) -> std::result::Result<BTreeMap<TopicPartition, i64>, StoreError> {
        let outcome = async {
            let client = session(&mut self.client, &self.config).await?;
            positions::read(client, &self.config.group, sources).await
        }
        .await;
        self.settle(outcome)
    }

    async fn write(&mut self, batch: &StoreBatch) -> std::result::Result<Written, StoreError> {
        self.write_once(batch).await
    }

    async fn maintain(&mut self) -> std::result::Result<(), StoreError> {
        self.maintain_partitions().await
    }
}
