//! Helpers for demos, tests and benchmarks: produce a file's lines as records, create topics,
//! and a bare pass-through (consume and re-produce with no checks) as the benchmark baseline.

use anyhow::Context;
use clap::Subcommand;
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
    /// The committed data sets' detection table: `ingest-guard evaluate` on each scenario (a
    /// data set, the committed models' split and one attack; one JSON line each). Run from
    /// the repository root (reads `.data/`, `schemas/` and `models/`).
    Evaluate {
        /// Scenarios (default: all): shuttle, shuttle-inject, mnist-flip, mnist-badnets,
        /// mnist-blend, mnist-noise, mnist-fgsm-0.05, mnist-fgsm-0.1, mnist-fgsm-0.2, mnist-pgd-0.1.
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
    /// Benchmark: profiling throughput on one core, in feature-values per second, over a
    /// JSONL file's valid records: (a) the window statistics alone on already parsed rows
    /// (what a DataFrame profiler gets), (b) the whole per-record path (limits, decode, schema,
    /// feature extraction, statistics). Prints one JSON line.
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
        } => {
            let list: Vec<String> = if scenarios.is_empty() {
                guard_eval::SCENARIOS.iter().map(|s| s.0.to_owned()).collect()
            } else {
                scenarios
            };
            for s in &list {
                println!(
                    "{}",
                    serde_json::to_string(&guard_eval::evaluate::scenario(&root, s, fgsm_limit)?)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
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
        } => {
            let args = guard_eval::bench::ScoreBenchArgs {
                model: &model,
                input: &input,
                schema: &schema,
                batches: &batches,
                rows,
                provider: &provider,
                threads,
                tf32,
                library: library.as_deref(),
            };
            guard_eval::bench::score_bench(&args, &mut |line| println!("{line}"))?;
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Profile {
            schema,
            input,
            passes,
            quantiles,
        } => {
            println!("{}", guard_eval::bench::profile(&schema, &input, passes, quantiles)?);
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Latency {
            brokers,
            properties,
            topic,
            count,
        } => {
            println!(
                "{}",
                guard_eval::pipebench::latency(&client(&brokers, &properties), &topic, count)?
            );
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::ReviewFixture { out, rows, files } => {
            println!("{}", guard_eval::bench::review_fixture(&out, rows, files)?);
            Ok(ExitCode::SUCCESS)
        }
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
        } => {
            let base = client(&brokers, &properties);
            println!(
                "{}",
                guard_eval::pipebench::passthrough(&base, &from, &to, &group, count)?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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
