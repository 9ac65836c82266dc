//! One instrument's trades in `[from, to)`, page by page, in `trade_seq` order.
//!
//! Paging is by time (`get_last_trades_by_instrument_and_time`, ascending): the next page starts
//! at the last page's latest timestamp, since more trades may share it, and what was seen is
//! dropped by `trade_seq`. A full page all on one timestamp cannot move the time cursor (more
//! than [`PAGE_SIZE`] trades share it), so paging goes on by `trade_seq` from the last one seen
//! until it passes that timestamp (Deribit's own advice for gapless history). A gap in
//! `trade_seq` between two trades handed out is closed by sequence before the later trade goes
//! out; what Deribit no longer has is counted and logged. The [`Cursor`] after each chunk is all
//! a resumed run needs.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::error::FetchError;
use super::page::{FetchedTrade, Page};

/// Trades asked for per request (Deribit's maximum).
pub const PAGE_SIZE: u64 = 1000;

/// Where Deribit's history is read from: the WebSocket client, or a fake in tests.
pub trait TradeSource {
    /// Up to [`PAGE_SIZE`] trades of `instrument` with `start_ms ≤ timestamp ≤ end_ms`, oldest
    /// first (`get_last_trades_by_instrument_and_time`).
    fn by_time(
        &mut self,
        instrument: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> impl Future<Output = Result<Page, FetchError>> + Send;

    /// Up to [`PAGE_SIZE`] trades of `instrument` from `start_seq` (to `end_seq` if given),
    /// in `trade_seq` order (`get_last_trades_by_instrument`).
    fn by_seq(
        &mut self,
        instrument: &str,
        start_seq: u64,
        end_seq: Option<u64>,
    ) -> impl Future<Output = Result<Page, FetchError>> + Send;
}

/// How far one instrument is done: enough to resume it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The next time page starts here (ms); 0 before the first page (the range's start then).
    pub next_ts: i64,
    /// The last `trade_seq` handed out.
    pub last_seq: Option<u64>,
    /// Paging by `trade_seq` (more than a page of trades on `next_ts`).
    pub by_seq: bool,
    /// Nothing more in the range.
    pub done: bool,
}

/// What one step handed out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// New trades in `trade_seq` order, holes before them closed where Deribit could.
    pub trades: Vec<FetchedTrade>,
    /// Trades skipped: invalid, or another instrument's.
    pub skipped: u64,
    /// `trade_seq` values in holes Deribit did not return.
    pub unfillable: u64,
    /// Requests it took.
    pub requests: u64,
}

/// Pages one instrument's trades in `[from_ms, to_ms)`.
#[derive(Debug, Clone)]
pub struct InstrumentPager {
    instrument: String,
    from_ms: i64,
    to_ms: i64,
    cursor: Cursor,
}

impl InstrumentPager {
    /// Starts `instrument` at `from_ms`, or resumes it at `cursor`.
    pub fn new(instrument: &str, from_ms: i64, to_ms: i64, cursor: Cursor) -> Self {
        let mut cursor = cursor;
        cursor.next_ts = cursor.next_ts.max(from_ms);
        InstrumentPager {
            instrument: instrument.to_owned(),
            from_ms,
            to_ms,
            cursor,
        }
    }

    /// Where it stands: saved after each chunk is written.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Whether the range is done.
    pub fn is_done(&self) -> bool {
        self.cursor.done || self.from_ms >= self.to_ms
    }

    /// The next chunk (empty once done).
    ///
    /// # Errors
    /// The source's error; the cursor is then unchanged, so the step can be repeated.
    pub async fn next_chunk<S: TradeSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Chunk, FetchError> {
        if self.is_done() {
            self.cursor.done = true;
            return Ok(Chunk::default());
        }
        let mut chunk = Chunk::default();
        let mut cursor = self.cursor;
        let page = if cursor.by_seq {
            let start = cursor.last_seq.map_or(1, |s| s.saturating_add(1));
            source.by_seq(&self.instrument, start, None).await?
        } else {
            source
                .by_time(&self.instrument, cursor.next_ts, self.to_ms - 1)
                .await?
        };
        chunk.requests += 1;
        chunk.skipped += page.rejected;
        let latest = page.trades.iter().map(|t| t.trade.timestamp).max();
        let passed_end = page.trades.iter().any(|t| t.trade.timestamp >= self.to_ms);
        let fresh = self.accept(page.trades, cursor.last_seq, &mut chunk.skipped);
        self.close_holes(fresh, &mut cursor, &mut chunk, source)
            .await?;
        match latest {
            _ if !page.has_more => cursor.done = true,
            _ if cursor.by_seq && passed_end => cursor.done = true,
            // A page of nothing usable that says there is more cannot move a cursor.
            None => {
                warn!(instrument = %self.instrument, "A history page said has_more without a trade; taking the instrument as done.");
                cursor.done = true;
            }
            Some(latest) if latest > cursor.next_ts => {
                cursor.next_ts = latest;
                cursor.by_seq = false;
            }
            Some(_) if cursor.last_seq.is_some() => cursor.by_seq = true,
            Some(_) => cursor.done = true,
        }
        self.cursor = cursor;
        Ok(chunk)
    }

