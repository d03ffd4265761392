//! Drift monitoring through the real broker: a baseline from trusted Shuttle rows; normal
//! windows raise nothing, windows with 10 % schema-valid uniform noise raise the alarm metric,
//! normal data clears it.

use crate::support::*;
use std::time::Duration;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
}

fn alarms(g: &Guard) -> f64 {
    g.metric_sum("guard_stats_alarm")
}

#[test]
fn drift_alarm_rises_on_noise_and_clears() {
    let text = std::fs::read_to_string(repo().join(".data/shuttle.jsonl")).expect("run scripts/setup.sh first");
    let mut normal: Vec<&str> = text.lines().filter(|l| l.ends_with("\"label\":0}")).collect();
    let mut rng = Lcg(2026);
    for i in (1..normal.len()).rev() {
        normal.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let (trusted, pool) = normal.split_at(20_000);
    let rig = Rig::new(2);
    let trusted_file = rig.dir.path().join("trusted.jsonl");
    std::fs::write(&trusted_file, trusted.join("\n")).unwrap();
    let baseline = rig.dir.path().join("shuttle.baseline.json");
    let out = run_baseline(&trusted_file, &baseline, 1000, 1000);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut guard = rig.guard_full(
        Some(&rig.output),
        "",
        "",
        &format!("baseline = \"{}\"\n", baseline.display()),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let row = |i: usize| (Some(format!("v{i}")), pool[i % pool.len()].as_bytes().to_vec());
    let noise = |rng: &mut Lcg| {
        let f: Vec<String> = (0..9)
            .map(|_| format!("{:.1}", (rng.next() % 200_000) as f64 - 100_000.0))
            .collect();
        format!("{{\"source\":\"noise\",\"features\":[{}],\"label\":0}}", f.join(",")).into_bytes()
    };

    // Five normal windows: no alarm.
    rig.produce(&(0..5000).map(row).collect::<Vec<_>>());
    rig.wait_committed(5000, Duration::from_secs(120), "normal windows");
    wait_for(Duration::from_secs(10), "five windows evaluated", || {
        guard.metric_sum("guard_stats_windows_total") >= 5.0
    });
    assert_eq!(alarms(&guard), 0.0, "no alarm on normal data");

    // Three windows with 10 % uniform noise: alarm.
    // Records go round-robin to the two partitions and a window fills from one partition's
    // batches at a time: put noise on both (i % 20 in {0, 11}).
    let attack: Vec<_> = (5000..8000)
        .map(|i| {
            if i % 20 == 0 || i % 20 == 11 {
                (Some(format!("n{i}")), noise(&mut rng))
            } else {
                row(i)
            }
        })
        .collect();
    rig.produce(&attack);
    rig.wait_committed(8000, Duration::from_secs(120), "attack windows");
    std::thread::sleep(Duration::from_secs(1));
    if alarms(&guard) < 1.0 {
        eprintln!("{}", guard.log_tail());
    }
    wait_for(Duration::from_secs(10), "alarm raised", || alarms(&guard) >= 1.0);
    assert!(guard.metric_sum("guard_stats_alarms_raised_total") >= 1.0);

    // Normal data again: cleared.
    rig.produce(&(8000..13_000).map(row).collect::<Vec<_>>());
    rig.wait_committed(13_000, Duration::from_secs(120), "recovery windows");
    wait_for(Duration::from_secs(10), "alarm cleared", || alarms(&guard) == 0.0);
    assert!(guard.term());
}
