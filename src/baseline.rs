//! `ingest-guard baseline`: build a trusted reference profile from a JSONL file, a Parquet
//! file, or an offset range of a topic. Every row goes through the same limits, decoding and
//! schema checks as in the stream; rows that fail are counted and skipped.

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use guard_core::Limits;
use guard_stats::BaselineBuilder;
use guard_validate::{decode, prescan, DomainSchema};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where the trusted rows come from.
pub enum Input<'a> {
    /// One JSON record per line.
    Jsonl(&'a Path),
    /// A Parquet file: each row becomes a JSON object of its columns, or, with
    /// `payload_column`, that column holds the JSON record.
    Parquet {
        path: &'a Path,
        payload_column: Option<&'a str>,
    },
    /// Offsets `[from, to)` of every partition of a topic (`to` = None: up to the high
    /// watermark when the build starts).
    Topic {
        brokers: &'a str,
        topic: &'a str,
        from: i64,
        to: Option<i64>,
    },
}

/// Options of `ingest-guard baseline`.
pub struct BaselineArgs<'a> {
    pub schema: &'a Path,
    pub input: Input<'a>,
    pub out: &'a Path,
    pub window: usize,
    pub bins: usize,
    pub resamples: usize,
}

struct Collector<'s> {
    schema: &'s DomainSchema,
    builder: BaselineBuilder,
    limits: Limits,
    cats: Vec<Option<String>>,
    used: u64,
    skipped: u64,
    first_skip: Option<String>,
}

impl Collector<'_> {
    fn push(&mut self, what: &dyn Fn() -> String, bytes: &[u8]) {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let schema = self.schema;
        let checked = prescan(bytes, &self.limits)
            .and_then(|()| decode(bytes))
            .map_err(|r| vec![r])
            .and_then(|v| schema.check(&v).map(|()| v));
        match checked {
            Ok(v) => {
                self.cats.clear();
                let cats = &mut self.cats;
                schema.for_each_categorical(&v, |_, c| cats.push(c.map(str::to_owned)));
                let refs: Vec<Option<&str>> = self.cats.iter().map(Option::as_deref).collect();
                self.builder
                    .push_row(&schema.numeric_features(&v), &refs, schema.label(&v).as_deref());
                self.used += 1;
            }
            Err(reasons) => {
                self.skipped += 1;
                if self.first_skip.is_none() {
                    self.first_skip = Some(format!("{}: {}", what(), reasons[0].code));
                }
            }
        }
    }
}

