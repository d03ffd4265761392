//! Detection quality floors on real data, through the commands a user runs for their own
//! domain: `ingest-guard split` (the committed models' split: half held out, seed 7) and
//! `ingest-guard evaluate` (generic attacks on the held-out rows, judged in process by the
//! running guard's batch judge with the committed models). The floors sit a little below what
//! the guard reaches on the fixed split and seed (figures in BENCHMARKS.md), so a regression
//! fails CI.

use crate::support::*;

fn guard(args: &[&str]) -> String {
    let out = guard_output(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Held-out rows of `domain` (the committed models' split).
fn heldout(dir: &std::path::Path, domain: &str) -> String {
    let (t, h) = (dir.join(format!("{domain}.t")), dir.join(format!("{domain}.h")));
    let mut args = vec!["split", "--input"];
    let data = format!(".data/{domain}.jsonl");
    args.push(&data);
    args.extend(["--holdout", "0.5", "--seed", "7"]);
    if domain == "shuttle" {
        args.extend(["--trusted-when", "/label=0"]);
    }
    let (ts, hs) = (t.display().to_string(), h.display().to_string());
    args.extend(["--trusted", &ts, "--heldout", &hs]);
    guard(&args);
    hs
}

fn evaluate(domain: &str, input: &str, attacks: &[&str], truth: Option<&str>) -> Vec<serde_json::Value> {
    evaluate_seeded(domain, input, attacks, truth, 0)
}

fn evaluate_seeded(
    domain: &str,
    input: &str,
    attacks: &[&str],
    truth: Option<&str>,
    seed: u64,
) -> Vec<serde_json::Value> {
    let schema = format!("schemas/{domain}.schema.json");
    let models = format!("models/{domain}");
    let seed = seed.to_string();
    let mut args = vec![
        "evaluate",
        "--schema",
        &schema,
        "--models",
        &models,
        "--input",
        input,
        "--json",
        "--attack-seed",
        &seed,
    ];
    for a in attacks {
        args.extend(["--attack", a]);
    }
    if let Some(t) = truth {
        args.extend(["--truth", t]);
    }
    guard(&args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn detection_meets_its_floors_on_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let shuttle = heldout(dir.path(), "shuttle");
    let mnist = heldout(dir.path(), "mnist");
    let s = evaluate("shuttle", &shuttle, &["none", "inject:0.05"], Some("/label=1"));
    let m = evaluate(
        "mnist",
        &mnist,
        &[
            "flip:0.05",
            "trigger:3:0:0.1",
            "inject:0.05",
            "fgsm:0.1",
            "fgsm:0.2",
            "pgd:0.1:5",
            "blend:0.1:0:0.1",
            "blend:0.05:0:0.1",
        ],
        None,
    );
    for v in s.iter().chain(&m) {
        eprintln!("{v}");
    }
    let (shuttle, inject) = (&s[0], &s[1]);
    let (flip, badnets, noise, fgsm1, fgsm2, pgd) = (&m[0], &m[1], &m[2], &m[3], &m[4], &m[5]);
    let (blend, faint) = (&m[6], &m[7]);
    assert_eq!(
        f(shuttle, "poison"),
        3511.0,
        "Shuttle's own anomalies are the poison of `none`"
    );
    // a. Shuttle ground-truth anomalies: AUROC (target ≥ 0.99).
    assert!(f(shuttle, "auroc_anomaly") >= 0.995, "{shuttle}");
    // b. 5 % label flips: precision at recall 0.86 (issue 14: ≥ 0.85; cleanlab 0.44). The
    //    label model averages the MLP with a small convolutional network (the default for
    //    image rows): 0.915 measured on this draw, the label role alone 0.975 (the MLP alone:
    //    0.861 and 0.915; BENCHMARKS.md, "A convolutional label member by default").
    assert!(f(flip, "precision_at_recall_0.86") >= 0.89, "{flip}");
    assert!(f(flip, "precision_at_recall_0.86_label") >= 0.95, "{flip}");
    // c. BadNets 10 %: precision and recall at the calibrated thresholds (issue 14: 0.95 / 0.95).
    assert!(
        f(badnets, "precision") >= 0.95 && f(badnets, "recall") >= 0.98,
        "{badnets}"
    );
    // d. Injection 5 %: recall at ≤ 1 % false positives (target ≥ 0.99), and at the
    //    calibrated thresholds.
    for v in [inject, noise] {
        assert!(f(v, "recall_at_fpr_0.01") >= 0.99, "{v}");
        assert!(f(v, "recall") >= 0.99 && f(v, "false_positive_rate") <= 0.015, "{v}");
    }
    // e. Adversarial examples (white-box on the guard's label model): FGSM ε 0.1 ≥ 0.80,
    //    ε 0.2 ≥ 0.95 (issue 14), PGD. Measured 1.000, 1.000 and 1.000 (0.992, 1.000 and
    //    0.988 against the MLP alone): the anomaly role's
    //    background statistic (mean absolute error where the reconstruction is background)
    //    sees the perturbation whether or not it fools the classifier; with the squared error
    //    it was 0.816, 1.000 and 0.844.
    assert!(f(fgsm1, "recall") >= 0.95, "{fgsm1}");
    assert!(f(fgsm2, "recall") >= 0.98, "{fgsm2}");
    assert!(f(pgd, "recall") >= 0.95, "{pgd}");
    assert!(f(fgsm1, "auroc_anomaly") >= 0.99, "{fgsm1}");
    //    Feature squeezing, the adversarial role, ranks them too on its own (0.989).
    assert!(f(fgsm1, "auroc_adversarial") >= 0.97, "{fgsm1}");
    //    Of the crafted rows, those that fool the attacked classifier (ε 0.1: 0.220, ε 0.2:
    //    0.712 measured; 0.628 and over 0.9 against the MLP alone, which the convolutional
    //    member makes harder to fool) are all caught as well. Only the gradient attacks
    //    report it.
    let success = f(fgsm1, "attack_success_rate");
    assert!(success > 0.1 && success < 0.95, "{fgsm1}");
    assert!(f(fgsm1, "recall_successful") >= 0.95, "{fgsm1}");
    assert!(
        f(fgsm2, "attack_success_rate") >= 0.6 && f(fgsm2, "recall_successful") >= 0.98,
        "{fgsm2}"
    );
    assert!(
        flip["attack_success_rate"].is_null() && flip["recall_successful"].is_null(),
        "{flip}"
    );
    // f. Blended trigger at α 0.1: the background statistic catches every record
    //    (0.962 / 1.000 measured).
    assert!(
        f(blend, "recall_per_record") >= 0.99 && f(blend, "precision") >= 0.95,
        "{blend}"
    );
    //    At α 0.05 the per-record models miss a quarter (the rows the label model believes);
    //    the window scan (hold-back, spectral clusters per class on the label model's hidden
    //    layer) brings recall up: 0.931 / 1.000 measured (0.950 / 0.996 with the MLP alone).
    assert!(f(faint, "recall_per_record") < 0.9, "{faint}");
    assert!(f(faint, "recall") >= 0.97 && f(faint, "precision") >= 0.92, "{faint}");
    assert!(f(faint, "scan_true") >= 40.0, "{faint}");
    //    The campaign mislabels, so cluster members the label model believes (clean records
    //    the split took in) stay out: 50 of 58 scan flags are poison (56 of 59 with the MLP
    //    alone, which doubts fewer clean 0s).
    assert!(f(faint, "scan_true") >= 0.8 * f(faint, "scan_flagged"), "{faint}");
    // Clean records keep passing: the budget (1 % over all roles, with 90 % confidence)
    // holds on the stream, the scan included.
    for v in [flip, badnets, noise, fgsm1, fgsm2, pgd, blend, faint] {
        assert!(f(v, "false_positive_rate") <= 0.01, "{v}");
    }
}

/// The same attacks drawn by four other attackers (`evaluate --attack-seed 1..4`): the floors
/// on their means sit below what was measured (BENCHMARKS.md, "The same attacks drawn ten
/// times"), so a change that only holds on seed 0's draw fails here.
#[test]
fn the_floors_hold_on_average_over_other_attack_draws() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = heldout(dir.path(), "mnist");
    let attacks = [
        "flip:0.05",
        "trigger:3:0:0.1",
        "blend:0.1:0:0.1",
        "fgsm:0.1",
        "blend:0.05:0:0.1",
    ];
    let draws: Vec<Vec<serde_json::Value>> = (1..=4)
        .map(|s| evaluate_seeded("mnist", &mnist, &attacks, None, s))
        .collect();
    let mean = |a: usize, k: &str| draws.iter().map(|d| f(&d[a], k)).sum::<f64>() / draws.len() as f64;
    for d in &draws {
        eprintln!("{}", serde_json::Value::Array(d.clone()));
    }
    // The seed reaches the attacks: the draws differ.
    let flips: Vec<f64> = draws.iter().map(|d| f(&d[0], "precision_at_recall_0.86")).collect();
    assert!(flips.iter().any(|x| *x != flips[0]), "{flips:?}");
    let blend_picked: Vec<f64> = draws.iter().map(|d| f(&d[4], "scan_flagged")).collect();
    assert!(blend_picked.iter().any(|x| *x != blend_picked[0]), "{blend_picked:?}");
    // Measured means over seeds 1-4: flips 0.891 (label role alone 0.945), BadNets 0.959 /
    // 1.000, blend 0.959 / 1.000, FGSM ε 0.1 0.999, the fainter blend (α 0.05, the scan's
    // work) 0.926 / 0.991. With the MLP alone as the label model: flips 0.821 (0.867), FGSM
    // 0.992, the fainter blend 0.946 / 0.998.
    assert!(mean(0, "precision_at_recall_0.86") >= 0.87, "flips {flips:?}");
    assert!(mean(0, "precision_at_recall_0.86_label") >= 0.92, "flips, label role");
    assert!(mean(1, "precision") >= 0.95 && mean(1, "recall") >= 0.99, "BadNets");
    assert!(mean(2, "precision") >= 0.95 && mean(2, "recall") >= 0.99, "blend");
    assert!(mean(3, "recall") >= 0.99, "FGSM ε 0.1");
    assert!(
        mean(4, "precision") >= 0.915 && mean(4, "recall") >= 0.98,
        "blend α 0.05"
    );
    for d in &draws {
        for v in d {
            assert!(f(v, "false_positive_rate") <= 0.01, "{v}");
        }
    }
}

/// The backdoors against every class, not only the first: the table's blend relabels to 0,
/// the class the label model doubts least, which makes the scan's doubt rule cheap there.
/// Measured on attack seed 0 (BENCHMARKS.md, "The blended trigger against every class"):
/// BadNets 0.960–0.963 / 1.000 and the blend at α 0.1 0.958–0.963 / 1.000 on every target
/// (the anomaly role's background statistic). The fainter blend (α 0.05) is the scan's:
/// precision 0.919–0.961 (mean 0.935), recall 0.896–1.000 (mean 0.972), the stream's FPR
/// 0.40–0.89 % (BENCHMARKS.md, "Doubt bars per class, bounded" and "The escapees of a
/// campaign the per-record roles mostly catch"). With one bar shared by all classes the
/// doubt rule spent more than its half of the budget against 2, 5 and 8 (FPR 1.10–1.41 %):
/// the FPR bound below fails then. Without the excess rule the scan found nothing against
/// 4, where the per-record models catch 0.811: the recall bound fails then.
#[test]
fn backdoors_against_every_class_keep_their_floors() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = heldout(dir.path(), "mnist");
    let (mut p, mut r) = (Vec::new(), Vec::new());
    for t in 0..10 {
        let (faint, blend, trigger) = (
            format!("blend:0.05:{t}:0.1"),
            format!("blend:0.1:{t}:0.1"),
            format!("trigger:3:{t}:0.1"),
        );
        let e = evaluate("mnist", &mnist, &[&faint, &blend, &trigger], None);
        eprintln!("{} {} {}", e[0], e[1], e[2]);
        for v in [&e[1], &e[2]] {
            assert!(f(v, "precision") >= 0.95 && f(v, "recall") >= 0.99, "{v}");
            assert!(f(v, "false_positive_rate") <= 0.01, "{v}");
        }
        assert!(f(&e[0], "recall") >= 0.85, "{}", e[0]);
        assert!(f(&e[0], "false_positive_rate") <= 0.01, "{}", e[0]);
        p.push(f(&e[0], "precision"));
        r.push(f(&e[0], "recall"));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&p) >= 0.925 && mean(&r) >= 0.95,
        "blend precision {p:?}, recall {r:?}"
    );
}
