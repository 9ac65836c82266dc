//! What the service will not fold in, and how it says so: late trades, trades and progress
//! markers stamped implausibly far ahead.
//!
//! A trade for a closed window is never dropped in silence: the loop counts it, holds a copy
//! here for the late-trades topic until the next cycle (`LateTrades`), and a rate-limited WARN
//! names it with the reason (`late_reason`, `stamped_ahead`). The limits that decide what is
//! implausible live here too, beside the reasons that quote them.

use domain::{Aggregator, Trade, WatermarkRule};
use ports::{Clock, LateTrade, Partition};
use tracing::warn;

/// Late trades held for one cycle, at most: reaching it commits a cycle at once, so a flood of
/// late trades cannot grow memory.
pub const MAX_LATE_PER_CYCLE: usize = 10_000;

/// A marker whose completeness time is further ahead of the wall clock than this is not
/// believed (counted, WARN): one hostile or broken marker must not close every window to come.
pub const MAX_MARKER_AHEAD_MS: i64 = 120_000;

/// Under the trades rule, a trade stamped further ahead of app-agg's clock than this is not
/// aggregated but handled as late (copied to the late topic, counted, WARN): it would move the
/// watermark past every window to come. The rule already follows the wall clock when caught
/// up; the markers rule needs no such check, as trades never move its watermark.
pub const MAX_TRADE_AHEAD_MS: i64 = 120_000;

/// At most one late-trade WARN per this many milliseconds; the rest are counted in the next one.
const LATE_WARN_EVERY_MS: i64 = 5_000;

/// One WARN per [`LATE_WARN_EVERY_MS`] at most, so a flood cannot flood the logs too.
#[derive(Debug)]
pub(crate) struct WarnPace {
    /// Wall time of the last WARN, ms.
    last_ms: i64,
}

impl WarnPace {
    /// A pace that lets the first WARN through.
    pub(crate) fn new() -> Self {
        WarnPace { last_ms: i64::MIN }
    }

    /// Whether a WARN may go out at `now`; if so, it counts as sent.
    pub(crate) fn due(&mut self, now: i64) -> bool {
        if now.saturating_sub(self.last_ms) < LATE_WARN_EVERY_MS {
            return false;
        }
        self.last_ms = now;
        true
    }
}

/// Late trades since the last cycle, for the late-trades topic, and the WARN about them.
#[derive(Debug)]
pub(crate) struct LateTrades {
    held: Vec<LateTrade>,
    pace: WarnPace,
    /// Late trades since the last WARN.
    unwarned: u64,
}

impl LateTrades {
    /// None held, the first WARN due.
    pub(crate) fn new() -> Self {
        LateTrades {
            held: Vec::new(),
            pace: WarnPace::new(),
            unwarned: 0,
        }
    }

    /// Late trades held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether a cycle must run now to bound memory ([`MAX_LATE_PER_CYCLE`]).
    pub(crate) fn is_full(&self) -> bool {
        self.held.len() >= MAX_LATE_PER_CYCLE
    }

    /// Holds `late` for the next cycle.
    pub(crate) fn push(&mut self, late: LateTrade) {
        self.held.push(late);
    }

    /// Takes the late trades of `only` (or all) partitions for a commit; the rest stay held.
    pub(crate) fn take(&mut self, only: Option<&[Partition]>) -> Vec<LateTrade> {
        let (taken, kept): (Vec<LateTrade>, Vec<LateTrade>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|l| only.is_none_or(|o| o.contains(&l.partition)));
        self.held = kept;
        taken
    }

    /// Drops every held trade: after an aborted cycle they are read again.
    pub(crate) fn clear(&mut self) {
        self.held.clear();
    }

    /// Counts the late trades held from index `first` on; one WARN per [`LATE_WARN_EVERY_MS`]
    /// names the first of them and how many came since the last WARN. Every late trade is
    /// counted and copied regardless. The clock is read only when there is something to say.
    pub(crate) fn warn_since(&mut self, first: usize, clock: &impl Clock) {
        let Some(newest) = self.held.get(first) else {
            return;
        };
        self.unwarned += (self.held.len() - first) as u64;
        if !self.pace.due(clock.now_ms()) {
            return;
        }
        warn!(
            instrument = %newest.trade.instrument_name,
            trade_seq = newest.trade.trade_seq,
            partition = newest.partition,
            offset = newest.offset,
            reason = %newest.reason,
            late_since_last_warning = self.unwarned,
            "Trade arrived after its window closed: not aggregated, copied to the late-trades topic (recompute with `app-agg replay`)."
        );
        self.unwarned = 0;
    }
}

/// Whether a marker's completeness time is too far ahead of `now` to believe
/// ([`MAX_MARKER_AHEAD_MS`]).
pub(crate) fn marker_ahead(completeness_ms: i64, now: i64) -> bool {
    completeness_ms > now.saturating_add(MAX_MARKER_AHEAD_MS)
}

/// Why `trade` is not believed, if it is stamped more than [`MAX_TRADE_AHEAD_MS`] after `now`.
pub(crate) fn stamped_ahead(trade: &Trade, now: i64) -> Option<String> {
    let ahead = trade.timestamp.saturating_sub(now);
    (ahead > MAX_TRADE_AHEAD_MS).then(|| {
        format!(
            "timestamp {} is {ahead} ms ahead of this host's clock ({now}): more than {MAX_TRADE_AHEAD_MS} ms, not aggregated",
            trade.timestamp
        )
    })
}

/// Why `trade` is late on `aggregator`: its window and the watermark that closed it.
pub(crate) fn late_reason(aggregator: &Aggregator, trade: &Trade) -> String {
    let config = aggregator.config();
    let start = config.window().start_of(trade.timestamp);
    let end = config.window().end_of_window_starting(start);
    let rule = match config.rule() {
        WatermarkRule::Markers => "progress markers",
        WatermarkRule::TradeTime { .. } => "trade time",
    };
    format!(
        "window [{start}, {end}) closed: watermark {} ({rule}) >= end + grace {} ms",
        aggregator.watermark().unwrap_or(i64::MIN),
        config.grace_ms()
    )
}
