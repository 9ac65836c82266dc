//! A fake Deribit: the public JSON-RPC methods the trade feed uses, on `ws://127.0.0.1:PORT`.
//!
//! It keeps a record of every trade it ever generated (per instrument, `trade_seq` from 1 and
//! realistic timestamps), pushes new trades to subscribed clients as `trades.*` notifications
//! shaped like Deribit's documented ones, and answers the history methods from that record with
//! `has_more` paging. Faults are scripted: drop connections now or after N messages, go silent,
//! send raw frames (malformed, oversized, id-less errors), answer a method with an error,
//! withhold trades from history, require credentials.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// An instrument the fake trades, with the kind and currency its kind/currency channel uses.
#[derive(Debug, Clone)]
pub struct FakeInstrument {
    /// Instrument name.
    pub name: String,
    /// `future`, `option`, …
    pub kind: String,
    /// `BTC`, `ETH`, …
    pub currency: String,
    /// Starting price.
    pub price: f64,
}

impl FakeInstrument {
    /// An instrument.
    pub fn new(name: &str, kind: &str, currency: &str, price: f64) -> Self {
        FakeInstrument {
            name: name.into(),
            kind: kind.into(),
            currency: currency.into(),
            price,
        }
    }

    /// BTC-PERPETUAL, a BTC option and ETH-PERPETUAL.
    pub fn default_market() -> Vec<Self> {
        vec![
            FakeInstrument::new("BTC-PERPETUAL", "future", "BTC", 67_000.0),
            FakeInstrument::new("BTC-27DEC24-70000-C", "option", "BTC", 0.045),
            FakeInstrument::new("ETH-PERPETUAL", "future", "ETH", 3_500.0),
        ]
    }
}

enum Outbound {
    Text(String),
    Close,
}

struct Connection {
    tx: mpsc::UnboundedSender<Outbound>,
    subscriptions: HashSet<String>,
    authed: bool,
    silent: bool,
    /// Close after this many more outbound messages.
    drop_after: Option<u64>,
}

#[derive(Default)]
struct State {
    instruments: Vec<FakeInstrument>,
    record: HashMap<String, Vec<Value>>,
    last_ts: HashMap<String, i64>,
    connections: HashMap<u64, Connection>,
    failures: HashMap<String, VecDeque<(i64, String)>>,
    withheld: HashSet<(String, u64)>,
    credentials: Option<(String, String)>,
    test_request_every: Option<Duration>,
    subscribe_calls: Vec<(u64, Vec<String>)>,
    methods: Vec<String>,
    test_replies: Vec<Duration>,
    unanswered_tests: HashMap<u64, Instant>,
    auths: u64,
    refreshes: u64,
    connections_total: u64,
    rng: u64,
    /// Shift of the server's clock from the wall clock (trade timestamps and `usOut`).
    clock_offset_ms: i64,
    /// Replaces `usOut` on answers (hostile or broken clocks).
    us_out_override: Option<Value>,
    /// Answers to the history methods are sent this late (a slow backfill).
    history_delay: Option<Duration>,
    /// Channels left out of subscription confirmations.
    unconfirmed: HashSet<String>,
}

