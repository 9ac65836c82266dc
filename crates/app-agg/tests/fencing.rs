//! A zombie is fenced: instance A is frozen (SIGSTOP) right after trades arrive, a replacement B
//! with the same transactional id starts and takes A's partitions over, then A is resumed. Kafka
//! has fenced A's producer (and its consumer, a static member under the same id): A exits with
//! its own code and one ERROR line saying so, and a `read_committed` reader sees every aggregate
//! exactly once, equal to an uninterrupted run. And the other side of one id per instance: a
//! killed instance restarted under its id is working again without waiting for its old session.
//! Apache Kafka only: the mock cluster never fences.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{BIN, spawn_instance};
use testkit::process::{free_http_addr, healthcheck, signal};
use testkit::{SchemaRegistryStub, TestBroker, wait_for};

const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC24-70000-C"];
/// shell::EXIT_FENCED, as a supervisor sees it.
const EXIT_FENCED: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_zombie_is_fenced_and_commits_nothing() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("the mock cluster never fences") {
        return;
    }
    common::create_topics(&broker, 2).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let batches = common::stream(&INSTRUMENTS, 30, 60);
    let expected = common::uninterrupted(&batches);
    let mut feeder =
        common::Feeder::start(&broker, &stub, batches, Duration::from_millis(150)).await;

    let log_dir = tempfile::tempdir().unwrap();
    let a_log = log_dir.path().join("a.log");
    let a_http = free_http_addr();
    let mut a = common::command(&broker, &stub, &a_http, "z")
        .stdout(Stdio::from(std::fs::File::create(&a_log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &a_http)).await);
    feeder.publish(10).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    signal(&a, "STOP");

    // The replacement fences A's producer as it starts, and gets A's partitions once A's
    // session has expired.
    let b_http = free_http_addr();
    let mut b = spawn_instance(&broker, &stub, &b_http, "z");
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &b_http)).await);
    feeder.publish(10).await;

    signal(&a, "CONT");
    let fenced = wait_for(Duration::from_secs(60), || a.try_wait().unwrap().is_some()).await;
    feeder.publish(usize::MAX).await;
    let records = common::wait_for_aggregates(&broker, expected.len()).await;
    signal(&b, "TERM");
    assert_eq!(b.wait().unwrap().code(), Some(0), "B stops cleanly");
    if !fenced {
        let _ = a.kill();
    }
    let log = std::fs::read_to_string(&a_log).unwrap();
    assert!(
        fenced,
        "the resumed zombie stops by itself; its log:\n{log}"
    );
    assert_eq!(a.wait().unwrap().code(), Some(EXIT_FENCED), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one ERROR line: {errors:#?}");
    assert!(errors[0].contains("fenced"), "{}", errors[0]);

    let (union, repeats) = common::union_of(&records);
    assert_eq!(union, expected, "no aggregate lost or changed");
    assert_eq!(repeats, 0, "read_committed: nothing committed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_restarted_under_its_id_does_not_wait_for_its_old_session() {
    let broker = TestBroker::from_env().await.unwrap();
    if broker.skips_on_mock("static membership needs a real group coordinator") {
        return;
    }
    common::create_topics(&broker, 2).await;
    let stub = SchemaRegistryStub::start().await.unwrap();
    let session = Duration::from_secs(20);
    let start = |http: &str| {
        common::command(&broker, &stub, http, "restart")
            .env("KAFKA_SESSION_TIMEOUT", "20s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = free_http_addr();
    let mut first = start(&http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    first.kill().unwrap(); // SIGKILL: no goodbye to the group
    first.wait().unwrap();

    let http = free_http_addr();
    let restarted = std::time::Instant::now();
    let mut second = start(&http);
    assert!(wait_for(Duration::from_secs(60), || healthcheck(BIN, &http)).await);
    let took = restarted.elapsed();
    signal(&second, "TERM");
    assert_eq!(second.wait().unwrap().code(), Some(0));
    // Without static membership the group waits for the killed member's session to expire.
    assert!(
        took < session / 2,
        "ready again in {took:?}; the old session lasts {session:?}"
    );
}
