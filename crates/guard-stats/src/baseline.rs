//! The trusted baseline: per-feature bins, profile and calibration, plus the label
//! distribution, the row count and the hash of the data it was built from.
//!
//! Building keeps the trusted values in memory (bins are their quantiles and calibration
//! resamples them); it is an offline step over a trusted data set, not part of the stream.

use crate::{Bins, Calibration, NumericProfile, StatsError, CALIBRATION_QUANTILE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Format version written into every baseline file.
pub const BASELINE_FORMAT: u32 = 1;

/// One numeric feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// Feature name (from the schema's `x-guard.numeric`).
    pub name: String,
    /// Bin edges (equal-frequency on the trusted data).
    pub bins: Bins,
    /// Moments and counts per bin of the trusted data.
    pub profile: NumericProfile,
    /// What same-distribution windows look like at the configured window size.
    pub calibration: Calibration,
}

/// A versioned reference profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// File format version ([`BASELINE_FORMAT`]).
    pub format: u32,
    /// Schema identity (`x-guard.id`) the baseline belongs to.
    pub schema_id: String,
    /// Rows used.
    pub rows: u64,
    /// SHA-256 (hex) of the input bytes.
    pub data_sha256: String,
    /// Window size the calibration is for.
    pub window: usize,
    /// Numeric features, in schema order.
    pub features: Vec<FeatureBaseline>,
    /// Label counts.
    pub labels: BTreeMap<String, u64>,
}

/// Collects trusted rows and builds a [`Baseline`].
#[derive(Debug, Clone)]
pub struct BaselineBuilder {
    names: Vec<String>,
    columns: Vec<Vec<f64>>,
    labels: BTreeMap<String, u64>,
    rows: u64,
}

impl BaselineBuilder {
    /// A builder for the named numeric features.
    pub fn new(names: Vec<String>) -> Self {
        let columns = vec![Vec::new(); names.len()];
        Self {
            names,
            columns,
            labels: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Add one row (values in feature order; missing as NaN) and its label.
    pub fn push(&mut self, values: &[f64], label: Option<&str>) {
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.push(*v);
        }
        if let Some(l) = label {
            *self.labels.entry(l.to_owned()).or_default() += 1;
        }
        self.rows += 1;
    }

    /// Build with at most `max_bins` bins per feature and calibration for `window`-row windows.
    pub fn build(
        self,
        schema_id: &str,
        data_sha256: &str,
        max_bins: usize,
        window: usize,
        resamples: usize,
    ) -> Result<Baseline, StatsError> {
        if self.rows == 0 {
            return Err(StatsError::Empty("no trusted rows"));
        }
        let mut features = Vec::with_capacity(self.names.len());
        for (i, (name, col)) in self.names.into_iter().zip(&self.columns).enumerate() {
            let bins = Bins::from_sample(col, max_bins)?;
            let mut profile = NumericProfile::new(&bins);
            col.iter().for_each(|x| profile.push(&bins, *x));
            let calibration = Calibration::from_baseline(
                &bins,
                &profile,
                col,
                window,
                resamples,
                CALIBRATION_QUANTILE,
                1 + i as u64,
            )?;
            features.push(FeatureBaseline {
                name,
                bins,
                profile,
                calibration,
            });
        }
        Ok(Baseline {
            format: BASELINE_FORMAT,
            schema_id: schema_id.to_owned(),
            rows: self.rows,
            data_sha256: data_sha256.to_owned(),
            window,
            features,
            labels: self.labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_round_trips() {
        let mut b = BaselineBuilder::new(vec!["a".into(), "b".into()]);
        for i in 0..500 {
            b.push(
                &[f64::from(i % 50), f64::from(i) * 0.5],
                Some(if i % 3 == 0 { "x" } else { "y" }),
            );
        }
        let base = b.build("s-v1", "00", 10, 100, 50).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(base.rows, 500);
        assert_eq!(base.features.len(), 2);
        assert_eq!(base.labels.values().sum::<u64>(), 500);
        assert!(base.features[0].calibration.ks_hi > 0.0);
        let text = serde_json::to_string(&base).unwrap_or_default();
        let back: Baseline = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        // Floats may differ in the last ulp through JSON; structure and counts must not.
        assert_eq!(back.features[1].profile.counts, base.features[1].profile.counts);
        assert_eq!(back.features[0].bins, base.features[0].bins);
        assert_eq!(
            (back.rows, &back.labels, back.window),
            (base.rows, &base.labels, base.window)
        );
        let c = (back.features[0].calibration.log_var_hi - base.features[0].calibration.log_var_hi).abs();
        assert!(c < 1e-12);
    }
}
