//! Count, missing, mean, variance, min and max in O(1) memory, mergeable.

use serde::{Deserialize, Serialize};

/// Running moments of one numeric feature.
///
/// `push` uses Welford's update (numerically stable: no catastrophic cancellation of
/// `Σx² − (Σx)²/n`); `merge` uses Chan, Golub and LeVeque's pairwise formula, so per-window
/// and per-instance moments combine exactly as if all values had been pushed into one.
/// Non-finite values (NaN, ±∞: the feature was missing or not a number) count as missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    missing: u64,
    mean: f64,
    m2: f64,
    #[serde(with = "crate::nonfinite::pos")]
    min: f64,
    #[serde(with = "crate::nonfinite::neg")]
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            count: 0,
            missing: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Empty moments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            self.missing += 1;
            return;
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Add many values.
    pub fn extend(&mut self, xs: &[f64]) {
        for &x in xs {
            self.push(x);
        }
    }

    /// Combine with moments of other values (another window, another instance).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            self.missing += other.missing;
            return;
        }
        if self.count == 0 {
            let missing = self.missing;
            *self = *other;
            self.missing += missing;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.missing += other.missing;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Missing (non-finite) values seen.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Mean of the finite values (NaN when there are none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }

    /// Sample variance (n − 1 in the denominator; NaN below two values).
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }

    /// Population variance (n in the denominator; NaN when empty).
    pub fn population_variance(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.m2 / self.count as f64
        }
    }

    /// Smallest finite value (NaN when empty).
    pub fn min(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.min
        }
    }

    /// Largest finite value (NaN when empty).
    pub fn max(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(xs: &[f64]) -> (usize, f64, f64, f64, f64) {
        let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n as f64 - 1.0);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (n, mean, var, min, max)
    }

    fn close(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-9 * scale.max(1.0)
    }

    proptest! {
        /// The rolling result equals a naive two-pass recomputation.
        #[test]
        fn matches_naive(xs in prop::collection::vec(prop_oneof![9 => -1e6f64..1e6, 1 => Just(f64::NAN)], 2..400)) {
            let mut m = Moments::new();
            m.extend(&xs);
            let finite = xs.iter().filter(|x| x.is_finite()).count();
            prop_assume!(finite >= 2);
            let (n, mean, var, min, max) = naive(&xs);
            prop_assert_eq!(m.count() as usize, n);
            prop_assert_eq!(m.missing() as usize, xs.len() - n);
            prop_assert!(close(m.mean(), mean, mean.abs()), "{} vs {}", m.mean(), mean);
            prop_assert!(close(m.variance(), var, var), "{} vs {}", m.variance(), var);
            prop_assert_eq!(m.min(), min);
            prop_assert_eq!(m.max(), max);
        }

        /// Merging the moments of two parts equals the moments of the whole.
        #[test]
        fn merge_equals_union(a in prop::collection::vec(-1e3f64..1e3, 0..200), b in prop::collection::vec(-1e3f64..1e3, 0..200)) {
            let (mut ma, mut mb, mut all) = (Moments::new(), Moments::new(), Moments::new());
            ma.extend(&a);
            mb.extend(&b);
            all.extend(&a);
            all.extend(&b);
            ma.merge(&mb);
            prop_assert_eq!(ma.count(), all.count());
            if all.count() > 0 {
                prop_assert!(close(ma.mean(), all.mean(), all.mean().abs()));
                prop_assert_eq!(ma.min(), all.min());
                prop_assert_eq!(ma.max(), all.max());
            }
            if all.count() > 1 {
                prop_assert!(close(ma.variance(), all.variance(), all.variance()));
            }
        }
    }

    #[test]
    fn stable_with_a_large_offset() {
        // Σx² − (Σx)²/n would lose every digit here; Welford keeps the variance of 1e9 + {0,1,2}.
        let mut m = Moments::new();
        m.extend(&[1e9, 1e9 + 1.0, 1e9 + 2.0]);
        assert!((m.variance() - 1.0).abs() < 1e-9);
    }
}
