//! Model scoring in the judge workers. Each worker owns its sessions (ONNX Runtime runs a
//! session with `&mut`), so the judge threads are the inference threads and the pipeline's
//! per-partition batches (`pipeline.batch_max_records` / `batch_max_wait_ms`) are the
//! micro-batches; the bounded channels between stages give back-pressure.
//!
//! Per batch: the rows of records that passed the checks are gathered while judging (no second
//! decode), each configured model runs once on them, every score goes into a histogram, and a
//! record over a threshold becomes a quarantine verdict with `score.anomaly` / `score.label` /
//! `score.adversarial`, its scores, the model identity and an explanation (top-3 features by
//! reconstruction error; the given and predicted classes; the squeezer that moved the
//! prediction, from what to what).

use crate::{
    squeeze_score, Extractor, Model, ModelFiles, ProviderChoice, ProviderInUse, RoleScores, ScanItem, ScoreError,
    SessionSettings, SpectralScan, Squeezed,
};
use guard_config::{Config, ExecutionProvider};
use guard_core::{FeatureRows, GuardSection, Reason, ReasonCode};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use tracing::info;

/// Each route's `x-guard` section, by topic: what the models' inputs are checked against and
/// extracted by.
pub type Sections = HashMap<String, GuardSection>;

/// A route's model failed to load: the route and the model file, then why.
fn in_route(topic: &str, path: &Path, e: ScoreError) -> ScoreError {
    ScoreError::Route {
        topic: topic.to_owned(),
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

/// One model of a route, with its extractor and threshold.
pub struct Scorer {
    model: Model,
    extractor: Extractor,
    threshold: f64,
    id: String,
}

impl Scorer {
    fn load(
        files: &ModelFiles,
        guard: &GuardSection,
        settings: &SessionSettings,
        threshold: Option<f64>,
    ) -> Result<Self, ScoreError> {
        let model = Model::from_files(files, settings)?;
        let extractor = model.extractor_for(guard)?;
        let digest: String = files.sha256().chars().take(12).collect();
        let role = format!("{:?}", model.meta().role).to_lowercase();
        let id = format!("{}/{role}@{digest}", model.meta().schema_id);
        if model.provider() == ProviderInUse::Cuda {
            // CUDA was asked for and registered: check that the nodes really run there.
            let placement = model.node_placement()?;
            let on_cpu: usize = placement
                .iter()
                .filter(|(p, _)| p == "CPUExecutionProvider")
                .map(|(_, n)| n)
                .sum();
            let total: usize = placement.iter().map(|(_, n)| n).sum();
            metrics::gauge!("guard_score_cpu_nodes", "model" => id.clone()).set(on_cpu as f64);
            if on_cpu > 0 {
                tracing::warn!(model = %id, on_cpu, total, ?placement, "CUDA requested but the model runs partly on CPU");
            }
        }
        Ok(Self {
            threshold: threshold.unwrap_or(model.meta().threshold),
            model,
            extractor,
            id,
        })
    }
}

/// The model files of every route, read once and checked against the routes' SHA-256 pins.
/// Every worker's sessions are built from these bytes; a reload reads, checks and validates a
/// new set before any worker sees it.
#[derive(Debug, Clone, Default)]
pub struct ModelSet {
    /// Per route (by topic): anomaly, label and adversarial model files.
    routes: Vec<(String, [Option<ModelFiles>; 3])>,
}

impl ModelSet {
    /// Read every configured model and check its pin (`*_model_sha256`).
    pub fn read(cfg: &Config) -> Result<Self, ScoreError> {
        let mut routes = Vec::new();
        for r in &cfg.routes {
            let read = |p: &Option<std::path::PathBuf>,
                        pin: &Option<String>,
                        key: &'static str|
             -> Result<Option<ModelFiles>, ScoreError> {
                let Some(p) = p else { return Ok(None) };
                let files = ModelFiles::read(p).map_err(|e| in_route(&r.topic, p, e))?;
                if let Some(want) = pin {
                    let got = files.sha256();
                    if !got.eq_ignore_ascii_case(want.trim()) {
                        return Err(ScoreError::Pin {
                            topic: r.topic.clone(),
                            key,
                            want: want.clone(),
                            path: p.display().to_string(),
                            got,
                        });
                    }
                }
                Ok(Some(files))
            };
            routes.push((
                r.topic.clone(),
                [
                    read(&r.anomaly_model, &r.anomaly_model_sha256, "anomaly_model_sha256")?,
                    read(&r.label_model, &r.label_model_sha256, "label_model_sha256")?,
                    read(
                        &r.adversarial_model,
                        &r.adversarial_model_sha256,
                        "adversarial_model_sha256",
                    )?,
                ],
            ));
        }
        Ok(Self { routes })
    }
}

/// The models of one route.
pub struct RouteModels {
    /// The anomaly model, if the route has one.
    pub anomaly: Option<Scorer>,
    /// The label-consistency model, if the route has one.
    pub label: Option<Scorer>,
    /// The adversarial-example model (feature squeezing), if the route has one.
    pub adversarial: Option<Scorer>,
    /// The window scan over the label model's hidden representation (`scan.enabled` and a
    /// label model with scan statistics).
    pub scan: Option<SpectralScan>,
    topic: String,
}

/// One worker's models, by topic.
pub struct Scoring {
    routes: HashMap<String, RouteModels>,
}

/// What the models decided for one record.
#[derive(Debug, Default)]
pub struct Decision {
    /// The anomaly model's score.
    pub anomaly_score: Option<f32>,
    /// The label model's score (1 − p(given label)).
    pub label_score: Option<f32>,
    /// The adversarial model's score (largest rise of log p(given label) under a squeezer).
    pub adversarial_score: Option<f32>,
    /// What the window scan reads of the record (routes with a scan).
    pub scan: Option<ScanItem>,
    /// The models that flagged the record, comma-separated ids.
    pub model_id: Option<String>,
    /// Reasons to quarantine (empty: pass).
    pub reasons: Vec<Reason>,
    /// Per role, the model and its result (JSON), for flagged records.
    pub explanation: Option<String>,
}

/// The models' input rows of one batch, built from its typed rows.
#[derive(Default)]
pub struct Gathered {
    anomaly_rows: Vec<f32>,
    label_rows: Vec<f32>,
    /// Class index of each record's given label (`None`: not one of the model's classes).
    labels: Vec<Option<usize>>,
    adversarial_rows: Vec<f32>,
    /// As `labels`, in the adversarial model's classes.
    adversarial_labels: Vec<Option<usize>>,
    /// The adversarial model reads the label model's rows (same inputs and classes).
    adversarial_shares_label: bool,
}

/// A classifier's input rows and each row's given-label class index.
fn classified_rows(s: &Scorer, rows: &FeatureRows, out: &mut Vec<f32>, labels: &mut Vec<Option<usize>>) {
    out.reserve(rows.len() * s.extractor.width());
    let classes = &s.model.meta().classes;
    for r in 0..rows.len() {
        let row = rows.row(r);
        s.extractor.extend_from(row, out);
        labels.push(row.label().and_then(|given| classes.iter().position(|c| c == given)));
    }
}

fn settings(cfg: &Config) -> SessionSettings {
    SessionSettings {
        provider: match cfg.scoring.execution_provider {
            ExecutionProvider::Auto => ProviderChoice::Auto,
            ExecutionProvider::Cuda => ProviderChoice::Cuda,
            ExecutionProvider::Cpu => ProviderChoice::Cpu,
        },
        intra_threads: cfg.scoring.intra_threads,
        tf32: cfg.scoring.cuda_tf32,
    }
}

/// Whether any route has a model.
pub fn configured(cfg: &Config) -> bool {
    cfg.routes
        .iter()
        .any(|r| r.anomaly_model.is_some() || r.label_model.is_some() || r.adversarial_model.is_some())
}

/// Load the ONNX Runtime library (`scoring.library`, else `$ORT_DYLIB_PATH`).
pub fn init(cfg: &Config) -> Result<(), ScoreError> {
    let lib = cfg
        .scoring
        .library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into))
        .ok_or(ScoreError::NoRuntime)?;
    crate::init_runtime(&lib)
}

