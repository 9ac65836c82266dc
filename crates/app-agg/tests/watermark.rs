//! What closes windows in the running service: the fallback rule for a raw topic without
//! progress markers, readiness when markers stop, and a trade that comes after its window closed
//! (a WARN, a counter, a copy in the late-trades topic, no crash). Mock cluster, or Apache
//! Kafka with `TEST_BROKER=kafka`.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use adapters_kafka::commit::{LATE_OFFSET, LATE_REASON};
use common::{BIN, LATE, RAW};
use domain::testing;
use ports::{TradeBatch, TradeSink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::wait_for;

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_markers_the_trades_rule_closes_windows_and_the_markers_rule_waits_not_ready() {
    let (broker, stub) = testkit::topics::pipeline_ground(2).await;
    let batches = common::stream(&INSTRUMENTS, 10, 40);
    let expected = common::uninterrupted(&batches);
    let mut feeder = common::Feeder::start(&broker, &stub, batches, Duration::ZERO)
        .await
        .without_markers();
    feeder.publish(usize::MAX).await;

    // The default rule waits for markers: nothing closes, and readiness says why. (Its own
    // group, state and output: the next instance starts from scratch.)
    broker.create_topic("markers.state", 2, true).await.unwrap();
    broker.create_topic("markers.agg", 1, false).await.unwrap();
    let http = free_http_addr();
    let mut waiting = common::command(&broker, &stub, &http, "markers")
        .env("AGG_MARKER_TIMEOUT", "2s")
        .env("AGG_GROUP_ID", "markers")
        .env("AGG_CHANGELOG_TOPIC", "markers.state")
        .env("AGG_TOPIC", "markers.agg")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    assert!(
        wait_for(Duration::from_secs(15), || !healthcheck(BIN, &http)).await,
        "not ready once no marker came for AGG_MARKER_TIMEOUT"
    );
    let readyz = http_get(&http, "/readyz");
    assert!(
        readyz.contains("503") && readyz.contains("has not advanced for over"),
        "{readyz}"
    );
    assert!(
        readyz.contains("AGG_WATERMARK=trades"),
        "names the fix: {readyz}"
    );
    assert!(
        common::raw_end_offset(&broker, "markers.agg", 0) == 0,
        "no window closed"
    );
    signal(&waiting, "TERM");
    assert_eq!(waiting.wait().unwrap().code(), Some(0));

    // AGG_WATERMARK=trades: the old rule, trade time (and the wall clock when caught up).
    let http = free_http_addr();
    let mut child = common::command(&broker, &stub, &http, "trades")
        .env("AGG_WATERMARK", "trades")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    assert!(
        healthcheck(BIN, &http),
        "ready without markers under the trades rule"
    );
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let (union, _) = common::union_of(&records);
    assert_eq!(union, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_after_its_window_closed_is_warned_counted_and_copied_never_dropped_silently() {
    let (broker, stub) = testkit::topics::pipeline_ground(1).await;
    let batches = common::stream(&INSTRUMENTS, 4, 30);
    let expected = common::uninterrupted(&batches);
    let first = batches[0][0].clone();
    let mut feeder = common::Feeder::start(&broker, &stub, batches, Duration::ZERO).await;
    feeder.publish(usize::MAX).await;

    let http = free_http_addr();
    let mut child = common::command(&broker, &stub, &http, "late")
        .env("RUST_LOG", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    assert_eq!(common::union_of(&records).0, expected);

    // A trade of the first window, which closed long ago (a writer that broke the contract).
    let late = testing::trade(
        &first.instrument_name,
        first.trade_seq + 100_000,
        first.timestamp,
        1.0,
        1.0,
    );
    feeder
        .sink()
        .publish(TradeBatch {
            trades: vec![late.clone()],
            trace: None,
        })
        .await
        .unwrap();
    let addr = http.clone();
    assert!(
        wait_for(Duration::from_secs(20), move || http_get(&addr, "/metrics")
            .contains("app_agg_trades_late_total 1"))
        .await,
        "counted"
    );

    // Copied to the late-trades topic with the reason and where it came from.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "late-check")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(LATE, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let copy = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no copy in the late-trades topic"
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            break m.detach();
        }
    };
    assert_eq!(copy.key(), Some(late.instrument_name.as_bytes()));
    let header = |name: &str| {
        let h = copy.headers().unwrap();
        let found = h.iter().find(|h| h.key == name).unwrap();
        String::from_utf8(found.value.unwrap().to_vec()).unwrap()
    };
    let window_start = first.timestamp - first.timestamp.rem_euclid(1_000);
    assert!(
        header(LATE_REASON).contains(&format!(
            "window [{window_start}, {})",
            window_start + 1_000
        )),
        "{}",
        header(LATE_REASON)
    );
    let raw_end = common::raw_end_offset(&broker, RAW, 0);
    assert_eq!(header(LATE_OFFSET), (raw_end - 1).to_string());

    // Still running; the aggregates did not change; one WARN says what happened.
    assert!(child.try_wait().unwrap().is_none(), "no crash");
    let (union, repeats) = common::union_of(&common::aggregates_topic(&broker));
    assert_eq!(union, expected, "closed windows are not reopened");
    assert!(broker.is_mock() || repeats == 0);
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut log = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("after its window closed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    for field in [
        late.instrument_name.as_str(),
        &format!("\"trade_seq\":{}", late.trade_seq),
        "\"level\":\"WARN\"",
    ] {
        assert!(warnings[0].contains(field), "{field} in {}", warnings[0]);
    }
}
