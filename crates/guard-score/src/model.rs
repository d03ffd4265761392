//! Runtime initialisation, model loading with metadata checks, provider choice and inference.

use crate::ScoreError;
use guard_core::features::category_text;
use guard_core::{FieldPath, GuardSection, RowRef};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Metadata format this guard reads.
pub const MODEL_FORMAT: u32 = 1;

static ENV: OnceLock<Environment> = OnceLock::new();

/// Load the ONNX Runtime library at `path` once per process. Later calls return the first
/// result's environment (the library cannot be swapped within a process).
pub fn init_runtime(path: &Path) -> Result<(), ScoreError> {
    let fail = |message: String| ScoreError::Runtime {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    // One loader at a time: two threads that both found no environment would both load the
    // library and build an environment, and ONNX Runtime crashes on that (seen as SIGSEGV
    // when tests ran two at a time).
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOADING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if ENV.get().is_some() {
        return Ok(());
    }
    let env = ort::init_from(path)
        .map_err(|e| fail(e.to_string()))?
        .with_name("ingest-guard")
        .with_logger(std::sync::Arc::new(ort_log))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let _ = ENV.set(env);
    Ok(())
}

/// Node placements reported by probe sessions, by probe log id.
static PLACEMENTS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Prefix of the log id of placement probe sessions.
const PROBE_ID: &str = "guard-placement-probe-";

/// ONNX Runtime's log: placement lines of probe sessions are kept for
/// [`Model::node_placement`]; warnings and errors go to `tracing`; the rest is dropped.
fn ort_log(level: ort::logging::LogLevel, category: &str, id: &str, location: &str, message: &str) {
    use ort::logging::LogLevel;
    if id.starts_with(PROBE_ID) {
        if message.contains("placed on [") {
            if let Ok(mut p) = PLACEMENTS.lock() {
                p.push((id.to_owned(), message.to_owned()));
            }
        }
        return;
    }
    match level {
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Error | LogLevel::Fatal => tracing::error!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Verbose | LogLevel::Info => {}
    }
}

/// Which execution provider to ask for (`scoring.execution_provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    /// CUDA when it loads, else CPU, announced.
    #[default]
    Auto,
    /// CUDA or refuse to start.
    Cuda,
    /// CPU only.
    Cpu,
}

/// The execution provider a session really runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderInUse {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// The CUDA provider.
    Cuda,
}

impl ProviderInUse {
    /// `cpu` or `cuda`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderInUse::Cpu => "cpu",
            ProviderInUse::Cuda => "cuda",
        }
    }
}

/// Session options.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Provider requested.
    pub provider: ProviderChoice,
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// On CUDA, allow TensorFloat-32 matrix products (ONNX Runtime's own default is on; the
    /// guard asks for it explicitly either way, so CPU and GPU decide alike unless told).
    pub tf32: bool,
}

/// The model roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Autoencoder: `score` and `feature_error` outputs.
    Anomaly,
    /// Classifier: `probabilities` output; score = 1 − p(label).
    Label,
    /// Feature squeezing: a classifier's `log_probabilities` on the row and on each squeezed
    /// copy (`[N, 1 + squeezers, classes]`); score = the largest rise of log p(given label).
    Adversarial,
}

/// Adversarial role: log-probabilities are floored at ln 1e-6 before they are compared (the
/// trainer's `LOG_FLOOR`), so a class the model rules out does not make a huge score alone.
pub const LOG_FLOOR: f32 = -13.815_511;

/// One row's adversarial verdict from its log-probabilities (`[1 + squeezers, classes]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Squeezed {
    /// The largest rise of log p(class) over the squeezers, each rise over its squeezer's
    /// threshold when the model has `squeezer_thresholds` (NaN when the row holds a NaN).
    pub score: f32,
    /// That squeezer's rise of log p(class) itself.
    pub rise: f32,
    /// The squeezer that gave it (index into `ModelMeta::squeezers`).
    pub squeezer: usize,
    /// The class the original row is predicted as.
    pub from: usize,
    /// The class that squeezer's copy is predicted as.
    pub to: usize,
}

/// Score one row: with `given` (the given label's class index), the largest rise of its
/// log-probability under a squeezer; without, of the original prediction's. With
/// `thresholds` (one per squeezer, each positive) each rise is divided by its squeezer's
/// threshold first; empty: as it is. Log-probabilities are floored at [`LOG_FLOOR`]. `None`
/// for a malformed row (fewer than two blocks, or thresholds that do not match the blocks).
pub fn squeeze_score(
    log_probabilities: &[f32],
    classes: usize,
    given: Option<usize>,
    thresholds: &[f64],
) -> Option<Squeezed> {
    if classes == 0 || log_probabilities.len() < 2 * classes || !log_probabilities.len().is_multiple_of(classes) {
        return None;
    }
    if !thresholds.is_empty() && thresholds.len() + 1 != log_probabilities.len() / classes {
        return None;
    }
    let argmax = |b: &[f32]| {
        b.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |(bi, bv), (i, v)| if *v > bv { (i, *v) } else { (bi, bv) },
            )
            .0
    };
    let blocks: Vec<&[f32]> = log_probabilities.chunks(classes).collect();
    let from = argmax(blocks[0]);
    let c = given.filter(|c| *c < classes).unwrap_or(from);
    let base = blocks[0][c].max(LOG_FLOOR);
    let mut best = Squeezed {
        score: f32::NEG_INFINITY,
        rise: f32::NEG_INFINITY,
        squeezer: 0,
        from,
        to: from,
    };
    // `f32::max` would hide a NaN behind the floor: a NaN anywhere makes the score NaN.
    if log_probabilities.iter().any(|v| v.is_nan()) {
        best.score = f32::NAN;
        best.rise = f32::NAN;
        return Some(best);
    }
    for (k, b) in blocks.iter().enumerate().skip(1) {
        let rise = b[c].max(LOG_FLOOR) - base;
        let score = match thresholds.get(k - 1) {
            Some(t) => (f64::from(rise) / t) as f32,
            None => rise,
        };
        if score > best.score {
            best = Squeezed {
                score,
                rise,
                squeezer: k - 1,
                from,
                to: argmax(b),
            };
        }
    }
    Some(best)
}

