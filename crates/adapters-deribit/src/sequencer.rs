//! Per-instrument ordering: every trade handed out once, in strictly increasing `trade_seq`.
//!
//! A pure state machine; the session feeds it live trades, backfill pages and failures, and
//! sends the [`BackfillRequest`]s it asks for. Per instrument it is either *live* (trades pass
//! straight through, `seq ≤ last` dropped) or *backfilling* (a hole `[last+1, …]` is being
//! fetched; live trades are held back and released in order once the hole is filled).
//! A hole the exchange cannot fill is reported as an [`UnfilledGap`], never skipped silently.
//! Held trades are bounded per instrument; beyond the bound they are not kept but fetched again
//! from history, so memory stays bounded and nothing is lost.

use std::collections::{BTreeMap, HashMap};

use domain::Trade;
use ports::{Position, StartPositions};

/// Deribit returns at most this many trades per history request.
pub const MAX_PAGE: u32 = 1000;

/// How often a hole that history did not fill is asked for again before it is reported.
const HOLE_ATTEMPTS: u32 = 3;

/// Ask the exchange for `instrument`'s trades from `start_seq` (through `end_seq`, if set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    /// Instrument to fetch.
    pub instrument: String,
    /// First `trade_seq` wanted.
    pub start_seq: u64,
    /// Last `trade_seq` wanted; `None` = up to now.
    pub end_seq: Option<u64>,
}

/// A range of trades that could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfilledGap {
    /// Instrument.
    pub instrument: String,
    /// First missing `trade_seq`.
    pub from_seq: u64,
    /// Last missing `trade_seq`.
    pub to_seq: u64,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Sequenced {
    /// Trades to hand out, in order per instrument.
    pub ready: Vec<Trade>,
    /// History requests to send.
    pub requests: Vec<BackfillRequest>,
    /// Holes that could not be filled.
    pub gaps: Vec<UnfilledGap>,
    /// Trades dropped because their `trade_seq` was already handed out.
    pub duplicates: u64,
    /// Holes detected (a trade arrived with `seq > last + 1`).
    pub gaps_detected: u64,
    /// Detected holes closed completely from history.
    pub gaps_filled: u64,
    /// Trades that came from history (backfill pages or discovery).
    pub backfilled: u64,
}

#[derive(Debug)]
enum Mode {
    Live,
    Backfilling {
        /// Exclusive upper end of the hole, if a held live trade bounds it.
        until: Option<u64>,
        /// Live trades waiting for the hole to close, by seq.
        held: BTreeMap<u64, Trade>,
        /// Requests for this hole so far.
        attempts: u32,
        /// Live trades arrived beyond the bound and were not kept: fetch them after the hole.
        shed: bool,
        /// Started because a live trade showed a hole (not a recovery after reconnect).
        detected: bool,
    },
}

#[derive(Debug)]
struct InstrumentSeq {
    last: Option<Position>,
    mode: Mode,
}

/// The sequencer of one feed. See the module docs.
#[derive(Debug)]
pub struct Sequencer {
    instruments: HashMap<String, InstrumentSeq>,
    max_held: usize,
}

impl Sequencer {
    /// A sequencer holding back at most `max_held` live trades per instrument while it backfills.
    pub fn new(max_held: usize) -> Self {
        Sequencer {
            instruments: HashMap::new(),
            max_held: max_held.max(1),
        }
    }

    /// Starts from known positions: trades at or before them are duplicates.
    pub fn seed(&mut self, positions: &StartPositions) {
        for (instrument, &position) in positions {
            let entry = self
                .instruments
                .entry(instrument.clone())
                .or_insert(InstrumentSeq {
                    last: None,
                    mode: Mode::Live,
                });
            if entry
                .last
                .is_none_or(|last| last.trade_seq < position.trade_seq)
            {
                entry.last = Some(position);
            }
        }
    }

    /// The last handed-out position of every instrument.
    pub fn positions(&self) -> StartPositions {
        self.instruments
            .iter()
            .filter_map(|(name, seq)| seq.last.map(|p| (name.clone(), p)))
            .collect()
    }