    /// This instrument's trades in the range and after `last_seq`, in `trade_seq` order, once
    /// each; another instrument's counted in `skipped`.
    fn accept(
        &self,
        trades: Vec<FetchedTrade>,
        last_seq: Option<u64>,
        skipped: &mut u64,
    ) -> Vec<FetchedTrade> {
        let mut kept: Vec<FetchedTrade> = Vec::with_capacity(trades.len());
        for t in trades {
            if t.trade.instrument_name != self.instrument {
                *skipped += 1;
            } else if (self.from_ms..self.to_ms).contains(&t.trade.timestamp)
                && last_seq.is_none_or(|last| t.trade.trade_seq > last)
            {
                kept.push(t);
            }
            // A page by sequence runs on past the range's end: not a fault, not counted.
        }
        kept.sort_by_key(|t| t.trade.trade_seq);
        kept.dedup_by_key(|t| t.trade.trade_seq);
        kept
    }

    /// Hands `fresh` out in order, each hole in `trade_seq` before a trade filled by sequence
    /// first.
    async fn close_holes<S: TradeSource>(
        &self,
        fresh: Vec<FetchedTrade>,
        cursor: &mut Cursor,
        chunk: &mut Chunk,
        source: &mut S,
    ) -> Result<(), FetchError> {
        for trade in fresh {
            let seq = trade.trade.trade_seq;
            if let Some(last) = cursor.last_seq
                && seq > last.saturating_add(1)
            {
                self.fill(last + 1, seq - 1, chunk, source).await?;
            }
            cursor.last_seq = Some(seq);
            chunk.trades.push(trade);
        }
        Ok(())
    }

    /// Fetches `first..=last` by sequence into `chunk`; what Deribit does not return is counted.
    async fn fill<S: TradeSource>(
        &self,
        first: u64,
        last: u64,
        chunk: &mut Chunk,
        source: &mut S,
    ) -> Result<(), FetchError> {
        let mut next = first;
        while next <= last {
            let page = source.by_seq(&self.instrument, next, Some(last)).await?;
            chunk.requests += 1;
            chunk.skipped += page.rejected;
            let has_more = page.has_more;
            let mut found = self.accept(page.trades, Some(next - 1), &mut chunk.skipped);
            found.retain(|t| t.trade.trade_seq <= last);
            let Some(end) = found.last().map(|t| t.trade.trade_seq) else {
                break;
            };
            for t in found {
                let seq = t.trade.trade_seq;
                if seq > next {
                    self.unfillable(next, seq - 1, chunk);
                }
                next = seq + 1;
                chunk.trades.push(t);
            }
            if !has_more || end >= last {
                break;
            }
        }
        if next <= last {
            self.unfillable(next, last, chunk);
        }
        Ok(())
    }

