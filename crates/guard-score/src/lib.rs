//! ONNX Runtime scoring for ingest-guard.
//!
//! Two model roles, each optional per schema:
//! * **anomaly**: an autoencoder whose graph outputs `score` [N] and `feature_error` [N, F]
//!   (per-feature reconstruction error: the explanation);
//! * **label**: a classifier whose graph outputs `probabilities` [N, C]; the score of a
//!   record is `1 − p(given label)`.
//!
//! Every model travels with a metadata file (`<model>.json`, written by
//! `scripts/train_models.py`): the schema it belongs to, its input features in order, the
//! classes, the calibrated threshold and false-positive rate, the trusted data's hash. Loading
//! checks the metadata against the ONNX graph and against the domain schema and refuses a
//! mismatch with an error naming both sides.
//!
//! The ONNX Runtime library is loaded at run time (`ort`'s `load-dynamic`): a missing or
//! wrong library is an error from [`init_runtime`], never a panic.

mod model;
mod routes;
mod scan;

pub use routes::{
    configured, init, watch, Decision, Gathered, ModelSet, ModelsStatus, Reloader, RouteModels, Scorer, Scoring,
    Sections,
};
pub use scan::{Excess, ScanClass, ScanFlag, ScanItem, ScanMeta, ScanWhy, ScanWindow, SpectralScan, EXCESS_ALPHA};

pub use model::{
    init_runtime, parse_placement, squeeze_score, Extractor, Model, ModelFiles, ModelMeta, ProviderChoice,
    ProviderInUse, Role, RoleScores, SessionSettings, Squeezed, CPU_RUN_ROWS, LOG_FLOOR, MODEL_FORMAT,
};

/// Errors of scoring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The ONNX Runtime library could not be loaded.
    #[error("cannot load the ONNX Runtime library {path}: {message} (run scripts/setup.sh, or set ORT_DYLIB_PATH)")]
    Runtime {
        /// The library path tried.
        path: String,
        /// Why.
        message: String,
    },
    /// A model or metadata file could not be read or parsed.
    #[error("model {path}: {message}")]
    Model {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Metadata, graph and schema disagree.
    #[error("model {path} does not fit: {message}")]
    Mismatch {
        /// The model file.
        path: String,
        /// What disagrees, naming both sides.
        message: String,
    },
    /// CUDA was required and is not available.
    #[error("CUDA execution provider unavailable: {0}")]
    CudaUnavailable(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Scoring is configured, but no ONNX Runtime library is named.
    #[error(
        "scoring needs the ONNX Runtime library: set scoring.library or ORT_DYLIB_PATH (scripts/setup.sh installs it)"
    )]
    NoRuntime,
    /// A route's model could not be loaded.
    #[error("route {topic}: model {path}: {source}")]
    Route {
        /// The route's topic.
        topic: String,
        /// The model file.
        path: String,
        /// Why.
        source: Box<ScoreError>,
    },
    /// A model's files do not hash to the route's pin.
    #[error("route {topic}: {key} pins sha256 {want}, but {path} with its metadata hashes to {got}: refused (a changed graph or metadata, e.g. a raised threshold, must come with a new pin)")]
    Pin {
        /// The route's topic.
        topic: String,
        /// The pin's key (`anomaly_model_sha256`, `label_model_sha256`).
        key: &'static str,
        /// The pinned digest.
        want: String,
        /// The model file.
        path: String,
        /// The files' digest.
        got: String,
    },
}

/// Describe the metrics this crate emits (name, unit, help text), next to the code that
/// emits them; the binary calls it once when it installs the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "guard_score_cpu_nodes",
        "Nodes of a model ONNX Runtime left on the CPU while CUDA was asked for, per model"
    );
    describe_histogram!(
        "guard_score_anomaly",
        Unit::Count,
        "Anomaly score of every scored record (unitless)"
    );
    describe_histogram!(
        "guard_score_label",
        Unit::Count,
        "Label-consistency score (1 - p(given label)) of every scored record"
    );
    describe_histogram!(
        "guard_score_adversarial",
        Unit::Count,
        "Adversarial score (largest rise of log p(given label) under a squeezer) of every scored record"
    );
    describe_histogram!(
        "guard_score_batch_duration_seconds",
        Unit::Seconds,
        "Model inference time per batch, by role"
    );
    describe_counter!(
        "guard_score_failures_total",
        Unit::Count,
        "Batches whose scoring failed (records held back with score.error)"
    );
    describe_counter!("guard_score_reloads_total", Unit::Count, "Model swaps published");
    describe_counter!(
        "guard_score_reload_failures_total",
        Unit::Count,
        "Model updates refused because the new files did not load"
    );
}
