//! Fixed histograms on the baseline's bins: what a window keeps per numeric feature.
//!
//! The baseline fixes the bin edges once (equal-frequency quantiles of the trusted data,
//! duplicates removed, so discrete features get one bin per value where it matters). A window
//! then only counts values per bin next to its [`Moments`]: O(bins) memory whatever the traffic,
//! and windows, instances and the baseline merge by adding counts. The drift tests that need
//! distributions (KS, PSI, chi-squared, JS, Wasserstein) run on these counts.

use crate::{chi2_homogeneity, js_distance, kolmogorov_sf, psi, variance_ratio, Moments, StatsError};
use serde::{Deserialize, Serialize};

/// Bin edges: `k` interior edges make `k + 1` right-closed bins
/// `(-∞, e₀], (e₀, e₁], …, (e_{k−1}, +∞)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    edges: Vec<f64>,
}

impl Bins {
    /// Equal-frequency edges from a trusted sample (non-finite values ignored), at most
    /// `max_bins` bins; repeated quantiles collapse into one edge.
    pub fn from_sample(values: &[f64], max_bins: usize) -> Result<Self, StatsError> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Err(StatsError::Empty("bins need finite baseline values"));
        }
        v.sort_by(f64::total_cmp);
        let k = max_bins.max(2);
        let mut edges: Vec<f64> = (1..k).map(|i| v[(i * v.len() / k).min(v.len() - 1)]).collect();
        edges.dedup();
        // The top edge equal to the maximum would leave the last bin empty in the baseline.
        if edges.last().is_some_and(|e| *e >= v[v.len() - 1]) && edges.len() > 1 {
            edges.pop();
        }
        Ok(Self { edges })
    }

    /// Bins on given interior edges (finite, strictly increasing).
    pub fn from_edges(edges: Vec<f64>) -> Result<Self, StatsError> {
        if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(StatsError::Degenerate("bin edges must be finite and increasing"));
        }
        Ok(Self { edges })
    }

    /// Number of bins.
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Always false: there is at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin of `x` (right-closed).
    #[inline]
    pub fn index(&self, x: f64) -> usize {
        self.edges.partition_point(|e| *e < x)
    }

    /// Interior edges.
    pub fn edges(&self) -> &[f64] {
        &self.edges
    }
}

/// Moments plus counts on fixed bins for one numeric feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    /// Count, missing, mean, variance, min, max.
    pub moments: Moments,
    /// Finite values per bin.
    pub counts: Vec<u64>,
}

impl NumericProfile {
    /// An empty profile over `bins`.
    pub fn new(bins: &Bins) -> Self {
        Self {
            moments: Moments::new(),
            counts: vec![0; bins.len()],
        }
    }

    /// Add a value.
    #[inline]
    pub fn push(&mut self, bins: &Bins, x: f64) {
        self.moments.push(x);
        if x.is_finite() {
            if let Some(c) = self.counts.get_mut(bins.index(x)) {
                *c += 1;
            }
        }
    }

    /// Add another profile over the same bins.
    pub fn merge(&mut self, other: &NumericProfile) {
        self.moments.merge(&other.moments);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Forget everything (a new window).
    pub fn clear(&mut self) {
        self.moments = Moments::new();
        self.counts.iter_mut().for_each(|c| *c = 0);
    }
}

/// Every drift statistic of one feature, window against baseline.
/// Serialized as numbers even where non-finite (see `nonfinite::clamp`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// KS statistic on the binned CDFs (exact for values on bin edges, a lower bound otherwise).
    #[serde(with = "crate::nonfinite::clamp")]
    pub ks: f64,
    /// Its p-value (limiting Kolmogorov distribution).
    #[serde(with = "crate::nonfinite::clamp")]
    pub ks_p: f64,
    /// Population Stability Index.
    #[serde(with = "crate::nonfinite::clamp")]
    pub psi: f64,
    /// Chi-squared homogeneity p-value on the bins.
    #[serde(with = "crate::nonfinite::clamp")]
    pub chi2_p: f64,
    /// Jensen–Shannon distance (base 2).
    #[serde(with = "crate::nonfinite::clamp")]
    pub js: f64,
    /// Wasserstein-1 on the binned CDFs over the interior edges (tails excluded).
    #[serde(with = "crate::nonfinite::clamp")]
    pub wasserstein: f64,
    /// s²(window) / s²(baseline).
    #[serde(with = "crate::nonfinite::clamp")]
    pub var_ratio: f64,
    /// Its two-sided F-test p-value.
    #[serde(with = "crate::nonfinite::clamp")]
    pub var_p: f64,
}

