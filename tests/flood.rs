//! Near-duplicate floods on the real data sets, through the detector alone (the broker test
//! is in `e2e`-style `flood_through_the_broker` below it): each data set's first half is the
//! trusted profile, its second half the stream in its sources, with one extra source sending
//! 1,000 near-copies of one held-out row (every value moved by up to `noise` of its standard
//! deviation) spread through the stream. Shuttle and diamonds (rows crowd together in a few
//! dimensions), flights and the two image sets (784 values, nothing close) are judged by the
//! same code and settings.

use crate::support::*;
use guard_core::FeatureRows;
use guard_eval::infer::InferOptions;
use guard_eval::read::Input;
use guard_stats::{FloodDetector, FloodProfileBuilder, FloodReference, FloodSettings};
use guard_validate::DomainSchema;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Each row's values as the guard extracts them (numeric features, then tensors: what the
/// baseline's flood profile and the judge read), with its source. Shuttle, diamonds and MNIST
/// use their committed schemas; flights and Animal-MNIST a schema inferred as `init` does.
fn rows(name: &str, limit: usize) -> (Vec<Vec<f32>>, Vec<String>) {
    let path = repo().join(format!(".data/{name}.jsonl"));
    let text = std::fs::read_to_string(&path).expect("run scripts/setup.sh first");
    let schema = match name {
        "shuttle" | "diamonds" | "mnist" => {
            DomainSchema::load(&repo().join(format!("schemas/{name}.schema.json"))).unwrap()
        }
        _ => {
            let label = if name == "flights" { "carrier" } else { "label" };
            let o = InferOptions {
                label: Some(label.into()),
                source: Some("source".into()),
                ..InferOptions::default()
            };
            let inferred = guard_eval::infer::infer(&Input::Jsonl(&path), &o).unwrap();
            DomainSchema::from_value(&inferred.schema).unwrap()
        }
    };
    let layout = schema.layout();
    let mut extracted = FeatureRows::new(layout, true);
    for (i, line) in text.lines().take(limit).enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        extracted.push(layout, i, &v, None);
    }
    (0..extracted.len())
        .map(|r| {
            let row = extracted.row(r);
            (row.values().collect(), row.source().to_owned())
        })
        .unzip()
}

