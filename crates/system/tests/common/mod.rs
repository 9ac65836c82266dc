//! Helpers shared by the whole-system tests: app-agg started from the binary testkit builds
//! (`testkit::services`), its aggregates decoded; topics and their readers come from testkit.
#![allow(clippy::unwrap_used, dead_code, unused_imports)] // test helpers; not every test uses every helper

use std::process::{Child, Command};

use adapters_kafka::avro::{aggregate_schema, decode_aggregate};
use adapters_kafka::framing::split_frame;
use domain::Aggregate;
use testkit::services::{agg_command, service_binary, spawn_agg};
use testkit::{SchemaRegistryStub, TestBroker};

pub use testkit::topics::{
    AGG, LATE, RAW, STATE, aggregates_topic, create_topics, end_offset as raw_end_offset,
    wait_for_aggregates,
};

/// The app-agg binary, built by testkit for this test process.
pub fn bin() -> &'static str {
    service_binary("app-agg").to_str().unwrap()
}

/// Starts app-agg with the tests' settings (`testkit::services::agg_command`) on `http`.
pub fn spawn(broker: &TestBroker, stub: &SchemaRegistryStub, http: &str) -> Child {
    spawn_agg(bin(), broker, stub, http, "0")
}

/// The command [`spawn`] runs as `instance`, output not yet directed.
pub fn command(
    broker: &TestBroker,
    stub: &SchemaRegistryStub,
    http: &str,
    instance: &str,
) -> Command {
    agg_command(bin(), broker, stub, http, instance)
}

/// The aggregates deduplicated by (instrument, window_start), sorted, after asserting that
/// every repeat is byte-identical to its first; also the number of repeats.
pub fn union_of(records: &[Vec<u8>]) -> (Vec<Aggregate>, usize) {
    testkit::topics::union_by(records, decode, |a| {
        (a.instrument_name.clone(), a.window_start)
    })
}

/// One framed aggregate record, decoded.
pub fn decode(record: &[u8]) -> Aggregate {
    let (id, datum) = split_frame(record).unwrap();
    decode_aggregate(id, aggregate_schema().unwrap(), datum).unwrap()
}
