//! How librdkafka's own reports reach the logs: once each, at a level that says what they mean.
//!
//! librdkafka tells most things twice, as a log line and through the error callback, and every
//! error that matters also reaches the caller of the failed call, which logs it with context
//! (a broker outage once per outage, fencing as the service's one ERROR line). So its log lines
//! pass through capped at WARN, the error callback is debug, and the one configuration warning
//! we cause on purpose (`enable.gapless.guarantee` is "experimental") is debug too.

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use tracing::{debug, info, warn};

/// Client context for our producers: librdkafka's reports as described above.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientLog;

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, reason, "librdkafka error callback.");
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