impl Scoring {
    /// Read every route's models and build one set of sessions (a worker's).
    pub fn load(cfg: &Config, sections: &Sections) -> Result<(Self, Option<ProviderInUse>), ScoreError> {
        Self::from_set(cfg, sections, &ModelSet::read(cfg)?)
    }

    /// Build one worker's sessions from files already read and checked. Returns the provider
    /// really in use (the same for all models: `auto` decides once per process in practice).
    pub fn from_set(
        cfg: &Config,
        sections: &Sections,
        set: &ModelSet,
    ) -> Result<(Self, Option<ProviderInUse>), ScoreError> {
        let settings = settings(cfg);
        let mut routes = HashMap::new();
        let mut provider = None;
        for (topic, [anomaly, label, adversarial]) in &set.routes {
            let Some(r) = cfg.routes.iter().find(|r| &r.topic == topic) else {
                continue;
            };
            let Some(guard) = sections.get(topic) else {
                continue;
            };
            let load = |f: &Option<ModelFiles>, t: Option<f64>| -> Result<Option<Scorer>, ScoreError> {
                f.as_ref()
                    .map(|f| Scorer::load(f, guard, &settings, t).map_err(|e| in_route(topic, &f.path, e)))
                    .transpose()
            };
            let label = load(label, r.label_threshold)?;
            let scan = match label
                .as_ref()
                .and_then(|l| l.model.meta().scan.as_ref().map(|s| (l, s)))
            {
                Some((l, s)) if cfg.scan.enabled => Some(
                    SpectralScan::new(s, &l.model.meta().classes, s.width().unwrap_or(0)).map_err(|m| {
                        ScoreError::Mismatch {
                            path: l.id.clone(),
                            message: m,
                        }
                    })?,
                ),
                _ => None,
            };
            let m = RouteModels {
                anomaly: load(anomaly, r.anomaly_threshold)?,
                label,
                adversarial: load(adversarial, r.adversarial_threshold)?,
                scan,
                topic: topic.clone(),
            };
            for s in m.scorers() {
                provider = Some(s.model.provider());
            }
            if m.scorers().next().is_some() {
                routes.insert(topic.clone(), m);
            }
        }
        Ok((Self { routes }, provider))
    }

