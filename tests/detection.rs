//! Detection quality floors on real data (`ingest-guard tools evaluate`, in process through the
//! judge and the committed models). The floors sit a little below what the guard reaches on the
//! fixed split and seed (figures in BENCHMARKS.md), so a regression fails CI. FGSM and the
//! blended trigger, whose targets are not reached yet, are reported there, not asserted here.

use crate::support::*;
use std::process::Command;

fn evaluate(scenarios: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(guard_bin());
    cmd.args(["tools", "evaluate", "--root"]).arg(repo());
    for s in scenarios {
        cmd.args(["--scenario", s]);
    }
    cmd.env(
        "ORT_DYLIB_PATH",
        repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"),
    );
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn detection_meets_its_floors_on_real_data() {
    let r = evaluate(&[
        "shuttle",
        "shuttle-inject",
        "mnist-flip",
        "mnist-badnets",
        "mnist-noise",
    ]);
    for v in &r {
        eprintln!("{v}");
    }
    let (shuttle, inject, flip, badnets, noise) = (&r[0], &r[1], &r[2], &r[3], &r[4]);
    // a. Shuttle ground-truth anomalies: AUROC (target ≥ 0.99).
    assert!(f(shuttle, "auroc_anomaly") >= 0.995, "{shuttle}");
    // b. 5 % label flips: precision at recall 0.86 (target ≥ 0.6; cleanlab 0.44).
    assert!(f(flip, "precision_at_recall_0.86") >= 0.7, "{flip}");
    // c. BadNets 10 %: precision and recall at the calibrated thresholds (target 0.9 / 0.95).
    assert!(
        f(badnets, "precision") >= 0.92 && f(badnets, "recall") >= 0.98,
        "{badnets}"
    );
    // d. Injection 5 %: recall at ≤ 1 % false positives (target ≥ 0.99), and at the
    //    calibrated thresholds.
    for v in [inject, noise] {
        assert!(f(v, "recall_at_fpr_0.01") >= 0.99, "{v}");
        assert!(f(v, "recall") >= 0.99 && f(v, "false_positive_rate") <= 0.015, "{v}");
    }
    // Clean records keep passing: the calibrated false-positive budget holds on the stream.
    for v in [flip, badnets, noise] {
        assert!(f(v, "false_positive_rate") <= 0.015, "{v}");
    }
}