/// The fake server. Dropping it stops accepting connections.
pub struct FakeDeribit {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeDeribit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDeribit")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeDeribit {
    fn drop(&mut self) {
        self.accept.abort();
        self.disconnect_all();
    }
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

impl FakeDeribit {
    /// Starts a fake trading `instruments` on a free loopback port.
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start(instruments: Vec<FakeInstrument>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            instruments,
            rng: 0x2545_F491_4F6C_DD1D,
            ..State::default()
        }));
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&accept_state);
                tokio::spawn(serve(stream, state));
            }
        });
        Ok(FakeDeribit {
            state,
            addr,
            accept,
        })
    }

    /// `ws://127.0.0.1:PORT/ws/api/v2`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/api/v2", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ------------------------------------------------------------------ market

    /// Generates `n` trades of `instrument` now: recorded, and pushed as one notification per
    /// matching subscription to every connected client.
    pub fn trade(&self, instrument: &str, n: usize) -> Vec<Value> {
        let mut state = self.lock();
        generate(&mut state, instrument, n)
    }

    /// Moves `instrument`'s reference price by `factor` (a simulated market drifts).
    pub fn move_price(&self, instrument: &str, factor: f64) {
        let mut state = self.lock();
        if let Some(spec) = state.instruments.iter_mut().find(|i| i.name == instrument) {
            spec.price *= factor;
        }
    }

    /// Generates `n` trades on each instrument, interleaved, one notification per instrument.
    pub fn trade_all(&self, n: usize) {
        let mut state = self.lock();
        let names: Vec<String> = state.instruments.iter().map(|i| i.name.clone()).collect();
        for name in names {
            generate(&mut state, &name, n);
        }
    }

    /// Every trade generated so far for `instrument`, in `trade_seq` order.
    pub fn record(&self, instrument: &str) -> Vec<Value> {
        self.lock()
            .record
            .get(instrument)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds an instrument (e.g. one listed while a client was away).
    pub fn list(&self, instrument: FakeInstrument) {
        self.lock().instruments.push(instrument);
    }

    /// History will not contain this trade (Deribit lost it): tests unfillable gaps.
    pub fn withhold_from_history(&self, instrument: &str, trade_seq: u64) {
        self.lock()
            .withheld
            .insert((instrument.to_owned(), trade_seq));
    }

    // ------------------------------------------------------------------ faults

    /// Closes every connection now.
    pub fn disconnect_all(&self) {
        let mut state = self.lock();
        for (_, connection) in state.connections.drain() {
            let _ = connection.tx.send(Outbound::Close);
        }
    }

    /// Closes each current connection after it has sent `n` more messages.
    pub fn drop_after(&self, n: u64) {
        for connection in self.lock().connections.values_mut() {
            connection.drop_after = Some(n);
        }
    }

    /// Current connections stop sending anything (and stop answering) without closing.
    pub fn go_silent(&self) {
        for connection in self.lock().connections.values_mut() {
            connection.silent = true;
        }
    }

    /// Sends `text` verbatim to every connected client.
    pub fn send_raw(&self, text: &str) {
        for connection in self.lock().connections.values() {
            let _ = connection.tx.send(Outbound::Text(text.to_owned()));
        }
    }

    /// Answers the next call of `method` with error `code`/`message` instead of a result.
    pub fn fail_next(&self, method: &str, code: i64, message: &str) {
        self.lock()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back((code, message.to_owned()));
    }

    /// Requires `public/auth` with these credentials for `raw` channels.
    pub fn require_credentials(&self, client_id: &str, client_secret: &str) {
        self.lock().credentials = Some((client_id.to_owned(), client_secret.to_owned()));
    }

    /// Shifts the server's clock (trade timestamps, `usIn`/`usOut`) by `ms` from the wall clock.
    pub fn shift_clock(&self, ms: i64) {
        self.lock().clock_offset_ms = ms;
    }

    /// Answers with this `usOut` from now on (`None`: the server's clock again), e.g. a broken
    /// clock's `-1` or a string.
    pub fn set_us_out(&self, us_out: Option<Value>) {
        self.lock().us_out_override = us_out;
    }

    /// Leaves `channel` out of the confirmation of any `public/subscribe` that asks for it (as
    /// Deribit does for a channel it does not serve); nothing is sent on it.
    pub fn leave_unconfirmed(&self, channel: &str) {
        self.lock().unconfirmed.insert(channel.to_owned());
    }

    /// Answers the history methods (`get_last_trades_*`) this late from now on: a slow
    /// backfill, while live notifications and other answers flow on.
    pub fn delay_history(&self, delay: Option<Duration>) {
        self.lock().history_delay = delay;
    }

    /// After `public/set_heartbeat`, send a `test_request` this often (instead of the interval
    /// asked for, so tests need not wait 10 s).
    pub fn send_test_requests_every(&self, every: Duration) {
        self.lock().test_request_every = Some(every);
    }

    // ------------------------------------------------------------------ observations

    /// Connections accepted so far.
    pub fn connections_total(&self) -> u64 {
        self.lock().connections_total
    }

    /// Connections open now.
    pub fn connections_open(&self) -> usize {
        self.lock().connections.len()
    }

    /// Every `public/subscribe` call: (connection, channels asked for).
    pub fn subscribe_calls(&self) -> Vec<(u64, Vec<String>)> {
        self.lock().subscribe_calls.clone()
    }

    /// Every method called, in order (over all connections).
    pub fn methods(&self) -> Vec<String> {
        self.lock().methods.clone()
    }

    /// Delays between each `test_request` and the client's `public/test`.
    pub fn test_reply_delays(&self) -> Vec<Duration> {
        self.lock().test_replies.clone()
    }

    /// `client_credentials` grants and refresh-token grants served.
    pub fn auth_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.auths, state.refreshes)
    }
}

