//! The per-partition aggregation state machine.
//!
//! One [`Aggregator`] holds everything a consumer needs for one source partition: per instrument
//! the last `trade_seq`, the continuous EWMA sums and the open windows, plus the partition's
//! watermark. It is driven by [`ingest`](Aggregator::ingest) for each trade in log order,
//! [`observe_progress`](Aggregator::observe_progress) for each progress marker (the default rule:
//! only the source's word on completeness closes windows), and
//! [`drain_closed`](Aggregator::drain_closed) to collect the windows the watermark closed. Under
//! the fallback rule for sources without markers ([`WatermarkRule::TradeTime`]) trades move the
//! watermark, and [`advance_wall_clock`](Aggregator::advance_wall_clock) does when caught up.
//! Windows leave the state only when drained, so a snapshot taken at any moment restores into an
//! aggregator that produces exactly the output the original would have.

use smallvec::SmallVec;

use crate::aggregate::{Aggregate, WindowAccumulator};
pub use crate::config::{AggregatorConfig, WatermarkRule};
use crate::error::{Error, Result};
use crate::ewma::{DecayTable, EwmaSums, EwmaValue};
use crate::instruments::{InstrumentIds, NameKey};
use crate::open_windows::OpenWindows;
use crate::snapshot::{InstrumentSnapshot, PartitionSnapshot, RollupFloor, WriterProgress};
use crate::trade::Trade;

/// Writers of progress markers tracked per partition, at most; markers of further writers are
/// ignored (a hostile or misconfigured topic must not grow the state without bound).
pub const MAX_WRITERS: usize = 64;

/// What happened to one ingested trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Folded into its window and the EWMA.
    Accepted,
    /// `trade_seq` ≤ the last one seen for the instrument: dropped.
    Duplicate,
    /// Its window had already closed: dropped (counted on the window of the instrument's
    /// next accepted trade; its `trade_seq` counts as seen).
    Late,
}

#[derive(Debug, Clone)]
struct InstrumentState {
    last_trade_seq: Option<u64>,
    last_timestamp: i64,
    /// Start of the window whose EWMA values are still the live sums (see [`crate::WindowAccumulator::ewma`]).
    ewma_window_start: Option<i64>,
    changed: bool,
    /// The newest window and the EWMA sums (up to three half-lives) are inline: a trade then
    /// touches one contiguous record instead of chasing heap pointers, once a third of its cost.
    windows: OpenWindows,
    ewma: SmallVec<[EwmaSums; 3]>,
    /// Larger windows being rolled up from closed ones, at most one per rollup size, ascending
    /// by size (only touched when windows close).
    rollups: Vec<WindowAccumulator>,
    /// Late trades not yet counted on a window: they go to the window of the instrument's next
    /// accepted trade, a point the log fixes (not when windows happen to be drained).
    late_pending: u64,
    /// `trade_seq` values skipped before late trades, counted like `late_pending`: a gap is
    /// reported even when the trade after it came late.
    gaps_pending: u64,
    /// Larger sizes whose bars starting before a time are incomplete (the size was added, or
    /// the state predates several sizes, while earlier sub-windows had already closed); usually
    /// empty.
    rollup_floors: Vec<RollupFloor>,
}

impl InstrumentState {
    fn new(halflives_ms: &[i64]) -> Self {
        InstrumentState {
            last_trade_seq: None,
            last_timestamp: i64::MIN,
            ewma: halflives_ms.iter().map(|&h| EwmaSums::new(h)).collect(),
            ewma_window_start: None,
            windows: OpenWindows::default(),
            rollups: Vec::new(),
            late_pending: 0,
            gaps_pending: 0,
            rollup_floors: Vec::new(),
            changed: false,
        }
    }
}

/// The values of the live sums, one per half-life that has seen a trade.
fn live_values(sums: &[EwmaSums]) -> Vec<EwmaValue> {
    sums.iter().filter_map(EwmaSums::value).collect()
}

/// Aggregation state of one source partition. See the module docs.
#[derive(Debug, Clone)]
pub struct Aggregator {
    config: AggregatorConfig,
    decay: Vec<DecayTable>,
    watermark: Option<i64>,
    /// Latest completeness time per marker writer (a handful at most, so a list).
    writers: Vec<WriterProgress>,
    /// Instrument names and their dense ids; `states[id]` is the instrument's state.
    ids: InstrumentIds,
    states: Vec<InstrumentState>,
    /// Lower bound of the earliest open window end, so most calls to `drain_closed` are O(1).
    earliest_open_end: Option<i64>,
    /// Ids of instruments changed since the last `take_changed`.
    changed: Vec<usize>,
}

