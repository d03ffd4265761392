//! Offline throughput of the guard's per-record work (limits pre-scan, duplicate-key-aware
//! decode, JSON Schema 2020-12 + x-guard checks) against a bare
//! `serde_json::from_slice::<serde_json::Value>` on the same Shuttle records, in one run.
//!
//! `cargo bench --bench validate` (see BENCHMARKS.md for figures).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use guard_core::{Limits, Record};
use guard_validate::{DomainSchema, Judge};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

fn records() -> Vec<Vec<u8>> {
    let root = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("schemas/samples/shuttle.valid.jsonl");
    std::fs::read(root)
        .expect("schemas/samples/shuttle.valid.jsonl")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = records();
    let schema = DomainSchema::load(
        &std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        )
        .join("schemas/shuttle.schema.json"),
    )
    .unwrap();
    let judge = Judge::new(
        Limits::default(),
        HashMap::from([("shuttle".to_owned(), Arc::new(schema))]),
    );
    let batch: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record::whole(i as i64, None, None, vec![], Some(l.clone())))
        .collect();
    let bytes: usize = lines.iter().map(Vec::len).sum();

    let mut g = c.benchmark_group("shuttle_records");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("serde_json_value_parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(l)).ok());
            }
        })
    });
    g.bench_function("guard_limits_decode_schema", |b| {
        b.iter(|| {
            for r in &batch {
                black_box(judge.judge("shuttle", black_box(r)));
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

    let mut g = c.benchmark_group("shuttle_bytes");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("guard_limits_decode_schema", |b| {
        b.iter_batched(
            || (),
            |()| {
                for r in &batch {
                    black_box(judge.judge("shuttle", r));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
