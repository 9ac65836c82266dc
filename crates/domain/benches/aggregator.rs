//! Throughput of the `Aggregator`: 1,000 instruments, 3 half-lives, 10 M synthetic trades, with
//! one bar size (1m) and with three (1m, 5m and 1h, the larger two rolled up from the 1m bars).
//!
//! Trades are generated in consumer-sized chunks outside the timed region; only `ingest` and the
//! periodic `drain_closed` (as a commit cycle would call it) are timed. Criterion prints the rate as
//! `thrpt: … Melem/s`, i.e. million trades per second.
//!
//! Two draws of the instrument per trade: `uniform` (every instrument equally busy: the worst
//! case for caches) and `zipf` (s = 1, the k-th busiest instrument trades 1/k as often as the
//! busiest: closer to real flow, where a few perpetuals dominate).
#![allow(missing_docs, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::{
    Aggregator, AggregatorConfig, Direction, Trade, TradeFields, WatermarkRule, WindowSize, testing,
};

const INSTRUMENTS: usize = 1_000;
const TRADES: u64 = 10_000_000;
/// Trades handed to the aggregator at a time, about what one consumer poll decodes. The trades
/// are then still in cache, as in the service, where a record is decoded and at once ingested.
/// Much larger chunks time the harness instead: 200,000 trades (≈ 55 MB, more than the L3)
/// made `ingest` wait on DRAM for its own input, a quarter of its samples on the trade's first
/// load.
const CHUNK: u64 = 1_000;

/// Deterministic xorshift, so every run sees the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Draw {
    Uniform,
    Zipf,
}

struct Market {
    rng: Rng,
    draw: Draw,
    /// Cumulative Zipf weights, for a binary search.
    zipf_cdf: Vec<f64>,
    names: Vec<String>,
    prices: Vec<f64>,
    seqs: Vec<u64>,
    /// Microseconds, so the average gap can be below one millisecond.
    clock_us: i64,
}

impl Market {
    fn new(draw: Draw) -> Self {
        let weights: Vec<f64> = (1..=INSTRUMENTS).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let zipf_cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Market {
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            draw,
            zipf_cdf,
            names: (0..INSTRUMENTS)
                .map(|i| format!("BTC-{i:04}-PERP"))
                .collect(),
            prices: (0..INSTRUMENTS).map(|i| 1_000.0 + i as f64).collect(),
            seqs: vec![0; INSTRUMENTS],
            clock_us: 1_700_000_000_000_000,
        }
    }

    /// `n` trades: 10,000 per second over all instruments (10 per instrument), with bursts of
    /// equal timestamps.
    fn chunk(&mut self, n: u64) -> Vec<Trade> {
        (0..n)
            .map(|_| {
                let r = self.rng.next();
                if !r.is_multiple_of(4) {
                    self.clock_us += (r >> 56) as i64 * 133 / 255; // 0.1 ms per trade on average
                }
                let i = match self.draw {
                    Draw::Uniform => (r >> 16) as usize % INSTRUMENTS,
                    Draw::Zipf => {
                        let u = self.rng.unit();
                        self.zipf_cdf
                            .partition_point(|&c| c < u)
                            .min(INSTRUMENTS - 1)
                    }
                };
                self.seqs[i] += 1;
                self.prices[i] *= 1.0 + (self.rng.unit() - 0.5) * 1e-3;
                testing::validated(TradeFields {
                    trade_id: String::from("1"),
                    direction: if r & 0x100 == 0 {
                        Direction::Buy
                    } else {
                        Direction::Sell
                    },
                    ..testing::fields(
                        &self.names[i],
                        self.seqs[i],
                        self.clock_us / 1_000,
                        self.prices[i],
                        1.0 + (r & 0xff) as f64,
                    )
                })
            })
            .collect()
    }
}

fn config(rollups_ms: &[i64]) -> AggregatorConfig {
    let size = |ms| WindowSize::from_millis(ms).unwrap_or_else(|e| unreachable!("{e}"));
    AggregatorConfig::new(
        size(60_000),
        1_000,
        WatermarkRule::TradeTime {
            max_delay_ms: 5_000,
        },
        vec![30_000, 300_000, 3_600_000],
    )
    .and_then(|c| c.with_rollups(rollups_ms.iter().map(|&ms| size(ms))))
    .unwrap_or_else(|e| unreachable!("{e}"))
}

fn ten_million_trades(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregator");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(60))
        .throughput(Throughput::Elements(TRADES));
    let sizes: [(&str, &[i64]); 2] = [("1m", &[]), ("1m,5m,1h", &[300_000, 3_600_000])];
    for ((name, draw), (windows, rollups_ms)) in [("uniform", Draw::Uniform), ("zipf", Draw::Zipf)]
        .into_iter()
        .flat_map(|d| sizes.map(|s| (d, s)))
    {
        group.bench_function(
            format!("ingest_1000_instruments_3_halflives_10M/{name}/{windows}"),
            |b| {
                b.iter_custom(|iterations| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iterations {
                        let mut market = Market::new(draw);
                        let mut aggregator = Aggregator::new(config(rollups_ms));
                        let mut emitted = 0usize;
                        for _ in 0..TRADES / CHUNK {
                            let trades = market.chunk(CHUNK);
                            let start = Instant::now();
                            for trade in &trades {
                                aggregator.ingest(trade);
                            }
                            emitted += aggregator.drain_closed().len();
                            timed += start.elapsed();
                        }
                        assert!(emitted > INSTRUMENTS, "windows must close during the run");
                        std::hint::black_box(emitted);
                    }
                    timed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, ten_million_trades);
criterion_main!(benches);
