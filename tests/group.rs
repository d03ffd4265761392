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

/// The cooperative protocol (KIP-429): when a second instance joins, the first gives up only
/// the partitions that move and keeps consuming the others through the rebalance.
#[test]
fn cooperative_rebalance_keeps_partitions_flowing() {
    let rig = Rig::new(4);
    let coop = "[kafka.consumer_properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n";
    let mut a = rig.guard("", coop);
    let mut b = rig.guard("", coop);
    a.start();
    a.wait_ready(Duration::from_secs(60));
    wait_for(Duration::from_secs(60), "a holds all partitions", || {
        partitions(&a) == Some(4)
    });
    let all = shuttle_mix(45_000, 30);
    rig.produce(&all[..30_000]);
    wait_for(Duration::from_secs(120), "a working", || {
        a.metric_sum("guard_source_records_total") >= 10_000.0
    });
    b.start();
    wait_for(Duration::from_secs(90), "partitions split 2/2", || {
        partitions(&a) == Some(2) && partitions(&b) == Some(2)
    });
    let m = a.metrics();
    let revoked = m
        .iter()
        .filter(|(k, _)| k.starts_with("guard_kafka_rebalances_total") && k.contains("revoke"))
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert!(revoked >= 1.0, "a gave partitions up incrementally");
    rig.produce(&all[30_000..]);
    rig.wait_committed(
        45_000,
        Duration::from_secs(180),
        "everything committed, kept partitions included",
    );
    assert!(a.term());
    assert!(b.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile(&b.quarantine, 45_000);
    eprintln!("cooperative test: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 45_000 / 30);
}

/// The same key statistics from the three views of one stream: a single instance's local view
/// and the group view of either instance of a two-instance group.
fn summary(v: &serde_json::Value, view: &str) -> Vec<(String, serde_json::Value, Vec<f64>)> {
    v["topics"][0][view]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let nums = ["mean", "std", "min", "max", "p50", "p90", "p99"]
                .iter()
                .map(|k| f[*k].as_f64().unwrap_or(f64::NAN))
                .chain(
                    ["ks", "psi", "js", "wasserstein", "var_ratio"]
                        .iter()
                        .map(|k| f["drift"][*k].as_f64().unwrap()),
                )
                .collect();
            (f["name"].as_str().unwrap().to_owned(), f["counts"].clone(), nums)
        })
        .collect()
}

fn assert_same(a: &serde_json::Value, b: &serde_json::Value, view: &str) {
    let (sa, sb) = (summary(a, view), summary(b, view));
    assert_eq!(sa.len(), sb.len());
    for ((na, ca, xa), (nb, cb, xb)) in sa.iter().zip(&sb) {
        assert_eq!((na, ca), (nb, cb), "{view}: same feature, same counts per bin");
        for (x, y) in xa.iter().zip(xb) {
            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * (1.0 + x.abs());
            assert!(same, "{view} {na}: {xa:?} vs {xb:?}");
        }
    }
    assert_eq!(a["topics"][0][view]["records"], b["topics"][0][view]["records"]);
}

#[test]
fn group_scope_equals_the_single_instance_view() {
    let normal = crate::drift::normal_shuttle();
    let (trusted, pool) = normal.split_at(20_000);
    let rig = Rig::new(2);
    let baseline = crate::drift::shuttle_baseline(rig.dir.path(), trusted);
    let profiles = unique("profiles");
    let extra = format!("[drift]\nprofiles_topic = \"{profiles}\"\nprofiles_interval_ms = 300\n");
    let route = format!("baseline = \"{}\"\n", baseline.display());
    let mut a = rig.guard_full(Some(&rig.output), &extra, "", &route);
    let mut b = rig.guard_full(Some(&rig.output), &extra, "", &route);
    let solo_group = unique("solo");
    let solo_out = unique("out");
    rig.broker.create_topic(&solo_out, 2);
    let mut solo = Guard::new(
        &rig.dir.path().join("solo"),
        &GuardSpec {
            brokers: &rig.broker.addr,
            group: &solo_group,
            routes: &[(&rig.input, "shuttle.schema.json")],
            output: Some(&solo_out),
            extra: &extra,
            kafka_extra: "",
            route_extra: &route,
        },
    );
    a.start();
    a.wait_ready(Duration::from_secs(60));
    b.start();
    solo.start();
    wait_for(Duration::from_secs(60), "partitions split 1/1", || {
        partitions(&a) == Some(1) && partitions(&b) == Some(1)
    });
    solo.wait_ready(Duration::from_secs(60));

    // Two full windows per partition.
    let rows: Vec<_> = (0..4000)
        .map(|i| (Some(format!("k{i}")), pool[i].as_bytes().to_vec()))
        .collect();
    rig.produce(&rows);
    rig.wait_committed(4000, Duration::from_secs(120), "group committed");
    wait_for(Duration::from_secs(120), "solo committed", || {
        committed_total(&rig.broker.addr, &solo_group, &rig.input, 2) == 4000
    });
    let get = |g: &Guard, scope: &str| -> serde_json::Value {
        serde_json::from_str(&g.get(&format!("/api/stats?scope={scope}")).unwrap().1).unwrap()
    };
    let complete = |v: &serde_json::Value| {
        v["topics"][0]["sliding"]["records"] == 4000 && v["topics"][0]["partitions"].as_array().map(Vec::len) == Some(2)
    };
    wait_for(Duration::from_secs(30), "group views complete", || {
        complete(&get(&a, "group")) && complete(&get(&b, "group")) && complete(&get(&solo, "local"))
    });
    let (ga, gb, single) = (get(&a, "group"), get(&b, "group"), get(&solo, "local"));
    // Each instance alone sees half.
    assert_eq!(get(&a, "local")["topics"][0]["sliding"]["records"], 2000);
    for view in ["current", "sliding"] {
        assert_same(&ga, &single, view);
        assert_same(&gb, &single, view);
    }
    // The solo instance's own group holds only its views.
    assert!(complete(&get(&solo, "group")));
    let owners: Vec<&str> = ga["topics"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["instance"].as_str().unwrap())
        .collect();
    assert_ne!(
        owners[0], owners[1],
        "each partition published by its owner: {owners:?}"
    );
    assert!(a.term() && b.term() && solo.term());
}
