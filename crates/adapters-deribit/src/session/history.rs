//! History work of one session: per-instrument backfill, instrument discovery after an outage,
//! and refetching what was shed. It owns the queue, the count in flight, the trades held while
//! discovery runs and the set of shed instruments; it decides what to ask for next and turns
//! each answer into [`Sequenced`] results for the session core to deliver.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use domain::Trade;
use serde_json::json;
use tokio::time::Instant;
use tracing::{Span, debug, info, info_span, warn};

use super::transport::Request;
use crate::config::{Channel, DeribitConfig};
use crate::credits::CreditBucket;
use crate::rpc::{ErrorClass, RpcError};
use crate::sequencer::{BackfillRequest, MAX_PAGE, Sequenced, Sequencer};

/// History requests are retried this many times before the hole is reported.
const MAX_ATTEMPTS: u32 = 5;
/// Deribit keeps `get_last_trades_by_currency_and_time` history for 24 hours.
const DISCOVERY_HORIZON_MS: i64 = 24 * 3600 * 1000;

/// One history request, queued or in flight.
#[derive(Debug)]
pub(super) enum Job {
    /// An instrument's trades from a `trade_seq` on.
    Backfill {
        request: BackfillRequest,
        attempt: u32,
    },
    /// Trades in a time range, to find instruments that traded while we were away.
    Discovery(Discovery),
}

#[derive(Debug, Clone)]
enum Scope {
    /// A kind/currency channel: `get_last_trades_by_currency_and_time`.
    Currency { kind: String, currency: String },
    /// An instrument channel whose instrument has no position yet:
    /// `get_last_trades_by_instrument_and_time`.
    Instrument(String),
}

/// A search of one scope's trades over a time range, paged.
#[derive(Debug, Clone)]
pub(super) struct Discovery {
    scope: Scope,
    start: i64,
    end: i64,
    attempt: u32,
}

/// How a history request ended.
pub(super) enum Answer {
    /// A page: its valid trades, and whether more match.
    Page { trades: Vec<Trade>, has_more: bool },
    /// A `result` that is not a page.
    Unreadable,
    /// An error answer.
    Refused(RpcError),
    /// No answer in time.
    TimedOut,
}

impl Job {
    /// The span a page of this job is delivered under.
    pub fn span(&self, trades: usize) -> Span {
        match self {
            Job::Backfill { request, .. } => info_span!(
                "deribit.backfill",
                instrument = %request.instrument,
                from_seq = request.start_seq,
                trades
            ),
            Job::Discovery(d) => info_span!("deribit.discovery", scope = ?d.scope, trades),
        }
    }

    /// Where the page's trades came from, for the log.
    pub fn source(&self) -> &str {
        match self {
            Job::Backfill { request, .. } => &request.instrument,
            Job::Discovery(_) => "discovery",
        }
    }
}

/// History work of one session. See the module docs.
pub(super) struct History {
    queue: VecDeque<Job>,
    in_flight: usize,
    max_in_flight: usize,
    discoveries_running: usize,
    /// Live trades of instruments first seen while discovery runs: released once it ends.
    held_unknown: Vec<Trade>,
    max_held: usize,
    /// Instruments whose trades were shed: fetched again once the consumer has room.
    shed: BTreeSet<String>,
    credits: CreditBucket,
    /// When queued work may go again (out of credits, or shed trades waiting for room).
    wake_at: Option<Instant>,
}

impl History {
    /// No work yet.
    pub fn new(config: &DeribitConfig) -> Self {
        History {
            queue: VecDeque::new(),
            in_flight: 0,
            max_in_flight: config.max_backfill_in_flight,
            discoveries_running: 0,
            held_unknown: Vec::new(),
            max_held: config.max_held_per_instrument,
            shed: BTreeSet::new(),
            credits: CreditBucket::requests(),
            wake_at: None,
        }
    }

