//! One client's WebSocket connection: requests in, replies and pushes out, heartbeats, and the
//! scripted faults (silence, dropping after N messages, slow history answers).
//!
//! Everything a connection sends goes through its unbounded queue, so a test (or a trade
//! generated on another task) can push to it without awaiting; the fault checks sit where the
//! queue drains, so they apply to replies and pushes alike.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::State;
use super::frames::test_request;
use super::rpc::handle;

/// What a connection's task is asked to send.
pub(super) enum Outbound {
    /// A text frame.
    Text(String),
    /// Close the connection.
    Close,
}

/// A connected client, as the shared state sees it.
pub(super) struct Connection {
    pub(super) tx: mpsc::UnboundedSender<Outbound>,
    pub(super) subscriptions: HashSet<String>,
    pub(super) authed: bool,
    pub(super) silent: bool,
    /// Close after this many more outbound messages.
    pub(super) drop_after: Option<u64>,
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Serves one accepted TCP stream until the client or a scripted fault closes it.
pub(super) async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    // Each frame goes out at once, as from Deribit's servers: with Nagle's algorithm on, a frame
    // written while the last one is unacknowledged waits for the client's delayed ACK (40 ms).
    let _ = stream.set_nodelay(true);
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
                let reply = handle(&state, id, text.as_str());
                let (mut replies, start_heartbeat) = (reply.frames, reply.heartbeat);
                let close = reply.close.then_some(Outbound::Close);
                let delay = history_delay(&state, text.as_str());
                match delay {
                    Some(delay) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            for reply in replies.drain(..) {
                                let _ = tx.send(Outbound::Text(reply));
                            }
                            if let Some(close) = close { let _ = tx.send(close); }
                        });
                    }
                    None => {
                        for reply in replies.drain(..) {
                            let _ = tx.send(Outbound::Text(reply));
                        }
                        if let Some(close) = close { let _ = tx.send(close); }
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
                if !silent && sink.send(Message::Text(test_request().into())).await.is_err() { break; }
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
