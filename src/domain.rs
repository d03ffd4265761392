//! Bring your own domain: `train`, `evaluate`, `drift`, `split` and `init`, thin over
//! `guard-eval` (which does the work and holds the tests of it).

use anyhow::Context;
use clap::Subcommand;
use guard_eval::attack::Attack;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Train and calibrate anomaly and label-consistency models for any domain schema from
    /// trusted records (Python backend: scikit-learn and onnx, installed by setup), then check
    /// that the guard reads them as the trainer did (same input rows, same outputs).
    Train {
        /// Domain schema file (its `x-guard` section says what the models read).
        #[arg(long)]
        schema: PathBuf,
        #[command(flatten)]
        records: RecordsArgs,
        /// Roles, comma-separated: `anomaly`, `label`, `adversarial` (default: anomaly, plus
        /// label when the schema names a label and the rows hold two classes or more, plus
        /// adversarial when the schema also has a tensor).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// False-positive budget over all roles together, calibrated on the 20 % of rows held
        /// out of training.
        #[arg(long, default_value_t = 0.01)]
        target_fpr: f64,
        /// Confidence with which the budget holds on further clean rows.
        #[arg(long, default_value_t = guard_eval::train::FPR_CONFIDENCE)]
        fpr_confidence: f64,
        /// Seed of the calibration split and the networks' initialisation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        model: ModelArgs,
        /// Output folder: `<role>.onnx`, `<role>.json` (metadata, threshold), `<role>.fixture.json`.
        #[arg(long)]
        out: PathBuf,
        /// Python with scikit-learn, onnx and onnxruntime (default: $INGEST_GUARD_PYTHON, else
        /// .tools/venv-train from setup, else python3).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Detection quality of a schema's models on held-out records under generic attacks
    /// (applied deterministically, by field kind): AUROC per model and combined, precision
    /// and recall at the calibrated thresholds, recall at 1 % FPR, precision at recall 0.86
    /// and 0.95, and the false-positive rate on the clean rows. Judged in process by the
    /// running guard's batch judge.
    Evaluate {
        /// Configuration whose route (`--topic`, default the first) gives schema and models.
        #[arg(long, short, conflicts_with_all = ["schema", "models"], required_unless_present = "schema")]
        config: Option<PathBuf>,
        /// With `--config`: the route's topic.
        #[arg(long, requires = "config")]
        topic: Option<String>,
        /// Domain schema (with `--models`).
        #[arg(long, requires = "models")]
        schema: Option<PathBuf>,
        /// Folder with `anomaly.onnx` and/or `label.onnx` (as `train` writes it).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Held-out records (JSONL), never trained on.
        #[arg(long)]
        input: PathBuf,
        /// Attacks (repeatable): none, flip:RATE, inject:RATE, shift:FEATURE:SIGMA,
        /// trigger:SIZE[:TARGET[:RATE]], blend:ALPHA[:TARGET[:RATE]], noise:RATE[:SIGMA],
        /// fgsm:EPS[:RATE], pgd:EPS[:STEPS[:RATE]]. Default: none, inject:0.05; flip:0.05 with a label model; trigger:3, blend:0.1 and fgsm:0.1 too with a tensor.
        #[arg(long = "attack")]
        attacks: Vec<guard_eval::attack::Attack>,
        /// Rows already known bad, `POINTER=VALUE` (e.g. /label=1): the poison of `none`,
        /// left out of the other attacks.
        #[arg(long)]
        truth: Option<guard_eval::split::FieldEquals>,
        /// Most FGSM/PGD rows crafted per attack (each step costs width + 1 forward passes).
        #[arg(long, default_value_t = 250)]
        fgsm_limit: usize,
        /// Write each attacked stream to DIR/<n>.jsonl as {"poison", "record"} lines (for
        /// `scripts/anchors.py`, which runs other tools on the same rows).
        #[arg(long)]
        write_attacked: Option<PathBuf>,
        /// Seed of the attacks' random draws (rows picked, labels, noise, patterns). 0, the
        /// default, gives the draws BENCHMARKS.md's figures use; other seeds give new
        /// attackers on the same rows, for a figure's spread.
        #[arg(long, default_value_t = 0)]
        attack_seed: u64,
        /// One JSON line per attack instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Split a sample into trusted rows (to infer, baseline and train on) and held-out rows
    /// (to evaluate and stream), deterministically by row index and seed.
    Split {
        #[command(flatten)]
        records: RecordsArgs,
        /// Share of rows held out: 0.1, 0.2, … 0.9.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// Seed of the split.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Only rows whose field equals the value may be trusted (`POINTER=VALUE`).
        #[arg(long)]
        trusted_when: Option<guard_eval::split::FieldEquals>,
        /// Output: trusted rows (JSONL).
        #[arg(long)]
        trusted: PathBuf,
        /// Output: held-out rows (JSONL).
        #[arg(long)]
        heldout: PathBuf,
    },
    /// Run the streaming drift alarm over a batch against a baseline, in windows: a table per
    /// feature (tests, effect sizes, firing windows, alarm), optionally a self-contained HTML
    /// report with per-feature histograms. Exit status 3 when an alarm is raised (for CI),
    /// 0 when none, 1 on an error.
    Drift {
        /// Baseline file (`ingest-guard baseline`; it carries its schema).
        #[arg(long)]
        baseline: PathBuf,
        /// Domain schema (only for baselines that do not carry theirs).
        #[arg(long)]
        schema: Option<PathBuf>,
        #[command(flatten)]
        records: RecordsArgs,
        /// Rows per window (default: the window the baseline was calibrated for).
        #[arg(long)]
        window: Option<usize>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Judge the rows in a random order drawn from this seed instead of file order (for
        /// files sorted by some column: their windows differ from the baseline by construction).
        #[arg(long)]
        shuffle: Option<u64>,
    },
    /// Bring a new domain in one step: split the sample (trusted / held out), infer a schema,
    /// build a baseline, train and calibrate models, evaluate them on the held-out rows
    /// (none, inject, flip; trigger and blend for tensors), and write a configuration that
    /// routes a topic through them. Prints what to review.
    Init {
        /// A sample of trusted records (JSONL, or Parquet).
        #[arg(long)]
        input: PathBuf,
        /// The label field.
        #[arg(long)]
        label: Option<String>,
        /// The field naming each record's producer.
        #[arg(long)]
        source: Option<String>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// The input topic the configuration routes (default: the output folder's name).
        #[arg(long)]
        topic: Option<String>,
        /// Bootstrap servers written into the configuration.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Share of the sample held out for evaluation (0.1 … 0.9).
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// False-positive budget of the models.
        #[arg(long, default_value_t = 0.01)]
        target_fpr: f64,
        /// Seed of the split, the calibration split and the networks.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[command(flatten)]
        model: ModelArgs,
        /// Python for the training backend (see `train`).
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

pub fn dispatch(cmd: DomainCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DomainCommand::Train {
            schema,
            records,
            roles,
            target_fpr,
            fpr_confidence,
            seed,
            model,
            out,
            python,
        } => {
            let (label_model, shifts, neighbours, reformer) = model.parse()?;
            let opts = guard_eval::train::TrainOptions {
                schema,
                roles,
                target_fpr,
                fpr_confidence,
                seed,
                label_model,
                shifts,
                neighbours,
                reformer,
                out: out.clone(),
                python: python.unwrap_or_else(|| guard_eval::train::default_python(&root())),
                ort_library: guard_eval::train::default_ort_library(&root()),
            };
            let t = guard_eval::train::train(&records.input()?, &opts)
                .with_context(|| format!("train {}", out.display()))?;
            print!("{}", guard_eval::report::trained(&out, &t));
            Ok(ExitCode::SUCCESS)
        }
        DomainCommand::Evaluate {
            config,
            topic,
            schema,
            models,
            input,
            attacks,
            truth,
            fgsm_limit,
            write_attacked,
            attack_seed,
            json,
        } => {
            let mut setup = guard_eval::evaluate::Setup::resolve(
                config.as_deref(),
                topic.as_deref(),
                schema.as_deref(),
                models.as_deref(),
                &root(),
            )?;
            setup.write_attacked = write_attacked;
            setup.attack_seed = attack_seed;
            let rows = guard_eval::evaluate::read_rows(&input)?;
            let attacks = if attacks.is_empty() {
                let tensor = !guard_validate::DomainSchema::load(&setup.schema)?
                    .guard()
                    .tensors
                    .is_empty();
                Attack::defaults(setup.label.is_some(), tensor)
            } else {
                attacks
            };
            let results = guard_eval::evaluate::evaluate_all(&setup, &rows, &attacks, truth.as_ref(), fgsm_limit)?;
            if json {
                for e in &results {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                print!("{}", guard_eval::report::evaluations(&results));
            }
            Ok(ExitCode::SUCCESS)
        }
        DomainCommand::Drift {
            baseline,
            schema,
            records,
            window,
            json,
            html,
            shuffle,
        } => {
            let drift = guard_config::DriftConfig::default();
            let r = guard_eval::drift::check(
                schema.as_deref(),
                &baseline,
                &records.input()?,
                window,
                &drift.alarm,
                drift.min_window_fraction,
                shuffle,
            )?;
            if let Some(h) = &html {
                std::fs::write(h, guard_eval::drift::html(&r)).with_context(|| h.display().to_string())?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", guard_eval::report::drift(&r));
                if let Some(h) = &html {
                    println!("report: {}", h.display());
                }
            }
            Ok(if r.alarm { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        DomainCommand::Init {
            input,
            label,
            source,
            out,
            topic,
            brokers,
            holdout,
            target_fpr,
            seed,
            model,
            python,
        } => {
            let (label_model, shifts, neighbours, reformer) = model.parse()?;
            let opts = guard_eval::init::InitOptions {
                input: guard_eval::read::Input::file(&input, None),
                label,
                source,
                out,
                topic,
                brokers,
                holdout,
                target_fpr,
                seed,
                label_model,
                shifts,
                neighbours,
                reformer,
                python: python.unwrap_or_else(|| guard_eval::train::default_python(&root())),
                ort_library: guard_eval::train::default_ort_library(&root()),
            };
            guard_eval::init::init(&opts, &mut |line| println!("{}", line.trim_end()))?;
            Ok(ExitCode::SUCCESS)
        }
        DomainCommand::Split {
            records,
            holdout,
            seed,
            trusted_when,
            trusted,
            heldout,
        } => {
            let rule = guard_eval::split::SplitRule {
                holdout,
                seed,
                trusted_when,
            };
            let c = guard_eval::split::split(&records.input()?, &rule, &trusted, &heldout)?;
            println!(
                "{} trusted rows -> {}, {} held-out rows -> {}",
                c.trusted,
                trusted.display(),
                c.heldout,
                heldout.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn root() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// How `train` and `init` build the models: the label model, its training rows, its
/// neighbour vote and the adversarial role's reformer.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The label model: `conv` (for image tensors, the MLP averaged with a small
    /// convolutional network, which ranks label flips better; without one, the MLP), `mlp`
    /// (the MLP alone: its graph scores image rows several times faster) or `svm` (an RBF
    /// SVM's probabilities, for at most 20,000 training rows; BENCHMARKS.md).
    #[arg(long, default_value = "conv", value_parser = ["conv", "mlp", "svm"])]
    label_model: String,
    /// How the label MLP learns rows with an image grid (a tensor of at least 8 x 8):
    /// `none`, the rows as they are; `shifts` also trains on each row shifted by one
    /// element up, down, left and right (for the same number of row visits), which ranks
    /// label flips better, but the FGSM examples crafted against it are harder for the
    /// adversarial role to catch on some sets (BENCHMARKS.md).
    #[arg(long, default_value = "none", value_parser = ["none", "shifts"])]
    augment: String,
    /// The label model's neighbour vote (deep k-NN over its hidden layer, which ranks label
    /// flips better; BENCHMARKS.md): `auto` chooses k on the calibration rows, 0 turns it
    /// off (the label graph then scores about ten times faster), a number fixes k.
    #[arg(long, default_value = "auto")]
    neighbours: String,
    /// The anomaly role's image autoencoder as one more squeezer of the adversarial role
    /// (MagNet's reformer), with a threshold of its own: catches FGSM at ε 0.2 that
    /// bit-depth squeezing cannot undo, at the cost of one more statistic in the
    /// false-positive budget (BENCHMARKS.md). `auto`: where the calibration rows can bound
    /// the budget with it. Rows with an image tensor only.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    reformer: String,
}

impl ModelArgs {
    /// The label model, whether it trains on shifted copies, the vote's k (`None`: chosen)
    /// and the reformer (`None`: `auto`).
    fn parse(&self) -> anyhow::Result<(guard_eval::train::LabelModel, bool, Option<u32>, Option<bool>)> {
        Ok((
            self.label_model.parse()?,
            self.augment == "shifts",
            guard_eval::train::parse_neighbours(&self.neighbours).map_err(anyhow::Error::msg)?,
            guard_eval::train::parse_reformer(&self.reformer).map_err(anyhow::Error::msg)?,
        ))
    }
}

/// Where records come from (`baseline`, `schema infer`, `train`, `drift`, `split`).
#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    /// Trusted records: `.parquet` files are read as Parquet, anything else as JSONL.
    #[arg(long, required_unless_present = "topic", conflicts_with = "topic")]
    input: Option<PathBuf>,
    /// Parquet only: the column holding each record's JSON (default: each row's columns
    /// are the record's fields).
    #[arg(long)]
    payload_column: Option<String>,
    /// Read the trusted records from this topic instead of a file.
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// Bootstrap servers for `--topic`.
    #[arg(long)]
    brokers: Option<String>,
    /// First offset read in every partition of `--topic`.
    #[arg(long, default_value_t = 0)]
    from_offset: i64,
    /// Offset where reading stops (exclusive) in every partition; default: the high
    /// watermark when the read starts.
    #[arg(long)]
    to_offset: Option<i64>,
}

impl RecordsArgs {
    pub fn input(&self) -> anyhow::Result<guard_eval::read::Input<'_>> {
        use guard_eval::read::Input;
        Ok(match (&self.input, &self.topic, &self.brokers) {
            (Some(path), _, _) => Input::file(path, self.payload_column.as_deref()),
            (None, Some(topic), Some(brokers)) => Input::Topic {
                brokers,
                topic,
                from: self.from_offset,
                to: self.to_offset,
            },
            _ => anyhow::bail!("give --input FILE, or --topic with --brokers"),
        })
    }
}
