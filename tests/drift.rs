//! Drift monitoring through the real broker, end to end: a baseline from trusted Shuttle rows;
//! normal windows raise nothing; 10 % schema-valid uniform noise aimed at **one partition**
//! raises the alarm on that partition (metric, event on the drift topic, Alertmanager payload
//! at a local webhook receiver that refuses the first attempts); normal data clears it, with a
//! `drift_cleared` event and a `resolved` payload. `/api/stats` and `ingest-guard stats` show
//! the windows.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
}

/// Label-0 Shuttle rows, shuffled; the first 20,000 are the trusted set.
pub fn normal_shuttle() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(".data/shuttle.jsonl")).expect("run scripts/setup.sh first");
    let mut normal: Vec<String> = text
        .lines()
        .filter(|l| l.ends_with("\"label\":0}"))
        .map(str::to_owned)
        .collect();
    let mut rng = Lcg(2026);
    for i in (1..normal.len()).rev() {
        normal.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    normal
}

/// Build a 1000-row-window baseline from `trusted` in `dir`.
pub fn shuttle_baseline(dir: &std::path::Path, trusted: &[String]) -> std::path::PathBuf {
    let trusted_file = dir.join("trusted.jsonl");
    std::fs::write(&trusted_file, trusted.join("\n")).unwrap();
    let baseline = dir.join("shuttle.baseline.json");
    let out = run_baseline(&trusted_file, &baseline, 1000, 1000);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    baseline
}

fn alarms(g: &Guard) -> f64 {
    g.metric_sum("guard_stats_alarm")
}