fn generate(state: &mut State, instrument: &str, n: usize) -> Vec<Value> {
    let Some(spec) = state
        .instruments
        .iter()
        .find(|i| i.name == instrument)
        .cloned()
    else {
        return Vec::new();
    };
    let now = server_us(state.clock_offset_ms) / 1000;
    let mut trades = Vec::with_capacity(n);
    for _ in 0..n {
        state.rng ^= state.rng << 13;
        state.rng ^= state.rng >> 7;
        state.rng ^= state.rng << 17;
        let r = state.rng;
        let record = state.record.entry(spec.name.clone()).or_default();
        let seq = record.len() as u64 + 1;
        let last_ts = state.last_ts.entry(spec.name.clone()).or_insert(now);
        *last_ts = (*last_ts).max(now);
        #[allow(clippy::cast_precision_loss)]
        let price = spec.price * (1.0 + ((r % 2001) as f64 - 1000.0) * 1e-6);
        let mut trade = json!({
            "trade_seq": seq,
            "trade_id": format!("{}", 300_000_000 + r % 100_000_000),
            "timestamp": *last_ts,
            "tick_direction": r % 4,
            "price": price,
            "mark_price": price,
            "instrument_name": spec.name,
            "index_price": spec.price,
            "direction": if r & 1 == 0 { "buy" } else { "sell" },
            "amount": (r % 50 + 1) * 10,
        });
        if spec.kind == "option" {
            // Options trade in coin contracts of 0.1 (futures in USD, multiples of 10).
            #[allow(clippy::cast_precision_loss)]
            let contracts = (r % 50 + 1) as f64 / 10.0;
            trade["amount"] = json!(contracts);
            trade["iv"] = json!(55.5);
            trade["contracts"] = json!(contracts);
        }
        record.push(trade.clone());
        trades.push(trade);
    }
    for connection in state.connections.values() {
        for channel in &connection.subscriptions {
            if matches(channel, &spec) {
                let note = json!({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": trades}});
                let _ = connection.tx.send(Outbound::Text(note.to_string()));
            }
        }
    }
    trades
}

fn matches(channel: &str, spec: &FakeInstrument) -> bool {
    let parts: Vec<&str> = channel.split('.').collect();
    match parts.as_slice() {
        ["trades", instrument, _] => *instrument == spec.name,
        ["trades", kind, currency, _] => {
            *kind == spec.kind && (*currency == spec.currency || *currency == "any")
        }
        _ => false,
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    {
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.connections_total += 1;
        s.connections.insert(
            id,
            Connection {
                tx: tx.clone(),
                subscriptions: HashSet::new(),
                authed: false,
                silent: false,
                drop_after: None,
            },
        );
    }
    let mut heartbeat: Option<tokio::time::Interval> = None;
    loop {
        tokio::select! {
            incoming = source.next() => {
                let Some(Ok(message)) = incoming else { break };
                let Message::Text(text) = message else { continue };
                let (replies, start_heartbeat) = handle(&state, id, text.as_str());
                let delay = history_delay(&state, text.as_str());
                match delay {
                    Some(delay) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            for reply in replies {
                                let _ = tx.send(Outbound::Text(reply));
                            }
                        });
                    }
                    None => {
                        for reply in replies {
                            let _ = tx.send(Outbound::Text(reply));
                        }
                    }
                }
                if let Some(every) = start_heartbeat {
                    let mut interval = tokio::time::interval(every);
                    interval.tick().await;
                    heartbeat = Some(interval);
                }
            }
            outbound = rx.recv() => {
                let Some(Outbound::Text(text)) = outbound else { break };
                let (silent, close) = {
                    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match s.connections.get_mut(&id) {
                        Some(c) => {
                            let close = c.drop_after.is_some_and(|n| n == 0);
                            if let Some(n) = c.drop_after.as_mut() { *n = n.saturating_sub(1); }
                            (c.silent, close)
                        }
                        None => (false, true),
                    }
                };
                if close { break; }
                if !silent && sink.send(Message::Text(text.into())).await.is_err() { break; }
            }
            () = async { match heartbeat.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                let silent = {
                    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.unanswered_tests.insert(id, Instant::now());
                    s.connections.get(&id).is_none_or(|c| c.silent)
                };
                if !silent {
                    let text = json!({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}).to_string();
                    if sink.send(Message::Text(text.into())).await.is_err() { break; }
                }
            }
        }
    }
    let _ = sink.close().await;
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .connections
        .remove(&id);
}

