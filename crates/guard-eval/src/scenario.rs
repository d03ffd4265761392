//! The attacked streams of `tools evaluate`. The stream is the part of the data set the models never saw: the rows outside the trusted
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

use crate::EvalError;
use guard_score::{Model, ProviderChoice, RoleScores, SessionSettings};
use serde_json::{json, Value};
use std::path::Path;

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

/// One record of an attacked stream and whether the attack made it.
pub(crate) struct Item {
    pub(crate) payload: Vec<u8>,
    pub(crate) poison: bool,
}

fn rows(root: &Path, domain: &str) -> Result<Vec<Value>, EvalError> {
    let path = root.join(format!(".data/{domain}.jsonl"));
    let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Io {
        path: path.clone(),
        source: std::io::Error::new(source.kind(), format!("{source} (run scripts/setup.sh)")),
    })?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| EvalError::Json {
                what: format!("{} line {}", path.display(), i + 1),
                source,
            })
        })
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

pub(crate) fn build(root: &Path, scenario: &str, fgsm_limit: usize) -> Result<Vec<Item>, EvalError> {
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
                        payload: plain(&json!({"source": "injector", "features": f, "label": 0})),
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
            let eps: f64 = s_name
                .trim_start_matches("mnist-fgsm-")
                .parse()
                .map_err(|_| EvalError::Input(format!("{s_name}: the FGSM epsilon is not a number")))?;
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
        other => {
            return Err(EvalError::Input(format!(
                "unknown scenario {other:?}; one of {SCENARIOS:?}"
            )))
        }
    }
    Ok(out)
}

/// One FGSM step: x + ε·255·sign(∇x CE(label)), the gradient by forward differences of one
/// grey level per pixel (the classifier is piecewise linear in its input).
fn fgsm(model: &mut Model, px: &[f64], label: usize, eps: f64) -> Result<Vec<f64>, EvalError> {
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
        return Err(EvalError::Input("the label model returned no probabilities".into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_matches_the_python_split() {
        // Values printed by scripts/train_models.py's bucket(i, 7) for i = 0..10.
        let want = [8, 8, 6, 3, 7, 8, 9, 6, 9, 9];
        let got: Vec<u64> = (0..10).map(|i| bucket(i, SPLIT_SEED)).collect();
        assert_eq!(got, want);
    }
}
