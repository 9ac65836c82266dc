//! Feed configuration: endpoint, channels, credentials, timings, limits.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result, Setting};

/// Deribit production WebSocket endpoint.
pub const PRODUCTION_URL: &str = "wss://www.deribit.com/ws/api/v2";
/// Deribit testnet WebSocket endpoint.
pub const TESTNET_URL: &str = "wss://test.deribit.com/ws/api/v2";
/// The channels subscribed when none are configured.
pub const DEFAULT_CHANNELS: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms";
/// Deribit accepts at most this many channels per subscribe call.
pub const MAX_CHANNELS_PER_SUBSCRIBE: usize = 500;
/// Deribit rejects frames of 32 kB and more (`-32600 request entity too large`).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024;

const KINDS: [&str; 5] = ["future", "option", "spot", "future_combo", "option_combo"];
const CURRENCIES: [&str; 6] = ["BTC", "ETH", "USDC", "USDT", "EURR", "any"];
const INTERVALS: [&str; 3] = ["raw", "100ms", "agg2"];

/// A validated trades channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `trades.{instrument_name}.{interval}`.
    Instrument {
        /// Instrument name.
        instrument: String,
        /// `raw`, `100ms` or `agg2`.
        interval: String,
    },
    /// `trades.{kind}.{currency}.{interval}`.
    KindCurrency {
        /// `future`, `option`, `spot`, `future_combo` or `option_combo`.
        kind: String,
        /// `BTC`, `ETH`, `USDC`, `USDT`, `EURR` or `any`.
        currency: String,
        /// `raw`, `100ms` or `agg2`.
        interval: String,
    },
}

impl Channel {
    /// Parses and validates one channel name.
    ///
    /// # Errors
    /// [`Error::Config`] naming the channel and the accepted forms.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::config(
                Setting::Channels,
                format!(
                    "invalid channel {text:?}: {why}; expected trades.{{instrument_name}}.{{interval}} \
                 or trades.{{kind}}.{{currency}}.{{interval}} with interval one of {INTERVALS:?}"
                ),
            )
        };
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.first() != Some(&"trades") {
            return Err(bad("only trades channels are supported".into()));
        }
        let interval = parts.last().copied().unwrap_or_default();
        if !INTERVALS.contains(&interval) {
            return Err(bad(format!("unknown interval {interval:?}")));
        }
        match parts.as_slice() {
            [_, instrument, _] if !instrument.is_empty() => Ok(Channel::Instrument {
                instrument: (*instrument).to_owned(),
                interval: interval.to_owned(),
            }),
            [_, kind, currency, _] => {
                if !KINDS.contains(kind) {
                    return Err(bad(format!(
                        "unknown kind {kind:?}, expected one of {KINDS:?}"
                    )));
                }
                if !CURRENCIES.contains(currency) {
                    return Err(bad(format!(
                        "unknown currency {currency:?}, expected one of {CURRENCIES:?}"
                    )));
                }
                Ok(Channel::KindCurrency {
                    kind: (*kind).to_owned(),
                    currency: (*currency).to_owned(),
                    interval: interval.to_owned(),
                })
            }
            _ => Err(bad("wrong number of parts".into())),
        }
    }

    /// Parses a comma-separated list, dropping repeats (the desired set is a set).
    ///
    /// # Errors
    /// As [`Channel::parse`], or if the list is empty.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut channels = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let channel = Channel::parse(part)?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        if channels.is_empty() {
            return Err(Error::config(
                Setting::Channels,
                format!("no channels given; for example {DEFAULT_CHANNELS}"),
            ));
        }
        Ok(channels)
    }

    /// The interval part.
    pub fn interval(&self) -> &str {
        match self {
            Channel::Instrument { interval, .. } | Channel::KindCurrency { interval, .. } => {
                interval
            }
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Instrument {
                instrument,
                interval,
            } => write!(f, "trades.{instrument}.{interval}"),
            Channel::KindCurrency {
                kind,
                currency,
                interval,
            } => {
                write!(f, "trades.{kind}.{currency}.{interval}")
            }
        }
    }
}

/// Splits channels into subscribe calls of at most [`MAX_CHANNELS_PER_SUBSCRIBE`] channels and a
/// request frame well under [`MAX_REQUEST_BYTES`].
pub fn chunk_channels(channels: &[String]) -> Vec<Vec<String>> {
    // Envelope `{"jsonrpc":"2.0","id":…,"method":"public/subscribe","params":{"channels":[]}}`
    // plus headroom for a large id.
    const ENVELOPE: usize = 128;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut bytes = ENVELOPE;
    for channel in channels {
        let cost = channel.len() + 3; // quotes and comma
        let full = chunks.last().is_none_or(|c| {
            c.len() >= MAX_CHANNELS_PER_SUBSCRIBE || bytes + cost >= MAX_REQUEST_BYTES
        });
        if full {
            chunks.push(Vec::new());
            bytes = ENVELOPE;
        }
        bytes += cost;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(channel.clone());
        }
    }
    chunks
}

