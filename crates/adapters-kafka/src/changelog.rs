//! app-agg's changelog: the marker each cycle writes, and reading the state back.
//!
//! A restart restores every assigned partition, so they are read together: one reader, one
//! assignment, the partitions fetched side by side (one reader per partition, one after the
//! other, was most of a restart's time). The changelog holds every version of a state until
//! compaction runs, so per record only the newest bytes per key are kept (no allocation for a
//! key seen before); states are decoded once, after the read.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use domain::{InstrumentSnapshot, PartitionSnapshot, WriterProgress};
use ports::{CommitError, Partition, RestoredPartition};
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::error::Result;
use crate::tail::{Start, TailReader};

/// Changelog key of a partition's marker. Starts with NUL, which no instrument name does.
pub const MARKER_KEY: &str = "\u{0}marker";

/// Where a source partition stands after a cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) next_offset: i64,
    pub(crate) watermark: Option<i64>,
    /// Absent in markers written before progress markers existed.
    #[serde(default)]
    pub(crate) writers: Vec<WriterProgress>,
}

/// How often a long restore logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The newest value per key of one changelog partition.
type Latest = HashMap<Vec<u8>, Vec<u8>>;

/// The state of each of `partitions` as of its last committed cycle (an empty state for a
/// partition with nothing in the changelog).
///
/// # Errors
/// [`CommitError::Fatal`] if the changelog cannot be read or holds a state it cannot decode.
pub(crate) fn restore(
    reader: &ClientConfig,
    topic: &str,
    partitions: &[Partition],
    timeout: Duration,
) -> std::result::Result<BTreeMap<Partition, RestoredPartition>, CommitError> {
    let mut latest = read_latest(reader, topic, partitions, timeout)
        .map_err(|e| CommitError::Fatal(e.to_string()))?;
    partitions
        .iter()
        .map(|&partition| {
            let values = latest.remove(&partition).unwrap_or_default();
            decode(topic, partition, values).map(|restored| (partition, restored))
        })
        .collect()
}

/// The newest value per key of each partition (tombstones remove the key).
fn read_latest(
    config: &ClientConfig,
    topic: &str,
    partitions: &[Partition],
    timeout: Duration,
) -> Result<BTreeMap<Partition, Latest>> {
    let started = Instant::now();
    let (mut records, mut bytes) = (0_u64, 0_usize);
    let mut latest: BTreeMap<Partition, Latest> = BTreeMap::new();
    let mut reported = started;
    TailReader::new(config, topic, timeout)?.read(partitions, Start::Beginning, |record| {
        records += 1;
        bytes += record.payload_len();
        // A long restore says it is still going (the service is not ready meanwhile).
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            info!(topic, records, bytes, elapsed = ?started.elapsed(), "Still reading the changelog.");
        }
        let Some(key) = record.key() else { return };
        let values = latest.entry(record.partition()).or_default();
        match (record.payload(), values.get_mut(key)) {
            (Some(value), Some(newest)) => {
                newest.clear();
                newest.extend_from_slice(value);
            }
            (Some(value), None) => {
                values.insert(key.to_vec(), value.to_vec());
            }
            (None, _) => {
                values.remove(key);
            }
        }
    })?;
    debug!(?partitions, records, bytes, elapsed = ?started.elapsed(), "Changelog read.");
    Ok(latest)
}

/// One partition's newest values as its restored state, instruments in name order.
fn decode(
    topic: &str,
    partition: Partition,
    values: Latest,
) -> std::result::Result<RestoredPartition, CommitError> {
    let mut instruments = Vec::with_capacity(values.len());
    let mut marker: Option<Marker> = None;
    for (key, value) in values {
        let corrupt = |e: serde_json::Error| {
            CommitError::Fatal(format!(
                "changelog {topic}/{partition}, key {:?}: unreadable state: {e}",
                String::from_utf8_lossy(&key)
            ))
        };
        if key == MARKER_KEY.as_bytes() {
            marker = Some(serde_json::from_slice(&value).map_err(corrupt)?);
        } else {
            let state: InstrumentSnapshot = serde_json::from_slice(&value).map_err(corrupt)?;
            instruments.push(state);
        }
    }
    instruments.sort_by(|a, b| a.instrument_name.cmp(&b.instrument_name));
    // The service logs the restore at info, once; this is the changelog's side of it.
    debug!(partition, instruments = instruments.len(), next_offset = ?marker.as_ref().map(|m| m.next_offset), "Partition state read from the changelog.");
    let next_offset = marker.as_ref().map(|m| m.next_offset);
    let (watermark, writers) = marker.map_or((None, Vec::new()), |m| (m.watermark, m.writers));
    Ok(RestoredPartition {
        snapshot: PartitionSnapshot {
            watermark,
            writers,
            instruments,
        },
        next_offset,
    })
}
