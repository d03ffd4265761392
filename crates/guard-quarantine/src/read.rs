//! Reading quarantine files back, for `ingest-guard quarantine ls|show` and tests.

use crate::{parse_file_name, QuarantineError, QuarantineStore, ReasonEntry};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrowPrimitiveType, BinaryArray, BooleanArray, GenericListArray, PrimitiveArray, RecordBatch, StringArray,
    StructArray,
};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

/// A quarantine file found in a store.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// Name relative to the store's root (`topic=T/partition=P/<first>-<last>.parquet`).
    pub name: String,
    /// Topic (from the folder name).
    pub topic: String,
    /// Partition (from the folder name).
    pub partition: i32,
    /// First input offset covered.
    pub first_offset: i64,
    /// Last input offset covered.
    pub last_offset: i64,
    /// Size in bytes.
    pub bytes: u64,
}

/// A row read back from a quarantine file.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRow {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub kafka_timestamp_ms: Option<i64>,
    /// Key as UTF-8 (lossy).
    pub key: Option<String>,
    /// Header keys and lossy UTF-8 values.
    pub headers: Vec<(String, Option<String>)>,
    /// Payload as UTF-8 (lossy).
    pub payload: Option<String>,
    /// Payload length on the wire.
    pub payload_len: i64,
    /// Only a prefix of the payload is stored.
    pub payload_truncated: bool,
    /// Reason codes.
    pub reason_codes: Vec<String>,
    /// Full reasons.
    pub reasons: Vec<ReasonEntry>,
    /// Schema identity.
    pub schema_id: Option<String>,
    /// Guard version.
    pub guard_version: String,
    /// Quarantine time (ms).
    pub quarantined_at_ms: i64,
    /// Anomaly score.
    pub anomaly_score: Option<f32>,
    /// Label-consistency score.
    pub label_score: Option<f32>,
    /// Model explanation (JSON), when a model scored the record; files written before the
    /// column existed read as `None`.
    pub explanation: Option<String>,
    /// The record's producer, when known (files before the column existed: `None`).
    pub source: Option<String>,
    /// Model identity, when a model scored it.
    pub model_id: Option<String>,
}

/// Every complete quarantine file in `store`, sorted by topic, partition and offset. Only
/// names are listed: nothing is read.
pub fn list_files(store: &dyn QuarantineStore) -> Result<Vec<FileInfo>, QuarantineError> {
    let mut out = Vec::new();
    for (name, bytes) in store.list_all()? {
        let mut parts = name.split('/');
        let (Some(t), Some(p)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Some(topic), Some(partition)) = (
            t.strip_prefix("topic="),
            p.strip_prefix("partition=").and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let Some((first, last)) = parse_file_name(&name) else {
            continue;
        };
        out.push(FileInfo {
            topic: topic.to_owned(),
            partition,
            first_offset: first,
            last_offset: last,
            bytes,
            name,
        });
    }
    out.sort_by(|a, b| {
        (&a.topic, a.partition, a.first_offset, &a.name).cmp(&(&b.topic, b.partition, b.first_offset, &b.name))
    });
    Ok(out)
}

/// Rows a file's footer declares; `None` when it is not a readable quarantine file.
pub fn file_rows(data: &Bytes) -> Option<i64> {
    guarded(|| {
        Ok(checked(ParquetRecordBatchReaderBuilder::try_new(data.clone())?)?
            .metadata()
            .file_metadata()
            .num_rows())
    })
    .ok()
}

/// Every row of every file in `store` (tests and small tools; the dashboard reads by row).
pub fn read_all(store: &dyn QuarantineStore) -> Result<Vec<StoredRow>, QuarantineError> {
    let mut out = Vec::new();
    for f in list_files(store)? {
        out.extend(read_file(&store.get_bytes(&f.name)?)?);
    }
    Ok(out)
}

/// Read every row of one file.
pub fn read_file(data: &Bytes) -> Result<Vec<StoredRow>, QuarantineError> {
    guarded(|| read_file_unguarded(data))
}

fn read_file_unguarded(data: &Bytes) -> Result<Vec<StoredRow>, QuarantineError> {
    let file = data.clone();
    let reader = checked(ParquetRecordBatchReaderBuilder::try_new(file)?)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        rows_of(&batch?, &mut out)?;
    }
    Ok(out)
}

