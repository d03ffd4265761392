//! Generic attacks for `ingest-guard evaluate`, by field kind of the domain schema, applied
//! deterministically to held-out rows. Ranges, levels and classes come from the held-out
//! rows themselves (the attacker stays inside what real records look like):
//!
//! * `none`: the rows as they are (with `--truth`, the rows it marks are the poison);
//! * `flip:RATE`: RATE of the rows get another observed label;
//! * `inject:RATE`: after each row, with probability RATE, an extra row whose numeric
//!   features and tensor elements are uniform inside the observed ranges, categorical
//!   features and label uniform over the observed values (other fields copied from the row);
//! * `shift:FEATURE:SIGMA`: the second half of the rows gets FEATURE moved by SIGMA standard
//!   deviations (a drift; integer features stay integers);
//! * `trigger:SIZE[:TARGET[:RATE]]`: RATE (0.1) of the rows whose label is not TARGET (default:
//!   the first class) get a SIZE×SIZE patch at the first tensor's maximum in its last corner
//!   (the last SIZE elements of a vector) and the label TARGET (BadNets);
//! * `blend:ALPHA[:TARGET[:RATE]]`: same selection, a fixed random pattern blended at ALPHA
//!   over the whole tensor, label TARGET;
//! * `noise:RATE[:SIGMA]`: RATE of the rows get uniform noise of ±SIGMA (0.5) standard
//!   deviations on every numeric feature (±SIGMA × range on tensor elements), labels kept;
//! * `fgsm:EPS[:RATE]`: RATE (0.1) of the rows moved by EPS × range per model input along the
//!   sign of the gradient of the cross-entropy of the guard's label model (the adversarial
//!   model's classifier when there is no label model), estimated by forward differences
//!   through ONNX Runtime: a white-box attack on the guard's own classifier; labels kept;
//! * `flood:RATE[:NOISE]`: after each row, with probability RATE, a near-copy of the first
//!   row, every numeric feature moved by up to NOISE (0.01) standard deviations and every
//!   tensor element by up to NOISE of its range (integers stay integers), from one extra
//!   source `flood-attack` when the schema names a source field (judged by the near-duplicate
//!   detector when the route has a baseline);
//! * `pgd:EPS[:STEPS[:RATE]]`: as `fgsm`, STEPS (5) steps of 2.5 × EPS / STEPS each, projected
//!   back into the EPS box around the row and the observed range after each step (Madry et
//!   al. 2018).

use crate::split::draw;
use crate::EvalError;
use guard_core::features::category_text;
use guard_core::{GuardSection, TensorField};
use guard_score::{Extractor, Model, RoleScores};
use serde_json::{json, Number, Value};

/// One attack, parsed from `KIND[:PARAM…]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Attack {
    /// No change.
    None,
    /// Label flips.
    Flip {
        /// Share of rows.
        rate: f64,
    },
    /// Extra uniform rows.
    Inject {
        /// Extra rows per row.
        rate: f64,
    },
    /// A feature moved in the second half.
    Shift {
        /// Numeric feature name.
        feature: String,
        /// Standard deviations.
        sigma: f64,
    },
    /// A patch trigger with a target label.
    Trigger {
        /// Patch side.
        size: usize,
        /// Target label (text as the label renders).
        target: Option<String>,
        /// Share of eligible rows.
        rate: f64,
    },
    /// A blended trigger with a target label.
    Blend {
        /// Blend weight of the pattern.
        alpha: f64,
        /// Target label.
        target: Option<String>,
        /// Share of eligible rows.
        rate: f64,
    },
    /// Noisy rows.
    Noise {
        /// Share of rows.
        rate: f64,
        /// Noise amplitude in standard deviations (tensors: ranges).
        sigma: f64,
    },
    /// FGSM against the guard's classifier.
    Fgsm {
        /// Step per input, as a share of its range.
        eps: f64,
        /// Share of rows.
        rate: f64,
    },
    /// Near-copies of one row from one extra source.
    Flood {
        /// Extra rows per row.
        rate: f64,
        /// Largest move per value, in standard deviations (tensor elements: ranges).
        noise: f64,
    },
    /// Projected gradient descent (iterated FGSM) against the guard's classifier.
    Pgd {
        /// Box radius per input, as a share of its range.
        eps: f64,
        /// Steps.
        steps: usize,
        /// Share of rows.
        rate: f64,
    },
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            Attack::None => write!(f, "none"),
            Attack::Flip { rate } => write!(f, "flip:{rate}"),
            Attack::Inject { rate } => write!(f, "inject:{rate}"),
            Attack::Shift { feature, sigma } => write!(f, "shift:{feature}:{sigma}"),
            Attack::Trigger { size, target, rate } => write!(f, "trigger:{size}{}:{rate}", t(target)),
            Attack::Blend { alpha, target, rate } => write!(f, "blend:{alpha}{}:{rate}", t(target)),
            Attack::Noise { rate, sigma } => write!(f, "noise:{rate}:{sigma}"),
            Attack::Fgsm { eps, rate } => write!(f, "fgsm:{eps}:{rate}"),
            Attack::Pgd { eps, steps, rate } => write!(f, "pgd:{eps}:{steps}:{rate}"),
            Attack::Flood { rate, noise } => write!(f, "flood:{rate}:{noise}"),
        }
    }
}

