//! The committed data sets' evaluation scenarios (`tools evaluate`, the CI floor test): each
//! is a data set, the split the committed models were trained on (`scripts/train-models.sh`),
//! and one generic attack (`attack.rs`). The stream is the held-out part.
use crate::split::SPLIT_SEED;

/// Scenarios: name, data set, attack (`--truth /label=1` marks Shuttle's own anomalies).
pub const SCENARIOS: &[(&str, &str, &str)] = &[
    ("shuttle", "shuttle", "none"),
    ("shuttle-inject", "shuttle", "inject:0.05"),
    ("mnist-flip", "mnist", "flip:0.05"),
    ("mnist-badnets", "mnist", "trigger:3:0:0.1"),
    ("mnist-blend", "mnist", "blend:0.1:0:0.1"),
    ("mnist-noise", "mnist", "inject:0.05"),
    ("mnist-fgsm-0.05", "mnist", "fgsm:0.05"),
    ("mnist-fgsm-0.1", "mnist", "fgsm:0.1"),
    ("mnist-fgsm-0.2", "mnist", "fgsm:0.2"),
    ("mnist-pgd-0.1", "mnist", "pgd:0.1:5"),
];

/// The split of the committed models (`scripts/train-models.sh`): half the rows held out;
/// for Shuttle only normal rows (label 0) are trusted.
pub fn committed_split(domain: &str) -> Result<crate::split::SplitRule, crate::EvalError> {
    Ok(crate::split::SplitRule {
        holdout: 0.5,
        seed: SPLIT_SEED,
        trusted_when: if domain == "shuttle" {
            Some("/label=0".parse().map_err(crate::EvalError::Input)?)
        } else {
            None
        },
    })
}