fn flood_on(name: &str, limit: usize, noise: f32, mixed: bool) -> (f64, f64) {
    let (xs, sources) = rows(name, limit);
    let w = xs[0].len();
    // Trusted: every other row; the stream: the others, in the file's order (diamonds and
    // flights are sorted, so a source's recent records crowd together as a real stream's do).
    let mut b = FloodProfileBuilder::default();
    xs.iter().step_by(2).for_each(|x| b.push(x));
    let reference = Arc::new(FloodReference::new(b.build().expect("a profile")).expect("a reference"));
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
    let started = std::time::Instant::now();
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
    let per_record = started.elapsed().as_nanos() as f64 / (stream.len() + copies + flooder_honest) as f64;
    eprintln!("  {per_record:.0} ns per judged record ({w} values)");
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

/// Through the real binary and broker: 100,000 honest Shuttle records from eight sensors (the
/// data set in file order, cycled) and 1,000 near-copies of one row from a ninth source,
/// spread evenly. The flooder is caught and blocked; every honest record reaches the clean
/// topic; the block survives a restart and reaches a second instance of the group (read back
/// from the compacted blocks topic); a reviewer's release is audited once, answers `already`
/// the second time, is lifted on both instances, and the source's records flow again.
#[test]
fn a_flooding_source_is_blocked_while_the_others_flow_and_a_release_lets_it_back() {
    let rig = Rig::new(2);
    let text = std::fs::read_to_string(repo().join(".data/shuttle.jsonl")).expect("run scripts/setup.sh first");
    let lines: Vec<&str> = text.lines().collect();
    // Trusted: every other row.
    let trusted: Vec<String> = lines.iter().step_by(2).map(|l| (*l).to_owned()).collect();
    let baseline = crate::drift::shuttle_baseline(rig.dir.path(), &trusted);
    let blocks_topic = unique("blocks");
    let extra = format!(
        "[flood]\nblocks_topic = \"{blocks_topic}\"\n[review]\nrefresh_interval_ms = 200\n[[review.reviewers]]\nname = \"alice\"\npassword_sha256 = \"{DEMO_SHA}\"\n"
    );
    let route = format!("baseline = \"{}\"\n", baseline.display());
    let mut guard = rig.guard_full(Some(&rig.output), &extra, "", &route);
    guard.start();
    guard.wait_ready(Duration::from_secs(60));

    let base: Value = serde_json::from_str(lines[lines.len() / 3]).unwrap();
    let base_features: Vec<f64> = base["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut state = 5u64;
    let mut unit = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (honest_n, copies_n) = (100_000usize, 1_000usize);
    let every = honest_n / copies_n;
    let mut records: Vec<(Option<String>, Vec<u8>)> = Vec::with_capacity(honest_n + copies_n);
    for i in 0..honest_n {
        records.push((Some(format!("v{i}")), lines[i % lines.len()].as_bytes().to_vec()));
        if i % every == every / 2 {
            // Shuttle's deviations are in the tens: a copy moves each reading by under 1 %.
            let f: Vec<f64> = base_features.iter().map(|v| v + (unit() - 0.5) * 0.4).collect();
            let copy = serde_json::json!({"source": "flooder-9", "features": f, "label": 0});
            records.push((Some(format!("c{i}")), serde_json::to_vec(&copy).unwrap()));
        }
    }
    let n = records.len();
    rig.produce(&records);
    rig.wait_committed(n, Duration::from_secs(300), "the flood stream");

    let q = quarantined(&guard.quarantine);
    let by_key: std::collections::HashMap<String, Vec<String>> =
        read_topic(&rig.broker.addr, &rig.input, n, Duration::from_secs(5))
            .into_iter()
            .filter_map(|r| {
                let reasons = q.get(&(rig.input.clone(), r.partition, r.offset))?.1.clone();
                Some((r.key.clone()?, reasons))
            })
            .collect();
    let flood_codes = |k: &str| {
        by_key
            .get(k)
            .is_some_and(|r| r.iter().any(|c| c == "flood.near_duplicate" || c == "source.blocked"))
    };
    let caught = (0..honest_n).filter(|i| flood_codes(&format!("c{i}"))).count();
    let honest_hit = (0..honest_n).filter(|i| flood_codes(&format!("v{i}"))).count();
    let recall = caught as f64 / copies_n as f64;
    eprintln!("flood through the broker: {caught} of {copies_n} near-copies caught ({recall:.3}); honest records with a flood or block reason: {honest_hit}; quarantined in all: {}", q.len());
    assert!(recall >= 0.95, "recall {recall}");
    assert_eq!(honest_hit, 0, "other sources keep flowing");
    let out = read_topic(&rig.broker.addr, &rig.output, honest_n, Duration::from_secs(5));
    let honest_out = out
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with('v')))
        .count();
    let honest_q = by_key.keys().filter(|k| k.starts_with('v')).count();
    assert_eq!(
        honest_out,
        honest_n - honest_q,
        "every honest record not quarantined for its own reasons reaches the clean topic"
    );
    assert_eq!(honest_q, 0, "the honest Shuttle rows are valid");
    assert!(guard.metric_sum("guard_flood_blocked_sources") >= 1.0);

    // The block is on the overview, and survives a restart through the blocks topic.
    let a = api(guard.port);
    let listed = a.get("/api/review/sources/blocked").json();
    let block = listed["blocked"][0].clone();
    assert_eq!(block["source"], "flooder-9", "{listed}");
    assert_eq!(
        a.get("/api/review/overview").json()["blocked_sources"][0]["id"],
        block["id"]
    );
    assert!(guard.term());
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let a = api(guard.port);
    wait_for(Duration::from_secs(30), "the block read back", || {
        a.get("/api/review/sources/blocked").json()["blocked"][0]["id"] == block["id"]
    });

    // A second instance of the group reads the block from the blocks topic too.
    let mut other = rig.guard_full(Some(&rig.output), &extra, "", &route);
    other.start();
    other.wait_ready(Duration::from_secs(60));
    let b = api(other.port);
    wait_for(Duration::from_secs(30), "the block on the second instance", || {
        b.get("/api/review/sources/blocked").json()["blocked"][0]["id"] == block["id"]
    });

    // Release: audited once, exactly once, and lifted on both instances.
    let body = serde_json::json!({"topic": rig.input, "source": "flooder-9", "id": block["id"], "note": "checked"})
        .to_string();
    let first = a.post("/api/review/sources/release", &body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["already"], false);
    let again = a.post("/api/review/sources/release", &body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["already"], true);
    let audit = std::fs::read_to_string(guard.quarantine.join("_review/audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"source_released\"").count(), 1, "{audit}");
    assert!(a.get("/api/review/sources/blocked").json()["blocked"]
        .as_array()
        .unwrap()
        .is_empty());
    wait_for(Duration::from_secs(30), "the release on the second instance", || {
        b.get("/api/review/sources/blocked").json()["blocked"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });

    // Released: the source's honest records pass again.
    let after: Vec<(Option<String>, Vec<u8>)> = lines[..20]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["source"] = "flooder-9".into();
            (Some(format!("after{i}")), serde_json::to_vec(&v).unwrap())
        })
        .collect();
    rig.produce(&after);
    rig.wait_committed(n + after.len(), Duration::from_secs(60), "after the release");
    let out = read_topic(
        &rig.broker.addr,
        &rig.output,
        honest_out + after.len(),
        Duration::from_secs(5),
    );
    let passed = out
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with("after")))
        .count();
    assert_eq!(passed, after.len(), "the released source flows again");
}
