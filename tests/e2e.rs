//! 100,000 mixed records: every input offset ends up exactly once in output ∪ quarantine with
//! the right reason, key/headers/timestamp are kept, and the counts reconcile with /metrics.
//! Plus `monitor` mode.

use crate::support::*;
use std::time::Duration;

#[test]
fn hundred_thousand_mixed_records_exactly_once() {
    let rig = Rig::new(4);
    let mut guard = rig.guard("", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));

    let n = 100_000;
    rig.produce(&shuttle_mix(n, 50));
    rig.wait_committed(n, Duration::from_secs(180), "guard to consume and commit everything");
    // The broker's acknowledgement can overtake the worker's counter by a moment.
    wait_for(Duration::from_secs(10), "metrics to count every record", || {
        let m = guard.metrics();
        sum_metric(&m, "guard_pipeline_records_passed_total")
            + sum_metric(&m, "guard_pipeline_records_quarantined_total")
            >= n as f64
    });
    assert_eq!(guard.metric_sum("guard_source_records_total"), n as f64, "records in");
    let m = guard.metrics();
    let passed = sum_metric(&m, "guard_pipeline_records_passed_total");
    let quarantined = sum_metric(&m, "guard_pipeline_records_quarantined_total");
    assert_eq!(passed + quarantined, n as f64, "metrics reconcile");

    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&guard.quarantine, n);
    assert_eq!(out_dups, 0, "no duplicates without a crash");
    assert_eq!(q_dups, 0);
    assert_eq!(out_len + q_len, n, "exactly once across output and quarantine");
    assert_eq!(q_len as f64, quarantined, "quarantine files match the metric");
    assert_eq!(q_len, n / 50, "every hostile record and nothing else is quarantined");

    // Key, headers and timestamp survive.
    let out = read_topic(&rig.broker.addr, &rig.output, out_len, Duration::from_secs(1));
    let r = out.iter().find(|r| r.key.is_some()).unwrap();
    assert!(r.key.as_deref().unwrap().starts_with('v'));
    assert!(r.timestamp.is_some_and(|t| t > 0));
    assert!(r.headers.iter().any(|(k, _)| k == "x-guard-source"));
    assert!(guard.term(), "clean exit on SIGTERM");
}

/// `monitor` mode forwards nothing, quarantines copies of suspects only, and still commits.
#[test]
fn monitor_mode_forwards_nothing_and_quarantines_suspects() {
    let rig = Rig::new(2);
    let mut guard = rig.guard_with_output(None, "[pipeline]\nmode = \"monitor\"\n", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let (_, body) = guard.get("/readyz").unwrap();
    assert!(body.contains("\"mode\":\"monitor\""), "{body}");
    let n = 5_000;
    rig.produce(&shuttle_mix(n, 25));
    rig.wait_committed(n, Duration::from_secs(120), "everything committed");
    let q = quarantined(&guard.quarantine);
    assert_eq!(q.len(), n / 25, "only suspects are quarantined");
    assert!(q.values().all(|(count, _)| *count == 1));
    assert_eq!(
        guard.metric_sum("guard_pipeline_records_passed_total"),
        (n - n / 25) as f64
    );
    assert_eq!(
        guard.metric_sum("guard_sink_delivered_records_total"),
        0.0,
        "nothing forwarded"
    );
    assert!(guard.term());
}
