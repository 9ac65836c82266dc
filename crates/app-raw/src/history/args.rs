//! `app-raw history`'s arguments: the range, the channels, where the trades go, the progress
//! file; and the UTC times they are written in. Anything wrong is one line for exit code 2.

use std::path::PathBuf;

use adapters_deribit::history_fetch::HistoryChannel;
use domain::calendar::{civil_from_days, days_from_civil};

/// What `--help` prints.
pub const HELP: &str = "\
app-raw history: every trade of some instruments in a time range, from Deribit's history.

Usage: app-raw history --from TIME --to TIME --channels LIST (--output FILE | --topic NAME)
                       [--progress PATH] [--force]

  --from TIME      start of the range, included: 2026-11-01, 2026-11-01T00:00Z,
                   2026-11-01T00:00:00Z or 2026-11-01T00:00:00.000Z (UTC)
  --to TIME        end of the range, excluded; after --from
  --channels LIST  comma-separated trades channels: trades.{kind}.{currency}.{interval} (kind
                   may be any), trades.{instrument}.{interval}; instruments from
                   public/get_instruments, expired ones included
  --output FILE    JSON lines, one trade per line in Deribit's field names, per instrument in
                   trade_seq order (what `app-agg replay` reads)
  --topic NAME     publish to this Kafka topic instead (Avro, as the service; Kafka and
                   registry variables as for the service); not RAW_TOPIC, the live raw topic
                   (history writes no progress markers and would break its trade_seq order)
  --progress PATH  where progress is kept (default FILE.progress; with --topic, none unless
                   given); a rerun with the same arguments resumes from it
  --force          start over even if FILE exists and is not empty (without it, a run with no
                   progress file refuses to overwrite it)

Environment: DERIBIT_URL (default wss://www.deribit.com/ws/api/v2), as the service reads it.
Exit codes: 0 done, 1 the fetch failed (one line says why), 2 bad arguments or configuration.
";

/// Where the trades go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A JSON-lines file.
    File(PathBuf),
    /// A Kafka topic.
    Topic(String),
}

/// Validated arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryArgs {
    /// Start of the range (ms, included).
    pub from_ms: i64,
    /// End of the range (ms, excluded).
    pub to_ms: i64,
    /// The channels as given (kept in the progress file so a resume asks the same).
    pub channels_text: String,
    /// The channels, parsed.
    pub channels: Vec<HistoryChannel>,
    /// Where the trades go.
    pub target: Target,
    /// The progress file, if any.
    pub progress: Option<PathBuf>,
    /// A fresh run may overwrite a non-empty output file.
    pub force: bool,
}

/// Why the arguments cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// `--help` was asked for.
    #[error("help asked for")]
    Help,
    /// A bad or missing argument, and what is accepted.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(text: impl Into<String>) -> ArgsError {
    ArgsError::Invalid(text.into())
}

