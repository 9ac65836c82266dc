//! A fake Deribit: the public JSON-RPC methods the trade feed uses, on `ws://127.0.0.1:PORT`.
//!
//! It keeps a record of every trade it ever generated (per instrument, `trade_seq` from 1 and
//! realistic timestamps), pushes new trades to subscribed clients as `trades.*` notifications
//! shaped like Deribit's documented ones, and answers the history methods from that record with
//! `has_more` paging. Faults are scripted: drop connections now or after N messages, go silent,
//! send raw frames (malformed, oversized, id-less errors), answer a method with an error,
//! withhold trades from history (or from its time index only), fail or close on the n-th call
//! of a method ([`CallFault`]), expire an instrument, require credentials.
//!
//! * this file: [`FakeDeribit`], the handle a test starts, scripts and observes, and the state
//!   behind it (one lock, shared by every part).
//! * `market`: [`FakeInstrument`], trade generation, which channel carries which trade, and
//!   `public/get_instruments`.
//! * `connection`: one client's WebSocket: its replies, pushes, heartbeats and scripted faults.
//! * `rpc`: the answer to each JSON-RPC request (hello, test, time, heartbeat, auth, subscribe),
//!   scripted call faults first.
//! * `history`: the `get_last_trades_*` methods, paged from the record.
//! * `frames`: the frames every part sends, with Deribit's server times.

mod connection;
mod frames;
mod history;
mod market;
mod rpc;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;

use connection::{Connection, Outbound, serve};
pub use market::FakeInstrument;

/// Everything the fake knows and has been scripted to do: one lock, taken by the handle and by
/// every connection, so a scripted fault applies from the next frame on.
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
    /// Trades `get_last_trades_by_instrument_and_time` leaves out (by sequence they are there).
    hidden_from_time: HashSet<(String, u64)>,
    /// Calls of each method so far.
    calls: HashMap<String, u64>,
    /// Scripted faults: (method, its call number, what happens).
    call_faults: Vec<(String, u64, CallFault)>,
}

/// What a scripted call of a method gets instead of its answer
/// ([`FakeDeribit::fault_on_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFault {
    /// An error answer.
    Error {
        /// Deribit's code, e.g. 10028.
        code: i64,
        /// Its message, e.g. `too_many_requests`.
        message: String,
    },
    /// An error answer, then the connection closed (Deribit ends the session on 10028).
    ErrorThenClose {
        /// Deribit's code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// No answer: the connection is closed instead.
    Close,
}

impl CallFault {
    /// Deribit's answer to a client out of credits, which also ends the session.
    pub fn too_many_requests() -> Self {
        CallFault::ErrorThenClose {
            code: 10028,
            message: "too_many_requests".into(),
        }
    }
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
        market::generate(&mut state, instrument, n)
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
            market::generate(&mut state, &name, n);
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

    /// Expires `instrument` now: `public/get_instruments` lists it with `expired: true` only.
    pub fn expire(&self, instrument: &str) {
        let mut state = self.lock();
        let now = frames::server_us(state.clock_offset_ms) / 1000;
        if let Some(spec) = state.instruments.iter_mut().find(|i| i.name == instrument) {
            spec.expiration_timestamp = Some(now);
        }
    }

    /// `get_last_trades_by_instrument_and_time` will leave this trade out (by sequence it is
    /// there): a hole a time-paged fetch must close by `trade_seq`.
    pub fn hide_from_time_index(&self, instrument: &str, trade_seq: u64) {
        self.lock()
            .hidden_from_time
            .insert((instrument.to_owned(), trade_seq));
    }

    /// The `nth` call of `method` from now on (1 = the next) gets `fault` instead of its
    /// answer; later calls are answered again.
    pub fn fault_on_call(&self, method: &str, nth: u64, fault: CallFault) {
        let mut state = self.lock();
        let done = state.calls.get(method).copied().unwrap_or(0);
        state
            .call_faults
            .push((method.to_owned(), done + nth, fault));
    }

    /// Calls of `method` so far (over all connections).
    pub fn calls(&self, method: &str) -> u64 {
        self.lock().calls.get(method).copied().unwrap_or(0)
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