/// API credentials for `public/auth` (client_credentials grant).
#[derive(Clone)]
pub struct Credentials {
    /// Client id (not secret, shown in logs).
    pub client_id: String,
    /// Client secret: never logged, never in `Debug`.
    pub client_secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"REDACTED")
            .finish()
    }
}

/// Reconnect backoff: capped exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Ceiling of any delay.
    pub max: Duration,
    /// A connection that lived this long resets the backoff.
    pub stable_after: Duration,
    /// Least wait after running out of credits (10028), so the pool can refill.
    pub rate_limited: Duration,
    /// Least wait after a maintenance error (11051, 11056).
    pub maintenance: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            rate_limited: Duration::from_secs(5),
            maintenance: Duration::from_secs(10),
        }
    }
}

/// Everything the feed needs.
#[derive(Debug, Clone)]
pub struct DeribitConfig {
    /// WebSocket endpoint (`wss://` in production, `ws://` accepted for local fakes).
    pub url: String,
    /// Channels to subscribe.
    pub channels: Vec<Channel>,
    /// Optional credentials (needed for `raw` channels).
    pub credentials: Option<Credentials>,
    /// `public/set_heartbeat` interval (≥ 10 s, Deribit's minimum).
    pub heartbeat_interval: Duration,
    /// With no frame at all for this long the connection is presumed dead (half-open sockets
    /// happen) and replaced; `None` means two heartbeat intervals.
    pub silence_timeout: Option<Duration>,
    /// Deadline for any request's answer.
    pub request_timeout: Duration,
    /// Frames above this size are rejected (the connection is replaced).
    pub max_frame_bytes: usize,
    /// Batches buffered between the socket and the consumer.
    pub queue_capacity: usize,
    /// Live trades held per instrument while its history is fetched.
    pub max_held_per_instrument: usize,
    /// History requests in flight at once.
    pub max_backfill_in_flight: usize,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Sent in `public/hello`.
    pub client_name: String,
    /// How often Deribit's clock is read to advance the completeness time.
    pub progress_interval: Duration,
    /// Subtracted from Deribit's clock for its notification batching (`100ms` channels).
    pub completeness_margin: Duration,
}

impl DeribitConfig {
    /// A configuration with defaults for everything but the URL and channels.
    pub fn new(url: impl Into<String>, channels: Vec<Channel>) -> Self {
        DeribitConfig {
            url: url.into(),
            channels,
            credentials: None,
            heartbeat_interval: Duration::from_secs(10),
            silence_timeout: None,
            request_timeout: Duration::from_secs(10),
            max_frame_bytes: 16 * 1024 * 1024,
            queue_capacity: 4096,
            max_held_per_instrument: 100_000,
            max_backfill_in_flight: 4,
            backoff: BackoffConfig::default(),
            client_name: "deribit-kafka".into(),
            progress_interval: Duration::from_secs(1),
            completeness_margin: Duration::from_secs(1),
        }
    }

