//! The progress file: which run it belongs to, its instruments, how far the current one is
//! (its [`Cursor`]) and how long the output was at that point. It is written after the output
//! is flushed, to a temporary file renamed over the old one, so a crash leaves the old or the
//! new progress whole; a resumed run truncates the output to the recorded length (anything
//! after it was written past the last progress) and goes on from the cursor.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use adapters_deribit::history_fetch::Cursor;
use serde::{Deserialize, Serialize};

use super::HistoryError;

/// Format version of the file.
const VERSION: u32 = 1;

/// How far a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Format version.
    pub version: u32,
    /// The run's range and channels: a resume must ask the same.
    pub from_ms: i64,
    /// End of the range.
    pub to_ms: i64,
    /// The channels as given.
    pub channels: String,
    /// The instruments, fixed at the start so a resume fetches the same ones in the same order.
    pub instruments: Vec<String>,
    /// Index of the instrument under way (= `instruments.len()` when done).
    pub next: usize,
    /// Where that instrument stands.
    pub cursor: Cursor,
    /// Bytes of the output up to this point (0 for a topic).
    pub output_bytes: u64,
    /// Trades written up to this point.
    pub trades: u64,
}

impl Progress {
    /// A run at its start.
    pub fn start(from_ms: i64, to_ms: i64, channels: &str, instruments: Vec<String>) -> Self {
        Progress {
            version: VERSION,
            from_ms,
            to_ms,
            channels: channels.to_owned(),
            instruments,
            next: 0,
            cursor: Cursor::default(),
            output_bytes: 0,
            trades: 0,
        }
    }

    /// Whether every instrument is done.
    pub fn complete(&self) -> bool {
        self.next >= self.instruments.len()
    }

    /// Whether this progress belongs to a run of this range and these channels.
    ///
    /// # Errors
    /// [`HistoryError::Progress`] saying what differs.
    pub fn check_same_run(
        &self,
        path: &Path,
        from_ms: i64,
        to_ms: i64,
        channels: &str,
    ) -> Result<(), HistoryError> {
        if self.version != VERSION
            || (self.from_ms, self.to_ms) != (from_ms, to_ms)
            || self.channels != channels
        {
            return Err(HistoryError::Progress {
                path: path.to_owned(),
                reason: format!(
                    "it belongs to another run ({} to {}, channels {}); delete it or give another --progress",
                    super::args::format_utc(self.from_ms),
                    super::args::format_utc(self.to_ms),
                    self.channels
                ),
            });
        }
        Ok(())
    }

    /// Reads `path`; `None` if it does not exist.
    ///
    /// # Errors
    /// [`HistoryError::Progress`] if it cannot be read or is not a progress file.
    pub fn load(path: &Path) -> Result<Option<Self>, HistoryError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HistoryError::io(path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HistoryError::Progress {
                path: path.to_owned(),
                reason: format!("not a progress file ({e}); delete it to start over"),
            })
    }

    /// Writes it to `path` atomically: a temporary file beside it, synced, renamed over it.
    ///
    /// # Errors
    /// [`HistoryError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_string(self).map_err(|e| HistoryError::Progress {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&temporary).map_err(|e| HistoryError::io(&temporary, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| HistoryError::io(&temporary, e))?;
        fs::rename(&temporary, path).map_err(|e| HistoryError::io(path, e))
    }
}

/// Opens the output for a run: created empty for a fresh run, or cut back to `resume_at` bytes
/// (what the progress file recorded) for a resumed one, positioned at its end.
///
/// # Errors
/// [`HistoryError::Io`], or [`HistoryError::Progress`] if the output is shorter than recorded
/// (it is not the file the progress belongs to).
pub fn open_output(path: &Path, resume_at: Option<u64>) -> Result<File, HistoryError> {
    let Some(at) = resume_at else {
        return File::create(path).map_err(|e| HistoryError::io(path, e));
    };
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| HistoryError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| HistoryError::io(path, e))?
        .len();
    if len < at {
        return Err(HistoryError::Progress {
            path: path.to_owned(),
            reason: format!(
                "the progress file records {at} bytes of output but it has {len}; delete the progress file to start over"
            ),
        });
    }
    file.set_len(at).map_err(|e| HistoryError::io(path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_cuts_the_output_back_to_the_recorded_length() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let progress_path = dir.path().join("out.jsonl.progress");
        let mut progress = Progress::start(
            1,
            2,
            "trades.future.BTC.100ms",
            vec!["A".into(), "B".into()],
        );
        let mut file = open_output(&output, None).unwrap();
        file.write_all(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        progress.output_bytes = 16;
        progress.next = 1;
        progress.cursor.last_seq = Some(2);
        progress.save(&progress_path).unwrap();
        // Written after the last progress, then interrupted: a half line.
        file.write_all(b"{\"b\":1}\n{\"b\"").unwrap();
        drop(file);

        let loaded = Progress::load(&progress_path).unwrap().unwrap();
        assert_eq!(loaded, progress);
        loaded
            .check_same_run(&progress_path, 1, 2, "trades.future.BTC.100ms")
            .unwrap();
        assert!(
            loaded
                .check_same_run(&progress_path, 1, 3, "trades.future.BTC.100ms")
                .is_err()
        );
        let mut file = open_output(&output, Some(loaded.output_bytes)).unwrap();
        file.write_all(b"{\"b\":1}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&output).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"b\":1}\n"
        );
        assert!(!dir.path().join("out.jsonl.progress.tmp").exists());

        // An output shorter than recorded is not the one the progress belongs to.
        assert!(open_output(&output, Some(1_000)).is_err());
        assert_eq!(Progress::load(&dir.path().join("none")).unwrap(), None);
        fs::write(&progress_path, "garbage").unwrap();
        assert!(Progress::load(&progress_path).is_err());
    }
}
