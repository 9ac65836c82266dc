//! Which instruments a trades channel names, for a time range: the instrument of
//! `trades.{instrument}.{interval}`, or every instrument of `trades.{kind}.{currency}.{interval}`
//! that `public/get_instruments` lists, active and expired (`expired: true` lists those that
//! expired recently), and that can have traded in the range.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Channel;
use crate::error::{Error, Result, Setting};

/// A trades channel as history reads it: like [`Channel`], and kind `any` is accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChannel {
    /// One instrument.
    Instrument(String),
    /// Every instrument of a kind (or `any`) and currency (or `any`).
    KindCurrency {
        /// `future`, `option`, …, or `any`.
        kind: String,
        /// `BTC`, `ETH`, …, or `any`.
        currency: String,
    },
}

impl HistoryChannel {
    /// Parses a comma-separated list of channels.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad channel, as [`Channel::parse_list`].
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut out: Vec<HistoryChannel> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = match part.strip_prefix("trades.any.") {
                // Kind `any` is no live channel, but a fine question for history: the rest is
                // checked as for any kind.
                Some(rest) => {
                    let stand_in = format!("trades.future.{rest}");
                    match Channel::parse(&stand_in) {
                        Ok(Channel::KindCurrency { currency, .. }) => {
                            HistoryChannel::KindCurrency {
                                kind: "any".into(),
                                currency,
                            }
                        }
                        Ok(Channel::Instrument { .. }) => {
                            return Err(Error::config(
                                Setting::Channels,
                                format!(
                                    "invalid channel {part:?}: expected trades.any.{{currency}}.{{interval}}"
                                ),
                            ));
                        }
                        Err(e) => {
                            return Err(Error::config(
                                Setting::Channels,
                                e.to_string().replace(&stand_in, part),
                            ));
                        }
                    }
                }
                None => match Channel::parse(part)? {
                    Channel::Instrument { instrument, .. } => {
                        HistoryChannel::Instrument(instrument)
                    }
                    Channel::KindCurrency { kind, currency, .. } => {
                        HistoryChannel::KindCurrency { kind, currency }
                    }
                },
            };
            if !out.contains(&parsed) {
                out.push(parsed);
            }
        }
        if out.is_empty() {
            return Err(Error::config(
                Setting::Channels,
                "no channels given; for example trades.future.BTC.100ms",
            ));
        }
        Ok(out)
    }

    /// The `public/get_instruments` params it takes (active, then expired), none for one
    /// instrument.
    pub fn queries(&self) -> Vec<Value> {
        match self {
            HistoryChannel::Instrument(_) => Vec::new(),
            HistoryChannel::KindCurrency { kind, currency } => [false, true]
                .into_iter()
                .map(|expired| {
                    let mut params = json!({"currency": currency, "expired": expired});
                    if kind != "any" {
                        params["kind"] = json!(kind);
                    }
                    params
                })
                .collect(),
        }
    }

    /// Whether `instrument`, as listed, belongs to this channel.
    pub fn matches(&self, instrument: &InstrumentInfo) -> bool {
        match self {
            HistoryChannel::Instrument(name) => *name == instrument.instrument_name,
            HistoryChannel::KindCurrency { kind, .. } => {
                kind == "any" || instrument.kind.as_deref().is_none_or(|k| k == kind)
            }
        }
    }
}

/// The fields of a `public/get_instruments` entry that history reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstrumentInfo {
    /// E.g. `BTC-27DEC24-70000-C`.
    pub instrument_name: String,
    /// `future`, `option`, …
    #[serde(default)]
    pub kind: Option<String>,
    /// When it was listed, ms.
    #[serde(default)]
    pub creation_timestamp: Option<i64>,
    /// When it expires (or expired), ms; far in the future for perpetuals.
    #[serde(default)]
    pub expiration_timestamp: Option<i64>,
}

impl InstrumentInfo {
    /// Whether it can have traded in `[from_ms, to_ms)`: listed before the end, not expired
    /// before the start (an unknown time counts as yes).
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.creation_timestamp.is_none_or(|c| c < to_ms)
            && self.expiration_timestamp.is_none_or(|e| e >= from_ms)
    }
}

/// Parses the `result` of `public/get_instruments`; entries that do not parse are skipped.
///
/// # Errors
/// A one-line reason if it is not an array.
pub fn parse_instruments(result: &str) -> std::result::Result<(Vec<InstrumentInfo>, u64), String> {
    let entries: Vec<Value> = serde_json::from_str(result).map_err(|e| e.to_string())?;
    let mut skipped = 0;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        match serde_json::from_value::<InstrumentInfo>(entry) {
            Ok(info) if !info.instrument_name.is_empty() => out.push(info),
            _ => skipped += 1,
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_instruments_or_a_kind_and_currency() {
        let parsed = HistoryChannel::parse_list(
            "trades.future.BTC.100ms, trades.any.ETH.raw,trades.BTC-PERPETUAL.100ms,trades.future.BTC.agg2",
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                HistoryChannel::KindCurrency {
                    kind: "future".into(),
                    currency: "BTC".into()
                },
                HistoryChannel::KindCurrency {
                    kind: "any".into(),
                    currency: "ETH".into()
                },
                HistoryChannel::Instrument("BTC-PERPETUAL".into()),
            ]
        );
        for bad in [
            "",
            "trades.any.XRP.100ms",
            "book.BTC-PERPETUAL.100ms",
            "trades.future.BTC",
            "trades.any.BTC.1s",
        ] {
            assert!(HistoryChannel::parse_list(bad).is_err(), "{bad}");
        }
        let queries = parsed[1].queries();
        assert_eq!(queries[1], json!({"currency": "ETH", "expired": true}));
        assert_eq!(parsed[0].queries()[0]["kind"], "future");
    }

    #[test]
    fn instruments_outside_the_range_are_left_out() {
        let (listed, skipped) = parse_instruments(
            r#"[{"instrument_name":"A","kind":"future","creation_timestamp":10,"expiration_timestamp":20},{"kind":"future"}]"#,
        )
        .unwrap();
        assert_eq!(skipped, 1);
        let a = &listed[0];
        assert!(a.overlaps(0, 11) && a.overlaps(20, 30));
        assert!(!a.overlaps(0, 10) && !a.overlaps(21, 30));
        assert!(parse_instruments("{}").is_err());
    }
}
