//! A window's worth of statistics over a baseline's features: fixed-bin profiles (and,
//! optionally, quantile sketches) per feature, mergeable across windows, partitions and
//! instances. Memory is fixed by the baseline (bins per feature, sketch buckets), whatever the
//! traffic.

use crate::{Baseline, Bins, NumericProfile, Quantiles, StatsError};
use serde::{Deserialize, Serialize};

/// Statistics of one window (or of a merge of windows).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WindowProfile {
    /// Rows seen.
    pub records: u64,
    /// One profile per baseline feature, in the baseline's order.
    pub features: Vec<NumericProfile>,
    /// One quantile sketch per feature (empty when sketches are off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<Quantiles>,
}

impl WindowProfile {
    /// An empty window over `baseline`'s features; `quantiles` adds a sketch per numeric
    /// feature (categorical features keep an empty one).
    pub fn for_baseline(baseline: &Baseline, quantiles: bool) -> Self {
        Self {
            records: 0,
            features: baseline.features.iter().map(|f| NumericProfile::new(&f.bins)).collect(),
            quantiles: if quantiles {
                vec![Quantiles::new(); baseline.features.len()]
            } else {
                Vec::new()
            },
        }
    }

    /// Add feature `i`'s value `x` (binned on `bins`, the baseline's bins of that feature).
    #[inline]
    pub fn push(&mut self, bins: &Bins, i: usize, x: f64) {
        if let Some(p) = self.features.get_mut(i) {
            p.push(bins, x);
        }
        if let Some(q) = self.quantiles.get_mut(i) {
            q.push(x);
        }
    }

    /// Count one row (after its features were pushed).
    #[inline]
    pub fn end_row(&mut self) {
        self.records += 1;
    }

    /// Add another window over the same baseline.
    pub fn merge(&mut self, other: &WindowProfile) -> Result<(), StatsError> {
        if other.features.len() != self.features.len() {
            return Err(StatsError::LengthMismatch {
                left: self.features.len(),
                right: other.features.len(),
            });
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            if a.counts.len() != b.counts.len() {
                return Err(StatsError::LengthMismatch {
                    left: a.counts.len(),
                    right: b.counts.len(),
                });
            }
            a.merge(b);
        }
        if self.quantiles.len() == other.quantiles.len() {
            for (a, b) in self.quantiles.iter_mut().zip(&other.quantiles) {
                a.merge(b)?;
            }
        } else {
            // One side kept no sketches: the merge cannot answer quantiles honestly.
            self.quantiles.clear();
        }
        self.records += other.records;
        Ok(())
    }

    /// Forget everything (a new window), keeping the allocation.
    pub fn clear(&mut self) {
        self.records = 0;
        self.features.iter_mut().for_each(NumericProfile::clear);
        self.quantiles.iter_mut().for_each(Quantiles::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BaselineBuilder;
    use proptest::prelude::*;

    fn baseline() -> Baseline {
        let mut b = BaselineBuilder::new(vec!["x".into(), "y".into()]);
        for i in 0..400 {
            b.push(&[f64::from(i % 37), f64::from(i) * 0.25 - 20.0], None);
        }
        b.build("t-v1", "00", 16, 50, 20).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        /// Windows merged equal one window over the union: counts and counts per bin exactly,
        /// moments to rounding.
        #[test]
        fn merge_equals_union(
            a in proptest::collection::vec((-50f64..50.0, -100f64..100.0), 0..200),
            b in proptest::collection::vec((-50f64..50.0, -100f64..100.0), 0..200),
        ) {
            let base = baseline();
            let fill = |rows: &[(f64, f64)]| {
                let mut w = WindowProfile::for_baseline(&base, true);
                for (x, y) in rows {
                    w.push(&base.features[0].bins, 0, *x);
                    w.push(&base.features[1].bins, 1, *y);
                    w.end_row();
                }
                w
            };
            let (mut wa, wb) = (fill(&a), fill(&b));
            let all: Vec<(f64, f64)> = a.iter().chain(&b).copied().collect();
            let wall = fill(&all);
            wa.merge(&wb).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(wa.records, wall.records);
            for (m, u) in wa.features.iter().zip(&wall.features) {
                prop_assert_eq!(&m.counts, &u.counts);
                prop_assert_eq!(m.moments.count(), u.moments.count());
                if u.moments.count() > 1 {
                    prop_assert!((m.moments.mean() - u.moments.mean()).abs() < 1e-9);
                    prop_assert!((m.moments.variance() - u.moments.variance()).abs() < 1e-7 * (1.0 + u.moments.variance()));
                }
            }
            for (m, u) in wa.quantiles.iter().zip(&wall.quantiles) {
                prop_assert_eq!(m.quantile(0.5), u.quantile(0.5));
            }
        }
    }

    #[test]
    fn merge_refuses_other_shapes() {
        let base = baseline();
        let mut w = WindowProfile::for_baseline(&base, false);
        let other = WindowProfile::default();
        assert!(w.merge(&other).is_err());
    }
}
