//! `log` records (rdkafka, tungstenite) into tracing, without losing tracing's own events.
//!
//! tracing-log's `LogTracer` answers "is this level enabled?" by asking the subscriber. Our
//! filters are per layer (the log lines' `RUST_LOG`, the spans' own filter), and a per-layer
//! filter notes its answer in thread-local state that the next event consumes: a question with
//! no event after it leaves the note behind, and the thread's next event is dropped
//! (tokio-rs/tracing#2519). rdkafka asks at every `ClientConfig::new()`, so with a debug
//! directive in `RUST_LOG` (e.g. `info,adapters_kafka::tail=debug`) app-agg lost "Kafka
//! transactions initialised", "Partitions assigned" and librdkafka's warnings. This bridge
//! answers questions from the max level alone; records go through as tracing-log sends them.

use tracing_log::AsLog;

/// Installs the bridge as the `log` crate's logger, passing records up to tracing's max level.
///
/// # Errors
/// The `log` crate's refusal if a logger was installed before.
pub(crate) fn install() -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(LogBridge))?;
    log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
    Ok(())
}

struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Never asks the subscriber (see the module docs).
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            // Asks the subscriber, and sends the event only if it wants it (no question left
            // unanswered by an event when it does).
            let _ = tracing_log::format_trace(record);
        }
    }

    fn flush(&self) {}
}
