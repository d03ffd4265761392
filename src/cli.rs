//! Command-line interface.

use crate::domain::RecordsArgs;
use anyhow::Context;
use clap::{Parser, Subcommand};
use guard_config::Config;
use guard_quarantine::QuarantineStore;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Guards ML training streams on Kafka: limits, schema checks, quarantine to Parquet, nothing lost.
#[derive(Debug, Parser)]
#[command(name = "ingest-guard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, judge, forward clean records and quarantine suspects until SIGTERM/SIGINT.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve the quarantine review dashboard (`/review`) and its API without consuming: for
    /// reviewers who do not run a consumer. With `--config`, the quarantine folder, reviewers,
    /// audit log and release topic come from it (releases need its brokers).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, required_unless_present = "quarantine")]
        config: Option<PathBuf>,
        /// Quarantine folder (without `--config`: browse, decide and export; no release).
        #[arg(long, conflicts_with = "config")]
        quarantine: Option<PathBuf>,
        /// Reviewer `NAME:SHA256-OF-PASSWORD` (without `--config`; repeatable).
        #[arg(long = "reviewer")]
        reviewers: Vec<String>,
        /// Address to listen on (default: `server.listen`, or 127.0.0.1:9898).
        #[arg(long)]
        listen: Option<String>,
        /// Refuse decisions and releases.
        #[arg(long)]
        read_only: bool,
    },
    /// Load the configuration and everything it names; print every problem; exit non-zero if any.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Also try to reach the brokers (up to 5 s).
        #[arg(long)]
        connect: bool,
    },
    /// Build a trusted baseline profile (bins, moments, calibration, categories, labels, data
    /// hash) from trusted records: a JSONL or Parquet file, or an offset range of a topic.
    Baseline {
        /// Domain schema file.
        #[arg(long)]
        schema: PathBuf,
        #[command(flatten)]
        records: RecordsArgs,
        /// Output file (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Window size (records) the drift thresholds are calibrated for.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        /// Most bins per numeric feature.
        #[arg(long, default_value_t = 20)]
        bins: usize,
        /// Resampled windows used for calibration.
        #[arg(long, default_value_t = 2000)]
        resamples: usize,
    },
    /// Domain schemas: `schema infer` writes a first one from trusted records, for review.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Print a running guard's statistics (`GET /api/stats`): per topic and feature, the
    /// current windows and the sliding view against the baseline.
    Stats {
        /// The guard's HTTP address (its `server.listen`).
        #[arg(long, default_value = "http://127.0.0.1:9898")]
        url: String,
        /// `local` (this instance's partitions) or `group` (every instance's, from the
        /// profiles topic).
        #[arg(long, default_value = "local", value_parser = ["local", "group"])]
        scope: String,
        /// Which view to print: `current` (last windows) or `sliding`.
        #[arg(long, default_value = "current", value_parser = ["current", "sliding"])]
        view: String,
        /// Print the JSON as it came.
        #[arg(long)]
        json: bool,
    },
    /// Inspect quarantine files.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    #[command(flatten)]
    Domain(crate::domain::DomainCommand),
    /// Helpers for demos, tests and benchmarks (producing data, creating topics, pass-through).
    #[command(hide = false)]
    Tools {
        #[command(subcommand)]
        command: crate::tools::ToolsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Infer JSON Schema 2020-12 plus `x-guard` from trusted records: types, required fields,
    /// numeric ranges widened by `--margin` of the span, categorical strings, fixed-length
    /// numeric arrays (numeric features, or tensors when longer than `--numeric-array-max`),
    /// arrays nested as a block of numbers (tensors of that shape; `[h, w, c]` with c ≤ 4 is
    /// taken as channels-last images), the label and source fields. Nested objects, ragged arrays and
    /// mixed types are refused by name.
    /// Review the result (each constraint says what data it came from) before use.
    Infer {
        #[command(flatten)]
        records: RecordsArgs,
        /// The label field (a class label: at most `--categorical-max` classes).
        #[arg(long)]
        label: Option<String>,
        /// The field naming each record's producer.
        #[arg(long)]
        source: Option<String>,
        /// Most distinct values for a string field to become a categorical feature.
        #[arg(long, default_value_t = 20)]
        categorical_max: usize,
        /// Longest numeric array that becomes one numeric feature per element.
        #[arg(long, default_value_t = 32)]
        numeric_array_max: usize,
        /// Share of the observed span added below and above numeric ranges.
        #[arg(long, default_value_t = 0.5)]
        margin: f64,
        /// The schema's id (`x-guard.id`); default: the output file's stem.
        #[arg(long)]
        id: Option<String>,
        /// Output schema file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantine files with their offset ranges and row counts.
    Ls {
        /// Quarantine folder (or give --config to use the configured one).
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Configuration file whose quarantine (`quarantine.url` or `quarantine.dir`) to list.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the records of one file (or of every file under a folder, or of the configured
    /// quarantine with --config) with their reasons.
    Show {
        /// A quarantine .parquet file or a folder.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        path: Option<PathBuf>,
        /// Configuration file whose quarantine (`quarantine.url` or `quarantine.dir`) to show.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            if let Ok(text) = std::fs::read_to_string(&config) {
                // Logged before tracing starts: on stderr, like configuration errors.
                for w in guard_config::plaintext_secrets(&text, &config.display().to_string()) {
                    eprintln!("warning: {w}");
                }
            }
            crate::run::run(cfg)
        }
        Command::Check { config, connect } => Ok(check(&config, connect)),
        Command::Serve {
            config,
            quarantine,
            reviewers,
            listen,
            read_only,
        } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    .into_inner(),
                None => Config::default(),
            };
            if let Some(q) = quarantine {
                cfg.quarantine.dir = q;
                cfg.kafka.output_topic = None;
                for r in &reviewers {
                    let (name, hash) = r
                        .split_once(':')
                        .context("--reviewer NAME:SHA256 (printf %s password | sha256sum)")?;
                    cfg.review.reviewers.push(guard_config::Reviewer {
                        name: name.to_owned(),
                        password_sha256: hash.to_owned(),
                    });
                }
            }
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            cfg.review.read_only |= read_only;
            crate::review::serve(cfg, config.is_some())
        }
        Command::Baseline {
            schema,
            records,
            out,
            window,
            bins,
            resamples,
        } => {
            let input = records.input()?;
            let r = guard_eval::baseline::build(&guard_eval::baseline::BaselineArgs {
                schema: &schema,
                input,
                out: &out,
                window,
                bins,
                resamples,
            })?;
            println!(
                "baseline {} for schema {} from {}: {} rows ({} invalid rows skipped{}), {} numeric and {} categorical features, {} labels, window {window}, sha256 {}",
                out.display(),
                r.schema_id,
                r.described,
                r.used,
                r.skipped,
                r.first_skip.map(|s| format!(", first: {s}")).unwrap_or_default(),
                r.numeric,
                r.categorical,
                r.labels,
                r.sha256,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { command } => schema(command),
        Command::Stats { url, scope, view, json } => stats(&url, &scope, &view, json),
        Command::Quarantine { command } => quarantine(command),
        Command::Tools { command } => crate::tools::run(command),
        Command::Domain(command) => crate::domain::dispatch(command),
    }
}

/// Everything `check` verifies; returns the problems as printable lines, the configuration,
/// and (when models are configured and load) the scoring summary lines.
pub fn check_problems(path: &Path, connect: bool) -> (Vec<String>, Config, Vec<String>) {
    let loaded = Config::load_lenient(path, std::env::vars());
    let mut out: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
    let file = path.display().to_string();
    let cfg = loaded.config;
    for (i, r) in cfg.routes.iter().enumerate() {
        if r.schema.as_os_str().is_empty() {
            continue;
        }
        match guard_validate::DomainSchema::load(&r.schema) {
            Err(e) => out.push(format!("{file}: routes[{i}].schema: {e}")),
            Ok(schema) => {
                if let Some(b) = &r.baseline {
                    if let Err(e) = guard_drift::TopicDrift::load(b, schema.guard()) {
                        out.push(format!("{file}: routes[{i}].baseline: {e:#}"));
                    }
                }
            }
        }
    }
    let mut scoring = Vec::new();
    if guard_score::configured(&cfg) && out.is_empty() {
        let loaded = guard_score::init(&cfg)
            .map_err(anyhow::Error::from)
            .and_then(|()| crate::build::build_judge(&cfg))
            .and_then(|j| Ok(guard_score::Scoring::load(&cfg, &j.sections())?));
        match loaded {
            Ok((s, provider)) => {
                scoring.push(format!(
                    "scoring provider: {} (requested {:?})",
                    provider.map_or("none", |p| p.as_str()),
                    cfg.scoring.execution_provider
                ));
                scoring.extend(s.describe().into_iter().map(|line| format!("model {line}")));
            }
            Err(e) => out.push(format!("{file}: scoring: {e:#}")),
        }
    } else if out.is_empty() {
        scoring.push("scoring provider: none configured (schema and limits only)".into());
    }
    let dir = &cfg.quarantine.dir;
    if dir.exists() && !dir.is_dir() {
        out.push(format!(
            "{file}: quarantine.dir: {} exists and is not a folder",
            dir.display()
        ));
    }
    out.extend(crate::build::deliverability(&cfg, &file));
    if connect && out.is_empty() {
        match guard_kafka::probe(&cfg, std::time::Duration::from_secs(10)) {
            Ok(()) => {
                if let Some(p) = topic_limit(&cfg, &file) {
                    out.push(p);
                }
            }
            Err(problem) => out.push(format!("{file}: kafka.brokers: {}", problem.message(&cfg))),
        }
    }
    (out, cfg, scoring)
}

/// Overhead of a one-record batch on the broker (batch header and record framing), counted
/// against the topic's `max.message.bytes`.
const BATCH_OVERHEAD: usize = 128;

/// The clean topic's `max.message.bytes`, read from the broker, must carry the largest record
/// that passes. `None` when it fits, or when the broker does not tell (then nothing is claimed).
fn topic_limit(cfg: &Config, file: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let topic = cfg.kafka.output_topic.as_deref()?;
    let admin: AdminClient<_> = guard_kafka::admin_config(cfg).create().ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let spec = ResourceSpecifier::Topic(topic);
    let opts = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(5)));
    let results = rt.block_on(admin.describe_configs([&spec], &opts)).ok()?;
    let resource = results.into_iter().next()?.ok()?;
    let limit: usize = resource.get("max.message.bytes")?.value.as_deref()?.parse().ok()?;
    let need = cfg.limits.max_record_bytes + guard_kafka::PRODUCER_HEADROOM + BATCH_OVERHEAD;
    (limit < need).then(|| {
        format!(
            "{file}: limits.max_record_bytes: the clean topic {topic:?} takes records up to max.message.bytes = {limit}, below {} + {} for the guard's header and batch framing: records that pass could be refused (lower limits.max_record_bytes or raise the topic's max.message.bytes)",
            cfg.limits.max_record_bytes,
            guard_kafka::PRODUCER_HEADROOM + BATCH_OVERHEAD
        )
    })
}

