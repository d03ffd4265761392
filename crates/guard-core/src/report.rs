//! The drift statistics report: what `GET /api/stats` answers, what the review dashboard and
//! `ingest-guard stats` read. The hub builds it (`guard-drift`), the readers take it as these
//! types; one contract instead of string keys into hand-built JSON. Every number in it is
//! finite (an infinite statistic travels as `f64::MAX`, NaN as 0), so it round-trips through
//! JSON.

use serde::{Deserialize, Serialize};

/// Drift statistics of every routed topic, from this instance (`local`) or merged from the
/// whole consumer group's published views (`group`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// `local` or `group`.
    pub scope: String,
    /// Consumer group.
    pub group: String,
    /// This instance's name.
    pub instance: String,
    /// Per routed topic with a baseline, by name.
    pub topics: Vec<TopicStats>,
    /// The source table.
    pub sources: SourcesReport,
}

/// One topic's drift statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicStats {
    /// Input topic.
    pub topic: String,
    /// Schema the baseline was built for.
    pub schema_id: String,
    /// SHA-256 of the baseline's data.
    pub baseline_sha256: String,
    /// Rows in the baseline.
    pub baseline_rows: u64,
    /// Rows per window the baseline is calibrated for.
    pub window: u64,
    /// The partitions whose views were merged.
    pub partitions: Vec<PartitionStats>,
    /// Views that could not be merged (skipped, never trusted).
    pub skipped_views: u32,
    /// The merge of each partition's last closed window.
    pub current: ProfileStats,
    /// The merge of each partition's recent windows.
    pub sliding: ProfileStats,
}

/// One partition's part of a topic's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionStats {
    /// Input partition.
    pub partition: i32,
    /// Instance that judged it.
    pub instance: String,
    /// Windows closed on it since that instance got it.
    pub windows: u64,
    /// First input offset of its last window.
    pub first_offset: i64,
    /// Last input offset of its last window.
    pub last_offset: i64,
    /// Features whose alarm is raised on it.
    pub alarms: Vec<String>,
}

/// A merged window profile against the baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileStats {
    /// Rows in the profile.
    pub records: u64,
    /// Per feature, in baseline order (numeric first, then categorical).
    pub features: Vec<FeatureStats>,
}

/// Whether a feature is numeric or categorical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    /// Binned numbers.
    #[default]
    Numeric,
    /// Strings from a category list.
    Categorical,
}

/// One feature of a profile against the baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Feature name.
    pub name: String,
    /// Numeric or categorical.
    pub kind: FeatureKind,
    /// Values seen.
    pub count: u64,
    /// Rows without a value.
    pub missing: u64,
    /// The drift tests' values.
    pub drift: DriftValues,
    /// Which tests fire under the alarm policy.
    pub firing: FiringTests,
    /// Whether the feature's alarm is raised (on any partition).
    pub alarm: bool,
    /// The profile's counts per bin (or category).
    pub counts: Vec<u64>,
    /// The baseline's counts per bin (or category).
    pub baseline_counts: Vec<u64>,
    /// Numeric features: bin edges, moments, quantiles.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericStats>,
    /// Categorical features: the categories and the unseen values.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<CategoricalStats>,
}

/// The drift tests of one feature (finite numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftValues {
    /// Kolmogorov–Smirnov statistic on the binned CDFs.
    pub ks: f64,
    /// Its p-value.
    pub ks_p: f64,
    /// Population Stability Index.
    pub psi: f64,
    /// Chi-squared homogeneity p-value.
    pub chi2_p: f64,
    /// Jensen–Shannon distance (base 2).
    pub js: f64,
    /// Wasserstein-1 over the interior edges.
    pub wasserstein: f64,
    /// Variance ratio window / baseline.
    pub var_ratio: f64,
    /// Its F-test p-value.
    pub var_p: f64,
}

/// Which tests make a feature fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiringTests {
    /// KS significant and large.
    pub ks: bool,
    /// Chi-squared significant and PSI large.
    pub psi: bool,
    /// Variance ratio significant and outside the band.
    pub variance: bool,
}

/// A numeric feature's distribution in a profile (`None` where the profile has no value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    /// The baseline's bin edges.
    pub edges: Vec<f64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Standard deviation.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Median (DDSketch estimate).
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// A categorical feature's categories and what the baseline never saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoricalStats {
    /// The baseline's categories (bins in this order).
    pub categories: Vec<String>,
    /// Most frequent values the baseline never saw, with estimated counts (current view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_top: Option<Vec<(String, u64)>>,
}