impl FeatureDrift {
    /// No evidence of drift: what a feature with nothing to compare (e.g. absent from a whole
    /// window) reports, so it can never fire.
    pub fn none() -> Self {
        Self {
            ks: 0.0,
            ks_p: 1.0,
            psi: 0.0,
            chi2_p: 1.0,
            js: 0.0,
            wasserstein: 0.0,
            var_ratio: 1.0,
            var_p: 1.0,
        }
    }
}

/// Compare a window with the baseline (same bins).
pub fn compare(bins: &Bins, baseline: &NumericProfile, window: &NumericProfile) -> Result<FeatureDrift, StatsError> {
    let nb: u64 = baseline.counts.iter().sum();
    let nw: u64 = window.counts.iter().sum();
    if nb == 0 || nw == 0 {
        return Err(StatsError::Empty("window or baseline has no values"));
    }
    let (b, w): (Vec<f64>, Vec<f64>) = (
        baseline.counts.iter().map(|c| *c as f64).collect(),
        window.counts.iter().map(|c| *c as f64).collect(),
    );
    let (mut cb, mut cw, mut ks, mut wass) = (0.0, 0.0, 0.0f64, 0.0);
    for i in 0..b.len().saturating_sub(1) {
        cb += b[i] / nb as f64;
        cw += w[i] / nw as f64;
        let gap = (cb - cw).abs();
        ks = ks.max(gap);
        if let (Some(lo), Some(hi)) = (bins.edges.get(i), bins.edges.get(i + 1)) {
            wass += gap * (hi - lo);
        }
    }
    let (m, n) = ((nb.max(nw)) as f64, (nb.min(nw)) as f64);
    let en = m * n / (m + n);
    let chi2_p = chi2_homogeneity(&b, &w).map_or(1.0, |c| c.pvalue);
    let (var_ratio, var_p) =
        variance_ratio(&window.moments, &baseline.moments).map_or((1.0, 1.0), |v| (v.ratio, v.pvalue));
    Ok(FeatureDrift {
        ks,
        ks_p: kolmogorov_sf(en.sqrt() * ks),
        psi: psi(&b, &w)?,
        chi2_p,
        js: js_distance(&b, &w)?,
        wasserstein: wass,
        var_ratio,
        var_p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_equal_frequency_and_dedup_ties() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let b = Bins::from_sample(&v, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.len(), 10);
        let discrete = [0.0; 900].iter().chain([1.0; 100].iter()).copied().collect::<Vec<_>>();
        let b = Bins::from_sample(&discrete, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.edges(), &[0.0], "one edge between the two values");
        assert_eq!((b.index(0.0), b.index(1.0)), (0, 1));
    }

    #[test]
    fn same_data_has_no_drift_and_shift_has() {
        let base: Vec<f64> = (0..5000).map(|i| f64::from(i % 100)).collect();
        let bins = Bins::from_sample(&base, 20).unwrap_or_else(|e| panic!("{e}"));
        let (mut pb, mut same, mut shifted) = (
            NumericProfile::new(&bins),
            NumericProfile::new(&bins),
            NumericProfile::new(&bins),
        );
        base.iter().for_each(|x| pb.push(&bins, *x));
        base.iter().take(1000).for_each(|x| same.push(&bins, *x));
        base.iter().take(1000).for_each(|x| shifted.push(&bins, x + 30.0));
        let d = compare(&bins, &pb, &same).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.ks < 0.01 && d.psi < 0.01 && d.ks_p > 0.5, "{d:?}");
        let d = compare(&bins, &pb, &shifted).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.ks > 0.25 && d.psi > 0.25 && d.ks_p < 1e-6, "{d:?}");
    }

    #[test]
    fn calibration_rescales_with_window_size() {
        let base: Vec<f64> = (0..20_000).map(|i| f64::from((i * 7919) % 1000)).collect();
        let bins = Bins::from_sample(&base, 20).unwrap_or_else(|e| panic!("{e}"));
        let mut p = NumericProfile::new(&bins);
        base.iter().for_each(|x| p.push(&bins, *x));
        let at =
            |w: usize| Calibration::from_baseline(&bins, &p, &base, w, 400, 0.99, 7).unwrap_or_else(|e| panic!("{e}"));
        let (c1000, c250) = (at(1000), at(250));
        assert_eq!(c1000.at(1000, 20_000), c1000, "same size: unchanged");
        let scaled = c1000.at(250, 20_000);
        // The rescaled bands land near the bands resampled at that size.
        for (name, got, want) in [
            ("ks", scaled.ks_hi, c250.ks_hi),
            ("psi", scaled.psi_hi, c250.psi_hi),
            ("log_var_hi", scaled.log_var_hi, c250.log_var_hi),
        ] {
            assert!(
                (got / want - 1.0).abs() < 0.25,
                "{name}: rescaled {got} vs resampled {want}"
            );
        }
        assert!(scaled.ks_hi > c1000.ks_hi && scaled.psi_hi > c1000.psi_hi);
    }

    /// A feature that is zero in most rows (Image Segments' `short_line_density_2`: 1,795 of
    /// 1,867) has same-distribution windows of zero variance. Their band is a number, so the
    /// baseline file reads back, and such a window stays inside it at any window size.
    #[test]
    fn windows_of_zero_variance_calibrate_to_a_finite_band() {
        let base: Vec<f64> = (0..2_000).map(|i| if i % 25 == 0 { 0.2 } else { 0.0 }).collect();
        let bins = Bins::from_sample(&base, 20).unwrap_or_else(|e| panic!("{e}"));
        let mut p = NumericProfile::new(&bins);
        base.iter().for_each(|x| p.push(&bins, *x));
        let c = Calibration::from_baseline(&bins, &p, &base, 93, 2_000, CALIBRATION_QUANTILE, 7)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.log_var_lo, LOG_VAR_FLOOR, "{c:?}");
        let text = serde_json::to_string(&c).unwrap_or_else(|e| panic!("{e}"));
        let back: Calibration = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((back.window, back.log_var_lo), (c.window, c.log_var_lo));
        let mut zeros = NumericProfile::new(&bins);
        (0..93).for_each(|_| zeros.push(&bins, 0.0));
        let d = compare(&bins, &p, &zeros).unwrap_or_else(|e| panic!("{e}"));
        for band in [c, c.at(40, 2_000), c.at(400, 2_000)] {
            assert!(log_var_ratio(d.var_ratio) >= band.log_var_lo, "{d:?} {band:?}");
        }
    }

    #[test]
    fn merge_adds_windows() {
        let bins = Bins::from_sample(&[1.0, 2.0, 3.0, 4.0], 4).unwrap_or_else(|e| panic!("{e}"));
        let (mut a, mut b, mut all) = (
            NumericProfile::new(&bins),
            NumericProfile::new(&bins),
            NumericProfile::new(&bins),
        );
        [1.0, 2.0].iter().for_each(|x| a.push(&bins, *x));
        [3.0, 9.0].iter().for_each(|x| b.push(&bins, *x));
        [1.0, 2.0, 3.0, 9.0].iter().for_each(|x| all.push(&bins, *x));
        a.merge(&b);
        assert_eq!(a.counts, all.counts);
        assert_eq!(a.moments.count(), 4);
    }
}