impl std::str::FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.split(':');
        let kind = it.next().unwrap_or_default();
        let params: Vec<&str> = it.collect();
        let num = |i: usize, default: Option<f64>| -> Result<f64, String> {
            match params.get(i) {
                Some(p) => p
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("{s}: parameter {} ({p:?}) is not a non-negative number", i + 1)),
                None => default.ok_or_else(|| format!("{s}: parameter {} is missing", i + 1)),
            }
        };
        let rate = |x: f64| -> Result<f64, String> {
            if x <= 1.0 {
                Ok(x)
            } else {
                Err(format!("{s}: rate {x} is above 1"))
            }
        };
        let target = |i: usize| params.get(i).filter(|t| !t.is_empty()).map(|t| (*t).to_owned());
        Ok(match kind {
            "none" => Attack::None,
            "flip" => Attack::Flip { rate: rate(num(0, None)?)? },
            "inject" => Attack::Inject { rate: rate(num(0, None)?)? },
            "shift" => Attack::Shift {
                feature: params
                    .first()
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| format!("{s}: shift:FEATURE:SIGMA"))?
                    .to_string(),
                sigma: params
                    .get(1)
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("{s}: shift:FEATURE:SIGMA, SIGMA a number"))?,
            },
            "trigger" => Attack::Trigger {
                size: num(0, None)? as usize,
                target: target(1),
                rate: rate(num(2, Some(0.1))?)?,
            },
            "blend" => Attack::Blend {
                alpha: rate(num(0, None)?)?,
                target: target(1),
                rate: rate(num(2, Some(0.1))?)?,
            },
            "noise" => Attack::Noise {
                rate: rate(num(0, None)?)?,
                sigma: num(1, Some(0.5))?,
            },
            "fgsm" => Attack::Fgsm {
                eps: num(0, None)?,
                rate: rate(num(1, Some(0.1))?)?,
            },
            "flood" => Attack::Flood {
                rate: rate(num(0, None)?)?,
                noise: num(1, Some(0.01))?,
            },
            "pgd" => Attack::Pgd {
                eps: num(0, None)?,
                steps: match num(1, Some(5.0))? {
                    x if (1.0..=100.0).contains(&x) => x as usize,
                    x => return Err(format!("{s}: {x} steps is outside 1..=100")),
                },
                rate: rate(num(2, Some(0.1))?)?,
            },
            other => {
                return Err(format!(
                    "unknown attack {other:?}: none, flip:RATE, inject:RATE, shift:FEATURE:SIGMA, trigger:SIZE[:TARGET[:RATE]], blend:ALPHA[:TARGET[:RATE]], noise:RATE[:SIGMA], fgsm:EPS[:RATE], pgd:EPS[:STEPS[:RATE]], flood:RATE[:NOISE]"
                ))
            }
        })
    }
}

impl Attack {
    /// What `evaluate` and `init` run when not told: the stream as it is and 5 % injected
    /// rows; 5 % label flips with a label model; a 3×3 trigger, a 10 % blend and FGSM at
    /// ε = 0.1 with a label model and a tensor.
    pub fn defaults(label_model: bool, tensor: bool) -> Vec<Attack> {
        let mut a = vec![Attack::None, Attack::Inject { rate: 0.05 }];
        if label_model {
            a.push(Attack::Flip { rate: 0.05 });
            if tensor {
                a.push(Attack::Trigger {
                    size: 3,
                    target: None,
                    rate: 0.1,
                });
                a.push(Attack::Blend {
                    alpha: 0.1,
                    target: None,
                    rate: 0.1,
                });
                a.push(Attack::Fgsm { eps: 0.1, rate: 0.1 });
            }
        }
        a
    }
}

