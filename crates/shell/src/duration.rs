//! Human-readable durations (`250ms`, `30s`, `5m`, `1h`), as the variables and the command
//! lines of both services take them: one parser, one wording of its errors.

use std::time::Duration;

/// Parses `text` (humantime syntax).
///
/// # Errors
/// A message naming the text and the accepted form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}): expected a duration such as 250ms, 30s, 5m or 1h")
    })
}

/// Parses `text` (humantime syntax) into whole milliseconds.
///
/// # Errors
/// As [`parse_duration`], and if it is not a whole number of milliseconds or does not fit in
/// an `i64`.
pub fn parse_millis(text: &str) -> Result<i64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "invalid duration {text:?}: must be a whole number of milliseconds"
        ));
    }
    i64::try_from(duration.as_millis()).map_err(|_| format!("invalid duration {text:?}: too large"))
}

/// Parses a comma-separated list of durations into milliseconds.
///
/// # Errors
/// As [`parse_millis`] for the first bad element, or if the list is empty.
pub fn parse_millis_list(text: &str) -> Result<Vec<i64>, String> {
    if text.trim().is_empty() {
        return Err("expected at least one duration, e.g. 30s,5m".into());
    }
    text.split(',').map(parse_millis).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_millis("1m"), Ok(60_000));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse_millis(" 1h "), Ok(3_600_000));
        assert_eq!(parse_millis_list("30s,5m"), Ok(vec![30_000, 300_000]));
    }

    #[test]
    fn rejects_with_a_message_that_says_what_is_accepted() {
        let message = parse_millis("ten").unwrap_err();
        assert!(
            message.contains("\"ten\"") && message.contains("30s"),
            "{message}"
        );
        assert!(
            parse_millis("1us")
                .unwrap_err()
                .contains("whole number of milliseconds")
        );
        assert!(parse_millis_list("").is_err());
        assert!(parse_millis_list("30s,x").unwrap_err().contains("\"x\""));
    }
}
