//! The trusted baseline: per-feature bins, profile and calibration, plus the label
//! distribution, the row count and the hash of the data it was built from.
//!
//! Building keeps the trusted values in memory (bins are their quantiles and calibration
//! resamples them); it is an offline step over a trusted data set, not part of the stream.

use crate::{
    compare, firing_calibrated, AlarmPolicy, Bins, Calibration, FeatureDrift, Firing, NumericProfile, StatsError,
    WindowProfile, CALIBRATION_QUANTILE,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Format version written into every baseline file (2 added categorical features; format 1
/// files, numeric only, still load).
pub const BASELINE_FORMAT: u32 = 2;

/// Most categories a categorical feature keeps; rarer ones (and any value unseen in the
/// baseline) count as "other".
pub const MAX_CATEGORIES: usize = 64;

/// One feature's reference. A categorical feature is binned by category index: category `i`
/// of `categories` is the value `i`, anything else (including values never seen in the
/// baseline) is `categories.len()`, "other"; only the distribution tests (chi-squared, PSI,
/// JS) apply to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// Feature name (from the schema's `x-guard.numeric` or `x-guard.categorical`; the label
    /// is the categorical feature `label`).
    pub name: String,
    /// Categories, most frequent first, for a categorical feature; absent for a numeric one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
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
    /// The domain schema the baseline was built with (so a batch check needs the baseline
    /// only); absent in baselines written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// The trusted rows over the near-duplicate cells ([`crate::flood`]); absent in baselines
    /// written before floods were judged (those routes judge no floods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<crate::FloodProfile>,
}

impl FeatureBaseline {
    /// The value a window pushes for category `value` of this (categorical) feature:
    /// its index, "other" for unknown values, NaN when missing.
    pub fn category_value(&self, index: &HashMap<String, usize>, value: Option<&str>) -> f64 {
        match value {
            None => f64::NAN,
            Some(v) => index
                .get(v)
                .copied()
                .unwrap_or_else(|| self.categories.as_ref().map_or(0, Vec::len)) as f64,
        }
    }

    /// Category → index, for [`FeatureBaseline::category_value`] (empty for numeric features).
    pub fn category_index(&self) -> HashMap<String, usize> {
        self.categories
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect()
    }
}

/// One window judged against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Drift statistics per feature (baseline order).
    pub drifts: Vec<FeatureDrift>,
    /// Which tests fired per feature.
    pub fired: Vec<Firing>,
}

impl Baseline {
    /// Compare `window` with the baseline and decide which features fire under `policy`,
    /// with calibration bands rescaled to the window's row count. Categorical features fire
    /// only on the distribution test (chi-squared + PSI). A feature with no values in the
    /// window cannot fire.
    pub fn evaluate(&self, policy: &AlarmPolicy, window: &WindowProfile) -> Evaluation {
        let drifts: Vec<FeatureDrift> = self
            .features
            .iter()
            .zip(&window.features)
            .map(|(f, w)| compare(&f.bins, &f.profile, w).unwrap_or_else(|_| FeatureDrift::none()))
            .collect();
        let calibration: Vec<Calibration> = self
            .features
            .iter()
            .zip(&window.features)
            .map(|(f, w)| f.calibration.at(w.counts.iter().sum(), f.profile.counts.iter().sum()))
            .collect();
        let mut fired = firing_calibrated(policy, &drifts, &calibration);
        for (f, b) in fired.iter_mut().zip(&self.features) {
            if b.categories.is_some() {
                f.ks = false;
                f.variance = false;
            }
        }
        Evaluation { drifts, fired }
    }

    /// Features that are numeric.
    pub fn numeric(&self) -> impl Iterator<Item = &FeatureBaseline> {
        self.features.iter().filter(|f| f.categories.is_none())
    }

    /// Features that are categorical.
    pub fn categorical(&self) -> impl Iterator<Item = &FeatureBaseline> {
        self.features.iter().filter(|f| f.categories.is_some())
    }
}

/// Collects trusted rows and builds a [`Baseline`].
#[derive(Debug, Clone)]
pub struct BaselineBuilder {
    names: Vec<String>,
    columns: Vec<Vec<f64>>,
    cat_names: Vec<String>,
    /// Per categorical feature: interned value ids per row (`u32::MAX` when missing).
    cat_columns: Vec<Vec<u32>>,
    interners: Vec<HashMap<String, u32>>,
    labels: BTreeMap<String, u64>,
    rows: u64,
    flood: crate::FloodProfileBuilder,
}

impl BaselineBuilder {
    /// A builder for the named numeric features.
    pub fn new(names: Vec<String>) -> Self {
        let columns = vec![Vec::new(); names.len()];
        Self {
            names,
            columns,
            cat_names: Vec::new(),
            cat_columns: Vec::new(),
            interners: Vec::new(),
            labels: BTreeMap::new(),
            rows: 0,
            flood: crate::FloodProfileBuilder::default(),
        }
    }

    /// Add categorical features (after the numeric ones in the baseline).
    pub fn with_categorical(mut self, names: Vec<String>) -> Self {
        self.cat_columns = vec![Vec::new(); names.len()];
        self.interners = vec![HashMap::new(); names.len()];
        self.cat_names = names;
        self
    }

