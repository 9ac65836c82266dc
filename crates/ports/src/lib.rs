//! Ports: the boundary between the services and the outside world.
//!
//! Apps are generic over these traits, adapters implement them, tests pass fakes.
//!
//! * [`feed`]: inbound [`TradeFeed`] — batches of trades from an exchange.
//! * [`sink`]: outbound [`TradeSink`] — publish trades durably.
//! * [`log`]: inbound [`TradeLog`] — trades with their source position, plus partition events.
//! * [`commit`]: outbound [`AggregateCommitter`] — aggregates, state and positions, together.
//! * [`records`]: inbound [`RecordSource`] — records of several topics as rows, with positions.
//! * [`store`]: outbound [`Store`] — rows and the positions they cover, in one transaction.
//! * [`error`]: [`ErrorKind`], whether retrying a port's failed call can help.
//! * [`clock`]: [`Clock`] — wall time, injectable.
//! * [`trace`]: [`TraceContext`] — W3C trace context carried with data between hops.

pub mod clock;
pub mod commit;
pub mod error;
pub mod feed;
pub mod log;
pub mod records;
pub mod sink;
pub mod store;
pub mod trace;

pub use clock::{Clock, SystemClock};
pub use commit::{
    AggregateCommitter, CommitBatch, CommitError, LateTrade, PartitionMarker, RestoredPartition,
};
pub use error::ErrorKind;
pub use feed::{FeedError, FeedEvent, Position, StartPositions, TradeBatch, TradeFeed};
pub use log::{LogError, LogEvent, LoggedProgress, LoggedTrade, Partition, TradeLog};
pub use records::{
    RecordSource, Row, SourceError, SourceEvent, SourceRecord, StartAt, TopicPartition,
};
pub use sink::{SinkError, TradeSink};
pub use store::{PositionMove, Store, StoreBatch, StoreError, Written};
pub use trace::TraceContext;
