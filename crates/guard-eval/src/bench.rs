//! Throughput of the parts that cost: model inference per provider (with a parity check
//! against CPU on the same rows) and the drift statistics (`tools score-bench`,
//! `tools profile`), and a synthetic quarantine for the review's load tests.

use crate::EvalError;
use serde_json::Value;
use std::path::Path;

/// Drift statistics throughput on a JSONL file: statistics alone on parsed rows, and the
/// per-record path from raw bytes (limits, decode, schema, extraction, statistics).
pub fn profile(schema: &Path, input: &Path, passes: usize, quantiles: bool) -> Result<Value, EvalError> {
    use guard_stats::{BaselineBuilder, WindowProfile};
    let schema = guard_validate::DomainSchema::load(schema)?;
    let text = std::fs::read(input).map_err(EvalError::io(input))?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let limits = guard_core::Limits::default();
    let values: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| guard_validate::decode(l).ok())
        .filter(|v| schema.check(v).is_ok())
        .collect();
    if values.is_empty() {
        return Err(EvalError::Input(format!("no valid records in {}", input.display())));
    }
    let rows: Vec<Vec<f64>> = values.iter().map(|v| schema.numeric_features(v)).collect();
    let k = rows[0].len();
    let mut b = BaselineBuilder::new(schema.guard().numeric.iter().map(|f| f.name.clone()).collect());
    rows.iter().take(20_000).for_each(|r| b.push(r, None));
    let base = b.build(schema.id(), "bench", 20, 1000, 20)?;
    let bins: Vec<&guard_stats::Bins> = base.features.iter().map(|f| &f.bins).collect();

    // (a) statistics on parsed rows.
    let started = std::time::Instant::now();
    let mut w = WindowProfile::for_baseline(&base, quantiles);
    for _ in 0..passes {
        for r in &rows {
            for (i, x) in r.iter().enumerate() {
                w.push(bins[i], i, *x);
            }
            w.end_row();
        }
    }
    let stats_s = started.elapsed().as_secs_f64();
    std::hint::black_box(&w);

    // (b) the per-record path from raw bytes.
    let started = std::time::Instant::now();
    let mut w = WindowProfile::for_baseline(&base, quantiles);
    let mut buf = Vec::new();
    for _ in 0..passes {
        for l in &lines {
            let Ok(v) = guard_validate::prescan(l, &limits).and_then(|()| guard_validate::decode(l)) else {
                continue;
            };
            if schema.check(&v).is_err() {
                continue;
            }
            schema.numeric_features_into(&v, &mut buf);
            for (i, x) in buf.iter().enumerate() {
                w.push(bins[i], i, *x);
            }
            w.end_row();
        }
    }
    let full_s = started.elapsed().as_secs_f64();
    std::hint::black_box(&w);
    let fv = (rows.len() * k * passes) as f64;
    Ok(serde_json::json!({
            "rows": rows.len(),
            "features": k,
            "passes": passes,
            "quantiles": quantiles,
            "stats_only_feature_values_per_s": (fv / stats_s).round(),
            "full_path_feature_values_per_s": (fv / full_s).round(),
            "full_path_records_per_s": ((rows.len() * passes) as f64 / full_s).round(),
    }))
}

/// How far one provider's outputs are from another's on the same rows: the largest absolute
/// difference, and the rows whose decision differs (anomaly: score over `threshold`; label:
/// the most probable class).
fn compare_outputs(
    a: &guard_score::RoleScores,
    b: &guard_score::RoleScores,
    meta: &guard_score::ModelMeta,
) -> serde_json::Value {
    let threshold = meta.threshold;
    use guard_score::RoleScores::{Anomaly, Label};
    let max_diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    // The parity test's measure: |a - b| / (1 + |b|), which must stay within 1e-5.
    let max_scaled = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from((p - q).abs()) / (1.0 + f64::from(q.abs())))
            .fold(0.0f64, f64::max)
    };
    match (a, b) {
        (
            Anomaly {
                score: s1,
                feature_error: e1,
            },
            Anomaly {
                score: s2,
                feature_error: e2,
            },
        ) => {
            let flips = s1
                .iter()
                .zip(s2)
                .filter(|(p, q)| (f64::from(**p) > threshold) != (f64::from(**q) > threshold))
                .count();
            serde_json::json!({
                "rows": s1.len(),
                "score_max_abs_diff": max_diff(s1, s2),
                "score_max_scaled_diff": max_scaled(s1, s2),
                "feature_error_max_scaled_diff": max_scaled(e1, e2),
                "feature_error_max_abs_diff": max_diff(e1, e2),
                "decisions_differing": flips,
            })
        }
        (Label { probabilities: p1, .. }, Label { probabilities: p2, .. }) => {
            let classes = meta.classes.len();
            let rows = p1.len().checked_div(classes).unwrap_or(0);
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
                    .0
            };
            let flips = if classes == 0 {
                0
            } else {
                p1.chunks(classes)
                    .zip(p2.chunks(classes))
                    .filter(|(x, y)| argmax(x) != argmax(y))
                    .count()
            };
            serde_json::json!({
                "rows": rows,
                "probability_max_abs_diff": max_diff(p1, p2),
                "probability_max_scaled_diff": max_scaled(p1, p2),
                "decisions_differing": flips,
            })
        }
        _ => serde_json::Value::String("roles differ".into()),
    }
}

