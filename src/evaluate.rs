//! `ingest-guard tools evaluate`: detection quality on real data, in process through the same
//! judge and scoring code the workers run (limits, decode, schema, gather, models, policy).
//!
//! The stream is the part of the data set the models never saw: the rows outside the trusted
//! split of `scripts/train_models.py` (same `bucket` function, same seed). Attacks are applied
//! to it deterministically:
//! * `shuttle`: the ODDS Shuttle rows with their ground-truth anomalies;
//! * `mnist-flip`: 5 % of labels flipped to another digit;
//! * `mnist-badnets`: 10 % of the images (true class ≠ 0) get a white 3×3 square in the
//!   bottom-right corner and the label 0;
//! * `mnist-blend`: same selection, a fixed random pattern blended at 10 % over the whole
//!   image, label 0;
//! * `shuttle-inject`: 5 % extra rows, each feature uniform between the trusted minimum and
//!   maximum (schema-valid);
//! * `mnist-noise`: 5 % extra images of uniform random pixels with random labels;
//! * `mnist-fgsm`: 10 % of the images replaced by FGSM adversarial examples (ε·255 per pixel,
//!   the sign of the gradient of the label model's cross-entropy, estimated by finite
//!   differences through ONNX Runtime: a white-box attack on the guard's own classifier),
//!   labels kept.

