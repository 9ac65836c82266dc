//! app-raw killed with SIGKILL at random moments while the market trades, and restarted each
//! time: the raw topic, deduplicated by (instrument, trade_seq), holds every trade in order.
#![allow(clippy::unwrap_used, clippy::panic, clippy::cast_possible_truncation)] // test helpers

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{BIN, TOPIC, dedup, generated, spawn};
use testkit::process::{free_http_addr, healthcheck, http_get, signal};
use testkit::{TestBroker, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_no_trade_and_keep_order() {
    let broker = TestBroker::from_env().await.unwrap();
    broker.create_topic(TOPIC, 3, false).await.unwrap();
    let (stub, registry, fake) = common::stand_ins().await;

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
    testkit::process::exit_code_within(&mut child, Duration::from_secs(10)).await;
    assert_eq!(
        got, want,
        "deduplicated by (instrument, trade_seq) the topic has every trade, in order"
    );
    eprintln!("{total} trades, 8 SIGKILLs, {repeats} repeated records");
}
