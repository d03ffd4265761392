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
    // Every record's score is in the histogram (buckets, so instances aggregate).
    assert_eq!(guard.metric_sum("guard_score_anomaly_count"), records.len() as f64);
    assert!(guard
        .metrics()
        .keys()
        .any(|k| k.starts_with("guard_score_anomaly_bucket{")));
    assert_eq!(guard.metric_sum("guard_score_provider_info"), 1.0);
    assert!(guard.term());

    let mut caught = 0;
    let mut false_pos = 0;
    let mut example = None;
    for r in stored_rows(&guard.quarantine) {
        {
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

/// A copy of the committed Shuttle anomaly model (graph and metadata) in the rig's folder, for
/// tests that change it.
fn shuttle_model_copy(rig: &Rig) -> std::path::PathBuf {
    let dir = rig.dir.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["anomaly.onnx", "anomaly.json"] {
        std::fs::copy(repo().join("models/shuttle").join(f), dir.join(f)).unwrap();
    }
    dir
}

/// Hot swap: a corrupt replacement is refused (422) and the running model keeps scoring; a
/// valid change (here the metadata's threshold) is picked up by the file watch and swapped in
/// without a restart; every quarantined record names the model version that judged it.
#[test]
fn models_swap_without_restart_and_bad_ones_are_refused() {
    let rig = Rig::new(1);
    let (src, dir) = (repo().join("models/shuttle"), shuttle_model_copy(&rig));
    let lib = repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1");
    let mut guard = rig.guard_full(
        Some(&rig.output),
        &format!(
            "[scoring]\nexecution_provider = \"cpu\"\nwatch_interval_ms = 300\nlibrary = \"{}\"\n{REVIEWER_TOML}",
            lib.display()
        ),
        "",
        &format!("anomaly_model = \"{}\"\n", dir.join("anomaly.onnx").display()),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let noise = |tag: &str| -> Vec<(Option<String>, Vec<u8>)> {
        (0..10)
            .map(|i| {
                let p =
                    format!("{{\"source\":\"x\",\"features\":[900,-900,900,-900,900,-900,900,-900,{i}],\"label\":0}}");
                (Some(format!("{tag}{i}")), p.into_bytes())
            })
            .collect()
    };
    let models = |g: &Guard| -> serde_json::Value { serde_json::from_str(&g.get("/api/models").unwrap().1).unwrap() };
    assert_eq!(models(&guard)["generation"], 0);

    rig.produce(&noise("a"));
    rig.wait_committed(10, Duration::from_secs(60), "first batch");

    // A corrupt graph: refused, the running model stays.
    std::fs::write(dir.join("anomaly.onnx"), b"not a model").unwrap();
    let (code, _) = http_post(guard.port, "/api/models/reload").unwrap();
    assert_eq!(code, 401, "an operator action needs a reviewer");
    let r = api(guard.port).post("/api/models/reload", "");
    let (code, body) = (r.status, r.body);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("anomaly.onnx"), "{body}");
    std::thread::sleep(Duration::from_millis(800)); // the watcher also tries, and refuses
    assert_eq!(models(&guard)["generation"], 0);
    rig.produce(&noise("b"));
    rig.wait_committed(20, Duration::from_secs(60), "second batch");

    // A valid change: the graph back, the threshold raised; the watcher swaps it in.
    std::fs::copy(src.join("anomaly.onnx"), dir.join("anomaly.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("anomaly.json")).unwrap()).unwrap();
    meta["threshold"] = 1e12.into();
    std::fs::write(dir.join("anomaly.json"), meta.to_string()).unwrap();
    wait_for(Duration::from_secs(20), "watcher reloads", || {
        models(&guard)["generation"].as_u64() >= Some(1)
    });
    rig.produce(&noise("c"));
    rig.wait_committed(30, Duration::from_secs(60), "third batch");
    assert!(guard.term());

    let mut ids = std::collections::BTreeSet::new();
    let mut keys = Vec::new();
    for r in stored_rows(&guard.quarantine) {
        {
            let e: serde_json::Value = serde_json::from_str(r.explanation.as_deref().unwrap()).unwrap();
            ids.insert(e["anomaly"]["model"].as_str().unwrap().to_owned());
            keys.push(r.key.unwrap_or_default());
        }
    }
    keys.sort();
    assert_eq!(keys.len(), 20, "batches a and b quarantined, c passed: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with('a') || k.starts_with('b')));
    assert_eq!(ids.len(), 1, "one model version judged a and b: {ids:?}");
    exactly_once(&rig, &guard.quarantine, 30);
}

/// Model integrity: a route can pin the SHA-256 of its model's graph and metadata. Files that
/// do not match are refused at start (`check`) and on reload; a raised threshold in the
/// metadata cannot switch detection off behind the pin.
#[test]
fn pinned_models_refuse_changed_files() {
    use sha2::Digest;
    let rig = Rig::new(1);
    let dir = shuttle_model_copy(&rig);
    let mut h = sha2::Sha256::new();
    h.update(std::fs::read(dir.join("anomaly.onnx")).unwrap());
    h.update(std::fs::read(dir.join("anomaly.json")).unwrap());
    let pin: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let lib = repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1");
    let scoring = format!(
        "[scoring]\nexecution_provider = \"cpu\"\nwatch_interval_ms = 300\nlibrary = \"{}\"\n",
        lib.display()
    );
    let model = format!("anomaly_model = \"{}\"\n", dir.join("anomaly.onnx").display());
    // A wrong pin: `check` names both hashes and refuses.
    let wrong = rig.guard_full(
        Some(&rig.output),
        &scoring,
        "",
        &format!("{model}anomaly_model_sha256 = \"{}\"\n", "0".repeat(64)),
    );
    let out = std::process::Command::new(guard_bin())
        .args(["check", "--config"])
        .arg(&wrong.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("anomaly_model_sha256") && err.contains(&pin), "{err}");

    let mut guard = rig.guard_full(
        Some(&rig.output),
        &scoring,
        "",
        &format!("{model}anomaly_model_sha256 = \"{pin}\"\n"),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let noise: Vec<(Option<String>, Vec<u8>)> = (0..10)
        .map(|i| {
            let p = format!("{{\"source\":\"x\",\"features\":[900,-900,900,-900,900,-900,900,-900,{i}],\"label\":0}}");
            (Some(format!("n{i}")), p.into_bytes())
        })
        .collect();
    // Whoever can write the folder raises the threshold: the watcher sees it and refuses.
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("anomaly.json")).unwrap()).unwrap();
    meta["threshold"] = 1e12.into();
    std::fs::write(dir.join("anomaly.json"), meta.to_string()).unwrap();
    wait_for(Duration::from_secs(20), "the watcher tries the changed files", || {
        guard.metric_sum("guard_score_reload_failures_total") >= 1.0
    });
    let models: serde_json::Value = serde_json::from_str(&guard.get("/api/models").unwrap().1).unwrap();
    assert_eq!(models["generation"], 0, "nothing swapped");
    rig.produce(&noise);
    rig.wait_committed(10, Duration::from_secs(60), "noise judged");
    assert_eq!(
        quarantined(&guard.quarantine).len(),
        10,
        "the pinned model still quarantines the noise"
    );
    assert!(guard.log_tail().contains("pins sha256"), "{}", guard.log_tail());
    assert!(guard.term());
}
