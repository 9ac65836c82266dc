//! Epoch-aligned tumbling windows.
//!
//! A window of size `s` starting at `start` covers `[start, start + s)`; starts are multiples of
//! `s` counted from the Unix epoch, so every instance and every replay cuts time identically.

use crate::error::{Error, Result};

/// Size of a tumbling window in milliseconds (always > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSize(i64);

impl WindowSize {
    /// A window size of `ms` milliseconds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `ms` is not positive.
    pub fn from_millis(ms: i64) -> Result<Self> {
        if ms > 0 {
            Ok(WindowSize(ms))
        } else {
            Err(Error::InvalidConfig(format!(
                "window size must be > 0 ms, got {ms}"
            )))
        }
    }

    /// The size in milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Start of the window containing `ts` (floor towards −∞, so negative times align too).
    pub fn start_of(self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.0)
    }

    /// Exclusive end of the window that starts at `start`.
    pub fn end_of_window_starting(self, start: i64) -> i64 {
        start.saturating_add(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aligns_to_epoch_minutes() {
        let minute = WindowSize::from_millis(60_000).unwrap();
        assert_eq!(minute.start_of(1_590_484_512_188), 1_590_484_500_000);
        assert_eq!(minute.start_of(1_590_484_500_000), 1_590_484_500_000);
        assert_eq!(minute.start_of(1_590_484_499_999), 1_590_484_440_000);
        assert_eq!(minute.start_of(-1), -60_000);
        assert_eq!(minute.end_of_window_starting(60_000), 120_000);
    }

    #[test]
    fn rejects_non_positive_size() {
        assert!(WindowSize::from_millis(0).is_err());
        assert!(WindowSize::from_millis(-10).is_err());
    }

    proptest! {
        #[test]
        fn every_timestamp_falls_in_exactly_one_aligned_window(
            ts in 1i64..4_102_444_800_000, size in 1i64..86_400_000
        ) {
            let w = WindowSize::from_millis(size).unwrap();
            let start = w.start_of(ts);
            prop_assert_eq!(start % size, 0);
            prop_assert!(start <= ts && ts < w.end_of_window_starting(start));
        }
    }
}