    fn unfillable(&self, first: u64, last: u64, chunk: &mut Chunk) {
        chunk.unfillable += last - first + 1;
        warn!(instrument = %self.instrument, from_seq = first, to_seq = last, "Deribit's history lacks these trades; the hole stays.");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Deribit's history of instrument `X` in memory: (trade_seq, timestamp), some trades
    /// missing from the time index only, some missing altogether.
    #[derive(Default)]
    struct Memory {
        trades: Vec<(u64, i64)>,
        hidden_from_time: HashSet<u64>,
        lost: HashSet<u64>,
        requests: u64,
    }

    fn fetched(seq: u64, ts: i64) -> FetchedTrade {
        FetchedTrade {
            trade: domain::testing::trade("X", seq, ts, 100.0, 1.0),
            line: format!("{seq}"),
        }
    }

    impl Memory {
        fn page(&mut self, keep: impl Fn(u64, i64) -> bool) -> Page {
            self.requests += 1;
            let matching: Vec<FetchedTrade> = self
                .trades
                .iter()
                .filter(|(seq, ts)| !self.lost.contains(seq) && keep(*seq, *ts))
                .map(|(seq, ts)| fetched(*seq, *ts))
                .collect();
            let page = usize::try_from(PAGE_SIZE).unwrap();
            let has_more = matching.len() > page;
            Page {
                trades: matching.into_iter().take(page).collect(),
                has_more,
                rejected: 0,
            }
        }
    }

    impl TradeSource for Memory {
        async fn by_time(&mut self, _: &str, start: i64, end: i64) -> Result<Page, FetchError> {
            let hidden = self.hidden_from_time.clone();
            Ok(self.page(|seq, ts| (start..=end).contains(&ts) && !hidden.contains(&seq)))
        }

        async fn by_seq(
            &mut self,
            _: &str,
            start: u64,
            end: Option<u64>,
        ) -> Result<Page, FetchError> {
            Ok(self.page(|seq, _| seq >= start && end.is_none_or(|e| seq <= e)))
        }
    }

    /// Seqs 1..: 10 on ts 100, 2500 on ts 200, 1500 on ts 300 (one each), 5 on ts 400.
    fn market() -> Memory {
        let mut trades = Vec::new();
        let mut seq = 0;
        let mut push = |ts: i64, n: u64, step: i64| {
            for i in 0..n {
                seq += 1;
                trades.push((seq, ts + i64::try_from(i).unwrap() * step));
            }
        };
        push(100, 10, 0);
        push(200, 2500, 0);
        push(300, 1500, 1);
        push(5_000, 5, 0);
        Memory {
            trades,
            ..Memory::default()
        }
    }

    async fn run(source: &mut Memory, from: i64, to: i64, cursor: Cursor) -> (Vec<u64>, Chunk) {
        let mut pager = InstrumentPager::new("X", from, to, cursor);
        let mut total = Chunk::default();
        let mut seqs = Vec::new();
        while !pager.is_done() {
            let chunk = pager.next_chunk(source).await.unwrap();
            seqs.extend(chunk.trades.iter().map(|t| t.trade.trade_seq));
            total.unfillable += chunk.unfillable;
            total.requests += chunk.requests;
            total.skipped += chunk.skipped;
        }
        (seqs, total)
    }

    #[tokio::test]
    async fn pages_past_more_than_a_page_of_trades_on_one_timestamp() {
        let mut source = market();
        let (seqs, chunk) = run(&mut source, 100, 5_000, Cursor::default()).await;
        assert_eq!(
            seqs,
            (1..=4010).collect::<Vec<u64>>(),
            "every trade once, in order"
        );
        assert_eq!(chunk.unfillable, 0);
        assert!(chunk.requests <= 10, "{} requests", chunk.requests);
        // The crowd at ts 200 ends the range: no later trade reveals what a time cursor skipped.
        let (seqs, chunk) = run(&mut market(), 100, 201, Cursor::default()).await;
        assert_eq!(seqs, (1..=2510).collect::<Vec<u64>>(), "the whole crowd");
        assert_eq!(chunk.unfillable, 0);
        // The range is half-open: `to` excludes ts 5000, `from` includes ts 100.
        let (seqs, _) = run(&mut market(), 101, 5_001, Cursor::default()).await;
        assert_eq!(seqs.first(), Some(&11));
        assert_eq!(seqs.last(), Some(&4015));
    }

    #[tokio::test]
    async fn holes_in_the_time_index_are_closed_by_sequence() {
        let mut source = market();
        source.hidden_from_time = [5, 1200, 3000, 3001, 4009].into();
        source.lost = [2500, 4005].into();
        let (seqs, chunk) = run(&mut source, 100, 5_000, Cursor::default()).await;
        let want: Vec<u64> = (1..=4010).filter(|s| ![2500, 4005].contains(s)).collect();
        assert_eq!(seqs, want, "hidden trades recovered in place");
        assert_eq!(chunk.unfillable, 2, "lost ones counted");
    }

    #[tokio::test]
    async fn a_resumed_pager_continues_where_the_cursor_stands() {
        let whole = run(&mut market(), 100, 5_000, Cursor::default()).await.0;
        for stop_after in 1..6 {
            let mut source = market();
            let mut pager = InstrumentPager::new("X", 100, 5_000, Cursor::default());
            let mut seqs = Vec::new();
            for _ in 0..stop_after {
                let chunk = pager.next_chunk(&mut source).await.unwrap();
                seqs.extend(chunk.trades.iter().map(|t| t.trade.trade_seq));
            }
            let rest = run(&mut source, 100, 5_000, pager.cursor()).await.0;
            seqs.extend(rest);
            assert_eq!(seqs, whole, "stopped after {stop_after} chunks");
        }
    }
}
