//! What an error of any port means for the caller: whether trying again can help.

/// The one question a service asks of a port's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An outage or a passing refusal: wait and try the same thing again.
    Transient,
    /// Another instance took over this one's work: stop, and do not restart as is.
    Fenced,
    /// Retrying cannot help (configuration, credentials, a schema that does not fit): stop.
    Fatal,
}
