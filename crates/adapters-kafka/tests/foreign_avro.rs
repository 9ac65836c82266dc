//! Records written with foreign schemas cannot make the decoder reserve more than their size
//! suggests, nor recurse without end (issue #16, finding 6).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::sync::Mutex;

use adapters_kafka::Error;
use adapters_kafka::avro::{decode_trade, decode_value};
use apache_avro::Schema;
use apache_avro::types::Value;
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The peak is process-wide: measurements take turns.
static MEASURING: Mutex<()> = Mutex::new(());

/// Bytes allocated at the peak of `decode` beyond what was allocated before it, and its result.
fn peak_of<T>(decode: impl FnOnce() -> T) -> (usize, T) {
    let _turn = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let result = decode();
    (ALLOCATOR.peak_usage().saturating_sub(before), result)
}

/// A zig-zag varint, as Avro writes lengths and counts.
fn varint(value: i64) -> Vec<u8> {
    #[allow(clippy::cast_sign_loss)] // zig-zag encoding reinterprets the bits
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        #[allow(clippy::cast_possible_truncation)] // seven bits at a time
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn schema(json: &str) -> Schema {
    Schema::parse_str(json).unwrap()
}

fn decode_error(result: Result<Value, Error>) -> String {
    match result {
        Err(Error::Decode { reason, .. }) => reason,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn a_length_prefix_beyond_the_record_is_refused_without_reserving_it() {
    let writer = schema(r#"{"type":"record","name":"T","fields":[{"name":"s","type":"string"}]}"#);
    let mut datum = varint(500 << 20);
    datum.extend_from_slice(b"abc");

    let (peak, result) = peak_of(|| decode_value(7, &writer, &writer, &datum));

    let reason = decode_error(result);
    assert!(reason.contains("claims 524288000 bytes"), "{reason}");
    assert!(
        peak < 1 << 20,
        "a {}-byte record reserved {peak} bytes",
        datum.len()
    );
}

#[test]
fn an_array_of_nulls_cannot_claim_more_items_than_the_record_has_bytes() {
    let writer = schema(
        r#"{"type":"record","name":"T","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
    );
    // 89 bytes: blocks of ten million nulls each, as in the fuzz finding.
    let mut datum = Vec::new();
    while datum.len() < 85 {
        datum.extend(varint(10_000_000));
    }
    datum.extend(varint(0));

    let (peak, result) = peak_of(|| decode_value(7, &writer, &writer, &datum));

    let reason = decode_error(result);
    assert!(reason.contains("claims 10000000 items"), "{reason}");
    assert!(
        peak < 1 << 20,
        "a {}-byte record reserved {peak} bytes",
        datum.len()
    );
}

#[test]
fn nulls_within_the_record_size_still_decode() {
    let writer = schema(
        r#"{"type":"record","name":"T","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
    );
    let mut datum = varint(2);
    datum.extend(varint(0));

    let value = decode_value(7, &writer, &writer, &datum).unwrap();

    assert_eq!(
        value,
        Value::Record(vec![(
            "a".into(),
            Value::Array(vec![Value::Null, Value::Null])
        )])
    );
}

#[test]
fn a_deeply_nested_recursive_record_is_refused_not_a_stack_overflow() {
    let writer = schema(
        r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
    );
    // Each level is one byte (union branch 1); the last says null.
    let mut datum = vec![0x02; 200_000];
    datum.push(0x00);

    let reason = decode_error(decode_value(7, &writer, &writer, &datum));

    assert!(reason.contains("nested deeper than 64"), "{reason}");
}

#[test]
fn a_foreign_trade_with_a_huge_string_is_a_decode_error() {
    // A producer's trade schema with fewer fields than ours: it resolves, so only the bounds stop
    // the instrument name's claimed 400 MiB.
    let writer = schema(
        r#"{"type":"record","name":"Trade","namespace":"deribit","fields":[
            {"name":"instrument_name","type":"string"}]}"#,
    );
    let mut datum = varint(400 << 20);
    datum.extend_from_slice(b"BTC");

    let (peak, result) = peak_of(|| decode_trade(9, &writer, &datum));

    assert!(
        matches!(&result, Err(Error::Decode { schema_id: 9, reason }) if reason.contains("claims")),
        "{result:?}"
    );
    assert!(peak < 1 << 20, "reserved {peak} bytes");
}

#[test]
fn zero_size_values_through_reused_named_types_are_bounded() {
    // T0 holds ten T1, each ten T2 … down to null: an empty datum standing for 10^6 values.
    let fields = |first: &str, rest: &str| -> String {
        (0..10)
            .map(|i| {
                format!(
                    r#"{{"name":"f{i}","type":{}}}"#,
                    if i == 0 { first } else { rest }
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut types = format!(
        r#"{{"type":"record","name":"T5","fields":[{}]}}"#,
        fields("\"null\"", "\"null\"")
    );
    for level in (0..5).rev() {
        let inner = format!("\"T{}\"", level + 1);
        types = format!(
            r#"{{"type":"record","name":"T{level}","fields":[{}]}}"#,
            fields(&types, &inner)
        );
    }
    let writer = schema(&types);

    let reason = decode_error(decode_value(7, &writer, &writer, &[]));

    assert!(
        reason.contains("more values than a record of this size"),
        "{reason}"
    );
}

#[test]
fn blocks_with_byte_sizes_and_names_in_a_namespace_decode() {
    // A negative block count is followed by the block's size in bytes (Java's blocking encoder).
    let writer = schema(
        r#"{"type":"record","name":"Outer","namespace":"ns","fields":[
            {"name":"a","type":{"type":"array","items":"long"}},
            {"name":"inner","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"long"}]}},
            {"name":"again","type":"ns.Inner"}]}"#,
    );
    let mut datum = varint(-2);
    datum.extend(varint(2));
    datum.extend(varint(5));
    datum.extend(varint(-6));
    datum.extend(varint(0));
    datum.extend(varint(7));
    datum.extend(varint(8));

    let value = decode_value(7, &writer, &writer, &datum).unwrap();

    let Value::Record(fields) = value else {
        panic!("a record")
    };
    assert_eq!(
        fields[0].1,
        Value::Array(vec![Value::Long(5), Value::Long(-6)])
    );
    assert_eq!(
        fields[2].1,
        Value::Record(vec![("x".into(), Value::Long(8))])
    );
}
