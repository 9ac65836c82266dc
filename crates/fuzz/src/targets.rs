//! The parsers of external data the harness drives, each with its seeds and memory bound.
//!
//! A target returns a small signature of what the input did (which branch, how many trades,
//! which kind of error): inputs with a new signature join the pool that mutations start from,
//! a cheap stand-in for coverage feedback.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Cursor;

use adapters_deribit::parse::parse_notification_params;
use adapters_deribit::rpc::{Incoming, TradesPage, classify};
use adapters_kafka::avro::{
    decode_aggregate, decode_foreign_trade, decode_own_trade, decode_value, encode_aggregate,
    encode_trade,
};
use adapters_kafka::framing::{split_frame, start_frame};
use apache_avro::Schema;
use domain::{Aggregator, AggregatorConfig, WatermarkRule, WindowSize};

/// One parser of external data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A WebSocket text frame: classification, notifications and their trades.
    DeribitFrame,
    /// A response carrying a history page (`get_last_trades_by_*`), each trade validated.
    DeribitHistory,
    /// A whole `replay` input file, through the line parser and the aggregator.
    Replay,
    /// A Kafka record value: Confluent framing, our trade decoder and foreign-schema decoding.
    Avro,
    /// The environment (`NAME=VALUE` lines, any bytes) read by both services' configuration.
    Env,
}

/// Trades and frames the project's own tests use.
const FUTURE_NOTIFICATION: &str =
    include_str!("../../adapters-deribit/test_data/ws_trades_future.json");
const COMBO_NOTIFICATION: &str =
    include_str!("../../adapters-deribit/test_data/ws_trades_combo.json");
const OPTION_TRADE: &str = include_str!("../../adapters-deribit/test_data/trade_option.json");
const OPTION_CONTRACTS: &str =
    include_str!("../../adapters-deribit/test_data/trade_option_contracts.json");
const REPLAY_FILE: &str = include_str!("../../app-agg/tests/data/trades.jsonl");

/// Writer schemas a foreign producer might register: an older trade, an aggregate, and shapes
/// that stress the decoder (recursion, collections of zero-size items, maps of bytes).
const FOREIGN_SCHEMAS: &[&str] = &[
    r#"{"type":"record","name":"Trade","namespace":"deribit","fields":[
        {"name":"instrument_name","type":"string"},{"name":"trade_id","type":"string"},
        {"name":"trade_seq","type":"long"},{"name":"timestamp","type":"long"},
        {"name":"price","type":"double"},{"name":"amount","type":"double"},
        {"name":"direction","type":{"type":"enum","name":"Direction","symbols":["buy","sell"]}},
        {"name":"index_price","type":"double"},{"name":"mark_price","type":"double"},
        {"name":"tick_direction","type":"int"}]}"#,
    r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"]}]}"#,
    r#"{"type":"record","name":"N","fields":[{"name":"a","type":{"type":"array","items":"null"}},{"name":"m","type":{"type":"map","values":{"type":"array","items":"bytes"}}}]}"#,
];

impl Target {
    /// Every target, in the order `just fuzz` runs them.
    pub const ALL: [Target; 5] = [
        Target::DeribitFrame,
        Target::DeribitHistory,
        Target::Replay,
        Target::Avro,
        Target::Env,
    ];

