//! The service's counters and per-partition health, shared with `/readyz` and `/metrics`.
//!
//! [`ServiceMetrics`] is where each event is counted, once; the loop in [`crate::service`]
//! writes it and [`crate::probe`] reads it. [`ServiceStats`] is a plain reading of it, and
//! [`PartitionHealth`] is how far one partition's watermark is, refreshed every cycle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ports::Partition;

/// A reading of the service's counters ([`ServiceMetrics`] is where each event is counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Commit cycles completed.
    pub cycles: u64,
    /// Aggregates committed.
    pub aggregates: u64,
    /// Trades folded in, duplicates and late ones included.
    pub trades: u64,
    /// Cycles aborted and repeated.
    pub aborted: u64,
}

/// Live counters of the service, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Trades folded in.
    pub trades: AtomicU64,
    /// Trades dropped as duplicates (`trade_seq` already seen).
    pub duplicates: AtomicU64,
    /// Trades dropped because their window had closed.
    pub late: AtomicU64,
    /// Aggregates committed.
    pub windows_emitted: AtomicU64,
    /// Aggregates committed whose trades skipped some `trade_seq` (`seq_gaps` > 0).
    pub windows_with_gaps: AtomicU64,
    /// Commit cycles completed.
    pub cycles: AtomicU64,
    /// Commit cycles aborted and repeated.
    pub aborted: AtomicU64,
    /// Duration of the last commit cycle, µs.
    pub last_cycle_us: AtomicU64,
    /// Set once the assigned partitions are restored.
    pub ready: AtomicBool,
    /// Set while the log cannot be read (broker down or unreachable); not ready meanwhile.
    pub log_unreachable: AtomicBool,
    /// Times the log became unreachable.
    pub log_outages: AtomicU64,
    /// Progress markers read.
    pub progress_markers: AtomicU64,
    /// Progress markers ignored because their time was implausibly far ahead.
    pub implausible_markers: AtomicU64,
    /// Per assigned partition: watermark and when its last marker came (refreshed each cycle).
    pub partitions: Mutex<BTreeMap<Partition, PartitionHealth>>,
}

/// How far one partition's watermark is, for readiness and the lag gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionHealth {
    /// The partition's watermark, ms.
    pub watermark: Option<i64>,
    /// Wall time its watermark last advanced (or of its assignment, before that), ms.
    pub last_advance_ms: i64,
}

impl ServiceMetrics {
    /// The counters as they are now.
    pub fn stats(&self) -> ServiceStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServiceStats {
            cycles: get(&self.cycles),
            aggregates: get(&self.windows_emitted),
            trades: get(&self.trades) + get(&self.duplicates) + get(&self.late),
            aborted: get(&self.aborted),
        }
    }

    /// The watermark and marker age of every assigned partition.
    pub fn partition_health(&self) -> BTreeMap<Partition, PartitionHealth> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces every partition's health with `health` (the loop's report after each change).
    pub fn set_partition_health(&self, health: BTreeMap<Partition, PartitionHealth>) {
        *self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// Partitions whose last progress marker is older than `timeout` at `now_ms`, with its age
    /// in ms (as of the last cycle's report).
    pub fn silent_partitions(&self, now_ms: i64, timeout: Duration) -> Vec<(Partition, i64)> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self.partition_health()
            .into_iter()
            .map(|(p, h)| (p, now_ms.saturating_sub(h.last_advance_ms)))
            .filter(|&(_, age)| age > timeout_ms)
            .collect()
    }
}
