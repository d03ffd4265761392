//! `ingest-guard baseline` on real Shuttle records: a versioned profile with the data's hash.

use crate::support::*;
use sha2::{Digest, Sha256};

#[test]
fn baseline_from_real_shuttle_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("trusted.jsonl");
    let mut data = std::fs::read(repo().join("schemas/samples/shuttle.valid.jsonl")).unwrap();
    data.extend(b"{\"source\":\"x\",\"features\":[1],\"label\":0}\n"); // invalid: too few features
    std::fs::write(&input, &data).unwrap();
    let out = dir.path().join("baseline.json");
    let run = run_baseline(&input, &out, 20, 100);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}{stdout}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("1 invalid rows skipped") && stdout.contains("schema.minItems"),
        "{stdout}"
    );
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(b["format"], 1);
    assert_eq!(b["schema_id"], "shuttle-v1");
    assert_eq!(b["rows"], 60);
    assert_eq!(b["features"].as_array().map(Vec::len), Some(9));
    assert_eq!(b["features"][0]["name"], "f1");
    let sha: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(b["data_sha256"], sha.as_str());
    let labels = b["labels"].as_object().unwrap();
    assert_eq!(labels.values().filter_map(serde_json::Value::as_u64).sum::<u64>(), 60);
}