    /// Whether nothing is queued, in flight, held back or shed.
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
            && self.in_flight == 0
            && self.discoveries_running == 0
            && self.held_unknown.is_empty()
            && self.shed.is_empty()
    }

    /// When queued work may go again.
    pub fn deadline(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Takes one request credit for a request outside the history work (a clock reading).
    pub fn take_credit(&mut self) -> bool {
        self.credits.try_take().is_ok()
    }

    /// The requests that may go now (none before the subscriptions are in place): within the
    /// in-flight limit and the request credits, shed instruments first queued again once the
    /// consumer has room.
    pub fn next_requests(
        &mut self,
        subscribed: bool,
        consumer_has_room: bool,
        sequencer: &mut Sequencer,
    ) -> Vec<Request<Job>> {
        self.wake_at = None;
        self.refetch_shed(consumer_has_room, sequencer);
        let mut requests = Vec::new();
        while subscribed && self.in_flight < self.max_in_flight {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if let Err(wait) = self.credits.try_take() {
                self.queue.push_front(job);
                self.wake_soon(wait);
                break;
            }
            self.in_flight += 1;
            requests.push(request(job));
        }
        requests
    }

    /// Queues the backfills the sequencer asked for.
    pub fn backfill(&mut self, requests: Vec<BackfillRequest>) {
        for request in requests {
            info!(instrument = %request.instrument, from_seq = request.start_seq, to_seq = ?request.end_seq, "Backfilling.");
            self.queue.push_back(Job::Backfill {
                request,
                attempt: 0,
            });
        }
    }

    /// After a reconnect or restart: every known instrument from its last position.
    pub fn recover(&mut self, sequencer: &mut Sequencer) {
        let mut instruments: Vec<String> = sequencer.positions().into_keys().collect();
        instruments.sort();
        for instrument in instruments {
            if let Some(request) = sequencer.backfill_from_last(&instrument) {
                self.queue.push_back(Job::Backfill {
                    request,
                    attempt: 0,
                });
            }
        }
    }

    /// Searches the trades since `since` (ms) on each channel for instruments without a
    /// position (known ones are covered by their backfill).
    pub fn discover(
        &mut self,
        channels: &[Channel],
        since: i64,
        now_ms: i64,
        sequencer: &Sequencer,
    ) {
        let end = now_ms;
        let start = since.max(end - DISCOVERY_HORIZON_MS);
        if start > since {
            warn!(
                since,
                "Outage longer than Deribit's 24 h trade search: new instruments may be incomplete."
            );
        }
        for channel in channels {
            let scope = match channel {
                Channel::KindCurrency { kind, currency, .. } => Scope::Currency {
                    kind: kind.clone(),
                    currency: currency.clone(),
                },
                Channel::Instrument { instrument, .. } if !sequencer.knows(instrument) => {
                    Scope::Instrument(instrument.clone())
                }
                Channel::Instrument { .. } => continue,
            };
            self.discoveries_running += 1;
            self.queue.push_back(Job::Discovery(Discovery {
                scope,
                start,
                end,
                attempt: 0,
            }));
        }
    }

    /// Live trades that may be sequenced now; those of instruments first seen while discovery
    /// runs are held (within the bound) until their history is known.
    pub fn admit_live(&mut self, trades: Vec<Trade>, sequencer: &Sequencer) -> Vec<Trade> {
        if self.discoveries_running == 0 {
            return trades;
        }
        let (unknown, known): (Vec<Trade>, Vec<Trade>) = trades
            .into_iter()
            .partition(|t| !sequencer.knows(&t.instrument_name));
        let room = self.max_held.saturating_sub(self.held_unknown.len());
        if unknown.len() > room {
            warn!(
                dropped = unknown.len() - room,
                "Too many trades held during discovery; dropping the excess."
            );
        }
        self.held_unknown.extend(unknown.into_iter().take(room));
        known
    }

    /// Marks an instrument's trades as shed: they are fetched again from history.
    pub fn shed(&mut self, instrument: &str) {
        self.shed.insert(instrument.to_owned());
    }

    /// Once the consumer has room again, fetches what was shed from history (an instrument
    /// already backfilling waits until that backfill ends).
    fn refetch_shed(&mut self, consumer_has_room: bool, sequencer: &mut Sequencer) {
        if self.shed.is_empty() {
            return;
        }
        if consumer_has_room {
            for instrument in std::mem::take(&mut self.shed) {
                match sequencer.backfill_from_last(&instrument) {
                    Some(request) => self.queue.push_back(Job::Backfill {
                        request,
                        attempt: 0,
                    }),
                    None => {
                        self.shed.insert(instrument);
                    }
                }
            }
        }
        if !self.shed.is_empty() {
            self.wake_soon(Duration::from_millis(50));
        }
    }

    fn wake_soon(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// The end of one request: what the sequencer made of the page (or of the failure), and
    /// whether a discovery ended with it. The core delivers `out` first and only then calls
    /// [`History::end_discovery`]: held live trades are sequenced after the page is handed out
    /// (or shed and rewound), so an instrument's order holds even when the queue is full.
    pub fn on_answer(&mut self, job: Job, answer: Answer, sequencer: &mut Sequencer) -> Answered {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Answer::Refused(error) = &answer
            && error.class() == ErrorClass::RateLimited
        {
            // The pool is empty on Deribit's side: ours must wait for the refill too.
            self.credits.drain();
        }
        match (job, answer) {
            (Job::Backfill { request, .. }, Answer::Page { trades, has_more }) => {
                Answered::out(sequencer.on_backfill_page(&request.instrument, trades, has_more))
            }
            (Job::Backfill { request, .. }, Answer::Unreadable) => {
                Answered::out(sequencer.on_backfill_failed(&request.instrument))
            }
            (Job::Backfill { request, attempt }, Answer::Refused(error)) => {
                self.retry_backfill(request, attempt, &error.to_string(), sequencer)
            }
            (Job::Backfill { request, attempt }, Answer::TimedOut) => {
                self.retry_backfill(request, attempt, "timed out", sequencer)
            }
            (Job::Discovery(d), Answer::Page { trades, has_more }) => {
                self.on_discovery_page(d, trades, has_more, sequencer)
            }
            (Job::Discovery(d), Answer::Unreadable) => self.retry_discovery(d, "unreadable page"),
            (Job::Discovery(d), Answer::Refused(error)) => {
                self.retry_discovery(d, &error.to_string())
            }
            (Job::Discovery(d), Answer::TimedOut) => self.retry_discovery(d, "timed out"),
        }
    }

    fn on_discovery_page(
        &mut self,
        mut d: Discovery,
        trades: Vec<Trade>,
        has_more: bool,
        sequencer: &mut Sequencer,
    ) -> Answered {
        let last_ts = trades.iter().map(|t| t.timestamp).max();
        let out = Some(sequencer.on_discovered(trades));
        match last_ts {
            // Pages overlap at the boundary timestamp; duplicates are dropped by trade_seq.
            Some(ts) if has_more && ts < d.end => {
                d.start = if ts > d.start { ts } else { d.start + 1 };
                d.attempt = 0;
                self.queue.push_front(Job::Discovery(d));
                Answered {
                    out,
                    discovery_ended: false,
                }
            }
            _ => Answered {
                out,
                discovery_ended: true,
            },
        }
    }

    /// A discovery is over: once none runs, the live trades held for it are sequenced.
    pub fn end_discovery(&mut self, sequencer: &mut Sequencer) -> Option<Sequenced> {
        self.discoveries_running = self.discoveries_running.saturating_sub(1);
        if self.discoveries_running == 0 && !self.held_unknown.is_empty() {
            return Some(sequencer.on_live(std::mem::take(&mut self.held_unknown)));
        }
        None
    }

    fn retry_backfill(
        &mut self,
        request: BackfillRequest,
        attempt: u32,
        why: &str,
        sequencer: &mut Sequencer,
    ) -> Answered {
        if attempt + 1 < MAX_ATTEMPTS {
            debug!(instrument = %request.instrument, attempt, why, "Retrying history request.");
            self.queue.push_back(Job::Backfill {
                request,
                attempt: attempt + 1,
            });
            return Answered::default();
        }
        warn!(instrument = %request.instrument, why, "History request failed for good.");
        Answered::out(sequencer.on_backfill_failed(&request.instrument))
    }

    fn retry_discovery(&mut self, mut d: Discovery, why: &str) -> Answered {
        d.attempt += 1;
        if d.attempt < MAX_ATTEMPTS {
            self.queue.push_back(Job::Discovery(d));
            return Answered::default();
        }
        warn!(scope = ?d.scope, why, "Instrument discovery failed; continuing without it.");
        Answered {
            out: None,
            discovery_ended: true,
        }
    }
}

/// What one answer produced, in the order the core delivers it.
#[derive(Debug, Default)]
pub(super) struct Answered {
    /// The sequencer's result for the page or the failure.
    pub out: Option<Sequenced>,
    /// A discovery ended: after `out`, call [`History::end_discovery`].
    pub discovery_ended: bool,
}

impl Answered {
    fn out(out: Sequenced) -> Self {
        Answered {
            out: Some(out),
            discovery_ended: false,
        }
    }
}

/// The JSON-RPC request for `job`.
fn request(job: Job) -> Request<Job> {
    let (method, params) = match &job {
        Job::Backfill { request, .. } => {
            let mut params = json!({
                "instrument_name": request.instrument,
                "start_seq": request.start_seq,
                "count": MAX_PAGE,
                "sorting": "asc",
            });
            if let Some(end) = request.end_seq {
                params["end_seq"] = json!(end);
            }
            ("public/get_last_trades_by_instrument", params)
        }
        Job::Discovery(d) => {
            let mut params = json!({
                "start_timestamp": d.start,
                "end_timestamp": d.end,
                "count": MAX_PAGE,
                "sorting": "asc",
            });
            let method = match &d.scope {
                Scope::Currency { kind, currency } => {
                    params["kind"] = json!(kind);
                    params["currency"] = json!(currency);
                    "public/get_last_trades_by_currency_and_time"
                }
                Scope::Instrument(instrument) => {
                    params["instrument_name"] = json!(instrument);
                    "public/get_last_trades_by_instrument_and_time"
                }
            };
            (method, params)
        }
    };
    Request {
        method,
        params,
        tag: job,
    }
}
