//! Statistics update throughput in feature-values per second on one core (issue 3 target:
//! at least 20 million), on the real Shuttle features from the committed samples, cycled.
//!
//! `cargo bench --bench stats`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guard_stats::{BaselineBuilder, Moments, WindowProfile};
use std::hint::black_box;

fn features() -> Vec<[f64; 9]> {
    // The full Shuttle set when scripts/setup.sh has run, else the committed samples.
    let root = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    );
    let text = std::fs::read_to_string(root.join(".data/shuttle.jsonl"))
        .or_else(|_| std::fs::read_to_string(root.join("schemas/samples/shuttle.valid.jsonl")))
        .expect("samples");
    let rows: Vec<[f64; 9]> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = v["features"].as_array()?;
            let mut row = [0.0; 9];
            for (i, x) in f.iter().take(9).enumerate() {
                row[i] = x.as_f64()?;
            }
            Some(row)
        })
        .collect();
    rows.iter().cycle().take(100_000).copied().collect()
}

fn bench(c: &mut Criterion) {
    let rows = features();
    let values = (rows.len() * 9) as u64;
    let mut g = c.benchmark_group("stats_update");
    g.throughput(Throughput::Elements(values));
    g.bench_function("moments_per_feature_row_major", |b| {
        b.iter(|| {
            let mut m = [Moments::new(); 9];
            for row in &rows {
                for (mi, x) in m.iter_mut().zip(row) {
                    mi.push(*x);
                }
            }
            black_box(m)
        })
    });
    // What the guard does per passing record: moments plus counts on the baseline's bins, per
    // feature, with and without a DDSketch for quantiles.
    let mut builder = BaselineBuilder::new((1..=9).map(|i| format!("f{i}")).collect());
    for row in rows.iter().take(20_000) {
        builder.push(row, None);
    }
    let base = builder.build("shuttle-v1", "bench", 20, 1000, 20).unwrap();
    for (name, quantiles) in [("window_bins_moments", false), ("window_bins_moments_ddsketch", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut w = WindowProfile::for_baseline(&base, quantiles);
                for row in &rows {
                    for (i, x) in row.iter().enumerate() {
                        w.push(&base.features[i].bins, i, *x);
                    }
                    w.end_row();
                }
                black_box(w.records)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
