//! How an aggregator cuts and closes windows, and which EWMAs it keeps.

use crate::error::{Error, Result};
use crate::window::WindowSize;

/// What moves a partition's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkRule {
    /// Progress markers only: the minimum completeness time over the partition's writers.
    Markers,
    /// For sources without markers: the largest trade timestamp seen, and when caught up
    /// wall-clock time minus `max_delay_ms`.
    TradeTime {
        /// Wall-clock lag used when caught up, ms.
        max_delay_ms: i64,
    },
}

/// How windows are cut and closed, and which EWMAs are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatorConfig {
    pub(crate) window: WindowSize,
    /// Larger sizes rolled up from `window`'s closed windows, ascending.
    pub(crate) rollups: Vec<WindowSize>,
    pub(crate) grace_ms: i64,
    pub(crate) rule: WatermarkRule,
    pub(crate) halflives_ms: Vec<i64>,
}

impl AggregatorConfig {
    /// A validated configuration.
    ///
    /// * `window`: tumbling window size.
    /// * `grace_ms`: a window `[s, e)` closes once the watermark reaches `e + grace_ms`.
    /// * `rule`: what moves the watermark.
    /// * `halflives_ms`: one EWMA pair per half-life, reported in this order.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a negative grace or delay, a non-positive or repeated
    /// half-life.
    pub fn new(
        window: WindowSize,
        grace_ms: i64,
        rule: WatermarkRule,
        halflives_ms: Vec<i64>,
    ) -> Result<Self> {
        if grace_ms < 0 {
            return Err(Error::InvalidConfig(format!(
                "grace must be ≥ 0 ms, got {grace_ms}"
            )));
        }
        if let WatermarkRule::TradeTime { max_delay_ms } = rule
            && max_delay_ms < 0
        {
            return Err(Error::InvalidConfig(format!(
                "max delay must be ≥ 0 ms, got {max_delay_ms}"
            )));
        }
        for (i, &h) in halflives_ms.iter().enumerate() {
            if h <= 0 {
                return Err(Error::InvalidConfig(format!(
                    "half-life must be > 0 ms, got {h}"
                )));
            }
            if halflives_ms[..i].contains(&h) {
                return Err(Error::InvalidConfig(format!(
                    "half-life {h} ms is listed twice"
                )));
            }
        }
        Ok(AggregatorConfig {
            window,
            rollups: Vec::new(),
            grace_ms,
            rule,
            halflives_ms,
        })
    }

    /// Several bar sizes from one stream: `window` (the smallest) is built trade by trade, and
    /// each of `larger` is rolled up from its closed windows.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a size that is not a multiple of the smallest greater than
    /// it, or that is listed twice.
    pub fn with_rollups(mut self, larger: impl IntoIterator<Item = WindowSize>) -> Result<Self> {
        let base = self.window.millis();
        let mut rollups: Vec<WindowSize> = larger.into_iter().collect();
        rollups.sort_unstable_by_key(|w| w.millis());
        for (i, size) in rollups.iter().enumerate() {
            let ms = size.millis();
            if ms <= base || ms % base != 0 {
                return Err(Error::InvalidConfig(format!(
                    "window {ms} ms is not a multiple of the smallest window ({base} ms) above it"
                )));
            }
            if i > 0 && rollups[i - 1] == *size {
                return Err(Error::InvalidConfig(format!(
                    "window {ms} ms is listed twice"
                )));
            }
        }
        self.rollups = rollups;
        Ok(self)
    }

    /// The smallest window size, the one trades are folded into.
    pub fn window(&self) -> WindowSize {
        self.window
    }

    /// The larger sizes rolled up from it, ascending (empty for one size).
    pub fn rollups(&self) -> &[WindowSize] {
        &self.rollups
    }

    /// Every bar size, ascending.
    pub fn window_sizes(&self) -> impl Iterator<Item = WindowSize> + '_ {
        std::iter::once(self.window).chain(self.rollups.iter().copied())
    }

    /// Grace period in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// What moves the watermark.
    pub fn rule(&self) -> WatermarkRule {
        self.rule
    }

    /// Configured half-lives in ms, in report order.
    pub fn halflives_ms(&self) -> &[i64] {
        &self.halflives_ms
    }
}
