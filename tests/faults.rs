//! External failures: the quarantine folder becomes unwritable, and the broker freezes.

use crate::support::*;
use std::time::Duration;

#[test]
fn unwritable_quarantine_stops_commits_then_recovers() {
    let rig = Rig::new(2);
    // Small bounds so that the stall below exceeds them and the consumer must pause.
    let mut guard = rig.guard("[pipeline]\nchannel_capacity = 1\n", "queued_max_kbytes = 1024\n");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    rig.produce(&shuttle_mix(20_000, 20));
    rig.wait_committed(20_000, Duration::from_secs(120), "first part committed");

    // Swap the folder for a plain file: writes fail even as root.
    let q = guard.quarantine.clone();
    let aside = rig.dir.path().join("quarantine.aside");
    std::fs::rename(&q, &aside).unwrap();
    std::fs::write(&q, b"not a folder").unwrap();

    rig.produce(&shuttle_mix(120_000, 20));
    let still = wait_commits_stall(
        &rig,
        &guard,
        Duration::from_secs(30),
        "not-ready while the quarantine is failing",
    );
    assert!(
        still < 140_000,
        "offsets past undurable quarantined records are not committed ({still})"
    );
    let rss_kib = guard.peak_rss_kib();
    assert!(
        rss_kib < 256 * 1024,
        "memory stays bounded while stalled: {rss_kib} KiB"
    );
    let m = guard.metrics();
    assert!(sum_metric(&m, "guard_quarantine_write_failures_total") > 0.0);
    let consumed = sum_metric(&m, "guard_source_records_total");
    assert!(
        consumed < 140_000.0,
        "consumer paused instead of buffering everything ({consumed})"
    );
    assert_eq!(
        sum_metric(&m, "guard_source_paused"),
        1.0,
        "partitions paused during the stall"
    );

    // Make it writable again: the guard finishes by itself.
    std::fs::remove_file(&q).unwrap();
    std::fs::rename(&aside, &q).unwrap();
    rig.wait_committed(140_000, Duration::from_secs(180), "everything committed after recovery");
    guard.wait_ready(Duration::from_secs(30));
    assert!(guard.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&guard.quarantine, 140_000);
    eprintln!(
        "unwritable test: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups}), peak rss {rss_kib} KiB"
    );
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 140_000 / 20);
}

#[test]
fn frozen_broker_turns_not_ready_and_recovers() {
    let rig = Rig::new(2);
    let n = 150_000;
    rig.produce(&shuttle_mix(n, 40));
    let mut guard = rig.guard("", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    wait_for(Duration::from_secs(60), "mid-run", || {
        guard.metric_sum("guard_source_records_total") >= 20_000.0
    });

    rig.broker.signal("STOP");
    let frozen_at = std::time::Instant::now();
    wait_for(Duration::from_secs(15), "not-ready while the broker is frozen", || {
        guard.get("/readyz").is_some_and(|(code, _)| code == 503)
    });
    std::thread::sleep(Duration::from_secs(20).saturating_sub(frozen_at.elapsed()));
    rig.broker.signal("CONT");

    guard.wait_ready(Duration::from_secs(90));
    rig.wait_committed(n, Duration::from_secs(240), "everything committed after the freeze");
    assert!(guard.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&guard.quarantine, n);
    eprintln!("freeze test: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, n / 40);
}

/// Shutdown is bounded in every state: with the quarantine folder unwritable (the stage
/// retrying a write forever), SIGTERM still ends the process within `drain_timeout_ms` +
/// `shutdown_grace_ms`.
/// Nothing is lost: what was not durable was not committed, and a restart finishes it.
#[test]
fn shutdown_is_bounded_while_the_quarantine_fails() {
    let rig = Rig::new(1);
    let mut guard = rig.guard("[pipeline]\ndrain_timeout_ms = 2000\nshutdown_grace_ms = 5000\n", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let q = guard.quarantine.clone();
    std::fs::create_dir_all(q.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&q);
    std::fs::write(&q, b"not a folder").unwrap();
    rig.produce(&shuttle_mix(5_000, 20));
    wait_for(Duration::from_secs(30), "the quarantine failing", || {
        guard.metric_sum("guard_quarantine_write_failures_total") > 0.0
    });
    let started = std::time::Instant::now();
    let pid = guard.pid();
    send_signal(pid, "TERM");
    let mut child = guard.child.take().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    eprintln!(
        "bounded shutdown: exited ({status}) {:.1} s after SIGTERM",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(2 + 5 + 5), "{took:?}");
    // Nothing lost: a restart with a writable folder finishes the job.
    std::fs::remove_file(&q).unwrap();
    guard.start();
    rig.wait_committed(
        5_000,
        Duration::from_secs(120),
        "everything committed after the restart",
    );
    assert!(guard.term());
    let (_, q_len, _, q_dups) = rig.reconcile(&guard.quarantine, 5_000);
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 5_000 / 20);
}