impl HistoryArgs {
    /// Parses the arguments after `history`.
    ///
    /// # Errors
    /// [`ArgsError::Help`] for `-h`/`--help`, else [`ArgsError::Invalid`] naming the argument.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let (mut from, mut to, mut channels, mut output, mut topic, mut progress) =
            (None, None, None, None, None, None);
        let mut force = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(ArgsError::Help);
            }
            if arg == "--force" {
                force = true;
                continue;
            }
            if arg.starts_with("--force=") {
                return Err(invalid("--force takes no value"));
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let slot = match flag.as_str() {
                "--from" => &mut from,
                "--to" => &mut to,
                "--channels" => &mut channels,
                "--output" => &mut output,
                "--topic" => &mut topic,
                "--progress" => &mut progress,
                _ => {
                    return Err(invalid(format!(
                        "unknown argument {arg:?}; see app-raw history --help"
                    )));
                }
            };
            let value = match inline.or_else(|| args.next()) {
                Some(value) if !value.trim().is_empty() => value,
                _ => return Err(invalid(format!("{flag} needs a value"))),
            };
            if slot.replace(value).is_some() {
                return Err(invalid(format!("{flag} given twice")));
            }
        }
        let required = |value: Option<String>, flag: &str| {
            value.ok_or_else(|| invalid(format!("{flag} is required; see app-raw history --help")))
        };
        let from_text = required(from, "--from")?;
        let to_text = required(to, "--to")?;
        let from_ms =
            parse_utc(&from_text).map_err(|e| invalid(format!("--from {from_text:?}: {e}")))?;
        let to_ms = parse_utc(&to_text).map_err(|e| invalid(format!("--to {to_text:?}: {e}")))?;
        if to_ms <= from_ms {
            return Err(invalid(format!(
                "--to {to_text} must be after --from {from_text}"
            )));
        }
        let channels_text = required(channels, "--channels")?.trim().to_owned();
        let parsed = HistoryChannel::parse_list(&channels_text)
            .map_err(|e| invalid(format!("--channels: {e}")))?;
        let target = match (output, topic) {
            (Some(file), None) => Target::File(PathBuf::from(file)),
            (None, Some(topic)) => Target::Topic(valid_topic(&topic)?),
            (Some(_), Some(_)) => return Err(invalid("give --output or --topic, not both")),
            (None, None) => return Err(invalid("--output FILE or --topic NAME is required")),
        };
        let progress = progress.map(PathBuf::from).or_else(|| match &target {
            Target::File(file) => {
                let mut path = file.clone().into_os_string();
                path.push(".progress");
                Some(PathBuf::from(path))
            }
            Target::Topic(_) => None,
        });
        Ok(HistoryArgs {
            from_ms,
            to_ms,
            channels_text,
            channels: parsed,
            target,
            progress,
            force,
        })
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn valid_topic(name: &str) -> Result<String, ArgsError> {
    let ok = (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(format!(
            "--topic {name:?}: a Kafka topic name is 1 to 249 of a-z A-Z 0-9 . _ -"
        )))
    }
}

