//! Time-decayed exponentially weighted moving averages.
//!
//! For a half-life `H` and trades `(tᵢ, pᵢ, aᵢ)` the value at trade `n` is
//! `Σ wᵢ·pᵢ / Σ wᵢ` with `wᵢ = 0.5^((tₙ − tᵢ)/H)` — pandas
//! `Series.ewm(halflife=H, times=t).mean()` with `adjust=True`. It is kept in O(1) per trade as
//! decayed sums: `d = 0.5^((t − t_prev)/H); S = d·S + p; W = d·W + 1`. The amount-weighted
//! variant is `ewm(p·a) / ewm(a)`, whose common `W` cancels to `S_pa / S_a`.
//! Both sums decay together, so nothing grows without bound and no absolute weights are stored.

use serde::{Deserialize, Serialize};

/// Decayed sums for one half-life; the EWMA values are ratios of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EwmaSums {
    /// Half-life in milliseconds.
    pub halflife_ms: i64,
    /// `Σ d·price`.
    pub price_sum: f64,
    /// `Σ d·price·amount`.
    pub notional_sum: f64,
    /// `Σ d·amount`.
    pub amount_sum: f64,
    /// `Σ d` (the effective number of observations).
    pub weight: f64,
}

/// `0.5^(elapsed/halflife)`, computed the way pandas does.
#[inline]
fn decay_factor(elapsed_ms: i64, halflife_ms: i64) -> f64 {
    // i64 → f64 is exact for any realistic gap (< 2^53 ms ≈ 285,000 years).
    #[allow(clippy::cast_precision_loss)]
    0.5f64.powf(elapsed_ms as f64 / halflife_ms as f64)
}

/// Precomputed decay factors for short gaps of one half-life.
///
/// Most trades of an instrument follow the previous one within a second, and `powf` is the most
/// expensive step of a trade. The table holds the very values `powf` returns, so using it changes
/// no result bit; longer gaps fall back to `powf`.
#[derive(Debug, Clone)]
pub struct DecayTable {
    halflife_ms: i64,
    factors: Box<[f64]>,
}

impl DecayTable {
    /// Gaps below this many milliseconds are looked up.
    pub const SPAN_MS: usize = 1024;

    /// The table for `halflife_ms`.
    pub fn new(halflife_ms: i64) -> Self {
        let factors = (0..Self::SPAN_MS as i64)
            .map(|ms| decay_factor(ms, halflife_ms))
            .collect();
        DecayTable {
            halflife_ms,
            factors,
        }
    }

    /// `0.5^(elapsed_ms / halflife)`; 1 for `elapsed_ms` ≤ 0.
    #[inline]
    pub fn factor(&self, elapsed_ms: i64) -> f64 {
        match usize::try_from(elapsed_ms) {
            Ok(0) | Err(_) => 1.0,
            Ok(ms) => match self.factors.get(ms) {
                Some(&factor) => factor,
                None => decay_factor(elapsed_ms, self.halflife_ms),
            },
        }
    }
}

/// The EWMA values of one half-life at some trade, as reported in an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EwmaValue {
    /// Half-life in milliseconds.
    pub halflife_ms: i64,
    /// Time-decayed EWMA of price.
    pub price: f64,
    /// Time-decayed, amount-weighted EWMA of price.
    pub vw_price: f64,
}

impl EwmaSums {
    /// Empty sums for `halflife_ms`; the first [`update`](Self::update) makes the value equal
    /// the first price (no zero start, no bias toward 0).
    pub fn new(halflife_ms: i64) -> Self {
        EwmaSums {
            halflife_ms,
            price_sum: 0.0,
            notional_sum: 0.0,
            amount_sum: 0.0,
            weight: 0.0,
        }
    }

    /// Folds in a trade that happened `elapsed_ms` after the previous one.
    ///
    /// `elapsed_ms` ≤ 0 means "at the same time": no decay. The decay is computed exactly as
    /// pandas does (`0.5 ** (Δt / H)` with both in f64 milliseconds), so results match it to
    /// within rounding of the sum form.
    #[inline]
    pub fn update(&mut self, elapsed_ms: i64, price: f64, amount: f64) {
        let decay = if elapsed_ms > 0 {
            decay_factor(elapsed_ms, self.halflife_ms)
        } else {
            1.0
        };
        self.update_with_decay(decay, price, amount);
    }

    /// As [`update`](Self::update), with the decay factor for the elapsed time already known
    /// (see [`DecayTable`]).
    #[inline]
    pub fn update_with_decay(&mut self, decay: f64, price: f64, amount: f64) {
        // Multiplying by 1.0 is exact, so no branch for "no time passed".
        self.price_sum *= decay;
        self.notional_sum *= decay;
        self.amount_sum *= decay;
        self.weight *= decay;
        self.price_sum += price;
        self.notional_sum += price * amount;
        self.amount_sum += amount;
        self.weight += 1.0;
    }

    /// The current values, `None` before the first trade.
    pub fn value(&self) -> Option<EwmaValue> {
        (self.weight > 0.0).then(|| EwmaValue {
            halflife_ms: self.halflife_ms,
            price: self.price_sum / self.weight,
            vw_price: self.notional_sum / self.amount_sum,
        })
    }

