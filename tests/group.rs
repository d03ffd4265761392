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
    let broker = Broker::start();
    let (input, output) = (unique("in"), unique("out"));
    broker.create_topic(&input, 4);
    broker.create_topic(&output, 4);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let spec = GuardSpec {
        brokers: &broker.addr,
        group: &group,
        routes: &[(&input, "shuttle.schema.json")],
        output: Some(&output),
        extra: "",
        kafka_extra: "",
    };
    let mut a = Guard::new(dir.path(), &spec);
    let mut b = Guard::new(dir.path(), &spec);
    a.start();
    a.wait_ready(Duration::from_secs(60));
    b.start();
    wait_for(Duration::from_secs(60), "partitions split 2/2", || {
        partitions(&a) == Some(2) && partitions(&b) == Some(2)
    });

    let p = producer(&broker.addr, 1 << 20);
    let all = shuttle_mix(90_000, 30);
    produce(&p, &input, &all[..60_000], 4);
    wait_for(Duration::from_secs(120), "both instances working", || {
        a.metric_sum("guard_source_records_total") > 0.0 && b.metric_sum("guard_source_records_total") > 0.0
    });
    assert!(a.term(), "instance a stops cleanly");
    wait_for(Duration::from_secs(60), "b takes all partitions", || {
        partitions(&b) == Some(4)
    });
    produce(&p, &input, &all[60_000..], 4);
    wait_for(Duration::from_secs(180), "everything committed", || {
        committed_total(&broker.addr, &group, &input, 4) == 90_000
    });
    assert!(b.term());
    let (out_len, q_len, out_dups, q_dups) = reconcile(&broker.addr, &input, &output, &b.quarantine, 90_000);
    eprintln!("group test: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 90_000 / 30);
}
