//! Rust scores equal Python ONNX Runtime's on the same inputs, to 1e-5: the fixtures were
//! written by scripts/train_models.py with onnxruntime 1.31.1 (Python) when the committed
//! models were made. Plus the refusals: corrupt model, schema mismatch, CUDA without CUDA.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use guard_core::GuardSection;
use guard_score::{
    init_runtime, Model, ProviderChoice, ProviderInUse, RoleScores, ScoreError, SessionSettings, CPU_RUN_ROWS,
};
use std::path::PathBuf;

/// The `x-guard` section of a schema file.
fn guard_section(path: &std::path::Path) -> GuardSection {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    serde_json::from_value(v["x-guard"].clone()).unwrap()
}

pub fn root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../..")
}

pub fn runtime() {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"));
    init_runtime(&lib).unwrap_or_else(|e| panic!("{e}; run scripts/setup.sh"));
}

const CPU: SessionSettings = SessionSettings {
    provider: ProviderChoice::Cpu,
    intra_threads: 1,
    tf32: false,
};

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs())
}

fn parity(domain: &str, role: &str) {
    runtime();
    let dir = root().join("models").join(domain);
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{role}.fixture.json"))).unwrap()).unwrap();
    let mut model = Model::load(&dir.join(format!("{role}.onnx")), &CPU).unwrap();
    assert_eq!(model.provider(), ProviderInUse::Cpu);
    let inputs: Vec<f32> = fixture["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect();
    let rows = fixture["inputs"].as_array().unwrap().len();
    fn leaves(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let flat = |name: &str| -> Vec<f64> {
        let mut out = Vec::new();
        leaves(&fixture["outputs"][name], &mut out);
        out
    };
    let mut compared = 0;
    match model.run(&inputs).unwrap() {
        RoleScores::Anomaly { score, feature_error } => {
            for (name, got) in [("score", &score), ("feature_error", &feature_error)] {
                let want = flat(name);
                assert_eq!(got.len(), want.len(), "{name}");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(close(*g, *w), "{domain}/{role} {name}[{i}]: rust {g} python {w}");
                    compared += 1;
                }
            }
        }
        RoleScores::Label {
            probabilities,
            classifier,
            ..
        } => {
            let want = flat("probabilities");
            let classes = &model.meta().classes;
            for (i, (g, w)) in probabilities.iter().zip(&want).enumerate() {
                assert!(close(*g, *w), "{domain}/{role} probabilities[{i}]: rust {g} python {w}");
                compared += 1;
            }
            // And the guard's score (1 - p(given label), or with the neighbour vote the larger
            // of its two statistics over their thresholds) equals the fixture's.
            let n = classes.len();
            for (r, label) in fixture["labels"].as_array().unwrap().iter().enumerate() {
                let c = classes.iter().position(|c| c == label.as_str().unwrap()).unwrap();
                let q = classifier.get(r * n..(r + 1) * n).unwrap_or_default();
                let got = model.meta().label_score(&probabilities[r * n..(r + 1) * n], q, Some(c));
                let want = fixture["scores"][r].as_f64().unwrap();
                assert!(close(got, want), "{domain}/{role} score[{r}]: rust {got} python {want}");
            }
        }
        RoleScores::Adversarial { log_probabilities } => {
            let want = flat("log_probabilities");
            assert_eq!(log_probabilities.len(), want.len());
            for (i, (g, w)) in log_probabilities.iter().zip(&want).enumerate() {
                assert!(
                    close(*g, *w),
                    "{domain}/{role} log_probabilities[{i}]: rust {g} python {w}"
                );
                compared += 1;
            }
            // And the guard's score (the largest rise of log p(given label) under a
            // squeezer) equals the trainer's.
            let classes = &model.meta().classes;
            let per_row = log_probabilities.len() / rows;
            for (r, label) in fixture["labels"].as_array().unwrap().iter().enumerate() {
                let c = classes.iter().position(|c| c == label.as_str().unwrap());
                let row = &log_probabilities[r * per_row..(r + 1) * per_row];
                let thresholds = model.meta().squeezer_thresholds.as_deref().unwrap_or_default();
                let got = guard_score::squeeze_score(row, classes.len(), c, thresholds)
                    .unwrap()
                    .score;
                let want = fixture["scores"][r].as_f64().unwrap();
                assert!(close(got, want), "{domain}/{role} score[{r}]: rust {got} python {want}");
            }
        }
    }
    assert!(compared >= rows, "compared {compared} values");
}

/// Every output of a role, flattened in a fixed order.
fn all_outputs(s: RoleScores) -> Vec<Vec<f32>> {
    match s {
        RoleScores::Anomaly { score, feature_error } => vec![score, feature_error],
        RoleScores::Label {
            probabilities,
            classifier,
            hidden,
        } => vec![probabilities, classifier, hidden],
        RoleScores::Adversarial { log_probabilities } => vec![log_probabilities],
    }
}

/// A batch larger than one CPU run (`Model::run` splits it into runs of `CPU_RUN_ROWS` rows)
/// scores each row as the row alone in a small batch does: every output, the label model's
/// hidden layer included, in the order of the rows.
#[test]
fn batches_split_into_cpu_runs_score_as_their_rows() {
    runtime();
    let dir = root().join("models/mnist");
    for role in ["anomaly", "label", "adversarial"] {
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{role}.fixture.json"))).unwrap()).unwrap();
        let rows: Vec<Vec<f32>> = fixture["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let mut model = Model::load(&dir.join(format!("{role}.onnx")), &CPU).unwrap();
        // Each fixture row alone, then all of them cycled into 2 runs and a part.
        let alone: Vec<Vec<Vec<f32>>> = rows.iter().map(|r| all_outputs(model.run(r).unwrap())).collect();
        let n = 2 * CPU_RUN_ROWS + 7;
        let batch: Vec<f32> = (0..n).flat_map(|i| rows[i % rows.len()].clone()).collect();
        let together = all_outputs(model.run(&batch).unwrap());
        for (k, out) in together.iter().enumerate() {
            let per_row = alone[0][k].len();
            assert_eq!(out.len(), n * per_row, "{role} output {k}");
            for i in 0..n {
                let (got, want) = (&out[i * per_row..(i + 1) * per_row], &alone[i % rows.len()][k]);
                for (g, w) in got.iter().zip(want) {
                    assert!(close(*g, f64::from(*w)), "{role} output {k} row {i}: {g} against {w}");
                }
            }
        }
    }
}

#[test]
fn shuttle_anomaly_matches_python_onnxruntime() {
    parity("shuttle", "anomaly");
}

#[test]
fn mnist_anomaly_matches_python_onnxruntime() {
    parity("mnist", "anomaly");
}

#[test]
fn mnist_label_matches_python_onnxruntime() {
    parity("mnist", "label");
}

#[test]
fn mnist_adversarial_matches_python_onnxruntime() {
    parity("mnist", "adversarial");
}

#[test]
fn corrupt_model_and_mismatches_are_clear_errors() {
    runtime();
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("models/shuttle");
    // Corrupt graph bytes with valid metadata.
    std::fs::copy(src.join("anomaly.json"), dir.path().join("bad.json")).unwrap();
    std::fs::write(dir.path().join("bad.onnx"), b"\x08\x07garbage, not a protobuf model").unwrap();
    let e = Model::load(&dir.path().join("bad.onnx"), &CPU).unwrap_err();
    assert!(matches!(e, ScoreError::Model { .. }), "{e}");
    assert!(e.to_string().contains("bad.onnx"), "{e}");
    // Missing metadata.
    std::fs::copy(src.join("anomaly.onnx"), dir.path().join("nometa.onnx")).unwrap();
    let e = Model::load(&dir.path().join("nometa.onnx"), &CPU).unwrap_err();
    assert!(e.to_string().contains("nometa.json"), "{e}");
    // Metadata whose width disagrees with the graph.
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("anomaly.json")).unwrap()).unwrap();
    meta["width"] = 10.into();
    std::fs::copy(src.join("anomaly.onnx"), dir.path().join("wide.onnx")).unwrap();
    std::fs::write(dir.path().join("wide.json"), meta.to_string()).unwrap();
    let e = Model::load(&dir.path().join("wide.onnx"), &CPU).unwrap_err();
    assert!(
        matches!(e, ScoreError::Mismatch { .. }) && e.to_string().contains("width 9"),
        "{e}"
    );
    // A Shuttle model against the MNIST schema.
    let model = Model::load(&src.join("anomaly.onnx"), &CPU).unwrap();
    let mnist = guard_section(&root().join("schemas/mnist.schema.json"));
    let e = model.extractor_for(&mnist).unwrap_err();
    assert!(
        e.to_string().contains("shuttle-v1") && e.to_string().contains("mnist-v1"),
        "{e}"
    );
    let shuttle = guard_section(&root().join("schemas/shuttle.schema.json"));
    let x = model.extractor_for(&shuttle).unwrap();
    assert_eq!((x.width(), x.name(2)), (9, "f3"));
}

#[test]
fn cuda_request_without_cuda_refuses_and_auto_falls_back() {
    runtime();
    let path = root().join("models/shuttle/anomaly.onnx");
    let cuda = SessionSettings {
        provider: ProviderChoice::Cuda,
        intra_threads: 1,
        tf32: false,
    };
    let auto = SessionSettings {
        provider: ProviderChoice::Auto,
        intra_threads: 1,
        tf32: false,
    };
    // This machine has no GPU (and the default build no CUDA provider): `cuda` must refuse.
    let e = Model::load(&path, &cuda).unwrap_err();
    assert!(matches!(e, ScoreError::CudaUnavailable(_)), "{e}");
    let m = Model::load(&path, &auto).unwrap();
    assert_eq!(m.provider(), ProviderInUse::Cpu, "auto falls back to CPU and says so");
}

#[test]
fn node_placement_is_reported() {
    runtime();
    let m = Model::load(&root().join("models/mnist/anomaly.onnx"), &CPU).unwrap();
    let p = m.node_placement().unwrap();
    eprintln!("placement: {p:?}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "CPUExecutionProvider");
    assert!(p[0].1 >= 5, "{p:?}");
}