/// The source table's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcesReport {
    /// Sources tracked now.
    pub tracked: u64,
    /// Sources evicted (least recently seen) to keep the table bounded.
    pub evicted: u64,
    /// The busiest sources.
    pub top_by_volume: Vec<SourceRow>,
    /// The sources whose records are quarantined most often (with enough records).
    pub top_by_quarantine_rate: Vec<SourceRow>,
}

/// One source's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRow {
    /// Source name.
    pub source: String,
    /// Records seen.
    pub records: u64,
    /// Records rejected by limits, decoding or the schema.
    pub rejected: u64,
    /// Records quarantined for any reason.
    pub quarantined: u64,
    /// rejected / records.
    pub reject_rate: f64,
    /// quarantined / records.
    pub quarantine_rate: f64,
}

impl StatsReport {
    /// A stats report as a table, one row per topic and feature (`sliding`: the merge of recent
    /// windows, else the last closed ones).
    pub fn table(&self, sliding: bool) -> String {
        let v = self;
        use std::fmt::Write;
        let num = |x: Option<f64>, prec: usize| x.map_or("-".to_owned(), |f| format!("{f:.prec$}"));
        let mut out = String::new();
        let _ = writeln!(out, "scope {} · group {} · instance {}", v.scope, v.group, v.instance);
        let view = if sliding { "sliding" } else { "current" };
        for t in &v.topics {
            let w = if sliding { &t.sliding } else { &t.current };
            let _ = writeln!(
                out,
                "\n{} ({}) · {view} view: {} rows over {} partitions · baseline {} rows, window {}",
                t.topic,
                t.schema_id,
                w.records,
                t.partitions.len(),
                t.baseline_rows,
                t.window,
            );
            let _ = writeln!(
                out,
                "{:<16} {:>9} {:>7} {:>11} {:>11} {:>11} {:>6} {:>6} {:>6} {:>8} {:>7}  alarm",
                "feature", "count", "missing", "mean", "std", "p50", "ks", "psi", "js", "var_ratio", "firing"
            );
            for f in &w.features {
                let (d, fi, n) = (&f.drift, &f.firing, f.numeric.as_ref());
                let firing: String = [("k", fi.ks), ("p", fi.psi), ("v", fi.variance)]
                    .iter()
                    .map(|(c, on)| if *on { *c } else { "." })
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<16} {:>9} {:>7} {:>11} {:>11} {:>11} {:>6} {:>6} {:>6} {:>8} {:>7}  {}",
                    f.name,
                    f.count,
                    f.missing,
                    num(n.and_then(|n| n.mean), 3),
                    num(n.and_then(|n| n.std), 3),
                    num(n.and_then(|n| n.p50), 3),
                    num(Some(d.ks), 3),
                    num(Some(d.psi), 3),
                    num(Some(d.js), 3),
                    num(Some(d.var_ratio), 2),
                    firing,
                    if f.alarm { "RAISED" } else { "-" },
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numeric_and_categorical_features_round_trip_through_json() {
        let numeric = FeatureStats {
            name: "f1".into(),
            count: 3,
            numeric: Some(NumericStats {
                edges: vec![0.0, 1.0],
                mean: Some(0.5),
                ..NumericStats::default()
            }),
            ..FeatureStats::default()
        };
        let categorical = FeatureStats {
            name: "c".into(),
            kind: FeatureKind::Categorical,
            categorical: Some(CategoricalStats {
                categories: vec!["a".into()],
                unseen_top: Some(vec![("z".into(), 4)]),
            }),
            ..FeatureStats::default()
        };
        let report = StatsReport {
            scope: "local".into(),
            topics: vec![TopicStats {
                topic: "t".into(),
                current: ProfileStats {
                    records: 3,
                    features: vec![numeric, categorical],
                },
                ..TopicStats::default()
            }],
            ..StatsReport::default()
        };
        let v = serde_json::to_value(&report).unwrap();
        let f = &v["topics"][0]["current"]["features"];
        assert_eq!(f[0]["kind"], "numeric");
        assert_eq!(f[0]["mean"], 0.5);
        assert!(
            f[0]["std"].is_null() && f[0].get("std").is_some(),
            "absent moments are null"
        );
        assert!(f[0].get("categories").is_none());
        assert_eq!(f[1]["kind"], "categorical");
        assert_eq!(f[1]["unseen_top"][0][0], "z");
        assert!(f[1].get("edges").is_none() && f[1].get("mean").is_none());
        let back: StatsReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }
}