/// The original record of a quarantine row, bytes as they arrived (for release).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub timestamp_ms: Option<i64>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<guard_core::Header>,
    /// Payload (a prefix if `truncated`).
    pub payload: Option<Vec<u8>>,
    /// Only a prefix of the payload was kept: the original cannot be restored.
    pub truncated: bool,
    /// Part of the key or headers was not kept: the original cannot be restored.
    pub envelope_cut: bool,
}

/// What the review index keeps of one row, borrowed from the batch being scanned.
#[derive(Debug, Clone, Copy)]
pub struct RowSummary<'a> {
    /// Row number in the file.
    pub row: usize,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub kafka_timestamp_ms: Option<i64>,
    /// Quarantine time (ms).
    pub quarantined_at_ms: i64,
    /// Anomaly score.
    pub anomaly_score: Option<f32>,
    /// Label-consistency score.
    pub label_score: Option<f32>,
    /// Source: the `source` column, else the value of the given header.
    pub source: Option<&'a str>,
}

/// Open `path` for reading at most the given row numbers (ascending) with `projection` (column
/// names; `None`: all), using the row groups' sizes to skip whole groups.
fn reader_at(
    data: &Bytes,
    rows: &[usize],
    projection: Option<&[&str]>,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, QuarantineError> {
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let file = data.clone();
    let mut builder = checked(ParquetRecordBatchReaderBuilder::try_new(file)?)?;
    if let Some(names) = projection {
        let schema = builder.schema();
        let idx: Vec<usize> = names.iter().filter_map(|n| schema.index_of(n).ok()).collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), idx);
        builder = builder.with_projection(mask);
    }
    // Row groups that hold a wanted row, and a selection relative to them.
    let mut groups = Vec::new();
    let mut selectors = Vec::new();
    let mut start = 0usize;
    let mut want = rows.iter().copied().peekable();
    for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
        let n = usize::try_from(rg.num_rows()).unwrap_or(0);
        let end = start + n;
        let mut cursor = start;
        let mut any = false;
        while let Some(&r) = want.peek() {
            if r >= end {
                break;
            }
            want.next();
            if r < cursor {
                continue; // duplicate or unsorted
            }
            if !any {
                groups.push(g);
                any = true;
            }
            if r > cursor {
                selectors.push(RowSelector::skip(r - cursor));
            }
            selectors.push(RowSelector::select(1));
            cursor = r + 1;
        }
        if any && cursor < end {
            selectors.push(RowSelector::skip(end - cursor));
        }
        start = end;
    }
    Ok(builder
        .with_row_groups(groups)
        .with_row_selection(RowSelection::from(selectors))
        .build()?)
}

/// Read the given rows (row numbers in the file, ascending) in full.
pub fn read_rows_at(data: &Bytes, rows: &[usize]) -> Result<Vec<StoredRow>, QuarantineError> {
    guarded(|| read_rows_at_unguarded(data, rows))
}

fn read_rows_at_unguarded(data: &Bytes, rows: &[usize]) -> Result<Vec<StoredRow>, QuarantineError> {
    let mut out = Vec::with_capacity(rows.len());
    if rows.is_empty() {
        return Ok(out);
    }
    for batch in reader_at(data, rows, None)? {
        rows_of(&batch?, &mut out)?;
    }
    Ok(out)
}

/// Read the given rows as Arrow batches in [`crate::arrow_schema`] (columns a file predates
/// are null), for export.
pub fn read_batches_at(data: &Bytes, rows: &[usize]) -> Result<Vec<RecordBatch>, QuarantineError> {
    guarded(|| read_batches_at_unguarded(data, rows))
}