    /// Whether `instrument` has a known position.
    pub fn knows(&self, instrument: &str) -> bool {
        self.instruments
            .get(instrument)
            .is_some_and(|s| s.last.is_some())
    }

    /// Whether any instrument is waiting for history.
    pub fn is_backfilling(&self) -> bool {
        self.instruments
            .values()
            .any(|s| matches!(s.mode, Mode::Backfilling { .. }))
    }

    /// Live trades (per instrument in `trade_seq` order, as Deribit guarantees).
    pub fn on_live(&mut self, trades: Vec<Trade>) -> Sequenced {
        let mut out = Sequenced::default();
        for trade in trades {
            self.live_one(trade, &mut out);
        }
        out
    }

    fn live_one(&mut self, trade: Trade, out: &mut Sequenced) {
        let max_held = self.max_held;
        let state = self
            .instruments
            .entry(trade.instrument_name.clone())
            .or_insert(InstrumentSeq {
                last: None,
                mode: Mode::Live,
            });
        let Some(last) = state.last else {
            // First sight of an instrument: nothing before it is ours to deliver.
            state.last = Some(position_of(&trade));
            out.ready.push(trade);
            return;
        };
        if trade.trade_seq <= last.trade_seq {
            out.duplicates += 1;
            return;
        }
        match &mut state.mode {
            Mode::Backfilling { held, shed, .. } => {
                if held.contains_key(&trade.trade_seq) {
                    out.duplicates += 1;
                } else if held.len() < max_held {
                    held.insert(trade.trade_seq, trade);
                } else {
                    // Not kept: fetched again from history once the hole is closed.
                    *shed = true;
                }
            }
            Mode::Live if trade.trade_seq == last.trade_seq + 1 => {
                state.last = Some(position_of(&trade));
                out.ready.push(trade);
            }
            Mode::Live => {
                out.gaps_detected += 1;
                let hole_end = trade.trade_seq;
                out.requests.push(BackfillRequest {
                    instrument: trade.instrument_name.clone(),
                    start_seq: last.trade_seq + 1,
                    end_seq: Some(hole_end - 1),
                });
                let mut held = BTreeMap::new();
                held.insert(trade.trade_seq, trade);
                state.mode = Mode::Backfilling {
                    until: Some(hole_end),
                    held,
                    attempts: 1,
                    shed: false,
                    detected: true,
                };
            }
        }
    }

    /// Starts fetching everything after the known position of `instrument` (after a reconnect or
    /// a restart); its live trades are held until the history is in. `None` if the instrument
    /// has no position or is already backfilling.
    pub fn backfill_from_last(&mut self, instrument: &str) -> Option<BackfillRequest> {
        let state = self.instruments.get_mut(instrument)?;
        let last = state.last?;
        if matches!(state.mode, Mode::Backfilling { .. }) {
            return None;
        }
        state.mode = Mode::Backfilling {
            until: None,
            held: BTreeMap::new(),
            attempts: 1,
            shed: false,
            detected: false,
        };
        Some(BackfillRequest {
            instrument: instrument.to_owned(),
            start_seq: last.trade_seq + 1,
            end_seq: None,
        })
    }

    /// One page of history for `instrument` (ascending `trade_seq`), with Deribit's `has_more`.
    pub fn on_backfill_page(
        &mut self,
        instrument: &str,
        page: Vec<Trade>,
        has_more: bool,
    ) -> Sequenced {
        let mut out = Sequenced::default();
        let Some(state) = self.instruments.get_mut(instrument) else {
            return out;
        };
        let Mode::Backfilling { until, .. } = &state.mode else {
            // A late answer to a backfill that already ended: its trades are handed out already
            // or will be detected as a gap by the next live trade.
            return out;
        };
        let until = *until;
        for trade in page {
            if trade.instrument_name != instrument {
                continue;
            }
            let last = state.last.map_or(0, |p| p.trade_seq);
            if trade.trade_seq <= last {
                out.duplicates += 1;
                continue;
            }
            if until.is_some_and(|u| trade.trade_seq >= u) {
                break; // the held live trades take it from here
            }
            if trade.trade_seq > last + 1 {
                // History itself lacks these: they cannot be recovered.
                out.gaps.push(UnfilledGap {
                    instrument: instrument.to_owned(),
                    from_seq: last + 1,
                    to_seq: trade.trade_seq - 1,
                });
            }
            state.last = Some(position_of(&trade));
            out.backfilled += 1;
            out.ready.push(trade);
        }
        let last = state.last.map_or(0, |p| p.trade_seq);
        let hole_open = until.is_none_or(|u| last + 1 < u);
        if has_more && hole_open {
            out.requests.push(BackfillRequest {
                instrument: instrument.to_owned(),
                start_seq: last + 1,
                end_seq: until.map(|u| u - 1),
            });
            return out;
        }
        self.finish_backfill(instrument, &mut out);
        out
    }