impl Aggregator {
    /// An empty aggregator (no instruments, no watermark).
    pub fn new(config: AggregatorConfig) -> Self {
        Aggregator {
            decay: config
                .halflives_ms
                .iter()
                .map(|&h| DecayTable::new(h))
                .collect(),
            config,
            watermark: None,
            writers: Vec::new(),
            ids: InstrumentIds::default(),
            states: Vec::new(),
            earliest_open_end: None,
            changed: Vec::new(),
        }
    }

    /// The configuration this aggregator runs with.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// The partition's watermark (see [`WatermarkRule`]); it never moves back.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Each marker writer's latest completeness time.
    pub fn writers(&self) -> &[WriterProgress] {
        &self.writers
    }

    /// Number of instruments with state.
    pub fn instrument_count(&self) -> usize {
        self.states.len()
    }

    /// Folds one trade in, in log order.
    ///
    /// Under [`WatermarkRule::TradeTime`] the watermark moves to the trade's timestamp, even for
    /// a duplicate: replaying the log after a restore then moves it exactly as the first pass
    /// did, so late/not-late decisions repeat and the output is identical.
    pub fn ingest(&mut self, trade: &Trade) -> Ingested {
        let outcome = self.classify_and_fold(trade);
        if let WatermarkRule::TradeTime { .. } = self.config.rule {
            self.watermark = Some(
                self.watermark
                    .map_or(trade.timestamp, |w| w.max(trade.timestamp)),
            );
        }
        outcome
    }

    /// Takes in a progress marker of `writer`: every trade up to `completeness_ms` precedes it
    /// in the partition. Under [`WatermarkRule::Markers`] the watermark becomes the minimum
    /// over the writers (never lower than before); returns whether it moved. Ignored under
    /// [`WatermarkRule::TradeTime`], and from writers beyond [`MAX_WRITERS`].
    pub fn observe_progress(&mut self, writer: &str, completeness_ms: i64) -> bool {
        if self.config.rule != WatermarkRule::Markers {
            return false;
        }
        if let Some(known) = self.writers.iter_mut().find(|w| w.writer == writer) {
            known.completeness_ms = known.completeness_ms.max(completeness_ms);
        } else if self.writers.len() < MAX_WRITERS {
            self.writers.push(WriterProgress {
                writer: writer.to_owned(),
                completeness_ms,
            });
        } else {
            return false;
        }
        let Some(slowest) = self.writers.iter().map(|w| w.completeness_ms).min() else {
            return false;
        };
        if self.watermark.is_some_and(|w| w >= slowest) {
            return false;
        }
        self.watermark = Some(slowest);
        true
    }

