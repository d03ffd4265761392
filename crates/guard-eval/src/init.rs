//! `ingest-guard init`: a new domain in one step. Split the sample (trusted / held out),
//! infer a schema, build a baseline, train and calibrate models, evaluate them on the held-out
//! rows (none, inject, flip; trigger and blend for tensors), and write a configuration that
//! routes a topic through them (checked by loading it as `run` would).

use crate::read::Input;
use crate::EvalError;
use std::path::PathBuf;

/// What `init` needs.
pub struct InitOptions<'a> {
    /// A sample of trusted records (JSONL, Parquet or a topic range).
    pub input: Input<'a>,
    /// The label field.
    pub label: Option<String>,
    /// The field naming each record's producer.
    pub source: Option<String>,
    /// Output folder; its name names the schema, the topic and the consumer group.
    pub out: PathBuf,
    /// Input topic of the configuration (default: the folder's name).
    pub topic: Option<String>,
    /// Bootstrap servers of the configuration.
    pub brokers: String,
    /// Share of the sample held out.
    pub holdout: f64,
    /// False-positive budget of the models.
    pub target_fpr: f64,
    /// Seed of every split and of the networks.
    pub seed: u64,
    /// The label model's family.
    pub label_model: crate::train::LabelModel,
    /// The label MLP also trains on shifted copies of image rows (`train`'s `--augment`).
    pub shifts: bool,
    /// The label model's neighbour vote (`crate::train::TrainOptions::neighbours`).
    pub neighbours: Option<u32>,
    /// The adversarial role's autoencoder squeezer (`crate::train::TrainOptions::reformer`).
    pub reformer: Option<bool>,
    /// Python of the training backend.
    pub python: PathBuf,
    /// ONNX Runtime library.
    pub ort_library: PathBuf,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, EvalError> {
    serde_json::to_string(v).map_err(|source| EvalError::Json {
        what: "init's output".into(),
        source,
    })
}