impl ModelMeta {
    /// A label model's score of one row: 1 − p(given label), or with `label_statistics` the
    /// larger of the classifier's and the neighbour vote's, each over its own threshold.
    /// `probabilities` and `classifier` are the row's (`classifier` empty without a second
    /// statistic); a label the model does not know (`given` None) has p 0. NaN stays NaN.
    pub fn label_score(&self, probabilities: &[f32], classifier: &[f32], given: Option<usize>) -> f32 {
        let p = |row: &[f32]| given.map_or(0.0, |i| row.get(i).copied().unwrap_or(f32::NAN));
        match self.label_statistics {
            Some(t) if !classifier.is_empty() => {
                let a = f64::from(1.0 - p(classifier)) / t.classifier.max(f64::MIN_POSITIVE);
                let b = f64::from(1.0 - p(probabilities)) / t.neighbours.max(f64::MIN_POSITIVE);
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b) as f32
                }
            }
            _ => 1.0 - p(probabilities),
        }
    }
}

/// A label model's two statistics' thresholds (`label_statistics` in its metadata).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelStatistics {
    /// Threshold of 1 − the classifier's p(given label).
    pub classifier: f64,
    /// Threshold of 1 − the neighbour vote's p(given label).
    pub neighbours: f64,
}

/// A model's metadata (`<model>.json` next to `<model>.onnx`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// [`MODEL_FORMAT`].
    pub format: u32,
    /// Role.
    pub role: Role,
    /// Schema identity (`x-guard.id`).
    pub schema_id: String,
    /// Input fields in order: numeric feature, categorical feature or tensor names of the
    /// schema.
    pub inputs: Vec<String>,
    /// Categorical inputs: the levels the model knows, in code order. The guard passes a
    /// level's index (−1 for a value the model never saw, or none); the graph encodes it.
    #[serde(default)]
    pub levels: BTreeMap<String, Vec<String>>,
    /// Input width (sum of the inputs' sizes).
    pub width: usize,
    /// Graph input name.
    pub input_name: String,
    /// Score threshold (calibrated on held-out trusted rows).
    pub threshold: f64,
    /// False-positive rate targeted by calibration.
    pub target_fpr: f64,
    /// False-positive rate measured on the calibration rows.
    pub calibration_fpr: f64,
    /// SHA-256 of the trusted rows (training + calibration).
    pub trusted_sha256: String,
    /// Trusted rows.
    pub trusted_rows: u64,
    /// Anomaly: graph output with the score.
    #[serde(default)]
    pub score_output: Option<String>,
    /// Anomaly: graph output with per-feature error.
    #[serde(default)]
    pub feature_error_output: Option<String>,
    /// Label: graph output with class probabilities.
    #[serde(default)]
    pub probabilities_output: Option<String>,
    /// Label: graph output with the classifier's own probabilities when `probabilities` is
    /// the vote of its nearest training rows (what gradient attacks aim at: the vote is
    /// piecewise constant).
    #[serde(default)]
    pub classifier_probabilities_output: Option<String>,
    /// Label and adversarial: classes in probability order, as the schema's label renders
    /// them.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Adversarial: graph output with the log-probabilities, `[N, 1 + squeezers, classes]`.
    #[serde(default)]
    pub log_probabilities_output: Option<String>,
    /// Adversarial: the squeezers in output order (after the original row), e.g.
    /// `bit depth 1`, `median 2x2`.
    #[serde(default)]
    pub squeezers: Vec<String>,
    /// Adversarial: each squeezer's threshold of the rise of log p(label), in `squeezers`
    /// order, when they differ (the `autoencoder` reformer's clean rises run higher than the
    /// bit-depth squeezers'): the score is the largest rise over its squeezer's threshold
    /// ([`squeeze_score`]), and `threshold` is 1. Absent: one threshold, `threshold`.
    #[serde(default)]
    pub squeezer_thresholds: Option<Vec<f64>>,
    /// Label: the window scan's statistics (with a `hidden` graph output), if trained.
    #[serde(default)]
    pub scan: Option<crate::ScanMeta>,
    /// Label: when `probabilities` is the neighbour vote and `classifier_probabilities_output`
    /// the classifier's own, the threshold of each statistic, `classifier` (1 − its
    /// p(given label)) and `neighbours` (1 − the vote's): the score is the larger of the two
    /// over its own threshold ([`ModelMeta::label_score`]), and `threshold` is 1.
    #[serde(default)]
    pub label_statistics: Option<LabelStatistics>,
    /// Everything else the training tool recorded (seed, versions, split).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// Builds a model's input row from a record, following the metadata's input order.