    fn classify_and_fold(&mut self, trade: &Trade) -> Ingested {
        let ts = trade.timestamp;
        let (window, grace_ms, watermark) =
            (self.config.window, self.config.grace_ms, self.watermark);
        let closed =
            |window_end: i64| watermark.is_some_and(|w| w >= window_end.saturating_add(grace_ms));
        let whole_window = |ts: i64| {
            let start = window.start_of(ts);
            (start, window.end_of_window_starting(start))
        };

        let name = trade.instrument_name.as_str();
        let key = NameKey::new(name);
        let hash = key.hash();
        let (id, state, window_start, window_end) = match self.ids.find(name, key, hash) {
            Some(id) => {
                // Ids are handed out together with a pushed state: `states[id]` exists.
                let state = &mut self.states[id];
                if state
                    .last_trade_seq
                    .is_some_and(|last| trade.trade_seq <= last)
                {
                    return Ingested::Duplicate;
                }
                // Most trades land in their instrument's newest window: no division then.
                let (start, end) = match state.windows.newest() {
                    Some(w) if w.window_start <= ts && ts < w.window_end => {
                        (w.window_start, w.window_end)
                    }
                    _ => whole_window(ts),
                };
                (id, state, start, end)
            }
            None => {
                let (start, end) = whole_window(ts);
                if closed(end) {
                    return Ingested::Late;
                }
                let id = self.ids.insert_new(name, key, hash);
                self.states
                    .push(InstrumentState::new(&self.config.halflives_ms));
                (id, &mut self.states[id], start, end)
            }
        };
        if closed(window_end) {
            state.late_pending = state.late_pending.saturating_add(1);
            // Seen, though not aggregated: its seq is no gap of the next bar (the values it
            // skipped are), and a copy of it is a duplicate.
            let skipped = state.last_trade_seq.map_or(0, |last| {
                trade.trade_seq.saturating_sub(last).saturating_sub(1)
            });
            state.gaps_pending = state.gaps_pending.saturating_add(skipped);
            state.last_trade_seq = Some(trade.trade_seq);
            if !state.changed {
                state.changed = true;
                self.changed.push(id);
            }
            return Ingested::Late;
        }

        // The live EWMA sums describe the window of the instrument's latest trade. Before they
        // move on to another window, freeze the values into the window they leave.
        if state.ewma_window_start != Some(window_start) {
            if let Some(previous) = state.ewma_window_start {
                let frozen = live_values(&state.ewma);
                if let Some(w) = state.windows.find_mut(previous) {
                    w.ewma = frozen;
                }
            }
            state.ewma_window_start = Some(window_start);
        }
        // Per instrument, log order is time order; a timestamp that steps back is folded in
        // without decay rather than with a weight above 1.
        let elapsed_ms = if state.last_trade_seq.is_some() {
            trade.timestamp.saturating_sub(state.last_timestamp).max(0)
        } else {
            0
        };
        for (sums, decay) in state.ewma.iter_mut().zip(&self.decay) {
            sums.update_with_decay(decay.factor(elapsed_ms), trade.price, trade.amount);
        }

        // Values of `trade_seq` this trade skipped after the instrument's previous one.
        let seq_gap = state
            .last_trade_seq
            .map_or(0, |last| {
                trade.trade_seq.saturating_sub(last).saturating_sub(1)
            })
            .saturating_add(std::mem::take(&mut state.gaps_pending));
        if state.windows.add(window_start, window_end, trade, seq_gap) {
            lower_to(&mut self.earliest_open_end, window_end);
        }
        if state.late_pending > 0
            && let Some(w) = state.windows.find_mut(window_start)
        {
            w.late_trades = w
                .late_trades
                .saturating_add(std::mem::take(&mut state.late_pending));
        }
        state.last_trade_seq = Some(trade.trade_seq);
        state.last_timestamp = state.last_timestamp.max(trade.timestamp);
        if !state.changed {
            state.changed = true;
            self.changed.push(id);
        }
        Ingested::Accepted
    }

    /// Under [`WatermarkRule::TradeTime`], moves the watermark to `now_ms − max_delay` if the
    /// caller is caught up on the partition (its position equals the end of the log). Never
    /// moves it back. A consumer replaying a backlog passes `caught_up = false`, so wall time
    /// cannot close windows early. Under [`WatermarkRule::Markers`] the wall clock closes
    /// nothing.
    pub fn advance_wall_clock(&mut self, now_ms: i64, caught_up: bool) {
        if let WatermarkRule::TradeTime { max_delay_ms } = self.config.rule
            && caught_up
        {
            let candidate = now_ms.saturating_sub(max_delay_ms);
            self.watermark = Some(self.watermark.map_or(candidate, |w| w.max(candidate)));
        }
    }

    /// Whether `drain_closed` would return something.
    pub fn has_closed_windows(&self) -> bool {
        match (self.watermark, self.earliest_open_end) {
            (Some(w), Some(end)) => w >= end.saturating_add(self.config.grace_ms),
            _ => false,
        }
    }

    /// Removes and returns every window the watermark has closed (`watermark ≥ end + grace`),
    /// rolled-up sizes included, ordered by `(window_end, instrument_name, window_ms)`.
    pub fn drain_closed(&mut self) -> Vec<Aggregate> {
        if !self.has_closed_windows() {
            return Vec::new();
        }
        match self.watermark {
            Some(w) => self.drain_ending_by(w.saturating_sub(self.config.grace_ms)),
            None => Vec::new(),
        }
    }

    /// Removes and returns every open window, closed or not (end of a finite input).
    pub fn flush_all(&mut self) -> Vec<Aggregate> {
        self.drain_ending_by(i64::MAX)
    }