/// Run `init`: every step's report goes to `say` as it finishes.
pub fn init(a: &InitOptions<'_>, say: &mut dyn FnMut(&str)) -> Result<(), EvalError> {
    let name = a
        .out
        .file_name()
        .map_or("domain".to_owned(), |s| s.to_string_lossy().into_owned());
    let topic = a.topic.clone().unwrap_or_else(|| name.clone());
    std::fs::create_dir_all(&a.out).map_err(EvalError::io(&a.out))?;
    // 1. Trusted and held-out rows.
    let (trusted, heldout) = (a.out.join("trusted.jsonl"), a.out.join("heldout.jsonl"));
    let rule = crate::split::SplitRule {
        holdout: a.holdout,
        seed: a.seed,
        trusted_when: None,
    };
    let counts = crate::split::split(&a.input, &rule, &trusted, &heldout)?;
    say(&format!(
        "1. split: {} trusted rows -> {}, {} held out -> {}",
        counts.trusted,
        trusted.display(),
        counts.heldout,
        heldout.display()
    ));
    // 2. Schema.
    let schema_path = a.out.join(format!("{name}.schema.json"));
    let o = crate::infer::InferOptions {
        label: a.label.clone(),
        source: a.source.clone(),
        categorical_max: 20,
        numeric_array_max: 32,
        margin: 0.5,
        id: format!("{name}-v1"),
    };
    let inferred = crate::infer::write(&Input::Jsonl(&trusted), &o, &schema_path)?;
    say(&format!(
        "2. schema {} ({}); review each constraint:",
        schema_path.display(),
        o.id
    ));
    for line in &inferred.review {
        say(&format!("     {line}"));
    }
    // 3. Baseline: windows of 1,000 rows, fewer for a small sample (20 windows at least).
    let baseline = a.out.join("baseline.json");
    let window = (counts.trusted / 20).clamp(50, 1000);
    let b = crate::baseline::build(&crate::baseline::BaselineArgs {
        schema: &schema_path,
        input: Input::Jsonl(&trusted),
        out: &baseline,
        window,
        bins: 20,
        resamples: 2000,
    })?;
    say(&format!(
        "3. baseline {}: {} rows, {} numeric and {} categorical features, {} labels, window {window}",
        baseline.display(),
        b.used,
        b.numeric,
        b.categorical,
        b.labels
    ));
    // 4. Models.
    let models = a.out.join("models");
    let t = crate::train::train(
        &Input::Jsonl(&trusted),
        &crate::train::TrainOptions {
            schema: schema_path.clone(),
            roles: Vec::new(),
            target_fpr: a.target_fpr,
            fpr_confidence: crate::train::FPR_CONFIDENCE,
            seed: a.seed,
            label_model: a.label_model,
            shifts: a.shifts,
            neighbours: a.neighbours,
            reformer: a.reformer,
            out: models.clone(),
            python: a.python.clone(),
            ort_library: a.ort_library.clone(),
        },
    )?;
    say(&format!("4. {}", crate::report::trained(&models, &t)));
    // 5. Evaluation on the held-out rows.
    let mut setup = crate::evaluate::Setup::from_dir(&schema_path, &models, a.ort_library.clone());
    setup.baseline = Some(baseline.clone());
    let tensor = !inferred.schema["x-guard"]["tensors"]
        .as_array()
        .is_none_or(Vec::is_empty);
    let attacks = crate::attack::Attack::defaults(setup.label.is_some(), tensor);
    let rows = crate::evaluate::read_rows(&heldout)?;
    let results = crate::evaluate::evaluate_all(&setup, &rows, &attacks, None, 250)?;
    let eval_path = a.out.join("evaluation.jsonl");
    let mut lines = String::new();
    for e in &results {
        lines.push_str(&json(e)?);
        lines.push('\n');
    }
    std::fs::write(&eval_path, lines).map_err(EvalError::io(&eval_path))?;
    say(&format!(
        "5. evaluation on the held-out rows ({}):",
        eval_path.display()
    ));
    say(&crate::report::evaluations(&results));
    // 6. Configuration.
    let config = a.out.join("guard.toml");
    let mut toml = format!(
        "# Written by `ingest-guard init` from {input}. Review the schema, the thresholds in\n\
         # models/*.json and evaluation.jsonl before routing real traffic through it.\n\
         # Relative paths are resolved against this file's folder.\n\n\
         [kafka]\nbrokers = {brokers:?}\ngroup_id = {group:?}\noutput_topic = {clean:?}\n\n\
         [[routes]]\ntopic = {topic:?}\nschema = {schema:?}\nbaseline = \"baseline.json\"\n",
        input = a.input.describe(),
        brokers = a.brokers,
        group = format!("ingest-guard-{name}"),
        clean = format!("{topic}.clean"),
        schema = format!("{name}.schema.json"),
    );
    if setup.anomaly.is_some() {
        toml.push_str("anomaly_model = \"models/anomaly.onnx\"\n");
    }
    if setup.label.is_some() {
        toml.push_str("label_model = \"models/label.onnx\"\n");
    }
    if setup.adversarial.is_some() {
        toml.push_str("adversarial_model = \"models/adversarial.onnx\"\n");
    }
    toml.push_str("\n[scoring]\nexecution_provider = \"auto\"\n\n[quarantine]\ndir = \"quarantine\"\n");
    std::fs::write(&config, toml).map_err(EvalError::io(&config))?;
    guard_config::Config::load(&config)
        .map_err(|e| EvalError::Input(format!("the written configuration does not load: {e}")))?;
    say(&format!(
        "6. configuration {} routes topic {topic:?} (clean records to {topic}.clean); it loads (`ingest-guard check -c {}`).\n   Run: ingest-guard run -c {}",
        config.display(),
        config.display(),
        config.display()
    ));
    Ok(())
}
