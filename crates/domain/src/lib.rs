//! The pure core of the pipeline: what a trade is, how trades become windowed aggregates.
//!
//! No I/O, no async runtime, no clock reads, no wire formats: callers pass time in.
//!
//! * [`trade`]: [`Trade`] (validated) and its plain [`TradeFields`].
//! * [`window`]: epoch-aligned tumbling windows.
//! * [`ewma`]: time-decayed EWMA of price and amount-weighted price, O(1) per trade.
//! * [`aggregate`]: the [`Aggregate`] record and its running accumulator.
//! * [`aggregator`]: the per-partition [`Aggregator`]: dedup by `trade_seq`, watermark (from
//!   progress markers, or trade time), grace, late trades, closing windows.
//! * [`calendar`]: UTC days to and from dates.
//! * [`config`]: [`AggregatorConfig`]: window, grace, watermark rule, half-lives.
//! * [`snapshot`]: its serialisable state for changelogs.
//! * `testing` (feature `testing`): trade fixtures for tests and benchmarks.

pub mod aggregate;
pub mod aggregator;
pub mod calendar;
pub mod compensated;
pub mod config;
pub mod error;
pub mod ewma;
mod fxhash;
mod instruments;
mod open_windows;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trade;
pub mod window;

pub use aggregate::{Aggregate, WindowAccumulator};
pub use aggregator::{Aggregator, AggregatorConfig, Ingested, MAX_WRITERS, WatermarkRule};
pub use compensated::CompensatedSum;
pub use error::{Error, Result};
pub use ewma::{EwmaSums, EwmaValue};
pub use snapshot::{InstrumentSnapshot, PartitionSnapshot, RollupFloor, WriterProgress};
pub use trade::{Direction, Liquidation, Trade, TradeFields};
pub use window::WindowSize;