/// One record of an attacked stream and whether the attack made it.
pub(crate) struct Item {
    pub(crate) payload: Vec<u8>,
    pub(crate) poison: bool,
    /// Gradient attacks: whether the attacked classifier misclassifies the row as written
    /// (a successful adversarial example); `None` for every other row.
    pub(crate) evades: Option<bool>,
}

/// What the held-out rows look like, field by field.
struct Observed {
    /// Per numeric feature: pointer, min, max, std, all integers.
    numeric: Vec<(String, String, f64, f64, f64, bool)>,
    /// Per categorical feature: pointer, observed values.
    categorical: Vec<(String, Vec<Value>)>,
    /// Per tensor: pointer, shape, min, max, all integers.
    tensors: Vec<(String, Vec<usize>, f64, f64, bool)>,
    /// Label pointer and observed classes (sorted by text).
    label: Option<(String, Vec<Value>)>,
}

fn observe(g: &GuardSection, rows: &[Value]) -> Observed {
    let numeric = g
        .numeric
        .iter()
        .map(|f| {
            let xs: Vec<&Value> = rows.iter().filter_map(|r| r.pointer(&f.pointer)).collect();
            let v: Vec<f64> = xs.iter().filter_map(|x| x.as_f64()).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let ints = xs.iter().filter(|x| !x.is_null()).all(|x| x.is_i64() || x.is_u64());
            (f.name.clone(), f.pointer.clone(), lo, hi, sd, ints)
        })
        .collect();
    let distinct = |pointer: &str| {
        let mut seen: Vec<(String, Value)> = Vec::new();
        for r in rows {
            let mut t = String::new();
            if let Some(v) = r.pointer(pointer) {
                if category_text(Some(v), &mut t) && !seen.iter().any(|(s, _)| *s == t) {
                    seen.push((t, v.clone()));
                }
            }
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        seen.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    };
    let categorical = g
        .categorical
        .iter()
        .map(|f| (f.pointer.clone(), distinct(&f.pointer)))
        .collect();
    let tensors = g
        .tensors
        .iter()
        .map(|t| {
            let (mut lo, mut hi, mut ints) = (f64::INFINITY, f64::NEG_INFINITY, true);
            for r in rows {
                for x in r.pointer(&t.pointer).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(v) = x.as_f64() {
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                    ints &= x.is_null() || x.is_i64() || x.is_u64();
                }
            }
            (t.pointer.clone(), t.shape.clone(), lo, hi, ints)
        })
        .collect();
    let label = g.label.as_ref().map(|p| (p.clone(), distinct(p)));
    Observed {
        numeric,
        categorical,
        tensors,
        label,
    }
}

fn text(v: &Value) -> String {
    let mut t = String::new();
    category_text(Some(v), &mut t);
    t
}

/// A uniform draw in [0, 1) from row `i` and `salt`.
fn unit(i: u64, salt: u64) -> f64 {
    (draw(i, salt) >> 11) as f64 / (1u64 << 53) as f64
}

fn number(x: f64, integer: bool) -> Value {
    if integer {
        json!(x.round() as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn set(row: &mut Value, pointer: &str, v: Value) {
    if let Some(slot) = row.pointer_mut(pointer) {
        *slot = v;
    }
}

/// Whether a tensor's value is arrays nested exactly as `shape` (rank 2 or more).
fn is_nested(v: Option<&Value>, shape: &[usize]) -> bool {
    let n = shape.iter().product();
    shape.len() >= 2
        && v.and_then(Value::as_array)
            .is_some_and(|a| a.first().is_some_and(Value::is_array))
        && guard_core::tensor_form_ok(v, shape, n)
}

/// `v` with every tensor nested as its shape made flat (row-major; other forms untouched).
fn flatten_tensors(g: &GuardSection, v: &Value) -> Value {
    fn leaves(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            x => out.push(x.clone()),
        }
    }
    let mut w = v.clone();
    for t in &g.tensors {
        if is_nested(v.pointer(&t.pointer), &t.shape) {
            let mut flat = Vec::new();
            if let Some(x) = v.pointer(&t.pointer) {
                leaves(x, &mut flat);
            }
            set(&mut w, &t.pointer, Value::Array(flat));
        }
    }
    w
}

/// `v` with each flat tensor flagged in `nested` nested again as its shape.
fn nest_tensors<'v>(g: &GuardSection, nested: &[bool], v: &'v Value) -> std::borrow::Cow<'v, Value> {
    fn nest(items: &[Value], shape: &[usize]) -> Value {
        match shape {
            [_, rest @ ..] if !rest.is_empty() => {
                let step = rest.iter().product::<usize>().max(1);
                Value::Array(items.chunks(step).map(|c| nest(c, rest)).collect())
            }
            _ => Value::Array(items.to_vec()),
        }
    }
    if !nested.contains(&true) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut w = v.clone();
    for (t, _) in g.tensors.iter().zip(nested).filter(|(_, n)| **n) {
        let n: usize = t.shape.iter().product();
        if let Some(Value::Array(a)) = v.pointer(&t.pointer) {
            if a.len() == n && !a.iter().any(Value::is_array) {
                set(&mut w, &t.pointer, nest(a, &t.shape));
            }
        }
    }
    std::borrow::Cow::Owned(w)
}

fn payload(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// What the gradient attacks need: a classifier (label or adversarial model) and the
/// extractor for the schema.
pub(crate) struct LabelModel<'a> {
    pub(crate) model: &'a mut Model,
    pub(crate) extractor: &'a Extractor,
    pub(crate) classes: &'a [String],
}

/// Apply `attack` to `rows` (held-out, clean).
pub(crate) fn apply(
    attack: &Attack,
    g: &GuardSection,
    rows: &[Value],
    mut label_model: Option<LabelModel<'_>>,
    fgsm_limit: usize,
    seed: u64,
) -> Result<Vec<Item>, EvalError> {
    // Every draw mixes the seed into its salt (seed 0: the salts as they are).
    let mix = seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let unit = |i: u64, salt: u64| unit(i, salt ^ mix);
    let draw = |i: u64, salt: u64| draw(i, salt ^ mix);
    // Tensors nested as their shape are attacked flat and written back nested, so the
    // attacked stream has the held-out rows' form.
    let nested: Vec<bool> = g
        .tensors
        .iter()
        .map(|t| rows.iter().any(|r| is_nested(r.pointer(&t.pointer), &t.shape)))
        .collect();
    let flat: Vec<Value>;
    let rows = if nested.contains(&true) {
        flat = rows.iter().map(|r| flatten_tensors(g, r)).collect();
        &flat[..]
    } else {
        rows
    };
    let obs = observe(g, rows);
    let clean = |v: &Value| Item {
        payload: payload(&nest_tensors(g, &nested, v)),
        poison: false,
        evades: None,
    };
    let bad = |v: &Value| Item {
        payload: payload(&nest_tensors(g, &nested, v)),
        poison: true,
        evades: None,
    };
    let need_label = || {
        obs.label
            .as_ref()
            .filter(|(_, c)| c.len() >= 2)
            .ok_or_else(|| EvalError::Input(format!("{attack}: needs a label with two classes or more in the rows")))
    };
    let need_tensor = || {
        obs.tensors
            .first()
            .filter(|t| t.2.is_finite())
            .ok_or_else(|| EvalError::Input(format!("{attack}: needs a tensor field (x-guard.tensors)")))
    };
    let target_of = |target: &Option<String>| -> Result<Value, EvalError> {
        let (_, classes) = need_label()?;
        match target {
            None => Ok(classes[0].clone()),
            Some(t) => classes
                .iter()
                .find(|c| text(c) == *t)
                .cloned()
                .ok_or_else(|| EvalError::Input(format!("{attack}: target {t:?} is not a label of the rows"))),
        }
    };
    let mut out = Vec::with_capacity(rows.len() + rows.len() / 10);
    match attack {
        Attack::None => out.extend(rows.iter().map(clean)),
        Attack::Flip { rate } => {
            let (ptr, classes) = need_label()?;
            for (i, v) in rows.iter().enumerate() {
                let i = i as u64;
                let own = v.pointer(ptr).map(text);
                if unit(i, 2) < *rate {
                    let others: Vec<&Value> = classes.iter().filter(|c| Some(text(c)) != own).collect();
                    let mut w = v.clone();
                    set(&mut w, ptr, others[(draw(i, 3) % others.len() as u64) as usize].clone());
                    out.push(bad(&w));
                } else {
                    out.push(clean(v));
                }
            }
        }
        Attack::Flood { rate, noise } => {
            let base = rows
                .first()
                .ok_or_else(|| EvalError::Input(format!("{attack}: no rows to copy")))?;
            for (i, v) in rows.iter().enumerate() {
                let i = i as u64;
                out.push(clean(v));
                if unit(i, 1) >= *rate {
                    continue;
                }
                let mut w = base.clone();
                let mut salt = 200;
                let jitter = |salt: u64| 2.0 * unit(i, salt) - 1.0;
                for (_, ptr, _, _, sd, ints) in &obs.numeric {
                    salt += 1;
                    if let Some(x) = w.pointer(ptr).and_then(Value::as_f64) {
                        set(&mut w, ptr, number(x + jitter(salt) * noise * sd, *ints));
                    }
                }
                for (ptr, _, lo, hi, ints) in &obs.tensors {
                    if let Some(Value::Array(a)) = w.pointer(ptr) {
                        let t: Vec<Value> = a
                            .iter()
                            .enumerate()
                            .map(|(k, x)| match x.as_f64() {
                                Some(x) => number(
                                    (x + jitter(20_000 + k as u64) * noise * (hi - lo)).clamp(*lo, *hi),
                                    *ints,
                                ),
                                None => x.clone(),
                            })
                            .collect();
                        set(&mut w, ptr, Value::Array(t));
                    }
                }
                if let Some(p) = &g.source {
                    set(&mut w, p, json!("flood-attack"));
                }
                out.push(bad(&w));
            }
        }
        Attack::Inject { rate } => {
            for (i, v) in rows.iter().enumerate() {
                let i = i as u64;
                out.push(clean(v));
                if unit(i, 1) >= *rate {
                    continue;
                }
                let mut w = v.clone();
                let mut salt = 100;
                for (_, ptr, lo, hi, _, ints) in &obs.numeric {
                    salt += 1;
                    if lo.is_finite() {
                        set(&mut w, ptr, number(lo + unit(i, salt) * (hi - lo), *ints));
                    }
                }
                for (ptr, values) in obs.categorical.iter().chain(obs.label.iter()) {
                    salt += 1;
                    if !values.is_empty() {
                        set(
                            &mut w,
                            ptr,
                            values[(draw(i, salt) % values.len() as u64) as usize].clone(),
                        );
                    }
                }
                for (ptr, shape, lo, hi, ints) in &obs.tensors {
                    let n: usize = shape.iter().product();
                    let t: Vec<Value> = (0..n as u64)
                        .map(|k| number(lo + unit(i, 10_000 + k) * (hi - lo), *ints))
                        .collect();
                    set(&mut w, ptr, Value::Array(t));
                }
                out.push(bad(&w));
            }
        }
        Attack::Shift { feature, sigma } => {
            let (_, ptr, _, _, sd, ints) = obs.numeric.iter().find(|f| f.0 == *feature).ok_or_else(|| {
                EvalError::Input(format!("{attack}: {feature:?} is not a numeric feature of the schema"))
            })?;
            let half = rows.len() / 2;
            for (i, v) in rows.iter().enumerate() {
                match v.pointer(ptr).and_then(Value::as_f64) {
                    Some(x) if i >= half => {
                        let mut w = v.clone();
                        set(&mut w, ptr, number(x + sigma * sd, *ints));
                        out.push(bad(&w));
                    }
                    _ => out.push(clean(v)),
                }
            }
        }
        Attack::Trigger { target, rate, .. } | Attack::Blend { target, rate, .. } => {
            let (ptr, shape, lo, hi, ints) = need_tensor()?;
            let target = target_of(target)?;
            let (lptr, _) = need_label()?;
            let n: usize = shape.iter().product();
            let pattern: Vec<f64> = (0..n as u64).map(|k| lo + unit(k, 77) * (hi - lo)).collect();
            for (i, v) in rows.iter().enumerate() {
                let i64_ = i as u64;
                let eligible = v.pointer(lptr).map(text) != Some(text(&target));
                let px: Option<Vec<f64>> = v
                    .pointer(ptr)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(*lo)).collect());
                match px {
                    Some(mut px) if eligible && px.len() == n && unit(i64_, 4) < *rate => {
                        match attack {
                            Attack::Trigger { size, .. } => {
                                // The image grid and its channels (`x-guard` `channels`); a
                                // vector is one row.
                                let tf = g.tensors.iter().find(|t| t.pointer == *ptr);
                                let (rows_, cols, ch) = tf.and_then(TensorField::grid).unwrap_or((1, n, 1));
                                let size = (*size).min(rows_).min(cols).max(1);
                                // The patch sits in the last corner, one element in from the
                                // edge where there is room (as BadNets places it), in every
                                // channel.
                                let (r0, c0) = (rows_.saturating_sub(size + 1), cols.saturating_sub(size + 1));
                                for r in r0..r0 + size {
                                    for c in c0..c0 + size {
                                        for k in 0..ch {
                                            let at = tf.and_then(|t| t.grid_offset(r, c, k)).unwrap_or(r * cols + c);
                                            if let Some(p) = px.get_mut(at) {
                                                *p = *hi;
                                            }
                                        }
                                    }
                                }
                            }
                            Attack::Blend { alpha, .. } => {
                                for (p, q) in px.iter_mut().zip(&pattern) {
                                    *p = (1.0 - alpha) * *p + alpha * q;
                                }
                            }
                            _ => {}
                        }
                        let mut w = v.clone();
                        set(
                            &mut w,
                            ptr,
                            Value::Array(px.iter().map(|x| number(*x, *ints)).collect()),
                        );
                        set(&mut w, lptr, target.clone());
                        out.push(bad(&w));
                    }
                    _ => out.push(clean(v)),
                }
            }
        }
        Attack::Noise { rate, sigma } => {
            for (i, v) in rows.iter().enumerate() {
                let i = i as u64;
                if unit(i, 5) >= *rate {
                    out.push(clean(v));
                    continue;
                }
                let mut w = v.clone();
                let mut salt = 500;
                for (_, ptr, lo, hi, sd, ints) in &obs.numeric {
                    salt += 1;
                    if let Some(x) = v.pointer(ptr).and_then(Value::as_f64) {
                        let y = (x + (2.0 * unit(i, salt) - 1.0) * sigma * sd).clamp(*lo, *hi);
                        set(&mut w, ptr, number(y, *ints));
                    }
                }
                for (ptr, _, lo, hi, ints) in &obs.tensors {
                    if let Some(a) = v.pointer(ptr).and_then(Value::as_array) {
                        let t: Vec<Value> = a
                            .iter()
                            .enumerate()
                            .map(|(k, x)| {
                                let x = x.as_f64().unwrap_or(*lo);
                                let y = x + (2.0 * unit(i, 20_000 + k as u64) - 1.0) * sigma * (hi - lo);
                                number(y.clamp(*lo, *hi), *ints)
                            })
                            .collect();
                        set(&mut w, ptr, Value::Array(t));
                    }
                }
                out.push(bad(&w));
            }
        }
        Attack::Fgsm { eps: _, rate } | Attack::Pgd { eps: _, rate, .. } => {
            let (eps, steps) = match attack {
                Attack::Pgd { eps, steps, .. } => (*eps, *steps),
                Attack::Fgsm { eps, .. } => (*eps, 0),
                _ => (0.0, 0),
            };
            let lm = label_model
                .as_mut()
                .ok_or_else(|| EvalError::Input(format!("{attack}: needs a label or adversarial model")))?;
            let (lptr, _) = need_label()?;
            let mut made = 0;
            for (i, v) in rows.iter().enumerate() {
                let label = v.pointer(lptr).map(text);
                let class = label.and_then(|l| lm.classes.iter().position(|c| *c == l));
                match class {
                    Some(class) if made < fgsm_limit && unit(i as u64, 8) < *rate => {
                        let w = gradient_attack(lm, &obs, v, class, eps, steps)?;
                        let evades = predicted(lm, &w)?.is_some_and(|p| p != class);
                        out.push(Item {
                            evades: Some(evades),
                            ..bad(&w)
                        });
                        made += 1;
                    }
                    _ => out.push(clean(v)),
                }
            }
        }
    }
    Ok(out)
}