/// Options of `tools score-bench`.
pub struct ScoreBenchArgs<'a> {
    /// The ONNX model.
    pub model: &'a Path,
    /// JSONL records to score (up to 8,192 distinct rows, repeated).
    pub input: &'a Path,
    /// The domain schema the model's inputs come from.
    pub schema: &'a Path,
    /// Batch sizes to time.
    pub batches: &'a [usize],
    /// Rows to score per batch size.
    pub rows: usize,
    /// `cpu`, `cuda` or `auto`.
    pub provider: &'a str,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Allow TF32 on CUDA.
    pub tf32: bool,
    /// The ONNX Runtime library (else `ORT_DYLIB_PATH`).
    pub library: Option<&'a Path>,
}

/// Time `a.model` on `a.input`'s rows at each batch size; `emit` gets one JSON line for the
/// placement and CPU parity, then one per batch size.
pub fn score_bench(a: &ScoreBenchArgs<'_>, emit: &mut dyn FnMut(Value)) -> Result<(), EvalError> {
    use guard_score::{Model, ProviderChoice, SessionSettings};
    let lib = a
        .library
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into))
        .ok_or_else(|| EvalError::Input("give --library or set ORT_DYLIB_PATH".into()))?;
    guard_score::init_runtime(&lib)?;
    let provider = match a.provider {
        "cuda" => ProviderChoice::Cuda,
        "auto" => ProviderChoice::Auto,
        _ => ProviderChoice::Cpu,
    };
    let mut model = Model::load(
        a.model,
        &SessionSettings {
            provider,
            intra_threads: a.threads,
            tf32: a.tf32,
        },
    )?;
    let schema = guard_validate::DomainSchema::load(a.schema)?;
    let x = model.extractor_for(schema.guard())?;
    let text = std::fs::read_to_string(a.input).map_err(EvalError::io(a.input))?;
    let mut pool: Vec<f32> = Vec::new();
    let mut n_pool = 0;
    for line in text.lines().take(8192) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            x.extend_row(&v, &mut pool);
            n_pool += 1;
        }
    }
    if n_pool == 0 {
        return Err(EvalError::Input(format!("no rows in {}", a.input.display())));
    }
    let w = x.width();
    // Where the nodes really run, and (off CPU) how far the outputs are from CPU's on the
    // same rows: the proof that another provider ran and computes the same thing.
    let placement: serde_json::Map<String, serde_json::Value> = model
        .node_placement()?
        .into_iter()
        .map(|(p, n)| (p, n.into()))
        .collect();
    let cross_check = if model.provider() == guard_score::ProviderInUse::Cpu {
        serde_json::Value::Null
    } else {
        let mut cpu = Model::load(
            a.model,
            &SessionSettings {
                provider: ProviderChoice::Cpu,
                intra_threads: a.threads,
                tf32: a.tf32,
            },
        )?;
        compare_outputs(&model.run(&pool)?, &cpu.run(&pool)?, model.meta())
    };
    emit(serde_json::json!({
        "model": a.model.display().to_string(),
        "provider_in_use": model.provider().as_str(),
        "placement": placement,
        "versus_cpu": cross_check,
    }));
    for &batch in a.batches {
        let rows: Vec<f32> = (0..batch)
            .flat_map(|i| pool[(i % n_pool) * w..(i % n_pool + 1) * w].iter().copied())
            .collect();
        model.run(&rows)?; // warm-up
        let runs = a.rows.div_ceil(batch).max(1);
        let started = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(model.run(&rows)?);
        }
        let secs = started.elapsed().as_secs_f64();
        emit(serde_json::json!({
                "model": a.model.display().to_string(),
                "provider_requested": a.provider,
                "provider_in_use": model.provider().as_str(),
                "intra_threads": a.threads,
                "tf32": a.tf32,
                "batch": batch,
                "rows": runs * batch,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "rows_per_s": ((runs * batch) as f64 / secs).round(),
        }));
    }
    Ok(())
}

