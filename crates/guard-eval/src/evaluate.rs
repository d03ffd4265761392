//! Detection quality (`ingest-guard evaluate`, and `tools evaluate` over the committed data
//! sets), in process through the same batch judge the workers run: limits, decode, schema,
//! typed rows, models, thresholds. The breaker is left out: it is a policy over the stream,
//! not over one record.

use crate::attack::{apply, Attack, LabelModel};
use crate::measure::{auroc, precision_at_recall, recall_at_fpr};
use crate::split::FieldEquals;
use crate::EvalError;
use guard_config::{Config, ExecutionProvider, Route};
use guard_core::Record;
use guard_score::{Model, ProviderChoice, SessionSettings};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One attack's figures (one JSON line). Measures are rounded to four places; `None` where
/// undefined (no poison, or no label model).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The scenario's name (`tools evaluate`) or the attack as given.
    pub scenario: String,
    /// The attack, normalised (`flip:0.05`, `trigger:3:0:0.1`).
    pub attack: String,
    /// Records in the attacked stream.
    pub records: usize,
    /// Of them, records the attack made.
    pub poison: usize,
    /// AUROC of the anomaly model's score.
    pub auroc_anomaly: Option<f64>,
    /// AUROC of the label model's score (image domains).
    pub auroc_label: Option<f64>,
    /// AUROC of the adversarial model's score (feature squeezing; tensor domains).
    pub auroc_adversarial: Option<f64>,
    /// AUROC of the largest score over its threshold (checks' rejections rank first).
    pub auroc_combined: Option<f64>,
    /// Precision of the guard's verdicts (with the window scan when the label model has one).
    pub precision: Option<f64>,
    /// Recall of the guard's verdicts (with the window scan when the label model has one).
    pub recall: Option<f64>,
    /// Records the window scan quarantined (`None`: no scan).
    pub scan_flagged: Option<usize>,
    /// Of them, records the attack made.
    pub scan_true: Option<usize>,
    /// Gradient attacks: the share of crafted records the attacked classifier misclassifies
    /// (successful adversarial examples; the others still count as poison).
    pub attack_success_rate: Option<f64>,
    /// Gradient attacks: recall over the successful adversarial examples alone.
    pub recall_successful: Option<f64>,
    /// Precision of the per-record verdicts alone (without the scan).
    pub precision_per_record: Option<f64>,
    /// Recall of the per-record verdicts alone.
    pub recall_per_record: Option<f64>,
    /// Clean records held back, as a share of clean records.
    pub false_positive_rate: Option<f64>,
    /// Recall at a 1 % false-positive rate (combined score).
    #[serde(rename = "recall_at_fpr_0.01")]
    pub recall_at_fpr_001: Option<f64>,
    /// Precision at recall 0.86 (combined score).
    #[serde(rename = "precision_at_recall_0.86")]
    pub precision_at_recall_086: Option<f64>,
    /// Precision at recall 0.95 (combined score).
    #[serde(rename = "precision_at_recall_0.95")]
    pub precision_at_recall_095: Option<f64>,
    /// Precision at recall 0.86 of the label role's score alone (`None`: no label model). On
    /// label flips it shows what the combined ranking costs: the other roles' scores of clean
    /// rows rank among the flipped rows there.
    #[serde(rename = "precision_at_recall_0.86_label")]
    pub precision_at_recall_086_label: Option<f64>,
    /// The anomaly model's calibrated threshold.
    pub anomaly_threshold: Option<f64>,
    /// The label model's calibrated threshold.
    pub label_threshold: Option<f64>,
    /// The adversarial model's calibrated threshold.
    pub adversarial_threshold: Option<f64>,
    /// Time spent judging, in seconds.
    pub seconds: f64,
}