fn read_batches_at_unguarded(data: &Bytes, rows: &[usize]) -> Result<Vec<RecordBatch>, QuarantineError> {
    let target = crate::arrow_schema();
    let mut out = Vec::new();
    if rows.is_empty() {
        return Ok(out);
    }
    for batch in reader_at(data, rows, None)? {
        let b = batch?;
        let cols: Vec<arrow_array::ArrayRef> = target
            .fields()
            .iter()
            .map(|f| {
                b.column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| arrow_array::new_null_array(f.data_type(), b.num_rows()))
            })
            .collect();
        out.push(RecordBatch::try_new(target.clone(), cols)?);
    }
    Ok(out)
}

/// The original bytes of one row, for release.
pub fn read_raw_at(data: &Bytes, row: usize) -> Result<RawRecord, QuarantineError> {
    guarded(|| read_raw_at_unguarded(data, row))
}

fn read_raw_at_unguarded(data: &Bytes, row: usize) -> Result<RawRecord, QuarantineError> {
    let mut reader = reader_at(data, &[row], None)?;
    let b = reader
        .next()
        .transpose()?
        .filter(|b| b.num_rows() == 1)
        .ok_or_else(|| QuarantineError::Format(format!("row {row} not in this file")))?;
    let topic = strings(&b, "topic")?;
    let partition = prims::<Int32Type>(&b, "partition")?;
    let offset = prims::<Int64Type>(&b, "offset")?;
    let ts = prims::<TimestampMillisecondType>(&b, "kafka_timestamp")?;
    let key = binaries(&b, "key")?;
    let headers = lists(&b, "headers")?;
    let payload = binaries(&b, "payload")?;
    let truncated = bools(&b, "payload_truncated")?;
    let hs = headers.value(0);
    let (hk, hv) = header_columns(&hs)?;
    Ok(RawRecord {
        topic: topic.value(0).to_owned(),
        partition: partition.value(0),
        offset: offset.value(0),
        timestamp_ms: ts.is_valid(0).then(|| ts.value(0)),
        key: key.is_valid(0).then(|| key.value(0).to_vec()),
        headers: (0..hs.len())
            .map(|j| guard_core::Header {
                key: hk.value(j).to_owned(),
                value: hv.is_valid(j).then(|| hv.value(j).to_vec()),
            })
            .collect(),
        payload: payload.is_valid(0).then(|| payload.value(0).to_vec()),
        truncated: truncated.value(0),
        envelope_cut: b
            .column_by_name("envelope_cut")
            .and_then(|c| c.as_boolean_opt())
            .is_some_and(|c| c.is_valid(0) && c.value(0)),
    })
}

