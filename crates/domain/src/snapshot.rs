//! Serialisable state of one partition's aggregator.
//!
//! These are plain serde values: the Kafka adapter writes one [`InstrumentSnapshot`] per changed
//! instrument to a compacted changelog and the watermark (with each marker writer's progress)
//! to a marker; restore folds them back
//! into a [`PartitionSnapshot`]. Floats travel as exact bits, so a restored aggregator continues
//! bit-identically.

use serde::{Deserialize, Serialize};

use crate::aggregate::WindowAccumulator;
use crate::ewma::EwmaSums;

/// State of one instrument: dedup position, continuous EWMA sums, open windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentSnapshot {
    /// Instrument the state belongs to (the changelog key).
    pub instrument_name: String,
    /// Highest `trade_seq` folded in; later trades at or below it are duplicates.
    pub last_trade_seq: Option<u64>,
    /// Latest trade timestamp folded in, ms.
    pub last_timestamp: i64,
    /// Decayed sums per configured half-life, in config order.
    pub ewma: Vec<EwmaSums>,
    /// Start of the window whose EWMA values are the live sums.
    pub ewma_window_start: Option<i64>,
    /// Open windows, ascending by start.
    pub windows: Vec<WindowAccumulator>,
    /// Larger windows being rolled up from closed ones, ascending by size. Absent in state
    /// written before several sizes existed.
    #[serde(default)]
    pub rollups: Vec<WindowAccumulator>,
    /// Late trades not yet counted on a window (they go to the instrument's next accepted
    /// trade's window).
    #[serde(default)]
    pub late_pending: u64,
    /// `trade_seq` values skipped before those late trades, not yet counted on a window.
    #[serde(default)]
    pub gaps_pending: u64,
    /// The rolled-up sizes configured when this was written, ms (empty before several sizes
    /// existed): a size missing here is new to this state.
    #[serde(default)]
    pub rollup_sizes_ms: Vec<i64>,
    /// Rolled-up sizes whose early bars are incomplete (see [`RollupFloor`]).
    #[serde(default)]
    pub rollup_floors: Vec<RollupFloor>,
}

/// Bars of a rolled-up size that start before `first_start` are incomplete and never emitted:
/// the size was configured (or the state was written before several sizes existed) after some
/// of their sub-windows had already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupFloor {
    /// The size, ms.
    pub window_ms: i64,
    /// The watermark when the size was first configured for this state.
    pub first_start: i64,
}

/// The last completeness time one writer of progress markers announced on a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterProgress {
    /// The writer's id (one app-raw deployment).
    pub writer: String,
    /// Its latest completeness time, ms.
    pub completeness_ms: i64,
}

/// State of a whole partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// The partition's watermark.
    pub watermark: Option<i64>,
    /// Progress per marker writer; the watermark follows their minimum. Absent in state written
    /// before markers existed.
    #[serde(default)]
    pub writers: Vec<WriterProgress>,
    /// Every instrument seen on the partition, sorted by name.
    pub instruments: Vec<InstrumentSnapshot>,
}
