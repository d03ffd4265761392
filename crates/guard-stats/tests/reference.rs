//! Drift tests against SciPy reference values (fixtures made once by
//! `scripts/drift_fixtures.py`; SciPy version recorded in the file).

use guard_stats::{chi2_homogeneity, js_distance, ks_2samp, psi, variance_ratio, wasserstein1, Moments};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn close(name: &str, what: &str, got: f64, want: f64) {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(err <= TOL, "{name} {what}: got {got}, scipy {want} (rel err {err:e})");
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn drift_tests_match_scipy() {
    let text = include_str!("fixtures/drift.json");
    let doc: Value = serde_json::from_str(text).unwrap_or_default();
    let cases = doc["cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 10, "fixtures missing");
    for c in &cases {
        let name = c["name"].as_str().unwrap_or("?");
        let f = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
        match c["kind"].as_str() {
            Some("samples") => {
                let (a, b) = (floats(&c["a"]), floats(&c["b"]));
                let ks = ks_2samp(&a, &b).unwrap_or_else(|e| panic!("{name}: {e}"));
                close(name, "ks statistic", ks.statistic, f("ks_statistic"));
                close(name, "ks p (kolmogorov)", ks.pvalue, f("ks_pvalue_kolmogorov"));
                close(
                    name,
                    "wasserstein",
                    wasserstein1(&a, &b).unwrap_or(f64::NAN),
                    f("wasserstein"),
                );
                let (mut ma, mut mb) = (Moments::new(), Moments::new());
                ma.extend(&a);
                mb.extend(&b);
                let vr = variance_ratio(&ma, &mb).unwrap_or_else(|e| panic!("{name}: {e}"));
                close(name, "variance ratio", vr.ratio, f("variance_ratio"));
                close(name, "variance ratio p", vr.pvalue, f("variance_ratio_pvalue"));
            }
            Some("counts") => {
                let (e, o) = (floats(&c["expected"]), floats(&c["observed"]));
                let chi = chi2_homogeneity(&e, &o).unwrap_or_else(|err| panic!("{name}: {err}"));
                close(name, "chi2", chi.statistic, f("chi2"));
                close(name, "chi2 p", chi.pvalue, f("chi2_pvalue"));
                assert_eq!(chi.dof as i64, c["chi2_dof"].as_i64().unwrap_or(-1), "{name} dof");
                close(name, "psi", psi(&e, &o).unwrap_or(f64::NAN), f("psi"));
                close(
                    name,
                    "js distance",
                    js_distance(&e, &o).unwrap_or(f64::NAN),
                    f("js_distance"),
                );
            }
            Some("bh") => {
                let adj = guard_stats::benjamini_hochberg(&floats(&c["p"]));
                for (g, w) in adj.iter().zip(floats(&c["adjusted"])) {
                    close(name, "bh adjusted p", *g, w);
                }
            }
            other => panic!("unknown fixture kind {other:?}"),
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    assert!(ks_2samp(&[], &[1.0]).is_err());
    assert!(ks_2samp(&[f64::NAN], &[1.0]).is_err());
    assert!(psi(&[1.0, 2.0], &[1.0]).is_err());
    assert!(js_distance(&[0.0, 0.0], &[1.0, 1.0]).is_err());
    assert!(chi2_homogeneity(&[5.0], &[6.0]).is_err());
    assert!(wasserstein1(&[], &[]).is_err());
    assert!(variance_ratio(&Moments::new(), &Moments::new()).is_err());
}

#[test]
fn extreme_variance_ratio_is_significant() {
    let (mut w, mut b) = (Moments::new(), Moments::new());
    for i in 0..1000 {
        w.push(if i % 10 == 0 {
            f64::from(i) * 200.0 - 100_000.0
        } else {
            0.1 * f64::from(i % 7)
        });
    }
    for i in 0..20_000 {
        b.push(0.1 * f64::from(i % 7));
    }
    let vr = variance_ratio(&w, &b).unwrap_or_else(|e| panic!("{e}"));
    assert!(vr.ratio > 1e3, "{vr:?}");
    assert!(vr.pvalue < 1e-10, "a huge ratio must be significant: {vr:?}");
}
