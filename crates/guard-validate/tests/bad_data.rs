//! Golden fixtures built from the real data sets (scripts/make_samples.py): valid Shuttle and
//! MNIST records must pass; each hostile record must get its expected reason code.

use base64::Engine;
use guard_core::{Limits, Record, Verdict};
use guard_validate::{DomainSchema, Judge};
use std::collections::HashMap;
use std::sync::Arc;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../schemas")
}

fn judge() -> Judge {
    let mut routes = HashMap::new();
    for (topic, file) in [("shuttle", "shuttle.schema.json"), ("mnist", "mnist.schema.json")] {
        let schema = DomainSchema::load(&root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        routes.insert(topic.to_owned(), Arc::new(schema));
    }
    Judge::new(Limits::default(), routes)
}

fn record(payload: Vec<u8>) -> Record {
    Record::whole(0, None, None, vec![], Some(payload))
}

#[test]
fn real_valid_records_pass() {
    let j = judge();
    for (topic, file, min) in [
        ("shuttle", "shuttle.valid.jsonl", 50),
        ("mnist", "mnist.valid.jsonl", 20),
    ] {
        let text = std::fs::read(root().join("samples").join(file)).unwrap_or_default();
        let mut n = 0;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v = j.judge(topic, &record(line.to_vec())).verdict;
            assert_eq!(
                v,
                Verdict::Pass,
                "{topic}: {}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            );
            n += 1;
        }
        assert!(n >= min, "{file}: only {n} records");
    }
}

#[test]
fn hostile_records_get_their_reason() {
    let j = judge();
    let text = std::fs::read_to_string(root().join("samples/hostile.jsonl")).unwrap_or_default();
    let mut n = 0;
    for line in text.lines() {
        let fixture: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let topic = fixture["topic"].as_str().unwrap_or_default();
        let want = fixture["code"].as_str().unwrap_or_default();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(fixture["payload_b64"].as_str().unwrap_or_default())
            .unwrap_or_default();
        match j.judge(topic, &record(payload)).verdict {
            Verdict::Quarantine(reasons) => {
                assert_eq!(reasons[0].code.as_str(), want, "{topic}: {reasons:?}");
            }
            Verdict::Pass => panic!("{topic}: expected {want}, got pass"),
        }
        n += 1;
    }
    assert!(n >= 12, "only {n} hostile fixtures");
}