/// What same-distribution windows of a given size look like, per feature: quantiles of the
/// drift statistics over windows resampled from the baseline itself. Effect thresholds are
/// raised to these, so heavy-tailed or discrete features (a variance made by a few extreme
/// rows, PSI on few distinct values) do not fire on ordinary windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Window size the calibration was made for.
    pub window: usize,
    /// Upper quantile of the KS statistic.
    pub ks_hi: f64,
    /// Upper quantile of PSI.
    pub psi_hi: f64,
    /// Lower quantile of ln(variance ratio).
    pub log_var_lo: f64,
    /// Upper quantile of ln(variance ratio).
    pub log_var_hi: f64,
}

/// ln(variance ratio) of a window whose variance is zero (or whose ratio is not a number): a
/// finite floor below the log of any positive `f64`, so a calibrated band that includes such
/// windows is written to JSON as a number (a JSON number cannot be −∞) and reads back the same.
pub const LOG_VAR_FLOOR: f64 = -1_000.0;

/// ln(variance ratio), at [`LOG_VAR_FLOOR`] for a zero or undefined ratio: what the
/// calibration bands and the alarm compare.
pub fn log_var_ratio(ratio: f64) -> f64 {
    if ratio > 0.0 {
        ratio.ln().max(LOG_VAR_FLOOR)
    } else {
        LOG_VAR_FLOOR
    }
}