    fn drain_ending_by(&mut self, max_end: i64) -> Vec<Aggregate> {
        let mut out = Vec::new();
        let mut earliest_open_end: Option<i64> = None;
        let rollup_sizes = &self.config.rollups;
        for (id, state) in self.states.iter_mut().enumerate() {
            let name = self.ids.name(id);
            let closed = state.windows.drain_ending_by(max_end, |mut w| {
                w.ewma = if state.ewma_window_start == Some(w.window_start) {
                    state.ewma_window_start = None;
                    live_values(&state.ewma)
                } else {
                    std::mem::take(&mut w.ewma)
                };
                let floors = &state.rollup_floors;
                roll_up(&mut state.rollups, rollup_sizes, &w, |done| {
                    if is_complete(floors, &done) {
                        out.push(done.into_aggregate(name));
                    }
                });
                out.push(w.into_aggregate(name));
            });
            let rolled_up_before = state.rollups.len();
            let floors = &state.rollup_floors;
            state.rollups.retain(|r| {
                let done = r.window_end <= max_end;
                if done && is_complete(floors, r) {
                    out.push(r.clone().into_aggregate(name));
                }
                !done
            });
            if (closed > 0 || state.rollups.len() < rolled_up_before) && !state.changed {
                state.changed = true;
                self.changed.push(id);
            }
            let ends = state
                .windows
                .first()
                .map(|w| w.window_end)
                .into_iter()
                .chain(state.rollups.iter().map(|r| r.window_end));
            for end in ends {
                lower_to(&mut earliest_open_end, end);
            }
        }
        self.earliest_open_end = earliest_open_end;
        out.sort_unstable_by(|a, b| {
            (a.window_end, &a.instrument_name, a.window_ms).cmp(&(
                b.window_end,
                &b.instrument_name,
                b.window_ms,
            ))
        });
        out
    }

    /// State of every instrument changed since the last call (by a trade or a closed window),
    /// sorted by instrument; clears the change marks. This is what a changelog needs.
    pub fn take_changed(&mut self) -> Vec<InstrumentSnapshot> {
        let mut changed: Vec<InstrumentSnapshot> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|id| {
                let state = self.states.get_mut(id)?;
                state.changed = false;
                Some(snapshot_of(self.ids.name(id), state, &self.config))
            })
            .collect();
        changed.sort_unstable_by(|a, b| a.instrument_name.cmp(&b.instrument_name));
        changed
    }

    /// The complete state of the partition, instruments sorted by name.
    pub fn snapshot(&self) -> PartitionSnapshot {
        let mut instruments: Vec<InstrumentSnapshot> = self
            .states
            .iter()
            .enumerate()
            .map(|(id, state)| snapshot_of(self.ids.name(id), state, &self.config))
            .collect();
        instruments.sort_unstable_by(|a, b| a.instrument_name.cmp(&b.instrument_name));
        PartitionSnapshot {
            watermark: self.watermark,
            writers: self.writers.clone(),
            instruments,
        }
    }

    /// Rebuilds an aggregator from a snapshot taken under the same configuration.
    ///
    /// # Errors
    /// [`Error::SnapshotMismatch`] if an instrument's half-lives or window size differ from
    /// `config`, or its sums are not finite: restoring it would silently change the output.
    pub fn restore(config: AggregatorConfig, snapshot: PartitionSnapshot) -> Result<Self> {
        let mut aggregator = Aggregator::new(config);
        aggregator.watermark = snapshot.watermark;
        aggregator.writers = snapshot.writers;
        aggregator.writers.truncate(MAX_WRITERS);
        for instrument in snapshot.instruments {
            aggregator.restore_instrument(instrument)?;
        }
        Ok(aggregator)
    }

    /// Replaces one instrument's state (e.g. the latest changelog record of its key).
    ///
    /// # Errors
    /// As [`restore`](Self::restore).
    pub fn restore_instrument(&mut self, snapshot: InstrumentSnapshot) -> Result<()> {
        let mismatch = |reason: String| Error::SnapshotMismatch {
            instrument: snapshot.instrument_name.clone(),
            reason,
        };
        let halflives: Vec<i64> = snapshot.ewma.iter().map(|e| e.halflife_ms).collect();
        if halflives != self.config.halflives_ms {
            return Err(mismatch(format!(
                "half-lives {halflives:?} ms differ from configured {:?} ms",
                self.config.halflives_ms
            )));
        }
        if let Some(bad) = snapshot.ewma.iter().find(|e| !e.is_sane()) {
            return Err(mismatch(format!("EWMA sums are not usable: {bad:?}")));
        }
        let window = self.config.window;
        let mut previous_start = None;
        for w in &snapshot.windows {
            if window.start_of(w.window_start) != w.window_start
                || window.end_of_window_starting(w.window_start) != w.window_end
            {
                return Err(mismatch(format!(
                    "window [{}, {}) is not a {} ms window",
                    w.window_start,
                    w.window_end,
                    window.millis()
                )));
            }
            if previous_start.is_some_and(|p| p >= w.window_start) || w.trade_count == 0 {
                return Err(mismatch("windows are unordered or empty".into()));
            }
            previous_start = Some(w.window_start);
        }
        // Bars of a size no longer configured are dropped; one of a size that is new to this
        // state may have lost sub-windows that closed before, so its bars starting before the
        // watermark are not emitted.
        let configured = &self.config.rollups;
        let mut rollups = snapshot.rollups;
        rollups.retain(|r| configured.iter().any(|s| s.millis() == r.millis()));
        let mut previous_size = None;
        for r in &rollups {
            let aligned = configured
                .iter()
                .any(|s| s.millis() == r.millis() && s.start_of(r.window_start) == r.window_start);
            if !aligned || previous_size.is_some_and(|p| p >= r.millis()) || r.trade_count == 0 {
                return Err(mismatch(format!(
                    "rolled-up window [{}, {}) is not aligned to its size, or is repeated or empty",
                    r.window_start, r.window_end
                )));
            }
            previous_size = Some(r.millis());
        }
        let mut rollup_floors = snapshot.rollup_floors;
        rollup_floors.retain(|f| configured.iter().any(|s| s.millis() == f.window_ms));
        if let Some(watermark) = self.watermark {
            for size in configured {
                let known = snapshot.rollup_sizes_ms.contains(&size.millis())
                    || rollup_floors.iter().any(|f| f.window_ms == size.millis());
                if !known {
                    rollup_floors.push(RollupFloor {
                        window_ms: size.millis(),
                        first_start: watermark,
                    });
                }
            }
        }
        let ends = snapshot
            .windows
            .first()
            .map(|w| w.window_end)
            .into_iter()
            .chain(rollups.iter().map(|r| r.window_end));
        for end in ends {
            lower_to(&mut self.earliest_open_end, end);
        }
        let state = InstrumentState {
            last_trade_seq: snapshot.last_trade_seq,
            last_timestamp: snapshot.last_timestamp,
            ewma: snapshot.ewma.into_iter().collect(),
            ewma_window_start: snapshot.ewma_window_start,
            windows: OpenWindows::from_vec(snapshot.windows),
            rollups,
            late_pending: snapshot.late_pending,
            gaps_pending: snapshot.gaps_pending,
            rollup_floors,
            changed: false,
        };
        let id = self.ids.find_or_insert(&snapshot.instrument_name);
        match self.states.get_mut(id) {
            Some(existing) => *existing = state,
            None => self.states.push(state),
        }
        Ok(())
    }

    /// Raises the watermark to `watermark` (a restored marker); never lowers it.
    pub fn restore_watermark(&mut self, watermark: Option<i64>) {
        self.watermark = self.watermark.max(watermark);
    }
}

