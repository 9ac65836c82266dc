//! The hang detector, and the file that always holds the input under test.
//!
//! Each input is written to `current` before it runs: if the process dies in a way it cannot
//! catch (a stack overflow aborts), the reproducer is already on disk. A thread watches how
//! long the current input has run and ends the process after [`HANG_AFTER`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An input running this long is a hang: the process says so and exits with [`HANG_EXIT`].
pub const HANG_AFTER: Duration = Duration::from_millis(HANG_AFTER_MS);
const HANG_AFTER_MS: u64 = 10_000;
/// Exit code of a run that found a hang.
pub const HANG_EXIT: i32 = 3;

/// Watches the input under test.
#[derive(Debug)]
pub struct Watchdog {
    dir: PathBuf,
    current: File,
    /// Milliseconds since `epoch` when the current input began, plus one; 0 while idle.
    began: Arc<AtomicU64>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching; the current input is kept in `dir/current`.
    ///
    /// # Errors
    /// If `dir/current` cannot be created.
    pub fn start(dir: &Path) -> io::Result<Watchdog> {
        let path = dir.join("current");
        let current = File::create(&path)?;
        let began = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let thread = {
            let (began, stop) = (Arc::clone(&began), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let since = began.load(Ordering::Relaxed);
                    #[allow(clippy::cast_possible_truncation)] // a run lasts far below 2^64 ms
                    let now = epoch.elapsed().as_millis() as u64 + 1;
                    if since != 0 && now.saturating_sub(since) > HANG_AFTER_MS {
                        eprintln!(
                            "hang: one input ran for more than {HANG_AFTER:?}; it is in {}",
                            path.display()
                        );
                        std::process::exit(HANG_EXIT);
                    }
                }
            })
        };
        Ok(Watchdog {
            dir: dir.to_path_buf(),
            current,
            began,
            epoch,
            stop,
            thread: Some(thread),
        })
    }

    /// The directory findings go to.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `input` as the one under test, and when it began.
    ///
    /// # Errors
    /// If the current-input file cannot be written.
    pub fn begin(&self, input: &[u8]) -> io::Result<()> {
        self.current.set_len(0)?;
        self.current.write_all_at(input, 0)?;
        #[allow(clippy::cast_possible_truncation)] // a run lasts far below 2^64 ms
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.began.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// The input under test finished.
    pub fn end(&self) {
        self.began.store(0, Ordering::Relaxed);
    }

    /// Stops watching and removes the current-input file (nothing crashed).
    ///
    /// # Errors
    /// If the file cannot be removed.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::fs::remove_file(self.dir.join("current"))
    }
}
