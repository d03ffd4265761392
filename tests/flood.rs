//! Near-duplicate floods on the real data sets, through the detector alone (the broker test
//! is in `e2e`-style `flood_through_the_broker` below it): each data set's first half is the
//! trusted profile, its second half the stream in its sources, with one extra source sending
//! 1,000 near-copies of one held-out row (every value moved by up to `noise` of its standard
//! deviation) spread through the stream. Shuttle and diamonds (rows crowd together in a few
//! dimensions), flights and the two image sets (784 values, nothing close) are judged by the
//! same code and settings.

use crate::support::*;
use guard_stats::{FloodDetector, FloodProfileBuilder, FloodReference, FloodSettings};
use serde_json::Value;
use std::sync::Arc;

fn rows(name: &str, limit: usize) -> (Vec<Vec<f32>>, Vec<String>) {
    let text = std::fs::read_to_string(repo().join(format!(".data/{name}.jsonl"))).expect("run scripts/setup.sh first");
    let numeric: &[&str] = match name {
        "diamonds" => &["carat", "depth", "table", "price", "x", "y", "z"],
        "flights" => &[
            "month",
            "day",
            "dep_time",
            "sched_dep_time",
            "dep_delay",
            "arr_time",
            "sched_arr_time",
            "arr_delay",
            "air_time",
            "distance",
            "hour",
            "minute",
        ],
        _ => &[],
    };
    let (mut xs, mut sources) = (Vec::new(), Vec::new());
    for line in text.lines().take(limit) {
        let v: Value = serde_json::from_str(line).unwrap();
        let num = |x: &Value| x.as_f64().map_or(f32::NAN, |f| f as f32);
        let x: Vec<f32> = match name {
            "shuttle" => v["features"].as_array().unwrap().iter().map(num).collect(),
            "mnist" | "animals" => v["pixels"].as_array().unwrap().iter().map(num).collect(),
            _ => numeric.iter().map(|k| num(&v[*k])).collect(),
        };
        xs.push(x);
        sources.push(v["source"].as_str().unwrap_or("(none)").to_owned());
    }
    (xs, sources)
}

fn flood_on(name: &str, limit: usize, noise: f32, mixed: bool) -> (f64, f64) {
    let (xs, sources) = rows(name, limit);
    let w = xs[0].len();
    // Trusted: every other row; the stream: the others, in the file's order (diamonds and
    // flights are sorted, so a source's recent records crowd together as a real stream's do).
    let mut b = FloodProfileBuilder::default();
    xs.iter().step_by(2).for_each(|x| b.push(x));
    let reference = Arc::new(FloodReference::new(b.build().expect("a profile")));
    let stream: Vec<Vec<f32>> = xs.iter().skip(1).step_by(2).cloned().collect();
    let stream_sources: Vec<String> = sources.iter().skip(1).step_by(2).cloned().collect();
    // Per-value spread, for the copies' noise.
    let sd: Vec<f32> = (0..w)
        .map(|j| {
            let v: Vec<f64> = stream
                .iter()
                .map(|x| f64::from(x[j]))
                .filter(|v| v.is_finite())
                .collect();
            let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32
        })
        .collect();
    let base = stream[stream.len() / 3].clone();
    let mut state = 11u64;
    let mut unit = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) as f32
    };
    let every = (stream.len() / 1_000).max(2);
    let mut d = FloodDetector::new(reference, FloodSettings::default());
    let (mut caught, mut copies, mut honest_flags) = (0usize, 0usize, 0usize);
    let mut shares = Vec::new();
    let (mut flooder_honest, mut flooder_honest_flags) = (0usize, 0usize);
    for (i, (x, s)) in stream.iter().zip(&stream_sources).enumerate() {
        if let Some(f) = d.observe(s, x.iter().copied()) {
            honest_flags += 1;
            shares.push(f.copies as f64 / f.window as f64);
        }
        if i % every == every / 2 && copies < 1_000 {
            let c: Vec<f32> = base
                .iter()
                .zip(&sd)
                .map(|(v, s)| v + (unit() - 0.5) * 2.0 * noise * s)
                .collect();
            copies += 1;
            caught += usize::from(d.observe("flooder", c).is_some());
            if mixed {
                // The flooder also sends an honest row after each copy (half its records).
                let honest = &stream[(i * 7 + 3) % stream.len()];
                flooder_honest += 1;
                flooder_honest_flags += usize::from(d.observe("flooder", honest.iter().copied()).is_some());
            }
        }
    }
    shares.sort_by(f64::total_cmp);
    if !shares.is_empty() {
        eprintln!(
            "  honest flag shares: min {:.3} median {:.3} max {:.3}",
            shares[0],
            shares[shares.len() / 2],
            shares[shares.len() - 1]
        );
    }
    let recall = caught as f64 / copies as f64;
    let false_rate = honest_flags as f64 / stream.len() as f64;
    eprintln!(
        "{name} (noise {noise}, mixed {mixed}): {copies} near-copies among {} rows, caught {caught} ({recall:.3}); honest rows flagged {honest_flags} ({false_rate:.5}); the flooder's honest rows flagged {flooder_honest_flags} of {flooder_honest}",
        stream.len()
    );
    (recall, false_rate)
}

#[test]
fn a_near_copy_flood_from_one_source_is_caught_on_every_data_set() {
    for (name, limit) in [
        ("shuttle", 58_000),
        ("diamonds", 53_940),
        ("flights", 60_000),
        ("mnist", 10_000),
        ("animals", 10_000),
    ] {
        for (noise, mixed) in [(0.01, false), (0.05, false), (0.05, true)] {
            let (recall, false_rate) = flood_on(name, limit, noise, mixed);
            assert!(recall >= 0.95, "{name}: recall {recall}");
            assert!(false_rate <= 0.001, "{name}: honest rows flagged at {false_rate}");
        }
    }
}