fn stats(g: &Guard, scope: &str) -> serde_json::Value {
    let (code, body) = g.get(&format!("/api/stats?scope={scope}")).expect("/api/stats answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn drift_alarm_on_one_partition_reaches_topic_webhook_and_clears() {
    let normal = normal_shuttle();
    let (trusted, pool) = normal.split_at(20_000);
    let rig = Rig::new(2);
    let baseline = shuttle_baseline(rig.dir.path(), trusted);
    let hook = Receiver::start(2);
    let events_topic = unique("drift");
    let mut guard = rig.guard_full(
        Some(&rig.output),
        &format!(
            "[drift]\nevents_topic = \"{events_topic}\"\nwebhook_url = \"http://127.0.0.1:{}/alerts\"\nwebhook_backoff_ms = 100\ninstance = \"solo\"\n",
            hook.port
        ),
        "",
        &format!("baseline = \"{}\"\n", baseline.display()),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let row = |i: usize| (Some(format!("v{i}")), pool[i % pool.len()].as_bytes().to_vec());
    let mut rng = Lcg(7);
    let mut noise = || {
        let f: Vec<String> = (0..9)
            .map(|_| format!("{:.1}", (rng.next() % 200_000) as f64 - 100_000.0))
            .collect();
        format!("{{\"source\":\"noise\",\"features\":[{}],\"label\":0}}", f.join(",")).into_bytes()
    };

    // Records alternate over the two partitions. Three normal windows per partition: quiet.
    rig.produce(&(0..6000).map(row).collect::<Vec<_>>());
    rig.wait_committed(6000, Duration::from_secs(120), "normal windows");
    wait_for(Duration::from_secs(10), "six windows judged", || {
        guard.metric_sum("guard_stats_windows_total") >= 6.0
    });
    assert_eq!(alarms(&guard), 0.0, "no alarm on normal data");
    let s = stats(&guard, "local");
    let t = &s["topics"][0];
    assert_eq!(t["current"]["records"], 2000, "last window of each partition: {t}");
    assert_eq!(t["sliding"]["records"], 6000);
    let names: Vec<&str> = t["current"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "nine sensors and the label: {names:?}");
    assert_eq!(names[9], "label");
    assert!(t["current"]["features"][0]["p50"].is_number());
    let table = Command::new(guard_bin())
        .args(["stats", "--url", &format!("http://127.0.0.1:{}", guard.port)])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("f9") && table.contains("label") && table.contains("2000 rows"),
        "{table}"
    );

    // 10 % uniform noise on partition 0 only (every 20th record is every 10th of the even
    // ones): two full attacked windows there, none on partition 1.
    let attack: Vec<_> = (6000..10_000)
        .map(|i| {
            if i % 20 == 0 {
                (Some(format!("n{i}")), noise())
            } else {
                row(i)
            }
        })
        .collect();
    rig.produce(&attack);
    rig.wait_committed(10_000, Duration::from_secs(120), "attack windows");
    wait_for(Duration::from_secs(10), "alarm raised", || alarms(&guard) >= 1.0);
    let s = stats(&guard, "local");
    let parts = s["topics"][0]["partitions"].as_array().unwrap();
    let raised: Vec<i64> = parts
        .iter()
        .filter(|p| !p["alarms"].as_array().unwrap().is_empty())
        .map(|p| p["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(raised, vec![0], "only the poisoned partition alarms: {parts:?}");

    // Normal data again: three quiet windows per partition clear it.
    rig.produce(&(10_000..18_000).map(row).collect::<Vec<_>>());
    rig.wait_committed(18_000, Duration::from_secs(120), "recovery windows");
    wait_for(Duration::from_secs(10), "alarm cleared", || alarms(&guard) == 0.0);

    // The events topic has the raise and the clear, on partition 0 only.
    let events = topic_json(&rig.broker.addr, &events_topic, 2, Duration::from_secs(2));
    let raised: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "drift_raised").collect();
    let cleared: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "drift_cleared").collect();
    assert!(!raised.is_empty() && raised.len() == cleared.len(), "{events:?}");
    assert!(
        events.iter().all(|e| e["partition"] == 0 && e["instance"] == "solo"),
        "{events:?}"
    );
    assert!(
        raised[0]["last_offset"].as_i64() > Some(3000),
        "decided on attacked offsets: {}",
        raised[0]
    );
    assert!(raised.iter().any(|e| !e["tests"].as_array().unwrap().is_empty()));

    // The webhook got the same, as Alertmanager payloads, after refusing twice.
    wait_for(Duration::from_secs(20), "webhook receives raise and clear", || {
        hook.bodies().len() >= events.len()
    });
    let bodies = hook.bodies();
    assert!(hook.attempts.load(std::sync::atomic::Ordering::SeqCst) >= bodies.len() + 2);
    assert!(bodies.iter().all(|b| b["version"] == "4"));
    let firing = bodies.iter().filter(|b| b["status"] == "firing").count();
    let resolved = bodies.iter().filter(|b| b["status"] == "resolved").count();
    assert_eq!((firing, resolved), (raised.len(), cleared.len()), "{bodies:?}");
    assert_eq!(bodies[0]["alerts"][0]["labels"]["alertname"], "IngestGuardDrift");

    // Sources: a producer sending schema-invalid records and one sending garbage show up with
    // their reject rates next to the normal producers and the noise source.
    let mut bad: Vec<_> = (0..120)
        .map(|i| {
            let p = format!(
                "{{\"source\":\"bad-producer\",\"features\":[1,2,3,4,5,6,7,8,9],\"label\":{}}}",
                5 + i % 3
            );
            (Some(format!("b{i}")), p.into_bytes())
        })
        .collect();
    bad.extend((0..10).map(|i| (Some(format!("g{i}")), b"\xff\xfe not json".to_vec())));
    rig.produce(&bad);
    rig.wait_committed(18_130, Duration::from_secs(120), "bad producers");
    let s = stats(&guard, "local");
    let top = s["sources"]["top_by_quarantine_rate"].as_array().unwrap();
    assert_eq!(top[0]["source"], "bad-producer", "{top:?}");
    assert_eq!(
        (top[0]["records"].as_u64(), top[0]["reject_rate"].as_f64()),
        (Some(120), Some(1.0))
    );
    let by_volume = s["sources"]["top_by_volume"].as_array().unwrap();
    let find = |name: &str| by_volume.iter().find(|r| r["source"] == name).cloned();
    assert_eq!(
        find("noise").map(|r| (r["records"].clone(), r["rejected"].clone())),
        Some((200.into(), 0.into()))
    );
    assert_eq!(find("(undecoded)").map(|r| r["rejected"].clone()), Some(10.into()));
    assert!(guard.term());
}

/// The breaker: a burst of invalid records trips it; while open every record, valid or not,
/// is quarantined with `breaker.open` (nothing is lost); an operator clears it over HTTP and
/// valid records flow again.
#[test]
fn breaker_quarantines_everything_until_cleared() {
    let rig = Rig::new(1);
    let mut guard = rig.guard(
        &format!("[drift.breaker]\nenabled = true\nmax_quarantine_rate = 0.3\nwindow_records = 200\n{REVIEWER_TOML}"),
        "",
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let breaker = |g: &Guard| -> serde_json::Value { serde_json::from_str(&g.get("/api/breaker").unwrap().1).unwrap() };
    assert_eq!(breaker(&guard)["open"], false);

    // 400 records, half schema-invalid: the first 200-record budget window trips it.
    rig.produce(&shuttle_mix(400, 2));
    rig.wait_committed(400, Duration::from_secs(60), "burst");
    let b = breaker(&guard);
    assert_eq!(b["open"], true, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("quarantine rate"), "{b}");
    assert_eq!(guard.metric_sum("guard_stats_breaker_open"), 1.0);

    // Valid records are quarantined while it is open.
    let valid: Vec<_> = shuttle_mix(1000, 0)[..100].to_vec();
    rig.produce(&valid);
    rig.wait_committed(500, Duration::from_secs(60), "while open");
    // Clearing is an operator action: a page on another site cannot do it for the operator.
    let (code, _) = http_post(guard.port, "/api/breaker/clear").unwrap();
    assert_eq!(code, 401, "no reviewer");
    let a = api(guard.port);
    let no_token = http_request(
        guard.port,
        "POST",
        "/api/breaker/clear",
        &[("Authorization", &a.auth)],
        "",
    )
    .unwrap();
    assert_eq!(no_token.status, 403, "no CSRF token");
    let cross = http_request(
        guard.port,
        "POST",
        "/api/breaker/clear",
        &[
            ("Authorization", &a.auth),
            ("x-csrf-token", &a.csrf),
            ("Origin", "http://evil.example"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(cross.status, 403, "cross-origin");
    assert_eq!(breaker(&guard)["open"], true, "refused requests changed nothing");
    let r = a.post("/api/breaker/clear", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(breaker(&guard)["open"], false);
    rig.produce(&valid);
    rig.wait_committed(600, Duration::from_secs(60), "after clear");
    assert!(guard.term());

    let q = quarantined(&guard.quarantine);
    let by_breaker: Vec<i64> = q
        .iter()
        .filter(|(_, (_, codes))| codes.iter().any(|c| c == "breaker.open"))
        .map(|((_, _, o), _)| *o)
        .collect();
    // Everything valid from the tripping batch on (offsets ≥ 200 in the burst's second half
    // once the breaker opened, and all of 400..500) went to quarantine; nothing after 500.
    assert!(
        by_breaker.iter().filter(|o| (400..500).contains(*o)).count() == 100,
        "{by_breaker:?}"
    );
    assert!(by_breaker.iter().all(|o| *o < 500));
    exactly_once(&rig, &guard.quarantine, 600);
}