    /// Log what is loaded (once, from the first worker).
    pub fn announce(&self) {
        for m in self.routes.values() {
            for s in m.scorers() {
                info!(
                    topic = %m.topic,
                    model = %s.id,
                    provider = s.model.provider().as_str(),
                    threshold = s.threshold,
                    calibration_fpr = s.model.meta().calibration_fpr,
                    "scoring model loaded"
                );
            }
        }
    }

    /// One line per model: topic, id, provider, threshold.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.routes.values() {
            for s in m.scorers() {
                let placement = s.model.node_placement().map_or_else(
                    |e| format!("placement unknown: {e}"),
                    |p| {
                        p.iter()
                            .map(|(provider, n)| format!("{n} nodes on {provider}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                );
                out.push(format!(
                    "{} {} on {} ({placement}), threshold {:.6} (calibrated FPR {:.4})",
                    m.topic,
                    s.id,
                    s.model.provider().as_str(),
                    s.threshold,
                    s.model.meta().calibration_fpr
                ));
            }
        }
        out.sort();
        out
    }

    /// The models for `topic`.
    pub fn route(&mut self, topic: &str) -> Option<&mut RouteModels> {
        self.routes.get_mut(topic)
    }
}

impl RouteModels {
    /// The route's models: anomaly, label, adversarial, whichever it has.
    pub fn scorers(&self) -> impl Iterator<Item = &Scorer> {
        self.anomaly.iter().chain(&self.label).chain(&self.adversarial)
    }

    /// The adversarial threshold in force, if the route has an adversarial model.
    pub fn adversarial_threshold(&self) -> Option<f64> {
        self.adversarial.as_ref().map(|s| s.threshold)
    }

    /// The anomaly threshold in force, if the route has an anomaly model.
    pub fn anomaly_threshold(&self) -> Option<f64> {
        self.anomaly.as_ref().map(|s| s.threshold)
    }

    /// The label threshold in force, if the route has a label model.
    pub fn label_threshold(&self) -> Option<f64> {
        self.label.as_ref().map(|s| s.threshold)
    }

    /// The models' input rows for every typed row of the batch (records that passed the checks).
    pub fn gather(&self, rows: &FeatureRows) -> Gathered {
        let mut g = Gathered::default();
        if let Some(a) = &self.anomaly {
            g.anomaly_rows.reserve(rows.len() * a.extractor.width());
            for r in 0..rows.len() {
                a.extractor.extend_from(rows.row(r), &mut g.anomaly_rows);
            }
        }
        if let Some(l) = &self.label {
            classified_rows(l, rows, &mut g.label_rows, &mut g.labels);
        }
        if let Some(a) = &self.adversarial {
            // The trainer gives both classifiers the same inputs and classes: the label
            // model's rows serve the adversarial model too, extracted once.
            g.adversarial_shares_label = self.label.as_ref().is_some_and(|l| {
                let (lm, am) = (l.model.meta(), a.model.meta());
                lm.inputs == am.inputs && lm.levels == am.levels && lm.classes == am.classes && lm.width == am.width
            });
            if !g.adversarial_shares_label {
                classified_rows(a, rows, &mut g.adversarial_rows, &mut g.adversarial_labels);
            }
        }
        g
    }

    /// Run the models on what was gathered; one decision per gathered record, in order.
    /// Scores go to histograms for every record; reasons and explanations are built only for
    /// records over a threshold (the common case costs no allocation per record).
    pub fn decide(&mut self, g: &Gathered, rows: &FeatureRows) -> Vec<Decision> {
        let n = rows.len();
        let mut out: Vec<Decision> = (0..n).map(|_| Decision::default()).collect();
        if n == 0 {
            return out;
        }
        // Pass 1: scores and flags.
        let mut anomaly: Option<(Vec<f32>, Vec<f32>)> = None;
        let mut label: Option<(Vec<f32>, Vec<f32>)> = None;
        if let Some(a) = self.anomaly.as_mut() {
            let t = std::time::Instant::now();
            match a.model.run(&g.anomaly_rows) {
                Ok(RoleScores::Anomaly { score, feature_error }) => {
                    let h = metrics::histogram!("guard_score_anomaly", "topic" => self.topic.clone());
                    for (d, s) in out.iter_mut().zip(&score) {
                        h.record(f64::from(*s));
                        d.anomaly_score = Some(*s);
                    }
                    anomaly = Some((score, feature_error));
                }
                Ok(_) => fail_all(&mut out, "anomaly model returned label outputs"),
                Err(e) => fail_all(&mut out, &format!("anomaly model: {e}")),
            }
            metrics::histogram!("guard_score_batch_duration_seconds", "role" => "anomaly")
                .record(t.elapsed().as_secs_f64());
        }
        if let Some(l) = self.label.as_mut() {
            let t = std::time::Instant::now();
            match l.model.run(&g.label_rows) {
                Ok(RoleScores::Label {
                    probabilities,
                    classifier,
                    hidden,
                }) => {
                    let meta = l.model.meta();
                    let c = meta.classes.len();
                    let h = metrics::histogram!("guard_score_label", "topic" => self.topic.clone());
                    let width = hidden.len().checked_div(n).unwrap_or(0);
                    let scanning = self.scan.is_some() && width > 0;
                    for (k, d) in out.iter_mut().enumerate() {
                        // A record without a label gives the label model nothing to check; a
                        // label the model does not know scores 1.
                        if g.labels[k].is_none() && rows.row(k).label().is_none() {
                            continue;
                        }
                        let at = k * c..(k + 1) * c;
                        let s = meta.label_score(
                            probabilities.get(at.clone()).unwrap_or_default(),
                            classifier.get(at).unwrap_or_default(),
                            g.labels[k],
                        );
                        h.record(f64::from(s));
                        d.label_score = Some(s);
                        if scanning {
                            d.scan = Some(ScanItem {
                                class: g.labels[k],
                                hidden: hidden[k * width..(k + 1) * width].to_vec(),
                                label_score: s,
                            });
                        }
                    }
                    label = Some((probabilities, classifier));
                }
                Ok(_) => fail_all(&mut out, "label model returned anomaly outputs"),
                Err(e) => fail_all(&mut out, &format!("label model: {e}")),
            }
            metrics::histogram!("guard_score_batch_duration_seconds", "role" => "label")
                .record(t.elapsed().as_secs_f64());
        }
        let mut squeezed: Vec<Option<Squeezed>> = Vec::new();
        if let Some(a) = self.adversarial.as_mut() {
            let t = std::time::Instant::now();
            let (x_rows, x_labels) = if g.adversarial_shares_label {
                (&g.label_rows, &g.labels)
            } else {
                (&g.adversarial_rows, &g.adversarial_labels)
            };
            match a.model.run(x_rows) {
                Ok(RoleScores::Adversarial { log_probabilities }) => {
                    let c = a.model.meta().classes.len();
                    let per_row = (1 + a.model.meta().squeezers.len()) * c;
                    let thresholds = a.model.meta().squeezer_thresholds.as_deref().unwrap_or_default();
                    let h = metrics::histogram!("guard_score_adversarial", "topic" => self.topic.clone());
                    for (k, d) in out.iter_mut().enumerate() {
                        let row = log_probabilities
                            .get(k * per_row..(k + 1) * per_row)
                            .unwrap_or_default();
                        let sq = squeeze_score(row, c, x_labels.get(k).copied().flatten(), thresholds);
                        // A row the model could not score is held back, never passed.
                        let s = sq.map_or(f32::NAN, |q| q.score);
                        h.record(f64::from(s));
                        d.adversarial_score = Some(s);
                        squeezed.push(sq);
                    }
                }
                Ok(_) => fail_all(&mut out, "adversarial model returned other outputs"),
                Err(e) => fail_all(&mut out, &format!("adversarial model: {e}")),
            }
            metrics::histogram!("guard_score_batch_duration_seconds", "role" => "adversarial")
                .record(t.elapsed().as_secs_f64());
        }
        // Pass 2: reasons and explanations for records over a threshold.
        for (k, d) in out.iter_mut().enumerate() {
            let a_over =
                matches!((&self.anomaly, d.anomaly_score), (Some(a), Some(s)) if over_threshold(s, a.threshold));
            let l_over = matches!((&self.label, d.label_score), (Some(l), Some(s)) if over_threshold(s, l.threshold));
            let x_over = matches!((&self.adversarial, d.adversarial_score), (Some(x), Some(s)) if over_threshold(s, x.threshold));
            if !(a_over || l_over || x_over) {
                continue;
            }
            let mut explanation = Explanation::default();
            if let (Some(a), Some((_, errors)), Some(s)) = (&self.anomaly, &anomaly, d.anomaly_score) {
                let w = a.extractor.width();
                let errs = &errors[k * w..(k + 1) * w];
                let mut top: Vec<usize> = (0..w).collect();
                let by_error = |x: &usize, y: &usize| errs[*y].total_cmp(&errs[*x]).then(x.cmp(y));
                if w > 3 {
                    top.select_nth_unstable_by(2, by_error);
                    top.truncate(3);
                }
                top.sort_by(by_error);
                if a_over {
                    let mut text = format!("anomaly score {s:.4} > {:.4}; top features ", a.threshold);
                    for (n, i) in top.iter().enumerate() {
                        let sep = if n == 0 { "" } else { ", " };
                        let _ = write!(text, "{sep}{} ({:.3})", a.extractor.name(*i), errs[*i]);
                    }
                    let mut r = Reason::new(ReasonCode::SCORE_ANOMALY, text);
                    if let Some(p) = top.first().and_then(|i| a.extractor.pointer(*i)) {
                        r = r.at(p);
                    }
                    d.reasons.push(r);
                }
                explanation.anomaly = Some(Role {
                    model: &a.id,
                    result: AnomalyResult {
                        over: a_over,
                        score: wide(s),
                        threshold: a.threshold,
                        top: top
                            .iter()
                            .map(|i| TopFeature {
                                error: wide(errs[*i]),
                                feature: a.extractor.name(*i),
                            })
                            .collect(),
                    },
                });
                add_model(d, &a.id);
            }
            if let (Some(l), Some((probabilities, classifier)), Some(s)) = (&self.label, &label, d.label_score) {
                let meta = l.model.meta();
                let classes = &meta.classes;
                let c = classes.len();
                let p = &probabilities[k * c..(k + 1) * c];
                let given_at = g.labels.get(k).copied().flatten();
                let p_at = |row: &[f32]| given_at.and_then(|i| row.get(i)).copied().unwrap_or(0.0);
                let (best, p_best) = p
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map_or((0, 0.0), |(i, v)| (i, *v));
                let given = rows.row(k).label().unwrap_or("(none)");
                let p_given = p_at(p);
                if l_over {
                    let text = match (meta.label_statistics, classifier.get(k * c..(k + 1) * c)) {
                        (Some(t), Some(q)) => format!(
                            "label {given} has p={p_given:.4} by the vote of its nearest training rows (1 - p over {:.4}: {:.4}) and p={:.4} by the classifier (1 - p over {:.4}: {:.4}); the vote predicts {} (p={p_best:.4})",
                            t.neighbours,
                            f64::from(1.0 - p_given) / t.neighbours,
                            p_at(q),
                            t.classifier,
                            f64::from(1.0 - p_at(q)) / t.classifier,
                            classes[best]
                        ),
                        _ => format!(
                            "label {given} has p={p_given:.4} (score {s:.4} > {:.4}); the model predicts {} (p={p_best:.4})",
                            l.threshold, classes[best]
                        ),
                    };
                    d.reasons.push(Reason::new(ReasonCode::SCORE_LABEL, text));
                }
                explanation.label = Some(Role {
                    model: &l.id,
                    result: LabelResult {
                        given,
                        over: l_over,
                        p_given: wide(p_given),
                        p_predicted: wide(p_best),
                        predicted: &classes[best],
                        score: wide(s),
                        threshold: l.threshold,
                    },
                });
                add_model(d, &l.id);
            }
            if let (Some(x), Some(s)) = (&self.adversarial, d.adversarial_score) {
                let meta = x.model.meta();
                let sq = squeezed.get(k).copied().flatten();
                let name = |i: usize| meta.classes.get(i).map_or("?", String::as_str);
                let squeezer = sq
                    .and_then(|q| meta.squeezers.get(q.squeezer))
                    .map_or("?", String::as_str);
                let (from, to) = sq.map_or(("?", "?"), |q| (name(q.from), name(q.to)));
                // With a threshold per squeezer the score is a rise over its threshold.
                let own = sq.and_then(|q| meta.squeezer_thresholds.as_ref()?.get(q.squeezer).copied());
                let rise = sq.map_or(s, |q| q.rise);
                if x_over {
                    let bar = match own {
                        Some(t) => format!("{t:.4} (that squeezer's threshold)"),
                        None => format!("{:.4}", x.threshold),
                    };
                    d.reasons.push(Reason::new(
                        ReasonCode::SCORE_ADVERSARIAL,
                        adversarial_reason(squeezer, from, to, rise, &bar),
                    ));
                }
                explanation.adversarial = Some(Role {
                    model: &x.id,
                    result: AdversarialResult {
                        from,
                        over: x_over,
                        rise: own.and(wide(rise)),
                        score: wide(s),
                        squeezer,
                        squeezer_threshold: own,
                        threshold: x.threshold,
                        to,
                    },
                });
                add_model(d, &x.id);
            }
            d.explanation = serde_json::to_string(&explanation).ok();
        }
        out
    }
}

/// Over the threshold, or not a number (a NaN score never passes).
fn over_threshold(score: f32, threshold: f64) -> bool {
    use std::cmp::Ordering::{Equal, Less};
    !matches!(f64::from(score).partial_cmp(&threshold), Some(Less | Equal))
}

/// A finite score as f64 (`None` for NaN or infinite).
fn wide(x: f32) -> Option<f64> {
    finite(x).map(f64::from)
}

fn finite(x: f32) -> Option<f32> {
    x.is_finite().then_some(x)
}

/// A flagged record's explanation, as stored in its quarantine row: per role, the model and
/// its result. Fields are in key order and scores widened to f64, so the text is what the
/// earlier `serde_json::Value` form wrote.
#[derive(Default, serde::Serialize)]
struct Explanation<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    anomaly: Option<Role<'a, AnomalyResult<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<Role<'a, LabelResult<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adversarial: Option<Role<'a, AdversarialResult<'a>>>,
}

#[derive(serde::Serialize)]
struct AdversarialResult<'a> {
    from: &'a str,
    over: bool,
    /// With a threshold per squeezer: that squeezer's rise of log p(label) (the score is
    /// the rise over `squeezer_threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    rise: Option<f64>,
    score: Option<f64>,
    squeezer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    squeezer_threshold: Option<f64>,
    threshold: f64,
    to: &'a str,
}

