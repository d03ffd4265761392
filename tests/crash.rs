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
