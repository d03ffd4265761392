//! Reading quarantine files back, for `ingest-guard quarantine ls|show` and tests.

use crate::{parse_file_name, QuarantineError, ReasonEntry};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A quarantine file found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// Full path.
    pub path: PathBuf,
    /// Topic (from the folder name).
    pub topic: String,
    /// Partition (from the folder name).
    pub partition: i32,
    /// First input offset covered.
    pub first_offset: i64,
    /// Last input offset covered.
    pub last_offset: i64,
    /// Rows in the file.
    pub rows: i64,
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
}

/// Every complete quarantine file under `root`, sorted by topic, partition and offset.
pub fn list_files(root: &Path) -> Result<Vec<FileInfo>, QuarantineError> {
    let mut out = Vec::new();
    let topics = match std::fs::read_dir(root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(QuarantineError::io(root.display(), e)),
    };
    for t in topics.flatten() {
        let tname = t.file_name().to_string_lossy().into_owned();
        let Some(topic) = tname.strip_prefix("topic=") else {
            continue;
        };
        for p in std::fs::read_dir(t.path())
            .map_err(|e| QuarantineError::io(t.path().display(), e))?
            .flatten()
        {
            let pname = p.file_name().to_string_lossy().into_owned();
            let Some(partition) = pname.strip_prefix("partition=").and_then(|s| s.parse().ok()) else {
                continue;
            };
            for f in std::fs::read_dir(p.path())
                .map_err(|e| QuarantineError::io(p.path().display(), e))?
                .flatten()
            {
                let fname = f.file_name().to_string_lossy().into_owned();
                let Some((first, last)) = parse_file_name(&fname) else {
                    continue;
                };
                let path = f.path();
                let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                let rows = File::open(&path)
                    .ok()
                    .and_then(|file| ParquetRecordBatchReaderBuilder::try_new(file).ok())
                    .map_or(-1, |b| b.metadata().file_metadata().num_rows());
                out.push(FileInfo {
                    path,
                    topic: topic.to_owned(),
                    partition,
                    first_offset: first,
                    last_offset: last,
                    rows,
                    bytes,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition, a.first_offset).cmp(&(&b.topic, b.partition, b.first_offset)));
    Ok(out)
}

/// Read every row of one file.
pub fn read_file(path: &Path) -> Result<Vec<StoredRow>, QuarantineError> {
    let file = File::open(path).map_err(|e| QuarantineError::io(path.display(), e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        rows_of(&batch?, &mut out)?;
    }
    Ok(out)
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, QuarantineError> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| QuarantineError::Format(format!("missing column {name}")))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rows_of(b: &RecordBatch, out: &mut Vec<StoredRow>) -> Result<(), QuarantineError> {
    let topic = col(b, "topic")?.as_string::<i32>();
    let partition = col(b, "partition")?.as_primitive::<Int32Type>();
    let offset = col(b, "offset")?.as_primitive::<Int64Type>();
    let ts = col(b, "kafka_timestamp")?.as_primitive::<TimestampMillisecondType>();
    let key = col(b, "key")?.as_binary::<i32>();
    let headers = col(b, "headers")?.as_list::<i32>();
    let payload = col(b, "payload")?.as_binary::<i32>();
    let payload_len = col(b, "payload_len")?.as_primitive::<Int64Type>();
    let truncated = col(b, "payload_truncated")?.as_boolean();
    let codes = col(b, "reason_codes")?.as_list::<i32>();
    let reasons = col(b, "reasons")?.as_string::<i32>();
    let schema_id = col(b, "schema_id")?.as_string::<i32>();
    let version = col(b, "guard_version")?.as_string::<i32>();
    let at = col(b, "quarantined_at")?.as_primitive::<TimestampMillisecondType>();
    let anomaly = col(b, "anomaly_score")?.as_primitive::<Float32Type>();
    let label = col(b, "label_score")?.as_primitive::<Float32Type>();
    let explanation = b.column_by_name("explanation").map(|c| c.as_string::<i32>());
    for i in 0..b.num_rows() {
        let hs = headers.value(i);
        let hs = hs.as_struct();
        let hk = hs.column(0).as_string::<i32>();
        let hv = hs.column(1).as_binary::<i32>();
        let cs = codes.value(i);
        let cs = cs.as_string::<i32>();
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
        };
        let bytes = encode(&[row.clone(), QuarantineRow { offset: 9, ..row }], 3)?;
        store.put(&file_name("t", 2, 7, 9), &bytes)?;
        let files = list_files(dir.path())?;
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].first_offset, files[0].last_offset, files[0].rows), (7, 9, 2));
        let rows = read_file(&files[0].path)?;
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
        Ok(())
    }
}
