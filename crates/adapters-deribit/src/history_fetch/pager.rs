//! One instrument's trades in `[from, to)`, page by page, in `trade_seq` order.
//!
//! Paging is by time (`get_last_trades_by_instrument_and_time`, ascending): the next page starts
//! at the last page's latest timestamp, since more trades may share it, and what was seen is
//! dropped by `trade_seq`. A full page all on one timestamp cannot move the time cursor (more
//! than [`PAGE_SIZE`] trades share it), so paging goes on by `trade_seq` from the last one seen
//! until it passes that timestamp (Deribit's own advice for gapless history).
//!
//! The time index may lack trades that Deribit has by sequence. Between two trades seen, a gap
//! in `trade_seq` is a [`Hole`] closed by sequence, a page per step, before the later trade goes
//! out. At the range's edges no later or earlier trade reveals such a gap, so: before the first
//! trade seen, the sequence is read backwards a page at a time (`start_seq`/`end_seq` ranges)
//! while its trades stay in the range, and what it finds is filled as a hole; after the time
//! index is exhausted, paging goes on by sequence from the last trade while trades are before
//! `to`. What Deribit no longer has is counted and logged. Every step hands out at most a page,
//! and the [`Cursor`] after it (a half-filled hole included) is all a resumed run needs.
//! An instrument none of whose trades in the range is in the time index has no trade to start
//! from and yields nothing.

use std::collections::VecDeque;
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

/// A gap in `trade_seq` being filled by sequence: `next..=last` are still to be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole {
    /// The next `trade_seq` to ask for.
    pub next: u64,
    /// The hole's last `trade_seq`.
    pub last: u64,
}

/// How far one instrument is done: enough to resume it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The next time page starts here (ms); 0 before the first page (the range's start then).
    pub next_ts: i64,
    /// The last `trade_seq` handed out.
    pub last_seq: Option<u64>,
    /// Paging by `trade_seq` (more than a page of trades on `next_ts`, or [`Cursor::tail`]).
    pub by_seq: bool,
    /// Nothing more in the range.
    pub done: bool,
    /// The time index is exhausted: on by sequence while trades are before the range's end.
    #[serde(default)]
    pub tail: bool,
    /// The sequence before the first trade seen has been searched for trades in the range.
    #[serde(default)]
    pub looked_back: bool,
    /// A hole being filled; the page that revealed it is fetched again after it on a resume.
    #[serde(default)]
    pub hole: Option<Hole>,
}

/// Where paging goes once a page's trades are all out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Next {
    next_ts: i64,
    by_seq: bool,
    tail: bool,
    done: bool,
}

