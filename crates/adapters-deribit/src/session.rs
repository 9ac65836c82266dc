//! One WebSocket connection to Deribit, from connect to close.
//!
//! A single loop owns the socket. It answers `test_request`s at once, walks the handshake
//! (`public/hello`, optional `public/auth`, `public/set_heartbeat`, then paced subscribe
//! chunks), recovers what was missed (per-instrument history, instrument discovery), and turns
//! notifications into batches for the consumer. It never waits on the consumer: batches are
//! offered with `try_send`; a full queue sheds the batch and rewinds the sequencer, so the shed
//! trades are fetched again from history once the consumer catches up. Once subscribed it reads
//! Deribit's clock every progress interval (`public/get_time`, its `usOut`) and, while nothing is
//! missing, hands the consumer the new completeness time (see [`crate::completeness`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use domain::Trade;
use futures::{SinkExt, StreamExt};
use ports::{FeedError, FeedEvent, Position, TradeBatch};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};
use tracing::{Span, debug, info, info_span, warn};

use crate::completeness::{CompletenessClock, Reading};
use crate::config::{Channel, DeribitConfig, chunk_channels};
use crate::credits::CreditBucket;
use crate::feed::{FeedItem, TraceExtractor};
use crate::metrics::FeedMetrics;
use crate::parse::{MAX_TRADE_AHEAD_MS, parse_notification, take_future_stamped};
use crate::rpc::{self, AuthResult, ErrorClass, Incoming, RpcError, TradesPage};
use crate::sequencer::{BackfillRequest, MAX_PAGE, Sequenced, Sequencer};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// History requests are retried this many times before the hole is reported.
const MAX_ATTEMPTS: u32 = 5;
/// Deribit keeps `get_last_trades_by_currency_and_time` history for 24 hours.
const DISCOVERY_HORIZON_MS: i64 = 24 * 3600 * 1000;

/// How a session ended, and what the supervisor should do next.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The consumer dropped the feed.
    ConsumerGone,
    /// Reconnect, waiting at least `min_delay`.
    Retry { reason: String, min_delay: Duration },
    /// Stop: retrying cannot help.
    Fatal(FeedError),
}

fn retry(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Retry {
        reason: reason.into(),
        min_delay: Duration::ZERO,
    }
}

/// What the supervisor hands a session.
pub(crate) struct Context<'a> {
    pub config: &'a DeribitConfig,
    pub metrics: &'a FeedMetrics,
    pub trace: Option<&'a TraceExtractor>,
    pub sequencer: &'a mut Sequencer,
    pub clock: &'a mut CompletenessClock,
    pub tx: &'a mpsc::Sender<FeedItem>,
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// Fetch history for every known instrument once subscribed (after a reconnect or restart).
    pub recover: bool,
    /// Find instruments that traded since this time (ms) on kind/currency channels.
    pub discover_since: Option<i64>,
}

#[derive(Debug)]
enum Step {
    Hello,
    Auth,
    SetHeartbeat,
    Subscribe(Vec<String>),
}

#[derive(Debug)]
enum Pending {
    Step(Step),
    AuthRefresh,
    Test(Instant),
    /// A clock reading for completeness.
    Clock,
    Backfill {
        request: BackfillRequest,
        attempt: u32,
    },
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

#[derive(Debug, Clone)]
struct Discovery {
    scope: Scope,
    start: i64,
    end: i64,
    attempt: u32,
}

enum Work {
    Backfill {
        request: BackfillRequest,
        attempt: u32,
    },
    Discovery(Discovery),
}

struct Session<'a> {
    ctx: Context<'a>,
    ws: Socket,
    next_id: u64,
    pending: HashMap<u64, (Pending, Instant)>,
    steps: VecDeque<Step>,
    step_in_flight: bool,
    subscribed: bool,
    watchdog: Option<Duration>,
    last_frame: Instant,
    work: VecDeque<Work>,
    work_in_flight: usize,
    discoveries_running: usize,
    held_unknown: Vec<Trade>,
    /// Instruments whose trades were shed: fetched again once the consumer has room.
    shed: BTreeSet<String>,
    request_credits: CreditBucket,
    subscribe_credits: CreditBucket,
    wake_at: Option<Instant>,
    refresh_token: Option<String>,
    refresh_at: Option<Instant>,
    /// When Deribit's clock is read next (set once subscribed).
    clock_at: Option<Instant>,
    /// Channels asked for that Deribit did not confirm: the stream is not complete without them.
    unconfirmed: Vec<String>,
}