/// What `evaluate` judges with: a schema and its models (or a configuration's route).
#[derive(Debug, Clone)]
pub struct Setup {
    /// Domain schema.
    pub schema: PathBuf,
    /// Anomaly model (`.onnx` beside its `.json`).
    pub anomaly: Option<PathBuf>,
    /// Label model.
    pub label: Option<PathBuf>,
    /// Adversarial-example model.
    pub adversarial: Option<PathBuf>,
    /// The route's baseline: with one, drift windows and near-duplicate floods are judged as
    /// the stream judges them.
    pub baseline: Option<PathBuf>,
    /// The ONNX Runtime library.
    pub ort_library: PathBuf,
    /// Write each attacked stream here (`<n>.jsonl`, `{"poison", "record"}` lines).
    pub write_attacked: Option<PathBuf>,
    /// Seed of the attacks' random draws (which rows, which labels, noise, patterns): 0 gives
    /// the draws every figure in BENCHMARKS.md was measured with; others give new attackers
    /// on the same rows, for the spread of a figure.
    pub attack_seed: u64,
    /// The window scan's hold and context sizes (a configuration's `[scan]`, else the
    /// defaults). The scan always runs where the label model carries its statistics.
    pub scan: guard_config::ScanConfig,
    /// Near-duplicate flood settings (a configuration's `[flood]`, else the defaults).
    pub flood: guard_config::FloodConfig,
}

impl Setup {
    /// A schema and the models in `dir` (`anomaly.onnx`, `label.onnx`, `adversarial.onnx`,
    /// whichever exist).
    pub fn from_dir(schema: &Path, dir: &Path, ort_library: PathBuf) -> Self {
        let pick = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Self {
            schema: schema.to_path_buf(),
            anomaly: pick("anomaly.onnx"),
            label: pick("label.onnx"),
            adversarial: pick("adversarial.onnx"),
            baseline: None,
            ort_library,
            write_attacked: None,
            attack_seed: 0,
            scan: guard_config::ScanConfig::default(),
            flood: guard_config::FloodConfig::default(),
        }
    }

    /// `evaluate`'s choice: a configuration's route (`config`, `topic`), or a schema and a
    /// models folder.
    pub fn resolve(
        config: Option<&Path>,
        topic: Option<&str>,
        schema: Option<&Path>,
        models: Option<&Path>,
        root: &Path,
    ) -> Result<Self, EvalError> {
        match (config, schema, models) {
            (Some(c), _, _) => {
                let cfg = Config::load(c).map_err(|e| EvalError::Input(format!("{}: {e}", c.display())))?;
                Self::from_config(&cfg, topic)
            }
            (None, Some(s), Some(m)) => Ok(Self::from_dir(s, m, crate::train::default_ort_library(root))),
            _ => Err(EvalError::Input("give --config, or --schema with --models".into())),
        }
    }

    /// The route of `cfg` for `topic` (the first route when `None`).
    pub fn from_config(cfg: &Config, topic: Option<&str>) -> Result<Self, EvalError> {
        let route = cfg
            .routes
            .iter()
            .find(|r| topic.is_none_or(|t| r.topic == t))
            .ok_or_else(|| {
                EvalError::Input(format!(
                    "the configuration has no route{}",
                    topic.map(|t| format!(" for topic {t:?}")).unwrap_or_default()
                ))
            })?;
        Ok(Self {
            schema: route.schema.clone(),
            anomaly: route.anomaly_model.clone(),
            label: route.label_model.clone(),
            adversarial: route.adversarial_model.clone(),
            baseline: route.baseline.clone(),
            ort_library: cfg
                .scoring
                .library
                .clone()
                .unwrap_or_else(|| crate::train::default_ort_library(Path::new("."))),
            write_attacked: None,
            attack_seed: 0,
            scan: cfg.scan.clone(),
            flood: cfg.flood.clone(),
        })
    }

