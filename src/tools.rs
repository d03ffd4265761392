//! Helpers for demos, tests and benchmarks: produce a file's lines as records, create topics,
//! and a bare pass-through (consume and re-produce with no checks) as the benchmark baseline.

use anyhow::Context;
use clap::Subcommand;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Produce each line of a file as one record (bytes as they are, without the newline).
    Produce {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// librdkafka property for this client, `KEY=VALUE` (repeatable), e.g.
        /// `-X security.protocol=SSL -X ssl.ca.location=ca.pem`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Topic to produce to.
        #[arg(long)]
        topic: String,
        /// File with one payload per line.
        #[arg(long)]
        file: PathBuf,
        /// Produce the file this many times.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Leave keys null (default: the line number as key).
        #[arg(long)]
        null_keys: bool,
        /// librdkafka `message.max.bytes` for the producer.
        #[arg(long, default_value_t = 1_000_000)]
        message_max_bytes: usize,
        /// Records per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Stop after this many records (0: the whole file `repeat` times).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Producer `compression.type`: none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: String,
    },
    /// Consume `count` records from a topic and print end-to-end latency percentiles
    /// (receive time minus the record's timestamp, which the guard keeps).
    Latency {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// librdkafka property for this client, `KEY=VALUE` (repeatable), e.g.
        /// `-X security.protocol=SSL -X ssl.ca.location=ca.pem`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Topic to read.
        #[arg(long)]
        topic: String,
        /// Records to read.
        #[arg(long)]
        count: u64,
    },
    /// Create a topic (no error if it exists).
    CreateTopic {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// librdkafka property for this client, `KEY=VALUE` (repeatable), e.g.
        /// `-X security.protocol=SSL -X ssl.ca.location=ca.pem`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Topic name.
        #[arg(long)]
        topic: String,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Benchmark baseline: consume `count` records from one topic and re-produce the same bytes
    /// to another with no checks, same client library; prints records/s.
    Passthrough {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// librdkafka property for this client, `KEY=VALUE` (repeatable), e.g.
        /// `-X security.protocol=SSL -X ssl.ca.location=ca.pem`.
        #[arg(short = 'X', long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Input topic.
        #[arg(long)]
        from: String,
        /// Output topic.
        #[arg(long)]
        to: String,
        /// Consumer group.
        #[arg(long, default_value = "passthrough")]
        group: String,
        /// Stop after this many records.
        #[arg(long)]
        count: u64,
    },
    /// Detection quality on real data, in process through the judge and the models: AUROC,
    /// precision, recall and false-positive rate per attack scenario (one JSON line each).
    /// Run from the repository root (reads `.data/` and `models/`).
    Evaluate {
        /// Scenarios (default: all): shuttle, shuttle-inject, mnist-flip, mnist-badnets,
        /// mnist-blend, mnist-noise, mnist-fgsm-0.1, mnist-fgsm-0.2.
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Most FGSM images crafted per scenario (each costs 785 forward passes).
        #[arg(long, default_value_t = 250)]
        fgsm_limit: usize,
        /// Repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Benchmark: model inference throughput (rows/s) at given batch sizes on one session,
    /// reporting the execution provider really used; `--provider cuda` refuses to run without
    /// CUDA (the GPU check). Rows come from the data set of the model's schema, cycled.
    ScoreBench {
        /// Model (`.onnx` with its `.json`).
        #[arg(long)]
        model: PathBuf,
        /// Records file giving the rows (JSONL of the model's schema).
        #[arg(long)]
        input: PathBuf,
        /// Domain schema of the records.
        #[arg(long)]
        schema: PathBuf,
        /// Batch sizes to measure.
        #[arg(long = "batch", default_values_t = [1024usize, 8192, 32768])]
        batches: Vec<usize>,
        /// Rows scored per batch size.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// `auto`, `cuda` or `cpu`.
        #[arg(long, default_value = "cpu", value_parser = ["auto", "cuda", "cpu"])]
        provider: String,
        /// Intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// On CUDA, allow TensorFloat-32 matrix products (`scoring.cuda_tf32`).
        #[arg(long)]
        tf32: bool,
        /// ONNX Runtime library (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        library: Option<PathBuf>,
    },
    /// Benchmark: profiling throughput on one core, in feature-values per second, over a
    /// JSONL file's valid records: (a) the window statistics alone on already parsed rows
    /// (what a DataFrame profiler gets), (b) the whole per-record path (limits, decode, schema,
    /// feature extraction, statistics). Prints one JSON line.
    /// Benchmark fixture: write `rows` quarantined Shuttle-shaped records into `files`
    /// quarantine files under `out` (3 topics, 4 partitions, a realistic mix of reasons,
    /// scores and 50 sources), for `scripts/bench-review.sh`. Deterministic.
    ReviewFixture {
        /// Quarantine folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Rows in all.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Files in all.
        #[arg(long, default_value_t = 100)]
        files: usize,
    },
    Profile {
        /// Domain schema file.
        #[arg(long)]
        schema: PathBuf,
        /// Records, one JSON object per line.
        #[arg(long)]
        input: PathBuf,
        /// Passes over the file for each measurement.
        #[arg(long, default_value_t = 20)]
        passes: usize,
        /// Keep a DDSketch per feature (as the guard does by default).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        quantiles: bool,
    },
}

pub fn run(cmd: ToolsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ToolsCommand::Evaluate {
            scenarios,
            fgsm_limit,
            root,
        } => crate::evaluate::run(&root, &scenarios, fgsm_limit),
        ToolsCommand::ScoreBench {
            model,
            input,
            schema,
            batches,
            rows,
            provider,
            threads,
            tf32,
            library,
        } => score_bench(&ScoreBenchArgs {
            model: &model,
            input: &input,
            schema: &schema,
            batches: &batches,
            rows,
            provider: &provider,
            threads,
            tf32,
            library: library.as_deref(),
        }),
        ToolsCommand::Profile {
            schema,
            input,
            passes,
            quantiles,
        } => profile(&schema, &input, passes, quantiles),
        ToolsCommand::Latency {
            brokers,
            properties,
            topic,
            count,
        } => latency(&client(&brokers, &properties), &topic, count),
        ToolsCommand::ReviewFixture { out, rows, files } => review_fixture(&out, rows, files),
        ToolsCommand::Produce {
            brokers,
            properties,
            topic,
            file,
            repeat,
            null_keys,
            message_max_bytes,
            rate,
            count,
            compression,
        } => {
            let producer: ThreadedProducer<DefaultProducerContext> = client(&brokers, &[])
                .set("linger.ms", "5")
                .set("compression.type", &compression)
                .set("message.max.bytes", message_max_bytes.to_string())
                .set("enable.idempotence", "true")
                .extend_from(&properties)
                .create()
                .context("creating producer")?;
            let lines: Vec<Vec<u8>> =
                std::io::BufReader::new(std::fs::File::open(&file).with_context(|| file.display().to_string())?)
                    .split(b'\n')
                    .collect::<Result<_, _>>()?;
            let started = Instant::now();
            let mut n = 0u64;
            let limit = if count == 0 {
                (lines.len() * repeat) as u64
            } else {
                count
            };
            let repeat = if count == 0 { repeat } else { usize::MAX };
            'outer: for _ in 0..repeat {
                for (i, line) in lines.iter().enumerate() {
                    if n >= limit {
                        break 'outer;
                    }
                    if rate > 0 && n.is_multiple_of(100) {
                        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let key = i.to_string();
                    loop {
                        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic).payload(line.as_slice());
                        if !null_keys {
                            rec = rec.key(key.as_bytes());
                        }
                        match producer.send(rec) {
                            Ok(()) => break,
                            Err((e, _))
                                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                            {
                                producer.poll(Duration::from_millis(5));
                            }
                            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
                        }
                    }
                    n += 1;
                }
            }
            producer.flush(Duration::from_secs(60)).context("flushing producer")?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "produced {n} records to {topic} in {secs:.2}s ({:.0} records/s)",
                n as f64 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::CreateTopic {
            brokers,
            properties,
            topic,
            partitions,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(guard_kafka::create_topic_with(
                &client(&brokers, &properties),
                &topic,
                partitions,
            ))?;
            println!("topic {topic} ready ({partitions} partitions)");
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Passthrough {
            brokers,
            properties,
            from,
            to,
            group,
            count,
        } => passthrough(&client(&brokers, &properties), &from, &to, &group, count),
    }
}

/// Create `topics`; one that already exists counts as done. Per topic: `Ok(true)` created,
/// `Ok(false)` already there, or the broker's error.
fn passthrough(base: &ClientConfig, from: &str, to: &str, group: &str, count: u64) -> anyhow::Result<ExitCode> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    assign_all(&consumer, from)?;
    let producer: ThreadedProducer<DefaultProducerContext> = base
        .clone()
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()?;
    let mut n = 0u64;
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < count && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        started.get_or_insert_with(Instant::now);
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(to);
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                rec = rec.timestamp(ts);
            }
            if let Some(h) = m.headers() {
                rec = rec.headers(h.detach());
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => anyhow::bail!("produce failed: {e}"),
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "{{\"passthrough_records\":{n},\"seconds\":{secs:.3},\"records_per_sec\":{:.0}}}",
        n as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

fn latency(base: &ClientConfig, topic: &str, count: u64) -> anyhow::Result<ExitCode> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("latency-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    assign_all(&consumer, topic)?;
    let mut lat: Vec<i64> = Vec::with_capacity(count as usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (lat.len() as u64) < count && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        if let Some(ts) = m.timestamp().to_millis() {
            lat.push(now - ts);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "{{\"records\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}}}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(-1)
    );
    Ok(ExitCode::SUCCESS)
}

/// Read every partition of `topic` from the beginning without joining a group (no join delay).
fn assign_all(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<()> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "topic {topic} has no partitions");
    consumer.assign(&tpl)?;
    Ok(())
}

fn profile(
    schema: &std::path::Path,
    input: &std::path::Path,
    passes: usize,
    quantiles: bool,
) -> anyhow::Result<ExitCode> {
    use guard_stats::{BaselineBuilder, WindowProfile};
    let schema = guard_validate::DomainSchema::load(schema)?;
    let text = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let limits = guard_core::Limits::default();
    let values: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| guard_validate::decode(l).ok())
        .filter(|v| schema.check(v).is_ok())
        .collect();
    anyhow::ensure!(!values.is_empty(), "no valid records in {}", input.display());
    let rows: Vec<Vec<f64>> = values.iter().map(|v| schema.numeric_features(v)).collect();
    let k = rows[0].len();
    let mut b = BaselineBuilder::new(schema.guard().numeric.iter().map(|f| f.name.clone()).collect());
    rows.iter().take(20_000).for_each(|r| b.push(r, None));
    let base = b.build(schema.id(), "bench", 20, 1000, 20)?;
    let bins: Vec<&guard_stats::Bins> = base.features.iter().map(|f| &f.bins).collect();

    // (a) statistics on parsed rows.
    let started = Instant::now();
    let mut w = WindowProfile::for_baseline(&base, quantiles);
    for _ in 0..passes {
        for r in &rows {
            for (i, x) in r.iter().enumerate() {
                w.push(bins[i], i, *x);
            }
            w.end_row();
        }
    }
    let stats_s = started.elapsed().as_secs_f64();
    std::hint::black_box(&w);

    // (b) the per-record path from raw bytes.
    let started = Instant::now();
    let mut w = WindowProfile::for_baseline(&base, quantiles);
    let mut buf = Vec::new();
    for _ in 0..passes {
        for l in &lines {
            let Ok(v) = guard_validate::prescan(l, &limits).and_then(|()| guard_validate::decode(l)) else {
                continue;
            };
            if schema.check(&v).is_err() {
                continue;
            }
            schema.numeric_features_into(&v, &mut buf);
            for (i, x) in buf.iter().enumerate() {
                w.push(bins[i], i, *x);
            }
            w.end_row();
        }
    }
    let full_s = started.elapsed().as_secs_f64();
    std::hint::black_box(&w);
    let fv = (rows.len() * k * passes) as f64;
    println!(
        "{}",
        serde_json::json!({
            "rows": rows.len(),
            "features": k,
            "passes": passes,
            "quantiles": quantiles,
            "stats_only_feature_values_per_s": (fv / stats_s).round(),
            "full_path_feature_values_per_s": (fv / full_s).round(),
            "full_path_records_per_s": ((rows.len() * passes) as f64 / full_s).round(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// How far one provider's outputs are from another's on the same rows: the largest absolute
/// difference, and the rows whose decision differs (anomaly: score over `threshold`; label:
/// the most probable class).
fn compare_outputs(
    a: &guard_score::RoleScores,
    b: &guard_score::RoleScores,
    meta: &guard_score::ModelMeta,
) -> serde_json::Value {
    let threshold = meta.threshold;
    use guard_score::RoleScores::{Anomaly, Label};
    let max_diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    // The parity test's measure: |a - b| / (1 + |b|), which must stay within 1e-5.
    let max_scaled = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from((p - q).abs()) / (1.0 + f64::from(q.abs())))
            .fold(0.0f64, f64::max)
    };
    match (a, b) {
        (
            Anomaly {
                score: s1,
                feature_error: e1,
            },
            Anomaly {
                score: s2,
                feature_error: e2,
            },
        ) => {
            let flips = s1
                .iter()
                .zip(s2)
                .filter(|(p, q)| (f64::from(**p) > threshold) != (f64::from(**q) > threshold))
                .count();
            serde_json::json!({
                "rows": s1.len(),
                "score_max_abs_diff": max_diff(s1, s2),
                "score_max_scaled_diff": max_scaled(s1, s2),
                "feature_error_max_scaled_diff": max_scaled(e1, e2),
                "feature_error_max_abs_diff": max_diff(e1, e2),
                "decisions_differing": flips,
            })
        }
        (Label { probabilities: p1 }, Label { probabilities: p2 }) => {
            let classes = meta.classes.len();
            let rows = p1.len().checked_div(classes).unwrap_or(0);
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
                    .0
            };
            let flips = if classes == 0 {
                0
            } else {
                p1.chunks(classes)
                    .zip(p2.chunks(classes))
                    .filter(|(x, y)| argmax(x) != argmax(y))
                    .count()
            };
            serde_json::json!({
                "rows": rows,
                "probability_max_abs_diff": max_diff(p1, p2),
                "probability_max_scaled_diff": max_scaled(p1, p2),
                "decisions_differing": flips,
            })
        }
        _ => serde_json::Value::String("roles differ".into()),
    }
}

struct ScoreBenchArgs<'a> {
    model: &'a std::path::Path,
    input: &'a std::path::Path,
    schema: &'a std::path::Path,
    batches: &'a [usize],
    rows: usize,
    provider: &'a str,
    threads: usize,
    tf32: bool,
    library: Option<&'a std::path::Path>,
}

fn score_bench(a: &ScoreBenchArgs<'_>) -> anyhow::Result<ExitCode> {
    use guard_score::{Model, ProviderChoice, SessionSettings};
    let lib = a
        .library
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into))
        .context("give --library or set ORT_DYLIB_PATH")?;
    guard_score::init_runtime(&lib)?;
    let provider = match a.provider {
        "cuda" => ProviderChoice::Cuda,
        "auto" => ProviderChoice::Auto,
        _ => ProviderChoice::Cpu,
    };
    let mut model = Model::load(
        a.model,
        &SessionSettings {
            provider,
            intra_threads: a.threads,
            tf32: a.tf32,
        },
    )?;
    let schema = guard_validate::DomainSchema::load(a.schema)?;
    let x = model.extractor_for(schema.guard())?;
    let text = std::fs::read_to_string(a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let mut pool: Vec<f32> = Vec::new();
    let mut n_pool = 0;
    for line in text.lines().take(8192) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            x.extend_row(&v, &mut pool);
            n_pool += 1;
        }
    }
    anyhow::ensure!(n_pool > 0, "no rows in {}", a.input.display());
    let w = x.width();
    // Where the nodes really run, and (off CPU) how far the outputs are from CPU's on the
    // same rows: the proof that another provider ran and computes the same thing.
    let placement: serde_json::Map<String, serde_json::Value> = model
        .node_placement()?
        .into_iter()
        .map(|(p, n)| (p, n.into()))
        .collect();
    let cross_check = if model.provider() == guard_score::ProviderInUse::Cpu {
        serde_json::Value::Null
    } else {
        let mut cpu = Model::load(
            a.model,
            &SessionSettings {
                provider: ProviderChoice::Cpu,
                intra_threads: a.threads,
                tf32: a.tf32,
            },
        )?;
        compare_outputs(&model.run(&pool)?, &cpu.run(&pool)?, model.meta())
    };
    println!(
        "{}",
        serde_json::json!({
            "model": a.model.display().to_string(),
            "provider_in_use": model.provider().as_str(),
            "placement": placement,
            "versus_cpu": cross_check,
        })
    );
    for &batch in a.batches {
        let rows: Vec<f32> = (0..batch)
            .flat_map(|i| pool[(i % n_pool) * w..(i % n_pool + 1) * w].iter().copied())
            .collect();
        model.run(&rows)?; // warm-up
        let runs = a.rows.div_ceil(batch).max(1);
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(model.run(&rows)?);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.display().to_string(),
                "provider_requested": a.provider,
                "provider_in_use": model.provider().as_str(),
                "intra_threads": a.threads,
                "tf32": a.tf32,
                "batch": batch,
                "rows": runs * batch,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "rows_per_s": ((runs * batch) as f64 / secs).round(),
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn review_fixture(out: &std::path::Path, rows: usize, files: usize) -> anyhow::Result<ExitCode> {
    use guard_quarantine::{encode, file_name, LocalDirStore, QuarantineRow, QuarantineStore, ReasonEntry};
    use std::sync::Arc;
    let files = files.max(1);
    let per_file = rows.div_ceil(files);
    let store = LocalDirStore::new(out);
    let topics = ["training.shuttle", "training.mnist", "training.tabular"];
    let reasons = [
        ("score.anomaly", None),
        ("score.anomaly", None),
        ("score.label", None),
        ("schema.type", Some("/features/3")),
        ("schema.maximum", Some("/label")),
        ("schema.required", Some("")),
        ("limits.depth", None),
        ("decode.json", None),
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = std::time::Instant::now();
    let t0: i64 = 1_764_100_000_000;
    let mut written = 0usize;
    for f in 0..files {
        let topic = topics[f % topics.len()];
        let partition = i32::try_from((f / topics.len()) % 4).unwrap_or(0);
        let n = per_file.min(rows - written);
        if n == 0 {
            break;
        }
        // Offsets continue per (topic, partition) across files.
        let first = i64::try_from((f / (topics.len() * 4)) * per_file).unwrap_or(0);
        let batch: Vec<QuarantineRow> = (0..n)
            .map(|i| {
                let r = next();
                let (code, path) = reasons[(r % reasons.len() as u64) as usize];
                let offset = first + i as i64;
                let scored = code.starts_with("score.");
                let anomaly = scored.then(|| ((r >> 8) % 10_000) as f32 / 1_000.0);
                let label = (code == "score.label").then(|| 0.99 + ((r >> 24) % 1_000) as f32 / 100_000.0);
                let features: Vec<String> = (0..9)
                    .map(|k| format!("{}", ((r >> (k * 3)) % 200) as i64 - 50))
                    .collect();
                let payload = format!(
                    "{{\"source\":\"sensor-{}\",\"features\":[{}],\"label\":{}}}",
                    (r >> 40) % 50,
                    features.join(","),
                    (r >> 50) % 7
                );
                QuarantineRow {
                    topic: Arc::from(topic),
                    partition,
                    offset,
                    timestamp_ms: Some(t0 + offset * 10),
                    key: Some(format!("k{offset}").into_bytes()),
                    headers: vec![],
                    payload_len: payload.len() as i64,
                    payload: Some(payload.into_bytes()),
                    reasons: vec![ReasonEntry {
                        code: code.into(),
                        path: path.map(Into::into),
                        detail: "fixture".into(),
                    }],
                    schema_id: Some(Arc::from("shuttle-v1")),
                    guard_version: guard_core::GUARD_VERSION,
                    quarantined_at_ms: t0 + (f * per_file + i) as i64 * 5,
                    anomaly_score: anomaly,
                    label_score: label,
                    model_id: scored.then(|| "shuttle-v1/anomaly@fixture".into()),
                    explanation: None,
                    source: Some(format!("sensor-{}", (r >> 40) % 50)),
                    envelope_cut: false,
                }
            })
            .collect();
        let last = first + n as i64 - 1;
        store
            .put(&file_name(topic, partition, first, last), &encode(&batch, 3)?)
            .context("writing a fixture file")?;
        written += n;
    }
    println!(
        "{}",
        serde_json::json!({"rows": written, "files": files, "dir": out.display().to_string(),
            "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(ExitCode::SUCCESS)
}

/// `KEY=VALUE` of `-X`.
fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, found {s:?}"))
}

/// A client configuration: the brokers, then the `-X` properties.
fn client(brokers: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.extend_from(properties);
    c
}

/// Setting many properties at once on a [`ClientConfig`].
trait ExtendFrom {
    fn extend_from(&mut self, properties: &[(String, String)]) -> &mut Self;
}

impl ExtendFrom for ClientConfig {
    fn extend_from(&mut self, properties: &[(String, String)]) -> &mut Self {
        for (k, v) in properties {
            self.set(k, v);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::compare_outputs;
    use guard_score::{ModelMeta, RoleScores};

    fn meta(role: &str, classes: &[&str]) -> ModelMeta {
        serde_json::from_value(serde_json::json!({
            "format": 1, "role": role, "schema_id": "s", "inputs": ["a", "b"], "width": 2,
            "input_name": "x", "threshold": 1.0, "target_fpr": 0.01, "calibration_fpr": 0.01,
            "trusted_sha256": "", "trusted_rows": 0, "classes": classes,
        }))
        .unwrap()
    }

    #[test]
    fn provider_comparison_counts_decisions_that_cross_the_threshold() {
        let a = RoleScores::Anomaly {
            score: vec![0.5, 0.999_99, 2.0],
            feature_error: vec![0.0; 6],
        };
        let b = RoleScores::Anomaly {
            score: vec![0.5, 1.000_01, 2.0],
            feature_error: vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.5],
        };
        let v = compare_outputs(&a, &b, &meta("anomaly", &[]));
        assert_eq!(v["decisions_differing"], 1, "{v}");
        assert_eq!(v["rows"], 3);
        assert!(
            (v["feature_error_max_abs_diff"].as_f64().unwrap() - 0.5).abs() < 1e-9,
            "{v}"
        );
        assert!(
            (v["feature_error_max_scaled_diff"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-6,
            "{v}"
        );
        let same = compare_outputs(&a, &a, &meta("anomaly", &[]));
        assert_eq!(same["decisions_differing"], 0);
        assert_eq!(same["score_max_abs_diff"], 0.0);

        let p = RoleScores::Label {
            probabilities: vec![0.6, 0.4, 0.2, 0.8],
        };
        let q = RoleScores::Label {
            probabilities: vec![0.4, 0.6, 0.2, 0.8],
        };
        let v = compare_outputs(&p, &q, &meta("label", &["0", "1"]));
        assert_eq!(
            (v["rows"].as_u64(), v["decisions_differing"].as_u64()),
            (Some(2), Some(1)),
            "{v}"
        );
        assert_eq!(compare_outputs(&p, &a, &meta("label", &["0", "1"])), "roles differ");
    }
}