use anyhow::Context;
use guard_config::{Config, ExecutionProvider, Route};
use guard_core::Record;
use guard_score::{Model, ProviderChoice, RoleScores, SessionSettings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Seed of the committed models' split (scripts/train_models.py `--seed`).
pub const SPLIT_SEED: u64 = 7;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Row `i`'s bucket 0..9 (the same function as `bucket` in scripts/train_models.py).
pub fn bucket(i: u64, seed: u64) -> u64 {
    splitmix64(seed.wrapping_mul(1_000_003).wrapping_add(i)) % 10
}

/// A second, independent draw for choosing attacked rows.
fn draw(i: u64, salt: u64) -> u64 {
    splitmix64(i ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Scenarios.
pub const SCENARIOS: &[&str] = &[
    "shuttle",
    "shuttle-inject",
    "mnist-flip",
    "mnist-badnets",
    "mnist-blend",
    "mnist-noise",
    "mnist-fgsm-0.1",
    "mnist-fgsm-0.2",
];

struct Item {
    payload: Vec<u8>,
    poison: bool,
}

fn rows(root: &Path, domain: &str) -> anyhow::Result<Vec<Value>> {
    let path = root.join(format!(".data/{domain}.jsonl"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: run scripts/setup.sh", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}", path.display())))
        .collect()
}

/// The stream rows (outside the trusted split), with their data-set index.
fn stream(all: &[Value], domain: &str) -> Vec<(u64, Value)> {
    all.iter()
        .enumerate()
        .filter(|(i, v)| {
            let ok = domain != "shuttle" || v["label"] == 0;
            !(ok && bucket(*i as u64, SPLIT_SEED) < 5)
        })
        .map(|(i, v)| (i as u64, v.clone()))
        .collect()
}

fn trusted_range(all: &[Value]) -> Vec<(f64, f64)> {
    let mut r = vec![(f64::INFINITY, f64::NEG_INFINITY); 9];
    for (i, v) in all.iter().enumerate() {
        if v["label"] == 0 && bucket(i as u64, SPLIT_SEED) < 5 {
            for (k, x) in v["features"].as_array().into_iter().flatten().enumerate().take(9) {
                let x = x.as_f64().unwrap_or(0.0);
                r[k] = (r[k].0.min(x), r[k].1.max(x));
            }
        }
    }
    r
}

fn pixels(v: &Value) -> Vec<f64> {
    v["pixels"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

fn with_pixels(v: &Value, px: &[f64], label: i64) -> Vec<u8> {
    let mut o = v.clone();
    o["pixels"] = json!(px
        .iter()
        .map(|p| p.round().clamp(0.0, 255.0) as i64)
        .collect::<Vec<_>>());
    o["label"] = json!(label);
    serde_json::to_vec(&o).unwrap_or_default()
}

fn build(root: &Path, scenario: &str, fgsm_limit: usize) -> anyhow::Result<Vec<Item>> {
    let domain = if scenario.starts_with("shuttle") {
        "shuttle"
    } else {
        "mnist"
    };
    let all = rows(root, domain)?;
    let s = stream(&all, domain);
    let plain = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let mut out = Vec::new();
    match scenario {
        "shuttle" => {
            for (_, v) in &s {
                out.push(Item {
                    payload: plain(v),
                    poison: v["label"] == 1,
                });
            }
        }
        "shuttle-inject" => {
            // Normal stream rows only: the data set's own anomalies are scenario `shuttle`.
            let range = trusted_range(&all);
            for (i, v) in s.iter().filter(|(_, v)| v["label"] == 0) {
                out.push(Item {
                    payload: plain(v),
                    poison: false,
                });
                if draw(*i, 1).is_multiple_of(20) {
                    let f: Vec<i64> = range
                        .iter()
                        .enumerate()
                        .map(|(k, (lo, hi))| {
                            let u = (draw(*i, 100 + k as u64) >> 11) as f64 / (1u64 << 53) as f64;
                            (lo + u * (hi - lo)).round() as i64
                        })
                        .collect();
                    out.push(Item {
                        payload: serde_json::to_vec(&json!({"source": "injector", "features": f, "label": 0}))?,
                        poison: true,
                    });
                }
            }
        }
        "mnist-flip" => {
            for (i, v) in &s {
                let label = v["label"].as_i64().unwrap_or(0);
                if draw(*i, 2).is_multiple_of(20) {
                    let flipped = (label + 1 + (draw(*i, 3) % 9) as i64) % 10;
                    out.push(Item {
                        payload: with_pixels(v, &pixels(v), flipped),
                        poison: true,
                    });
                } else {
                    out.push(Item {
                        payload: plain(v),
                        poison: false,
                    });
                }
            }
        }
        "mnist-badnets" | "mnist-blend" => {
            let pattern: Vec<f64> = (0..784).map(|k| (draw(k, 77) % 256) as f64).collect();
            for (i, v) in &s {
                let label = v["label"].as_i64().unwrap_or(0);
                if label != 0 && draw(*i, 4).is_multiple_of(10) {
                    let mut px = pixels(v);
                    if scenario == "mnist-badnets" {
                        for r in 24..27 {
                            for c in 24..27 {
                                px[r * 28 + c] = 255.0;
                            }
                        }
                    } else {
                        for (p, q) in px.iter_mut().zip(&pattern) {
                            *p = 0.9 * *p + 0.1 * q;
                        }
                    }
                    out.push(Item {
                        payload: with_pixels(v, &px, 0),
                        poison: true,
                    });
                } else {
                    out.push(Item {
                        payload: plain(v),
                        poison: false,
                    });
                }
            }
        }
        "mnist-noise" => {
            for (i, v) in &s {
                out.push(Item {
                    payload: plain(v),
                    poison: false,
                });
                if draw(*i, 5).is_multiple_of(20) {
                    let px: Vec<f64> = (0..784).map(|k| (draw(*i, 1000 + k) % 256) as f64).collect();
                    out.push(Item {
                        payload: with_pixels(v, &px, (draw(*i, 6) % 10) as i64),
                        poison: true,
                    });
                }
            }
        }
        s_name if s_name.starts_with("mnist-fgsm-") => {
            let eps: f64 = s_name.trim_start_matches("mnist-fgsm-").parse()?;
            let mut model = Model::load(
                &root.join("models/mnist/label.onnx"),
                &SessionSettings {
                    provider: ProviderChoice::Cpu,
                    intra_threads: 1,
                    tf32: false,
                },
            )?;
            let mut made = 0;
            for (i, v) in &s {
                let label = v["label"].as_i64().unwrap_or(0);
                if made < fgsm_limit && draw(*i, 8).is_multiple_of(10) {
                    let px = fgsm(&mut model, &pixels(v), label as usize, eps)?;
                    out.push(Item {
                        payload: with_pixels(v, &px, label),
                        poison: true,
                    });
                    made += 1;
                } else {
                    out.push(Item {
                        payload: plain(v),
                        poison: false,
                    });
                }
            }
        }
        other => anyhow::bail!("unknown scenario {other:?}; one of {SCENARIOS:?}"),
    }
    Ok(out)
}

/// One FGSM step: x + ε·255·sign(∇x CE(label)), the gradient by forward differences of one
/// grey level per pixel (the classifier is piecewise linear in its input).
fn fgsm(model: &mut Model, px: &[f64], label: usize, eps: f64) -> anyhow::Result<Vec<f64>> {
    let n = px.len();
    let mut batch: Vec<f32> = Vec::with_capacity((n + 1) * n);
    let base: Vec<f32> = px.iter().map(|p| *p as f32).collect();
    batch.extend_from_slice(&base);
    for j in 0..n {
        let mut row = base.clone();
        row[j] += 1.0;
        batch.extend_from_slice(&row);
    }
    let RoleScores::Label { probabilities } = model.run(&batch)? else {
        anyhow::bail!("the label model returned no probabilities");
    };
    let c = probabilities.len() / (n + 1);
    let loss = |r: usize| -f64::from(probabilities[r * c + label].max(1e-30)).ln();
    let l0 = loss(0);
    Ok((0..n)
        .map(|j| {
            let g = loss(j + 1) - l0;
            (px[j] + eps * 255.0 * g.signum() * f64::from(u8::from(g != 0.0))).clamp(0.0, 255.0)
        })
        .collect())
}

/// Area under the ROC curve (Mann–Whitney, ties counted half).
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (np, nn) = (
        v.iter().filter(|x| x.1).count() as f64,
        v.iter().filter(|x| !x.1).count() as f64,
    );
    if np == 0.0 || nn == 0.0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += v[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j + 1;
    }
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// The operating points of `scores`, from the highest threshold down: cumulative (true
/// positives, false positives) after taking every record tied at each distinct score.
fn operating_points(scores: &[f64], positive: &[bool]) -> Vec<(usize, usize)> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    for (k, (score, pos)) in v.iter().enumerate() {
        if *pos {
            tp += 1;
        } else {
            fp += 1;
        }
        if v.get(k + 1).is_none_or(|next| next.0 != *score) {
            out.push((tp, fp));
        }
    }
    out
}

/// Recall at the lowest threshold on `scores` whose false-positive rate stays at most `f`.
pub fn recall_at_fpr(scores: &[f64], positive: &[bool], f: f64) -> Option<f64> {
    let np = positive.iter().filter(|p| **p).count();
    let nn = positive.len() - np;
    if np == 0 || nn == 0 {
        return None;
    }
    let best = operating_points(scores, positive)
        .into_iter()
        .take_while(|(_, fp)| *fp as f64 <= f * nn as f64)
        .last()
        .map_or(0, |(tp, _)| tp);
    Some(best as f64 / np as f64)
}

/// Precision at the highest threshold on `scores` that reaches recall `r`.
pub fn precision_at_recall(scores: &[f64], positive: &[bool], r: f64) -> Option<f64> {
    let np = positive.iter().filter(|p| **p).count();
    if np == 0 {
        return None;
    }
    operating_points(scores, positive)
        .into_iter()
        .find(|(tp, _)| *tp as f64 >= r * np as f64)
        .map(|(tp, fp)| tp as f64 / (tp + fp) as f64)
}

/// Run one scenario; returns the result line.
pub fn evaluate(root: &Path, scenario: &str, fgsm_limit: usize) -> anyhow::Result<Value> {
    let domain = if scenario.starts_with("shuttle") {
        "shuttle"
    } else {
        "mnist"
    };
    let items = build(root, scenario, fgsm_limit)?;
    let mut cfg = Config::default();
    cfg.scoring.execution_provider = ExecutionProvider::Cpu;
    cfg.scoring.library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".tools/onnxruntime/libonnxruntime.so.1.31.1")));
    let models = root.join("models").join(domain);
    cfg.routes.push(Route {
        topic: "eval".into(),
        schema: root.join(format!("schemas/{domain}.schema.json")),
        anomaly_model: Some(models.join("anomaly.onnx")),
        label_model: (domain == "mnist").then(|| models.join("label.onnx")),
        ..Route::default()
    });
    guard_score::init(&cfg)?;
    let judge = std::sync::Arc::new(crate::build::build_judge(&cfg)?);
    let (mut scoring, _) = guard_score::Scoring::load(&cfg, &judge.sections())?;
    let route = scoring.route("eval").context("models loaded")?;
    let (a_thr, l_thr) = (route.anomaly_threshold(), route.label_threshold());
    // The running guard's batch judge (checks, typed rows, models, thresholds), without the
    // breaker: that is a policy over the stream, not over one record.
    let hub = guard_drift::DriftHub::new(
        std::collections::HashMap::new(),
        &cfg.drift,
        "evaluate",
        "evaluate",
        guard_drift::HubOutputs { events: None },
    );
    let mut stages = guard_pipeline::BatchJudge {
        judge,
        drift: guard_drift::DriftWindows::new(std::sync::Arc::new(hub)),
        scoring: Some(scoring),
        keep_scores: true,
    };
    let tp = guard_core::TopicPartition {
        topic: "eval".into(),
        partition: 0,
    };
    let (mut a_scores, mut l_scores, mut combined, mut flagged) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for chunk in items.chunks(1024) {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, it)| Record::whole(i as i64, None, None, Vec::new(), Some(it.payload.clone())))
            .collect();
        let judged = stages.judge(&tp, &records, false);
        for (i, j) in judged.judgements.iter().enumerate() {
            let d = judged.decisions.get(&i);
            // Not scored and not passed: the checks held it back.
            let rejected = d.is_none() && !j.verdict.is_pass();
            let (a, l) = d.map_or((None, None), |d| (d.anomaly_score, d.label_score));
            let ratio = |s: Option<f32>, t: Option<f64>| match (s, t) {
                (Some(s), Some(t)) if t > 0.0 => f64::from(s) / t,
                _ => 0.0,
            };
            a_scores.push(a.map_or(f64::INFINITY, f64::from));
            l_scores.push(l.map_or(f64::INFINITY, f64::from));
            combined.push(if rejected {
                f64::INFINITY
            } else {
                ratio(a, a_thr).max(ratio(l, l_thr))
            });
            flagged.push(!j.verdict.is_pass());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let poison: Vec<bool> = items.iter().map(|i| i.poison).collect();
    let tp = flagged.iter().zip(&poison).filter(|(f, p)| **f && **p).count() as f64;
    let fp = flagged.iter().zip(&poison).filter(|(f, p)| **f && !**p).count() as f64;
    let np = poison.iter().filter(|p| **p).count() as f64;
    let nn = poison.len() as f64 - np;
    let round = |x: Option<f64>| x.map(|x| (x * 10_000.0).round() / 10_000.0);
    Ok(json!({
        "scenario": scenario,
        "records": items.len(),
        "poison": np,
        "auroc_anomaly": round(auroc(&a_scores, &poison)),
        "auroc_label": if domain == "mnist" { round(auroc(&l_scores, &poison)) } else { None },
        "auroc_combined": round(auroc(&combined, &poison)),
        "precision": round((tp + fp > 0.0).then(|| tp / (tp + fp))),
        "recall": round((np > 0.0).then(|| tp / np)),
        "false_positive_rate": round((nn > 0.0).then(|| fp / nn)),
        "recall_at_fpr_0.01": round(recall_at_fpr(&combined, &poison, 0.01)),
        "precision_at_recall_0.86": round(precision_at_recall(&combined, &poison, 0.86)),
        "precision_at_recall_0.95": round(precision_at_recall(&combined, &poison, 0.95)),
        "anomaly_threshold": a_thr,
        "label_threshold": l_thr,
        "seconds": (secs * 1000.0).round() / 1000.0,
    }))
}

/// `tools evaluate`.
pub fn run(root: &Path, scenarios: &[String], fgsm_limit: usize) -> anyhow::Result<ExitCode> {
    let list: Vec<String> = if scenarios.is_empty() {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        scenarios.to_vec()
    };
    for s in &list {
        println!("{}", evaluate(root, s, fgsm_limit)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_matches_hand_counts() {
        assert_eq!(auroc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // 3 positive/negative pairs of 4 ordered right.
        assert_eq!(auroc(&[0.1, 0.3, 0.2, 0.4], &[false, true, true, false]), Some(0.5));
    }

    #[test]
    fn bucket_matches_the_python_split() {
        // Values printed by scripts/train_models.py's bucket(i, 7) for i = 0..10.
        let want = [8, 8, 6, 3, 7, 8, 9, 6, 9, 9];
        let got: Vec<u64> = (0..10).map(|i| bucket(i, SPLIT_SEED)).collect();
        assert_eq!(got, want);
    }
}