/// Scan the columns the review index needs (never the payloads), calling `f` for each row
/// with its reason codes. The source is the `source` column, or for files written before it
/// the value of `source_header`.
pub fn scan_summaries(
    data: &Bytes,
    source_header: Option<&str>,
    f: impl FnMut(RowSummary<'_>, &[&str]),
) -> Result<usize, QuarantineError> {
    guarded(|| scan_summaries_unguarded(data, source_header, f))
}

fn scan_summaries_unguarded(
    data: &Bytes,
    source_header: Option<&str>,
    mut f: impl FnMut(RowSummary<'_>, &[&str]),
) -> Result<usize, QuarantineError> {
    let file = data.clone();
    let builder = checked(ParquetRecordBatchReaderBuilder::try_new(file)?)?;
    let has_source = builder.schema().index_of("source").is_ok();
    let mut names = vec![
        "offset",
        "kafka_timestamp",
        "quarantined_at",
        "reason_codes",
        "anomaly_score",
        "label_score",
    ];
    if has_source {
        names.push("source");
    } else if source_header.is_some() {
        names.push("headers");
    }
    let schema = builder.schema();
    let idx: Vec<usize> = names.iter().filter_map(|n| schema.index_of(n).ok()).collect();
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), idx);
    let reader = builder.with_projection(mask).with_batch_size(8192).build()?;
    let mut row = 0usize;
    for batch in reader {
        let b = batch?;
        let mut codes_buf: Vec<&str> = Vec::new();
        let offset = prims::<Int64Type>(&b, "offset")?;
        let ts = prims::<TimestampMillisecondType>(&b, "kafka_timestamp")?;
        let at = prims::<TimestampMillisecondType>(&b, "quarantined_at")?;
        let codes = lists(&b, "reason_codes")?;
        let code_values = codes
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong("reason_codes", "a list of utf8"))?;
        let anomaly = prims::<Float32Type>(&b, "anomaly_score")?;
        let label = prims::<Float32Type>(&b, "label_score")?;
        let source = opt_strings(&b, "source");
        let headers = b.column_by_name("headers").and_then(|c| c.as_list_opt::<i32>());
        let code_offsets = codes.value_offsets();
        for i in 0..b.num_rows() {
            codes_buf.clear();
            let (lo, hi) = (code_offsets[i], code_offsets[i + 1]);
            for j in lo..hi {
                let j = usize::try_from(j).unwrap_or(0);
                if code_values.is_valid(j) {
                    codes_buf.push(code_values.value(j));
                }
            }
            let header_source = match (headers, source_header) {
                (Some(h), Some(name)) => {
                    let hs = h.value(i);
                    let (hk, hv) = header_columns(&hs)?;
                    (0..hs.len()).find(|&j| hk.value(j) == name).map(|j| {
                        if hv.is_valid(j) {
                            std::str::from_utf8(hv.value(j)).unwrap_or("(binary)").to_owned()
                        } else {
                            "(none)".to_owned()
                        }
                    })
                }
                _ => None,
            };
            let summary = RowSummary {
                row,
                offset: offset.value(i),
                kafka_timestamp_ms: ts.is_valid(i).then(|| ts.value(i)),
                quarantined_at_ms: at.value(i),
                anomaly_score: anomaly.is_valid(i).then(|| anomaly.value(i)),
                label_score: label.is_valid(i).then(|| label.value(i)),
                source: match source {
                    Some(s) if s.is_valid(i) => Some(s.value(i)),
                    _ => header_source.as_deref(),
                },
            };
            f(summary, &codes_buf);
            row += 1;
        }
    }
    Ok(row)
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, QuarantineError> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| QuarantineError::Format(format!("missing column {name}")))
}

// Typed column access that reports a foreign layout as an error instead of panicking (arrow's
// `as_string` and friends panic on a type mismatch, and a file in the folder may be anything).

fn wrong(name: &str, want: &str) -> QuarantineError {
    QuarantineError::Format(format!("column {name} is not {want}"))
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, QuarantineError> {
    col(b, name)?.as_string_opt::<i32>().ok_or_else(|| wrong(name, "utf8"))
}

fn opt_strings<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>())
}

fn prims<'a, T: ArrowPrimitiveType>(b: &'a RecordBatch, name: &str) -> Result<&'a PrimitiveArray<T>, QuarantineError> {
    col(b, name)?
        .as_primitive_opt::<T>()
        .ok_or_else(|| wrong(name, "of the expected number type"))
}

fn binaries<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray, QuarantineError> {
    col(b, name)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| wrong(name, "binary"))
}

fn bools<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray, QuarantineError> {
    col(b, name)?.as_boolean_opt().ok_or_else(|| wrong(name, "boolean"))
}

fn lists<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a GenericListArray<i32>, QuarantineError> {
    col(b, name)?.as_list_opt::<i32>().ok_or_else(|| wrong(name, "a list"))
}

