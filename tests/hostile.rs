//! Hostile records end in quarantine with the right reason; memory and time stay bounded.

use crate::support::*;
use std::time::Duration;

#[test]
fn hostile_records_are_quarantined_with_bounded_memory_and_time() {
    let rig = Rig::new(1);
    let mut guard = rig.guard("[limits]\nmax_bytes = 16777216\nmax_record_bytes = 33554432\n", "");
    guard.start();
    guard.wait_ready(Duration::from_secs(60));

    let valid = std::fs::read_to_string(repo().join("schemas/samples/shuttle.valid.jsonl")).unwrap();
    let valid = valid.lines().next().unwrap().as_bytes().to_vec();
    let mut big = b"{\"source\":\"x\",\"id\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024 * 1024));
    big.extend(b"\"}");
    let mut deep = vec![b'['; 100_000];
    deep.extend(vec![b']'; 100_000]);
    let mut wide = b"{\"features\":[".to_vec();
    for i in 0..5_000_000 {
        if i > 0 {
            wide.push(b',');
        }
        wide.push(b'0');
    }
    wide.extend(b"]}");
    let mut long = b"{\"source\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    long.extend(b"\"}");
    let text = String::from_utf8(valid.clone()).unwrap();
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("limit.bytes", Some("k"), big),
        ("limit.depth", Some("k"), deep),
        ("limit.array_len", Some("k"), wide),
        ("limit.string_len", Some("k"), long),
        ("decode.utf8", Some("k"), [b"\xc3\x28".as_slice(), &valid].concat()),
        (
            "value.non_finite",
            Some("k"),
            text.replacen("\"features\":[", "\"features\":[NaN,", 1).into_bytes(),
        ),
        (
            "value.non_finite",
            Some("k"),
            text.replacen("\"features\":[", "\"features\":[1e999,", 1).into_bytes(),
        ),
        (
            "decode.duplicate_key",
            Some("k"),
            text.replacen("\"label\":", "\"label\":0,\"label\":", 1).into_bytes(),
        ),
        ("decode.empty", Some("k"), Vec::new()),
        ("pass", None, valid.clone()),
    ];
    let records: Vec<(Option<String>, Vec<u8>)> = cases
        .iter()
        .map(|(_, k, p)| (k.map(str::to_owned), p.clone()))
        .collect();
    produce(&producer(&rig.broker.addr, 30 * 1024 * 1024), &rig.input, &records, 1);
    drop(records);
    rig.wait_committed(cases.len(), Duration::from_secs(120), "all hostile records committed");

    let rss_kib = guard.peak_rss_kib();
    let m = guard.metrics();
    let q = quarantined(&guard.quarantine);
    for (offset, (want, _, _)) in cases.iter().enumerate() {
        let got = q
            .get(&(rig.input.clone(), 0, offset as i64))
            .map(|(_, codes)| codes[0].as_str());
        if *want == "pass" {
            assert_eq!(got, None, "valid record with a null key passes");
        } else {
            assert_eq!(got, Some(*want), "offset {offset}");
        }
    }
    let out = read_topic(&rig.broker.addr, &rig.output, 1, Duration::from_secs(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, None, "null key kept");

    let under_100ms = m
        .get("guard_validate_record_max_duration_seconds_bucket{le=\"0.1\"}")
        .copied()
        .unwrap_or(-1.0);
    let batches = m
        .get("guard_validate_record_max_duration_seconds_count")
        .copied()
        .unwrap_or(-2.0);
    assert_eq!(under_100ms, batches, "no record took more than 100 ms to judge");
    eprintln!("hostile test: guard peak RSS {} MiB", rss_kib / 1024);
    assert!(rss_kib > 0 && rss_kib < 256 * 1024, "peak RSS {rss_kib} KiB");
    assert!(guard.term());
}