    /// The name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Target::DeribitFrame => "deribit-frame",
            Target::DeribitHistory => "deribit-history",
            Target::Replay => "replay",
            Target::Avro => "avro",
            Target::Env => "env",
        }
    }

    /// The target called `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Most bytes one input may allocate at its peak: parsing may cost a few times the input,
    /// never in proportion to counts the input claims. Replay keeps per-instrument state, a
    /// fixed cost per instrument name, hence its wider allowance. Both services read the
    /// environment into a few copies each (the map, the typed config, an error naming the
    /// value): linear, and Linux caps one variable at 128 KiB anyway.
    #[must_use]
    pub fn memory_bound(self, input_len: usize) -> usize {
        match self {
            Target::Replay | Target::Env => 16 * input_len + (16 << 20),
            _ => 4 * input_len + (1 << 20),
        }
    }

    /// The inputs mutations start from, built from the project's fixtures.
    #[must_use]
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::DeribitFrame => {
                let mut seeds: Vec<Vec<u8>> = [FUTURE_NOTIFICATION, COMBO_NOTIFICATION]
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect();
                seeds.extend(REPLAY_FILE.lines().take(8).map(|l| l.as_bytes().to_vec()));
                seeds.extend(
                    [
                        r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#,
                        r#"{"jsonrpc":"2.0","id":3,"result":1733000000123,"usIn":1733000000123456,"usOut":1733000000123500,"usDiff":44,"testnet":false}"#,
                        r#"{"jsonrpc":"2.0","id":4,"error":{"message":"too_many_requests","code":10028},"usIn":1,"usOut":2,"usDiff":1}"#,
                        r#"{"jsonrpc":"2.0","id":2,"result":["trades.future.BTC.100ms"],"usIn":1,"usOut":2,"usDiff":1}"#,
                    ]
                    .iter()
                    .map(|s| s.as_bytes().to_vec()),
                );
                seeds
            }
            Target::DeribitHistory => [OPTION_TRADE, OPTION_CONTRACTS]
                .iter()
                .map(|trade| {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":9,"result":{{"trades":[{t},{t}],"has_more":true}},"usIn":1,"usOut":2,"usDiff":1}}"#,
                        t = trade.trim()
                    )
                    .into_bytes()
                })
                .collect(),
            Target::Replay => {
                let lines: Vec<&str> = REPLAY_FILE.lines().collect();
                lines
                    .chunks(16)
                    .map(|chunk| chunk.join("\n").into_bytes())
                    .collect()
            }
            Target::Avro => avro_seeds(),
            Target::Env => [
                "DERIBIT_CHANNELS=trades.future.BTC.100ms\nRAW_TOPIC=deribit.trades\nKAFKA_BOOTSTRAP_SERVERS=localhost:9092\nSCHEMA_REGISTRY_URL=http://localhost:8081",
                "AGG_WINDOWS=1m\nAGG_GRACE=0s\nAGG_HALFLIVES=30s,5m\nAGG_WATERMARK=markers\nAGG_MARKER_TIMEOUT=30s\nRAW_TOPIC=deribit.trades\nAGG_TOPIC=deribit.aggregates",
                "KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_SSL\nKAFKA_PROPERTY_SASL_MECHANISM=SCRAM-SHA-512\nKAFKA_COMPRESSION=zstd\nKAFKA_SESSION_TIMEOUT=45s\nKAFKA_CREATE_TOPICS=true",
                "DERIBIT_CLIENT_ID=abc\nDERIBIT_CLIENT_SECRET=def\nDERIBIT_HEARTBEAT=10s\nRAW_PROGRESS_INTERVAL=1s\nRAW_WRITER_ID=raw-1\nHTTP_ADDR=0.0.0.0:8080\nSHUTDOWN_TIMEOUT=10s",
                "AGG_WATERMARK=trades\nAGG_MAX_DELAY=5s\nAGG_TRANSACTIONS=false\nAGG_COMMIT_INTERVAL=1s\nAGG_CHANGELOG_TOPIC=deribit.agg.changelog\nSCHEMA_REGISTRY_USER=u\nSCHEMA_REGISTRY_PASSWORD=p",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        }
    }

    /// Runs the parser on `input`; returns the signature of what happened.
    #[must_use]
    pub fn run(self, input: &[u8]) -> u64 {
        match self {
            Target::DeribitFrame => deribit_frame(input),
            Target::DeribitHistory => deribit_history(input),
            Target::Replay => replay(input),
            Target::Avro => avro(input),
            Target::Env => env(input),
        }
    }
}

/// A signature from parts. Positions in messages (`line 1 column 345`) are left out, so a
/// parse error at a new offset does not count as new behaviour; counts and kinds do count.
fn signature(parts: &[&dyn std::fmt::Debug]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for part in parts {
        let text = format!("{part:?}");
        let mut previous = "";
        for word in text.split_whitespace().take(12) {
            let position = matches!(previous, "line" | "column" | "index" | "offset");
            if !position {
                word.hash(&mut hasher);
            }
            previous = word;
        }
    }
    hasher.finish()
}

/// The input as text: the socket delivers text frames only as valid UTF-8, so an input that is
/// not is cut where it stops being (copying it with replacement characters would triple its
/// size and charge the parser for the harness's copy).
fn text(input: &[u8]) -> &str {
    match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&input[..e.valid_up_to()]).unwrap_or_default(),
    }
}

fn deribit_frame(input: &[u8]) -> u64 {
    let text = text(input);
    match classify(text) {
        Ok(Incoming::Notification(params)) => match parse_notification_params(params) {
            Ok(parsed) => signature(&[
                &"notification",
                &parsed.trades.len().min(4),
                &parsed.rejected.first().map(|r| &r.reason),
            ]),
            Err(e) => signature(&[&"notification", &e.to_string()]),
        },
        Ok(Incoming::Response {
            outcome: Ok(result),
            us_out,
            ..
        }) => {
            let page = serde_json::from_str::<TradesPage>(result.get());
            signature(&[
                &"response",
                &us_out.is_some(),
                &page.map(|p| p.trades.trades.len().min(4)).ok(),
            ])
        }
        Ok(other) => signature(&[&other]),
        Err(e) => signature(&[&e.classify()]),
    }
}

