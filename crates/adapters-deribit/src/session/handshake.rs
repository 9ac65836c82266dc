//! The handshake of one session and what keeps it alive: `public/hello`, optional
//! `public/auth` (refreshed before the token expires), `public/set_heartbeat`, then the
//! subscribe chunks paced by Deribit's subscription credits; and the silence watchdog.
//!
//! It decides, the session core acts: each method returns the request to send or the event
//! that happened, never touching the socket.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::end::{SessionEnd, retry};
use super::transport::Request;
use crate::config::{Channel, DeribitConfig, chunk_channels};
use crate::credits::CreditBucket;
use crate::rpc::{AuthResult, ErrorClass, RpcError};

/// Token lifetimes longer than this (s) are treated as this long.
const MAX_TOKEN_LIFETIME_S: u64 = 24 * 3600;

/// One handshake request.
#[derive(Debug)]
pub(super) enum Step {
    Hello,
    Auth,
    SetHeartbeat,
    Subscribe(Vec<String>),
}

/// What the handshake asks of the session.
#[derive(Debug)]
pub(super) enum Ask {
    /// A handshake step.
    Step(Step),
    /// A token refresh.
    AuthRefresh,
}

/// What an answer did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Nothing the session must act on.
    Nothing,
    /// The last subscribe chunk was answered: the session is live.
    Subscribed,
}

/// Handshake state of one session. See the module docs.
pub(super) struct Handshake<'a> {
    config: &'a DeribitConfig,
    steps: VecDeque<Step>,
    step_in_flight: bool,
    subscribed: bool,
    /// Deribit sends something at least every heartbeat interval; longer silence means dead.
    watchdog: Option<Duration>,
    last_frame: Instant,
    refresh_token: Option<String>,
    refresh_at: Option<Instant>,
    /// Channels asked for that Deribit did not confirm: the stream is not complete without them.
    unconfirmed: Vec<String>,
    credits: CreditBucket,
    /// When the next subscribe chunk may go (out of subscription credits until then).
    wake_at: Option<Instant>,
}

impl<'a> Handshake<'a> {
    /// The steps `config` needs, none sent yet.
    pub fn new(config: &'a DeribitConfig) -> Self {
        let mut steps = VecDeque::from([Step::Hello]);
        if config.credentials.is_some() {
            steps.push_back(Step::Auth);
        }
        steps.push_back(Step::SetHeartbeat);
        let channels: Vec<String> = config.channels.iter().map(Channel::to_string).collect();
        steps.extend(chunk_channels(&channels).into_iter().map(Step::Subscribe));
        Handshake {
            config,
            steps,
            step_in_flight: false,
            subscribed: false,
            watchdog: None,
            last_frame: Instant::now(),
            refresh_token: None,
            refresh_at: None,
            unconfirmed: Vec::new(),
            credits: CreditBucket::subscriptions(),
            wake_at: None,
        }
    }

    /// The next step to send, if one may go now (one at a time; subscribe chunks as
    /// subscription credits allow).
    pub fn next_request(&mut self) -> Result<Option<Request<Ask>>, SessionEnd> {
        self.wake_at = None;
        if self.step_in_flight {
            return Ok(None);
        }
        let Some(step) = self.steps.pop_front() else {
            return Ok(None);
        };
        if matches!(step, Step::Subscribe(_))
            && let Err(wait) = self.credits.try_take()
        {
            self.steps.push_front(step);
            self.wake_at = Some(Instant::now() + wait);
            return Ok(None);
        }
        self.step_in_flight = true;
        self.step_request(step).map(Some)
    }

    fn step_request(&self, step: Step) -> Result<Request<Ask>, SessionEnd> {
        let config = self.config;
        let (method, params) = match &step {
            Step::Hello => (
                "public/hello",
                json!({"client_name": config.client_name, "client_version": env!("CARGO_PKG_VERSION")}),
            ),
            Step::Auth => {
                let Some(credentials) = &config.credentials else {
                    return Err(SessionEnd::Fatal(ports::FeedError::Config(
                        "auth step without credentials".into(),
                    )));
                };
                (
                    "public/auth",
                    json!({
                        "grant_type": "client_credentials",
                        "client_id": credentials.client_id,
                        "client_secret": credentials.client_secret,
                    }),
                )
            }
            Step::SetHeartbeat => (
                "public/set_heartbeat",
                json!({"interval": config.heartbeat_interval.as_secs()}),
            ),
            Step::Subscribe(channels) => ("public/subscribe", json!({"channels": channels})),
        };
        Ok(Request {
            method,
            params,
            tag: Ask::Step(step),
        })
    }

    /// A frame arrived: the connection is alive.
    pub fn on_frame(&mut self) {
        self.last_frame = Instant::now();
    }

