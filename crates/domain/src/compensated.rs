//! A float sum that does not depend on how its terms were grouped.
//!
//! A 5-minute bar rolled up from 1-minute bars adds the same amounts as a bar built trade by
//! trade, but grouped differently, and plain `f64` addition rounds differently per grouping. A
//! [`CompensatedSum`] keeps the rounding error of every addition (Knuth's error-free TwoSum)
//! beside the running sum, so `sum + carry` is the exact sum of the terms as long as the errors
//! themselves add exactly in the `f64` carry. The value read is then the exact sum rounded once,
//! whatever the grouping.
//!
//! When that holds: each error is below half an ulp of the running sum and a multiple of the
//! smallest term's ulp, so n of them add exactly in 53 bits while the sum and the smallest term
//! are fewer than about 106 − log2(n) binary orders of magnitude apart. One instrument's amounts
//! or notionals in one bar are far closer than that. Terms spanning more (e.g. `[2^53, 1, 2^-53, 2^-53]`) can round the carry,
//! and another grouping may then differ in the last bit. Property-tested on decimal prices and
//! amounts (the tests below and `domain/tests/rollup.rs`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A running sum and the rounding error its additions left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompensatedSum {
    sum: f64,
    carry: f64,
}

impl CompensatedSum {
    /// The sum of the single term `x`.
    #[inline]
    pub fn of(x: f64) -> Self {
        CompensatedSum { sum: x, carry: 0.0 }
    }

    /// Adds one term.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let (sum, error) = two_sum(self.sum, x);
        self.sum = sum;
        self.carry += error;
    }

    /// Adds every term of `other`, as if they had been added here one by one.
    #[inline]
    pub fn merge(&mut self, other: &CompensatedSum) {
        let (sum, error) = two_sum(self.sum, other.sum);
        self.sum = sum;
        self.carry += other.carry + error;
    }

    /// The sum, rounded once.
    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.carry
    }

    /// Whether both parts are finite (a restored state must be).
    pub fn is_finite(&self) -> bool {
        self.sum.is_finite() && self.carry.is_finite()
    }
}

/// `a + b` rounded, and the exact error of that rounding (Knuth; no branch, any magnitudes).
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let sum = a + b;
    let b_virtual = sum - a;
    let a_virtual = sum - b_virtual;
    (sum, (a - a_virtual) + (b - b_virtual))
}

/// Stored as `[sum, carry]`; a plain number (state written before sums were compensated) reads
/// as a sum without carry.
impl Serialize for CompensatedSum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.sum, self.carry).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CompensatedSum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Plain(f64),
            Compensated(f64, f64),
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Plain(sum) => CompensatedSum::of(sum),
            Stored::Compensated(sum, carry) => CompensatedSum { sum, carry },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sum_of(terms: &[f64]) -> CompensatedSum {
        let mut s = CompensatedSum::default();
        terms.iter().for_each(|&x| s.add(x));
        s
    }

    #[test]
    fn a_plain_sum_would_depend_on_the_grouping_this_one_does_not() {
        let terms = [0.1, 0.2, 0.3];
        assert_ne!((0.1 + 0.2) + 0.3, 0.1 + (0.2 + 0.3));
        let mut right = sum_of(&terms[1..]);
        let mut left = CompensatedSum::of(terms[0]);
        left.merge(&right);
        right = sum_of(&terms);
        assert_eq!(left.value().to_bits(), right.value().to_bits());
        assert_eq!(right.value(), 0.6);
    }

    #[test]
    fn reads_the_plain_numbers_older_state_holds() {
        let old: CompensatedSum = serde_json::from_str("2.5").unwrap();
        assert_eq!(old, CompensatedSum::of(2.5));
        let s = sum_of(&[0.1, 0.2]);
        let back: CompensatedSum =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    /// Amounts and prices as exchanges quote them: decimals on a tick grid, of any size a
    /// validated trade may have.
    fn decimal() -> impl Strategy<Value = f64> {
        (1u64..10_000_000, 0i32..9)
            .prop_map(|(units, decimals)| units as f64 / 10f64.powi(decimals))
    }

    proptest! {
        /// Split anywhere into bars, summed per bar, the bars merged: the same bits as one sum.
        #[test]
        fn any_grouping_gives_the_same_bits(
            terms in prop::collection::vec(decimal(), 1..400),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(terms.len())).collect();
            bounds.extend([0, terms.len()]);
            bounds.sort_unstable();
            let mut merged = CompensatedSum::default();
            for part in bounds.windows(2) {
                merged.merge(&sum_of(&terms[part[0]..part[1]]));
            }
            prop_assert_eq!(merged.value().to_bits(), sum_of(&terms).value().to_bits());
        }
    }
}
