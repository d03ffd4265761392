//! Alarms that can be trusted: multiple-testing correction, effect sizes, persistence and
//! hysteresis.
//!
//! At large n every difference is "significant", so a p-value alone cries wolf. A feature
//! *fires* in a window only when a test is significant after Benjamini–Hochberg correction
//! across the schema's features **and** its effect size passes a threshold. An alarm is raised
//! after `consecutive` firing windows in a row and cleared only after `clear_after` quiet ones.

use crate::profile::{Calibration, FeatureDrift};
pub use guard_core::AlarmPolicy;
use serde::Serialize;

/// Benjamini–Hochberg adjusted p-values (SciPy `false_discovery_control(ps, method="bh")`),
/// in the input order. NaN p-values are treated as 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    let val = |i: usize| if p[i].is_nan() { 1.0 } else { p[i] };
    order.sort_by(|a, b| val(*a).total_cmp(&val(*b)));
    let mut adjusted = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(val(i) * m as f64 / (rank + 1) as f64);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

/// Which tests made a feature fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Firing {
    /// KS significant and large.
    pub ks: bool,
    /// Chi-squared significant and PSI large.
    pub psi: bool,
    /// Variance ratio significant and outside the band.
    pub variance: bool,
}

impl Firing {
    /// Any test fired.
    pub fn any(&self) -> bool {
        self.ks || self.psi || self.variance
    }
}

/// Decide which features fire in one window, correcting each test's p-values across features.
/// With a [`Calibration`] per feature, effect thresholds are raised to what same-distribution
/// windows of that size produce.
pub fn firing_calibrated(policy: &AlarmPolicy, drifts: &[FeatureDrift], calibration: &[Calibration]) -> Vec<Firing> {
    let mut out = firing(policy, drifts);
    for ((f, d), c) in out.iter_mut().zip(drifts).zip(calibration) {
        f.ks &= d.ks > c.ks_hi;
        f.psi &= d.psi > c.psi_hi;
        let lv = crate::profile::log_var_ratio(d.var_ratio);
        f.variance &= lv > c.log_var_hi || lv < c.log_var_lo;
    }
    out
}

/// Decide which features fire in one window with the static thresholds only.
pub fn firing(policy: &AlarmPolicy, drifts: &[FeatureDrift]) -> Vec<Firing> {
    let ks_adj = benjamini_hochberg(&drifts.iter().map(|d| d.ks_p).collect::<Vec<_>>());
    let chi_adj = benjamini_hochberg(&drifts.iter().map(|d| d.chi2_p).collect::<Vec<_>>());
    let var_adj = benjamini_hochberg(&drifts.iter().map(|d| d.var_p).collect::<Vec<_>>());
    drifts
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let band = d.var_ratio > policy.max_var_ratio || d.var_ratio < 1.0 / policy.max_var_ratio;
            Firing {
                ks: ks_adj[i] < policy.fdr && d.ks >= policy.min_ks,
                psi: chi_adj[i] < policy.fdr && d.psi >= policy.min_psi,
                variance: var_adj[i] < policy.fdr && band,
            }
        })
        .collect()
}

/// Alarm state of one feature across windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlarmState {
    /// The alarm is raised.
    pub raised: bool,
    /// Firing windows in a row.
    pub fire_streak: u32,
    /// Quiet windows in a row.
    pub quiet_streak: u32,
}

/// What changed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The alarm was raised in this window.
    Raised,
    /// The alarm cleared in this window.
    Cleared,
}

impl AlarmState {
    /// Feed one window's outcome.
    pub fn update(&mut self, policy: &AlarmPolicy, fired: bool) -> Transition {
        if fired {
            self.fire_streak += 1;
            self.quiet_streak = 0;
            if !self.raised && self.fire_streak >= policy.consecutive {
                self.raised = true;
                return Transition::Raised;
            }
        } else {
            self.quiet_streak += 1;
            self.fire_streak = 0;
            if self.raised && self.quiet_streak >= policy.clear_after {
                self.raised = false;
                return Transition::Cleared;
            }
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_after_k_and_clears_with_hysteresis() {
        let p = AlarmPolicy {
            consecutive: 2,
            clear_after: 3,
            ..AlarmPolicy::default()
        };
        let mut s = AlarmState::default();
        assert_eq!(s.update(&p, true), Transition::None);
        assert_eq!(s.update(&p, false), Transition::None, "one window is not enough");
        assert_eq!(s.update(&p, true), Transition::None);
        assert_eq!(s.update(&p, true), Transition::Raised);
        assert_eq!(s.update(&p, false), Transition::None);
        assert_eq!(s.update(&p, true), Transition::None, "still raised, streak reset");
        assert_eq!(s.update(&p, false), Transition::None);
        assert_eq!(s.update(&p, false), Transition::None);
        assert_eq!(s.update(&p, false), Transition::Cleared);
    }

    #[test]
    fn significance_without_effect_does_not_fire() {
        let d = FeatureDrift {
            ks: 0.02,
            ks_p: 1e-9,
            psi: 0.01,
            chi2_p: 1e-9,
            js: 0.01,
            wasserstein: 0.0,
            var_ratio: 1.1,
            var_p: 1e-9,
        };
        let f = firing(&AlarmPolicy::default(), &[d]);
        assert!(!f[0].any(), "tiny effects at huge n are not drift");
        let big = FeatureDrift {
            ks: 0.3,
            psi: 0.5,
            var_ratio: 4.0,
            ..d
        };
        let f = firing(&AlarmPolicy::default(), &[big]);
        assert!(f[0].ks && f[0].psi && f[0].variance);
    }
}
