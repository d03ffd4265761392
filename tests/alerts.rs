//! `deploy/prometheus/alerts.yml` parses, every rule is complete, and every guard metric an
//! expression uses is one the guard really exports (names taken from the source).

use crate::support::repo;
use std::collections::BTreeSet;
use yaml_rust2::YamlLoader;

fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![repo().join("src"), repo().join("crates")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (macro_name, suffixes) in [
                    ("counter!(\"", &[""][..]),
                    ("gauge!(\"", &[""][..]),
                    ("histogram!(\"", &["_bucket", "_sum", "_count"][..]),
                ] {
                    for part in text.split(macro_name).skip(1) {
                        if let Some(name) = part.split('"').next().filter(|n| n.starts_with("guard_")) {
                            for s in suffixes {
                                names.insert(format!("{name}{s}"));
                            }
                        }
                    }
                }
            }
        }
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("guard_") {
        let start = i + pos;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn alert_rules_parse_and_use_exported_metrics() {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("alerts.yml: {e}"));
    let exported = exported_metrics();
    assert!(
        exported.contains("guard_source_records_total"),
        "metric scan works: {exported:?}"
    );
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut rules = 0;
    for g in groups {
        for r in g["rules"].as_vec().expect("rules") {
            let name = r["alert"].as_str().expect("alert name");
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: expr"));
            assert!(r["labels"]["severity"].as_str().is_some(), "{name}: severity label");
            assert!(r["annotations"]["summary"].as_str().is_some(), "{name}: summary");
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{name}: uses no guard metric");
            for m in used {
                assert!(exported.contains(&m), "{name}: {m} is not exported by the guard");
            }
            rules += 1;
        }
    }
    assert!(rules >= 6, "only {rules} rules");
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/ingest-guard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let exported = exported_metrics();
    let panels = dash["panels"].as_array().expect("panels");
    let mut used_any = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: expr"));
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{title}: uses no guard metric");
            for m in used {
                assert!(exported.contains(&m), "{title}: {m} is not exported by the guard");
                used_any.insert(m);
            }
        }
    }
    // What an operator needs on one screen.
    for want in [
        "guard_source_records_total",
        "guard_pipeline_records_quarantined_total",
        "guard_stats_alarm",
        "guard_stats_psi",
        "guard_score_anomaly_bucket",
        "guard_score_label_bucket",
        "guard_kafka_uncommitted_records",
        "guard_health_ready",
        "guard_review_decisions_total",
    ] {
        assert!(used_any.contains(want), "the dashboard does not show {want}");
    }
    let reasons = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .any(|e| e.contains("guard_pipeline_records_quarantined_total") && e.contains("by (reason)"));
    assert!(reasons, "quarantine rate is broken down by reason");
}