#[derive(serde::Serialize)]
struct Role<'a, R> {
    model: &'a str,
    result: R,
}

#[derive(serde::Serialize)]
struct AnomalyResult<'a> {
    over: bool,
    score: Option<f64>,
    threshold: f64,
    top: Vec<TopFeature<'a>>,
}

#[derive(serde::Serialize)]
struct TopFeature<'a> {
    error: Option<f64>,
    feature: &'a str,
}

#[derive(serde::Serialize)]
struct LabelResult<'a> {
    given: &'a str,
    over: bool,
    p_given: Option<f64>,
    p_predicted: Option<f64>,
    predicted: &'a str,
    score: Option<f64>,
    threshold: f64,
}

/// Add a model to a flagged record's model id.
fn add_model(d: &mut Decision, id: &str) {
    d.model_id = Some(match d.model_id.take() {
        Some(m) => format!("{m},{id}"),
        None => id.to_owned(),
    });
}

/// A model failed: hold every record of the batch back (quarantine, never pass unscored).
fn fail_all(out: &mut [Decision], why: &str) {
    tracing::error!(
        why,
        "scoring failed; the batch's records are quarantined with score.error"
    );
    metrics::counter!("guard_score_failures_total").increment(1);
    for d in out {
        d.reasons.push(Reason::new(ReasonCode::SCORE_ERROR, why));
    }
}

