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
    assert_eq!(b["format"], 2);
    assert_eq!(b["schema_id"], "shuttle-v1");
    assert_eq!(b["rows"], 60);
    assert_eq!(
        b["features"].as_array().map(Vec::len),
        Some(10),
        "nine sensors and the label"
    );
    assert_eq!(b["features"][0]["name"], "f1");
    assert_eq!(b["features"][9]["name"], "label");
    assert_eq!(b["features"][9]["categories"], serde_json::json!(["0", "1"]));
    let sha: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(b["data_sha256"], sha.as_str());
    let labels = b["labels"].as_object().unwrap();
    assert_eq!(labels.values().filter_map(serde_json::Value::as_u64).sum::<u64>(), 60);
}

fn baseline_cmd(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let run = std::process::Command::new(guard_bin())
        .arg("baseline")
        .arg("--schema")
        .arg(repo().join("schemas/shuttle.schema.json"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .args(["--window", "500", "--resamples", "200"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// The same trusted rows as JSONL, as a columnar Parquet file, as a Parquet file of JSON
/// payloads, and as an offset range of a topic give the same profile.
#[test]
fn baseline_from_parquet_and_from_a_topic_range_match_jsonl() {
    use arrow_array::builder::{Float64Builder, ListBuilder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;

    let text = std::fs::read_to_string(repo().join(".data/shuttle.jsonl")).expect("run scripts/setup.sh first");
    let rows: Vec<&str> = text.lines().take(3000).collect();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("t.jsonl");
    std::fs::write(&jsonl, rows.join("\n")).unwrap();
    let parsed: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect();

    // Columnar: source, features (list<double>), label.
    let mut features = ListBuilder::new(Float64Builder::new());
    for v in &parsed {
        for x in v["features"].as_array().unwrap() {
            features.values().append_value(x.as_f64().unwrap());
        }
        features.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        (
            "source",
            Arc::new(StringArray::from_iter_values(
                parsed.iter().map(|v| v["source"].as_str().unwrap().to_owned()),
            )) as ArrayRef,
        ),
        ("features", Arc::new(features.finish()) as ArrayRef),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(
                parsed.iter().map(|v| v["label"].as_i64().unwrap()),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let columnar = dir.path().join("t.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&columnar).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    // Payloads: one JSON record per row in a string column.
    let payloads = RecordBatch::try_from_iter([(
        "payload",
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| (*r).to_owned()))) as ArrayRef,
    )])
    .unwrap();
    let payload_file = dir.path().join("p.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&payload_file).unwrap(), payloads.schema(), None)
            .unwrap();
    w.write(&payloads).unwrap();
    w.close().unwrap();

    // A topic holding 1000 unrelated rows, then the 3000, then 20 more.
    let broker = Broker::start();
    let topic = unique("trusted");
    broker.create_topic(&topic, 1);
    let other: Vec<(Option<String>, Vec<u8>)> = text
        .lines()
        .skip(40_000)
        .take(1000)
        .map(|l| (None, l.as_bytes().to_vec()))
        .collect();
    let mine: Vec<(Option<String>, Vec<u8>)> = rows.iter().map(|l| (None, l.as_bytes().to_vec())).collect();
    let p = producer(&broker.addr, 1 << 20);
    produce(&p, &topic, &other, 1);
    produce(&p, &topic, &mine, 1);
    // One record per produce request: Tansu 0.6 reports the high watermark of a topic whose
    // last batch holds several records as that batch's base offset + 1.
    for r in &other[..20] {
        produce(&p, &topic, std::slice::from_ref(r), 1);
    }

    let a = baseline_cmd(&["--input", jsonl.to_str().unwrap()]);
    let b = baseline_cmd(&["--input", columnar.to_str().unwrap()]);
    let c = baseline_cmd(&["--input", payload_file.to_str().unwrap(), "--payload-column", "payload"]);
    let d = baseline_cmd(&[
        "--topic",
        &topic,
        "--brokers",
        &broker.addr,
        "--from-offset",
        "1000",
        "--to-offset",
        "4000",
    ]);
    for (name, x) in [("columnar parquet", &b), ("payload parquet", &c), ("topic range", &d)] {
        assert_eq!(x["rows"], 3000, "{name}");
        assert_eq!(x["labels"], a["labels"], "{name}");
        for (fa, fx) in a["features"]
            .as_array()
            .unwrap()
            .iter()
            .zip(x["features"].as_array().unwrap())
        {
            assert_eq!(fa["bins"], fx["bins"], "{name} {}", fa["name"]);
            assert_eq!(
                fa["profile"]["counts"], fx["profile"]["counts"],
                "{name} {}",
                fa["name"]
            );
        }
    }
    assert_ne!(a["data_sha256"], d["data_sha256"]);
    let whole = baseline_cmd(&["--topic", &topic, "--brokers", &broker.addr]);
    assert_eq!(whole["rows"], 4020, "to the high watermark");
}

/// `schema infer` on the three real data sets setup ships (tabular with categories, tabular
/// with a numeric array, images): the schema compiles, `baseline` accepts every row it came
/// from, and it refuses what the data never held (a value far out of range, an unknown field,
/// an unseen category).
#[test]
fn inferred_schemas_accept_their_own_rows_and_refuse_what_the_data_never_held() {
    let dir = tempfile::tempdir().unwrap();
    // Per data set: the label, one change to a real row the data never held, the row count.
    let cases = [
        ("diamonds", "cut", ("/color", serde_json::json!("Z")), 53_940),
        ("shuttle", "label", ("/features/8", serde_json::json!(999_999)), 49_097),
        ("mnist", "label", ("/pixels/0", serde_json::json!(100_000)), 5_000),
    ];
    for (name, label, (pointer, bad), rows) in cases {
        let data = repo().join(format!(".data/{name}.jsonl"));
        let schema = dir.path().join(format!("{name}.schema.json"));
        let run = std::process::Command::new(guard_bin())
            .args(["schema", "infer", "--label", label, "--source", "source", "--input"])
            .arg(&data)
            .arg("--out")
            .arg(&schema)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{name}: {}{stdout}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains(&format!("from {rows} rows")), "{stdout}");
        // Every trusted row passes; then two records the data never held are refused.
        let text = std::fs::read_to_string(&data).unwrap();
        let first = text.lines().next().unwrap();
        let mut changed: serde_json::Value = serde_json::from_str(first).unwrap();
        *changed.pointer_mut(pointer).unwrap() = bad;
        let mut unknown: serde_json::Value = serde_json::from_str(first).unwrap();
        unknown["unknown"] = serde_json::json!(true);
        let hostile = format!("{first}\n{changed}\n{unknown}\n");
        let mixed = dir.path().join(format!("{name}.mixed.jsonl"));
        std::fs::write(&mixed, hostile).unwrap();
        for (input, skipped) in [(data.as_path(), 0), (mixed.as_path(), 2)] {
            let out = dir.path().join(format!("{name}.baseline.json"));
            let run = run_baseline_with(&schema, input, &out);
            let stdout = String::from_utf8_lossy(&run.stdout);
            assert!(
                run.status.success(),
                "{name}: {}{stdout}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(
                stdout.contains(&format!("({skipped} invalid rows skipped")),
                "{name}: {stdout}"
            );
            // Refused by the inferred constraints, not by the decoder.
            assert!(
                skipped == 0 || stdout.contains("first: line 2: schema."),
                "{name}: {stdout}"
            );
        }
    }
    // Something that needs a person is refused by name.
    let nested = dir.path().join("nested.jsonl");
    std::fs::write(&nested, "{\"a\":{\"b\":1}}\n").unwrap();
    let run = std::process::Command::new(guard_bin())
        .args(["schema", "infer", "--input"])
        .arg(&nested)
        .arg("--out")
        .arg(dir.path().join("n.schema.json"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("field \"a\""));
}

fn run_baseline_with(schema: &std::path::Path, input: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(guard_bin())
        .arg("baseline")
        .arg("--schema")
        .arg(schema)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--window", "500", "--resamples", "50"])
        .output()
        .unwrap()
}
