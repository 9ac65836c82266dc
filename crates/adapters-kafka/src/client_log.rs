//! How librdkafka's own reports reach the logs: once each, at a level that says what they mean.
//!
//! librdkafka tells most things twice, as a log line and through the error callback, and every
//! error that matters also reaches the caller of the failed call, which logs it with context
//! (a broker outage once per outage, fencing as the service's one ERROR line). So its log lines
//! pass through capped at WARN, the error callback is debug, and the one configuration warning
//! we cause on purpose (`enable.gapless.guarantee` is "experimental") is debug too. The last
//! refusal that needs a person (failed login, TLS handshake) is kept, so a caller waiting for
//! the broker can stop at once with the broker's reason instead of timing out.

use std::sync::{Arc, Mutex, PoisonError};

use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::weather;

/// Asks `client` for metadata (of `topic`, or of every topic) until a broker answers. A refusal
/// that needs a person (failed login) fails at once with the broker's reason; silence fails
/// after `timeout` naming the last error librdkafka reported (e.g. a TLS handshake failure).
/// `serve` hands librdkafka's queued events to the context: a producer's own thread does that,
/// a plain consumer only when polled, so its caller polls it there. Blocking: call it off the
/// async workers.
///
/// # Errors
/// [`Error::Kafka`] with the reason.
pub fn await_metadata<C: ClientContext>(
    client: &Client<C>,
    serve: impl Fn(),
    log: &ClientLog,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = client.fetch_metadata(topic, Duration::from_secs(1));
        serve();
        match answer {
            Ok(metadata) => return Ok(metadata),
            Err(e) => {
                if let Some(reason) = log.refusal() {
                    return Err(Error::Kafka(format!("the broker refused us: {reason}")));
                }
                if Instant::now() > deadline {
                    let last = log.last_error().unwrap_or_else(|| e.to_string());
                    return Err(Error::Kafka(format!(
                        "no broker answered within {timeout:?}; last error: {last}"
                    )));
                }
            }
        }
    }
}

/// Client context for our producers: librdkafka's reports as described above.
#[derive(Debug, Clone, Default)]
pub struct ClientLog {
    refusal: Arc<Mutex<Option<String>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientLog {
    /// The last error librdkafka reported, whatever it was (e.g. a failed TLS handshake).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last error that needs a person (e.g. `Authentication failed …`), if any.
    pub fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Also fit for plain readers (metadata, topic checks): no rebalance handling needed.
impl ConsumerContext for ClientLog {}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, reason, "librdkafka error callback.");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        if weather::needs_operator(&error) {
            *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        }
    }
}

/// One librdkafka log line into tracing, capped at WARN.
pub(crate) fn forward(level: RDKafkaLogLevel, facility: &str, message: &str) {
    if facility == "CONFWARN" && message.contains("enable.gapless.guarantee") {
        debug!(target: "librdkafka", facility, "{message}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, "{message}"),
    }
}
