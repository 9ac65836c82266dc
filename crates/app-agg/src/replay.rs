//! Offline replay: JSON lines of captured Deribit trades in, JSON lines of aggregates out.
//!
//! Each input line is either one trade object or one whole `trades.*` subscription notification.
//! A file is complete, so no progress markers are needed: each instrument runs through its own
//! [`Aggregator`], and its own trades close its windows (its latest trade time, plus grace).
//! The output therefore does not depend on how instruments interleave in the file (a dump in
//! partition order replays like one in time order); it is written sorted by window end, then
//! instrument, once the input is read (memory grows with the number of aggregates, not of
//! trades). Bad lines and invalid trades, and duplicate and late trades, are reported on the
//! error writer with their line number, skipped and counted; they never stop the replay.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

use adapters_deribit::parse_json_line;
use domain::{Aggregate, Aggregator, AggregatorConfig, Ingested};

/// Lines longer than this are skipped unread, so one corrupt line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Errors that stop a replay. Bad input lines are not among them.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be read.
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    /// The output could not be written.
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
}

/// What a replay did, for the closing summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Input lines read (blank ones included).
    pub lines: u64,
    /// Lines skipped whole (not JSON, not a trades notification, too long, not UTF-8).
    pub bad_lines: u64,
    /// Trade elements rejected (missing fields, failed validation).
    pub invalid_trades: u64,
    /// Trades folded into aggregates.
    pub accepted: u64,
    /// Trades dropped as duplicates (`trade_seq` already seen).
    pub duplicates: u64,
    /// Trades dropped because their window had closed.
    pub late: u64,
    /// Aggregates written.
    pub aggregates: u64,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replay: {} lines, {} trades aggregated, {} duplicates, {} late, {} bad lines, \
             {} invalid trades, {} aggregates written",
            self.lines,
            self.accepted,
            self.duplicates,
            self.late,
            self.bad_lines,
            self.invalid_trades,
            self.aggregates
        )
    }
}

/// Runs a replay from `input` to `output`, reporting skipped input on `diagnostics`.
///
/// # Errors
/// [`ReplayError::Read`] if reading fails, [`ReplayError::Write`] if writing fails.
pub fn replay(
    mut input: impl BufRead,
    mut output: impl Write,
    mut diagnostics: impl Write,
    config: AggregatorConfig,
) -> Result<ReplaySummary, ReplayError> {
    // Each instrument's aggregator starts as a copy of this one (decay tables copied, not
    // recomputed: 8 KiB per half-life and instrument).
    let template = Aggregator::new(config);
    let window = template.config().window();
    let mut aggregators: HashMap<String, Aggregator> = HashMap::new();
    let mut closed: Vec<Aggregate> = Vec::new();
    let mut summary = ReplaySummary::default();
    let mut line = Vec::new();
    let mut report = |line_number: u64, message: &str| {
        // Diagnostics are best effort: a closed stderr must not abort the replay.
        let _ = writeln!(diagnostics, "line {line_number}: {message}");
    };
    loop {
        line.clear();
        let status = read_bounded_line(&mut input, &mut line).map_err(ReplayError::Read)?;
        if status == LineStatus::Eof {
            break;
        }
        summary.lines += 1;
        let number = summary.lines;
        if status == LineStatus::TooLong {
            summary.bad_lines += 1;
            report(
                number,
                &format!("skipped: longer than {MAX_LINE_BYTES} bytes"),
            );
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            summary.bad_lines += 1;
            report(number, "skipped: not valid UTF-8");
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = match parse_json_line(text) {
            Ok(parsed) => parsed,
            Err(e) => {
                summary.bad_lines += 1;
                report(number, &format!("skipped: {e}"));
                continue;
            }
        };
        for rejected in &parsed.rejected {
            summary.invalid_trades += 1;
            report(
                number,
                &format!("trade {} skipped: {}", rejected.index, rejected.reason),
            );
        }
        if parsed.rejected_more > 0 {
            summary.invalid_trades += parsed.rejected_more;
            report(
                number,
                &format!("{} more invalid trades skipped", parsed.rejected_more),
            );
        }
        for trade in &parsed.trades {
            let aggregator = match aggregators.get_mut(&trade.instrument_name) {
                Some(aggregator) => aggregator,
                None => aggregators
                    .entry(trade.instrument_name.clone())
                    .or_insert_with(|| template.clone()),
            };
            match aggregator.ingest(trade) {
                Ingested::Accepted => summary.accepted += 1,
                Ingested::Duplicate => {
                    summary.duplicates += 1;
                    report(
                        number,
                        &format!(
                            "duplicate skipped: {} trade_seq {} already seen",
                            trade.instrument_name, trade.trade_seq
                        ),
                    );
                }
                Ingested::Late => {
                    summary.late += 1;
                    let start = window.start_of(trade.timestamp);
                    report(
                        number,
                        &format!(
                            "late trade skipped: {} trade_seq {} at {} (window starting {start} closed by a later trade of the instrument)",
                            trade.instrument_name, trade.trade_seq, trade.timestamp
                        ),
                    );
                }
            }
            if aggregator.has_closed_windows() {
                closed.extend(aggregator.drain_closed());
            }
        }
    }
    for aggregator in aggregators.values_mut() {
        closed.extend(aggregator.flush_all());
    }
    // The order an aggregator drains in: window end, then instrument, then bar size.
    closed.sort_unstable_by(|a, b| {
        (a.window_end, &a.instrument_name, a.window_ms).cmp(&(
            b.window_end,
            &b.instrument_name,
            b.window_ms,
        ))
    });
    summary.aggregates += write_all(&mut output, &closed)?;
    output.flush().map_err(ReplayError::Write)?;
    Ok(summary)
}

fn write_all(output: &mut impl Write, aggregates: &[Aggregate]) -> Result<u64, ReplayError> {
    for aggregate in aggregates {
        serde_json::to_writer(&mut *output, aggregate).map_err(|e| ReplayError::Write(e.into()))?;
        output.write_all(b"\n").map_err(ReplayError::Write)?;
    }
    Ok(aggregates.len() as u64)
}

#[derive(Debug, PartialEq, Eq)]
enum LineStatus {
    Line,
    TooLong,
    Eof,
}

/// Reads up to the next newline into `line`, holding at most [`MAX_LINE_BYTES`]; the rest of a
/// longer line is consumed and discarded.
fn read_bounded_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<LineStatus> {
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            break;
        }
        read_any = true;
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(i) => (&buffer[..=i], true),
            None => (buffer, false),
        };
        let used = chunk.len();
        if !too_long {
            if line.len() + used > MAX_LINE_BYTES + 1 {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        input.consume(used);
        if done {
            break;
        }
    }
    Ok(match (read_any, too_long) {
        (false, _) => LineStatus::Eof,
        (true, true) => LineStatus::TooLong,
        (true, false) => LineStatus::Line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reader_splits_lines_and_skips_oversized_ones() {
        let big = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("a\n{big}\nb");
        let mut input = io::BufReader::with_capacity(4096, text.as_bytes());
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            line.clear();
            match read_bounded_line(&mut input, &mut line).unwrap() {
                LineStatus::Eof => break,
                status => seen.push((status, String::from_utf8(line.clone()).unwrap())),
            }
        }
        assert_eq!(
            seen,
            vec![
                (LineStatus::Line, "a\n".to_owned()),
                (LineStatus::TooLong, String::new()),
                (LineStatus::Line, "b".to_owned()),
            ]
        );
    }
}
