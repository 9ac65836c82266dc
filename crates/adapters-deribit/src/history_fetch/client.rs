//! The JSON-RPC client of a history fetch: one WebSocket, one request at a time, paced by
//! Deribit's credits ([`CreditBucket`]: 500 of 50 000 refilled at 10 000/s for the history
//! methods; `public/get_instruments` 1/s with a burst of 50).
//!
//! 10028 (out of credits) empties the bucket and waits at least
//! [`BackoffConfig::rate_limited`](crate::config::BackoffConfig) for the pool to refill; Deribit
//! ends the session with it, so the socket is closed and a new one opened after the wait. Other retryable
//! codes and lost connections are retried with backoff; codes retrying cannot help end the fetch
//! with [`FetchError::Rejected`].

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};
use tracing::{debug, warn};

use super::error::FetchError;
use super::instruments::{HistoryChannel, parse_instruments};
use super::page::{Page, parse_page};
use super::pager::{PAGE_SIZE, TradeSource};
use crate::backoff::Backoff;
use crate::config::DeribitConfig;
use crate::credits::CreditBucket;
use crate::rpc::{ErrorClass, Incoming, RpcError, classify};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Attempts per request before the fetch gives up.
pub const MAX_ATTEMPTS: u32 = 12;

/// What the client did, for the progress line and the figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent.
    pub requests: u64,
    /// 10028 answers.
    pub rate_limited: u64,
    /// Requests repeated after a retryable failure.
    pub retries: u64,
    /// Connections opened.
    pub connections: u64,
    /// Frames that were not JSON-RPC (skipped).
    pub malformed_frames: u64,
}

/// Why one attempt failed.
enum Attempt {
    /// Deribit answered with an error.
    Rpc(RpcError),
    /// The connection failed or the answer did not come in time.
    Transport(String),
}

/// Deribit's history methods over one WebSocket.
pub struct HistoryClient {
    config: DeribitConfig,
    socket: Option<Socket>,
    next_id: u64,
    requests: CreditBucket,
    listings: CreditBucket,
    stats: ClientStats,
}

