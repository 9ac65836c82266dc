//! One WebSocket connection to Deribit, from connect to close.
//!
//! A single loop owns the connection. It answers `test_request`s at once, walks the handshake
//! (`public/hello`, optional `public/auth`, `public/set_heartbeat`, then paced subscribe
//! chunks), recovers what was missed (per-instrument history, instrument discovery), and turns
//! notifications into batches for the consumer. It never waits on the consumer: batches are
//! offered with `try_send`; a full queue sheds the batch and rewinds the sequencer, so the shed
//! trades are fetched again from history once the consumer catches up. Once subscribed it reads
//! Deribit's clock every progress interval (`public/get_time`, its `usOut`) and, while nothing is
//! missing, hands the consumer the new completeness time (see [`crate::completeness`]).
//!
//! The state is split by what it is about, and this core only routes between the parts:
//! * [`transport`]: the socket, request ids, answers matched to requests, deadlines;
//! * [`handshake`]: steps, token refresh, silence watchdog; it returns requests and events;
//! * [`history`]: backfill, discovery and refetch work; it returns sequenced results;
//! * [`delivery`]: batches and progress to the consumer, shedding, counting what was refused;
//! * [`end`]: how a session ends (`SessionEnd`), shared by the parts.

mod delivery;
mod end;
mod handshake;
mod history;
mod transport;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ports::{Clock, Position};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{Span, debug, info, info_span, warn};

pub(crate) use delivery::FeedItem;
pub use delivery::TraceExtractor;
pub(crate) use end::SessionEnd;

use crate::completeness::{CompletenessClock, Reading};
use crate::config::DeribitConfig;
use crate::metrics::FeedMetrics;
use crate::parse::parse_notification_params;
use crate::rpc::{self, ErrorClass, Incoming, RpcError, TradesPage};
use crate::sequencer::{Sequenced, Sequencer};
use delivery::Outbox;
use end::truncate;
use handshake::{Ask, Event, Handshake};
use history::{Answer, History, Job};
use transport::{Frame, Request, Transport};

/// What the supervisor hands a session.
pub(crate) struct Context<'a> {
    /// The feed's settings.
    pub config: &'a DeribitConfig,
    /// The feed's counters.
    pub metrics: &'a FeedMetrics,
    /// Makes a batch's trace context from its span.
    pub trace: Option<&'a TraceExtractor>,
    /// Positions per instrument, kept across sessions.
    pub sequencer: &'a mut Sequencer,
    /// Completeness, kept across sessions.
    pub completeness: &'a mut CompletenessClock,
    /// Wall-clock time, for the plausibility of timestamps and server times.
    pub wall: &'a dyn Clock,
    /// The consumer's queue.
    pub tx: &'a mpsc::Sender<FeedItem>,
    /// Set when the feed is asked to stop.
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// Fetch history for every known instrument once subscribed (after a reconnect or restart).
    pub recover: bool,
    /// Find instruments that traded since this time (ms) on kind/currency channels.
    pub discover_since: Option<i64>,
}

/// What a request in flight is for.
#[derive(Debug)]
enum Pending {
    Handshake(Ask),
    /// A `public/test` answering a heartbeat, sent at this time (for the round trip).
    Test(Instant),
    /// A clock reading for completeness.
    Clock,
    History(Job),
}

struct Session<'a> {
    config: &'a DeribitConfig,
    metrics: &'a FeedMetrics,
    sequencer: &'a mut Sequencer,
    completeness: &'a mut CompletenessClock,
    wall: &'a dyn Clock,
    shutdown: &'a mut watch::Receiver<bool>,
    recover: bool,
    discover_since: Option<i64>,
    transport: Transport<'a, Pending>,
    handshake: Handshake<'a>,
    history: History,
    outbox: Outbox<'a>,
    /// When Deribit's clock is read next (set once subscribed).
    clock_at: Option<Instant>,
}

/// Connects and runs one session until it ends.
pub(crate) async fn run(ctx: Context<'_>) -> SessionEnd {
    let transport = match Transport::connect(ctx.config, ctx.metrics).await {
        Ok(transport) => transport,
        Err(end) => return end,
    };
    let mut session = Session {
        config: ctx.config,
        metrics: ctx.metrics,
        sequencer: ctx.sequencer,
        completeness: ctx.completeness,
        wall: ctx.wall,
        shutdown: ctx.shutdown,
        recover: ctx.recover,
        discover_since: ctx.discover_since,
        transport,
        handshake: Handshake::new(ctx.config),
        history: History::new(ctx.config),
        outbox: Outbox {
            tx: ctx.tx,
            trace: ctx.trace,
            metrics: ctx.metrics,
        },
        clock_at: None,
    };
    let end = session.run().await;
    session.metrics.subscribed.store(false, Ordering::Relaxed);
    session.transport.close().await;
    end
}

