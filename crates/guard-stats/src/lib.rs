//! Streaming statistics and drift tests for ingest-guard.
//!
//! Everything here is built to run on a stream for ever in bounded memory and to be merged:
//! [`Moments`] keep count, missing, mean, variance (Welford's update, Chan et al.'s merge, so a
//! window or an instance can be combined with another without the raw values), min and max.
//! The drift tests compare a window with a trusted baseline and are checked against SciPy on
//! stored fixtures (`tests/reference.rs`).
//!
//! This crate does no I/O and knows nothing of Kafka or schemas.

pub mod alarm;
mod baseline;
mod categorical;
mod drift;
pub mod flood;
mod moments;
mod nonfinite;
pub mod profile;
mod quantiles;
mod window;

pub use alarm::{benjamini_hochberg, firing, firing_calibrated, AlarmPolicy, AlarmState, Firing, Transition};
pub use baseline::{Baseline, BaselineBuilder, Evaluation, FeatureBaseline, BASELINE_FORMAT, MAX_CATEGORIES};
pub use categorical::{HeavyHitters, SourceStats, SourceTable};
pub use drift::{
    chi2_homogeneity, js_distance, kolmogorov_sf, ks_2samp, psi, variance_ratio, wasserstein1, Chi2Result, KsResult,
    VarianceRatio, PSI_EPSILON,
};
pub use flood::{FloodDetector, FloodFlag, FloodProfile, FloodProfileBuilder, FloodReference, FloodSettings};
pub use moments::Moments;
pub use profile::{compare, Bins, Calibration, FeatureDrift, NumericProfile, CALIBRATION_QUANTILE};
pub use quantiles::{Quantiles, QUANTILE_RELATIVE_ERROR};
pub use window::WindowProfile;

/// Errors of the statistics functions: inputs a test cannot be computed on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A sample or distribution is empty (or has no finite values).
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// Two distributions must have the same number of bins.
    #[error("length mismatch: {left} vs {right} bins")]
    LengthMismatch {
        /// Bins on the left.
        left: usize,
        /// Bins on the right.
        right: usize,
    },
    /// Too few values or degrees of freedom for the test.
    #[error("degenerate input: {0}")]
    Degenerate(&'static str),
}
