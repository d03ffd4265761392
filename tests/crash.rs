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