fn snapshot_of(
    name: &str,
    state: &InstrumentState,
    config: &AggregatorConfig,
) -> InstrumentSnapshot {
    InstrumentSnapshot {
        instrument_name: name.to_owned(),
        last_trade_seq: state.last_trade_seq,
        last_timestamp: state.last_timestamp,
        ewma: state.ewma.to_vec(),
        ewma_window_start: state.ewma_window_start,
        windows: state.windows.to_vec(),
        rollups: state.rollups.clone(),
        late_pending: state.late_pending,
        gaps_pending: state.gaps_pending,
        rollup_sizes_ms: config.rollups.iter().map(|s| s.millis()).collect(),
        rollup_floors: state.rollup_floors.clone(),
    }
}

/// Lowers a lower bound of window ends to `end` (the bound of no window yet becomes `end`).
#[inline]
fn lower_to(earliest_end: &mut Option<i64>, end: i64) {
    *earliest_end = Some(earliest_end.map_or(end, |e| e.min(end)));
}

/// Whether a finished rolled-up bar holds all its sub-windows (see [`RollupFloor`]).
fn is_complete(floors: &[RollupFloor], bar: &WindowAccumulator) -> bool {
    !floors
        .iter()
        .any(|f| f.window_ms == bar.millis() && bar.window_start < f.first_start)
}

/// Rolls the closed window `sub` up into the larger windows being built, one per size in
/// `sizes`; a larger window that `sub` has moved past is complete and handed to `done` (its
/// later sub-windows, if any, had no trades).
fn roll_up(
    rollups: &mut Vec<WindowAccumulator>,
    sizes: &[crate::window::WindowSize],
    sub: &WindowAccumulator,
    mut done: impl FnMut(WindowAccumulator),
) {
    for size in sizes {
        let start = size.start_of(sub.window_start);
        let end = size.end_of_window_starting(start);
        match rollups.iter_mut().position(|r| r.millis() == size.millis()) {
            Some(i) if rollups[i].window_start == start => rollups[i].merge(sub),
            Some(i) => done(std::mem::replace(
                &mut rollups[i],
                WindowAccumulator::rolled_up_from(start, end, sub),
            )),
            None => {
                let at = rollups.partition_point(|r| r.millis() < size.millis());
                rollups.insert(at, WindowAccumulator::rolled_up_from(start, end, sub));
            }
        }
    }
}