    /// The effective silence timeout.
    pub fn silence_timeout(&self) -> Duration {
        self.silence_timeout.unwrap_or(self.heartbeat_interval * 2)
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a `raw` channel without credentials, a heartbeat under 10 s, an
    /// unusable URL, zero capacities, or an inverted backoff.
    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("wss://") || self.url.starts_with("ws://")) {
            return Err(Error::config(
                Setting::Url,
                format!(
                    "invalid URL {:?}: expected wss://… (e.g. {PRODUCTION_URL} or {TESTNET_URL})",
                    self.url
                ),
            ));
        }
        if self.channels.is_empty() {
            return Err(Error::config(Setting::Channels, "no channels to subscribe"));
        }
        if self.credentials.is_none()
            && let Some(raw) = self.channels.iter().find(|c| c.interval() == "raw")
        {
            return Err(Error::config(
                Setting::Channels,
                format!(
                    "channel {raw} needs credentials: Deribit serves `raw` only to authenticated \
                     clients; set a client id and secret, or use the 100ms interval"
                ),
            ));
        }
        if self.heartbeat_interval < Duration::from_secs(10) {
            return Err(Error::config(
                Setting::HeartbeatInterval,
                format!(
                    "heartbeat interval {:?} is below Deribit's minimum of 10 s",
                    self.heartbeat_interval
                ),
            ));
        }
        if self.queue_capacity == 0
            || self.max_held_per_instrument == 0
            || self.max_backfill_in_flight == 0
        {
            return Err(Error::config(
                Setting::Limits,
                "queue capacity, hold limit and in-flight limit must be > 0",
            ));
        }
        if self.progress_interval < Duration::from_millis(100) {
            return Err(Error::config(
                Setting::ProgressInterval,
                format!(
                    "progress interval {:?} is below 100 ms (each one costs a request)",
                    self.progress_interval
                ),
            ));
        }
        if self.backoff.initial.is_zero() || self.backoff.initial > self.backoff.max {
            return Err(Error::config(
                Setting::Backoff,
                format!(
                    "backoff must satisfy 0 < initial ≤ max, got {:?} and {:?}",
                    self.backoff.initial, self.backoff.max
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_channel_forms() {
        assert_eq!(
            Channel::parse("trades.BTC-PERPETUAL.100ms").unwrap(),
            Channel::Instrument {
                instrument: "BTC-PERPETUAL".into(),
                interval: "100ms".into()
            }
        );
        let c = Channel::parse("trades.option.BTC.raw").unwrap();
        assert_eq!(c.to_string(), "trades.option.BTC.raw");
        assert_eq!(Channel::parse_list(DEFAULT_CHANNELS).unwrap().len(), 2);
        assert_eq!(
            Channel::parse_list("trades.future.BTC.100ms, trades.future.BTC.100ms")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn rejects_bad_channels_with_the_accepted_forms() {
        for (text, why) in [
            ("book.BTC-PERPETUAL.100ms", "only trades channels"),
            ("trades.BTC-PERPETUAL.1s", "unknown interval \"1s\""),
            ("trades.any.BTC.100ms", "unknown kind \"any\""),
            ("trades.future.DOGE.100ms", "unknown currency \"DOGE\""),
            ("trades.a.b.c.100ms", "wrong number of parts"),
            ("trades..100ms", "wrong number of parts"),
        ] {
            let message = Channel::parse(text).unwrap_err().to_string();
            assert!(message.contains(why), "{text}: {message}");
            assert!(
                message.contains("trades.{kind}.{currency}.{interval}"),
                "{message}"
            );
        }
        assert!(Channel::parse_list(" , ").is_err());
    }

    #[test]
    fn raw_without_credentials_is_refused_with_the_reason() {
        let config = DeribitConfig::new(
            PRODUCTION_URL,
            Channel::parse_list("trades.future.BTC.raw").unwrap(),
        );
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("Deribit serves `raw` only to authenticated clients"),
            "{message}"
        );
        let mut config = config;
        config.credentials = Some(Credentials {
            client_id: "id".into(),
            client_secret: "s3cr3t".into(),
        });
        config.validate().unwrap();
    }

    #[test]
    fn other_settings_are_checked() {
        let mut config =
            DeribitConfig::new("https://x", Channel::parse_list(DEFAULT_CHANNELS).unwrap());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("expected wss://")
        );
        config.url = TESTNET_URL.into();
        config.heartbeat_interval = Duration::from_secs(5);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("minimum of 10 s")
        );
    }

    #[test]
    fn each_error_names_its_setting_whatever_its_words() {
        let setting = |change: &dyn Fn(&mut DeribitConfig)| {
            let mut config =
                DeribitConfig::new(TESTNET_URL, Channel::parse_list(DEFAULT_CHANNELS).unwrap());
            change(&mut config);
            match config.validate() {
                Err(Error::Config { setting, .. }) => Some(setting),
                _ => None,
            }
        };
        assert_eq!(setting(&|_| {}), None);
        assert_eq!(setting(&|c| c.url = "https://x".into()), Some(Setting::Url));
        assert_eq!(setting(&|c| c.channels.clear()), Some(Setting::Channels));
        assert_eq!(
            setting(&|c| c.channels = Channel::parse_list("trades.future.BTC.raw").unwrap()),
            Some(Setting::Channels)
        );
        assert_eq!(
            setting(&|c| c.heartbeat_interval = Duration::from_secs(5)),
            Some(Setting::HeartbeatInterval)
        );
        assert_eq!(
            setting(&|c| c.progress_interval = Duration::from_millis(10)),
            Some(Setting::ProgressInterval)
        );
        assert_eq!(setting(&|c| c.queue_capacity = 0), Some(Setting::Limits));
        assert_eq!(
            setting(&|c| c.backoff.initial = Duration::ZERO),
            Some(Setting::Backoff)
        );
        assert!(matches!(
            Channel::parse("book.BTC.100ms"),
            Err(Error::Config {
                setting: Setting::Channels,
                ..
            })
        ));
    }

    #[test]
    fn secret_never_shows_in_debug() {
        let mut config = DeribitConfig::new(PRODUCTION_URL, vec![]);
        config.credentials = Some(Credentials {
            client_id: "my-id".into(),
            client_secret: "s3cr3t".into(),
        });
        let debug = format!("{config:?}");
        assert!(debug.contains("my-id") && debug.contains("REDACTED") && !debug.contains("s3cr3t"));
    }

    #[test]
    fn chunks_respect_count_and_frame_size() {
        let many: Vec<String> = (0..1203).map(|i| format!("trades.BTC-{i}.100ms")).collect();
        let chunks = chunk_channels(&many);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 203]
        );
        let long: Vec<String> = (0..400)
            .map(|i| format!("trades.{}-{i}.100ms", "X".repeat(200)))
            .collect();
        for chunk in chunk_channels(&long) {
            let frame = serde_json::json!({"jsonrpc":"2.0","id":u64::MAX,"method":"public/subscribe","params":{"channels":chunk}});
            assert!(frame.to_string().len() < MAX_REQUEST_BYTES);
        }
        assert_eq!(
            chunk_channels(&long).concat(),
            long,
            "nothing lost, order kept"
        );
    }
}
