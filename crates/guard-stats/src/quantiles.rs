//! Mergeable quantiles: a thin wrapper over the `sketches-ddsketch` crate (DataDog's DDSketch,
//! as used by `metrics-util`), which guarantees a *relative* error bound on every quantile
//! and merges exactly (bucket counts add), so windows, partitions and instances combine.
//!
//! Only finite values enter the sketch (DDSketch would count NaN as zero).

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of [`Quantiles`]: a reported q-quantile `v̂` of values whose true
/// q-quantile is `v` satisfies `|v̂ − v| ≤ α·|v|` (for |v| above 1e-9 and while the sketch
/// has not collapsed buckets, i.e. values span less than ~2048 buckets ≈ 18 orders of magnitude).
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.01;

const MAX_BUCKETS: u32 = 2048;
const MIN_VALUE: f64 = 1e-9;

/// A mergeable quantile sketch of one feature.
#[derive(Clone, Serialize, Deserialize)]
pub struct Quantiles(DDSketch);

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantiles")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .finish()
    }
}

impl Default for Quantiles {
    fn default() -> Self {
        Self::new()
    }
}

impl Quantiles {
    /// An empty sketch with [`QUANTILE_RELATIVE_ERROR`].
    pub fn new() -> Self {
        Self(DDSketch::new(Config::new(
            QUANTILE_RELATIVE_ERROR,
            MAX_BUCKETS,
            MIN_VALUE,
        )))
    }

    /// Add a value; non-finite values are ignored.
    #[inline]
    pub fn push(&mut self, x: f64) {
        if x.is_finite() {
            self.0.add(x);
        }
    }

    /// Add another sketch. Sketches made by [`Quantiles::new`] always merge; one decoded from
    /// elsewhere with another configuration is refused.
    pub fn merge(&mut self, other: &Quantiles) -> Result<(), crate::StatsError> {
        self.0
            .merge(&other.0)
            .map_err(|_| crate::StatsError::Degenerate("quantile sketches with different accuracy"))
    }

    /// Values added.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// The q-quantile (0 ≤ q ≤ 1), `None` when empty or q is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(v: &mut [f64], q: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        v[(q * (v.len() - 1) as f64) as usize]
    }

    proptest! {
        /// Merging two sketches answers like one sketch of the union, within the bound.
        #[test]
        fn merge_matches_union_within_bound(
            a in proptest::collection::vec(-1e6f64..1e6, 1..400),
            b in proptest::collection::vec(-1e6f64..1e6, 1..400),
        ) {
            let (mut sa, mut sb) = (Quantiles::new(), Quantiles::new());
            a.iter().for_each(|x| sa.push(*x));
            b.iter().for_each(|x| sb.push(*x));
            sa.merge(&sb).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(sa.count(), all.len());
            for q in [0.1, 0.5, 0.9, 0.99] {
                let want = exact(&mut all, q);
                let got = sa.quantile(q).unwrap_or(f64::NAN);
                prop_assert!((got - want).abs() <= QUANTILE_RELATIVE_ERROR * want.abs() + 1e-9,
                    "q={} got {} want {}", q, got, want);
            }
        }
    }

    #[test]
    fn ignores_non_finite_and_round_trips() {
        let mut s = Quantiles::new();
        [1.0, f64::NAN, 2.0, f64::INFINITY, 3.0].iter().for_each(|x| s.push(*x));
        assert_eq!(s.count(), 3);
        let text = serde_json::to_string(&s).unwrap_or_default();
        let back: Quantiles = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.quantile(0.5), s.quantile(0.5));
    }
}
