//! The progress line on stderr: instruments done of all, trades, trades per second. On a
//! terminal one line redrawn in place (`\r`) at most every 100 ms; otherwise (a log, a pipe) a
//! plain line every 5 s, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Draws the progress line.
#[derive(Debug)]
pub struct ProgressBar {
    terminal: bool,
    started: Instant,
    drawn: Option<Instant>,
    total: usize,
    trades_before: u64,
}

impl ProgressBar {
    /// A bar for `total` instruments, of which the run resumed with `trades_before` trades
    /// already written (not counted in the rate).
    pub fn new(total: usize, trades_before: u64) -> Self {
        ProgressBar {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
            total,
            trades_before,
        }
    }

    /// The line for `done` instruments and `trades` in all, `current` under way.
    pub fn line(&self, done: usize, trades: u64, current: &str) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let rate = trades.saturating_sub(self.trades_before) as f64 / elapsed;
        format!(
            "history: {done}/{} instruments, {trades} trades, {rate:.0} trades/s{}{current}",
            self.total,
            if current.is_empty() { "" } else { ", now " }
        )
    }

    /// Redraws if it is time.
    pub fn update(&mut self, done: usize, trades: u64, current: &str) {
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.drawn.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = self.line(done, trades, current);
        let mut stderr = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr must not stop the fetch.
        let _ = if self.terminal {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }

    /// The last line, ended.
    pub fn finish(&mut self, done: usize, trades: u64) {
        let line = self.line(done, trades, "");
        let mut stderr = std::io::stderr().lock();
        let _ = if self.terminal {
            writeln!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
    }
}