impl std::fmt::Debug for HistoryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryClient")
            .field("url", &self.config.url)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl HistoryClient {
    /// A client for `config`'s endpoint (its URL, request timeout, frame limit and backoff);
    /// it connects on the first request.
    pub fn new(config: DeribitConfig) -> Self {
        HistoryClient {
            config,
            socket: None,
            next_id: 1,
            requests: CreditBucket::requests(),
            listings: CreditBucket::new(50.0, 1.0, 1.0),
            stats: ClientStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The instruments `channels` name that can have traded in `[from_ms, to_ms)`, sorted.
    ///
    /// # Errors
    /// As [`HistoryClient::call`].
    pub async fn instruments(
        &mut self,
        channels: &[HistoryChannel],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<String>, FetchError> {
        let mut names = BTreeSet::new();
        for channel in channels {
            if let HistoryChannel::Instrument(name) = channel {
                names.insert(name.clone());
            }
            for params in channel.queries() {
                let result = self.call("public/get_instruments", params).await?;
                let (listed, skipped) =
                    parse_instruments(&result).map_err(|reason| FetchError::Malformed {
                        method: "public/get_instruments".into(),
                        reason,
                    })?;
                if skipped > 0 {
                    warn!(skipped, "Skipped unreadable get_instruments entries.");
                }
                names.extend(
                    listed
                        .into_iter()
                        .filter(|i| channel.matches(i) && i.overlaps(from_ms, to_ms))
                        .map(|i| i.instrument_name),
                );
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Sends `method` with `params` and returns its `result` as JSON text, paced by credits,
    /// retried while retrying can help.
    ///
    /// # Errors
    /// [`FetchError::Rejected`] for an error code retrying cannot help,
    /// [`FetchError::GaveUp`] after [`MAX_ATTEMPTS`], [`FetchError::Config`] for an unusable
    /// endpoint.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<String, FetchError> {
        let mut backoff = Backoff::new(self.config.backoff);
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.pace(method).await;
            let (failure, wait) = match self.attempt(method, &params).await? {
                Ok(result) => return Ok(result),
                Err(Attempt::Rpc(error)) => match error.class() {
                    ErrorClass::RateLimited => {
                        self.stats.rate_limited += 1;
                        self.bucket(method).drain();
                        // Deribit ends the session with 10028: a new one after the wait.
                        if let Some(mut socket) = self.socket.take() {
                            let _ = socket.close(None).await;
                        }
                        let wait = backoff.next_delay().max(self.config.backoff.rate_limited);
                        (error.to_string(), wait)
                    }
                    ErrorClass::Maintenance => {
                        let wait = backoff.next_delay().max(self.config.backoff.maintenance);
                        (error.to_string(), wait)
                    }
                    ErrorClass::Retryable => (error.to_string(), backoff.next_delay()),
                    _ => {
                        return Err(FetchError::Rejected {
                            method: method.to_owned(),
                            code: error.code,
                            message: error.message,
                        });
                    }
                },
                Err(Attempt::Transport(reason)) => {
                    self.socket = None;
                    (reason, backoff.next_delay())
                }
            };
            if attempts >= MAX_ATTEMPTS {
                return Err(FetchError::GaveUp {
                    method: method.to_owned(),
                    attempts,
                    last: failure,
                });
            }
            self.stats.retries += 1;
            warn!(method, attempt = attempts, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), reason = %failure, "Retrying a history request.");
            tokio::time::sleep(wait).await;
        }
    }

    fn bucket(&mut self, method: &str) -> &mut CreditBucket {
        if method == "public/get_instruments" {
            &mut self.listings
        } else {
            &mut self.requests
        }
    }

    /// Waits until the method's pool has the request's credits, and takes them.
    async fn pace(&mut self, method: &str) {
        while let Err(wait) = self.bucket(method).try_take() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One try: connect if needed, send, read until the answer.
    async fn attempt(
        &mut self,
        method: &str,
        params: &Value,
    ) -> Result<Result<String, Attempt>, FetchError> {
        let timeout = self.config.request_timeout;
        let mut socket = match self.socket.take() {
            Some(socket) => socket,
            None => match self.connect().await? {
                Ok(socket) => socket,
                Err(reason) => return Ok(Err(Attempt::Transport(reason))),
            },
        };
        let id = self.next_id;
        self.next_id += 1;
        self.stats.requests += 1;
        let text = crate::rpc::request(id, method, params);
        if let Err(e) = socket.send(Message::Text(text.into())).await {
            return Ok(Err(Attempt::Transport(format!("sending {method}: {e}"))));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => {
                    return Ok(Err(Attempt::Transport(format!(
                        "no answer to {method} within {timeout:?}"
                    ))));
                }
                Ok(None) => {
                    return Ok(Err(Attempt::Transport(
                        "connection closed by the server".into(),
                    )));
                }
                Ok(Some(Err(e))) => return Ok(Err(Attempt::Transport(format!("reading: {e}")))),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ok(Err(Attempt::Transport(format!(
                        "server closed the connection: {frame:?}"
                    ))));
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
            };
            match classify(frame.as_str()) {
                Err(e) => {
                    self.stats.malformed_frames += 1;
                    warn!(error = %e, frame = %crate::parse::clip(frame.as_str(), 256), "Skipped a frame that is not JSON-RPC.");
                }
                Ok(Incoming::Response {
                    id: answered,
                    outcome,
                    ..
                }) if answered == id => {
                    let outcome = outcome
                        .map(|result| result.get().to_owned())
                        .map_err(Attempt::Rpc);
                    self.socket = Some(socket);
                    return Ok(outcome);
                }
                Ok(Incoming::Heartbeat { test_request: true }) => {
                    let test = crate::rpc::request(self.next_id, "public/test", &json!({}));
                    self.next_id += 1;
                    if let Err(e) = socket.send(Message::Text(test.into())).await {
                        return Ok(Err(Attempt::Transport(format!(
                            "answering a test_request: {e}"
                        ))));
                    }
                }
                // Deribit may send an error without the id (an oversized or throttled request).
                Ok(Incoming::OrphanError(error)) => {
                    if error.class() == ErrorClass::RateLimited {
                        return Ok(Err(Attempt::Rpc(error)));
                    }
                    warn!(%error, "Deribit sent an error without an id.");
                }
                Ok(_) => debug!("Ignored a frame that answers no history request."),
            }
        }
    }

    /// Opens the WebSocket (TLS for `wss://`) within the request timeout.
    async fn connect(&mut self) -> Result<Result<Socket, String>, FetchError> {
        let url = self.config.url.as_str();
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        let connector = if url.starts_with("wss://") {
            Some(Connector::Rustls(tls_config()?))
        } else {
            None
        };
        let connecting = connect_async_tls_with_config(url, Some(ws_config), true, connector);
        self.stats.connections += 1;
        Ok(
            match tokio::time::timeout(self.config.request_timeout, connecting).await {
                Ok(Ok((socket, _))) => Ok(socket),
                Ok(Err(e)) => Err(format!("connecting to {url}: {e}")),
                Err(_) => Err(format!("connecting to {url}: timed out")),
            },
        )
    }

    async fn page(&mut self, method: &str, params: Value) -> Result<Page, FetchError> {
        let result = self.call(method, params).await?;
        parse_page(&result).map_err(|reason| FetchError::Malformed {
            method: method.to_owned(),
            reason,
        })
    }
}

impl TradeSource for HistoryClient {
    async fn by_time(
        &mut self,
        instrument: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Page, FetchError> {
        let params = json!({
            "instrument_name": instrument,
            "start_timestamp": start_ms,
            "end_timestamp": end_ms,
            "count": PAGE_SIZE,
            "sorting": "asc",
        });
        self.page("public/get_last_trades_by_instrument_and_time", params)
            .await
    }

    async fn by_seq(
        &mut self,
        instrument: &str,
        start_seq: u64,
        end_seq: Option<u64>,
    ) -> Result<Page, FetchError> {
        let mut params = json!({
            "instrument_name": instrument,
            "start_seq": start_seq,
            "count": PAGE_SIZE,
            "sorting": "asc",
        });
        if let Some(end_seq) = end_seq {
            params["end_seq"] = json!(end_seq);
        }
        self.page("public/get_last_trades_by_instrument", params)
            .await
    }
}

/// rustls with the webpki roots, as the live feed's transport builds it.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