/// Model hot-swap: a generation counter the workers compare at every batch. A new generation
/// is published only after the changed files loaded cleanly once (graph, metadata, schema);
/// each worker then loads its own sessions and swaps them between two batches, so a batch is
/// always scored by one model version, and every quarantine row names the version (model id =
/// hash of graph and metadata). If anything fails, the running models stay.
pub struct Reloader {
    cfg: Config,
    sections: Sections,
    generation: std::sync::atomic::AtomicU64,
    /// The validated files of the current generation: workers build their sessions from
    /// these bytes, never from the disk.
    current: std::sync::Mutex<std::sync::Arc<ModelSet>>,
    seen: std::sync::Mutex<Vec<(std::path::PathBuf, Option<FileStamp>)>>,
    last: std::sync::Mutex<Vec<String>>,
}

/// The loaded models' generation and one line per model (`GET /api/models`, a reload's answer).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelsStatus {
    /// Bumped by every reload that was published.
    pub generation: u64,
    /// Topic, model id, provider, placement and threshold of each model.
    pub models: Vec<String>,
}

/// A file's modification time and length.
type FileStamp = (std::time::SystemTime, u64);

fn stamp(p: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Reloader {
    /// A reloader whose current generation is `set` (already loaded as `loaded`).
    pub fn new(cfg: &Config, sections: Sections, set: std::sync::Arc<ModelSet>, loaded: &Scoring) -> Self {
        let files: Vec<std::path::PathBuf> = cfg
            .routes
            .iter()
            .flat_map(|r| r.anomaly_model.iter().chain(&r.label_model).chain(&r.adversarial_model))
            .flat_map(|p| [p.clone(), p.with_extension("json")])
            .collect();
        Self {
            cfg: cfg.clone(),
            sections,
            generation: std::sync::atomic::AtomicU64::new(0),
            current: std::sync::Mutex::new(set),
            seen: std::sync::Mutex::new(files.into_iter().map(|p| (p.clone(), stamp(&p))).collect()),
            last: std::sync::Mutex::new(loaded.describe()),
        }
    }

    /// Current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Build this worker's sessions from the current generation's validated files.
    pub fn load(&self) -> Result<Scoring, ScoreError> {
        let set = std::sync::Arc::clone(&*guard_core::lock(&self.current));
        Ok(Scoring::from_set(&self.cfg, &self.sections, &set)?.0)
    }

    /// Read the files as they are now, check their pins, validate them by building sessions,
    /// and publish them as a new generation (`POST /api/models/reload`, or the watcher on a
    /// change). Nothing is swapped when any step fails.
    pub fn reload(&self, why: &str) -> Result<ModelsStatus, String> {
        let loaded = ModelSet::read(&self.cfg)
            .and_then(|set| Scoring::from_set(&self.cfg, &self.sections, &set).map(|(s, _)| (set, s)));
        match loaded {
            Ok((set, s)) => {
                let models = s.describe();
                // Publish the bytes first, then the generation: a worker that sees the new
                // generation builds from the new bytes.
                *guard_core::lock(&self.current) = std::sync::Arc::new(set);
                let g = self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
                info!(generation = g, why, models = ?models, "models reloaded; workers swap at their next batch");
                metrics::counter!("guard_score_reloads_total").increment(1);
                *guard_core::lock(&self.last) = models.clone();
                Ok(ModelsStatus { generation: g, models })
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(why, error = %msg, "model reload refused; the running models stay");
                metrics::counter!("guard_score_reload_failures_total").increment(1);
                Err(msg)
            }
        }
    }

    /// `GET /api/models`.
    pub fn status(&self) -> ModelsStatus {
        ModelsStatus {
            generation: self.generation(),
            models: guard_core::lock(&self.last).clone(),
        }
    }

    /// Whether any model or metadata file changed since the last call.
    pub fn files_changed(&self) -> bool {
        let mut seen = guard_core::lock(&self.seen);
        let mut changed = false;
        for (p, s) in seen.iter_mut() {
            let now = stamp(p);
            if now != *s {
                *s = now;
                changed = true;
            }
        }
        changed
    }
}

/// Poll the model files every `interval` and reload on a change (own thread; stops with the
/// process).
pub fn watch(reloader: std::sync::Arc<Reloader>, interval: std::time::Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("guard-model-watch".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            if reloader.files_changed() {
                // Let a copy finish before loading it.
                std::thread::sleep(std::time::Duration::from_millis(200));
                reloader.files_changed();
                let _ = reloader.reload("model files changed");
            }
        })
        .map(drop)
}

