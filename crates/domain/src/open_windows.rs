//! One instrument's open windows, with the newest at a fixed place.
//!
//! Almost every trade lands in its instrument's newest window. Keeping that window at a fixed
//! offset in the instrument's state (rather than at the end of a list whose length must be read
//! first) lets the processor load it together with the rest of the state: one memory round trip
//! per trade instead of two. The older windows sit in a map by start, so a trade that opens or
//! finds a window out of order costs O(log n) whatever the order (a list made backwards-stepping
//! timestamps with a tiny window and a long grace quadratic).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::aggregate::WindowAccumulator;
use crate::trade::Trade;

/// Open windows of one instrument, ascending by start. Older ones stay open only until the
/// watermark passes their end plus grace, or when a trade arrives out of order within grace.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenWindows {
    /// Every open window but the newest, by start; empty whenever `newest` is. Boxed so that a
    /// map node holding one window waiting out its grace stays small (10 k instruments each
    /// keeping one cost about 3 MB, not the 17 MB of unboxed 11-slot nodes).
    older: BTreeMap<i64, Box<WindowAccumulator>>,
    newest: Option<WindowAccumulator>,
}

impl OpenWindows {
    /// The windows of a snapshot (ascending by start).
    pub(crate) fn from_vec(mut windows: Vec<WindowAccumulator>) -> Self {
        let newest = windows.pop();
        let older = windows
            .into_iter()
            .map(|w| (w.window_start, Box::new(w)))
            .collect();
        OpenWindows { older, newest }
    }

    /// All windows, ascending.
    pub(crate) fn to_vec(&self) -> Vec<WindowAccumulator> {
        self.older
            .values()
            .map(|w| &**w)
            .chain(&self.newest)
            .cloned()
            .collect()
    }

    /// The window with the latest start.
    #[inline]
    pub(crate) fn newest(&self) -> Option<&WindowAccumulator> {
        self.newest.as_ref()
    }

    /// The window with the earliest start.
    pub(crate) fn first(&self) -> Option<&WindowAccumulator> {
        self.older
            .first_key_value()
            .map(|(_, w)| &**w)
            .or(self.newest.as_ref())
    }

    /// The open window starting at `start`.
    pub(crate) fn find_mut(&mut self, start: i64) -> Option<&mut WindowAccumulator> {
        match &mut self.newest {
            Some(newest) if newest.window_start == start => Some(newest),
            _ => self.older.get_mut(&start).map(|w| &mut **w),
        }
    }

    /// Folds `trade`, which skipped `seq_gap` values of `trade_seq`, into the window
    /// `[start, end)`, opening it if needed. True if it opened.
    ///
    /// A window that receives a trade drops its frozen EWMA values: the live sums describe it
    /// again (see [`WindowAccumulator::ewma`]).
    #[inline]
    pub(crate) fn add(&mut self, start: i64, end: i64, trade: &Trade, seq_gap: u64) -> bool {
        match &mut self.newest {
            Some(newest) if newest.window_start == start => {
                fold(newest, trade, seq_gap);
                false
            }
            Some(newest) if newest.window_start < start => {
                let previous =
                    std::mem::replace(newest, WindowAccumulator::open(start, end, trade, seq_gap));
                self.older.insert(previous.window_start, Box::new(previous));
                true
            }
            Some(_) => match self.older.entry(start) {
                Entry::Occupied(mut window) => {
                    fold(window.get_mut(), trade, seq_gap);
                    false
                }
                Entry::Vacant(slot) => {
                    slot.insert(Box::new(WindowAccumulator::open(
                        start, end, trade, seq_gap,
                    )));
                    true
                }
            },
            None => {
                self.newest = Some(WindowAccumulator::open(start, end, trade, seq_gap));
                true
            }
        }
    }

    /// Removes every window ending at or before `max_end`, handing each to `closed`, oldest
    /// first. Returns how many there were.
    pub(crate) fn drain_ending_by(
        &mut self,
        max_end: i64,
        mut closed: impl FnMut(WindowAccumulator),
    ) -> usize {
        let mut older = 0;
        while let Some(window) = self
            .older
            .first_entry()
            .filter(|w| w.get().window_end <= max_end)
        {
            closed(*window.remove());
            older += 1;
        }
        let newest_closed = self.older.is_empty()
            && self
                .newest
                .as_ref()
                .is_some_and(|w| w.window_end <= max_end);
        if newest_closed {
            self.newest.take().into_iter().for_each(&mut closed);
        }
        older + usize::from(newest_closed)
    }
}

/// Folds `trade` into an open window, whose frozen EWMA values no longer describe it.
#[inline]
fn fold(window: &mut WindowAccumulator, trade: &Trade, seq_gap: u64) {
    window.add(trade, seq_gap);
    window.ewma.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn trade(seq: u64, ts: i64) -> Trade {
        testing::trade("BTC-PERPETUAL", seq, ts, 100.0, 1.0)
    }

    fn starts(windows: &OpenWindows) -> Vec<i64> {
        windows.to_vec().iter().map(|w| w.window_start).collect()
    }

    #[test]
    fn keeps_windows_ascending_whatever_order_they_open_in() {
        let mut windows = OpenWindows::default();
        assert!(windows.add(20, 30, &trade(1, 25), 0));
        assert!(windows.add(40, 50, &trade(2, 45), 0));
        assert!(windows.add(0, 10, &trade(3, 5), 0));
        assert!(windows.add(30, 40, &trade(4, 35), 0));
        assert!(!windows.add(30, 40, &trade(5, 36), 0));
        assert!(!windows.add(40, 50, &trade(6, 46), 0));
        assert_eq!(starts(&windows), [0, 20, 30, 40]);
        assert_eq!(windows.newest().map(|w| w.trade_count), Some(2));
        assert_eq!(windows.first().map(|w| w.window_start), Some(0));
        assert_eq!(windows.find_mut(30).map(|w| w.trade_count), Some(2));
        assert!(windows.find_mut(10).is_none());
    }

    #[test]
    fn drains_a_prefix_and_the_newest_only_after_all_older() {
        let mut windows = OpenWindows::from_vec(Vec::new());
        for (seq, start) in [(1, 0), (2, 10), (3, 20)] {
            windows.add(start, start + 10, &trade(seq, start + 1), 0);
        }
        let mut closed = Vec::new();
        assert_eq!(
            windows.drain_ending_by(20, |w| closed.push(w.window_start)),
            2
        );
        assert_eq!(closed, [0, 10]);
        assert_eq!(starts(&windows), [20]);
        assert_eq!(
            windows.drain_ending_by(29, |w| closed.push(w.window_start)),
            0
        );
        assert_eq!(
            windows.drain_ending_by(30, |w| closed.push(w.window_start)),
            1
        );
        assert_eq!(closed, [0, 10, 20]);
        assert!(windows.newest().is_none() && windows.first().is_none());
        let restored = OpenWindows::from_vec(vec![
            WindowAccumulator::open(0, 10, &trade(1, 1), 0),
            WindowAccumulator::open(10, 20, &trade(2, 11), 0),
        ]);
        assert_eq!(starts(&restored), [0, 10]);
        assert_eq!(restored.newest().map(|w| w.window_start), Some(10));
    }
}