#[derive(Debug, Clone)]
pub struct Extractor {
    parts: Vec<Part>,
    names: Vec<String>,
    width: usize,
}

/// One model input: a numeric feature (column of the typed row), a categorical feature's
/// level code, or a whole tensor.
#[derive(Debug, Clone)]
enum Part {
    Numeric {
        col: usize,
        path: FieldPath,
    },
    Categorical {
        j: usize,
        codes: HashMap<String, f32>,
        path: FieldPath,
    },
    Tensor {
        t: usize,
        len: usize,
        shape: Vec<usize>,
        path: FieldPath,
    },
}

/// Code of a categorical value the model never saw (or an absent one).
const UNSEEN: f32 = -1.0;

impl Part {
    fn width(&self) -> usize {
        match self {
            Part::Numeric { .. } | Part::Categorical { .. } => 1,
            Part::Tensor { len, .. } => *len,
        }
    }

    fn path(&self) -> &FieldPath {
        match self {
            Part::Numeric { path, .. } | Part::Categorical { path, .. } | Part::Tensor { path, .. } => path,
        }
    }
}

impl Extractor {
    /// Resolve `meta.inputs` against the schema's `x-guard` section: each must be a numeric
    /// feature (width 1) or a tensor (its element count), and the widths must add up to
    /// `meta.width`.
    pub fn new(meta: &ModelMeta, g: &GuardSection) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut names = Vec::new();
        for input in &meta.inputs {
            if let Some((col, f)) = g.numeric.iter().enumerate().find(|(_, f)| &f.name == input) {
                let path = FieldPath::parse(&f.pointer)?;
                parts.push(Part::Numeric { col, path });
                names.push(f.name.clone());
            } else if let Some((j, f)) = g.categorical.iter().enumerate().find(|(_, f)| &f.name == input) {
                let levels = meta.levels.get(input).ok_or_else(|| {
                    format!("model input {input:?} is categorical but the metadata lists no levels for it")
                })?;
                let codes = levels.iter().enumerate().map(|(i, l)| (l.clone(), i as f32)).collect();
                let path = FieldPath::parse(&f.pointer)?;
                parts.push(Part::Categorical { j, codes, path });
                names.push(f.name.clone());
            } else if let Some((t, tf)) = g.tensors.iter().enumerate().find(|(_, t)| &t.name == input) {
                let len = tf
                    .len()
                    .ok_or_else(|| format!("tensor {} has an empty shape", tf.name))?;
                let path = FieldPath::parse(&tf.pointer)?;
                parts.push(Part::Tensor {
                    t,
                    len,
                    shape: tf.shape.clone(),
                    path,
                });
                names.extend((0..len).map(|i| format!("{}[{i}]", tf.name)));
            } else {
                return Err(format!(
                    "model input {input:?} is neither a numeric or categorical feature nor a tensor of schema {}",
                    g.id
                ));
            }
        }
        let width: usize = parts.iter().map(Part::width).sum();
        if width != meta.width {
            return Err(format!(
                "model inputs {:?} are {width} values in schema {}, the model takes {}",
                meta.inputs, g.id, meta.width
            ));
        }
        Ok(Self { parts, names, width })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Name of input value `i` (`f3`, `pixels[412]`), for explanations.
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    /// JSON pointer of input value `i` in the record (`/features/2`, `/pixels/412`).
    pub fn pointer(&self, mut i: usize) -> Option<String> {
        for p in &self.parts {
            let n = p.width();
            if i < n {
                let pointer = p.path().as_str();
                return Some(match p {
                    Part::Numeric { .. } | Part::Categorical { .. } => pointer.to_owned(),
                    Part::Tensor { .. } => format!("{pointer}/{i}"),
                });
            }
            i -= n;
        }
        None
    }

    /// Append one record's row to `out` from its typed row (extracted once by the pipeline).
    #[inline]
    pub fn extend_from(&self, row: RowRef<'_>, out: &mut Vec<f32>) {
        let numeric = row.numeric();
        for p in &self.parts {
            match p {
                Part::Numeric { col, .. } => out.push(numeric.get(*col).map_or(f32::NAN, |x| *x as f32)),
                Part::Categorical { j, codes, .. } => {
                    out.push(
                        row.categorical(*j)
                            .and_then(|v| codes.get(v))
                            .copied()
                            .unwrap_or(UNSEEN),
                    );
                }
                Part::Tensor { t, len, .. } => {
                    let v = row.tensor(*t);
                    if v.len() == *len {
                        out.extend_from_slice(v);
                    } else {
                        out.extend(std::iter::repeat_n(f32::NAN, *len));
                    }
                }
            }
        }
    }

