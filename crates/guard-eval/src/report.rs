//! Reports of the offline commands, for people (the commands print these; `--json` prints
//! the structures themselves).

use std::fmt::Write as _;
use std::path::Path;

/// What `train` reports, for people.
pub fn trained(out: &Path, t: &crate::train::Trained) -> String {
    let mut s = String::new();
    let r = &t.report;
    let _ = writeln!(
        s,
        "models {} for schema {}: {} training rows, {} calibration rows; the guard reads them as trained (largest output difference {:.1e})",
        out.display(),
        r["schema_id"].as_str().unwrap_or("?"),
        r["train"],
        r["calibration"],
        t.parity_max_abs_diff
    );
    let _ = writeln!(
        s,
        "  false positives on the calibration rows {:.4} (all roles together); the rate on further clean rows is at most {:.4} with confidence {}{}",
        r["calibration_fpr"].as_f64().unwrap_or(f64::NAN),
        r["fpr_bound"].as_f64().unwrap_or(f64::NAN),
        r["fpr_confidence"],
        if r["budget_met"].as_bool() == Some(false) {
            // How many calibration rows the same statistics would need.
            match (r["calibration_rows_needed"].as_u64(), r["statistics"].as_u64()) {
                (Some(n), Some(k)) => format!(
                    " (over the budget: too few calibration rows, {} need about {n}, and `train` calibrates on about a fifth of its input; each threshold is the largest calibration score)",
                    if k == 1 { "one statistic would".to_owned() } else { format!("{k} statistics would") }
                ),
                _ => " (over the budget: too few calibration rows; each threshold is the largest calibration score)".to_owned(),
            }
        } else {
            String::new()
        }
    );
    if let Some(models) = r["models"].as_object() {
        for (role, m) in models {
            let mut squeezers = m["squeezers"]
                .as_array()
                .map(|a| format!(", squeezers {}", serde_json::Value::Array(a.clone())))
                .unwrap_or_default();
            // Why the adversarial role has no autoencoder squeezer, when `auto` declined it.
            if let Some(why) = m["reformer_declined"].as_str() {
                let _ = write!(squeezers, ", no autoencoder squeezer ({why})");
            }
            // The label model's neighbour vote, when it has one.
            if let Some(k) = m["neighbours"]["k"].as_u64() {
                if k > 0 {
                    let _ = write!(
                        squeezers,
                        ", a vote of its {k} nearest of {} training rows",
                        m["neighbours"]["reference_rows"]
                    );
                } else {
                    squeezers.push_str(", no neighbour vote (it did not rank simulated flips better)");
                }
            }
            let _ = writeln!(
                s,
                "  {role}: threshold {:.6} (calibration FPR {:.4}), hidden layers {}, {} iterations{squeezers}",
                m["threshold"].as_f64().unwrap_or(f64::NAN),
                m["role_calibration_fpr"].as_f64().unwrap_or(f64::NAN),
                m["hidden"],
                m["iterations"]
            );
        }
    }
    s
}

/// `evaluate`'s table, for people.
pub fn evaluations(results: &[crate::evaluate::Evaluation]) -> String {
    let mut s = String::new();
    let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.4}"));
    let _ = writeln!(
        s,
        "{:<22} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "attack",
        "records",
        "poison",
        "auroc_a",
        "auroc_l",
        "auroc",
        "precision",
        "recall",
        "fpr",
        "r@1%fpr",
        "p@r0.86",
        "p@r0.95"
    );
    for e in results {
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>6} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9}",
            e.attack,
            e.records,
            e.poison,
            f(e.auroc_anomaly),
            f(e.auroc_label),
            f(e.auroc_combined),
            f(e.precision),
            f(e.recall),
            f(e.false_positive_rate),
            f(e.recall_at_fpr_001),
            f(e.precision_at_recall_086),
            f(e.precision_at_recall_095)
        );
    }
    if let Some(e) = results.first() {
        let _ = writeln!(
            s,
            "thresholds: anomaly {}, label {}, adversarial {} (fpr: clean rows held back at these thresholds; auroc: of the largest score over its threshold)",
            f(e.anomaly_threshold),
            f(e.label_threshold),
            f(e.adversarial_threshold)
        );
    }
    s
}

/// `drift`'s table, for people.
pub fn drift(r: &crate::drift::DriftReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} rows of {} ({} failed the schema) in {} windows of {} against the baseline of {}",
        r.rows, r.input, r.skipped, r.windows, r.window, r.schema_id
    );
    let _ = writeln!(
        s,
        "{:<24} {:<11} {:>6} {:>7} {:<16} {:>7} {:>7} {:>8} {:>9} {:>9}",
        "feature", "kind", "alarm", "firing", "tests", "max_ks", "max_psi", "var_rat", "whole_ks", "whole_psi"
    );
    for f in &r.features {
        let _ = writeln!(
            s,
            "{:<24} {:<11} {:>6} {:>7} {:<16} {:>7.3} {:>7.3} {:>8.3} {:>9.3} {:>9.3}",
            f.name,
            f.kind,
            if f.alarm { "RAISED" } else { "-" },
            f.firing_windows,
            if f.tests.is_empty() {
                "-".to_owned()
            } else {
                f.tests.join(",")
            },
            f.max_ks,
            f.max_psi,
            f.extreme_var_ratio,
            f.whole.ks,
            f.whole.psi
        );
    }
    let raised: Vec<&str> = r.features.iter().filter(|f| f.alarm).map(|f| f.name.as_str()).collect();
    if raised.is_empty() {
        let _ = writeln!(s, "no drift alarm");
    } else {
        let _ = writeln!(s, "drift alarm: {}", raised.join(", "));
    }
    s
}