    /// Add one row (values in feature order; missing as NaN) and its label.
    pub fn push(&mut self, values: &[f64], label: Option<&str>) {
        self.push_row(values, &[], label);
    }

    /// Add one row with its categorical values (in [`BaselineBuilder::with_categorical`]
    /// order; `None` when missing).
    pub fn push_row(&mut self, values: &[f64], categories: &[Option<&str>], label: Option<&str>) {
        for (col, v) in self.columns.iter_mut().zip(values) {
            col.push(*v);
        }
        for (i, col) in self.cat_columns.iter_mut().enumerate() {
            let id = match categories.get(i).copied().flatten() {
                None => u32::MAX,
                Some(v) => {
                    let interner = &mut self.interners[i];
                    let next = interner.len() as u32;
                    *interner.entry(v.to_owned()).or_insert(next)
                }
            };
            col.push(id);
        }
        if let Some(l) = label {
            *self.labels.entry(l.to_owned()).or_default() += 1;
        }
        self.rows += 1;
    }

    /// Add one trusted row's values (numeric features, then tensors) to the flood profile.
    pub fn push_values(&mut self, values: &[f32]) {
        self.flood.push(values);
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
        let mut features = Vec::with_capacity(self.names.len() + self.cat_names.len());
        let numeric = self.names.into_iter().zip(self.columns).map(|(n, c)| (n, None, c));
        let categorical = self
            .cat_names
            .into_iter()
            .zip(self.cat_columns)
            .zip(self.interners)
            .map(|((name, ids), interner)| {
                let (categories, col) = rank_categories(&ids, &interner);
                (name, Some(categories), col)
            });
        for (i, (name, categories, col)) in numeric.chain(categorical).enumerate() {
            let col = &col;
            let bins = match &categories {
                None => Bins::from_sample(col, max_bins)?,
                Some(c) if c.is_empty() => return Err(StatsError::Empty("categorical feature has no values")),
                Some(c) => Bins::from_edges((0..c.len()).map(|i| i as f64).collect())?,
            };
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
                categories,
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
            schema: None,
            flood: self.flood.build(),
        })
    }
}

/// Keep the [`MAX_CATEGORIES`] most frequent values (ties by name) and turn interned ids into
/// category indices ("other" = the number of kept categories, NaN when missing).
fn rank_categories(ids: &[u32], interner: &HashMap<String, u32>) -> (Vec<String>, Vec<f64>) {
    let mut counts = vec![0u64; interner.len()];
    for id in ids {
        if let Some(c) = counts.get_mut(*id as usize) {
            *c += 1;
        }
    }
    let mut by_count: Vec<(&String, u32)> = interner.iter().map(|(k, v)| (k, *v)).collect();
    by_count.sort_by(|a, b| counts[b.1 as usize].cmp(&counts[a.1 as usize]).then(a.0.cmp(b.0)));
    by_count.truncate(MAX_CATEGORIES);
    let other = by_count.len();
    let mut rank = vec![other; interner.len()];
    for (r, (_, id)) in by_count.iter().enumerate() {
        rank[*id as usize] = r;
    }
    let col = ids
        .iter()
        .map(|id| rank.get(*id as usize).map_or(f64::NAN, |r| *r as f64))
        .collect();
    (by_count.into_iter().map(|(k, _)| k.clone()).collect(), col)
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

    #[test]
    fn categorical_features_rank_and_fire_only_on_distribution() {
        let colours = ["red", "green", "blue"];
        let mut b = BaselineBuilder::new(vec!["x".into()]).with_categorical(vec!["colour".into()]);
        for i in 0..3000u32 {
            let c = colours[(i % 6).min(2) as usize]; // blue 4/6, red 1/6, green 1/6
            b.push_row(&[f64::from(i % 10)], &[Some(c)], None);
        }
        let base = b.build("c-v1", "00", 10, 200, 200).unwrap_or_else(|e| panic!("{e}"));
        let cat = &base.features[1];
        assert_eq!(cat.categories.as_deref().map(|c| c[0].as_str()), Some("blue"));
        let index = cat.category_index();
        assert_eq!(cat.category_value(&index, Some("blue")), 0.0);
        assert_eq!(cat.category_value(&index, Some("never-seen")), 3.0, "other");
        assert!(cat.category_value(&index, None).is_nan());

        let policy = AlarmPolicy::default();
        let fill = |colour: &dyn Fn(u32) -> &'static str| {
            let mut w = WindowProfile::for_baseline(&base, false);
            for i in 0..200u32 {
                w.push(&base.features[0].bins, 0, f64::from(i % 10));
                w.push(&cat.bins, 1, cat.category_value(&index, Some(colour(i))));
                w.end_row();
            }
            w
        };
        let same = base.evaluate(&policy, &fill(&|i| colours[(i % 6).min(2) as usize]));
        assert!(!same.fired.iter().any(Firing::any), "{same:?}");
        let flipped = base.evaluate(&policy, &fill(&|i| if i % 2 == 0 { "red" } else { "purple" }));
        assert!(flipped.fired[1].psi, "{flipped:?}");
        assert!(!flipped.fired[1].ks && !flipped.fired[1].variance);
        assert!(!flipped.fired[0].any());
    }
}