/// Parses a UTC time: `YYYY-MM-DD`, or that with `THH:MM`, `THH:MM:SS` or `THH:MM:SS.fff` and
/// `Z` (or `+00:00`), into ms since the epoch. Years 1970 to 2099.
///
/// # Errors
/// What is wrong, with the accepted forms.
pub fn parse_utc(text: &str) -> Result<i64, String> {
    let accepted =
        "expected a UTC time such as 2026-11-01, 2026-11-01T00:00Z or 2026-11-01T00:00:00.000Z";
    let text = text.trim();
    let (date, time) = match text.split_once(['T', 't']) {
        Some((date, time)) => {
            let time = time
                .strip_suffix(['Z', 'z'])
                .or_else(|| time.strip_suffix("+00:00"))
                .ok_or_else(|| format!("no time zone: {accepted} (Z for UTC)"))?;
            (date, Some(time))
        }
        None => (text, None),
    };
    let number = |part: &str, digits: usize| -> Result<i64, String> {
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(accepted.to_owned());
        }
        part.parse::<i64>().map_err(|_| accepted.to_owned())
    };
    let fields: Vec<&str> = date.split('-').collect();
    let [y, m, d] = fields.as_slice() else {
        return Err(accepted.to_owned());
    };
    let (year, month, day) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    if !(1970..=2099).contains(&year) || !(1..=12).contains(&month) {
        return Err(format!("year 1970 to 2099, month 01 to 12: {accepted}"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("day {day} is not in {year}-{month:02}"));
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, fraction)) => (hms, Some(fraction)),
            None => (time, None),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        let (h, min, s) = match parts.as_slice() {
            [h, min] => (number(h, 2)?, number(min, 2)?, 0),
            [h, min, s] => (number(h, 2)?, number(min, 2)?, number(s, 2)?),
            _ => return Err(accepted.to_owned()),
        };
        if h > 23 || min > 59 || s > 59 {
            return Err(format!("no such time of day {hms}"));
        }
        let millis = match fraction {
            None => 0,
            Some(f) if parts.len() == 3 && (1..=3).contains(&f.len()) => {
                number(f, f.len())? * 10_i64.pow(3 - u32::try_from(f.len()).unwrap_or(3))
            }
            Some(_) => {
                return Err(format!(
                    "fractions of a second: 1 to 3 digits after seconds; {accepted}"
                ));
            }
        };
        ms += ((h * 60 + min) * 60 + s) * 1000 + millis;
    }
    Ok(ms)
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub fn format_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Result<HistoryArgs, ArgsError> {
        HistoryArgs::parse(text.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn times_are_utc_and_round_trip() {
        assert_eq!(parse_utc("2026-11-01T00:00Z"), Ok(1_793_491_200_000));
        assert_eq!(parse_utc("2026-11-01"), Ok(1_793_491_200_000));
        assert_eq!(parse_utc("2024-02-29T23:59:59.5Z"), Ok(1_709_251_199_500));
        for ms in [0, 1_709_251_199_500, 1_793_491_200_001, 4_102_444_799_999] {
            assert_eq!(parse_utc(&format_utc(ms)), Ok(ms), "{ms}");
        }
        for bad in [
            "",
            "2026-11-01T00:00",
            "2026-13-01",
            "2026-02-29",
            "2026-11-01T24:00Z",
            "2026-11-1",
            "1969-12-31",
            "2026-11-01T00:00.5Z",
            "2026-11-01T00:00:00.1234Z",
            "yesterday",
            "2026-11-01T00:00+01:00",
            "+2026-11-01",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn good_arguments_parse() {
        let parsed = args("--from 2026-11-01T00:00Z --to=2026-11-02T00:00Z --channels trades.future.BTC.100ms,trades.any.ETH.100ms --output out.jsonl").unwrap();
        assert_eq!(parsed.to_ms - parsed.from_ms, 86_400_000);
        assert_eq!(parsed.channels.len(), 2);
        assert_eq!(parsed.target, Target::File("out.jsonl".into()));
        assert_eq!(parsed.progress, Some("out.jsonl.progress".into()));
        assert!(!parsed.force);
        let forced = args("--from 2026-11-01 --to 2026-11-02 --force --channels trades.BTC-PERPETUAL.100ms --output o").unwrap();
        assert!(forced.force);
        let topic = args("--from 2026-11-01 --to 2026-11-02 --channels trades.BTC-PERPETUAL.100ms --topic history.btc").unwrap();
        assert_eq!(
            (topic.target, topic.progress),
            (Target::Topic("history.btc".into()), None)
        );
        assert_eq!(args("--help"), Err(ArgsError::Help));
    }

    #[test]
    fn bad_arguments_say_which_in_one_line() {
        let base = "--channels trades.future.BTC.100ms --output o";
        for (bad, says) in [
            (format!("--from 2026-11-02 --to 2026-11-01 {base}"), "must be after --from"),
            (format!("--from 2026-11-01 --to 2026-11-01 {base}"), "must be after --from"),
            (format!("--from 2026-11-31 --to 2026-12-01 {base}"), "--from"),
            (format!("--from 2026-11-01 {base}"), "--to is required"),
            (format!("--from 2026-11-01 --to 2026-11-02 --to 2026-11-03 {base}"), "twice"),
            ("--from 2026-11-01 --to 2026-11-02 --channels trades.futures.BTC.100ms --output o".into(), "--channels"),
            ("--from 2026-11-01 --to 2026-11-02 --channels , --output o".into(), "--channels"),
            ("--from 2026-11-01 --to 2026-11-02 --channels trades.future.BTC.100ms".into(), "--output FILE or --topic"),
            ("--from 2026-11-01 --to 2026-11-02 --channels trades.future.BTC.100ms --output o --topic t".into(), "not both"),
            ("--from 2026-11-01 --to 2026-11-02 --channels trades.future.BTC.100ms --topic a/b".into(), "--topic"),
            (format!("--from 2026-11-01 --to 2026-11-02 {base} --verbose"), "unknown argument"),
            (format!("{base} --from"), "needs a value"),
            (format!("--from 2026-11-01 --to 2026-11-02 {base} --force=yes"), "no value"),
        ] {
            match args(&bad) {
                Err(ArgsError::Invalid(text)) => {
                    assert!(text.contains(says), "{bad}: {text}");
                    assert!(!text.contains('\n'), "{bad}: one line");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
