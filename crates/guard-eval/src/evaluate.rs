//! Detection quality on real data (`tools evaluate`), in process through the same batch judge
//! the workers run: limits, decode, schema, typed rows, models, thresholds. The breaker is
//! left out: it is a policy over the stream, not over one record.

use crate::measure::{auroc, precision_at_recall, recall_at_fpr};
use crate::scenario::build;
use crate::EvalError;
use guard_config::{Config, ExecutionProvider, Route};
use guard_core::Record;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One scenario's figures (one JSON line of `tools evaluate`). Measures are rounded to four
/// places; `None` where undefined (no poison, or no label model).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The scenario's name.
    pub scenario: String,
    /// Records in the attacked stream.
    pub records: usize,
    /// Of them, records the attack made.
    pub poison: usize,
    /// AUROC of the anomaly model's score.
    pub auroc_anomaly: Option<f64>,
    /// AUROC of the label model's score (image domains).
    pub auroc_label: Option<f64>,
    /// AUROC of the larger of the two scores over its threshold (checks' rejections rank first).
    pub auroc_combined: Option<f64>,
    /// Precision of the guard's verdicts.
    pub precision: Option<f64>,
    /// Recall of the guard's verdicts.
    pub recall: Option<f64>,
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
    /// The anomaly model's calibrated threshold.
    pub anomaly_threshold: Option<f64>,
    /// The label model's calibrated threshold.
    pub label_threshold: Option<f64>,
    /// Time spent judging, in seconds.
    pub seconds: f64,
}

/// The configuration `evaluate` judges with: the committed schema and models of `domain`
/// under `root`, on CPU, routed from a topic named `eval`.
fn config(root: &Path, domain: &str) -> Config {
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
    cfg
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
    let hub = guard_drift::DriftHub::new(
        HashMap::new(),
        &cfg.drift,
        "evaluate",
        "evaluate",
        guard_drift::HubOutputs { events: None },
    );
    Ok(guard_pipeline::BatchJudge {
        judge,
        drift: guard_drift::DriftWindows::new(Arc::new(hub)),
        scoring: Some(scoring),
        keep_scores: true,
    })
}

/// Run one scenario (see [`crate::SCENARIOS`]) on the data and models under `root`.
pub fn evaluate(root: &Path, scenario: &str, fgsm_limit: usize) -> Result<Evaluation, EvalError> {
    let domain = if scenario.starts_with("shuttle") {
        "shuttle"
    } else {
        "mnist"
    };
    let items = build(root, scenario, fgsm_limit)?;
    let mut stages = batch_judge(&config(root, domain))?;
    let route = stages
        .scoring
        .as_mut()
        .and_then(|s| s.route("eval"))
        .ok_or_else(|| EvalError::Input("the evaluation route has no models".into()))?;
    let (a_thr, l_thr) = (route.anomaly_threshold(), route.label_threshold());
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
    let np = poison.iter().filter(|p| **p).count();
    let nn = (poison.len() - np) as f64;
    let round = |x: Option<f64>| x.map(|x| (x * 10_000.0).round() / 10_000.0);
    Ok(Evaluation {
        scenario: scenario.to_owned(),
        records: items.len(),
        poison: np,
        auroc_anomaly: round(auroc(&a_scores, &poison)),
        auroc_label: if domain == "mnist" {
            round(auroc(&l_scores, &poison))
        } else {
            None
        },
        auroc_combined: round(auroc(&combined, &poison)),
        precision: round((tp + fp > 0.0).then(|| tp / (tp + fp))),
        recall: round((np > 0).then(|| tp / np as f64)),
        false_positive_rate: round((nn > 0.0).then(|| fp / nn)),
        recall_at_fpr_001: round(recall_at_fpr(&combined, &poison, 0.01)),
        precision_at_recall_086: round(precision_at_recall(&combined, &poison, 0.86)),
        precision_at_recall_095: round(precision_at_recall(&combined, &poison, 0.95)),
        anomaly_threshold: a_thr,
        label_threshold: l_thr,
        seconds: (secs * 1000.0).round() / 1000.0,
    })
}