impl Session<'_> {
    async fn run(&mut self) -> SessionEnd {
        loop {
            if let Err(end) = self.pump().await {
                return end;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return SessionEnd::Shutdown;
                    }
                }
                frame = self.transport.next_frame() => {
                    let handled = match frame {
                        Ok(frame) => self.on_frame(frame).await,
                        Err(end) => Err(end),
                    };
                    if let Err(end) = handled {
                        return end;
                    }
                }
                () = sleep_until(deadline) => {
                    if let Err(end) = self.on_timer().await {
                        return end;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        [
            self.transport.deadline(),
            self.handshake.deadline(),
            self.history.deadline(),
            self.clock_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }

    /// Sends whatever may go now: the next handshake step, queued history requests.
    async fn pump(&mut self) -> Result<(), SessionEnd> {
        let requests = self.history.next_requests(
            self.handshake.subscribed(),
            self.outbox.has_room(),
            self.sequencer,
        );
        if let Some(step) = self.handshake.next_request()? {
            self.send(step, Pending::Handshake).await?;
        }
        for request in requests {
            self.send(request, Pending::History).await?;
        }
        Ok(())
    }

    async fn send<T>(
        &mut self,
        request: Request<T>,
        pending: impl FnOnce(T) -> Pending,
    ) -> Result<(), SessionEnd> {
        let Request {
            method,
            params,
            tag,
        } = request;
        self.transport
            .send(Request {
                method,
                params,
                tag: pending(tag),
            })
            .await
    }

    async fn on_timer(&mut self) -> Result<(), SessionEnd> {
        let now = Instant::now();
        if let Some(refresh) = self.handshake.on_timer(now)? {
            self.send(refresh, Pending::Handshake).await?;
        }
        if self.clock_at.is_some_and(|at| now >= at) {
            self.clock_at = Some(now + self.config.progress_interval);
            // A clock reading is worth a request only while credits last; the next one follows.
            if self.history.take_credit() {
                let request = Request {
                    method: "public/get_time",
                    params: json!({}),
                    tag: Pending::Clock,
                };
                self.transport.send(request).await?;
            }
        }
        for pending in self.transport.expired(now) {
            match pending {
                Pending::Handshake(ask) => return Err(Handshake::on_timeout(&ask)),
                Pending::Test(_) | Pending::Clock => {}
                Pending::History(job) => {
                    self.on_history(job, Answer::TimedOut, &Span::current())?
                }
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        self.handshake.on_frame();
        let Frame::Text(text) = frame else {
            return Ok(());
        };
        let incoming = match rpc::classify(&text) {
            Ok(incoming) => incoming,
            Err(e) => {
                FeedMetrics::add(&self.metrics.malformed_frames, 1);
                warn!(error = %e, frame = %truncate(&text), "Skipping malformed frame.");
                return Ok(());
            }
        };
        match incoming {
            Incoming::Heartbeat { test_request: true } => {
                FeedMetrics::add(&self.metrics.test_requests_answered, 1);
                let request = Request {
                    method: "public/test",
                    params: json!({}),
                    tag: Pending::Test(Instant::now()),
                };
                self.transport.send(request).await
            }
            Incoming::Heartbeat {
                test_request: false,
            }
            | Incoming::Other => Ok(()),
            Incoming::Notification(params) => self.on_notification(params, &text),
            Incoming::OrphanError(error) => self.on_orphan_error(&error),
            Incoming::Response {
                id,
                outcome,
                us_out,
            } => {
                let Some(pending) = self.transport.answered(id) else {
                    debug!(id, "Answer to a request no longer pending.");
                    return Ok(());
                };
                let outcome = outcome.map(|raw| raw.get());
                // Counted where credits matter: the handshake and history work (the others are
                // clock readings and heartbeat answers, paced by Deribit itself).
                if let Err(error) = &outcome
                    && error.class() == ErrorClass::RateLimited
                    && matches!(pending, Pending::Handshake(_) | Pending::History(_))
                {
                    FeedMetrics::add(&self.metrics.rate_limit_hits, 1);
                }
                self.on_response(pending, outcome, us_out)
            }
        }
    }

    fn on_response(
        &mut self,
        pending: Pending,
        outcome: Result<&str, RpcError>,
        us_out: Option<i64>,
    ) -> Result<(), SessionEnd> {
        match pending {
            Pending::Handshake(ask) => {
                if self.handshake.on_answer(ask, outcome)? == Event::Subscribed {
                    self.on_subscribed();
                }
                Ok(())
            }
            Pending::Clock => {
                self.on_clock(us_out);
                Ok(())
            }
            Pending::Test(sent) => {
                let rtt = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.metrics.heartbeat_rtt_us.store(rtt, Ordering::Relaxed);
                Ok(())
            }
            Pending::History(job) => {
                let answer = match outcome {
                    Err(error) => Answer::Refused(error),
                    Ok(result) => match serde_json::from_str::<TradesPage>(result) {
                        Ok(page) => {
                            let trades =
                                self.outbox
                                    .admit(page.trades, job.source(), self.wall.now_ms());
                            Answer::Page {
                                trades,
                                has_more: page.has_more,
                            }
                        }
                        Err(e) => {
                            FeedMetrics::add(&self.metrics.malformed_frames, 1);
                            warn!(source = job.source(), error = %e, "Unreadable history page.");
                            Answer::Unreadable
                        }
                    },
                };
                let span = match &answer {
                    Answer::Page { trades, .. } => job.span(trades.len()),
                    _ => Span::current(),
                };
                self.on_history(job, answer, &span)
            }
        }
    }

    fn on_history(&mut self, job: Job, answer: Answer, span: &Span) -> Result<(), SessionEnd> {
        let _entered = span.enter();
        let answered = self.history.on_answer(job, answer, self.sequencer);
        if let Some(out) = answered.out {
            self.apply(out, span)?;
        }
        // Only now, after the page went out (or was shed and rewound): the held live trades.
        if answered.discovery_ended
            && let Some(held) = self.history.end_discovery(self.sequencer)
        {
            self.apply(held, span)?;
        }
        Ok(())
    }

    fn on_orphan_error(&mut self, error: &RpcError) -> Result<(), SessionEnd> {
        warn!(code = error.code, message = %error.message, "Deribit sent an error without a request id.");
        match error.class() {
            ErrorClass::RateLimited => {
                FeedMetrics::add(&self.metrics.rate_limit_hits, 1);
                // Deribit terminates the session when credits run out: wait for the refill.
                Err(SessionEnd::Retry {
                    reason: format!("rate limited: {error}"),
                    min_delay: self.config.backoff.rate_limited,
                })
            }
            ErrorClass::Maintenance => Err(SessionEnd::Retry {
                reason: format!("maintenance: {error}"),
                min_delay: self.config.backoff.maintenance,
            }),
            _ => Ok(()),
        }
    }

    /// Whether nothing is missing: every channel subscribed (and confirmed), no backfill,
    /// discovery or refetch pending, no live trade held back.
    fn settled(&self) -> bool {
        self.handshake.done() && self.history.idle() && !self.sequencer.is_backfilling()
    }

    /// A reading of Deribit's clock: hand out the new completeness time, if it advanced.
    fn on_clock(&mut self, us_out: Option<i64>) {
        let settled = self.settled();
        match self
            .completeness
            .on_server_time(us_out, settled, self.wall.now_ms())
        {
            Reading::Advanced(complete_to) => self.outbox.progress(complete_to),
            Reading::Held => {}
            Reading::Implausible => {
                FeedMetrics::add(&self.metrics.implausible_server_times, 1);
                warn!(
                    us_out,
                    "Deribit's clock reading is missing or far from ours; completeness holds."
                );
            }
        }
    }

    fn on_subscribed(&mut self) {
        self.clock_at = Some(Instant::now());
        self.metrics.subscribed.store(true, Ordering::Relaxed);
        info!(channels = self.config.channels.len(), "Subscribed.");
        if self.recover {
            self.history.recover(self.sequencer);
        }
        if let Some(since) = self.discover_since {
            self.history.discover(
                &self.config.channels,
                since,
                self.wall.now_ms(),
                self.sequencer,
            );
        }
    }

    fn on_notification(
        &mut self,
        params: Option<&serde_json::value::RawValue>,
        text: &str,
    ) -> Result<(), SessionEnd> {
        let parsed = match parse_notification_params(params) {
            Ok(parsed) => parsed,
            Err(crate::Error::NotTrades { .. }) => return Ok(()),
            Err(e) => {
                FeedMetrics::add(&self.metrics.malformed_frames, 1);
                warn!(error = %e, frame = %truncate(text), "Skipping malformed notification.");
                return Ok(());
            }
        };
        let channel = parsed.channel.clone().unwrap_or_default();
        let span =
            info_span!("deribit.notification", channel = %channel, trades = parsed.trades.len());
        let _entered = span.enter();
        let now = self.wall.now_ms();
        let trades = self.outbox.admit(parsed, &channel, now);
        FeedMetrics::add(&self.metrics.trades_received, trades.len() as u64);
        for trade in &trades {
            self.metrics.observe_latency_ms(
                u64::try_from(now.saturating_sub(trade.timestamp)).unwrap_or(0),
            );
        }
        let trades = self.history.admit_live(trades, self.sequencer);
        let out = self.sequencer.on_live(trades);
        self.apply(out, &span)
    }

    /// Books what the sequencer produced, queues the backfills it asks for and hands ready
    /// trades to the consumer; a shed batch rewinds its instruments to be fetched again.
    fn apply(&mut self, out: Sequenced, span: &Span) -> Result<(), SessionEnd> {
        self.outbox.book(&out);
        self.history.backfill(out.requests);
        let Some(shed) = self.outbox.send(out.ready, span)? else {
            return Ok(());
        };
        let mut rewound: Vec<&str> = Vec::new();
        for trade in &shed {
            if !rewound.contains(&trade.instrument_name.as_str()) {
                rewound.push(&trade.instrument_name);
                let before = Position {
                    trade_seq: trade.trade_seq.saturating_sub(1),
                    timestamp: trade.timestamp,
                };
                self.sequencer.rewind(&trade.instrument_name, before);
                self.history.shed(&trade.instrument_name);
            }
        }
        Ok(())
    }
}
