//! Deribit adapter: Deribit's JSON-RPC wire frames in, validated [`domain::Trade`]s out.
//!
//! * [`config`]: endpoint, channels (validated), credentials, limits.
//! * [`backoff`]: reconnect delays.
//! * [`messages`]: serde models of the frames, exactly as Deribit sends them.
//! * [`rpc`]: JSON-RPC framing: requests out; each frame read once and classified.
//! * [`parse`]: pure frame → domain mapping, tolerant of unknown fields, strict about values;
//!   the one path from a raw trade to a `Trade` or a typed rejection, live and history alike.
//! * [`sequencer`]: per-instrument order, dedup, gap detection and backfill bookkeeping.
//! * [`error`]: the crate's error type.
//!
//! With the `live` feature (on by default; app-agg asks for the crate without it, for
//! `replay`'s parser, so building app-agg alone compiles no WebSocket or TLS stack):
//! * `feed`: `DeribitFeed`, the `TradeFeed`: supervisor with reconnect and backoff.
//! * `session`: one connection, split into transport, handshake, history work and delivery
//!   around a small routing core.
//! * `credits`: rate-limit pacing.
//!
//! * [`history_fetch`]: history on demand (a range of trades, paged, resumable); its client
//!   needs `live`.
//! * [`completeness`]: the time up to which the feed's stream is complete (progress).
//! * [`metrics`]: the feed's counters.

pub mod backoff;
pub mod completeness;
pub mod config;
#[cfg(feature = "live")]
pub mod credits;
pub mod error;
#[cfg(feature = "live")]
pub mod feed;
pub mod history_fetch;
pub mod messages;
pub mod metrics;
pub mod parse;
pub mod rpc;
pub mod sequencer;
#[cfg(feature = "live")]
mod session;

pub use config::{Channel, Credentials, DeribitConfig};
pub use error::{Error, Result, Setting};
#[cfg(feature = "live")]
pub use feed::DeribitFeed;
pub use metrics::FeedMetrics;
pub use parse::{ParsedTrades, TradeRejection, parse_json_line, parse_notification, parse_trade};
#[cfg(feature = "live")]
pub use session::TraceExtractor;
