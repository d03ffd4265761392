//! Offline throughput of the guard's per-record work against a bare
//! `serde_json::from_slice::<serde_json::Value>` of the same bytes, in one run, on real Shuttle
//! records (~80 bytes, 9 numbers) and real MNIST records (~3 KB, 784 integers), flat and nested
//! as `[28][28]` (`mnist-nested`):
//!
//! * `guard_limits_decode_schema_features`: what the pipeline runs per record: envelope and
//!   limits pre-scan, then the typed fast path (decode + schema + x-guard features into the
//!   batch's typed rows, no tree), the full path for records it is unsure of;
//! * `guard_full_path_features`: pre-scan, duplicate-key-aware tree decode, JSON Schema 2020-12
//!   validator, x-guard rules, features extracted from the tree;
//! * `guard_limits_decode_schema`: the full path without extraction (`Judge::judge`);
//! * `guard_prescan_only`.
//!
//! `cargo bench --bench validate` (see BENCHMARKS.md for figures).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guard_core::{FeatureRows, Limits, Record};
use guard_validate::{DomainSchema, Judge};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
}

fn records(domain: &str) -> Vec<Vec<u8>> {
    let path = root().join(format!("schemas/samples/{domain}.valid.jsonl"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn schema_of(domain: &str) -> DomainSchema {
    DomainSchema::load(&root().join(format!("schemas/{domain}.schema.json"))).unwrap()
}

/// The MNIST records and schema with the pixels nested as `[28][28]` (`ndarray.tolist()`).
fn nested_mnist() -> (Vec<Vec<u8>>, DomainSchema) {
    let lines = records("mnist")
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let px = v["pixels"].as_array().unwrap().clone();
            v["pixels"] =
                serde_json::Value::Array(px.chunks(28).map(|c| serde_json::Value::Array(c.to_vec())).collect());
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("schemas/mnist.schema.json")).unwrap()).unwrap();
    let leaf = v["properties"]["pixels"]["items"].clone();
    v["properties"]["pixels"] = serde_json::json!({"type": "array", "minItems": 28, "maxItems": 28,
        "items": {"type": "array", "minItems": 28, "maxItems": 28, "items": leaf}});
    (lines, DomainSchema::from_value(&v).unwrap())
}

fn bench_domain(c: &mut Criterion, domain: &str, lines: Vec<Vec<u8>>, schema: DomainSchema) {
    let layout = schema.layout().clone();
    let judge = Judge::new(
        Limits::default(),
        HashMap::from([(domain.to_owned(), Arc::new(schema))]),
    );
    let batch: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record::whole(i as i64, None, None, vec![], Some(l.clone())))
        .collect();
    let mut rows = FeatureRows::new(&layout, true);

    let mut g = c.benchmark_group(format!("{domain}_records"));
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("serde_json_value_parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(l)).ok());
            }
        })
    });
    g.bench_function("guard_limits_decode_schema_features", |b| {
        b.iter(|| {
            rows.clear();
            for (i, r) in batch.iter().enumerate() {
                black_box(judge.judge_row(domain, black_box(r), i, &mut rows, None, |_, _| {}));
            }
            assert_eq!(rows.len(), batch.len());
        })
    });
    g.bench_function("guard_full_path_features", |b| {
        b.iter(|| {
            rows.clear();
            for (i, r) in batch.iter().enumerate() {
                black_box(judge.judge_visit(domain, black_box(r), |s, v, passed| {
                    if passed {
                        rows.push(s.layout(), i, v, None);
                    }
                }));
            }
            assert_eq!(rows.len(), batch.len());
        })
    });
    g.bench_function("guard_limits_decode_schema", |b| {
        b.iter(|| {
            for r in &batch {
                black_box(judge.judge(domain, black_box(r)));
            }
        })
    });
    g.bench_function("guard_prescan_only", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(guard_validate::prescan(black_box(l), judge.limits()).ok());
            }
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    for d in ["shuttle", "mnist"] {
        bench_domain(c, d, records(d), schema_of(d));
    }
    let (lines, schema) = nested_mnist();
    bench_domain(c, "mnist-nested", lines, schema);
}

criterion_group!(benches, bench);
criterion_main!(benches);
