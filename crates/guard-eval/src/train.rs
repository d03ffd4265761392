//! `ingest-guard train`: anomaly and label-consistency models for any domain schema. The
//! training backend is Python (scikit-learn, onnx; `scripts/train_models.py`, carried in the
//! binary); this side prepares its input, runs it, and then checks that the guard itself
//! loads what it wrote: the models' inputs resolve against the schema, the guard's extractor
//! builds the same input rows from the same records as the trainer did, and ONNX Runtime in
//! this process reproduces the trainer's outputs on them.

use crate::read::{for_each_record, Input};
use crate::EvalError;
use guard_score::{Model, ProviderChoice, SessionSettings};
use guard_validate::DomainSchema;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The trainer, as committed (`scripts/train_models.py`).
pub const TRAINER: &str = include_str!("../../../scripts/train_models.py");

/// Default confidence with which the false-positive budget holds on further clean rows.
pub const FPR_CONFIDENCE: f64 = 0.9;

/// The label model's family (`--label-model`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LabelModel {
    /// A one-hidden-layer MLP over the encoded row: on image rows it ranks label flips worse
    /// than `Conv`, and its graph scores several times faster.
    Mlp,
    /// The default. For rows with an image tensor (a grid of at least 8 x 8): the MLP's
    /// probabilities averaged with a small convolutional network's (trained with jax), which
    /// ranks label flips better on both image sets the repository ships (BENCHMARKS.md, "A
    /// convolutional label member by default"). Without such a tensor it is the MLP.
    #[default]
    Conv,
    /// An RBF-kernel SVM's probabilities (libsvm's pairwise sigmoids and coupling, in the
    /// graph), the MLP's hidden layer for the scan. On a few thousand rows the stronger
    /// classifier; at most 20,000 training rows (BENCHMARKS.md, "A kernel label model").
    Svm,
}

impl LabelModel {
    /// The trainer's flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelModel::Mlp => "mlp",
            LabelModel::Conv => "conv",
            LabelModel::Svm => "svm",
        }
    }
}

impl std::str::FromStr for LabelModel {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self, EvalError> {
        match s {
            "mlp" => Ok(LabelModel::Mlp),
            "conv" => Ok(LabelModel::Conv),
            "svm" => Ok(LabelModel::Svm),
            other => Err(EvalError::Input(format!(
                "unknown label model {other:?} (mlp, conv, svm)"
            ))),
        }
    }
}

/// What `train` needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The domain schema (JSON Schema plus `x-guard`).
    pub schema: PathBuf,
    /// Roles to train (`anomaly`, `label`, `adversarial`); empty: anomaly, plus label when
    /// the schema names one and the rows hold two classes or more, plus adversarial when they
    /// also have a tensor.
    pub roles: Vec<String>,
    /// False-positive budget over all roles together (a clean record fired on by any model).
    pub target_fpr: f64,
    /// Confidence with which the budget holds on further clean rows (the thresholds are set
    /// by an order-statistic bound on the calibration rows).
    pub fpr_confidence: f64,
    /// Seed of the calibration split and of the networks' initialisation.
    pub seed: u64,
    /// The label model's family.
    pub label_model: LabelModel,
    /// The label MLP also trains on each row shifted by one element in each direction, on
    /// rows with an image grid of at least 8 x 8 (`--augment shifts`; `false`, the default:
    /// `--augment none`).
    pub shifts: bool,
    /// The label model's neighbour vote: `None` lets the trainer choose k on the calibration
    /// rows (0 among the candidates), `Some(0)` turns it off, `Some(k)` takes k neighbours.
    pub neighbours: Option<u32>,
    /// The adversarial role also squeezes through the anomaly role's image autoencoder
    /// (`--reformer`): `None` where the calibration rows can bound the budget with it (auto),
    /// `Some(true)` always, `Some(false)` never.
    pub reformer: Option<bool>,
    /// Output folder (`anomaly.onnx`, `anomaly.json`, `anomaly.fixture.json`, same for label).
    pub out: PathBuf,
    /// The Python interpreter with scikit-learn, onnx and onnxruntime.
    pub python: PathBuf,
    /// The ONNX Runtime library the guard loads (for the check after training).
    pub ort_library: PathBuf,
}