pub fn run(a: &BaselineArgs<'_>) -> anyhow::Result<ExitCode> {
    let schema = DomainSchema::load(a.schema)?;
    let names: Vec<String> = schema.guard().numeric.iter().map(|f| f.name.clone()).collect();
    let cat_names = schema.categorical_names();
    let mut c = Collector {
        schema: &schema,
        builder: BaselineBuilder::new(names.clone()).with_categorical(cat_names.clone()),
        limits: Limits::default(),
        cats: Vec::with_capacity(cat_names.len()),
        used: 0,
        skipped: 0,
        first_skip: None,
    };
    let (sha, described) = match &a.input {
        Input::Jsonl(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                c.push(&|| format!("line {}", i + 1), line);
            }
            (hex(&Sha256::digest(&bytes)), path.display().to_string())
        }
        Input::Parquet { path, payload_column } => {
            let sha = read_parquet(path, *payload_column, &mut c)?;
            (sha, path.display().to_string())
        }
        Input::Topic {
            brokers,
            topic,
            from,
            to,
        } => {
            let sha = read_topic(brokers, topic, *from, *to, &mut c)?;
            (
                sha,
                format!("{topic} offsets {from}..{}", to.map_or("end".into(), |t| t.to_string())),
            )
        }
    };
    anyhow::ensure!(
        c.used > 0,
        "no valid rows in {described} (first problem: {:?})",
        c.first_skip
    );
    let (used, skipped, first_skip) = (c.used, c.skipped, c.first_skip.take());
    let baseline = c.builder.build(schema.id(), &sha, a.bins, a.window, a.resamples)?;
    let text = serde_json::to_vec_pretty(&baseline)?;
    let tmp = a.out.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, a.out).with_context(|| format!("renaming to {}", a.out.display()))?;
    println!(
        "baseline {} for schema {} from {described}: {used} rows ({skipped} invalid rows skipped{}), {} numeric and {} categorical features, {} labels, window {}, sha256 {sha}",
        a.out.display(),
        schema.id(),
        first_skip.map(|s| format!(", first: {s}")).unwrap_or_default(),
        names.len(),
        cat_names.len(),
        baseline.labels.len(),
        a.window,
    );
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_parquet(path: &Path, payload_column: Option<&str>, c: &mut Collector<'_>) -> anyhow::Result<String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha = hex(&Sha256::digest(&bytes));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .with_batch_size(8192)
        .build()?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let schema = batch.schema();
        if let Some(col) = payload_column {
            let idx = schema
                .index_of(col)
                .with_context(|| format!("{} has no column {col:?}", path.display()))?;
            let a = batch.column(idx);
            for i in 0..batch.num_rows() {
                row += 1;
                let bytes: &[u8] = match a.data_type() {
                    DataType::Binary => a.as_binary::<i32>().value(i),
                    DataType::LargeBinary => a.as_binary::<i64>().value(i),
                    DataType::Utf8 => a.as_string::<i32>().value(i).as_bytes(),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i).as_bytes(),
                    other => anyhow::bail!("column {col:?} is {other}, not binary or string"),
                };
                let bytes = if a.is_null(i) { &[][..] } else { bytes };
                c.push(&|| format!("row {row}"), bytes);
            }
            continue;
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let mut obj = Map::new();
            for (field, col) in schema.fields().iter().zip(batch.columns()) {
                if let Some(v) = cell(col, i) {
                    obj.insert(field.name().clone(), v);
                }
            }
            let bytes = serde_json::to_vec(&Value::Object(obj))?;
            c.push(&|| format!("row {row}"), &bytes);
        }
    }
    Ok(sha)
}

/// One cell as JSON: numbers, strings, booleans and lists of them; `None` for nulls and
/// types a record cannot hold (the schema then reports the field missing).
fn cell(a: &ArrayRef, i: usize) -> Option<Value> {
    if a.is_null(i) {
        return None;
    }
    let f = |x: f64| Number::from_f64(x).map(Value::Number);
    Some(match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => f(f64::from(a.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => f(a.as_primitive::<Float64Type>().value(i))?,
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        DataType::List(_) => list(&a.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list(&a.as_list::<i64>().value(i)),
        _ => return None,
    })
}

/// A list cell's values as a JSON array (nulls and unsupported types as `null`).
fn list(inner: &ArrayRef) -> Value {
    Value::Array(
        (0..inner.len())
            .map(|j| cell(inner, j).unwrap_or(Value::Null))
            .collect(),
    )
}

fn read_topic(brokers: &str, topic: &str, from: i64, to: Option<i64>, c: &mut Collector<'_>) -> anyhow::Result<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ingest-guard-baseline-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!parts.is_empty(), "topic {topic} not found at {brokers}");
    let mut hasher = Sha256::new();
    // Partition by partition, in offset order, so the hash is reproducible.
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let (start, end) = (from.max(low), to.map_or(high, |t| t.min(high)));
        if start >= end {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let mut next = start;
        let mut idle = Instant::now();
        while next < end {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    idle = Instant::now();
                    if m.offset() < next {
                        continue;
                    }
                    next = m.offset() + 1;
                    if m.offset() >= end {
                        break;
                    }
                    let payload = m.payload().unwrap_or_default();
                    hasher.update((p as u32).to_be_bytes());
                    hasher.update(m.offset().to_be_bytes());
                    hasher.update((payload.len() as u64).to_be_bytes());
                    hasher.update(payload);
                    let off = m.offset();
                    c.push(&|| format!("{topic}/{p}/{off}"), payload);
                }
                Some(Err(e)) => anyhow::bail!("reading {topic}/{p}: {e}"),
                None => anyhow::ensure!(
                    idle.elapsed() < Duration::from_secs(30),
                    "{topic}/{p}: nothing new for 30 s at offset {next}, expected up to {end}"
                ),
            }
        }
    }
    Ok(hex(&hasher.finalize()))
}