/// Write `rows` synthetic quarantine rows in `files` Parquet files under `out` (Shuttle-like
/// payloads, a mix of reason codes and scores), for the review dashboard's load tests.
pub fn review_fixture(out: &Path, rows: usize, files: usize) -> Result<Value, EvalError> {
    use guard_quarantine::{encode, file_name, LocalDirStore, QuarantineRow, QuarantineStore, ReasonEntry};
    use std::sync::Arc;
    let files = files.max(1);
    let per_file = rows.div_ceil(files);
    let store = LocalDirStore::new(out);
    let topics = ["training.shuttle", "training.mnist", "training.tabular"];
    let reasons = [
        ("score.anomaly", None),
        ("score.anomaly", None),
        ("score.label", None),
        ("schema.type", Some("/features/3")),
        ("schema.maximum", Some("/label")),
        ("schema.required", Some("")),
        ("limits.depth", None),
        ("decode.json", None),
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = std::time::Instant::now();
    let t0: i64 = 1_764_100_000_000;
    let mut written = 0usize;
    for f in 0..files {
        let topic = topics[f % topics.len()];
        let partition = i32::try_from((f / topics.len()) % 4).unwrap_or(0);
        let n = per_file.min(rows - written);
        if n == 0 {
            break;
        }
        // Offsets continue per (topic, partition) across files.
        let first = i64::try_from((f / (topics.len() * 4)) * per_file).unwrap_or(0);
        let batch: Vec<QuarantineRow> = (0..n)
            .map(|i| {
                let r = next();
                let (code, path) = reasons[(r % reasons.len() as u64) as usize];
                let offset = first + i as i64;
                let scored = code.starts_with("score.");
                let anomaly = scored.then(|| ((r >> 8) % 10_000) as f32 / 1_000.0);
                let label = (code == "score.label").then(|| 0.99 + ((r >> 24) % 1_000) as f32 / 100_000.0);
                let features: Vec<String> = (0..9)
                    .map(|k| format!("{}", ((r >> (k * 3)) % 200) as i64 - 50))
                    .collect();
                let payload = format!(
                    "{{\"source\":\"sensor-{}\",\"features\":[{}],\"label\":{}}}",
                    (r >> 40) % 50,
                    features.join(","),
                    (r >> 50) % 7
                );
                QuarantineRow {
                    topic: Arc::from(topic),
                    partition,
                    offset,
                    timestamp_ms: Some(t0 + offset * 10),
                    key: Some(format!("k{offset}").into_bytes()),
                    headers: vec![],
                    payload_len: payload.len() as i64,
                    payload: Some(payload.into_bytes()),
                    reasons: vec![ReasonEntry {
                        code: code.into(),
                        path: path.map(Into::into),
                        detail: "fixture".into(),
                    }],
                    schema_id: Some(Arc::from("shuttle-v1")),
                    guard_version: guard_core::GUARD_VERSION,
                    quarantined_at_ms: t0 + (f * per_file + i) as i64 * 5,
                    anomaly_score: anomaly,
                    label_score: label,
                    model_id: scored.then(|| "shuttle-v1/anomaly@fixture".into()),
                    explanation: None,
                    source: Some(format!("sensor-{}", (r >> 40) % 50)),
                    envelope_cut: false,
                }
            })
            .collect();
        let last = first + n as i64 - 1;
        store.put(&file_name(topic, partition, first, last), &encode(&batch, 3)?)?;
        written += n;
    }
    Ok(
        serde_json::json!({"rows": written, "files": files, "dir": out.display().to_string(),
        "seconds": started.elapsed().as_secs_f64()}),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::compare_outputs;
    use guard_score::{ModelMeta, RoleScores};

    fn meta(role: &str, classes: &[&str]) -> ModelMeta {
        serde_json::from_value(serde_json::json!({
            "format": 1, "role": role, "schema_id": "s", "inputs": ["a", "b"], "width": 2,
            "input_name": "x", "threshold": 1.0, "target_fpr": 0.01, "calibration_fpr": 0.01,
            "trusted_sha256": "", "trusted_rows": 0, "classes": classes,
        }))
        .unwrap()
    }

    #[test]
    fn provider_comparison_counts_decisions_that_cross_the_threshold() {
        let a = RoleScores::Anomaly {
            score: vec![0.5, 0.999_99, 2.0],
            feature_error: vec![0.0; 6],
        };
        let b = RoleScores::Anomaly {
            score: vec![0.5, 1.000_01, 2.0],
            feature_error: vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.5],
        };
        let v = compare_outputs(&a, &b, &meta("anomaly", &[]));
        assert_eq!(v["decisions_differing"], 1, "{v}");
        assert_eq!(v["rows"], 3);
        assert!(
            (v["feature_error_max_abs_diff"].as_f64().unwrap() - 0.5).abs() < 1e-9,
            "{v}"
        );
        assert!(
            (v["feature_error_max_scaled_diff"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-6,
            "{v}"
        );
        let same = compare_outputs(&a, &a, &meta("anomaly", &[]));
        assert_eq!(same["decisions_differing"], 0);
        assert_eq!(same["score_max_abs_diff"], 0.0);

        let p = RoleScores::Label {
            probabilities: vec![0.6, 0.4, 0.2, 0.8],
            classifier: Vec::new(),
            hidden: Vec::new(),
        };
        let q = RoleScores::Label {
            probabilities: vec![0.4, 0.6, 0.2, 0.8],
            classifier: Vec::new(),
            hidden: Vec::new(),
        };
        let v = compare_outputs(&p, &q, &meta("label", &["0", "1"]));
        assert_eq!(
            (v["rows"].as_u64(), v["decisions_differing"].as_u64()),
            (Some(2), Some(1)),
            "{v}"
        );
        assert_eq!(compare_outputs(&p, &a, &meta("label", &["0", "1"])), "roles differ");
    }
}
