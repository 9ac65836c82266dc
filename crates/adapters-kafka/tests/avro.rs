//! The Avro codec against the schema files: same bytes as apache-avro, round trips, framing,
//! schema evolution, bad data.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // test helpers

use adapters_kafka::Error;
use adapters_kafka::avro::{
    aggregate_schema, decode_aggregate, decode_trade, encode_aggregate, encode_trade, trade_schema,
};
use adapters_kafka::framing::{split_frame, start_frame};
use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use domain::{Aggregate, Direction, EwmaValue, Liquidation, Trade, TradeFields};
use proptest::prelude::*;

/// The documented example trade (Deribit's `trade_seq` 30289442), no optional field set.
fn fields() -> TradeFields {
    TradeFields {
        direction: Direction::Sell,
        index_price: 8955.88,
        mark_price: 8948.9,
        tick_direction: 2,
        trade_id: "48079269".into(),
        ..domain::testing::fields("BTC-PERPETUAL", 30_289_442, 1_590_484_512_188, 8950.0, 10.0)
    }
}

fn all_optional_set() -> TradeFields {
    TradeFields {
        instrument_name: "BTC-27MAY20-9000-C".into(),
        iv: Some(47.58),
        liquidation: Some(Liquidation::Both),
        block_trade_id: Some("154".into()),
        combo_id: Some("BTC-CS-28JUN24-60000_65000".into()),
        contracts: Some(3.0),
        direction: Direction::Buy,
        ..fields()
    }
}

fn optional(index_if_some: u32, value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(index_if_some, Box::new(v)),
    }
}

/// The trade as apache-avro's generic value, built from the field names of the schema file.
fn trade_value(t: &TradeFields) -> Value {
    Value::Record(vec![
        (
            "instrument_name".into(),
            Value::String(t.instrument_name.clone()),
        ),
        ("trade_id".into(), Value::String(t.trade_id.clone())),
        ("trade_seq".into(), Value::Long(t.trade_seq as i64)),
        ("timestamp".into(), Value::TimestampMillis(t.timestamp)),
        ("price".into(), Value::Double(t.price)),
        ("amount".into(), Value::Double(t.amount)),
        (
            "direction".into(),
            match t.direction {
                Direction::Buy => Value::Enum(0, "buy".into()),
                Direction::Sell => Value::Enum(1, "sell".into()),
            },
        ),
        ("index_price".into(), Value::Double(t.index_price)),
        ("mark_price".into(), Value::Double(t.mark_price)),
        (
            "tick_direction".into(),
            Value::Int(i32::from(t.tick_direction)),
        ),
        ("iv".into(), optional(1, t.iv.map(Value::Double))),
        (
            "liquidation".into(),
            optional(
                1,
                t.liquidation.map(|l| match l {
                    Liquidation::Maker => Value::Enum(0, "M".into()),
                    Liquidation::Taker => Value::Enum(1, "T".into()),
                    Liquidation::Both => Value::Enum(2, "MT".into()),
                }),
            ),
        ),
        (
            "block_trade_id".into(),
            optional(1, t.block_trade_id.clone().map(Value::String)),
        ),
        (
            "combo_id".into(),
            optional(1, t.combo_id.clone().map(Value::String)),
        ),
        (
            "contracts".into(),
            optional(1, t.contracts.map(Value::Double)),
        ),
    ])
}

fn aggregate(ewma: usize) -> Aggregate {
    Aggregate {
        instrument_name: "ETH-PERPETUAL".into(),
        window_start: 1_732_500_000_000,
        window_end: 1_732_500_060_000,
        trade_count: 42,
        volume: 1234.5,
        buy_volume: 1000.0,
        sell_volume: 234.5,
        vwap: 3501.25,
        open: 3500.0,
        high: 3510.5,
        low: 3490.0,
        close: 3505.0,
        ewma: (0..ewma)
            .map(|i| EwmaValue {
                halflife_ms: 30_000 * (i as i64 + 1),
                price: 3502.0 + i as f64,
                vw_price: 3503.0,
            })
            .collect(),
        first_trade_seq: 1,
        last_trade_seq: 42,
        first_trade_timestamp: 1_732_500_000_001,
        last_trade_timestamp: 1_732_500_059_999,
        window_ms: 60_000,
        seq_gaps: Some(3),
        late_trades: Some(1),
    }
}