    fn config(&self) -> Config {
        // The scan runs when the label model carries its statistics, with the route's sizes.
        let mut cfg = Config {
            scan: guard_config::ScanConfig {
                enabled: true,
                ..self.scan.clone()
            },
            flood: self.flood.clone(),
            ..Config::default()
        };
        cfg.scoring.execution_provider = ExecutionProvider::Cpu;
        cfg.scoring.library = Some(self.ort_library.clone());
        cfg.routes.push(Route {
            topic: "eval".into(),
            schema: self.schema.clone(),
            anomaly_model: self.anomaly.clone(),
            label_model: self.label.clone(),
            adversarial_model: self.adversarial.clone(),
            baseline: self.baseline.clone(),
            ..Route::default()
        });
        cfg
    }
}

/// The running guard's batch judge for `cfg`, without the breaker.
fn batch_judge(cfg: &Config) -> Result<guard_pipeline::BatchJudge, EvalError> {
    let mut routes = HashMap::new();
    for r in &cfg.routes {
        routes.insert(
            r.topic.clone(),
            Arc::new(guard_validate::DomainSchema::load(&r.schema)?),
        );
    }
    let judge = Arc::new(guard_validate::Judge::new(cfg.limits.clone(), routes));
    guard_score::init(cfg)?;
    let (scoring, _) = guard_score::Scoring::load(cfg, &judge.sections())?;
    // Routes with a baseline are watched as in the stream (drift windows, floods).
    let mut topics = HashMap::new();
    for r in &cfg.routes {
        if let (Some(path), Some(schema)) = (&r.baseline, judge.schema_for(&r.topic)) {
            let t = guard_drift::TopicDrift::load(path, schema.guard())
                .map_err(|e| EvalError::Input(format!("{}: {e}", path.display())))?;
            topics.insert(r.topic.clone(), t);
        }
    }
    let hub = guard_drift::DriftHub::new(
        topics,
        &cfg.drift,
        "evaluate",
        "evaluate",
        guard_drift::HubOutputs { events: None },
    )
    .with_floods(&cfg.flood);
    Ok(guard_pipeline::BatchJudge {
        judge,
        drift: guard_drift::DriftWindows::new(Arc::new(hub)),
        scoring: Some(scoring),
        keep_scores: true,
    })
}

/// Read a JSONL file of records.
pub fn read_rows(path: &Path) -> Result<Vec<Value>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(EvalError::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| EvalError::Json {
                what: format!("{} line {}", path.display(), i + 1),
                source,
            })
        })
        .collect()
}

/// Run scenario `name` of [`crate::SCENARIOS`] on the committed data and models under `root`.
pub fn scenario(root: &Path, name: &str, fgsm_limit: usize) -> Result<Evaluation, EvalError> {
    let (_, domain, attack) = crate::SCENARIOS.iter().find(|s| s.0 == name).ok_or_else(|| {
        EvalError::Input(format!(
            "unknown scenario {name:?}; one of {:?}",
            crate::SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>()
        ))
    })?;
    let path = root.join(format!(".data/{domain}.jsonl"));
    let rows = read_rows(&path).map_err(|e| EvalError::Input(format!("{e} (run scripts/setup.sh)")))?;
    let (_, heldout) = crate::split::split_rows(rows, &crate::scenario::committed_split(domain)?);
    let truth: Option<FieldEquals> = if *domain == "shuttle" {
        Some("/label=1".parse().map_err(EvalError::Input)?)
    } else {
        None
    };
    let setup = Setup::from_dir(
        &root.join(format!("schemas/{domain}.schema.json")),
        &root.join("models").join(domain),
        crate::train::default_ort_library(root),
    );
    let attack: Attack = attack.parse().map_err(EvalError::Input)?;
    let mut e = evaluate(&setup, &heldout, &attack, truth.as_ref(), fgsm_limit)?;
    e.scenario = name.to_owned();
    Ok(e)
}

/// Judge `heldout` under `attack` with `setup`. With `truth`, rows it matches are known-bad:
/// under `none` they are the poison; under an attack they are left out.
pub fn evaluate(
    setup: &Setup,
    heldout: &[Value],
    attack: &Attack,
    truth: Option<&FieldEquals>,
    fgsm_limit: usize,
) -> Result<Evaluation, EvalError> {
    let mut all = evaluate_all(setup, heldout, std::slice::from_ref(attack), truth, fgsm_limit)?;
    all.pop().ok_or_else(|| EvalError::Input("no evaluation".into()))
}