/// Connects and runs one session until it ends.
pub(crate) async fn run(ctx: Context<'_>) -> SessionEnd {
    let ws = match connect(ctx.config).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let mut steps = VecDeque::from([Step::Hello]);
    if ctx.config.credentials.is_some() {
        steps.push_back(Step::Auth);
    }
    steps.push_back(Step::SetHeartbeat);
    let channels: Vec<String> = ctx.config.channels.iter().map(Channel::to_string).collect();
    steps.extend(chunk_channels(&channels).into_iter().map(Step::Subscribe));
    let mut session = Session {
        ctx,
        ws,
        next_id: 1,
        pending: HashMap::new(),
        steps,
        step_in_flight: false,
        subscribed: false,
        watchdog: None,
        last_frame: Instant::now(),
        work: VecDeque::new(),
        work_in_flight: 0,
        discoveries_running: 0,
        held_unknown: Vec::new(),
        shed: BTreeSet::new(),
        request_credits: CreditBucket::requests(),
        subscribe_credits: CreditBucket::subscriptions(),
        wake_at: None,
        refresh_token: None,
        refresh_at: None,
        clock_at: None,
        unconfirmed: Vec::new(),
    };
    let end = session.run().await;
    session
        .ctx
        .metrics
        .subscribed
        .store(false, std::sync::atomic::Ordering::Relaxed);
    // Best effort: a polite close; the peer may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), session.ws.close(None)).await;
    end
}