/// How late the answer to `text` goes out: the scripted delay, for history methods only.
fn history_delay(state: &Arc<Mutex<State>>, text: &str) -> Option<Duration> {
    let delay = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .history_delay?;
    let method = serde_json::from_str::<Value>(text).ok()?["method"]
        .as_str()?
        .to_owned();
    method
        .starts_with("public/get_last_trades")
        .then_some(delay)
}

/// Answers one request; returns the frames to send and, after `set_heartbeat`, the test pace.
fn handle(
    state: &Arc<Mutex<State>>,
    connection: u64,
    text: &str,
) -> (Vec<String>, Option<Duration>) {
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if s.connections.get(&connection).is_some_and(|c| c.silent) {
        return (Vec::new(), None);
    }
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return (vec![error_frame(&Value::Null, -32700, "parse_error")], None);
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let params = request.get("params").cloned().unwrap_or(json!({}));
    s.methods.push(method.clone());
    if let Some((code, message)) = s.failures.get_mut(&method).and_then(VecDeque::pop_front) {
        return (vec![error_frame(&id, code, &message)], None);
    }
    let mut heartbeat = None;
    let result = match method.as_str() {
        "public/hello" => json!({"version": "1.2.26"}),
        "public/test" => {
            if let Some(sent) = s.unanswered_tests.remove(&connection) {
                s.test_replies.push(sent.elapsed());
            }
            json!({"version": "1.2.26"})
        }
        "public/get_time" => json!(server_us(s.clock_offset_ms) / 1000),
        "public/set_heartbeat" => {
            let asked = params.get("interval").and_then(Value::as_u64).unwrap_or(0);
            if asked < 10 {
                return (vec![error_frame(&id, 11050, "bad_request")], None);
            }
            heartbeat = Some(s.test_request_every.unwrap_or(Duration::from_secs(asked)));
            json!("ok")
        }
        "public/auth" => match auth(&mut s, connection, &params) {
            Ok(result) => result,
            Err((code, message)) => return (vec![error_frame(&id, code, message)], None),
        },
        "public/subscribe" => {
            let channels: Vec<String> = params
                .get("channels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let authed = s.connections.get(&connection).is_some_and(|c| c.authed);
            if !authed && channels.iter().any(|c| c.ends_with(".raw")) {
                return (
                    vec![error_frame(
                        &id,
                        13778,
                        "raw_subscriptions_not_available_for_unauthorized",
                    )],
                    None,
                );
            }
            s.subscribe_calls.push((connection, channels.clone()));
            let unconfirmed = s.unconfirmed.clone();
            let channels: Vec<String> = channels
                .into_iter()
                .filter(|c| !unconfirmed.contains(c))
                .collect();
            if let Some(c) = s.connections.get_mut(&connection) {
                c.subscriptions.extend(channels.iter().cloned());
            }
            json!(channels)
        }
        "public/get_last_trades_by_instrument" => by_instrument(&s, &params),
        "public/get_last_trades_by_currency_and_time" => by_currency_and_time(&s, &params),
        "public/get_last_trades_by_instrument_and_time" => by_instrument_and_time(&s, &params),
        _ => return (vec![error_frame(&id, -32601, "Method not found")], None),
    };
    let frame = with_server_times(json!({"jsonrpc": "2.0", "id": id, "result": result}), &s);
    (vec![frame.to_string()], heartbeat)
}

fn auth(s: &mut State, connection: u64, params: &Value) -> Result<Value, (i64, &'static str)> {
    let grant = params
        .get("grant_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match grant {
        "client_credentials" => {
            let given = (
                params
                    .get("client_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                params
                    .get("client_secret")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            let ok = s
                .credentials
                .as_ref()
                .is_none_or(|(id, secret)| given == (id.as_str(), secret.as_str()));
            if !ok {
                return Err((13004, "invalid_credentials"));
            }
            s.auths += 1;
        }
        "refresh_token" => s.refreshes += 1,
        _ => return Err((11050, "bad_request")),
    }
    if let Some(c) = s.connections.get_mut(&connection) {
        c.authed = true;
    }
    Ok(json!({
        "access_token": format!("access-{}", s.auths + s.refreshes),
        "expires_in": 2,
        "refresh_token": format!("refresh-{}", s.auths + s.refreshes),
        "scope": "connection mainaccount",
        "token_type": "bearer",
        "enabled_features": [],
    }))
}

/// The first `count` (param, default 10, at most 1000) of `trades`, with `has_more`.
fn page(params: &Value, mut trades: Vec<Value>) -> Value {
    let count = params
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 1000);
    let count = usize::try_from(count).unwrap_or(1000);
    let has_more = trades.len() > count;
    trades.truncate(count);
    json!({"trades": trades, "has_more": has_more})
}

/// The recorded trades of `instruments`, history still has (not withheld) and `keep` accepts.
fn history<'a>(
    s: &State,
    instruments: impl IntoIterator<Item = &'a str>,
    keep: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    instruments
        .into_iter()
        .flat_map(|i| s.record.get(i).map(Vec::as_slice).unwrap_or_default())
        .filter(|t| {
            let key = (
                t["instrument_name"].as_str().unwrap_or_default().to_owned(),
                t["trade_seq"].as_u64().unwrap_or(0),
            );
            !s.withheld.contains(&key) && keep(t)
        })
        .cloned()
        .collect()
}

fn str_param<'a>(params: &'a Value, name: &str) -> &'a str {
    params.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn time_range(params: &Value) -> std::ops::RangeInclusive<i64> {
    let start = params
        .get("start_timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let end = params
        .get("end_timestamp")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    start..=end
}

fn timestamp(t: &Value) -> i64 {
    t["timestamp"].as_i64().unwrap_or(0)
}

fn by_instrument(s: &State, params: &Value) -> Value {
    let start = params.get("start_seq").and_then(Value::as_u64).unwrap_or(1);
    let end = params
        .get("end_seq")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let trades = history(s, [str_param(params, "instrument_name")], |t| {
        (start..=end).contains(&t["trade_seq"].as_u64().unwrap_or(0))
    });
    page(params, trades)
}

fn by_currency_and_time(s: &State, params: &Value) -> Value {
    let currency = str_param(params, "currency");
    let kind = params.get("kind").and_then(Value::as_str).unwrap_or("any");
    let range = time_range(params);
    let instruments = s
        .instruments
        .iter()
        .filter(|i| {
            (i.currency == currency || currency == "any") && (i.kind == kind || kind == "any")
        })
        .map(|i| i.name.as_str());
    let mut trades = history(s, instruments, |t| range.contains(&timestamp(t)));
    trades.sort_by_key(|t| (timestamp(t), t["trade_seq"].as_u64().unwrap_or(0)));
    page(params, trades)
}

fn by_instrument_and_time(s: &State, params: &Value) -> Value {
    let range = time_range(params);
    page(
        params,
        history(s, [str_param(params, "instrument_name")], |t| {
            range.contains(&timestamp(t))
        }),
    )
}

fn error_frame(id: &Value, code: i64, message: &str) -> String {
    let now = server_us(0);
    json!({"jsonrpc": "2.0", "id": id, "error": {"message": message, "code": code}, "usIn": now, "usOut": now, "usDiff": 0, "testnet": true})
        .to_string()
}

/// The server's clock in µs: the wall clock shifted by `offset_ms`.
fn server_us(offset_ms: i64) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    wall.saturating_add(offset_ms.saturating_mul(1000))
}

/// Adds Deribit's `usIn`/`usOut`/`usDiff`/`testnet` to an answer, `usOut` as scripted.
fn with_server_times(mut frame: Value, s: &State) -> Value {
    let now = server_us(s.clock_offset_ms);
    frame["usIn"] = json!(now);
    frame["usOut"] = match &s.us_out_override {
        Some(v) => v.clone(),
        None => json!(now),
    };
    frame["usDiff"] = json!(0);
    frame["testnet"] = json!(true);
    frame
}