fn aggregate_value(a: &Aggregate) -> Value {
    Value::Record(vec![
        (
            "instrument_name".into(),
            Value::String(a.instrument_name.clone()),
        ),
        (
            "window_start".into(),
            Value::TimestampMillis(a.window_start),
        ),
        ("window_end".into(), Value::TimestampMillis(a.window_end)),
        ("trade_count".into(), Value::Long(a.trade_count as i64)),
        ("volume".into(), Value::Double(a.volume)),
        ("buy_volume".into(), Value::Double(a.buy_volume)),
        ("sell_volume".into(), Value::Double(a.sell_volume)),
        ("vwap".into(), Value::Double(a.vwap)),
        ("open".into(), Value::Double(a.open)),
        ("high".into(), Value::Double(a.high)),
        ("low".into(), Value::Double(a.low)),
        ("close".into(), Value::Double(a.close)),
        (
            "ewma".into(),
            Value::Array(
                a.ewma
                    .iter()
                    .map(|e| {
                        Value::Record(vec![
                            ("halflife_ms".into(), Value::Long(e.halflife_ms)),
                            ("price".into(), Value::Double(e.price)),
                            ("vw_price".into(), Value::Double(e.vw_price)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "first_trade_seq".into(),
            Value::Long(a.first_trade_seq as i64),
        ),
        (
            "last_trade_seq".into(),
            Value::Long(a.last_trade_seq as i64),
        ),
        (
            "first_trade_timestamp".into(),
            Value::TimestampMillis(a.first_trade_timestamp),
        ),
        (
            "last_trade_timestamp".into(),
            Value::TimestampMillis(a.last_trade_timestamp),
        ),
        ("window_ms".into(), Value::Long(a.window_ms)),
        (
            "seq_gaps".into(),
            optional(1, a.seq_gaps.map(|g| Value::Long(g as i64))),
        ),
        (
            "late_trades".into(),
            optional(1, a.late_trades.map(|l| Value::Long(l as i64))),
        ),
    ])
}

fn reference_bytes(schema: &Schema, value: Value) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

fn ours(trade: &TradeFields) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_trade(&mut buf, &Trade::new(trade.clone()).unwrap()).unwrap();
    buf
}

#[test]
fn trade_bytes_equal_apache_avro_from_the_schema_file() {
    for t in [fields(), all_optional_set()] {
        assert_eq!(
            ours(&t),
            reference_bytes(trade_schema().unwrap(), trade_value(&t)),
            "{t:?}"
        );
    }
}

#[test]
fn aggregate_bytes_equal_apache_avro_from_the_schema_file() {
    for n in [0, 1, 3] {
        let a = aggregate(n);
        let mut buf = Vec::new();
        encode_aggregate(&mut buf, &a).unwrap();
        assert_eq!(
            buf,
            reference_bytes(aggregate_schema().unwrap(), aggregate_value(&a)),
            "{n} ewma entries"
        );
        assert_eq!(
            decode_aggregate(7, aggregate_schema().unwrap(), &buf).unwrap(),
            a
        );
    }
}

#[test]
fn trades_round_trip_with_every_optional_field_set_and_unset() {
    for t in [fields(), all_optional_set()] {
        let decoded = decode_trade(1, trade_schema().unwrap(), &ours(&t)).unwrap();
        assert_eq!(decoded.into_fields(), t);
    }
}

#[test]
fn a_framed_record_is_exactly_the_hand_built_bytes() {
    let t = TradeFields {
        instrument_name: "X".into(),
        trade_id: "7".into(),
        trade_seq: 1,
        timestamp: 2,
        price: 1.0,
        amount: 0.5,
        direction: Direction::Buy,
        index_price: 1.0,
        mark_price: -1.0,
        tick_direction: 3,
        iv: Some(2.0),
        ..fields()
    };
    let mut frame = Vec::new();
    start_frame(&mut frame, 258);
    encode_trade(&mut frame, &Trade::new(t).unwrap()).unwrap();
    let mut expected = vec![0, 0, 0, 1, 2]; // magic, schema id 258 big-endian
    expected.extend([2, b'X', 2, b'7']); // strings: zig-zag length 1 = 2
    expected.extend([2, 4]); // trade_seq 1, timestamp 2
    expected.extend(1.0f64.to_le_bytes());
    expected.extend(0.5f64.to_le_bytes());
    expected.push(0); // direction buy
    expected.extend(1.0f64.to_le_bytes());
    expected.extend((-1.0f64).to_le_bytes());
    expected.push(6); // tick_direction 3
    expected.push(2); // iv: branch 1
    expected.extend(2.0f64.to_le_bytes());
    expected.extend([0, 0, 0, 0]); // liquidation, block_trade_id, combo_id, contracts: null
    assert_eq!(frame, expected);
    let (id, datum) = split_frame(&frame).unwrap();
    assert_eq!(id, 258);
    assert_eq!(
        decode_trade(id, trade_schema().unwrap(), datum)
            .unwrap()
            .trade_id,
        "7"
    );
}

#[test]
fn records_from_evolved_writers_decode() {
    // A newer producer added a field; an older one did not have `contracts` yet.
    let newer = TRADE_WITH_EXTRA_FIELD;
    let newer = Schema::parse_str(newer).unwrap();
    let mut value = trade_value(&all_optional_set());
    if let Value::Record(fields) = &mut value {
        fields.push(("venue".into(), Value::String("deribit".into())));
    }
    let bytes = reference_bytes(&newer, value);
    let decoded = decode_trade(5, &newer, &bytes).unwrap();
    assert_eq!(decoded.into_fields(), all_optional_set());

    let older = Schema::parse_str(&adapters_kafka::avro::TRADE_SCHEMA_JSON.replace(
        r#",
    {"name": "contracts", "type": ["null", "double"], "default": null, "doc": "Number of contracts (may be absent in historical trades)."}"#,
        "",
    ))
    .unwrap();
    let mut value = trade_value(&fields());
    if let Value::Record(fields) = &mut value {
        fields.pop();
    }
    let bytes = reference_bytes(&older, value);
    assert_eq!(decode_trade(4, &older, &bytes).unwrap().contracts, None);
}

const TRADE_WITH_EXTRA_FIELD: &str = r#"{"type":"record","name":"Trade","namespace":"com.deribit.marketdata","fields":[
 {"name":"instrument_name","type":"string"},{"name":"trade_id","type":"string"},{"name":"trade_seq","type":"long"},
 {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},{"name":"price","type":"double"},
 {"name":"amount","type":"double"},{"name":"direction","type":{"type":"enum","name":"Direction","symbols":["buy","sell"]}},
 {"name":"index_price","type":"double"},{"name":"mark_price","type":"double"},{"name":"tick_direction","type":"int"},
 {"name":"iv","type":["null","double"],"default":null},
 {"name":"liquidation","type":["null",{"type":"enum","name":"Liquidation","symbols":["M","T","MT"]}],"default":null},
 {"name":"block_trade_id","type":["null","string"],"default":null},{"name":"combo_id","type":["null","string"],"default":null},
 {"name":"contracts","type":["null","double"],"default":null},{"name":"venue","type":"string","default":"deribit"}]}"#;

#[test]
fn bad_data_is_a_clear_error_not_a_panic() {
    let schema = trade_schema().unwrap();
    let good = ours(&fields());
    // Truncated anywhere, including inside the trailing optional fields.
    for cut in 1..good.len() {
        let err = decode_trade(3, schema, &good[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::Decode { schema_id: 3, .. }),
            "cut at {cut}: {err}"
        );
    }
    // Trailing garbage.
    let mut long = good.clone();
    long.push(7);
    assert!(
        decode_trade(3, schema, &long)
            .unwrap_err()
            .to_string()
            .contains("1 bytes left")
    );
    // A NaN price decodes but is not a valid trade.
    let mut nan = fields();
    nan.price = f64::NAN;
    let bytes = reference_bytes(schema, trade_value(&nan));
    let err = decode_trade(3, schema, &bytes).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTrade(_)) && err.to_string().contains("`price`"),
        "{err}"
    );
    // A negative trade_seq cannot be ours.
    let mut value = trade_value(&fields());
    if let Value::Record(fields) = &mut value {
        fields[2].1 = Value::Long(-5);
    }
    let err = decode_trade(3, schema, &reference_bytes(schema, value)).unwrap_err();
    assert!(err.to_string().contains("`trade_seq` is negative"), "{err}");
    // Random bytes, an out-of-range union branch, an absurd string length.
    assert!(decode_trade(3, schema, &[0xff; 16]).is_err());
    let mut bad_union = good;
    *bad_union.last_mut().unwrap() = 4; // contracts: branch 2
    assert!(
        decode_trade(3, schema, &bad_union)
            .unwrap_err()
            .to_string()
            .contains("union branch 2")
    );
    assert!(decode_trade(3, schema, &[0xfe, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn a_trade_seq_beyond_an_avro_long_never_reaches_the_encoder() {
    // Refused as the trade is built, so the sink never meets one it cannot write.
    let mut t = fields();
    t.trade_seq = u64::MAX;
    let err = Trade::new(t).unwrap_err();
    assert!(err.to_string().contains("an Avro long"), "{err}");
}

proptest! {
    #[test]
    fn random_trades_encode_like_apache_avro_and_round_trip(
        name in "[A-Z0-9_-]{1,40}",
        id in "[0-9A-Za-z-]{1,20}",
        seq in 0u64..i64::MAX as u64,
        ts in 1i64..domain::trade::MAX_TIMESTAMP_MS,
        price in 1e-9f64..1e12,
        amount in 1e-9f64..1e12,
        buy in any::<bool>(),
        tick in 0u8..4,
        iv in proptest::option::of(-1e6f64..1e6),
        liq in proptest::option::of(0u8..3),
        block in proptest::option::of("[0-9]{1,12}"),
        contracts in proptest::option::of(1e-6f64..1e9),
    ) {
        let t = TradeFields {
            instrument_name: name,
            trade_id: id,
            trade_seq: seq,
            timestamp: ts,
            price,
            amount,
            direction: if buy { Direction::Buy } else { Direction::Sell },
            index_price: price,
            mark_price: -price,
            tick_direction: tick,
            iv,
            liquidation: liq.map(|l| [Liquidation::Maker, Liquidation::Taker, Liquidation::Both][l as usize]),
            block_trade_id: block,
            combo_id: None,
            contracts,
        };
        let bytes = ours(&t);
        prop_assert_eq!(&bytes, &reference_bytes(trade_schema().unwrap(), trade_value(&t)));
        prop_assert_eq!(decode_trade(1, trade_schema().unwrap(), &bytes).unwrap().into_fields(), t);
    }
}