/// [`evaluate`] for several attacks, with one batch judge (schema, models) for all of them.
pub fn evaluate_all(
    setup: &Setup,
    heldout: &[Value],
    attacks: &[Attack],
    truth: Option<&FieldEquals>,
    fgsm_limit: usize,
) -> Result<Vec<Evaluation>, EvalError> {
    let cfg = setup.config();
    let mut stages = batch_judge(&cfg)?;
    let g = stages
        .judge
        .sections()
        .get("eval")
        .cloned()
        .ok_or_else(|| EvalError::Input("the evaluation route has no schema".into()))?;
    attacks
        .iter()
        .enumerate()
        .map(|(index, attack)| {
            let run = Run {
                truth,
                fgsm_limit,
                index,
            };
            judge_attack(&mut stages, &g, setup, heldout, attack, &run)
        })
        .collect()
}

/// One attack's run settings.
struct Run<'a> {
    truth: Option<&'a FieldEquals>,
    fgsm_limit: usize,
    /// The attack's position (its file under `write_attacked`).
    index: usize,
}

fn judge_attack(
    stages: &mut guard_pipeline::BatchJudge,
    g: &guard_core::GuardSection,
    setup: &Setup,
    heldout: &[Value],
    attack: &Attack,
    run: &Run<'_>,
) -> Result<Evaluation, EvalError> {
    let (truth, fgsm_limit) = (run.truth, run.fgsm_limit);
    let items: Vec<crate::attack::Item> = if *attack == Attack::None {
        heldout
            .iter()
            .map(|v| crate::attack::Item {
                payload: serde_json::to_vec(v).unwrap_or_default(),
                poison: truth.is_some_and(|t| t.matches(v)),
                evades: None,
            })
            .collect()
    } else {
        let clean: Vec<Value> = heldout
            .iter()
            .filter(|v| !truth.is_some_and(|t| t.matches(v)))
            .cloned()
            .collect();
        // The gradient attacks aim at the label model, else the adversarial model's classifier.
        // With a neighbour vote in the label graph, the attacks aim at its classifier (the
        // vote is piecewise constant: finite differences would see no gradient).
        let mut label = match setup.label.as_ref().or(setup.adversarial.as_ref()) {
            Some(p) if matches!(attack, Attack::Fgsm { .. } | Attack::Pgd { .. }) => {
                let mut m = Model::load(
                    p,
                    &SessionSettings {
                        provider: ProviderChoice::Cpu,
                        intra_threads: 1,
                        tf32: false,
                    },
                )?;
                m.aim_at_classifier();
                Some(m)
            }
            _ => None,
        };
        let extractor = match &label {
            Some(m) => Some(m.extractor_for(g)?),
            None => None,
        };
        let classes = label.as_ref().map(|m| m.meta().classes.clone()).unwrap_or_default();
        let lm = match (label.as_mut(), extractor.as_ref()) {
            (Some(model), Some(extractor)) => Some(LabelModel {
                model,
                extractor,
                classes: &classes,
            }),
            _ => None,
        };
        apply(attack, g, &clean, lm, fgsm_limit, setup.attack_seed)?
    };
    if let Some(dir) = &setup.write_attacked {
        write_items(dir, run.index, &items)?;
    }
    let route = stages
        .scoring
        .as_mut()
        .and_then(|s| s.route("eval"))
        .ok_or_else(|| EvalError::Input("the evaluation route has no models".into()))?;
    let (a_thr, l_thr, x_thr) = (
        route.anomaly_threshold(),
        route.label_threshold(),
        route.adversarial_threshold(),
    );
    let tp = guard_core::TopicPartition {
        topic: "eval".into(),
        partition: 0,
    };
    let (mut a_scores, mut l_scores, mut x_scores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut combined, mut flagged) = (Vec::new(), Vec::new());
    // The window scan as the workers run it: passing records are held, and every
    // `hold_records` of them are scanned against the context of those released before.
    let scan_cfg = setup.config().scan;
    let mut window = guard_score::ScanWindow::new(scan_cfg.window_records);
    let (mut held, mut held_at, mut scanned) = (Vec::new(), Vec::new(), vec![false; items.len()]);
    let mut has_scan = false;
    let started = std::time::Instant::now();
    for (c, chunk) in items.chunks(1024).enumerate() {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, it)| Record::whole(i as i64, None, None, Vec::new(), Some(it.payload.clone())))
            .collect();
        let mut judged = stages.judge(&tp, &records, false);
        let scan = stages
            .scoring
            .as_mut()
            .and_then(|s| s.route("eval"))
            .and_then(|r| r.scan.as_ref());
        has_scan = scan.is_some();
        for (i, j) in judged.judgements.iter().enumerate() {
            if let Some(scan) = scan {
                let item = judged.decisions.get_mut(&i).and_then(|d| d.scan.take());
                if let (Some(item), false) = (&item, j.verdict.is_pass()) {
                    window.observe(item.clone());
                }
                if let (Some(item), true) = (item, j.verdict.is_pass()) {
                    held.push(item);
                    held_at.push(c * 1024 + i);
                    if held.len() >= scan_cfg.hold_records {
                        for (k, f) in held_at.drain(..).zip(window.judge(scan, std::mem::take(&mut held))) {
                            scanned[k] = f.is_some();
                        }
                    }
                }
            }
            let d = judged.decisions.get(&i);
            // Not scored and not passed: the checks held it back.
            let rejected = d.is_none() && !j.verdict.is_pass();
            let (a, l, x) = d.map_or((None, None, None), |d| {
                (d.anomaly_score, d.label_score, d.adversarial_score)
            });
            let ratio = |s: Option<f32>, t: Option<f64>| match (s, t) {
                (Some(s), Some(t)) if t > 0.0 => f64::from(s) / t,
                _ => 0.0,
            };
            a_scores.push(a.map_or(f64::INFINITY, f64::from));
            l_scores.push(l.map_or(f64::INFINITY, f64::from));
            x_scores.push(x.map_or(f64::INFINITY, f64::from));
            combined.push(if rejected {
                f64::INFINITY
            } else {
                ratio(a, a_thr).max(ratio(l, l_thr)).max(ratio(x, x_thr))
            });
            flagged.push(!j.verdict.is_pass());
        }
    }
    if let Some(scan) = stages
        .scoring
        .as_mut()
        .and_then(|s| s.route("eval"))
        .and_then(|r| r.scan.as_ref())
    {
        for (k, f) in held_at.drain(..).zip(window.judge(scan, std::mem::take(&mut held))) {
            scanned[k] = f.is_some();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let poison: Vec<bool> = items.iter().map(|i| i.poison).collect();
    let count = |flags: &[bool], bad: bool| flags.iter().zip(&poison).filter(|(f, p)| **f && **p == bad).count() as f64;
    let (tp1, fp1) = (count(&flagged, true), count(&flagged, false));
    let scan_true = count(&scanned, true) as usize;
    let scan_flagged = scanned.iter().filter(|s| **s).count();
    for (f, s) in flagged.iter_mut().zip(&scanned) {
        *f |= *s;
    }
    let tp = flagged.iter().zip(&poison).filter(|(f, p)| **f && **p).count() as f64;
    let fp = flagged.iter().zip(&poison).filter(|(f, p)| **f && !**p).count() as f64;
    let np = poison.iter().filter(|p| **p).count();
    let crafted = items.iter().filter(|i| i.evades.is_some()).count();
    let successful: Vec<usize> = (0..items.len()).filter(|k| items[*k].evades == Some(true)).collect();
    let nn = (poison.len() - np) as f64;
    let round = |x: Option<f64>| x.map(|x| (x * 10_000.0).round() / 10_000.0);
    Ok(Evaluation {
        scenario: attack.to_string(),
        attack: attack.to_string(),
        records: items.len(),
        poison: np,
        auroc_anomaly: round(auroc(&a_scores, &poison)),
        auroc_label: if l_thr.is_some() {
            round(auroc(&l_scores, &poison))
        } else {
            None
        },
        auroc_adversarial: if x_thr.is_some() {
            round(auroc(&x_scores, &poison))
        } else {
            None
        },
        auroc_combined: round(auroc(&combined, &poison)),
        precision: round((tp + fp > 0.0).then(|| tp / (tp + fp))),
        recall: round((np > 0).then(|| tp / np as f64)),
        scan_flagged: has_scan.then_some(scan_flagged),
        scan_true: has_scan.then_some(scan_true),
        attack_success_rate: round((crafted > 0).then(|| successful.len() as f64 / crafted as f64)),
        recall_successful: round(
            (!successful.is_empty())
                .then(|| successful.iter().filter(|k| flagged[**k]).count() as f64 / successful.len() as f64),
        ),
        precision_per_record: round((tp1 + fp1 > 0.0).then(|| tp1 / (tp1 + fp1))),
        recall_per_record: round((np > 0).then(|| tp1 / np as f64)),
        false_positive_rate: round((nn > 0.0).then(|| fp / nn)),
        recall_at_fpr_001: round(recall_at_fpr(&combined, &poison, 0.01)),
        precision_at_recall_086: round(precision_at_recall(&combined, &poison, 0.86)),
        precision_at_recall_095: round(precision_at_recall(&combined, &poison, 0.95)),
        precision_at_recall_086_label: if l_thr.is_some() {
            round(precision_at_recall(&l_scores, &poison, 0.86))
        } else {
            None
        },
        anomaly_threshold: a_thr,
        label_threshold: l_thr,
        adversarial_threshold: x_thr,
        seconds: (secs * 1000.0).round() / 1000.0,
    })
}

/// One attacked stream as `{"poison": bool, "record": <the record>}` lines.
fn write_items(dir: &Path, n: usize, items: &[crate::attack::Item]) -> Result<(), EvalError> {
    std::fs::create_dir_all(dir).map_err(EvalError::io(dir))?;
    let path = dir.join(format!("{n}.jsonl"));
    let mut text = String::new();
    for it in items {
        let record: Value = serde_json::from_slice(&it.payload).unwrap_or(Value::Null);
        let mut line = serde_json::json!({ "poison": it.poison, "record": record });
        if let Some(e) = it.evades {
            line["evades"] = Value::Bool(e);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).map_err(EvalError::io(&path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// `evaluate --config` judges with the configuration's scan and flood settings (the scan
    /// always on), not the defaults: a longer hold sees more of a slow campaign at once.
    #[test]
    fn a_configuration_route_keeps_its_scan_and_flood_settings() {
        let mut cfg = Config::default();
        cfg.scan.hold_records = 1_234;
        cfg.scan.window_records = 4_321;
        cfg.flood.window_records = 777;
        cfg.routes.push(Route {
            topic: "t".into(),
            schema: PathBuf::from("s.json"),
            ..Route::default()
        });
        let setup = Setup::from_config(&cfg, None).unwrap();
        let judged = setup.config();
        assert!(judged.scan.enabled, "the scan runs where the label model can");
        assert_eq!(
            (
                judged.scan.hold_records,
                judged.scan.window_records,
                judged.flood.window_records
            ),
            (1_234, 4_321, 777)
        );
        let plain = Setup::from_dir(Path::new("s.json"), Path::new("."), PathBuf::new()).config();
        assert_eq!(plain.scan.hold_records, guard_config::DEFAULT_SCAN_HOLD_RECORDS);
    }
}