/// FGSM (`steps` 0: one step of `eps × range`) or PGD (`steps` steps of `2.5 × eps / steps`,
/// projected into the `eps` box and the observed range) on the numeric and tensor inputs of
/// the classifier. Each gradient sign is estimated by forward differences of 1/255 of the
/// range (the classifier is piecewise linear in its input), on a loss that keeps f32
/// precision for a confident model: ln Σ_{k≠c} p_k − ln p_c from probabilities (a monotone
/// function of the cross-entropy, so its gradient has the same sign), −log p_c from
/// log-probabilities.
fn gradient_attack(
    lm: &mut LabelModel<'_>,
    obs: &Observed,
    v: &Value,
    class: usize,
    eps: f64,
    steps: usize,
) -> Result<Value, EvalError> {
    let mut base = Vec::new();
    lm.extractor.extend_row(v, &mut base);
    let n = base.len();
    // Range and integrality of each input, by its pointer.
    let info: Vec<Option<(String, f64, f64, bool)>> = (0..n)
        .map(|k| {
            let p = lm.extractor.pointer(k)?;
            if let Some((_, ptr, lo, hi, _, ints)) = obs.numeric.iter().find(|f| f.1 == p) {
                return lo.is_finite().then(|| (ptr.clone(), *lo, *hi, *ints));
            }
            obs.tensors.iter().find_map(|(ptr, _, lo, hi, ints)| {
                (p.starts_with(&format!("{ptr}/")) && lo.is_finite()).then(|| (p.clone(), *lo, *hi, *ints))
            })
        })
        .collect();
    let x0: Vec<f64> = base.iter().map(|x| f64::from(*x)).collect();
    let mut x = x0.clone();
    let (rounds, step) = if steps == 0 {
        (1, eps)
    } else {
        (steps, 2.5 * eps / steps as f64)
    };
    for _ in 0..rounds {
        let signs = loss_signs(lm, &x, &info, class)?;
        for (j, inf) in info.iter().enumerate() {
            let Some((_, lo, hi, _)) = inf else { continue };
            let r = hi - lo;
            let moved = x[j] + step * r * signs[j];
            x[j] = moved.clamp(x0[j] - eps * r, x0[j] + eps * r).clamp(*lo, *hi);
        }
    }
    let mut w = v.clone();
    for (j, inf) in info.iter().enumerate() {
        let Some((ptr, _, _, ints)) = inf else { continue };
        if x[j] != x0[j] {
            set(&mut w, ptr, number(x[j], *ints));
        }
    }
    Ok(w)
}