    /// Whether every sum is finite and the weights non-negative (a restore-time sanity check).
    pub fn is_sane(&self) -> bool {
        self.halflife_ms > 0
            && self.price_sum.is_finite()
            && self.notional_sum.is_finite()
            && self.amount_sum.is_finite()
            && self.weight.is_finite()
            && self.weight >= 0.0
            && self.amount_sum >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ewma_series(halflife_ms: i64, points: &[(i64, f64, f64)]) -> Vec<EwmaValue> {
        let mut sums = EwmaSums::new(halflife_ms);
        let mut prev = None;
        points
            .iter()
            .map(|&(t, p, a)| {
                sums.update(prev.map_or(0, |prev| t - prev), p, a);
                prev = Some(t);
                sums.value().unwrap()
            })
            .collect()
    }

    /// The O(n²) definition: every earlier trade weighted by `0.5^((tₙ − tᵢ)/H)`.
    fn direct(halflife_ms: i64, points: &[(i64, f64, f64)], n: usize) -> (f64, f64) {
        let tn = points[n].0;
        let (mut wp, mut wpa, mut wa, mut w) = (0.0, 0.0, 0.0, 0.0);
        for &(t, p, a) in &points[..=n] {
            let weight = 0.5f64.powf((tn - t) as f64 / halflife_ms as f64);
            wp += weight * p;
            wpa += weight * p * a;
            wa += weight * a;
            w += weight;
        }
        (wp / w, wpa / wa)
    }

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn matches_pandas_worked_example() {
        // pandas: x.ewm(halflife="10s", times=t).mean() for t = 0,10,30,40 s, x = 100,102,99,105
        let got = ewma_series(
            10_000,
            &[
                (0, 100.0, 1.0),
                (10_000, 102.0, 1.0),
                (30_000, 99.0, 1.0),
                (40_000, 105.0, 1.0),
            ],
        );
        let expected = [
            100.0,
            101.33333333333333,
            99.63636363636364,
            102.81481481481481,
        ];
        for (g, e) in got.iter().zip(expected) {
            assert!(rel(g.price, e) < 1e-15, "{} vs {e}", g.price);
            // With unit amounts the amount-weighted variant is the plain one.
            assert!(rel(g.vw_price, e) < 1e-15);
        }
    }

    #[test]
    fn ties_count_every_trade() {
        // pandas adjust=True, t = 0,10,10,20 s, H = 10 s → [100, 101.333, 104.8, 104.444]
        let got = ewma_series(
            10_000,
            &[
                (0, 100.0, 1.0),
                (10_000, 102.0, 1.0),
                (10_000, 110.0, 1.0),
                (20_000, 104.0, 1.0),
            ],
        );
        let expected = [100.0, 101.333333333333, 104.8, 104.444444444444];
        for (g, e) in got.iter().zip(expected) {
            assert!(rel(g.price, e) < 1e-12, "{} vs {e}", g.price);
        }
    }

    #[test]
    fn decay_table_returns_exactly_what_powf_returns() {
        for halflife in [1, 7, 1_000, 30_000, 3_600_000] {
            let table = DecayTable::new(halflife);
            for elapsed in [-5, 0, 1, 2, 500, 1023, 1024, 1025, 86_400_000] {
                let expected = if elapsed > 0 {
                    decay_factor(elapsed, halflife)
                } else {
                    1.0
                };
                assert_eq!(table.factor(elapsed).to_bits(), expected.to_bits());
            }
        }
    }

    #[test]
    fn no_value_before_first_trade_and_first_value_is_first_price() {
        let mut sums = EwmaSums::new(1_000);
        assert!(sums.value().is_none());
        sums.update(0, 42.5, 3.0);
        let v = sums.value().unwrap();
        assert_eq!((v.price, v.vw_price), (42.5, 42.5));
    }

    fn series() -> impl Strategy<Value = Vec<(i64, f64, f64)>> {
        // Irregular gaps with many exact ties, prices and amounts across magnitudes.
        let gap = prop_oneof![
            3 => Just(0i64),
            3 => 1i64..50,
            2 => 50i64..5_000,
            1 => 5_000i64..3_600_000,
        ];
        prop::collection::vec((gap, 0.0001f64..100_000.0, 0.0001f64..1_000_000.0), 1..200).prop_map(
            |steps| {
                let mut t = 1_600_000_000_000i64;
                steps
                    .into_iter()
                    .map(|(gap, p, a)| {
                        t += gap;
                        (t, p, a)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn incremental_equals_direct_weighted_sum(
            points in series(), halflife_ms in prop_oneof![1i64..1_000, 1_000i64..3_600_000]
        ) {
            let got = ewma_series(halflife_ms, &points);
            for (n, value) in got.iter().enumerate() {
                let (price, vw_price) = direct(halflife_ms, &points, n);
                prop_assert!(rel(value.price, price) < 1e-12, "price at {}: {} vs {}", n, value.price, price);
                prop_assert!(rel(value.vw_price, vw_price) < 1e-12, "vw at {}: {} vs {}", n, value.vw_price, vw_price);
            }
        }

        #[test]
        fn value_stays_within_price_range(points in series(), halflife_ms in 1i64..3_600_000) {
            let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            for v in ewma_series(halflife_ms, &points) {
                prop_assert!(v.price >= lo * (1.0 - 1e-12) && v.price <= hi * (1.0 + 1e-12));
                prop_assert!(v.vw_price >= lo * (1.0 - 1e-12) && v.vw_price <= hi * (1.0 + 1e-12));
            }
        }
    }
}
