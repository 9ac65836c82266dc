//! `app-raw history`: every trade of the instruments some channels name, in a time range, from
//! Deribit's history methods, into a JSON-lines file (what `app-agg replay` reads) or a topic;
//! resumable, paced by Deribit's rate limits, with a progress line on stderr.
//!
//! * [`args`]: the arguments and UTC times (bad ones: one line, exit code 2).
//! * [`progress`]: the progress file (atomic writes) and the output cut back on resume.
//! * [`output`]: the file or topic the trades go to.
//! * [`bar`]: the progress line.
//! * [`fetch`]: the run, instrument by instrument, chunk by chunk.
//! * [`command`]: the subcommand: arguments, environment, client, output, summary.
//!
//! The Deribit side (paging, holes, instruments, credits, retries) is adapters-deribit's
//! `history_fetch`.

pub mod args;
pub mod bar;
pub mod command;
pub mod fetch;
pub mod output;
pub mod progress;

use std::path::{Path, PathBuf};

use adapters_deribit::history_fetch::FetchError;

/// Why a history run stopped.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Deribit could not give what was asked (after retries where they help).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The progress file cannot be used for this run.
    #[error("progress file {path}: {reason}")]
    Progress {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The topic refused the trades.
    #[error("publishing: {0}")]
    Publish(String),
    /// Kafka or the registry could not be set up.
    #[error("{0}")]
    Broker(String),
    /// The run would destroy something it was not asked to (exit code 2, like bad arguments).
    #[error("{0}")]
    Refused(String),
}

impl HistoryError {
    /// The process's exit code for it: 2 for a refused run, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            HistoryError::Refused(_) => shell::EXIT_BAD_CONFIG,
            _ => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        HistoryError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