async fn connect(config: &DeribitConfig) -> Result<Socket, SessionEnd> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let connector = if config.url.starts_with("wss://") {
        Some(Connector::Rustls(tls_config().map_err(SessionEnd::Fatal)?))
    } else {
        None
    };
    let connecting =
        connect_async_tls_with_config(config.url.as_str(), Some(ws_config), true, connector);
    match tokio::time::timeout(config.request_timeout, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(retry(format!("connecting to {}: {e}", config.url))),
        Err(_) => Err(retry(format!("connecting to {}: timed out", config.url))),
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, FeedError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FeedError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Wall-clock time in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
                changed = self.ctx.shutdown.changed() => {
                    if changed.is_err() || *self.ctx.shutdown.borrow() {
                        return SessionEnd::Shutdown;
                    }
                }
                frame = self.ws.next() => {
                    if let Err(end) = self.on_frame(frame).await {
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
        let pending = self.pending.values().map(|(_, deadline)| *deadline).min();
        let watchdog = self.watchdog.map(|w| self.last_frame + w);
        [
            Some(far),
            pending,
            watchdog,
            self.wake_at,
            self.refresh_at,
            self.clock_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }

    async fn send(
        &mut self,
        method: &str,
        params: serde_json::Value,
        what: Pending,
    ) -> Result<(), SessionEnd> {
        let id = self.next_id;
        self.next_id += 1;
        let text = rpc::request(id, method, &params);
        self.pending
            .insert(id, (what, Instant::now() + self.ctx.config.request_timeout));
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| retry(format!("sending {method}: {e}")))
    }

    /// Sends whatever may go now: the next handshake step, queued history requests.
    async fn pump(&mut self) -> Result<(), SessionEnd> {
        self.wake_at = None;
        self.refetch_shed();
        if !self.step_in_flight
            && let Some(step) = self.steps.pop_front()
        {
            if matches!(step, Step::Subscribe(_))
                && let Err(wait) = self.subscribe_credits.try_take()
            {
                self.steps.push_front(step);
                self.wake_at = Some(Instant::now() + wait);
            } else {
                self.step_in_flight = true;
                self.send_step(step).await?;
            }
        }
        while self.subscribed && self.work_in_flight < self.ctx.config.max_backfill_in_flight {
            let Some(work) = self.work.pop_front() else {
                break;
            };
            if let Err(wait) = self.request_credits.try_take() {
                self.work.push_front(work);
                self.wake_at = Some(
                    self.wake_at
                        .map_or(Instant::now() + wait, |w| w.min(Instant::now() + wait)),
                );
                break;
            }
            self.work_in_flight += 1;
            match work {
                Work::Backfill { request, attempt } => {
                    let mut params = json!({
                        "instrument_name": request.instrument,
                        "start_seq": request.start_seq,
                        "count": MAX_PAGE,
                        "sorting": "asc",
                    });
                    if let Some(end) = request.end_seq {
                        params["end_seq"] = json!(end);
                    }
                    self.send(
                        "public/get_last_trades_by_instrument",
                        params,
                        Pending::Backfill { request, attempt },
                    )
                    .await?;
                }
                Work::Discovery(d) => {
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
                    self.send(method, params, Pending::Discovery(d)).await?;
                }
            }
        }
        Ok(())
    }

    /// Once the consumer's queue is half free again, fetches what was shed from history (an
    /// instrument already backfilling waits until that backfill ends).
    fn refetch_shed(&mut self) {
        if self.shed.is_empty() {
            return;
        }
        if self.ctx.tx.capacity() * 2 >= self.ctx.tx.max_capacity() {
            for instrument in std::mem::take(&mut self.shed) {
                match self.ctx.sequencer.backfill_from_last(&instrument) {
                    Some(request) => self.work.push_back(Work::Backfill {
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
            self.wake_at = Some(Instant::now() + Duration::from_millis(50));
        }
    }

    async fn send_step(&mut self, step: Step) -> Result<(), SessionEnd> {
        let config = self.ctx.config;
        match &step {
            Step::Hello => {
                let params = json!({"client_name": config.client_name, "client_version": env!("CARGO_PKG_VERSION")});
                self.send("public/hello", params, Pending::Step(step)).await
            }
            Step::Auth => {
                let Some(credentials) = &config.credentials else {
                    return Err(SessionEnd::Fatal(FeedError::Config(
                        "auth step without credentials".into(),
                    )));
                };
                let params = json!({
                    "grant_type": "client_credentials",
                    "client_id": credentials.client_id,
                    "client_secret": credentials.client_secret,
                });
                self.send("public/auth", params, Pending::Step(step)).await
            }
            Step::SetHeartbeat => {
                let params = json!({"interval": config.heartbeat_interval.as_secs()});
                self.send("public/set_heartbeat", params, Pending::Step(step))
                    .await
            }
            Step::Subscribe(channels) => {
                let params = json!({"channels": channels});
                self.send("public/subscribe", params, Pending::Step(step))
                    .await
            }
        }
    }

    async fn on_timer(&mut self) -> Result<(), SessionEnd> {
        let now = Instant::now();
        if let Some(w) = self.watchdog
            && now >= self.last_frame + w
        {
            return Err(retry(format!(
                "no frame for {w:?}: connection presumed dead"
            )));
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = None;
            if let Some(token) = self.refresh_token.clone() {
                let params = json!({"grant_type": "refresh_token", "refresh_token": token});
                self.send("public/auth", params, Pending::AuthRefresh)
                    .await?;
            }
        }
        if self.clock_at.is_some_and(|at| now >= at) {
            self.clock_at = Some(now + self.ctx.config.progress_interval);
            // A clock reading is worth a request only while credits last; the next one follows.
            if self.request_credits.try_take().is_ok() {
                self.send("public/get_time", json!({}), Pending::Clock)
                    .await?;
            }
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((what, _)) = self.pending.remove(&id) {
                self.on_timeout(what)?;
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self, what: Pending) -> Result<(), SessionEnd> {
        match what {
            Pending::Step(step) => Err(retry(format!("no answer to {step:?} in time"))),
            Pending::AuthRefresh => Err(retry("no answer to token refresh in time")),
            Pending::Test(_) | Pending::Clock => Ok(()),
            Pending::Backfill { request, attempt } => {
                self.work_in_flight -= 1;
                self.retry_backfill(request, attempt, "timed out");
                Ok(())
            }
            Pending::Discovery(d) => {
                self.work_in_flight -= 1;
                self.retry_discovery(d, "timed out");
                Ok(())
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, WsError>>,
    ) -> Result<(), SessionEnd> {
        let text = match frame {
            None => return Err(retry("connection closed by the server")),
            Some(Err(WsError::Capacity(e))) => {
                FeedMetrics::add(&self.ctx.metrics.oversized_frames, 1);
                return Err(retry(format!("frame rejected: {e}")));
            }
            Some(Err(e)) => return Err(retry(format!("reading: {e}"))),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(retry(format!("server closed the connection: {frame:?}")));
            }
            Some(Ok(_)) => {
                self.last_frame = Instant::now();
                return Ok(());
            }
        };
        self.last_frame = Instant::now();
        let incoming = match rpc::classify(&text) {
            Ok(incoming) => incoming,
            Err(e) => {
                FeedMetrics::add(&self.ctx.metrics.malformed_frames, 1);
                warn!(error = %e, frame = %truncate(&text), "Skipping malformed frame.");
                return Ok(());
            }
        };
        match incoming {
            Incoming::Heartbeat { test_request: true } => {
                FeedMetrics::add(&self.ctx.metrics.test_requests_answered, 1);
                self.send("public/test", json!({}), Pending::Test(Instant::now()))
                    .await
            }
            Incoming::Heartbeat {
                test_request: false,
            }
            | Incoming::Other => Ok(()),
            Incoming::Notification => self.on_notification(&text),
            Incoming::OrphanError(error) => self.on_orphan_error(&error),
            Incoming::Response {
                id,
                outcome,
                us_out,
            } => {
                let Some((what, _)) = self.pending.remove(&id) else {
                    debug!(id, "Answer to a request no longer pending.");
                    return Ok(());
                };
                if let Pending::Clock = what {
                    self.on_clock(us_out);
                    return Ok(());
                }
                let outcome = outcome.map(|raw| raw.get().to_owned());
                self.on_response(what, outcome).await
            }
        }
    }

    fn on_orphan_error(&mut self, error: &RpcError) -> Result<(), SessionEnd> {
        warn!(code = error.code, message = %error.message, "Deribit sent an error without a request id.");
        match error.class() {
            ErrorClass::RateLimited => {
                FeedMetrics::add(&self.ctx.metrics.rate_limit_hits, 1);
                // Deribit terminates the session when credits run out: wait for the refill.
                Err(SessionEnd::Retry {
                    reason: format!("rate limited: {error}"),
                    min_delay: self.ctx.config.backoff.rate_limited,
                })
            }
            ErrorClass::Maintenance => Err(SessionEnd::Retry {
                reason: format!("maintenance: {error}"),
                min_delay: self.ctx.config.backoff.maintenance,
            }),
            _ => Ok(()),
        }
    }

    async fn on_response(
        &mut self,
        what: Pending,
        outcome: Result<String, RpcError>,
    ) -> Result<(), SessionEnd> {
        match what {
            Pending::Step(step) => {
                self.step_in_flight = false;
                self.on_step_answer(step, outcome)
            }
            Pending::AuthRefresh => match outcome {
                Ok(result) => self.on_auth(&result),
                Err(error) => Err(retry(format!("token refresh failed: {error}"))),
            },
            Pending::Clock => Ok(()),
            Pending::Test(sent) => {
                let rtt = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.ctx
                    .metrics
                    .heartbeat_rtt_us
                    .store(rtt, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Pending::Backfill { request, attempt } => {
                self.work_in_flight -= 1;
                match outcome {
                    Ok(result) => self.on_backfill_page(&request, &result),
                    Err(error) => {
                        self.on_request_error(&error)?;
                        self.retry_backfill(request, attempt, &error.to_string());
                        Ok(())
                    }
                }
            }
            Pending::Discovery(d) => {
                self.work_in_flight -= 1;
                match outcome {
                    Ok(result) => self.on_discovery_page(d, &result),
                    Err(error) => {
                        self.on_request_error(&error)?;
                        self.retry_discovery(d, &error.to_string());
                        Ok(())
                    }
                }
            }
        }
    }

    /// Side effects of an error answer to a history request.
    fn on_request_error(&mut self, error: &RpcError) -> Result<(), SessionEnd> {
        if error.class() == ErrorClass::RateLimited {
            FeedMetrics::add(&self.ctx.metrics.rate_limit_hits, 1);
            self.request_credits.drain();
        }
        Ok(())
    }

    fn on_step_answer(
        &mut self,
        step: Step,
        outcome: Result<String, RpcError>,
    ) -> Result<(), SessionEnd> {
        let result = match outcome {
            Ok(result) => result,
            Err(error) => {
                return Err(match error.class() {
                    ErrorClass::BadCredentials => SessionEnd::Fatal(FeedError::Auth(format!(
                        "Deribit rejected the credentials: {error}"
                    ))),
                    ErrorClass::RawNeedsAuth => SessionEnd::Fatal(FeedError::Config(format!(
                        "Deribit serves `raw` channels only to authenticated clients: {error}"
                    ))),
                    ErrorClass::RateLimited => {
                        FeedMetrics::add(&self.ctx.metrics.rate_limit_hits, 1);
                        SessionEnd::Retry {
                            reason: format!("{step:?}: {error}"),
                            min_delay: self.ctx.config.backoff.rate_limited,
                        }
                    }
                    ErrorClass::Maintenance => SessionEnd::Retry {
                        reason: format!("{step:?}: {error}"),
                        min_delay: self.ctx.config.backoff.maintenance,
                    },
                    _ => retry(format!("{step:?} failed: {error}")),
                });
            }
        };
        match step {
            Step::Hello => {
                debug!(result = %truncate(&result), "Deribit said hello.");
                Ok(())
            }
            Step::Auth => self.on_auth(&result),
            Step::SetHeartbeat => {
                // Deribit sends something at least every interval; long silence means dead.
                self.watchdog = Some(self.ctx.config.silence_timeout());
                Ok(())
            }
            Step::Subscribe(requested) => {
                let granted: Vec<String> = serde_json::from_str(&result).unwrap_or_default();
                let missing: Vec<&String> =
                    requested.iter().filter(|c| !granted.contains(c)).collect();
                if !missing.is_empty() {
                    warn!(
                        ?missing,
                        "Deribit did not confirm these channels; completeness holds until a connection has them all."
                    );
                    self.unconfirmed.extend(missing.into_iter().cloned());
                }
                if self.steps.is_empty() {
                    self.on_subscribed();
                }
                Ok(())
            }
        }
    }

    fn on_auth(&mut self, result: &str) -> Result<(), SessionEnd> {
        let auth: AuthResult = serde_json::from_str(result)
            .map_err(|e| retry(format!("unreadable auth answer: {e}")))?;
        // Refresh at 80 % of the lifetime, well before expiry.
        let lifetime = Duration::from_secs(auth.expires_in).mul_f64(0.8);
        self.refresh_at = Some(Instant::now() + lifetime.max(Duration::from_secs(1)));
        self.refresh_token = Some(auth.refresh_token);
        info!(expires_in_s = auth.expires_in, "Authenticated.");
        Ok(())
    }

    /// Whether nothing is missing: every channel subscribed (and confirmed), no backfill,
    /// discovery or refetch pending, no live trade held back.
    fn settled(&self) -> bool {
        self.subscribed
            && self.unconfirmed.is_empty()
            && self.steps.is_empty()
            && !self.step_in_flight
            && self.work.is_empty()
            && self.work_in_flight == 0
            && self.discoveries_running == 0
            && self.held_unknown.is_empty()
            && self.shed.is_empty()
            && !self.ctx.sequencer.is_backfilling()
    }

    /// A reading of Deribit's clock: hand out the new completeness time, if it advanced. A full
    /// queue skips it (a later one supersedes it; nothing is lost).
    fn on_clock(&mut self, us_out: Option<i64>) {
        let settled = self.settled();
        match self.ctx.clock.on_server_time(us_out, settled, now_ms()) {
            Reading::Advanced(complete_to) => {
                if self
                    .ctx
                    .tx
                    .try_send(Ok(FeedEvent::Progress(complete_to)))
                    .is_ok()
                {
                    self.ctx
                        .metrics
                        .complete_to_ms
                        .store(complete_to, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Reading::Held => {}
            Reading::Implausible => {
                FeedMetrics::add(&self.ctx.metrics.implausible_server_times, 1);
                warn!(
                    us_out,
                    "Deribit's clock reading is missing or far from ours; completeness holds."
                );
            }
        }
    }

    fn on_subscribed(&mut self) {
        self.subscribed = true;
        self.clock_at = Some(Instant::now());
        self.ctx
            .metrics
            .subscribed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!(channels = self.ctx.config.channels.len(), "Subscribed.");
        if self.ctx.recover {
            let mut instruments: Vec<String> = self.ctx.sequencer.positions().into_keys().collect();
            instruments.sort();
            for instrument in instruments {
                if let Some(request) = self.ctx.sequencer.backfill_from_last(&instrument) {
                    self.work.push_back(Work::Backfill {
                        request,
                        attempt: 0,
                    });
                }
            }
        }
        if let Some(since) = self.ctx.discover_since {
            let end = now_ms();
            let start = since.max(end - DISCOVERY_HORIZON_MS);
            if start > since {
                warn!(
                    since,
                    "Outage longer than Deribit's 24 h trade search: new instruments may be incomplete."
                );
            }
            for channel in &self.ctx.config.channels {
                let scope = match channel {
                    Channel::KindCurrency { kind, currency, .. } => Scope::Currency {
                        kind: kind.clone(),
                        currency: currency.clone(),
                    },
                    // Known instruments are covered by their backfill from the last position.
                    Channel::Instrument { instrument, .. }
                        if !self.ctx.sequencer.knows(instrument) =>
                    {
                        Scope::Instrument(instrument.clone())
                    }
                    Channel::Instrument { .. } => continue,
                };
                self.discoveries_running += 1;
                self.work.push_back(Work::Discovery(Discovery {
                    scope,
                    start,
                    end,
                    attempt: 0,
                }));
            }
        }
    }

    fn on_notification(&mut self, text: &str) -> Result<(), SessionEnd> {
        let parsed = match parse_notification(text) {
            Ok(parsed) => parsed,
            Err(crate::Error::NotTrades { .. }) => return Ok(()),
            Err(e) => {
                FeedMetrics::add(&self.ctx.metrics.malformed_frames, 1);
                warn!(error = %e, frame = %truncate(text), "Skipping malformed notification.");
                return Ok(());
            }
        };
        let channel = parsed.channel.unwrap_or_default();
        let span =
            info_span!("deribit.notification", channel = %channel, trades = parsed.trades.len());
        let _entered = span.enter();
        for rejected in &parsed.rejected {
            FeedMetrics::add(&self.ctx.metrics.invalid_trades, 1);
            warn!(channel = %channel, index = rejected.index, reason = %rejected.reason, raw = %truncate(&rejected.raw), "Skipping invalid trade.");
        }
        if parsed.rejected_more > 0 {
            FeedMetrics::add(&self.ctx.metrics.invalid_trades, parsed.rejected_more);
            warn!(channel = %channel, more = parsed.rejected_more, "Skipping further invalid trades of the same frame.");
        }
        let metrics = self.ctx.metrics;
        let now = now_ms();
        let mut trades = parsed.trades;
        self.refuse_future_stamped(&mut trades, now, &channel);
        FeedMetrics::add(&metrics.trades_received, trades.len() as u64);
        for trade in &trades {
            metrics.observe_latency_ms(
                u64::try_from(now.saturating_sub(trade.timestamp)).unwrap_or(0),
            );
        }
        if self.discoveries_running > 0 {
            // Instruments first seen during discovery wait until their history is known.
            let (unknown, known): (Vec<Trade>, Vec<Trade>) = trades
                .into_iter()
                .partition(|t| !self.ctx.sequencer.knows(&t.instrument_name));
            let room = self
                .ctx
                .config
                .max_held_per_instrument
                .saturating_sub(self.held_unknown.len());
            if unknown.len() > room {
                warn!(
                    dropped = unknown.len() - room,
                    "Too many trades held during discovery; dropping the excess."
                );
            }
            self.held_unknown.extend(unknown.into_iter().take(room));
            trades = known;
        }
        let out = self.ctx.sequencer.on_live(trades);
        self.apply(out, &span)
    }

    fn on_backfill_page(
        &mut self,
        request: &BackfillRequest,
        result: &str,
    ) -> Result<(), SessionEnd> {
        let page: TradesPage = match serde_json::from_str(result) {
            Ok(page) => page,
            Err(e) => {
                FeedMetrics::add(&self.ctx.metrics.malformed_frames, 1);
                let out = self.ctx.sequencer.on_backfill_failed(&request.instrument);
                warn!(instrument = %request.instrument, error = %e, "Unreadable history page.");
                return self.apply(out, &Span::current());
            }
        };
        let has_more = page.has_more;
        let trades = self.valid_trades(page, &request.instrument);
        let span = info_span!("deribit.backfill", instrument = %request.instrument, from_seq = request.start_seq, trades = trades.len());
        let _entered = span.enter();
        let out = self
            .ctx
            .sequencer
            .on_backfill_page(&request.instrument, trades, has_more);
        self.apply(out, &span)
    }

    fn on_discovery_page(&mut self, mut d: Discovery, result: &str) -> Result<(), SessionEnd> {
        let Ok(page) = serde_json::from_str::<TradesPage>(result) else {
            FeedMetrics::add(&self.ctx.metrics.malformed_frames, 1);
            self.retry_discovery(d, "unreadable page");
            return Ok(());
        };
        let has_more = page.has_more;
        let trades = self.valid_trades(page, "discovery");
        let last_ts = trades.iter().map(|t| t.timestamp).max();
        let span = info_span!("deribit.discovery", scope = ?d.scope, trades = trades.len());
        let _entered = span.enter();
        let out = self.ctx.sequencer.on_discovered(trades);
        self.apply(out, &span)?;
        match last_ts {
            // Pages overlap at the boundary timestamp; duplicates are dropped by trade_seq.
            Some(ts) if has_more && ts < d.end => {
                d.start = if ts > d.start { ts } else { d.start + 1 };
                d.attempt = 0;
                self.work.push_front(Work::Discovery(d));
                Ok(())
            }
            _ => self.discovery_done(&span),
        }
    }

    fn discovery_done(&mut self, span: &Span) -> Result<(), SessionEnd> {
        self.discoveries_running = self.discoveries_running.saturating_sub(1);
        if self.discoveries_running == 0 && !self.held_unknown.is_empty() {
            let held = std::mem::take(&mut self.held_unknown);
            let out = self.ctx.sequencer.on_live(held);
            return self.apply(out, span);
        }
        Ok(())
    }

    fn retry_backfill(&mut self, request: BackfillRequest, attempt: u32, why: &str) {
        if attempt + 1 < MAX_ATTEMPTS {
            debug!(instrument = %request.instrument, attempt, why, "Retrying history request.");
            self.work.push_back(Work::Backfill {
                request,
                attempt: attempt + 1,
            });
            return;
        }
        warn!(instrument = %request.instrument, why, "History request failed for good.");
        let out = self.ctx.sequencer.on_backfill_failed(&request.instrument);
        // apply() only fails when the consumer is gone, which the next emit reports again.
        let _ = self.apply(out, &Span::current());
    }

    fn retry_discovery(&mut self, mut d: Discovery, why: &str) {
        d.attempt += 1;
        if d.attempt < MAX_ATTEMPTS {
            self.work.push_back(Work::Discovery(d));
            return;
        }
        warn!(scope = ?d.scope, why, "Instrument discovery failed; continuing without it.");
        let _ = self.discovery_done(&Span::current());
    }

    /// The page's valid trades; the rejected ones counted and logged (the first few in detail).
    fn valid_trades(&self, page: TradesPage, source: &str) -> Vec<Trade> {
        let metrics = self.ctx.metrics;
        for rejected in &page.trades.rejected {
            FeedMetrics::add(&metrics.invalid_trades, 1);
            warn!(source, index = rejected.index, reason = %rejected.reason, raw = %truncate(&rejected.raw), "Skipping invalid history trade.");
        }
        if page.trades.rejected_more > 0 {
            FeedMetrics::add(&metrics.invalid_trades, page.trades.rejected_more);
            warn!(
                source,
                more = page.trades.rejected_more,
                "Skipping further invalid trades of the same history page."
            );
        }
        let mut trades = page.trades.trades;
        self.refuse_future_stamped(&mut trades, now_ms(), source);
        trades
    }

    /// Takes out (counts as invalid, WARN) trades stamped implausibly far ahead of our clock.
    fn refuse_future_stamped(&self, trades: &mut Vec<Trade>, now: i64, source: &str) {
        let future = take_future_stamped(trades, now);
        if let Some(first) = future.first() {
            FeedMetrics::add(&self.ctx.metrics.invalid_trades, future.len() as u64);
            warn!(source, count = future.len(), instrument = %first.instrument_name, trade_seq = first.trade_seq, timestamp = first.timestamp, now, "Skipping trades stamped more than {MAX_TRADE_AHEAD_MS} ms ahead of this host's clock.");
        }
    }

    /// Books what the sequencer produced and hands ready trades to the consumer.
    fn apply(&mut self, out: Sequenced, span: &Span) -> Result<(), SessionEnd> {
        let metrics = self.ctx.metrics;
        FeedMetrics::add(&metrics.duplicates, out.duplicates);
        FeedMetrics::add(&metrics.gaps_detected, out.gaps_detected);
        FeedMetrics::add(&metrics.gaps_filled, out.gaps_filled);
        FeedMetrics::add(&metrics.backfilled_trades, out.backfilled);
        for gap in &out.gaps {
            FeedMetrics::add(&metrics.gaps_unfilled, 1);
            warn!(instrument = %gap.instrument, from_seq = gap.from_seq, to_seq = gap.to_seq, "Trades missing from Deribit's history: gap not filled.");
        }
        for request in out.requests {
            info!(instrument = %request.instrument, from_seq = request.start_seq, to_seq = ?request.end_seq, "Backfilling.");
            self.work.push_back(Work::Backfill {
                request,
                attempt: 0,
            });
        }
        self.emit(out.ready, span)
    }

    fn emit(&mut self, trades: Vec<Trade>, span: &Span) -> Result<(), SessionEnd> {
        if trades.is_empty() {
            return Ok(());
        }
        let count = trades.len() as u64;
        let trace = self.ctx.trace.and_then(|extract| extract(span));
        match self
            .ctx
            .tx
            .try_send(Ok(FeedEvent::Trades(TradeBatch { trades, trace })))
        {
            Ok(()) => {
                FeedMetrics::add(&self.ctx.metrics.trades_emitted, count);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                FeedMetrics::add(&self.ctx.metrics.shed_batches, 1);
                if let Ok(FeedEvent::Trades(batch)) = item {
                    warn!(
                        trades = batch.trades.len(),
                        "Consumer queue full: batch shed, it will be fetched again."
                    );
                    let mut rewound: Vec<&str> = Vec::new();
                    for trade in &batch.trades {
                        if !rewound.contains(&trade.instrument_name.as_str()) {
                            rewound.push(&trade.instrument_name);
                            let before = Position {
                                trade_seq: trade.trade_seq.saturating_sub(1),
                                timestamp: trade.timestamp,
                            };
                            self.ctx.sequencer.rewind(&trade.instrument_name, before);
                            self.shed.insert(trade.instrument_name.clone());
                        }
                    }
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SessionEnd::ConsumerGone),
        }
    }
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