/// The class the attacked classifier predicts for the record `v` as it is written (integers
/// rounded); `None` when its output has no class.
fn predicted(lm: &mut LabelModel<'_>, v: &Value) -> Result<Option<usize>, EvalError> {
    let mut row = Vec::new();
    lm.extractor.extend_row(v, &mut row);
    let classes = lm.classes.len();
    let first: Vec<f32> = match lm.model.run(&row)? {
        RoleScores::Label { probabilities, .. } => probabilities,
        // The first block is the original input's; the others are its squeezed copies.
        RoleScores::Adversarial { log_probabilities } => log_probabilities.into_iter().take(classes).collect(),
        RoleScores::Anomaly { .. } => return Ok(None),
    };
    Ok(first
        .iter()
        .take(classes)
        .enumerate()
        .filter(|(_, p)| !p.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, _)| k))
}

/// Per model input, the sign of the loss's gradient at `x` (0 where unknown or flat).
fn loss_signs(
    lm: &mut LabelModel<'_>,
    x: &[f64],
    info: &[Option<(String, f64, f64, bool)>],
    class: usize,
) -> Result<Vec<f64>, EvalError> {
    let n = x.len();
    let base: Vec<f32> = x.iter().map(|v| *v as f32).collect();
    let mut batch: Vec<f32> = Vec::with_capacity((n + 1) * n);
    batch.extend_from_slice(&base);
    for (j, inf) in info.iter().enumerate() {
        let mut row = base.clone();
        if let Some((_, lo, hi, _)) = inf {
            row[j] += ((hi - lo) / 255.0) as f32;
        }
        batch.extend_from_slice(&row);
    }
    let loss: Vec<f64> = match lm.model.run(&batch)? {
        RoleScores::Label { probabilities, .. } => {
            let c = probabilities.len() / (n + 1);
            probabilities
                .chunks(c.max(1))
                .map(|p| {
                    let pc = f64::from(p.get(class).copied().unwrap_or(0.0)).max(1e-30);
                    let rest: f64 = p
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| *k != class)
                        .map(|(_, q)| f64::from(*q))
                        .sum();
                    rest.max(1e-30).ln() - pc.ln()
                })
                .collect()
        }
        RoleScores::Adversarial { log_probabilities } => {
            let per_row = log_probabilities.len() / (n + 1);
            log_probabilities
                .chunks(per_row.max(1))
                .map(|r| -f64::from(r.get(class).copied().unwrap_or(f32::NEG_INFINITY)))
                .collect()
        }
        RoleScores::Anomaly { .. } => {
            return Err(EvalError::Input(
                "the gradient attacks need a classifier, not an anomaly model".into(),
            ))
        }
    };
    let l0 = loss.first().copied().unwrap_or(0.0);
    Ok((0..n)
        .map(|j| {
            let g = loss.get(j + 1).copied().unwrap_or(l0) - l0;
            if g.is_finite() && g != 0.0 {
                g.signum()
            } else {
                0.0
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BadNets on channels-last images nested as `[h][w][c]`: the attacked rows stay nested,
    /// the clean rows come back as they were, and the patch is the same pixels in every
    /// channel, in the grid's last corner (not a strip across the channel axis).
    #[test]
    fn triggers_patch_the_grid_of_nested_channels_last_images() {
        let g: GuardSection = serde_json::from_value(json!({
            "id": "t", "label": "/y",
            "tensors": [{"name": "img", "pointer": "/img", "shape": [6, 5, 3], "channels": "last"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<Value> = (0..40)
            .map(|i| {
                let img: Vec<Vec<Vec<u32>>> = (0..6).map(|_| (0..5).map(|_| vec![10, 20, 30]).collect()).collect();
                let y = ["a", "b"][i % 2];
                json!({"img": img, "y": y, "i": i})
            })
            .collect();
        let attack = Attack::Trigger {
            size: 2,
            target: Some("a".into()),
            rate: 1.0,
        };
        let out = apply(&attack, &g, &rows, None, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), rows.len());
        let mut hit = 0;
        for (item, row) in out.iter().zip(&rows) {
            let v: Value = serde_json::from_slice(&item.payload).unwrap_or_else(|e| panic!("{e}"));
            if !item.poison {
                assert_eq!(&v, row);
                continue;
            }
            hit += 1;
            assert_eq!(v["y"], json!("a"));
            for r in 0..6 {
                for c in 0..5 {
                    // The 2 x 2 patch one in from the last corner: rows 3..5, columns 2..4.
                    let want = if (3..5).contains(&r) && (2..4).contains(&c) {
                        json!([30, 30, 30])
                    } else {
                        json!([10, 20, 30])
                    };
                    assert_eq!(v["img"][r][c], want, "({r}, {c})");
                }
            }
        }
        assert_eq!(hit, 20, "every row not already of the target class");
    }

    /// `evaluate --attack-seed`: the same seed draws the same attack, another seed other rows
    /// (seed 0 is what every figure in BENCHMARKS.md was measured with).
    #[test]
    fn the_attack_seed_picks_other_rows_and_repeats_itself() {
        let g: GuardSection =
            serde_json::from_value(json!({"id": "t", "label": "/y"})).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<Value> = (0..400)
            .map(|i| {
                let y = ["a", "b", "c"][i % 3];
                json!({"y": y, "i": i})
            })
            .collect();
        let flip = Attack::Flip { rate: 0.1 };
        let picked = |seed: u64| -> Vec<usize> {
            let out = apply(&flip, &g, &rows, None, 0, seed).unwrap_or_else(|e| panic!("{e}"));
            out.iter()
                .enumerate()
                .filter(|(_, it)| it.poison)
                .map(|(k, _)| k)
                .collect()
        };
        let (zero, one, two) = (picked(0), picked(1), picked(2));
        assert_eq!(zero, picked(0));
        assert_eq!(one, picked(1));
        for p in [&zero, &one, &two] {
            assert!((20..=60).contains(&p.len()), "about 10 % of 400 rows: {}", p.len());
        }
        let shared = |a: &[usize], b: &[usize]| a.iter().filter(|k| b.contains(k)).count();
        // Independent draws of 10 % share about a tenth of their rows.
        assert!(shared(&zero, &one) * 3 < zero.len(), "{zero:?} {one:?}");
        assert!(shared(&one, &two) * 3 < one.len(), "{one:?} {two:?}");
    }

    #[test]
    fn attacks_parse_with_their_defaults_and_refuse_nonsense() {
        assert_eq!("flip:0.05".parse::<Attack>(), Ok(Attack::Flip { rate: 0.05 }));
        assert_eq!(
            "trigger:3".parse::<Attack>(),
            Ok(Attack::Trigger {
                size: 3,
                target: None,
                rate: 0.1
            })
        );
        assert_eq!(
            "shift:carat:-2".parse::<Attack>(),
            Ok(Attack::Shift {
                feature: "carat".into(),
                sigma: -2.0
            })
        );
        assert_eq!(
            "pgd:0.1".parse::<Attack>(),
            Ok(Attack::Pgd {
                eps: 0.1,
                steps: 5,
                rate: 0.1
            })
        );
        for bad in [
            "flip",
            "flip:2",
            "inject:x",
            "shift:carat",
            "bogus:1",
            "noise:-1",
            "pgd:0.1:0",
            "pgd:0.1:1000",
        ] {
            assert!(bad.parse::<Attack>().is_err(), "{bad}");
        }
    }
}