    /// The earliest time the handshake needs the session's attention.
    pub fn deadline(&self) -> Option<Instant> {
        let watchdog = self.watchdog.map(|w| self.last_frame + w);
        [watchdog, self.refresh_at, self.wake_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time-driven work: the connection presumed dead after a silence, or a token refresh due.
    pub fn on_timer(&mut self, now: Instant) -> Result<Option<Request<Ask>>, SessionEnd> {
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
                return Ok(Some(Request {
                    method: "public/auth",
                    params: json!({"grant_type": "refresh_token", "refresh_token": token}),
                    tag: Ask::AuthRefresh,
                }));
            }
        }
        Ok(None)
    }

    /// A request of the handshake got no answer in time.
    pub fn on_timeout(ask: &Ask) -> SessionEnd {
        match ask {
            Ask::Step(step) => retry(format!("no answer to {step:?} in time")),
            Ask::AuthRefresh => retry("no answer to token refresh in time"),
        }
    }

    /// The answer to a handshake request.
    pub fn on_answer(
        &mut self,
        ask: Ask,
        outcome: Result<&str, RpcError>,
    ) -> Result<Event, SessionEnd> {
        let step = match ask {
            Ask::AuthRefresh => {
                return match outcome {
                    Ok(result) => self.on_auth(result).map(|()| Event::Nothing),
                    Err(error) => Err(retry(format!("token refresh failed: {error}"))),
                };
            }
            Ask::Step(step) => step,
        };
        self.step_in_flight = false;
        let result = outcome.map_err(|error| self.step_failed(&step, &error))?;
        match step {
            Step::Hello => {
                debug!(result = %super::end::truncate(result), "Deribit said hello.");
                Ok(Event::Nothing)
            }
            Step::Auth => self.on_auth(result).map(|()| Event::Nothing),
            Step::SetHeartbeat => {
                self.watchdog = Some(self.config.silence_timeout());
                Ok(Event::Nothing)
            }
            Step::Subscribe(requested) => {
                let granted: Vec<String> = serde_json::from_str(result).unwrap_or_default();
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
                    self.subscribed = true;
                    return Ok(Event::Subscribed);
                }
                Ok(Event::Nothing)
            }
        }
    }

    /// How a refused step ends the session.
    fn step_failed(&self, step: &Step, error: &RpcError) -> SessionEnd {
        match error.class() {
            ErrorClass::BadCredentials => SessionEnd::Fatal(ports::FeedError::Auth(format!(
                "Deribit rejected the credentials: {error}"
            ))),
            ErrorClass::RawNeedsAuth => SessionEnd::Fatal(ports::FeedError::Config(format!(
                "Deribit serves `raw` channels only to authenticated clients: {error}"
            ))),
            ErrorClass::RateLimited => SessionEnd::Retry {
                reason: format!("{step:?}: {error}"),
                min_delay: self.config.backoff.rate_limited,
            },
            ErrorClass::Maintenance => SessionEnd::Retry {
                reason: format!("{step:?}: {error}"),
                min_delay: self.config.backoff.maintenance,
            },
            _ => retry(format!("{step:?} failed: {error}")),
        }
    }

    fn on_auth(&mut self, result: &str) -> Result<(), SessionEnd> {
        let auth: AuthResult = serde_json::from_str(result)
            .map_err(|e| retry(format!("unreadable auth answer: {e}")))?;
        // Refresh at 80 % of the lifetime, well before expiry. A lifetime beyond a day is not
        // believed (a hostile one would overflow the clock): refresh daily then.
        let lifetime = Duration::from_secs(auth.expires_in.min(MAX_TOKEN_LIFETIME_S)).mul_f64(0.8);
        self.refresh_at = Some(Instant::now() + lifetime.max(Duration::from_secs(1)));
        self.refresh_token = Some(auth.refresh_token);
        info!(expires_in_s = auth.expires_in, "Authenticated.");
        Ok(())
    }

    /// Whether every step is done and every channel confirmed.
    pub fn done(&self) -> bool {
        self.subscribed
            && self.unconfirmed.is_empty()
            && self.steps.is_empty()
            && !self.step_in_flight
    }

    /// Whether the subscriptions are in place (history requests may go).
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credentials, PRODUCTION_URL};

    #[test]
    fn any_token_lifetime_deribit_sends_is_taken_without_overflow() {
        let mut config = DeribitConfig::new(
            PRODUCTION_URL,
            Channel::parse_list("trades.BTC-PERPETUAL.100ms").unwrap_or_default(),
        );
        config.credentials = Some(Credentials {
            client_id: "id".into(),
            client_secret: "secret".into(),
        });
        for expires_in in [0, 900, u64::MAX / 2, u64::MAX] {
            let mut handshake = Handshake::new(&config);
            let answer = format!(r#"{{"expires_in":{expires_in},"refresh_token":"r"}}"#);
            let event = handshake.on_answer(Ask::AuthRefresh, Ok(&answer));
            assert!(matches!(event, Ok(Event::Nothing)), "{expires_in}");
            let refresh_in = handshake.refresh_at.map(|at| at - Instant::now());
            assert!(
                refresh_in.is_some_and(|d| d <= Duration::from_secs(MAX_TOKEN_LIFETIME_S)),
                "{expires_in}: {refresh_in:?}"
            );
        }
    }
}
