//! SIGKILL at three different moments of a 200,000-record run: no offset is lost, no
//! quarantine row is written twice; output duplicates are allowed and counted.

use crate::support::*;
use std::time::Duration;

#[test]
fn sigkill_three_times_loses_nothing() {
    let rig = Rig::new(4);
    let n = 200_000;
    rig.produce(&shuttle_mix(n, 100));
    let mut guard = rig.guard("", "");
    let mut committed_at_kill = Vec::new();
    // Before the first commit, after several, and right after a restart's re-read.
    for threshold in [15_000.0, 60_000.0, 100_000.0] {
        guard.start();
        wait_for(Duration::from_secs(120), "progress before the kill", || {
            guard.metric_sum("guard_source_records_total") >= threshold
        });
        guard.kill9();
        committed_at_kill.push(rig.committed());
    }
    guard.start();
    rig.wait_committed(n, Duration::from_secs(240), "everything committed after restarts");
    assert!(guard.term(), "clean exit");
    assert!(
        committed_at_kill.windows(2).all(|w| w[0] <= w[1]),
        "commits never go back: {committed_at_kill:?}"
    );
    assert!(
        committed_at_kill[0] < n as i64,
        "first kill happened mid-run: {committed_at_kill:?}"
    );

    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&guard.quarantine, n);
    eprintln!(
        "crash test: output {out_len} (duplicates {out_dups}), quarantine {q_len} (duplicates {q_dups}), committed at kills {committed_at_kill:?}"
    );
    assert_eq!(q_dups, 0, "no quarantine row written twice");
    assert_eq!(q_len, n / 100);
    assert_eq!(out_len - out_dups + q_len, n);
}

/// Replay keeps exact records, not ranges. The first run's clean producer lingers (10 s), so
/// its quarantine files are durable while the clean deliveries of the records that passed,
/// inside those files' offset ranges, are still pending; the guard is killed then. The second
/// run judges more strictly, so those records are now quarantined: each must be written,
/// although an earlier file's range covers it. Every offset ends up in clean ∪ quarantine,
/// none twice.
#[test]
fn replay_writes_changed_verdicts_inside_old_file_ranges() {
    let rig = Rig::new(1);
    let n = 2_000;
    let mut first = rig.guard("", "[kafka.producer_properties]\n\"linger.ms\" = \"10000\"\n");
    first.start();
    first.wait_ready(Duration::from_secs(60));
    rig.produce(&shuttle_mix(n, 20));
    wait_for(Duration::from_secs(8), "the first run's quarantine files", || {
        quarantined(&first.quarantine).len() == n / 20
    });
    assert_eq!(
        rig.committed(),
        0,
        "nothing committed while clean deliveries are pending"
    );
    let files = stored_files(&first.quarantine);
    assert!(
        files.iter().any(|(f, rows)| f.last_offset - f.first_offset + 1 > *rows),
        "a file's range spans records that passed"
    );
    first.kill9();
    // Stricter now: every valid record's strings are over the limit.
    let mut second = rig.guard("[limits]\nmax_string_len = 4\n", "");
    second.start();
    rig.wait_committed(n, Duration::from_secs(120), "everything committed by the second run");
    assert!(second.term());
    let q = quarantined(&second.quarantine);
    assert!(q.values().all(|(count, _)| *count == 1), "no quarantine row twice");
    let out = read_topic(&rig.broker.addr, &rig.output, 0, Duration::from_secs(2));
    let sources: std::collections::HashSet<String> = out.iter().filter_map(|r| r.source.clone()).collect();
    let mut missing = Vec::new();
    for (p, o, _) in input_offsets(&rig.broker.addr, &rig.input, n) {
        if !q.contains_key(&(rig.input.clone(), p, o)) && !sources.contains(&format!("{}/{p}/{o}", rig.input)) {
            missing.push(o);
        }
    }
    assert!(
        missing.is_empty(),
        "{} offsets in neither output: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        q.len(),
        n,
        "the second run quarantined every record the first had passed"
    );
    let by_code = |c: &str| q.values().filter(|(_, codes)| codes[0] == c).count();
    assert_eq!(by_code("limit.string_len"), n - n / 20);
}

/// MNIST records with a blended-trigger campaign: after every clean record, with probability
/// 1/10 for records not labelled 0, a copy blended at 0.05 with a fixed pattern and labelled 0
/// (its `id` is `p…`). The per-record models catch some of them (the label model doubts the
/// label), the window scan more. (At 0.1 the anomaly role's background statistic catches
/// every one, and the scan has nothing left.)
fn mnist_campaign(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    let text = std::fs::read_to_string(repo().join(".data/mnist.jsonl")).expect("run scripts/setup.sh first");
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let pattern: Vec<f64> = (0..784).map(|_| next() * 255.0).collect();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let row = &rows[i % rows.len()];
        i += 1;
        out.push((None, row.to_string().into_bytes()));
        if out.len() < n && row["label"] != 0 && next() < 0.1 {
            let mut p = row.clone();
            let px: Vec<serde_json::Value> = row["pixels"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&pattern)
                .map(|(v, q)| serde_json::json!((0.95 * v.as_f64().unwrap() + 0.05 * q).round() as i64))
                .collect();
            p["pixels"] = serde_json::Value::Array(px);
            p["label"] = serde_json::json!(0);
            p["id"] = serde_json::json!(format!("p{i}"));
            out.push((None, p.to_string().into_bytes()));
        }
    }
    out
}

