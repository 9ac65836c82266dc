//! Helpers shared by the feed tests: a test configuration and a collector of what a feed yields.
#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every helper

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters_deribit::config::BackoffConfig;
use adapters_deribit::{Channel, DeribitConfig, DeribitFeed, FeedMetrics};
use domain::Trade;
use ports::{FeedError, FeedEvent, StartPositions, TradeFeed};
use testkit::{FakeDeribit, FakeInstrument, wait_for};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn config(fake: &FakeDeribit, channels: &str) -> DeribitConfig {
    let mut config = DeribitConfig::new(fake.url(), Channel::parse_list(channels).unwrap());
    config.request_timeout = Duration::from_secs(2);
    config.silence_timeout = Some(Duration::from_millis(800));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        stable_after: Duration::from_secs(60),
        rate_limited: Duration::from_millis(100),
        maintenance: Duration::from_millis(100),
    };
    config
}

pub const ALL: &str = "trades.future.BTC.100ms,trades.option.BTC.100ms,trades.ETH-PERPETUAL.100ms";

/// Collects everything the feed yields, in order.
pub struct Collector {
    pub trades: Arc<Mutex<Vec<Trade>>>,
    /// Each progress event: how many trades had come before it, and its completeness time.
    pub progress: Arc<Mutex<Vec<(usize, i64)>>>,
    pub error: Arc<Mutex<Option<FeedError>>>,
    pub metrics: Arc<FeedMetrics>,
    pub task: tokio::task::JoinHandle<()>,
}

/// The fake's default market, no feed connected yet.
pub async fn market() -> FakeDeribit {
    FakeDeribit::start(FakeInstrument::default_market())
        .await
        .unwrap()
}

/// The default market and a feed on all its channels, subscribed: where most tests begin.
pub async fn subscribed_feed() -> (FakeDeribit, Collector) {
    let fake = market().await;
    let c = Collector::spawn(config(&fake, ALL), StartPositions::new());
    subscribed(&c).await;
    (fake, c)
}

impl Collector {
    /// Spawns a feed with `config` from `seed` and collects it.
    pub fn spawn(config: DeribitConfig, seed: StartPositions) -> Self {
        Self::start(DeribitFeed::spawn(config, seed, None).unwrap())
    }

    pub fn start(mut feed: DeribitFeed) -> Self {
        let trades = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let metrics = feed.metrics();
        let (t, p, e) = (
            Arc::clone(&trades),
            Arc::clone(&progress),
            Arc::clone(&error),
        );
        let task = tokio::spawn(async move {
            loop {
                match feed.next_event().await {
                    Ok(Some(FeedEvent::Trades(batch))) => t.lock().unwrap().extend(batch.trades),
                    Ok(Some(FeedEvent::Progress(complete_to))) => {
                        let delivered = t.lock().unwrap().len();
                        p.lock().unwrap().push((delivered, complete_to));
                    }
                    Ok(None) => break,
                    Err(err) => {
                        *e.lock().unwrap() = Some(err);
                        break;
                    }
                }
            }
        });
        Collector {
            trades,
            progress,
            error,
            metrics,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.trades.lock().unwrap().len()
    }

    pub fn seqs(&self) -> BTreeMap<String, Vec<u64>> {
        let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for t in self.trades.lock().unwrap().iter() {
            by.entry(t.instrument_name.clone())
                .or_default()
                .push(t.trade_seq);
        }
        by
    }

    pub fn subscribed(&self) -> bool {
        self.metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn metric(&self, pick: impl Fn(&FeedMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        FeedMetrics::get(pick(&self.metrics))
    }
}

/// Every trade the fake generated, per instrument, as `trade_seq`s.
pub fn expected(fake: &FakeDeribit, instruments: &[&str]) -> BTreeMap<String, Vec<u64>> {
    instruments
        .iter()
        .map(|i| {
            (
                i.to_string(),
                fake.record(i)
                    .iter()
                    .map(|t| t["trade_seq"].as_u64().unwrap())
                    .collect(),
            )
        })
        .filter(|(_, v): &(String, Vec<u64>)| !v.is_empty())
        .collect()
}

pub async fn subscribed(c: &Collector) {
    assert!(
        wait_for(DEADLINE, || c.subscribed()).await,
        "never subscribed"
    );
}
