//! Model scoring through the real broker with the committed Shuttle anomaly model on ONNX
//! Runtime (CPU): injected schema-valid random rows are quarantined with `score.anomaly`, their
//! scores, the model id and the top-3 features; normal rows pass at about the calibrated
//! false-positive rate; `/readyz` reports the provider really used (`auto` falls back to CPU
//! on this machine, announced).

use crate::support::*;
use std::time::Duration;

#[test]
fn injected_noise_is_quarantined_by_the_anomaly_model_with_explanations() {
    let rig = Rig::new(2);
    let lib = repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1");
    let model = repo().join("models/shuttle/anomaly.onnx");
    let mut guard = rig.guard_full(
        Some(&rig.output),
        &format!(
            "[scoring]\nexecution_provider = \"auto\"\nlibrary = \"{}\"\n",
            lib.display()
        ),
        "",
        &format!("anomaly_model = \"{}\"\n", model.display()),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let (_, ready) = guard.get("/readyz").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["scoring_provider"], "cpu", "{ready}");
    assert!(
        guard.log_tail().contains("CUDA execution provider unavailable"),
        "fallback announced"
    );

    let text = std::fs::read_to_string(repo().join(".data/shuttle.jsonl")).expect("run scripts/setup.sh first");
    let normal: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("\"label\":0}"))
        .take(3000)
        .collect();
    let mut rng = crate::drift::Lcg(11);
    let mut records: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    for (i, row) in normal.iter().enumerate() {
        records.push((Some(format!("v{i}")), row.as_bytes().to_vec()));
        if i % 30 == 0 {
            let f: Vec<String> = (0..9)
                .map(|_| format!("{}", (rng.next() % 2000) as i64 - 1000))
                .collect();
            let p = format!("{{\"source\":\"injector\",\"features\":[{}],\"label\":0}}", f.join(","));
            records.push((Some(format!("n{i}")), p.into_bytes()));
        }
    }
    let noise = records
        .iter()
        .filter(|(k, _)| k.as_deref().is_some_and(|k| k.starts_with('n')))
        .count();
    rig.produce(&records);
    rig.wait_committed(records.len(), Duration::from_secs(120), "scored stream");
    assert!(guard.term());

    let mut caught = 0;
    let mut false_pos = 0;
    let mut example = None;
    for f in guard_quarantine::list_files(&guard.quarantine).unwrap() {
        for r in guard_quarantine::read_file(&f.path).unwrap() {
            let key = r.key.clone().unwrap_or_default();
            assert!(
                r.reason_codes.iter().all(|c| c == "score.anomaly"),
                "{key}: {:?}",
                r.reason_codes
            );
            assert!(r.anomaly_score.is_some_and(|s| s > 0.0));
            let e: serde_json::Value = serde_json::from_str(r.explanation.as_deref().unwrap()).unwrap();
            assert_eq!(e["anomaly"]["result"]["top"].as_array().map(Vec::len), Some(3), "{e}");
            assert!(e["anomaly"]["model"]
                .as_str()
                .unwrap()
                .starts_with("shuttle-v1/anomaly@"));
            if key.starts_with('n') {
                caught += 1;
                example.get_or_insert(r.reasons[0].detail.clone());
            } else {
                false_pos += 1;
            }
        }
    }
    eprintln!("anomaly model: caught {caught}/{noise} injected rows, {false_pos}/{} normal rows quarantined; e.g. {example:?}", normal.len());
    assert_eq!(caught, noise, "every injected random row is caught");
    assert!(
        false_pos * 100 <= normal.len() * 3,
        "false positives {false_pos} of {}",
        normal.len()
    );
    exactly_once(&rig, &guard.quarantine, records.len());
}