    /// The history request for `instrument` failed for good: report the hole, release held trades.
    pub fn on_backfill_failed(&mut self, instrument: &str) -> Sequenced {
        let mut out = Sequenced::default();
        if let Some(state) = self.instruments.get_mut(instrument)
            && let Mode::Backfilling { attempts, .. } = &mut state.mode
        {
            *attempts = HOLE_ATTEMPTS;
        }
        self.finish_backfill(instrument, &mut out);
        out
    }

    /// History is exhausted: release held trades in order, or ask again for a remaining hole.
    fn finish_backfill(&mut self, instrument: &str, out: &mut Sequenced) {
        let Some(state) = self.instruments.get_mut(instrument) else {
            return;
        };
        let Mode::Backfilling {
            held,
            attempts,
            until,
            shed,
            detected,
        } = &mut state.mode
        else {
            return;
        };
        let shed = *shed;
        let mut filled = *detected;
        let last = state.last.map_or(0, |p| p.trade_seq);
        let first_held = held.keys().next().copied();
        if let Some(first) = first_held.filter(|&f| f > last + 1) {
            if *attempts < HOLE_ATTEMPTS {
                // History may lag the live feed for a moment: ask once more for the hole.
                *attempts += 1;
                *until = Some(first);
                out.requests.push(BackfillRequest {
                    instrument: instrument.to_owned(),
                    start_seq: last + 1,
                    end_seq: Some(first - 1),
                });
                return;
            }
            out.gaps.push(UnfilledGap {
                instrument: instrument.to_owned(),
                from_seq: last + 1,
                to_seq: first - 1,
            });
            filled = false;
            // Reported: continue after the hole.
            let timestamp = held.get(&first).map_or(0, |t| t.timestamp);
            state.last = Some(Position {
                trade_seq: first - 1,
                timestamp,
            });
        }
        if filled {
            out.gaps_filled += 1;
        }
        let held = std::mem::take(held);
        state.mode = Mode::Live;
        for (seq, trade) in held {
            let last = state.last.map_or(0, |p| p.trade_seq);
            if seq <= last {
                out.duplicates += 1;
                continue;
            }
            if seq > last + 1 && state.last.is_some() {
                // A hole between held trades (live trades lost while held): fetch it.
                self.restart_hole(instrument, trade, out);
                return;
            }
            state.last = Some(position_of(&trade));
            out.ready.push(trade);
        }
        if shed && let Some(request) = self.backfill_from_last(instrument) {
            out.requests.push(request);
        }
    }

    fn restart_hole(&mut self, instrument: &str, trade: Trade, out: &mut Sequenced) {
        // Re-enter the live path: it detects the hole and holds `trade` again. The held trades
        // after it were dropped, so they count as shed and are fetched after the hole.
        if let Some(state) = self.instruments.get_mut(instrument) {
            state.mode = Mode::Live;
        }
        self.live_one(trade, out);
        if let Some(state) = self.instruments.get_mut(instrument)
            && let Mode::Backfilling { shed, .. } = &mut state.mode
        {
            *shed = true;
        }
    }

