//! Export of a filtered view as JSONL, CSV or Parquet (the quarantine's own schema), at most
//! [`MAX_EXPORT_ROWS`] rows and about [`MAX_EXPORT_PAYLOAD_BYTES`]
//! read (the export is built in memory), read file by file with row selections. A cut export
//! says so (`truncated`); rows of files not read are left out, the rest keep the view's order.

use crate::index::Filter;
use crate::{Review, ReviewError};

/// Most rows one export writes.
pub const MAX_EXPORT_ROWS: usize = 200_000;
/// Most payload bytes one export reads (the export is built in memory).
pub const MAX_EXPORT_PAYLOAD_BYTES: usize = 128 << 20;
use std::collections::BTreeMap;

/// Bytes, content type, rows written, and whether the view had more rows than were written.
pub type Exported = (Vec<u8>, &'static str, usize, bool);

/// Export the rows `f` selects (sorted as asked) in `format` (`jsonl`, `csv` or `parquet`).
pub fn export(r: &Review, f: &Filter, format: &str) -> Result<Exported, ReviewError> {
    // Which rows of which files, in the view's order.
    let (order, by_file, truncated) = {
        let idx = r.index();
        let mut hits = r
            .audit()
            .with_states(|states| idx.matching(f, &|k| states.get(k).map_or("undecided", |s| s.name())));
        let truncated = hits.len() > MAX_EXPORT_ROWS;
        hits.truncate(MAX_EXPORT_ROWS);
        let mut by_file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut order = Vec::with_capacity(hits.len());
        for &i in &hits {
            let e = &idx.entries()[i as usize];
            if let Some(p) = idx.file_name(e) {
                by_file.entry(p.to_owned()).or_default().push(e.row as usize);
                order.push((p.to_owned(), e.row as usize));
            }
        }
        (order, by_file, truncated)
    };
    let mut out = Vec::new();
    match format {
        "parquet" => {
            let schema = guard_quarantine::arrow_schema();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)
                .map_err(|e| ReviewError::Refused(format!("parquet: {e}")))?;
            let (mut written, mut bytes, mut cut) = (0usize, 0usize, false);
            for (path, mut rs) in by_file {
                if bytes > MAX_EXPORT_PAYLOAD_BYTES {
                    cut = true;
                    break;
                }
                rs.sort_unstable();
                for b in guard_quarantine::read_batches_at(&r.store().get_bytes(&path)?, &rs)? {
                    bytes += b.get_array_memory_size();
                    written += b.num_rows();
                    w.write(&b).map_err(|e| ReviewError::Refused(format!("parquet: {e}")))?;
                }
            }
            w.close().map_err(|e| ReviewError::Refused(format!("parquet: {e}")))?;
            Ok((out, "application/vnd.apache.parquet", written, truncated || cut))
        }
        _ => {
            // Read each file's rows once, then write them in the view's order.
            let mut read: BTreeMap<(String, usize), guard_quarantine::StoredRow> = BTreeMap::new();
            let mut payload_bytes = 0usize;
            let mut cut = false;
            for (path, mut rs) in by_file {
                if payload_bytes > MAX_EXPORT_PAYLOAD_BYTES {
                    cut = true;
                    break;
                }
                rs.sort_unstable();
                rs.dedup();
                for (row, stored) in rs
                    .iter()
                    .zip(guard_quarantine::read_rows_at(&r.store().get_bytes(&path)?, &rs)?)
                {
                    payload_bytes += stored.payload.as_ref().map_or(0, String::len);
                    read.insert((path.clone(), *row), stored);
                }
            }
            let truncated = truncated || cut;
            let rows = read.len();
            if format == "csv" {
                let mut w = csv::Writer::from_writer(&mut out);
                let head = [
                    "topic",
                    "partition",
                    "offset",
                    "kafka_timestamp_ms",
                    "quarantined_at_ms",
                    "reason_codes",
                    "anomaly_score",
                    "label_score",
                    "source",
                    "schema_id",
                    "model_id",
                    "payload_len",
                    "payload_truncated",
                    "key",
                    "payload",
                ];
                w.write_record(head).map_err(csv_err)?;
                for k in &order {
                    let Some(s) = read.get(k) else { continue };
                    let opt = |v: Option<String>| v.unwrap_or_default();
                    w.write_record([
                        s.topic.clone(),
                        s.partition.to_string(),
                        s.offset.to_string(),
                        opt(s.kafka_timestamp_ms.map(|v| v.to_string())),
                        s.quarantined_at_ms.to_string(),
                        s.reason_codes.join(";"),
                        opt(s.anomaly_score.map(|v| v.to_string())),
                        opt(s.label_score.map(|v| v.to_string())),
                        opt(s.source.clone()),
                        opt(s.schema_id.clone()),
                        opt(s.model_id.clone()),
                        s.payload_len.to_string(),
                        s.payload_truncated.to_string(),
                        opt(s.key.clone()),
                        opt(s.payload.clone()),
                    ])
                    .map_err(csv_err)?;
                }
                w.flush().map_err(|e| ReviewError::Refused(format!("csv: {e}")))?;
                drop(w);
                Ok((out, "text/csv; charset=utf-8", rows, truncated))
            } else {
                for k in &order {
                    let Some(s) = read.get(k) else { continue };
                    serde_json::to_writer(&mut out, s).map_err(|e| ReviewError::Refused(format!("jsonl: {e}")))?;
                    out.push(b'\n');
                }
                Ok((out, "application/x-ndjson", rows, truncated))
            }
        }
    }
}

fn csv_err(e: csv::Error) -> ReviewError {
    ReviewError::Refused(format!("csv: {e}"))
}
