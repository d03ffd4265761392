//! The quarantine file's columns and the Arrow/Parquet encoding.

use crate::QuarantineError;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use guard_core::{Header, Reason};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// One reason as stored in the `reasons` JSON column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonEntry {
    /// Stable reason code.
    pub code: String,
    /// JSON pointer or byte location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Human detail.
    pub detail: String,
}

impl From<&Reason> for ReasonEntry {
    fn from(r: &Reason) -> Self {
        Self {
            code: r.code.as_str().to_owned(),
            path: r.path.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// One quarantined record, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub timestamp_ms: Option<i64>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Payload (a prefix if `payload_truncated`).
    pub payload: Option<Vec<u8>>,
    /// Payload length on the wire.
    pub payload_len: i64,
    /// Reasons (never empty).
    pub reasons: Vec<ReasonEntry>,
    /// Schema identity.
    pub schema_id: Option<Arc<str>>,
    /// Guard version.
    pub guard_version: &'static str,
    /// When the guard quarantined it (ms since epoch).
    pub quarantined_at_ms: i64,
    /// Anomaly score, when a model scored it.
    pub anomaly_score: Option<f32>,
    /// Label-consistency score, when a model scored it.
    pub label_score: Option<f32>,
    /// Model identity, when a model scored it.
    pub model_id: Option<String>,
    /// Why the models scored it so (JSON: per role the score, threshold and the top
    /// contributing features or the predicted class), when a model scored it.
    pub explanation: Option<String>,
    /// The record's producer (`drift.source_header`, or the schema's `x-guard.source`
    /// field; `(undecoded)` when neither could be read).
    pub source: Option<String>,
    /// Part of the key or headers was not kept (over an envelope limit, or a header key
    /// that is not UTF-8): the stored record is not the original and cannot be released.
    pub envelope_cut: bool,
}

impl QuarantineRow {
    /// Approximate bytes this row holds, for roll-by-size.
    pub fn approx_bytes(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
            + self.key.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
            + self.reasons.iter().map(|r| r.detail.len() + 32).sum::<usize>()
            + 128
    }
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The Arrow schema of quarantine files (stable; new columns are only ever appended).
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new(
                "kafka_timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("key", DataType::Binary, true),
            Field::new(
                "headers",
                DataType::List(Arc::new(Field::new("item", DataType::Struct(header_fields()), true))),
                false,
            ),
            Field::new("payload", DataType::Binary, true),
            Field::new("payload_len", DataType::Int64, false),
            Field::new("payload_truncated", DataType::Boolean, false),
            Field::new(
                "reason_codes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("reasons", DataType::Utf8, false),
            Field::new("schema_id", DataType::Utf8, true),
            Field::new("guard_version", DataType::Utf8, false),
            Field::new(
                "quarantined_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("anomaly_score", DataType::Float32, true),
            Field::new("label_score", DataType::Float32, true),
            Field::new("model_id", DataType::Utf8, true),
            Field::new("explanation", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, true),
            Field::new("envelope_cut", DataType::Boolean, true),
        ]))
    }))
}

/// Build the Arrow batch for `rows`.
pub fn to_record_batch(rows: &[QuarantineRow]) -> Result<RecordBatch, QuarantineError> {
    let n = rows.len();
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut key = BinaryBuilder::new();
    let mut headers = ListBuilder::new(StructBuilder::from_fields(header_fields(), 0));
    let mut payload = BinaryBuilder::new();
    let mut payload_len = Int64Builder::with_capacity(n);
    let mut truncated = BooleanBuilder::with_capacity(n);
    let mut codes = ListBuilder::new(StringBuilder::new());
    let mut reasons = StringBuilder::new();
    let mut schema_id = StringBuilder::new();
    let mut version = StringBuilder::new();
    let mut at = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut anomaly = Float32Builder::with_capacity(n);
    let mut label = Float32Builder::with_capacity(n);
    let mut model = StringBuilder::new();
    let mut explanation = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut cut = BooleanBuilder::with_capacity(n);
    for r in rows {
        topic.append_value(&*r.topic);
        partition.append_value(r.partition);
        offset.append_value(r.offset);
        ts.append_option(r.timestamp_ms);
        key.append_option(r.key.as_deref());
        {
            let s = headers.values();
            for h in &r.headers {
                field::<StringBuilder>(s, 0)?.append_value(&h.key);
                field::<BinaryBuilder>(s, 1)?.append_option(h.value.as_deref());
                s.append(true);
            }
            headers.append(true);
        }
        payload.append_option(r.payload.as_deref());
        payload_len.append_value(r.payload_len);
        truncated.append_value((r.payload.as_ref().map_or(0, Vec::len) as i64) < r.payload_len);
        for reason in &r.reasons {
            codes.values().append_value(&reason.code);
        }
        codes.append(true);
        let json = serde_json::to_string(&r.reasons).unwrap_or_else(|_| "[]".into());
        reasons.append_value(json);
        schema_id.append_option(r.schema_id.as_deref());
        version.append_value(r.guard_version);
        at.append_value(r.quarantined_at_ms);
        anomaly.append_option(r.anomaly_score);
        label.append_option(r.label_score);
        model.append_option(r.model_id.as_deref());
        explanation.append_option(r.explanation.as_deref());
        source.append_option(r.source.as_deref());
        cut.append_value(r.envelope_cut);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(ts.finish()),
        Arc::new(key.finish()),
        Arc::new(headers.finish()),
        Arc::new(payload.finish()),
        Arc::new(payload_len.finish()),
        Arc::new(truncated.finish()),
        Arc::new(codes.finish()),
        Arc::new(reasons.finish()),
        Arc::new(schema_id.finish()),
        Arc::new(version.finish()),
        Arc::new(at.finish()),
        Arc::new(anomaly.finish()),
        Arc::new(label.finish()),
        Arc::new(model.finish()),
        Arc::new(explanation.finish()),
        Arc::new(source.finish()),
        Arc::new(cut.finish()),
    ];
    Ok(RecordBatch::try_new(arrow_schema(), columns)?)
}

fn field<T: arrow_array::builder::ArrayBuilder>(s: &mut StructBuilder, i: usize) -> Result<&mut T, QuarantineError> {
    s.field_builder::<T>(i)
        .ok_or_else(|| QuarantineError::Format(format!("header builder field {i}")))
}

/// Encode rows as a zstd-compressed Parquet file in memory.
pub fn encode(rows: &[QuarantineRow], zstd_level: i32) -> Result<Vec<u8>, QuarantineError> {
    let batch = to_record_batch(rows)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_created_by(format!("ingest-guard {}", guard_core::GUARD_VERSION))
        .build();
    // Compressed output is usually far smaller than the rows; start small and let it grow.
    let mut out =
        Vec::with_capacity((rows.iter().map(QuarantineRow::approx_bytes).sum::<usize>() / 8).min(1 << 20) + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, arrow_schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}