/// The `(key, value)` columns of one row's header list.
fn header_columns(hs: &dyn Array) -> Result<(&StringArray, &BinaryArray), QuarantineError> {
    let st: &StructArray = hs
        .as_struct_opt()
        .ok_or_else(|| wrong("headers", "a list of structs"))?;
    let k = st
        .column_by_name("key")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| wrong("headers.key", "utf8"))?;
    let v = st
        .column_by_name("value")
        .and_then(|c| c.as_binary_opt::<i32>())
        .ok_or_else(|| wrong("headers.value", "binary"))?;
    Ok((k, v))
}

/// Most rows a file may declare. The guard writes at most `quarantine.roll_max_rows` per file
/// (validated to stay below this); a footer that declares more is not the guard's, and decoding
/// the pages it describes could take very long for a small file.
const MAX_ROWS_PER_FILE: i64 = guard_core::limits::MAX_ROWS_PER_QUARANTINE_FILE;

/// Refuse a file whose footer declares more rows than a quarantine file can hold, or row
/// groups that do not add up, before any page is decoded.
fn checked<T>(
    builder: parquet::arrow::arrow_reader::ArrowReaderBuilder<T>,
) -> Result<parquet::arrow::arrow_reader::ArrowReaderBuilder<T>, QuarantineError> {
    let meta = builder.metadata();
    let rows = meta.file_metadata().num_rows();
    let groups: i64 = meta.row_groups().iter().map(|g| g.num_rows().max(0)).sum();
    if !(0..=MAX_ROWS_PER_FILE).contains(&rows) || groups != rows {
        return Err(QuarantineError::Format(format!(
            "the footer declares {rows} rows ({groups} in its row groups); a quarantine file holds at most {MAX_ROWS_PER_FILE}"
        )));
    }
    Ok(builder)
}

/// Run a reader over untrusted bytes; a panic inside the Parquet or Arrow decoders (a damaged
/// file) becomes an error for that file instead of taking the process down.
fn guarded<T>(f: impl FnOnce() -> Result<T, QuarantineError>) -> Result<T, QuarantineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(QuarantineError::Format(
            "the Parquet decoder panicked on this file".into(),
        ))
    })
}

