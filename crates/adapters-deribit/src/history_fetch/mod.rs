//! History on demand: every trade of some instruments in a time range, fetched from Deribit's
//! history methods, in per-instrument `trade_seq` order, resumable from a [`Cursor`].
//!
//! * [`page`]: one history answer (`{trades, has_more}`) parsed through the same validation path
//!   as live frames, each trade kept with its JSON line.
//! * [`pager`]: one instrument's paging: by time, by `trade_seq` where more than a page of trades
//!   share one timestamp, holes in `trade_seq` closed by sequence a page at a time, the range's
//!   edges searched by sequence; over any [`TradeSource`].
//! * [`instruments`]: which instruments a channel names (`public/get_instruments`, expired too).
//! * `client` (feature `live`): [`HistoryClient`], the JSON-RPC client over the WebSocket that
//!   paces itself by Deribit's credits and retries what can be retried.
//! * [`error`]: why a fetch stops ([`FetchError`]).

#[cfg(feature = "live")]
mod client;
pub mod error;
pub mod instruments;
pub mod page;
pub mod pager;

#[cfg(feature = "live")]
pub use client::{ClientStats, HistoryClient};
pub use error::FetchError;
pub use instruments::HistoryChannel;
pub use page::{FetchedTrade, Page};
pub use pager::{Chunk, Cursor, Hole, InstrumentPager, PAGE_SIZE, TradeSource};