fn deribit_history(input: &[u8]) -> u64 {
    let text = text(input);
    let Ok(Incoming::Response {
        outcome: Ok(result),
        ..
    }) = classify(text)
    else {
        return signature(&[&"not a response"]);
    };
    match serde_json::from_str::<TradesPage>(result.get()) {
        Ok(page) => signature(&[
            &page.trades.trades.len().min(4),
            &page.trades.rejected.first().map(|r| &r.reason),
            &page.has_more,
        ]),
        Err(e) => signature(&[&e.classify()]),
    }
}

fn replay(input: &[u8]) -> u64 {
    let mut output = Vec::new();
    let mut diagnostics = Vec::new();
    let summary = app_agg::replay::replay(
        Cursor::new(input),
        &mut output,
        &mut diagnostics,
        replay_config(),
    );
    match summary {
        Ok(s) => signature(&[
            &s.accepted.min(4),
            &s.bad_lines.min(2),
            &s.invalid_trades.min(2),
            &s.late.min(2),
            &s.duplicates.min(2),
        ]),
        Err(e) => signature(&[&e.to_string()]),
    }
}

fn replay_config() -> AggregatorConfig {
    let config = WindowSize::from_millis(60_000).and_then(|minute| {
        AggregatorConfig::new(
            minute,
            0,
            WatermarkRule::TradeTime {
                max_delay_ms: 5_000,
            },
            vec![30_000, 300_000],
        )
    });
    match config {
        Ok(config) => config,
        Err(e) => unreachable!("the replay target's configuration is valid: {e}"),
    }
}

/// The first byte picks the writer schema; the rest is a Confluent frame, or a bare datum.
fn avro(input: &[u8]) -> u64 {
    let Some((&selector, rest)) = input.split_first() else {
        return 0;
    };
    let (id, datum) = split_frame(rest).unwrap_or((0, rest));
    let which = usize::from(selector) % (FOREIGN_SCHEMAS.len() + 2);
    let outcome = match which {
        0 => decode_own_trade(id, datum)
            .map(|t| t.trade_seq)
            .map_err(|e| e.to_string()),
        1 => match adapters_kafka::avro::aggregate_schema() {
            Ok(schema) => decode_aggregate(id, schema, datum)
                .map(|a| a.trade_count)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        n => match Schema::parse_str(FOREIGN_SCHEMAS[n - 2]) {
            Ok(writer) if n == 2 => decode_foreign_trade(id, &writer, datum)
                .map(|t| t.trade_seq)
                .map_err(|e| e.to_string()),
            Ok(writer) => decode_value(id, &writer, &writer, datum)
                .map(|_| 1)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    signature(&[&which, &outcome.map(|n| n.min(2))])
}

fn avro_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for json in [OPTION_TRADE, OPTION_CONTRACTS] {
        if let Ok(trade) = adapters_deribit::parse::parse_trade(json) {
            let mut framed = vec![0];
            start_frame(&mut framed, 1);
            if encode_trade(&mut framed, &trade).is_ok() {
                seeds.push(framed);
            }
        }
    }
    let mut aggregator = Aggregator::new(replay_config());
    for line in REPLAY_FILE.lines().take(64) {
        if let Ok(parsed) = adapters_deribit::parse::parse_json_line(line) {
            parsed.trades.iter().for_each(|t| {
                let _ = aggregator.ingest(t);
            });
        }
    }
    for aggregate in aggregator.flush_all().iter().take(2) {
        let mut framed = vec![1];
        start_frame(&mut framed, 2);
        if encode_aggregate(&mut framed, aggregate).is_ok() {
            seeds.push(framed);
        }
    }
    // Foreign records: a short linked list, and nulls with a map of byte arrays.
    seeds.push(vec![3, 2, 2, 4, 2, 6, 0]);
    seeds.push(vec![4, 4, 0, 2, 2, b'k', 2, 6, b'a', b'b', b'c', 0, 0]);
    seeds
}

/// `NAME=VALUE` lines, values of any bytes, through both services' configuration.
fn env(input: &[u8]) -> u64 {
    use std::os::unix::ffi::OsStringExt;
    let vars = input.split(|&b| b == b'\n').filter_map(|line| {
        let eq = line.iter().position(|&b| b == b'=')?;
        Some((
            std::ffi::OsString::from_vec(line[..eq].to_vec()),
            std::ffi::OsString::from_vec(line[eq + 1..].to_vec()),
        ))
    });
    let vars = match shell::config::utf8_vars(vars) {
        Ok(vars) => vars,
        Err(e) => return signature(&[&"not utf-8", &e.variable]),
    };
    let raw = <app_raw::config::RawConfig as shell::config::ServiceVariables>::settings_from(&vars)
        .map(|_| ())
        .map_err(|e| e.variable);
    let agg = <app_agg::config::AggConfig as shell::config::ServiceVariables>::settings_from(&vars)
        .map(|settings| {
            // A configuration that passes must also be one the aggregator can hold.
            std::hint::black_box(Aggregator::new(settings.aggregator));
        });
    signature(&[&raw, &agg.map_err(|e| e.variable)])
}
