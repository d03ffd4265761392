//! Two instances in one consumer group split a 4-partition topic; stopping one moves its
//! partitions to the other with no offset missing.

use crate::support::*;
use std::time::Duration;

fn partitions(g: &Guard) -> Option<u64> {
    let (_, body) = g.get("/readyz")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["partitions"].as_u64()
}

#[test]
fn two_instances_split_partitions_and_take_over() {
    let rig = Rig::new(4);
    let mut a = rig.guard("", "");
    let mut b = rig.guard("", "");
    a.start();
    a.wait_ready(Duration::from_secs(60));
    b.start();
    wait_for(Duration::from_secs(60), "partitions split 2/2", || {
        partitions(&a) == Some(2) && partitions(&b) == Some(2)
    });

    let all = shuttle_mix(90_000, 30);
    rig.produce(&all[..60_000]);
    wait_for(Duration::from_secs(120), "both instances working", || {
        a.metric_sum("guard_source_records_total") > 0.0 && b.metric_sum("guard_source_records_total") > 0.0
    });
    assert!(a.term(), "instance a stops cleanly");
    wait_for(Duration::from_secs(60), "b takes all partitions", || {
        partitions(&b) == Some(4)
    });
    rig.produce(&all[60_000..]);
    rig.wait_committed(90_000, Duration::from_secs(180), "everything committed");
    assert!(b.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&b.quarantine, 90_000);
    eprintln!("group test: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 90_000 / 30);
}
