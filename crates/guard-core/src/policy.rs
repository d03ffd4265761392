//! Contracts several stages share: what the configuration sets and the statistics obey.

use serde::{Deserialize, Serialize};

/// When a feature fires, and how long an alarm needs to rise and to clear.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmPolicy {
    /// False-discovery rate for the Benjamini–Hochberg correction across features.
    pub fdr: f64,
    /// Smallest KS statistic that counts as drift.
    pub min_ks: f64,
    /// Smallest PSI that counts as drift (paired with the chi-squared test).
    pub min_psi: f64,
    /// Variance ratio outside `[1/max_var_ratio, max_var_ratio]` counts as drift.
    pub max_var_ratio: f64,
    /// Firing windows in a row before an alarm is raised.
    pub consecutive: u32,
    /// Quiet windows in a row before a raised alarm clears.
    pub clear_after: u32,
}

impl Default for AlarmPolicy {
    fn default() -> Self {
        Self {
            fdr: 0.01,
            min_ks: 0.1,
            min_psi: 0.2,
            max_var_ratio: 2.0,
            consecutive: 2,
            clear_after: 3,
        }
    }
}
