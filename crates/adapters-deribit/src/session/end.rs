//! How a session ends and what the supervisor does next; shared by the session's parts, which
//! end it by returning one.

use std::time::Duration;

use ports::FeedError;

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

/// Reconnect for `reason`, with no extra delay beyond the backoff.
pub(super) fn retry(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Retry {
        reason: reason.into(),
        min_delay: Duration::ZERO,
    }
}

/// The first 300 bytes of `text`, for the log.
pub(super) fn truncate(text: &str) -> &str {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