    /// Append one record's row to `out` straight from its JSON (NaN for anything missing or
    /// not a number), by the same rules as the typed row.
    pub fn extend_row(&self, value: &Value, out: &mut Vec<f32>) {
        let mut text = String::new();
        for p in &self.parts {
            match (p, p.path().get(value)) {
                (Part::Numeric { .. }, v) => out.push(v.and_then(Value::as_f64).map_or(f32::NAN, |x| x as f32)),
                (Part::Categorical { codes, .. }, v) => {
                    text.clear();
                    let code = if category_text(v, &mut text) {
                        codes.get(&text).copied()
                    } else {
                        None
                    };
                    out.push(code.unwrap_or(UNSEEN));
                }
                (Part::Tensor { len, shape, .. }, v) => guard_core::extend_tensor(v, shape, *len, out),
            }
        }
    }
}

/// One batch's scores for one role.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleScores {
    /// Per row: the score and the per-feature errors (`width` per row).
    Anomaly {
        /// Scores, one per row.
        score: Vec<f32>,
        /// Row-major `[rows, width]`.
        feature_error: Vec<f32>,
    },
    /// Per row: class probabilities (`classes` per row).
    Label {
        /// Row-major `[rows, classes]`.
        probabilities: Vec<f32>,
        /// Row-major `[rows, classes]`: the classifier's own probabilities where
        /// `probabilities` is the neighbour vote (`classifier_probabilities_output`), else empty.
        classifier: Vec<f32>,
        /// Row-major `[rows, hidden width]` when the model has a scan section, else empty.
        hidden: Vec<f32>,
    },
    /// Per row: log-probabilities on the row and each squeezed copy.
    Adversarial {
        /// Row-major `[rows, 1 + squeezers, classes]`.
        log_probabilities: Vec<f32>,
    },
}

impl RoleScores {
    /// `more`'s rows after this one's (the same role; another role's rows are dropped).
    fn append(&mut self, more: RoleScores) {
        match (self, more) {
            (
                RoleScores::Anomaly { score, feature_error },
                RoleScores::Anomaly {
                    score: s,
                    feature_error: f,
                },
            ) => {
                score.extend(s);
                feature_error.extend(f);
            }
            (
                RoleScores::Label {
                    probabilities,
                    classifier,
                    hidden,
                },
                RoleScores::Label {
                    probabilities: p,
                    classifier: c,
                    hidden: h,
                },
            ) => {
                probabilities.extend(p);
                classifier.extend(c);
                hidden.extend(h);
            }
            (RoleScores::Adversarial { log_probabilities }, RoleScores::Adversarial { log_probabilities: l }) => {
                log_probabilities.extend(l);
            }
            _ => {}
        }
    }
}

/// Most rows one call of a graph takes on the CPU provider ([`Model::run`] splits larger
/// batches): ONNX Runtime keeps its largest activations per session, and a convolutional
/// label member's are about 0.2 MB per 28 × 28 row. Throughput on one core is the same or
/// better at 256 rows than at 1,024 for every committed graph (BENCHMARKS.md, "A
/// convolutional label member by default").
pub const CPU_RUN_ROWS: usize = 256;

/// A model's graph (`.onnx`) and metadata (`.json` beside it), read from disk once. Every
/// session of every worker is built from these same bytes, so what was validated (and pinned
/// by its SHA-256) is exactly what runs; nothing re-reads the files behind the guard's back.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The `.onnx` path (for messages).
    pub path: PathBuf,
    /// The graph's bytes.
    pub onnx: Arc<[u8]>,
    /// The metadata's bytes.
    pub meta: Arc<[u8]>,
}

impl ModelFiles {
    /// Read `path` and its metadata beside it.
    pub fn read(path: &Path) -> Result<Self, ScoreError> {
        let p = path.display().to_string();
        let meta_path = path.with_extension("json");
        let meta = std::fs::read(&meta_path).map_err(|e| ScoreError::Model {
            path: p.clone(),
            message: format!("metadata {}: {e}", meta_path.display()),
        })?;
        let onnx = std::fs::read(path).map_err(|e| ScoreError::Model {
            path: p,
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            onnx: Arc::from(onnx),
            meta: Arc::from(meta),
        })
    }