    /// Trades of many instruments found by a by-currency history search (instrument discovery
    /// after an outage). Unknown instruments start at their first trade; known ones continue,
    /// with the usual gap detection.
    pub fn on_discovered(&mut self, trades: Vec<Trade>) -> Sequenced {
        let mut by_instrument: BTreeMap<String, Vec<Trade>> = BTreeMap::new();
        for trade in trades {
            by_instrument
                .entry(trade.instrument_name.clone())
                .or_default()
                .push(trade);
        }
        let mut out = Sequenced::default();
        for (_, mut trades) in by_instrument {
            trades.sort_by_key(|t| t.trade_seq);
            let before = out.ready.len();
            for trade in trades {
                self.live_one(trade, &mut out);
            }
            out.backfilled += (out.ready.len() - before) as u64;
        }
        out
    }

    /// Forgets every backfill in progress (its requests died with the connection). Held trades
    /// are dropped: the next `backfill_from_last` fetches them again from history.
    pub fn abandon_backfills(&mut self) {
        for state in self.instruments.values_mut() {
            state.mode = Mode::Live;
        }
    }

    /// Forgets that trades after `position` were handed out (they were shed downstream): the next
    /// trade of the instrument shows a hole and the shed trades are fetched again.
    pub fn rewind(&mut self, instrument: &str, position: Position) {
        if let Some(state) = self.instruments.get_mut(instrument)
            && state
                .last
                .is_some_and(|last| last.trade_seq > position.trade_seq)
        {
            state.last = Some(position);
        }
    }
}

