//! The `positions` table: how far each source partition is stored, read on assignment and
//! moved inside every write, as a compare-and-set: a position that no longer holds what this
//! instance expects means another instance took the partition (fenced).

use std::collections::BTreeMap;

use ports::{PositionMove, TopicPartition};
use tokio_postgres::{Client, Transaction};

use crate::error::{Error, Result};

/// What the stored positions say of a write's moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Every position holds its `from`: the write may go on.
    Holds,
    /// Every position already holds its `to`, written by this instance: the same write was
    /// committed before (its commit's answer was lost).
    AlreadyWritten,
    /// This partition's position holds something else: another instance owns it.
    Moved(TopicPartition, Option<i64>),
}

/// The stored positions of `sources` for `group`.
///
/// # Errors
/// [`Error::Database`] if they cannot be read.
pub async fn read(
    client: &Client,
    group: &str,
    sources: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let (topics, partitions) = columns(sources.iter());
    let rows = client
        .query(
            "SELECT p.topic, p.partition, p.next_offset FROM positions p
             JOIN unnest($2::text[], $3::int[]) AS s(topic, partition)
               ON p.topic = s.topic AND p.partition = s.partition
             WHERE p.consumer_group = $1",
            &[&group, &topics, &partitions],
        )
        .await
        .map_err(Error::db("reading positions"))?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                TopicPartition::new(row.get::<_, String>(0), row.get(1)),
                row.get(2),
            )
        })
        .collect())
}

/// Locks the moves' position rows and says whether they hold what the moves expect.
///
/// # Errors
/// [`Error::Database`] if they cannot be read.
pub async fn check(
    transaction: &Transaction<'_>,
    group: &str,
    writer: &str,
    moves: &[PositionMove],
) -> Result<Check> {
    let (topics, partitions) = columns(moves.iter().map(|m| &m.source));
    let rows = transaction
        .query(
            "SELECT p.topic, p.partition, p.next_offset, p.writer FROM positions p
             JOIN unnest($2::text[], $3::int[]) AS s(topic, partition)
               ON p.topic = s.topic AND p.partition = s.partition
             WHERE p.consumer_group = $1
             FOR UPDATE OF p",
            &[&group, &topics, &partitions],
        )
        .await
        .map_err(Error::db("locking positions"))?;
    let stored: BTreeMap<TopicPartition, (i64, String)> = rows
        .iter()
        .map(|row| {
            (
                TopicPartition::new(row.get::<_, String>(0), row.get(1)),
                (row.get(2), row.get(3)),
            )
        })
        .collect();
    let already = moves.iter().all(|m| {
        stored
            .get(&m.source)
            .is_some_and(|(offset, by)| *offset == m.to && by == writer)
    });
    if already && !moves.is_empty() {
        return Ok(Check::AlreadyWritten);
    }
    for m in moves {
        let held = stored.get(&m.source).map(|(offset, _)| *offset);
        if held != m.from {
            return Ok(Check::Moved(m.source.clone(), held));
        }
    }
    Ok(Check::Holds)
}

/// Writes the moves (their rows locked by [`check`], or absent). Returns how many rows it
/// wrote: fewer than the moves means another instance inserted a row first.
///
/// # Errors
/// [`Error::Database`] if a statement fails.
pub async fn advance(
    transaction: &Transaction<'_>,
    group: &str,
    writer: &str,
    moves: &[PositionMove],
) -> Result<u64> {
    let (known, new): (Vec<&PositionMove>, Vec<&PositionMove>) =
        moves.iter().partition(|m| m.from.is_some());
    let mut written = 0;
    if !known.is_empty() {
        let (topics, partitions) = columns(known.iter().map(|m| &m.source));
        let next: Vec<i64> = known.iter().map(|m| m.to).collect();
        written += transaction
            .execute(
                "UPDATE positions p SET next_offset = s.next, writer = $2, updated_at = now()
                 FROM unnest($3::text[], $4::int[], $5::int8[]) AS s(topic, partition, next)
                 WHERE p.consumer_group = $1 AND p.topic = s.topic AND p.partition = s.partition",
                &[&group, &writer, &topics, &partitions, &next],
            )
            .await
            .map_err(Error::db("moving positions"))?;
    }
    if !new.is_empty() {
        let (topics, partitions) = columns(new.iter().map(|m| &m.source));
        let next: Vec<i64> = new.iter().map(|m| m.to).collect();
        written += transaction
            .execute(
                "INSERT INTO positions (consumer_group, topic, partition, next_offset, writer)
                 SELECT $1, s.topic, s.partition, s.next, $2
                 FROM unnest($3::text[], $4::int[], $5::int8[]) AS s(topic, partition, next)
                 ON CONFLICT DO NOTHING",
                &[&group, &writer, &topics, &partitions, &next],
            )
            .await
            .map_err(Error::db("creating positions"))?;
    }
    Ok(written)
}

fn columns<'a>(sources: impl Iterator<Item = &'a TopicPartition>) -> (Vec<&'a str>, Vec<i32>) {
    sources.map(|s| (&*s.topic, s.partition)).unzip()
}
