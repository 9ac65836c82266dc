//! The socket of one session: connecting, sending requests with ids, matching answers to them,
//! and the deadline of each request still unanswered.
//!
//! What a request is *for* is the caller's tag `P`; the transport only keeps it until the
//! answer (or the deadline) comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ports::FeedError;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};

use super::end::{SessionEnd, retry};
use crate::config::DeribitConfig;
use crate::metrics::FeedMetrics;
use crate::rpc;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A JSON-RPC request to send, tagged with what its answer is for.
#[derive(Debug)]
pub(super) struct Request<P> {
    /// E.g. `public/subscribe`.
    pub method: &'static str,
    /// The `params` object.
    pub params: serde_json::Value,
    /// What the answer is for.
    pub tag: P,
}

/// What the socket delivered.
pub(super) enum Frame {
    /// A text frame: JSON-RPC.
    Text(Utf8Bytes),
    /// A ping, pong or binary frame: proof of life, nothing to read.
    Other,
}

/// One connection and the requests in flight on it.
pub(super) struct Transport<'a, P> {
    ws: Socket,
    next_id: u64,
    pending: HashMap<u64, (P, Instant)>,
    request_timeout: Duration,
    metrics: &'a FeedMetrics,
}

impl<'a, P> Transport<'a, P> {
    /// Opens the WebSocket (TLS for `wss://`), within the request timeout.
    pub async fn connect(
        config: &DeribitConfig,
        metrics: &'a FeedMetrics,
    ) -> Result<Self, SessionEnd> {
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
        let ws = match tokio::time::timeout(config.request_timeout, connecting).await {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => return Err(retry(format!("connecting to {}: {e}", config.url))),
            Err(_) => return Err(retry(format!("connecting to {}: timed out", config.url))),
        };
        Ok(Transport {
            ws,
            next_id: 1,
            pending: HashMap::new(),
            request_timeout: config.request_timeout,
            metrics,
        })
    }

    /// Sends `request` under a fresh id; its tag waits for the answer or the deadline.
    pub async fn send(&mut self, request: Request<P>) -> Result<(), SessionEnd> {
        let id = self.next_id;
        self.next_id += 1;
        let text = rpc::request(id, request.method, &request.params);
        self.pending
            .insert(id, (request.tag, Instant::now() + self.request_timeout));
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| retry(format!("sending {}: {e}", request.method)))
    }

    /// The next frame. Cancel-safe: it only awaits the socket.
    pub async fn next_frame(&mut self) -> Result<Frame, SessionEnd> {
        match self.ws.next().await {
            None => Err(retry("connection closed by the server")),
            Some(Err(WsError::Capacity(e))) => {
                FeedMetrics::add(&self.metrics.oversized_frames, 1);
                Err(retry(format!("frame rejected: {e}")))
            }
            Some(Err(e)) => Err(retry(format!("reading: {e}"))),
            Some(Ok(Message::Text(text))) => Ok(Frame::Text(text)),
            Some(Ok(Message::Close(frame))) => {
                Err(retry(format!("server closed the connection: {frame:?}")))
            }
            Some(Ok(_)) => Ok(Frame::Other),
        }
    }

    /// The tag of request `id`, if it is still waiting for its answer.
    pub fn answered(&mut self, id: u64) -> Option<P> {
        self.pending.remove(&id).map(|(tag, _)| tag)
    }

    /// Takes out the requests whose deadline has passed.
    pub fn expired(&mut self, now: Instant) -> Vec<P> {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        // In the order they were sent, so retries queue up the same way.
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.answered(id)).collect()
    }

    /// The earliest deadline of a request in flight.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, deadline)| *deadline).min()
    }

    /// A polite close, best effort: the peer may already be gone.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
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