fn check(path: &Path, connect: bool) -> ExitCode {
    let (problems, cfg, scoring) = check_problems(path, connect);
    if let Ok(text) = std::fs::read_to_string(path) {
        for w in guard_config::plaintext_secrets(&text, &path.display().to_string()) {
            eprintln!("warning: {w}");
        }
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        for r in &cfg.routes {
            println!("  route {} -> {}", r.topic, r.schema.display());
        }
        println!("  mode {:?}, output {:?}", cfg.pipeline.mode, cfg.kafka.output_topic);
        println!("  quarantine {}", crate::build::quarantine_where(&cfg));
        println!(
            "  kafka {} over {}, {}",
            cfg.kafka.brokers,
            cfg.kafka
                .properties
                .get("security.protocol")
                .map_or("PLAINTEXT", String::as_str),
            guard_kafka::librdkafka_features()
        );
        println!("  workers {}", cfg.pipeline.workers.count());
        for line in scoring {
            println!("  {line}");
        }
        ExitCode::SUCCESS
    } else {
        eprintln!("{} problem(s) in {}:", problems.len(), path.display());
        for p in &problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(2)
    }
}

fn quarantine(cmd: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QuarantineCommand::Ls { dir, config, json } => {
            let store = match (dir, config) {
                (Some(d), _) => Arc::new(guard_quarantine::LocalDirStore::new(d)) as Arc<dyn QuarantineStore>,
                (None, Some(c)) => crate::build::quarantine_store(
                    &*Config::load(&c).map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?,
                )?,
                (None, None) => anyhow::bail!("give --dir or --config"),
            };
            let files = guard_quarantine::list_files(store.as_ref())
                .with_context(|| format!("listing {}", store.describe()))?;
            let mut total = 0i64;
            if !json {
                println!(
                    "{:<28} {:>5} {:>12} {:>12} {:>8} {:>10}  name",
                    "topic", "part", "first", "last", "rows", "bytes"
                );
            }
            for f in &files {
                // -1: not readable as a quarantine file (a foreign or damaged file).
                let rows = store
                    .get_bytes(&f.name)
                    .ok()
                    .and_then(|b| guard_quarantine::file_rows(&b))
                    .unwrap_or(-1);
                total += rows.max(0);
                if json {
                    let mut v = serde_json::to_value(f)?;
                    v["rows"] = rows.into();
                    println!("{v}");
                } else {
                    println!(
                        "{:<28} {:>5} {:>12} {:>12} {:>8} {:>10}  {}",
                        f.topic, f.partition, f.first_offset, f.last_offset, rows, f.bytes, f.name
                    );
                }
            }
            if !json {
                println!("{} file(s), {} record(s) in {}", files.len(), total, store.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        QuarantineCommand::Show {
            path,
            config,
            json,
            limit,
        } => {
            let (store, names): (Arc<dyn QuarantineStore>, Vec<String>) = match (path, config) {
                (_, Some(c)) => {
                    let store = crate::build::quarantine_store(
                        &*Config::load(&c).map_err(|e| anyhow::anyhow!("{}: {e}", c.display()))?,
                    )?;
                    let names = guard_quarantine::list_files(store.as_ref())?
                        .into_iter()
                        .map(|f| f.name)
                        .collect();
                    (store, names)
                }
                (Some(p), None) if p.is_dir() => {
                    let store = Arc::new(guard_quarantine::LocalDirStore::new(&p));
                    let names = guard_quarantine::list_files(store.as_ref())?
                        .into_iter()
                        .map(|f| f.name)
                        .collect();
                    (store, names)
                }
                (Some(p), None) => {
                    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (Arc::new(guard_quarantine::LocalDirStore::new(dir)), vec![name])
                }
                (None, None) => anyhow::bail!("give a file, a folder or --config"),
            };
            let files = names;
            let mut shown = 0;
            for f in files {
                // A file that is not a readable quarantine file is reported and skipped.
                let rows = match store.get_bytes(&f).and_then(|b| guard_quarantine::read_file(&b)) {
                    Ok(rows) => rows,
                    Err(e) => {
                        eprintln!("skipping {}: {e}", terminal_safe(&f));
                        continue;
                    }
                };
                for row in rows {
                    if shown >= limit {
                        return Ok(ExitCode::SUCCESS);
                    }
                    shown += 1;
                    if json {
                        // JSON escapes control characters itself.
                        println!("{}", serde_json::to_string(&row)?);
                    } else {
                        // Everything here came from a producer: escape what a terminal would
                        // interpret (escape sequences, bidi overrides) before printing it.
                        let payload = row.payload.as_deref().unwrap_or("<null>");
                        let mut preview: String = payload.chars().take(80).collect();
                        if payload.len() > preview.len() || row.payload_truncated {
                            preview.push('…');
                        }
                        println!(
                            "{}[{}]@{}  {}",
                            terminal_safe(&row.topic),
                            row.partition,
                            row.offset,
                            terminal_safe(&row.reason_codes.join(","))
                        );
                        for r in &row.reasons {
                            println!(
                                "    {} {} {}",
                                terminal_safe(&r.code),
                                terminal_safe(r.path.as_deref().unwrap_or("")),
                                terminal_safe(&r.detail)
                            );
                        }
                        if let Some(k) = &row.key {
                            println!("    key: {}", terminal_safe(&k.chars().take(80).collect::<String>()));
                        }
                        for (k, v) in row.headers.iter().take(8) {
                            println!(
                                "    header {}: {}",
                                terminal_safe(k),
                                terminal_safe(&v.as_deref().unwrap_or("<null>").chars().take(80).collect::<String>())
                            );
                        }
                        println!("    payload ({} bytes): {}", row.payload_len, terminal_safe(&preview));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `text` with every character a terminal would act on shown as an escape instead: control
/// characters (ESC, BEL, carriage return, …, C1 controls), and the invisible formatting
/// characters that reorder or hide text (bidi overrides, zero-width characters).
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden =
            matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn schema(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    let SchemaCommand::Infer {
        records,
        label,
        source,
        categorical_max,
        numeric_array_max,
        margin,
        id,
        out,
    } = cmd;
    let id = id.unwrap_or_else(|| {
        let stem = out
            .file_stem()
            .map_or("inferred".into(), |s| s.to_string_lossy().into_owned());
        format!("{}-v1", stem.trim_end_matches(".schema"))
    });
    let o = guard_eval::infer::InferOptions {
        label,
        source,
        categorical_max,
        numeric_array_max,
        margin,
        id,
    };
    let inferred = guard_eval::infer::write(&records.input()?, &o, &out)?;
    println!(
        "schema {} ({}) from {} rows ({} not JSON objects, skipped); review:",
        out.display(),
        o.id,
        inferred.rows,
        inferred.skipped
    );
    for line in &inferred.review {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(url: &str, scope: &str, view: &str, json: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let target = format!("{}/api/stats?scope={scope}", url.trim_end_matches('/'));
    let (status, body) = rt.block_on(guard_server::client::request(
        "GET",
        &target,
        None,
        std::time::Duration::from_secs(10),
    ))?;
    anyhow::ensure!(
        status == 200,
        "{target}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).with_context(|| format!("{target}: not JSON"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: guard_core::StatsReport =
        serde_json::from_value(v).with_context(|| format!("{target}: not a stats report"))?;
    print!("{}", report.table(view == "sliding"));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_escapes_are_shown_not_run() {
        let s = super::terminal_safe("ok \u{1b}]0;owned\u{7}\u{1b}[2J\r\u{202e}txt.exe é");
        assert!(!s.chars().any(|c| c.is_control()), "{s}");
        assert!(
            s.contains("\\u{1b}") && s.contains("\\u{202e}") && s.ends_with("é"),
            "{s}"
        );
    }
}