/// Default quantile level for calibration bands. With `f` features and three tests per
/// feature, about `3·f·(1 − q)` of same-distribution windows have a firing test by chance;
/// 0.999 keeps that near 3 % for nine features, and two consecutive windows make it an alarm
/// rarely. Estimating it needs about 2,000 resamples.
pub const CALIBRATION_QUANTILE: f64 = 0.999;

impl Calibration {
    /// The bands rescaled to a window of `n` rows against a baseline of `baseline_n`, for
    /// windows that closed on time before reaching the calibrated size (or a longer view).
    /// Under the null the spread of KS and of ln(variance ratio) scales as √(1/n + 1/N) and
    /// PSI (a chi-squared statistic over n) as (1/n + 1/N); the bands follow.
    pub fn at(&self, n: u64, baseline_n: u64) -> Self {
        if n == 0 || baseline_n == 0 || n as usize == self.window {
            return *self;
        }
        let spread = |k: f64| 1.0 / k + 1.0 / baseline_n as f64;
        let r = spread(n as f64) / spread(self.window as f64);
        let s = r.sqrt();
        Self {
            window: n as usize,
            ks_hi: self.ks_hi * s,
            psi_hi: self.psi_hi * r,
            // The floor stays the floor: zero-variance windows stay inside the band.
            log_var_lo: if self.log_var_lo <= LOG_VAR_FLOOR {
                LOG_VAR_FLOOR
            } else {
                self.log_var_lo * s
            },
            log_var_hi: self.log_var_hi * s,
        }
    }

    /// Resample `resamples` windows of `window` values (with replacement, deterministic for
    /// `seed`) from the baseline `values`, compare each with `baseline`, and keep the bands at
    /// `quantile` (e.g. [`CALIBRATION_QUANTILE`]).
    pub fn from_baseline(
        bins: &Bins,
        baseline: &NumericProfile,
        values: &[f64],
        window: usize,
        resamples: usize,
        quantile: f64,
        seed: u64,
    ) -> Result<Self, StatsError> {
        let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if finite.is_empty() || window < 2 || resamples < 10 || !(0.5..1.0).contains(&quantile) {
            return Err(StatsError::Degenerate(
                "calibration needs values, a window of 2+ and 10+ resamples",
            ));
        }
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let (mut ks, mut psi, mut lv) = (Vec::new(), Vec::new(), Vec::new());
        let mut w = NumericProfile::new(bins);
        for _ in 0..resamples {
            w.clear();
            for _ in 0..window {
                w.push(bins, finite[(next() % finite.len() as u64) as usize]);
            }
            let d = compare(bins, baseline, &w)?;
            ks.push(d.ks);
            psi.push(d.psi);
            lv.push(log_var_ratio(d.var_ratio));
        }
        let q = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        Ok(Self {
            window,
            ks_hi: q(&mut ks, quantile),
            psi_hi: q(&mut psi, quantile),
            log_var_lo: q(&mut lv, 1.0 - quantile),
            log_var_hi: q(&mut lv, quantile),
        })
    }
}