    /// SHA-256 of the graph's bytes followed by the metadata's, lowercase hex: what
    /// `cat model.onnx model.json | sha256sum` prints, and what a route's `*_model_sha256` pins.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&self.onnx);
        h.update(&self.meta);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A loaded model: one session (ONNX Runtime sessions are run with `&mut`; give each
/// inference thread its own).
pub struct Model {
    meta: ModelMeta,
    path: PathBuf,
    onnx: Arc<[u8]>,
    session: Session,
    provider: ProviderInUse,
    settings: SessionSettings,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("role", &self.meta.role)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Load `path` (`.onnx`) and its metadata (`.json` beside it), check they agree, and open
    /// a session on the requested provider. [`init_runtime`] must have succeeded.
    pub fn load(path: &Path, settings: &SessionSettings) -> Result<Self, ScoreError> {
        Self::from_files(&ModelFiles::read(path)?, settings)
    }

    /// As [`Model::load`], from files already read.
    pub fn from_files(files: &ModelFiles, settings: &SessionSettings) -> Result<Self, ScoreError> {
        let p = files.path.display().to_string();
        let model_err = |message: String| ScoreError::Model {
            path: p.clone(),
            message,
        };
        let meta_path = files.path.with_extension("json");
        let meta: ModelMeta = serde_json::from_slice(&files.meta)
            .map_err(|e| model_err(format!("metadata {}: {e}", meta_path.display())))?;
        if meta.format != MODEL_FORMAT {
            return Err(model_err(format!(
                "metadata format {}, this guard reads {MODEL_FORMAT}",
                meta.format
            )));
        }
        let env = ENV.get().ok_or_else(|| ScoreError::Runtime {
            path: "(not loaded)".into(),
            message: "init_runtime was not called".into(),
        })?;
        let (session, provider) = open_session(env, &files.onnx, settings, None).map_err(|e| match e {
            ScoreError::Inference(m) => model_err(format!("not a loadable ONNX model: {m}")),
            other => other,
        })?;
        let model = Self {
            meta,
            path: files.path.clone(),
            onnx: Arc::clone(&files.onnx),
            session,
            provider,
            settings: *settings,
        };
        model.check_graph()?;
        Ok(model)
    }

    fn mismatch(&self, message: String) -> ScoreError {
        ScoreError::Mismatch {
            path: self.path.display().to_string(),
            message,
        }
    }

    /// The graph has the input and outputs the metadata names, with matching widths.
    fn check_graph(&self) -> Result<(), ScoreError> {
        let m = &self.meta;
        let input = self
            .session
            .inputs()
            .iter()
            .find(|o| o.name() == m.input_name)
            .ok_or_else(|| {
                self.mismatch(format!(
                    "metadata input {:?}, graph inputs {:?}",
                    m.input_name,
                    self.session.inputs().iter().map(|o| o.name()).collect::<Vec<_>>()
                ))
            })?;
        let last_dim = |o: &ort::value::Outlet| o.dtype().tensor_shape().and_then(|s| s.last().copied());
        if let Some(w) = last_dim(input).filter(|w| *w > 0) {
            if w as usize != m.width {
                return Err(self.mismatch(format!("graph input width {w}, metadata width {}", m.width)));
            }
        }
        let outputs: Vec<&str> = self.session.outputs().iter().map(|o| o.name()).collect();
        let want: Vec<&String> = match m.role {
            Role::Anomaly => [&m.score_output, &m.feature_error_output]
                .into_iter()
                .flatten()
                .collect(),
            Role::Label => m.probabilities_output.iter().collect(),
            Role::Adversarial => m.log_probabilities_output.iter().collect(),
        };
        let need = if m.role == Role::Anomaly { 2 } else { 1 };
        if want.len() != need {
            return Err(self.mismatch(format!("metadata for role {:?} lacks its output names", m.role)));
        }
        for w in want {
            if !outputs.contains(&w.as_str()) {
                return Err(self.mismatch(format!("metadata output {w:?}, graph outputs {outputs:?}")));
            }
        }
        if let Some(scan) = &m.scan {
            if !outputs.contains(&scan.hidden_output.as_str()) {
                return Err(self.mismatch(format!(
                    "scan output {:?} is not among the graph outputs {outputs:?}",
                    scan.hidden_output
                )));
            }
            crate::SpectralScan::new(scan, &m.classes, scan.width().unwrap_or(0)).map_err(|e| self.mismatch(e))?;
        }
        if m.role == Role::Adversarial && (m.squeezers.is_empty() || m.classes.is_empty()) {
            return Err(self.mismatch("an adversarial model lists no squeezers or no classes".into()));
        }
        if let Some(t) = &m.squeezer_thresholds {
            if t.len() != m.squeezers.len() || t.iter().any(|t| !t.is_finite() || *t <= 0.0) {
                return Err(self.mismatch(format!(
                    "squeezer_thresholds must hold one positive number per squeezer ({} squeezers, got {t:?})",
                    m.squeezers.len()
                )));
            }
        }
        if m.role != Role::Anomaly {
            let name = match m.role {
                Role::Label => m.probabilities_output.as_deref(),
                _ => m.log_probabilities_output.as_deref(),
            };
            let probs = self.session.outputs().iter().find(|o| Some(o.name()) == name);
            if let Some(c) = probs.and_then(last_dim).filter(|c| *c > 0) {
                if c as usize != m.classes.len() {
                    return Err(self.mismatch(format!("graph has {c} classes, metadata lists {}", m.classes.len())));
                }
            }
        }
        if !(m.threshold.is_finite()) {
            return Err(self.mismatch("threshold is not a finite number".into()));
        }
        Ok(())
    }

    /// Check the model against a schema's `x-guard` section and return the row extractor
    /// for it.
    pub fn extractor_for(&self, g: &GuardSection) -> Result<Extractor, ScoreError> {
        if self.meta.schema_id != g.id {
            return Err(self.mismatch(format!(
                "trained for schema {:?}, the route's schema is {:?}",
                self.meta.schema_id, g.id
            )));
        }
        if self.meta.role != Role::Anomaly {
            let classes = g.label_classes;
            if g.label.is_none() && self.meta.role == Role::Label {
                return Err(self.mismatch(format!("a label model, but schema {} names no label", g.id)));
            }
            if classes.is_some_and(|c| c != self.meta.classes.len()) {
                return Err(self.mismatch(format!(
                    "{} classes, schema {} declares {classes:?}",
                    self.meta.classes.len(),
                    g.id
                )));
            }
        }
        Extractor::new(&self.meta, g).map_err(|m| self.mismatch(m))
    }

    /// Where ONNX Runtime placed the graph's nodes, as (provider, node count), e.g.
    /// `[("CUDAExecutionProvider", 10), ("CPUExecutionProvider", 2)]`: a probe session is
    /// opened with verbose logging on the same provider and its placement report is read.
    /// Nodes left on CPU while CUDA was asked for mean the model runs partly on CPU.
    pub fn node_placement(&self) -> Result<Vec<(String, usize)>, ScoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let env = ENV
            .get()
            .ok_or_else(|| ScoreError::Inference("runtime not loaded".into()))?;
        let bytes = Arc::clone(&self.onnx);
        let id = format!("{PROBE_ID}{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let settings = SessionSettings {
            provider: match self.provider {
                ProviderInUse::Cuda => ProviderChoice::Cuda,
                ProviderInUse::Cpu => ProviderChoice::Cpu,
            },
            ..self.settings
        };
        drop(open_session(env, &bytes, &settings, Some(&id))?);
        let lines: Vec<String> = PLACEMENTS
            .lock()
            .map(|mut p| {
                let (mine, rest): (Vec<_>, Vec<_>) = p.drain(..).partition(|(i, _)| *i == id);
                *p = rest;
                mine.into_iter().map(|(_, m)| m).collect()
            })
            .unwrap_or_default();
        Ok(parse_placement(&lines))
    }

    /// Metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// A label model's `run` returns the classifier's own probabilities as `probabilities`
    /// from here on, where the graph has them apart from the neighbour vote (gradient attacks
    /// aim there: the vote is piecewise constant in the input).
    pub fn aim_at_classifier(&mut self) {
        if let Some(o) = self.meta.classifier_probabilities_output.clone() {
            self.meta.probabilities_output = Some(o);
            self.meta.label_statistics = None;
        }
    }

    /// The provider this session really runs on.
    pub fn provider(&self) -> ProviderInUse {
        self.provider
    }

    /// Score `rows` (row-major, `meta.width` values per row). On the CPU provider, at most
    /// [`CPU_RUN_ROWS`] rows go through the graph at a time, so the activations ONNX Runtime
    /// holds per worker do not grow with the batch (a convolutional label member's grow with
    /// the image: about 0.2 MB per MNIST row); CUDA takes the whole batch.
    pub fn run(&mut self, rows: &[f32]) -> Result<RoleScores, ScoreError> {
        let w = self.meta.width;
        if w == 0 || !rows.len().is_multiple_of(w) {
            return Err(ScoreError::Inference(format!(
                "{} values is not whole rows of {w}",
                rows.len()
            )));
        }
        if self.provider == ProviderInUse::Cpu && rows.len() > CPU_RUN_ROWS * w {
            let mut parts = rows.chunks(CPU_RUN_ROWS * w);
            let mut all = self.run_rows(parts.next().unwrap_or_default())?;
            for part in parts {
                all.append(self.run_rows(part)?);
            }
            return Ok(all);
        }
        self.run_rows(rows)
    }

    /// [`Model::run`] on whole rows, in one call of the graph.
    fn run_rows(&mut self, rows: &[f32]) -> Result<RoleScores, ScoreError> {
        let w = self.meta.width;
        let n = rows.len() / w;
        if n == 0 {
            return Ok(match self.meta.role {
                Role::Anomaly => RoleScores::Anomaly {
                    score: Vec::new(),
                    feature_error: Vec::new(),
                },
                Role::Label => RoleScores::Label {
                    probabilities: Vec::new(),
                    classifier: Vec::new(),
                    hidden: Vec::new(),
                },
                Role::Adversarial => RoleScores::Adversarial {
                    log_probabilities: Vec::new(),
                },
            });
        }
        let inf = |e: ort::Error| ScoreError::Inference(e.to_string());
        // A view of the caller's rows: no copy (a 32k-row MNIST batch is 100 MB).
        let tensor = TensorRef::from_array_view(([n, w], rows)).map_err(inf)?;
        let input = self.meta.input_name.clone();
        // Only the outputs this role reads: ONNX Runtime then skips the nodes nothing needs
        // (a label model aimed at its classifier skips the neighbour vote).
        let needed: Vec<&str> = match self.meta.role {
            Role::Anomaly => vec![&self.meta.score_output, &self.meta.feature_error_output],
            Role::Label => vec![
                &self.meta.probabilities_output,
                if self.meta.label_statistics.is_some() {
                    &self.meta.classifier_probabilities_output
                } else {
                    &None
                },
            ],
            Role::Adversarial => vec![&self.meta.log_probabilities_output],
        }
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(self.meta.scan.iter().map(|s| s.hidden_output.as_str()))
        .collect();
        let options = if needed.len() < self.session.outputs().len() {
            let selector = needed
                .iter()
                .fold(ort::session::OutputSelector::no_default(), |s, o| s.with(*o));
            Some(ort::session::RunOptions::new().map_err(inf)?.with_outputs(selector))
        } else {
            None
        };
        let outputs = match &options {
            Some(o) => self.session.run_with_options(ort::inputs![input => tensor], o),
            None => self.session.run(ort::inputs![input => tensor]),
        }
        .map_err(inf)?;
        let extract = |name: &Option<String>, per_row: usize| -> Result<Vec<f32>, ScoreError> {
            let name = name.as_deref().unwrap_or_default();
            let v = outputs
                .get(name)
                .ok_or_else(|| ScoreError::Inference(format!("output {name:?} missing")))?;
            let (_, data) = v.try_extract_tensor::<f32>().map_err(inf)?;
            if data.len() != n * per_row {
                return Err(ScoreError::Inference(format!(
                    "output {name:?} has {} values for {n} rows of {per_row}",
                    data.len()
                )));
            }
            Ok(data.to_vec())
        };
        Ok(match self.meta.role {
            Role::Anomaly => RoleScores::Anomaly {
                score: extract(&self.meta.score_output, 1)?,
                feature_error: extract(&self.meta.feature_error_output, w)?,
            },
            Role::Label => RoleScores::Label {
                probabilities: extract(&self.meta.probabilities_output, self.meta.classes.len())?,
                classifier: match &self.meta.classifier_probabilities_output {
                    Some(o) if self.meta.label_statistics.is_some() => {
                        extract(&Some(o.clone()), self.meta.classes.len())?
                    }
                    _ => Vec::new(),
                },
                hidden: match &self.meta.scan {
                    Some(scan) => extract(&Some(scan.hidden_output.clone()), scan.width().unwrap_or(0))?,
                    None => Vec::new(),
                },
            },
            Role::Adversarial => RoleScores::Adversarial {
                log_probabilities: extract(
                    &self.meta.log_probabilities_output,
                    (1 + self.meta.squeezers.len()) * self.meta.classes.len(),
                )?,
            },
        })
    }
}

fn open_session(
    env: &Environment,
    bytes: &[u8],
    settings: &SessionSettings,
    probe: Option<&str>,
) -> Result<(Session, ProviderInUse), ScoreError> {
    let inf = |e: String| ScoreError::Inference(e);
    let builder = || -> Result<ort::session::builder::SessionBuilder, ScoreError> {
        let b = Session::builder(env)
            .map_err(|e| inf(e.to_string()))?
            .with_intra_threads(settings.intra_threads.max(1))
            .map_err(|e| inf(e.to_string()))?;
        match probe {
            Some(id) => b
                .with_log_id(id)
                .map_err(|e| inf(e.to_string()))?
                .with_log_level(ort::logging::LogLevel::Verbose)
                .map_err(|e| inf(e.to_string())),
            None => b
                .with_log_level(ort::logging::LogLevel::Warning)
                .map_err(|e| inf(e.to_string())),
        }
    };
    match settings.provider {
        ProviderChoice::Cpu => {
            let s = builder()?.commit_from_memory(bytes).map_err(|e| inf(e.to_string()))?;
            Ok((s, ProviderInUse::Cpu))
        }
        ProviderChoice::Cuda => cuda_session(builder()?, bytes, settings).map(|s| (s, ProviderInUse::Cuda)),
        ProviderChoice::Auto => match cuda_session(builder()?, bytes, settings) {
            Ok(s) => Ok((s, ProviderInUse::Cuda)),
            Err(ScoreError::CudaUnavailable(why)) => {
                tracing::warn!(why, "CUDA execution provider unavailable: scoring on CPU");
                let s = builder()?.commit_from_memory(bytes).map_err(|e| inf(e.to_string()))?;
                Ok((s, ProviderInUse::Cpu))
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda_session(
    builder: ort::session::builder::SessionBuilder,
    bytes: &[u8],
    settings: &SessionSettings,
) -> Result<Session, ScoreError> {
    let ep = ort::ep::CUDA::default()
        .with_tf32(settings.tf32)
        .build()
        .error_on_failure();
    let mut b = builder
        .with_execution_providers([ep])
        .map_err(|e| ScoreError::CudaUnavailable(e.to_string()))?;
    b.commit_from_memory(bytes)
        .map_err(|e| ScoreError::Inference(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(
    _builder: ort::session::builder::SessionBuilder,
    _bytes: &[u8],
    _settings: &SessionSettings,
) -> Result<Session, ScoreError> {
    Err(ScoreError::CudaUnavailable(
        "this build has no CUDA support (build with --features cuda and use an ONNX Runtime library built with CUDA)"
            .into(),
    ))
}

/// Parse ONNX Runtime's placement lines ("All nodes placed on [CPUExecutionProvider]. Number
/// of nodes: 12", "Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 10").
pub fn parse_placement(lines: &[String]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for l in lines {
        let Some(start) = l.find("placed on [") else { continue };
        let rest = &l[start + "placed on [".len()..];
        let Some(end) = rest.find(']') else { continue };
        let provider = rest[..end].to_owned();
        let count = rest
            .split("Number of nodes:")
            .nth(1)
            .and_then(|n| n.trim().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        match out.iter_mut().find(|(p, _)| *p == provider) {
            Some(e) => e.1 += count,
            None => out.push((provider, count)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn label_score_is_the_larger_statistic_over_its_threshold() {
        use super::{LabelStatistics, ModelMeta};
        let mut meta: ModelMeta = serde_json::from_value(serde_json::json!({
            "format": 1, "role": "label", "schema_id": "s", "inputs": ["x"], "width": 1,
            "input_name": "x", "threshold": 0.9, "target_fpr": 0.01, "calibration_fpr": 0.0,
            "trusted_sha256": "", "trusted_rows": 0, "classes": ["a", "b"]
        }))
        .unwrap();
        let (vote, clf) = ([0.25f32, 0.75], [0.02f32, 0.98]);
        // One statistic: 1 - p(given label) of `probabilities`, a label it does not know p 0.
        assert_eq!(meta.label_score(&vote, &clf, Some(0)), 0.75);
        assert_eq!(meta.label_score(&vote, &[], None), 1.0);
        // Two: each over its own threshold, the larger wins; the vote alone can fire.
        meta.label_statistics = Some(LabelStatistics {
            classifier: 0.99,
            neighbours: 0.5,
        });
        assert!((meta.label_score(&vote, &clf, Some(0)) - 1.5).abs() < 1e-6);
        assert!((meta.label_score(&vote, &clf, Some(1)) - 0.5).abs() < 1e-6);
        // The classifier alone can fire too (a row an adversarial example moved).
        let sharp = [0.0001f32, 0.9999];
        assert!((meta.label_score(&[0.9, 0.1], &sharp, Some(0)) - 0.9999 / 0.99).abs() < 1e-6);
        assert!(meta.label_score(&vote, &[f32::NAN, 0.5], Some(0)).is_nan());
        // Without the classifier's output (a model loaded for an attack) it is one statistic.
        assert_eq!(meta.label_score(&vote, &[], Some(0)), 0.75);
    }

    #[test]
    fn squeeze_score_is_the_largest_rise_of_the_given_class() {
        use super::{squeeze_score, LOG_FLOOR};
        let ln = |p: f32| p.ln();
        // Original predicts class 1 (0.8); squeezer 0 moves little, squeezer 1 gives class 0
        // (the given label) 0.9.
        let lp = [
            ln(0.1),
            ln(0.8),
            ln(0.1), //
            ln(0.2),
            ln(0.7),
            ln(0.1), //
            ln(0.9),
            ln(0.05),
            ln(0.05),
        ];
        let s = squeeze_score(&lp, 3, Some(0), &[]).unwrap();
        assert_eq!((s.squeezer, s.from, s.to), (1, 1, 0));
        assert!((s.score - (0.9f32.ln() - 0.1f32.ln())).abs() < 1e-5);
        // No label: the original prediction's class (1) is followed; both squeezers lower it.
        let s = squeeze_score(&lp, 3, None, &[]).unwrap();
        assert!(s.score < 0.0);
        // The floor keeps a ruled-out class from making a huge score alone.
        let tiny = [-50.0, 0.0, 0.0, -1e-6];
        let s = squeeze_score(&tiny, 2, Some(0), &[]).unwrap();
        assert!((s.score - (0.0 - LOG_FLOOR)).abs() < 1e-3);
        // Malformed rows and NaN never pass silently.
        assert!(squeeze_score(&lp[..3], 3, Some(0), &[]).is_none());
        assert!(squeeze_score(&[0.0, f32::NAN, 0.0, 0.0], 2, Some(1), &[])
            .unwrap()
            .score
            .is_nan());
        // A threshold per squeezer: each rise over its own. Squeezer 0's rise of class 0
        // (ln 2) over 0.1 beats squeezer 1's (ln 9) over 10.
        let s = squeeze_score(&lp, 3, Some(0), &[0.1, 10.0]).unwrap();
        assert_eq!(s.squeezer, 0);
        assert!((s.rise - 2f32.ln()).abs() < 1e-5);
        assert!((s.score - 2f32.ln() / 0.1).abs() < 1e-4);
        let s = squeeze_score(&lp, 3, Some(0), &[1.0, 1.0]).unwrap();
        assert_eq!((s.squeezer, s.score), (1, s.rise));
        // Thresholds that do not match the blocks: malformed.
        assert!(squeeze_score(&lp, 3, Some(0), &[1.0]).is_none());
    }

    use super::parse_placement;

    #[test]
    fn parses_split_placements() {
        let lines = vec![
            "Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 10".to_owned(),
            "Node(s) placed on [CPUExecutionProvider]. Number of nodes: 2".to_owned(),
            "unrelated".to_owned(),
        ];
        assert_eq!(
            parse_placement(&lines),
            vec![
                ("CUDAExecutionProvider".to_owned(), 10),
                ("CPUExecutionProvider".to_owned(), 2)
            ]
        );
        let all = vec!["All nodes placed on [CPUExecutionProvider]. Number of nodes: 8".to_owned()];
        assert_eq!(parse_placement(&all), vec![("CPUExecutionProvider".to_owned(), 8)]);
    }
}
