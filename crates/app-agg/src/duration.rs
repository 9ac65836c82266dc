//! Human-readable durations (`250ms`, `30s`, `5m`, `1h`) as whole milliseconds.

/// Parses `text` (humantime syntax) into milliseconds.
///
/// # Errors
/// A message naming the text and the accepted form, if it is not a duration, is not a whole
/// number of milliseconds, or does not fit in an `i64`.
pub fn parse_millis(text: &str) -> Result<i64, String> {
    let accepted = "expected a duration such as 250ms, 30s, 5m or 1h";
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}): {accepted}"))?;
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
