//! Trusted record sets: a JSONL file, a Parquet file, or an offset range of a topic, read
//! record by record with a reproducible SHA-256 of what was read (it goes into the baseline,
//! so a profile names the exact data it came from).

use crate::EvalError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the trusted rows come from.
pub enum Input<'a> {
    /// One JSON record per line.
    Jsonl(&'a Path),
    /// A Parquet file: each row becomes a JSON object of its columns, or, with
    /// `payload_column`, that column holds the JSON record.
    Parquet {
        /// The file.
        path: &'a Path,
        /// The column that holds whole JSON records, if any.
        payload_column: Option<&'a str>,
    },
    /// Offsets `[from, to)` of every partition of a topic (`to` = None: up to the high
    /// watermark when the read starts).
    Topic {
        /// Bootstrap servers.
        brokers: &'a str,
        /// The topic.
        topic: &'a str,
        /// First offset of each partition.
        from: i64,
        /// End offset (exclusive) of each partition.
        to: Option<i64>,
    },
}

impl<'a> Input<'a> {
    /// A file: `.parquet` files as Parquet (each row's columns are the record, or
    /// `payload_column` holds its JSON), anything else as JSON Lines.
    pub fn file(path: &'a Path, payload_column: Option<&'a str>) -> Self {
        if path.extension().is_some_and(|e| e == "parquet") {
            Input::Parquet { path, payload_column }
        } else {
            Input::Jsonl(path)
        }
    }

    /// The input in words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Input::Jsonl(path) | Input::Parquet { path, .. } => path.display().to_string(),
            Input::Topic { topic, from, to, .. } => {
                format!("{topic} offsets {from}..{}", to.map_or("end".into(), |t| t.to_string()))
            }
        }
    }
}

/// Where a record was found (line, row or topic/partition/offset), made only when asked.
pub type Locator<'a> = &'a dyn Fn() -> String;

/// Call `each` with every record of `input` (blank records included: the caller decides);
/// returns the hex SHA-256 of what was read.
pub fn for_each_record(input: &Input<'_>, each: &mut dyn FnMut(Locator<'_>, &[u8])) -> Result<String, EvalError> {
    match input {
        Input::Jsonl(path) => {
            let bytes = std::fs::read(path).map_err(EvalError::io(path))?;
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                each(&|| format!("line {}", i + 1), line);
            }
            Ok(hex(&Sha256::digest(&bytes)))
        }
        Input::Parquet { path, payload_column } => read_parquet(path, *payload_column, each),
        Input::Topic {
            brokers,
            topic,
            from,
            to,
        } => read_topic(brokers, topic, *from, *to, each),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_parquet(
    path: &Path,
    payload_column: Option<&str>,
    each: &mut dyn FnMut(Locator<'_>, &[u8]),
) -> Result<String, EvalError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bytes = std::fs::read(path).map_err(EvalError::io(path))?;
    let sha = hex(&Sha256::digest(&bytes));
    let parquet = |source| EvalError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(parquet)?
        .with_batch_size(8192)
        .build()
        .map_err(parquet)?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|source| EvalError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        let schema = batch.schema();
        if let Some(col) = payload_column {
            let idx = schema
                .index_of(col)
                .map_err(|_| EvalError::Input(format!("{} has no column {col:?}", path.display())))?;
            let a = batch.column(idx);
            for i in 0..batch.num_rows() {
                row += 1;
                let bytes: &[u8] = match a.data_type() {
                    DataType::Binary => a.as_binary::<i32>().value(i),
                    DataType::LargeBinary => a.as_binary::<i64>().value(i),
                    DataType::Utf8 => a.as_string::<i32>().value(i).as_bytes(),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i).as_bytes(),
                    other => {
                        return Err(EvalError::Input(format!(
                            "column {col:?} is {other}, not binary or string"
                        )))
                    }
                };
                let bytes = if a.is_null(i) { &[][..] } else { bytes };
                each(&|| format!("row {row}"), bytes);
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
            let bytes = serde_json::to_vec(&Value::Object(obj)).map_err(|source| EvalError::Json {
                what: format!("{} row {row}", path.display()),
                source,
            })?;
            each(&|| format!("row {row}"), &bytes);
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

fn read_topic(
    brokers: &str,
    topic: &str,
    from: i64,
    to: Option<i64>,
    each: &mut dyn FnMut(Locator<'_>, &[u8]),
) -> Result<String, EvalError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ingest-guard-baseline-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(EvalError::kafka("creating a consumer"))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(EvalError::kafka(format!("metadata of {topic}")))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(EvalError::Input(format!("topic {topic} not found at {brokers}")));
    }
    let mut hasher = Sha256::new();
    // Partition by partition, in offset order, so the hash is reproducible.
    for p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(EvalError::kafka(format!("watermarks of {topic}/{p}")))?;
        let (start, end) = (from.max(low), to.map_or(high, |t| t.min(high)));
        if start >= end {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .and_then(|()| consumer.assign(&tpl))
            .map_err(EvalError::kafka(format!("assigning {topic}/{p}")))?;
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
                    each(&|| format!("{topic}/{p}/{off}"), payload);
                }
                Some(Err(e)) => return Err(EvalError::kafka(format!("reading {topic}/{p}"))(e)),
                None if idle.elapsed() >= Duration::from_secs(30) => {
                    return Err(EvalError::Input(format!(
                        "{topic}/{p}: nothing new for 30 s at offset {next}, expected up to {end}"
                    )))
                }
                None => {}
            }
        }
    }
    Ok(hex(&hasher.finalize()))
}