/// The `offset` column of a quarantine file held in memory (replay de-duplication).
pub fn offsets_in(bytes: Bytes) -> Result<Vec<i64>, QuarantineError> {
    guarded(|| {
        let builder = checked(ParquetRecordBatchReaderBuilder::try_new(bytes)?)?;
        let idx = builder
            .schema()
            .index_of("offset")
            .map_err(|_| QuarantineError::Format("missing column offset".into()))?;
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder.with_projection(mask).with_batch_size(8192).build()?;
        let mut out = Vec::new();
        for batch in reader {
            let b = batch?;
            out.extend(prims::<Int64Type>(&b, "offset")?.iter().flatten());
        }
        Ok(out)
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rows_of(b: &RecordBatch, out: &mut Vec<StoredRow>) -> Result<(), QuarantineError> {
    let topic = strings(b, "topic")?;
    let partition = prims::<Int32Type>(b, "partition")?;
    let offset = prims::<Int64Type>(b, "offset")?;
    let ts = prims::<TimestampMillisecondType>(b, "kafka_timestamp")?;
    let key = binaries(b, "key")?;
    let headers = lists(b, "headers")?;
    let payload = binaries(b, "payload")?;
    let payload_len = prims::<Int64Type>(b, "payload_len")?;
    let truncated = bools(b, "payload_truncated")?;
    let codes = lists(b, "reason_codes")?;
    let reasons = strings(b, "reasons")?;
    let schema_id = strings(b, "schema_id")?;
    let version = strings(b, "guard_version")?;
    let at = prims::<TimestampMillisecondType>(b, "quarantined_at")?;
    let anomaly = prims::<Float32Type>(b, "anomaly_score")?;
    let label = prims::<Float32Type>(b, "label_score")?;
    let explanation = opt_strings(b, "explanation");
    let source = opt_strings(b, "source");
    let model_id = opt_strings(b, "model_id");
    for i in 0..b.num_rows() {
        let hs = headers.value(i);
        let (hk, hv) = header_columns(&hs)?;
        let cs = codes.value(i);
        let cs = cs
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong("reason_codes", "a list of utf8"))?;
        out.push(StoredRow {
            topic: topic.value(i).to_owned(),
            partition: partition.value(i),
            offset: offset.value(i),
            kafka_timestamp_ms: ts.is_valid(i).then(|| ts.value(i)),
            key: key.is_valid(i).then(|| lossy(key.value(i))),
            headers: (0..hs.len())
                .map(|j| (hk.value(j).to_owned(), hv.is_valid(j).then(|| lossy(hv.value(j)))))
                .collect(),
            payload: payload.is_valid(i).then(|| lossy(payload.value(i))),
            payload_len: payload_len.value(i),
            payload_truncated: truncated.value(i),
            reason_codes: (0..cs.len()).map(|j| cs.value(j).to_owned()).collect(),
            reasons: serde_json::from_str(reasons.value(i)).unwrap_or_default(),
            schema_id: schema_id.is_valid(i).then(|| schema_id.value(i).to_owned()),
            guard_version: version.value(i).to_owned(),
            quarantined_at_ms: at.value(i),
            anomaly_score: anomaly.is_valid(i).then(|| anomaly.value(i)),
            label_score: label.is_valid(i).then(|| label.value(i)),
            explanation: explanation.filter(|e| e.is_valid(i)).map(|e| e.value(i).to_owned()),
            source: source.filter(|e| e.is_valid(i)).map(|e| e.value(i).to_owned()),
            model_id: model_id.filter(|e| e.is_valid(i)).map(|e| e.value(i).to_owned()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::*;
    use guard_core::Header;
    use std::sync::Arc;

    #[test]
    fn round_trip_through_parquet() -> Result<(), QuarantineError> {
        let dir = tempfile::tempdir().map_err(|e| QuarantineError::io("tmp", e))?;
        let store = LocalDirStore::new(dir.path());
        let row = QuarantineRow {
            topic: Arc::from("t"),
            partition: 2,
            offset: 7,
            timestamp_ms: Some(1_700_000_000_000),
            key: None,
            headers: vec![
                Header {
                    key: "h".into(),
                    value: Some(b"v".to_vec()),
                },
                Header {
                    key: "n".into(),
                    value: None,
                },
            ],
            payload: Some(b"{\"a\":".to_vec()),
            payload_len: 100,
            reasons: vec![ReasonEntry {
                code: "decode.json".into(),
                path: Some("@1:5".into()),
                detail: "eof".into(),
            }],
            schema_id: Some(Arc::from("s-v1")),
            guard_version: "0.1.0",
            quarantined_at_ms: 1_700_000_000_001,
            anomaly_score: None,
            label_score: Some(0.5),
            model_id: None,
            explanation: Some("{\"anomaly\":{}}".into()),
            source: Some("producer-7".into()),
            envelope_cut: false,
        };
        let bytes = encode(&[row.clone(), QuarantineRow { offset: 9, ..row }], 3)?;
        store.put(&file_name("t", 2, 7, 9), &bytes)?;
        let files = list_files(&store)?;
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].first_offset, files[0].last_offset), (7, 9));
        assert_eq!(file_rows(&store.get_bytes(&files[0].name)?), Some(2));
        let rows = read_file(&store.get_bytes(&files[0].name)?)?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].offset, 9);
        assert!(rows[0].payload_truncated);
        assert_eq!(rows[0].reason_codes, vec!["decode.json".to_owned()]);
        assert_eq!(rows[0].reasons[0].path.as_deref(), Some("@1:5"));
        assert_eq!(
            rows[0].headers,
            vec![("h".into(), Some("v".into())), ("n".into(), None)]
        );
        assert_eq!(rows[0].label_score, Some(0.5));
        assert_eq!(rows[0].explanation.as_deref(), Some("{\"anomaly\":{}}"));
        assert_eq!(rows[0].source.as_deref(), Some("producer-7"));
        Ok(())
    }
}
