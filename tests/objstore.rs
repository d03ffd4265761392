//! Quarantine in S3-compatible object storage (`quarantine.url = "s3://bucket/prefix"`),
//! against a real S3 server (s3s-fs: SigV4, conditional puts) over loopback: the
//! 100,000-record reconcile, SIGKILL during a run, two instances sharing one bucket, an
//! outage of the storage, and the review dashboard reading the same bucket.

use crate::support::*;
use std::time::Duration;

fn s3_guard(rig: &Rig, s3: &S3Server, prefix: &str, extra: &str) -> Guard {
    let mut g = rig.guard(extra, "");
    // The [quarantine] table of the generated config gets the URL lines.
    let text = std::fs::read_to_string(&g.config).unwrap();
    let text = text.replacen(
        "[quarantine]\n",
        &format!("[quarantine]\n{}", s3.quarantine_toml(prefix)),
        1,
    );
    std::fs::write(&g.config, text).unwrap();
    g.env = s3.env();
    g
}

#[test]
fn hundred_thousand_records_reconcile_with_quarantine_in_object_storage() {
    let s3 = S3Server::start();
    let rig = Rig::new(4);
    let n = 100_000;
    rig.produce(&shuttle_mix(n, 20));
    let mut guard = s3_guard(&rig, &s3, "run1", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    rig.wait_committed(n, Duration::from_secs(240), "all committed");
    assert!(guard.term(), "clean exit");
    let store = s3.store("run1");
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile_store(&store, n);
    eprintln!("object storage: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_len, n / 20);
    assert_eq!((out_dups, q_dups), (0, 0));
    assert_eq!(out_len + q_len, n);
    assert!(
        stored_rows(&guard.quarantine).is_empty(),
        "no quarantine file in the local folder (it holds only the review audit log)"
    );
    // The CLI lists the same objects through the configured URL.
    let out = std::process::Command::new(guard_bin())
        .args(["quarantine", "ls", "--json", "--config"])
        .arg(&guard.config)
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: i64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rows"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(rows as usize, q_len);
}

#[test]
fn conditional_puts_never_replace_an_object() {
    use guard_quarantine::{QuarantineError, QuarantineStore};
    let s3 = S3Server::start();
    let a = s3.store("cond");
    let b = s3.store("cond");
    let name = guard_quarantine::file_name("t", 0, 0, 9);
    a.put(&name, b"first").unwrap();
    // Another instance (its own client) writing the same name gets Exists; nothing changes.
    assert!(matches!(b.put(&name, b"second"), Err(QuarantineError::Exists(_))));
    assert_eq!(a.get(&name).unwrap(), b"first");
    assert_eq!(b.list(&guard_quarantine::partition_prefix("t", 0)).unwrap(), vec![name]);
}

#[test]
fn sigkill_with_quarantine_in_object_storage_loses_and_repeats_nothing() {
    let s3 = S3Server::start();
    let rig = Rig::new(4);
    let n = 120_000;
    rig.produce(&shuttle_mix(n, 50));
    let mut guard = s3_guard(&rig, &s3, "crash", "");
    for threshold in [15_000.0, 60_000.0] {
        guard.start();
        wait_for(Duration::from_secs(120), "progress before the kill", || {
            guard.metric_sum("guard_source_records_total") >= threshold
        });
        guard.kill9();
    }
    guard.start();
    rig.wait_committed(n, Duration::from_secs(240), "everything committed after restarts");
    assert!(guard.term(), "clean exit");
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile_store(&s3.store("crash"), n);
    eprintln!("object storage crash: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0, "no quarantine row written twice");
    assert_eq!(q_len, n / 50);
    assert_eq!(out_len - out_dups + q_len, n);
}

#[test]
fn two_instances_on_one_bucket_write_no_duplicate_rows() {
    let s3 = S3Server::start();
    let rig = Rig::new(4);
    let n = 80_000;
    let mut a = s3_guard(&rig, &s3, "shared", "");
    let mut b = s3_guard(&rig, &s3, "shared", "");
    a.start();
    b.start();
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    rig.produce(&shuttle_mix(n / 2, 20));
    wait_for(Duration::from_secs(120), "both instances work", || {
        a.metric_sum("guard_source_records_total") > 0.0 && b.metric_sum("guard_source_records_total") > 0.0
    });
    // One dies mid-stream: the other takes its partitions over and replays from the last
    // commit, reading which records the shared bucket already holds.
    b.kill9();
    rig.produce(&shuttle_mix(n / 2, 20));
    rig.wait_committed(n, Duration::from_secs(240), "everything committed by the survivor");
    assert!(a.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile_store(&s3.store("shared"), n);
    eprintln!("two instances: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_dups, 0, "no quarantine row twice in the shared bucket");
    assert_eq!(q_len, n / 20);
    assert_eq!(out_len - out_dups + q_len, n);
}

#[test]
fn storage_outage_stops_commits_and_recovers_by_itself() {
    let mut s3 = S3Server::start();
    let rig = Rig::new(2);
    let mut guard = s3_guard(&rig, &s3, "outage", "[pipeline]\nchannel_capacity = 1\n");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    rig.produce(&shuttle_mix(10_000, 20));
    rig.wait_committed(10_000, Duration::from_secs(120), "first part committed");

    s3.stop();
    rig.produce(&shuttle_mix(40_000, 20));
    let stalled = wait_commits_stall(
        &rig,
        &guard,
        Duration::from_secs(60),
        "not ready while the bucket is unreachable",
    );
    assert!(
        stalled < 50_000,
        "offsets past undurable quarantined records stay uncommitted"
    );
    assert!(guard.metric_sum("guard_quarantine_write_failures_total") > 0.0);

    s3.restart();
    rig.wait_committed(
        50_000,
        Duration::from_secs(180),
        "everything committed after the outage",
    );
    guard.wait_ready(Duration::from_secs(30));
    assert!(guard.term());
    let (out_len, q_len, out_dups, q_dups) = rig.reconcile_store(&s3.store("outage"), 50_000);
    eprintln!("outage: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups}), stalled at {stalled}");
    assert_eq!(q_dups, 0);
    assert_eq!(q_len, 50_000 / 20);
}

#[test]
fn review_dashboard_reads_and_releases_from_object_storage() {
    let s3 = S3Server::start();
    let rig = Rig::new(1);
    let mut guard = s3_guard(
        &rig,
        &s3,
        "review",
        &format!("[review]\nrefresh_interval_ms = 200\n{REVIEWER_TOML}"),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    rig.produce(&shuttle_mix(400, 20));
    rig.wait_committed(400, Duration::from_secs(60), "committed");
    let q = quarantined_in(&s3.store("review"));
    assert_eq!(q.len(), 20);
    let a = api(guard.port);
    wait_for(Duration::from_secs(20), "the index reads the bucket", || {
        a.get("/api/review/records").json()["total"].as_u64() == Some(20)
    });
    // Record detail, export and release all read the object.
    let (t, p, o) = q.keys().next().cloned().unwrap();
    let base = format!("/api/review/records/{t}/{p}/{o}");
    let d = a.get(&base);
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.json()["record"]["offset"], o);
    let csv = a.get("/api/review/export?format=csv");
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.body.lines().count(), 21, "header + 20 rows");
    let released = a.post(&format!("{base}/release"), r#"{"note":"object storage"}"#);
    assert_eq!(released.status, 200, "{}", released.body);
    let clean = read_topic(&rig.broker.addr, &rig.output, 381, Duration::from_secs(3));
    assert_eq!(
        clean
            .iter()
            .filter(|r| r.headers.iter().any(|(k, _)| k == "x-guard-release-id"))
            .count(),
        1
    );
    assert!(guard.term());

    // `serve --config` alone reads the same bucket.
    let port = free_port();
    let mut serve = std::process::Command::new(guard_bin())
        .args(["serve", "--read-only", "--config"])
        .arg(&guard.config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(s3.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let auth = basic();
    let mut total = None;
    wait_for(Duration::from_secs(30), "serve reads the bucket", || {
        total = http_request(port, "GET", "/api/review/records", &[("Authorization", &auth)], "")
            .filter(|r| r.status == 200)
            .and_then(|r| r.json()["total"].as_u64());
        total == Some(20)
    });
    let _ = serve.kill();
    let _ = serve.wait();
}