/// The window scan holds passing records back until it has judged them (their offsets wait
/// too): SIGKILL twice while records are held, then run to the end. Every offset ends up in
/// the output or the quarantine, no quarantine row twice, and the scan did quarantine part of
/// the campaign (`scan.spectral`). A replayed record is judged in a new window, so its verdict
/// may change: it may then be on both sides (counted, bounded).
#[test]
fn sigkill_while_the_window_scan_holds_records_loses_nothing() {
    let rig = Rig::new(2);
    let n = 20_000;
    rig.produce(&mnist_campaign(n));
    let (models, lib) = (
        repo().join("models/mnist"),
        repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"),
    );
    let route = ["anomaly", "label", "adversarial"]
        .iter()
        .map(|r| format!("{r}_model = \"{}\"\n", models.join(format!("{r}.onnx")).display()))
        .collect::<String>();
    let mut guard = Guard::new(
        rig.dir.path(),
        &GuardSpec {
            brokers: &rig.broker.addr,
            group: &rig.group,
            routes: &[(&rig.input, "mnist.schema.json")],
            output: Some(&rig.output),
            extra: &format!(
                "[scoring]\nexecution_provider = \"cpu\"\nlibrary = \"{}\"\n[scan]\nenabled = true\nhold_records = 400\nhold_ms = 1500\n",
                lib.display()
            ),
            kafka_extra: "",
            route_extra: &route,
        },
    );
    let mut committed_at_kill = Vec::new();
    // First before anything is committed, then once part of the input is.
    for (read, committed) in [(1_500.0, 0), (0.0, 2_000)] {
        guard.start();
        wait_for(Duration::from_secs(180), "progress before the kill", || {
            guard.metric_sum("guard_source_records_total") >= read && rig.committed() >= committed
        });
        // Records are held right now: what the source read is ahead of what was released.
        guard.kill9();
        committed_at_kill.push(rig.committed());
    }
    guard.start();
    rig.wait_committed(n, Duration::from_secs(300), "everything committed after restarts");
    let held_metric = guard.metric_sum("guard_scan_hold_duration_seconds_count");
    assert!(guard.term(), "clean exit");
    assert!(
        committed_at_kill[1] >= 2_000 && committed_at_kill[1] < n as i64,
        "the second kill came mid-run: {committed_at_kill:?}"
    );
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&guard.quarantine, n);
    let q = quarantined(&guard.quarantine);
    let by_scan = q.values().filter(|(_, c)| c[0] == "scan.spectral").count();
    eprintln!(
        "scan crash test: output {out_len} (duplicates {out_dups}), quarantine {q_len} (scan {by_scan}), on both sides {}, committed at kills {committed_at_kill:?}, releases in the last run {held_metric}",
        out_len - out_dups + q_len - n
    );
    assert_eq!(q_dups, 0, "no quarantine row written twice");
    // A record released clean before a kill and read again after it is judged in another
    // window, so the scan may quarantine it the second time: at-least-once on the output
    // means it may sit on both sides (never on neither: `reconcile` checked every offset).
    let both = out_len - out_dups + q_len - n;
    assert!(both <= n / 100, "{both} offsets on both sides");
    assert!(by_scan > 0, "the scan quarantined part of the campaign");
    assert!(held_metric > 0.0, "records were held and released");
    // Every scan row explains itself: the class and the cluster, and for a doubted record its
    // label score over the doubt bar, the model's 95th percentile of clean scores (ten
    // classes at the committed 1 % budget). The campaign mislabels (its blends are labelled 0),
    // so a cluster member is flagged only over that bar too.
    let store = guard_quarantine::LocalDirStore::new(&guard.quarantine);
    let (mut doubted, mut mislabelling) = (0, 0);
    for r in guard_quarantine::read_all(&store).unwrap() {
        if r.reason_codes.first().map(String::as_str) != Some("scan.spectral") {
            continue;
        }
        let e: serde_json::Value = serde_json::from_str(r.explanation.as_deref().unwrap()).unwrap();
        let flag = &e["scan"]["flag"];
        assert!(flag["cluster"].as_u64().unwrap() >= 5, "{e}");
        if flag["mislabelling"] == serde_json::json!(true) {
            mislabelling += 1;
            assert!(
                flag["label_score"].as_f64().unwrap() > flag["doubt_threshold"].as_f64().unwrap(),
                "{e}"
            );
        }
        if flag["why"] == "doubt" {
            doubted += 1;
            let (s, bar) = (
                flag["label_score"].as_f64().unwrap(),
                flag["doubt_threshold"].as_f64().unwrap(),
            );
            assert!(s > bar, "{e}");
            assert_eq!(flag["doubt_quantile"], serde_json::json!(0.95), "{e}");
            assert!(
                r.reasons[0].detail.contains("over the doubt bar"),
                "{}",
                r.reasons[0].detail
            );
        }
    }
    eprintln!("scan rows: {by_scan}, doubted {doubted}, in a mislabelling cluster {mislabelling}");
    assert!(mislabelling > 0, "the scan saw the campaign mislabel");
}