/// What the trainer reported (its last stdout line), plus the parity check's figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trained {
    /// The trainer's report: rows, roles, thresholds, sizes.
    pub report: Value,
    /// Largest absolute difference between the guard's outputs and the trainer's on the
    /// fixture rows, over all roles.
    pub parity_max_abs_diff: f64,
}

/// The Python that `train` runs when not told: `$INGEST_GUARD_PYTHON`, else the virtual
/// environment `scripts/setup.sh` makes (`.tools/venv-train` under `root`), else `python3`.
pub fn default_python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("INGEST_GUARD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root.join(".tools/venv-train/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The ONNX Runtime library when not told: `$ORT_DYLIB_PATH`, else the one setup installs.
pub fn default_ort_library(root: &Path) -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/onnxruntime/libonnxruntime.so.1.31.1"))
}

/// Train, calibrate and check models for `opts.schema` on the trusted records of `input`.
pub fn train(input: &Input<'_>, opts: &TrainOptions) -> Result<Trained, EvalError> {
    if !(opts.target_fpr > 0.0 && opts.target_fpr < 0.5) {
        return Err(EvalError::Input(format!(
            "target FPR {} is outside (0, 0.5)",
            opts.target_fpr
        )));
    }
    let schema = DomainSchema::load(&opts.schema)?;
    std::fs::create_dir_all(&opts.out).map_err(EvalError::io(&opts.out))?;
    let work = opts.out.join(".train");
    std::fs::create_dir_all(&work).map_err(EvalError::io(&work))?;
    // The trainer reads JSON Lines; other inputs (Parquet, a topic range) are written out
    // first, record by record as `baseline` reads them.
    let rows_path = work.join("trusted.jsonl");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for_each_record(input, &mut |_, bytes| {
        let t = bytes.trim_ascii();
        if !t.is_empty() {
            lines.push(t.to_vec());
        }
    })?;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&rows_path).map_err(EvalError::io(&rows_path))?);
        for l in &lines {
            f.write_all(l)
                .and_then(|()| f.write_all(b"\n"))
                .map_err(EvalError::io(&rows_path))?;
        }
        f.flush().map_err(EvalError::io(&rows_path))?;
    }
    let script = work.join("train_models.py");
    std::fs::write(&script, TRAINER).map_err(EvalError::io(&script))?;
    let mut cmd = Command::new(&opts.python);
    cmd.arg(&script)
        .arg("--schema")
        .arg(&opts.schema)
        .arg("--input")
        .arg(&rows_path)
        .arg("--out")
        .arg(&opts.out)
        .arg("--seed")
        .arg(opts.seed.to_string())
        .arg("--target-fpr")
        .arg(opts.target_fpr.to_string())
        .arg("--fpr-confidence")
        .arg(opts.fpr_confidence.to_string())
        .arg("--label-model")
        .arg(opts.label_model.as_str())
        .arg("--augment")
        .arg(if opts.shifts { "shifts" } else { "none" })
        .arg("--neighbours")
        .arg(opts.neighbours.map_or_else(|| "auto".to_owned(), |k| k.to_string()))
        .arg("--reformer")
        .arg(match opts.reformer {
            None => "auto",
            Some(true) => "on",
            Some(false) => "off",
        })
        .arg("--roles")
        .arg(if opts.roles.is_empty() {
            "auto".to_owned()
        } else {
            opts.roles.join(",")
        });
    let output = cmd.output().map_err(|e| {
        EvalError::Input(format!(
            "could not run the training backend {} ({e}); run scripts/setup.sh, or point --python \
             (or INGEST_GUARD_PYTHON) at a Python with scikit-learn, onnx and onnxruntime",
            opts.python.display()
        ))
    })?;
    if !output.status.success() {
        return Err(EvalError::Input(format!(
            "the training backend failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| EvalError::Input(format!("the training backend printed no report: {stdout}")))
        .and_then(|l| {
            serde_json::from_str(l).map_err(|source| EvalError::Json {
                what: "the training backend's report".into(),
                source,
            })
        })?;
    let roles: Vec<String> = report["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    guard_score::init_runtime(&opts.ort_library)?;
    let mut worst = 0.0_f64;
    for role in &roles {
        worst = worst.max(check_parity(&schema, &opts.out, role, &lines)?);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Trained {
        report,
        parity_max_abs_diff: worst,
    })
}

/// The guard's view of one trained model: its extractor builds the fixture's input rows from
/// the same records, and its session reproduces the fixture's outputs. Returns the largest
/// output difference.
fn check_parity(schema: &DomainSchema, dir: &Path, role: &str, lines: &[Vec<u8>]) -> Result<f64, EvalError> {
    let model_path = dir.join(format!("{role}.onnx"));
    let mut model = Model::load(
        &model_path,
        &SessionSettings {
            provider: ProviderChoice::Cpu,
            intra_threads: 1,
            tf32: false,
        },
    )?;
    let g = schema.guard();
    let extractor = model.extractor_for(g)?;
    let fixture_path = dir.join(format!("{role}.fixture.json"));
    let text = std::fs::read(&fixture_path).map_err(EvalError::io(&fixture_path))?;
    let fixture: Value = serde_json::from_slice(&text).map_err(|source| EvalError::Json {
        what: fixture_path.display().to_string(),
        source,
    })?;
    let want_rows = fixture["inputs"].as_array().cloned().unwrap_or_default();
    let index = fixture["row_index"].as_array().cloned().unwrap_or_default();
    let mut batch = Vec::new();
    for (r, i) in index.iter().enumerate() {
        let line = i
            .as_u64()
            .and_then(|i| lines.get(i as usize))
            .ok_or_else(|| EvalError::Input(format!("{}: row_index {i} is not a row", fixture_path.display())))?;
        let value: Value = serde_json::from_slice(line).map_err(|source| EvalError::Json {
            what: format!("trusted row {i}"),
            source,
        })?;
        let start = batch.len();
        extractor.extend_row(&value, &mut batch);
        let want = want_rows.get(r).and_then(Value::as_array).cloned().unwrap_or_default();
        for (k, (got, want)) in batch[start..].iter().zip(&want).enumerate() {
            let want = want.as_f64().unwrap_or(f64::NAN);
            if (f64::from(*got) - want).abs() > 1e-4 * want.abs().max(1.0) {
                return Err(EvalError::Input(format!(
                    "{role}: the guard reads input {} of trusted row {i} as {got}, the trainer as {want}",
                    extractor.name(k)
                )));
            }
        }
    }
    let scores = model.run(&batch)?;
    let meta = model.meta();
    let n = meta.classes.len();
    match &scores {
        // The guard's label score of each fixture row (with a neighbour vote, the larger of
        // its two statistics over their thresholds) is the trainer's.
        guard_score::RoleScores::Label {
            probabilities,
            classifier,
            ..
        } => fixture_scores_match(&fixture, meta, 1e-4, |r, given| {
            let at = r * n..(r + 1) * n;
            meta.label_score(
                probabilities.get(at.clone()).unwrap_or_default(),
                classifier.get(at).unwrap_or_default(),
                given,
            )
        })?,
        // The guard's adversarial score of each fixture row (with a threshold per squeezer,
        // the largest rise over its own) is the trainer's.
        guard_score::RoleScores::Adversarial { log_probabilities } => {
            let per_row = (1 + meta.squeezers.len()) * n;
            let thresholds = meta.squeezer_thresholds.as_deref().unwrap_or_default();
            fixture_scores_match(&fixture, meta, 1e-3, |r, given| {
                let row = log_probabilities
                    .get(r * per_row..(r + 1) * per_row)
                    .unwrap_or_default();
                guard_score::squeeze_score(row, n, given, thresholds).map_or(f32::NAN, |q| q.score)
            })?
        }
        guard_score::RoleScores::Anomaly { .. } => {}
    }
    let (name, got): (&str, Vec<f32>) = match scores {
        guard_score::RoleScores::Anomaly { score, .. } => ("score", score),
        guard_score::RoleScores::Label { probabilities, .. } => ("probabilities", probabilities),
        guard_score::RoleScores::Adversarial { log_probabilities } => ("log_probabilities", log_probabilities),
    };
    let want: Vec<f64> = flatten(&fixture["outputs"][name]);
    if want.len() != got.len() {
        return Err(EvalError::Input(format!(
            "{role}: {} outputs in the guard, {} in the fixture",
            got.len(),
            want.len()
        )));
    }
    let diff = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max);
    if diff > 1e-4 {
        return Err(EvalError::Input(format!(
            "{role}: the guard's ONNX Runtime output differs from the trainer's by {diff}"
        )));
    }
    Ok(diff)
}

/// Each fixture row's score as the guard computes it (`score(row, given class)`) is the
/// trainer's (`scores`), within `tolerance` relative to the larger of 1 and the score.
fn fixture_scores_match(
    fixture: &Value,
    meta: &guard_score::ModelMeta,
    tolerance: f64,
    score: impl Fn(usize, Option<usize>) -> f32,
) -> Result<(), EvalError> {
    let labels = fixture["labels"].as_array().cloned().unwrap_or_default();
    for (r, (label, want)) in labels
        .iter()
        .zip(fixture["scores"].as_array().cloned().unwrap_or_default())
        .enumerate()
    {
        let given = meta.classes.iter().position(|c| Some(c.as_str()) == label.as_str());
        let got = score(r, given);
        let want = want.as_f64().unwrap_or(f64::NAN);
        if (f64::from(got) - want).abs() > tolerance * want.abs().max(1.0) {
            return Err(EvalError::Input(format!(
                "{}: the guard scores fixture row {r} {got}, the trainer {want}",
                format!("{:?}", meta.role).to_lowercase()
            )));
        }
    }
    Ok(())
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flatten).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
        _ => Vec::new(),
    }
}

/// Parse `--reformer`: `auto` (None), `on` or `off`.
pub fn parse_reformer(s: &str) -> Result<Option<bool>, String> {
    match s {
        "auto" => Ok(None),
        "on" => Ok(Some(true)),
        "off" => Ok(Some(false)),
        other => Err(format!("--reformer {other}: give auto, on or off")),
    }
}

/// Parse `--neighbours`: `auto` (None) or a count (0: no vote).
pub fn parse_neighbours(s: &str) -> Result<Option<u32>, String> {
    match s {
        "auto" => Ok(None),
        n => n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("--neighbours {n}: give auto or a count of neighbours (0: none)")),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_neighbours, parse_reformer, LabelModel};

    #[test]
    fn neighbours_parse_as_auto_or_a_count() {
        assert_eq!(parse_neighbours("auto"), Ok(None));
        assert_eq!(parse_neighbours("0"), Ok(Some(0)));
        assert_eq!(parse_neighbours("20"), Ok(Some(20)));
        assert!(parse_neighbours("-1").is_err());
        assert!(parse_neighbours("some").is_err());
        assert_eq!(parse_reformer("auto"), Ok(None));
        assert_eq!(parse_reformer("on"), Ok(Some(true)));
        assert_eq!(parse_reformer("off"), Ok(Some(false)));
        assert!(parse_reformer("yes").is_err());
    }

    #[test]
    fn label_models_parse_by_their_flag_names_and_refuse_others() {
        for m in [LabelModel::Mlp, LabelModel::Conv] {
            assert_eq!(m.as_str().parse::<LabelModel>().ok(), Some(m));
        }
        assert_eq!(LabelModel::default(), LabelModel::Conv);
        assert!("cnn".parse::<LabelModel>().is_err());
    }
}