/// The `score.adversarial` reason: which squeezer fired, what it did to the prediction (it may
/// change the predicted class, or only how sure the model is), and the rise over the bar.
fn adversarial_reason(squeezer: &str, from: &str, to: &str, rise: f32, bar: &str) -> String {
    let moved = if from == to {
        format!("keeps the prediction {from}, but")
    } else {
        format!("moves the prediction from {from} to {to}:")
    };
    format!("squeezer '{squeezer}' {moved} log p(label) rises by {rise:.4} > {bar}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adversarial_reason_says_whether_the_prediction_moved() {
        assert_eq!(
            adversarial_reason("bit depth 1", "2", "2", 2.2869, "1.7068"),
            "squeezer 'bit depth 1' keeps the prediction 2, but log p(label) rises by 2.2869 > 1.7068"
        );
        assert_eq!(
            adversarial_reason("median 2x2", "7", "1", 3.0, "1.5000"),
            "squeezer 'median 2x2' moves the prediction from 7 to 1: log p(label) rises by 3.0000 > 1.5000"
        );
    }
    use serde_json::json;

    #[test]
    fn explanation_text_is_what_the_value_form_wrote() {
        let (s, e, p) = (0.123_456_79_f32, 3.25_f32, f32::NAN);
        let typed = Explanation {
            anomaly: Some(Role {
                model: "m/anomaly@1",
                result: AnomalyResult {
                    over: true,
                    score: wide(s),
                    threshold: 0.1,
                    top: vec![TopFeature {
                        error: wide(e),
                        feature: "f3",
                    }],
                },
            }),
            label: Some(Role {
                model: "m/label@2",
                result: LabelResult {
                    given: "7",
                    over: false,
                    p_given: wide(p),
                    p_predicted: wide(0.9),
                    predicted: "1",
                    score: wide(1.0 - s),
                    threshold: 0.99,
                },
            }),
            adversarial: None,
        };
        let value = json!({
            "anomaly": {"model": "m/anomaly@1", "result": {"score": finite(s), "threshold": 0.1, "over": true,
                "top": [{"feature": "f3", "error": finite(e)}]}},
            "label": {"model": "m/label@2", "result": {"score": finite(1.0 - s), "threshold": 0.99, "over": false,
                "given": "7", "p_given": finite(p), "predicted": "1", "p_predicted": finite(0.9)}},
        });
        assert_eq!(serde_json::to_string(&typed).ok(), serde_json::to_string(&value).ok());
    }

    #[test]
    fn nan_never_passes() {
        assert!(over_threshold(f32::NAN, 0.5));
        assert!(over_threshold(0.6, 0.5));
        assert!(!over_threshold(0.5, 0.5));
        assert!(!over_threshold(0.1, 0.5));
    }
}
