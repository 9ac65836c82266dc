//! app-raw killed with SIGKILL at random moments while the market trades, and restarted each
//! time: the raw topic, deduplicated by (instrument, trade_seq), holds every trade in order.
#![allow(clippy::unwrap_used, clippy::panic, clippy::cast_possible_truncation)] // test helpers

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adapters_kafka::registry::{Registry, RegistryConfig};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::{FakeDeribit, FakeInstrument, SchemaRegistryStub, TestBroker, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_app-raw");
const TOPIC: &str = "deribit.trades";
const CHANNELS: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.ETH-PERPETUAL.100ms";
const INSTRUMENTS: [&str; 3] = ["BTC-PERPETUAL", "BTC-27DEC24-70000-C", "ETH-PERPETUAL"];

fn spawn(broker: &TestBroker, stub: &SchemaRegistryStub, fake: &FakeDeribit, http: &str) -> Child {
    Command::new(BIN)
        .env_clear()
        .envs([
            ("DERIBIT_URL", fake.url()),
            ("DERIBIT_CHANNELS", CHANNELS.to_owned()),
            ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers()),
            ("SCHEMA_REGISTRY_URL", stub.url()),
            ("HTTP_ADDR", http.to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn generated(fake: &FakeDeribit) -> BTreeMap<String, Vec<u64>> {
    INSTRUMENTS
        .iter()
        .map(|i| {
            let seqs = fake
                .record(i)
                .iter()
                .map(|t| t["trade_seq"].as_u64().unwrap())
                .collect();
            ((*i).to_owned(), seqs)
        })
        .collect()
}

/// First occurrences only, in topic order; also how many repeats were dropped.
fn dedup(topic: &BTreeMap<String, Vec<u64>>) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut repeats = 0;
    let firsts = topic
        .iter()
        .map(|(instrument, seqs)| {
            let mut seen = BTreeSet::new();
            let kept: Vec<u64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
            repeats += seqs.len() - kept.len();
            (instrument.clone(), kept)
        })
        .collect();
    (firsts, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_no_trade_and_keep_order() {
    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let stub = SchemaRegistryStub::start().await.unwrap();
    let registry = Arc::new(Registry::new(RegistryConfig::new(stub.url())).unwrap());
    let fake = FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap();
    fake.send_test_requests_every(Duration::from_millis(300));

    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    for run in 0..8 {
        let http = free_http_addr();
        let mut child = spawn(&broker, &stub, &fake, &http);
        // Trades keep coming while it restarts (they must be backfilled) and once it runs. The
        // very first run has no position to resume from: it starts at the live stream.
        let mut ready = false;
        for _ in 0..600 {
            if run > 0 {
                fake.trade_all(1);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            if healthcheck(BIN, &http) {
                ready = true;
                break;
            }
        }
        assert!(ready, "app-raw never ready");
        if run == 0 {
            // Something must reach the topic first: it is where a restart resumes from.
            fake.trade_all(1);
            let addr = http.clone();
            let published = wait_for(Duration::from_secs(20), move || {
                http_get(&addr, "/metrics").contains("app_raw_trades_published_total 3\n")
            })
            .await;
            assert!(published, "the first run never published");
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..(rng % 40) {
            fake.trade_all(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        fake.trade_all(2); // while it is down
    }

    // A last run, left to catch up, then stopped cleanly.
    let http = free_http_addr();
    let child = spawn(&broker, &stub, &fake, &http);
    assert!(wait_for(Duration::from_secs(30), || healthcheck(BIN, &http)).await);
    fake.trade_all(3);
    let want = generated(&fake);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(total > 200, "a real stream: {total} trades");
    let mut got = BTreeMap::new();
    let mut repeats = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < deadline {
        let topic = common::topic_seqs(&broker, &registry, TOPIC, 3, total).await;
        (got, repeats) = dedup(&topic);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (instrument, seqs) in &want {
        let have = got.get(instrument).cloned().unwrap_or_default();
        let missing: Vec<u64> = seqs.iter().copied().filter(|s| !have.contains(s)).collect();
        let unordered = have.windows(2).filter(|w| w[0] > w[1]).count();
        eprintln!(
            "{instrument}: want {}, have {}, missing {missing:?}, out of order {unordered}",
            seqs.len(),
            have.len()
        );
    }
    signal(&child, "TERM");
    let mut child = child;
    assert!(
        wait_for(Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some())
        .await,
        "no exit within 10 s of SIGTERM"
    );
    assert_eq!(
        got, want,
        "deduplicated by (instrument, trade_seq) the topic has every trade, in order"
    );
    eprintln!("{total} trades, 8 SIGKILLs, {repeats} repeated records");
}
