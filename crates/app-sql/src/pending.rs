//! The rows read since the last write, and the positions they bring each partition to.

use std::collections::BTreeMap;

use ports::{PositionMove, Row, SourceRecord, StoreBatch, TopicPartition, TraceContext};

/// Trace contexts linked from one write's span, at most.
pub const MAX_LINKS: usize = 32;

/// What the next write will hold.
#[derive(Debug, Default)]
pub struct Pending {
    batch: StoreBatch,
    /// Next offset per partition read since the last write.
    next: BTreeMap<TopicPartition, i64>,
}

impl Pending {
    /// Adds a record's row (if it has one) and moves its partition's position past it.
    pub fn add(&mut self, record: SourceRecord) {
        match record.row {
            Row::Trade(trade) => self.batch.trades.push(trade),
            Row::Bar(bar) => self.batch.bars.push(bar),
            Row::Nothing => {}
        }
        self.next.insert(record.source, record.offset + 1);
        self.link(record.trace);
    }

    /// One notification's records share a context: linked once.
    fn link(&mut self, trace: Option<TraceContext>) {
        if let Some(trace) = trace
            && self.batch.links.len() < MAX_LINKS
            && !self.batch.links.contains(&trace)
        {
            self.batch.links.push(trace);
        }
    }

    /// Rows waiting.
    pub fn rows(&self) -> usize {
        self.batch.trades.len() + self.batch.bars.len()
    }

    /// Takes the write out, leaving it empty: the rows, and each partition moved from the
    /// position the store holds (`stored`) to the next offset read.
    pub fn take(&mut self, stored: &BTreeMap<TopicPartition, Option<i64>>) -> StoreBatch {
        let next = std::mem::take(&mut self.next);
        let mut batch = std::mem::take(&mut self.batch);
        batch.positions = next
            .into_iter()
            .filter_map(|(partition, to)| {
                let from = *stored.get(&partition)?;
                (from != Some(to)).then_some(PositionMove {
                    source: partition,
                    from,
                    to,
                })
            })
            .collect();
        batch
    }
}
