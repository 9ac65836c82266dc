//! The rows read since the last write, per partition, and the positions they bring each
//! partition to.

use std::collections::BTreeMap;

use domain::{Aggregate, Trade};
use ports::{PositionMove, Row, SourceRecord, StoreBatch, TopicPartition, TraceContext};

/// Trace contexts linked from one write's span, at most.
pub const MAX_LINKS: usize = 32;

/// One partition's rows read since the last write.
#[derive(Debug, Default)]
struct Read {
    trades: Vec<Trade>,
    bars: Vec<Aggregate>,
    /// The offset after the last record read.
    next: i64,
}

/// What the next write will hold.
#[derive(Debug, Default)]
pub struct Pending {
    partitions: BTreeMap<TopicPartition, Read>,
    links: Vec<TraceContext>,
    rows: usize,
}

impl Pending {
    /// Adds a record's row (if it has one) and moves its partition's position past it.
    pub fn add(&mut self, record: SourceRecord) {
        let read = self.partitions.entry(record.source).or_default();
        match record.row {
            Row::Trade(trade) => {
                read.trades.push(trade);
                self.rows += 1;
            }
            Row::Bar(bar) => {
                read.bars.push(bar);
                self.rows += 1;
            }
            Row::Nothing => {}
        }
        read.next = record.offset + 1;
        self.link(record.trace);
    }

    /// One notification's records share a context: linked once.
    fn link(&mut self, trace: Option<TraceContext>) {
        if let Some(trace) = trace
            && self.links.len() < MAX_LINKS
            && !self.links.contains(&trace)
        {
            self.links.push(trace);
        }
    }

    /// Rows waiting.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Forgets what was read of `partitions` (taken by another member: it reads them again
    /// from the stored positions).
    pub fn forget(&mut self, partitions: &[TopicPartition]) {
        for partition in partitions {
            if let Some(read) = self.partitions.remove(partition) {
                self.rows -= read.trades.len() + read.bars.len();
            }
        }
    }

    /// Takes the write out, leaving it empty: the rows of the partitions in `stored` (the ones
    /// owned, with the position the store holds), each moved from there to the next offset
    /// read. Rows of partitions not owned are dropped.
    pub fn take(&mut self, stored: &BTreeMap<TopicPartition, Option<i64>>) -> StoreBatch {
        let mut batch = StoreBatch {
            links: std::mem::take(&mut self.links),
            ..StoreBatch::default()
        };
        for (partition, read) in std::mem::take(&mut self.partitions) {
            let Some(&from) = stored.get(&partition) else {
                continue;
            };
            batch.trades.extend(read.trades);
            batch.bars.extend(read.bars);
            if from != Some(read.next) {
                batch.positions.push(PositionMove {
                    source: partition,
                    from,
                    to: read.next,
                });
            }
        }
        self.rows = 0;
        batch
    }
}