fn position_of(trade: &Trade) -> Position {
    Position {
        trade_seq: trade.trade_seq,
        timestamp: trade.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(instrument: &str, seq: u64) -> Trade {
        domain::testing::trade(
            instrument,
            seq,
            1_700_000_000_000 + i64::try_from(seq).unwrap(),
            1.0,
            1.0,
        )
    }

    fn seqs(trades: &[Trade]) -> Vec<u64> {
        trades.iter().map(|t| t.trade_seq).collect()
    }

    fn many(instrument: &str, range: std::ops::RangeInclusive<u64>) -> Vec<Trade> {
        range.map(|s| t(instrument, s)).collect()
    }

    #[test]
    fn contiguous_trades_pass_and_duplicates_drop() {
        let mut s = Sequencer::new(100);
        let out = s.on_live(vec![t("A", 5), t("A", 6), t("B", 1), t("A", 6), t("A", 4)]);
        assert_eq!(seqs(&out.ready), vec![5, 6, 1]);
        assert_eq!(out.duplicates, 2);
        assert!(out.requests.is_empty());
    }

    #[test]
    fn a_gap_holds_live_trades_until_history_fills_it() {
        let mut s = Sequencer::new(100);
        s.on_live(vec![t("A", 10)]);
        let out = s.on_live(vec![t("A", 14), t("A", 15)]);
        assert!(out.ready.is_empty());
        assert_eq!(out.gaps_detected, 1);
        assert_eq!(
            out.requests,
            vec![BackfillRequest {
                instrument: "A".into(),
                start_seq: 11,
                end_seq: Some(13)
            }]
        );
        // A page may overlap both sides of the hole.
        let out = s.on_backfill_page("A", many("A", 9..=14), false);
        assert_eq!(seqs(&out.ready), vec![11, 12, 13, 14, 15]);
        assert_eq!(out.gaps_filled, 1);
        assert_eq!(out.backfilled, 3);
        assert!(out.gaps.is_empty());
        assert_eq!(seqs(&s.on_live(vec![t("A", 16)]).ready), vec![16]);
    }

    #[test]
    fn pages_until_has_more_is_false() {
        let mut s = Sequencer::new(100);
        s.seed(&StartPositions::from([(
            "A".into(),
            Position {
                trade_seq: 100,
                timestamp: 1,
            },
        )]));
        let request = s.backfill_from_last("A").unwrap();
        assert_eq!((request.start_seq, request.end_seq), (101, None));
        assert!(
            s.on_live(vec![t("A", 2_500)]).ready.is_empty(),
            "held while backfilling"
        );
        let out = s.on_backfill_page("A", many("A", 101..=1100), true);
        assert_eq!(out.ready.len(), 1000);
        assert_eq!(out.requests[0].start_seq, 1101);
        let out = s.on_backfill_page("A", many("A", 1101..=2100), true);
        assert_eq!(out.requests[0].start_seq, 2101);
        let out = s.on_backfill_page("A", many("A", 2101..=2499), false);
        assert_eq!(
            *seqs(&out.ready).last().unwrap(),
            2500,
            "the held live trade follows"
        );
        assert_eq!(s.positions()["A"].trade_seq, 2500);
    }

    #[test]
    fn history_that_lags_is_asked_again_then_the_gap_is_reported() {
        let mut s = Sequencer::new(100);
        s.seed(&StartPositions::from([(
            "A".into(),
            Position {
                trade_seq: 10,
                timestamp: 1,
            },
        )]));
        s.backfill_from_last("A");
        s.on_live(vec![t("A", 20)]);
        // History ends at 15: ask again for 16..=19, twice, then give up and report.
        let out = s.on_backfill_page("A", many("A", 11..=15), false);
        assert_eq!(seqs(&out.ready), vec![11, 12, 13, 14, 15]);
        assert_eq!(
            out.requests[0],
            BackfillRequest {
                instrument: "A".into(),
                start_seq: 16,
                end_seq: Some(19)
            }
        );
        let out = s.on_backfill_page("A", vec![], false);
        assert_eq!(out.requests.len(), 1);
        let out = s.on_backfill_page("A", vec![], false);
        assert_eq!(
            out.gaps,
            vec![UnfilledGap {
                instrument: "A".into(),
                from_seq: 16,
                to_seq: 19
            }]
        );
        assert_eq!(seqs(&out.ready), vec![20]);
    }

    #[test]
    fn a_hole_inside_history_is_reported_and_passed() {
        let mut s = Sequencer::new(100);
        s.on_live(vec![t("A", 1)]);
        s.on_live(vec![t("A", 6)]);
        let out = s.on_backfill_page("A", vec![t("A", 2), t("A", 4), t("A", 5)], false);
        assert_eq!(
            out.gaps,
            vec![UnfilledGap {
                instrument: "A".into(),
                from_seq: 3,
                to_seq: 3
            }]
        );
        assert_eq!(seqs(&out.ready), vec![2, 4, 5, 6]);
    }

    #[test]
    fn a_failed_backfill_reports_the_hole_and_releases_held_trades() {
        let mut s = Sequencer::new(100);
        s.on_live(vec![t("A", 1)]);
        s.on_live(vec![t("A", 5), t("A", 6)]);
        let out = s.on_backfill_failed("A");
        assert_eq!(
            out.gaps,
            vec![UnfilledGap {
                instrument: "A".into(),
                from_seq: 2,
                to_seq: 4
            }]
        );
        assert_eq!(seqs(&out.ready), vec![5, 6]);
        assert!(!s.is_backfilling());
    }

    #[test]
    fn holding_is_bounded_and_what_is_not_held_is_fetched_again() {
        let mut s = Sequencer::new(2);
        s.on_live(vec![t("A", 1)]);
        s.on_live(many("A", 5..=9)); // 5 opens the hole; 6 held; 7..9 not kept
        let out = s.on_backfill_page("A", many("A", 2..=4), false);
        // Hole 2..=4 filled; 5, 6 released; 7..9 must come from history: open-ended request.
        assert_eq!(seqs(&out.ready), vec![2, 3, 4, 5, 6]);
        assert_eq!(
            out.requests,
            vec![BackfillRequest {
                instrument: "A".into(),
                start_seq: 7,
                end_seq: None
            }]
        );
        assert!(s.on_live(vec![t("A", 10)]).ready.is_empty(), "held again");
        let out = s.on_backfill_page("A", many("A", 7..=10), false);
        assert_eq!(seqs(&out.ready), vec![7, 8, 9, 10]);
        assert!(!s.is_backfilling());
    }

    #[test]
    fn discovery_starts_unknown_instruments_and_continues_known_ones() {
        let mut s = Sequencer::new(100);
        s.on_live(vec![t("A", 1)]);
        let out = s.on_discovered(vec![t("B", 7), t("A", 2), t("B", 8), t("A", 3)]);
        assert_eq!(seqs(&out.ready), vec![2, 3, 7, 8]);
        assert_eq!(out.backfilled, 4);
        let out = s.on_live(vec![t("A", 4), t("B", 8), t("B", 9)]);
        assert_eq!((seqs(&out.ready), out.duplicates), (vec![4, 9], 1));
    }

    #[test]
    fn an_abandoned_backfill_starts_over_from_the_last_position() {
        let mut s = Sequencer::new(100);
        s.on_live(vec![t("A", 1)]);
        s.on_live(vec![t("A", 5)]); // backfill 2..=4 requested, 5 held; then the connection dies
        s.abandon_backfills();
        let request = s.backfill_from_last("A").unwrap();
        assert_eq!((request.start_seq, request.end_seq), (2, None));
        let out = s.on_backfill_page("A", many("A", 2..=5), false);
        assert_eq!(seqs(&out.ready), vec![2, 3, 4, 5]);
    }

    #[test]
    fn rewind_makes_shed_trades_come_back() {
        let mut s = Sequencer::new(100);
        s.on_live(many("A", 1..=5));
        s.rewind(
            "A",
            Position {
                trade_seq: 2,
                timestamp: 0,
            },
        );
        let out = s.on_live(vec![t("A", 6)]);
        assert_eq!(
            out.requests[0],
            BackfillRequest {
                instrument: "A".into(),
                start_seq: 3,
                end_seq: Some(5)
            }
        );
        let out = s.on_backfill_page("A", many("A", 3..=5), false);
        assert_eq!(seqs(&out.ready), vec![3, 4, 5, 6]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Serves history requests from the full record, in pages of `page` trades.
        fn serve(request: &BackfillRequest, n: u64, page: u64) -> (Vec<Trade>, bool) {
            let end = request.end_seq.unwrap_or(n).min(n);
            let last = end.min(request.start_seq + page - 1);
            let trades = (request.start_seq..=last)
                .map(|q| t(&request.instrument, q))
                .collect();
            (trades, last < end)
        }

        proptest! {
            #[test]
            fn lossy_duplicating_live_feed_plus_history_gives_every_trade_once_in_order(
                n in 1u64..300,
                fate in prop::collection::vec(0u8..10, 600),
                page in 1u64..50,
                max_held in 1usize..20,
                answer_every in 1usize..8,
            ) {
                let mut s = Sequencer::new(max_held);
                s.seed(&StartPositions::from([
                    ("A".into(), Position { trade_seq: 0, timestamp: 0 }),
                    ("B".into(), Position { trade_seq: 0, timestamp: 0 }),
                ]));
                let mut out: Vec<Trade> = Vec::new();
                let mut pending: Vec<BackfillRequest> = Vec::new();
                let mut step = 0usize;
                let answer = |s: &mut Sequencer, pending: &mut Vec<BackfillRequest>, out: &mut Vec<Trade>| {
                    if let Some(request) = (!pending.is_empty()).then(|| pending.remove(0)) {
                        let (trades, more) = serve(&request, n, page);
                        let r = s.on_backfill_page(&request.instrument, trades, more);
                        out.extend(r.ready);
                        pending.extend(r.requests);
                    }
                };
                for q in 1..=n {
                    for name in ["A", "B"] {
                        let f = fate[usize::try_from(q).unwrap() % fate.len()];
                        // 0-2: lost, 3: delivered twice, else once; the last trade always arrives.
                        let copies = if q == n { 1 } else { match f { 0..=2 => 0, 3 => 2, _ => 1 } };
                        for _ in 0..copies {
                            let r = s.on_live(vec![t(name, q)]);
                            out.extend(r.ready);
                            pending.extend(r.requests);
                            prop_assert!(r.gaps.is_empty(), "history has everything");
                        }
                        step += 1;
                        if step.is_multiple_of(answer_every) {
                            answer(&mut s, &mut pending, &mut out);
                        }
                    }
                }
                while !pending.is_empty() {
                    answer(&mut s, &mut pending, &mut out);
                }
                prop_assert!(!s.is_backfilling());
                for name in ["A", "B"] {
                    let got: Vec<u64> = out.iter().filter(|t| t.instrument_name == name).map(|t| t.trade_seq).collect();
                    prop_assert_eq!(got, (1..=n).collect::<Vec<_>>());
                }
            }
        }
    }
}