/// What one step handed out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// New trades in `trade_seq` order (at most a page), holes before them closed where
    /// Deribit could.
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
    /// The current page's trades not handed out yet (waiting behind a hole); in memory only:
    /// the cursor still points at that page, so a resume fetches it again.
    pending: VecDeque<FetchedTrade>,
    /// Where paging goes once `pending` is out; `None` when no page is under way.
    after: Option<Next>,
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
            pending: VecDeque::new(),
            after: None,
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

    /// The next chunk (empty once done): a page of a hole, or a page's trades up to the next
    /// hole; at most one page of trades.
    ///
    /// # Errors
    /// The source's error (the cursor is then unchanged, so the step can be repeated);
    /// [`FetchError::Unpageable`] for a page that says `has_more` without a valid trade.
    pub async fn next_chunk<S: TradeSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Chunk, FetchError> {
        let mut chunk = Chunk::default();
        if self.is_done() {
            self.cursor.done = true;
            return Ok(chunk);
        }
        if let Some(hole) = self.cursor.hole {
            self.fill_page(hole, &mut chunk, source).await?;
            return Ok(chunk);
        }
        if self.after.is_none() {
            self.fetch_page(&mut chunk, source).await?;
        }
        if !self.cursor.looked_back
            && self.cursor.last_seq.is_none()
            && let Some(first) = self.pending.front().map(|t| t.trade.trade_seq)
        {
            let lowest = self.look_back(first, &mut chunk, source).await?;
            self.cursor.looked_back = true;
            if let Some(lowest) = lowest {
                self.cursor.hole = Some(Hole {
                    next: lowest,
                    last: first - 1,
                });
                return Ok(chunk);
            }
        }
        self.hand_out(&mut chunk);
        Ok(chunk)
    }

    /// Fetches the page the cursor points at into `pending`, and where paging goes after it.
    async fn fetch_page<S: TradeSource>(
        &mut self,
        chunk: &mut Chunk,
        source: &mut S,
    ) -> Result<(), FetchError> {
        let cursor = self.cursor;
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
        if page.trades.is_empty() && page.has_more {
            // Nothing usable cannot move a cursor, and taking it as the end would lose the rest.
            return Err(FetchError::Unpageable {
                instrument: self.instrument.clone(),
                rejected: page.rejected,
            });
        }
        let latest = page.trades.iter().map(|t| t.trade.timestamp).max();
        let passed_end = page.trades.iter().any(|t| t.trade.timestamp >= self.to_ms);
        let fresh = self.accept(page.trades, cursor.last_seq, &mut chunk.skipped);
        let seen = cursor.last_seq.is_some() || !fresh.is_empty();
        let mut next = Next {
            next_ts: cursor.next_ts,
            by_seq: cursor.by_seq,
            tail: cursor.tail,
            done: false,
        };
        let moved = latest.filter(|&latest| latest > cursor.next_ts);
        if cursor.by_seq {
            if passed_end || !page.has_more {
                next.done = true;
            } else if fresh.is_empty() {
                // Nothing of this instrument in the range after the last trade: it cannot move.
                warn!(instrument = %self.instrument, "A page by sequence had nothing to hand out; taking the instrument as done.");
                next.done = true;
            } else if let Some(latest) = moved.filter(|_| !cursor.tail) {
                // Past the crowded timestamp: back to paging by time.
                next.next_ts = latest;
                next.by_seq = false;
            }
        } else if !page.has_more {
            // The time index has no more; the range's last trades may still be missing from
            // it: on by sequence from the last one seen.
            next.tail = seen;
            next.by_seq = seen;
            next.done = !seen;
        } else if let Some(latest) = moved {
            next.next_ts = latest;
        } else if seen {
            next.by_seq = true;
        } else {
            next.done = true;
        }
        self.pending = fresh.into();
        self.after = Some(next);
        Ok(())
    }

    /// Hands `pending` out in order up to the next hole; once all is out, paging moves on.
    fn hand_out(&mut self, chunk: &mut Chunk) {
        while let Some(seq) = self.pending.front().map(|t| t.trade.trade_seq) {
            if let Some(last) = self.cursor.last_seq
                && seq > last.saturating_add(1)
            {
                self.cursor.hole = Some(Hole {
                    next: last + 1,
                    last: seq - 1,
                });
                return;
            }
            if let Some(trade) = self.pending.pop_front() {
                self.cursor.last_seq = Some(seq);
                chunk.trades.push(trade);
            }
        }
        if let Some(next) = self.after.take() {
            self.cursor.next_ts = next.next_ts;
            self.cursor.by_seq = next.by_seq;
            self.cursor.tail = next.tail;
            self.cursor.done = next.done;
        }
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

    /// One page of `hole` by sequence, handed out; what Deribit does not return is counted.
    async fn fill_page<S: TradeSource>(
        &mut self,
        hole: Hole,
        chunk: &mut Chunk,
        source: &mut S,
    ) -> Result<(), FetchError> {
        let page = source
            .by_seq(&self.instrument, hole.next, Some(hole.last))
            .await?;
        chunk.requests += 1;
        chunk.skipped += page.rejected;
        let mut found = self.accept(page.trades, hole.next.checked_sub(1), &mut chunk.skipped);
        found.retain(|t| t.trade.trade_seq <= hole.last);
        let any = !found.is_empty();
        let mut next = hole.next;
        for t in found {
            let seq = t.trade.trade_seq;
            if seq > next {
                self.unfillable(next, seq - 1, chunk);
            }
            next = seq + 1;
            self.cursor.last_seq = Some(seq);
            chunk.trades.push(t);
        }
        if next > hole.last || !page.has_more || !any {
            if next <= hole.last {
                self.unfillable(next, hole.last, chunk);
            }
            // Settled: every seq of the hole is out or counted.
            self.cursor.last_seq = Some(hole.last);
            self.cursor.hole = None;
        } else {
            self.cursor.hole = Some(Hole {
                next,
                last: hole.last,
            });
        }
        Ok(())
    }

    /// The lowest `trade_seq` below `first` (the first trade the time index gave) down to which
    /// every trade is in the range: trades at the range's start missing from the time index.
    /// Reads the sequence backwards a page at a time, on only while a whole page is in range.
    async fn look_back<S: TradeSource>(
        &self,
        first: u64,
        chunk: &mut Chunk,
        source: &mut S,
    ) -> Result<Option<u64>, FetchError> {
        let mut lowest = None;
        let mut end = first.saturating_sub(1);
        while end >= 1 {
            let start = end.saturating_sub(PAGE_SIZE - 1).max(1);
            let page = source.by_seq(&self.instrument, start, Some(end)).await?;
            chunk.requests += 1;
            // Invalid trades are counted when the fill fetches them again.
            let mut below: Vec<(u64, i64)> = page
                .trades
                .iter()
                .filter(|t| {
                    t.trade.instrument_name == self.instrument
                        && (start..=end).contains(&t.trade.trade_seq)
                })
                .map(|t| (t.trade.trade_seq, t.trade.timestamp))
                .collect();
            below.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
            if below.is_empty() {
                break;
            }
            for (seq, timestamp) in below {
                if !(self.from_ms..self.to_ms).contains(&timestamp) {
                    return Ok(lowest);
                }
                lowest = Some(seq);
            }
            end = start - 1;
        }
        Ok(lowest)
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
        /// Time pages say `has_more` and hold only this many invalid trades.
        stuck: Option<u64>,
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
            if let Some(rejected) = self.stuck {
                return Ok(Page {
                    trades: Vec::new(),
                    has_more: true,
                    rejected,
                });
            }
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
            assert!(
                chunk.trades.len() as u64 <= PAGE_SIZE,
                "a chunk of {} trades: at most a page is held before it is written",
                chunk.trades.len()
            );
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
    async fn trades_at_the_edges_missing_from_the_time_index_are_found_by_sequence() {
        // [100, 5000) is seqs 1..=4010: the first two (ts 100) and the last two (ts 1798,
        // 1799) are missing from the time index; no trade seen before or after reveals them.
        let mut source = market();
        source.hidden_from_time = [1, 2, 4009, 4010].into();
        let (seqs, chunk) = run(&mut source, 100, 5_000, Cursor::default()).await;
        assert_eq!(
            seqs,
            (1..=4010).collect::<Vec<u64>>(),
            "the edges recovered"
        );
        assert_eq!(chunk.unfillable, 0);
        // [101, 5001) is seqs 11..=4015: looking back stops at seq 10 (ts 100, before the
        // range); going on by sequence stops at the record's end.
        let mut source = market();
        source.hidden_from_time = [11, 12, 4015].into();
        let (seqs, _) = run(&mut source, 101, 5_001, Cursor::default()).await;
        assert_eq!(seqs, (11..=4015).collect::<Vec<u64>>(), "nothing outside");
        // [300, 1800) is seqs 2511..=4010: the first 1190 are missing from the time index,
        // more than a page to look back over and to fill.
        let mut source = market();
        source.hidden_from_time = (2511..=3700).chain([4010]).collect();
        let (seqs, chunk) = run(&mut source, 300, 1_800, Cursor::default()).await;
        assert_eq!(seqs, (2511..=4010).collect::<Vec<u64>>());
        assert_eq!(chunk.unfillable, 0);
        // Lost at the edges (Deribit has them by neither index): counted where revealed.
        let mut source = market();
        source.hidden_from_time = [2511, 4009].into();
        source.lost = [2512, 4010].into();
        let (seqs, chunk) = run(&mut source, 300, 1_800, Cursor::default()).await;
        let want: Vec<u64> = (2511..=4009).filter(|s| *s != 2512).collect();
        assert_eq!(seqs, want);
        assert_eq!(chunk.unfillable, 1, "the lost one between two found");
    }

    #[tokio::test]
    async fn a_page_that_says_has_more_without_a_valid_trade_is_an_error_not_the_end() {
        let mut source = market();
        source.stuck = Some(3);
        let mut pager = InstrumentPager::new("X", 100, 5_000, Cursor::default());
        let error = pager.next_chunk(&mut source).await.unwrap_err();
        assert_eq!(
            error,
            FetchError::Unpageable {
                instrument: "X".into(),
                rejected: 3
            }
        );
        assert!(!pager.is_done());
    }

    #[tokio::test]
    async fn a_resumed_pager_continues_where_the_cursor_stands() {
        // A hole of 1301 trades between two seen ones, and 1190 at the range's start.
        let source = || {
            let mut source = market();
            source.hidden_from_time = (2600..=3900).chain(11..=1200).collect();
            source
        };
        let whole = run(&mut source(), 100, 5_000, Cursor::default()).await.0;
        assert_eq!(whole, (1..=4010).collect::<Vec<u64>>());
        let mut half_filled = 0;
        for stop_after in 1..20 {
            let mut source = source();
            let mut pager = InstrumentPager::new("X", 100, 5_000, Cursor::default());
            let mut seqs = Vec::new();
            for _ in 0..stop_after {
                let chunk = pager.next_chunk(&mut source).await.unwrap();
                seqs.extend(chunk.trades.iter().map(|t| t.trade.trade_seq));
            }
            let cursor = pager.cursor();
            if cursor.hole.is_some_and(|h| h.next > 2600) {
                half_filled += 1;
            }
            // Through the progress file, as a resumed run reads it.
            let saved: Cursor =
                serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
            let rest = run(&mut source, 100, 5_000, saved).await.0;
            seqs.extend(rest);
            assert_eq!(
                seqs, whole,
                "stopped after {stop_after} chunks at {cursor:?}"
            );
        }
        assert!(half_filled > 0, "some stop fell inside a half-filled hole");
    }
}
