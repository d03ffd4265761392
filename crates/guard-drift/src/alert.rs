//! Drift alerts in the shape alert receivers already take.

use crate::DriftEvent;

/// The Alertmanager webhook payload (version 4) for one event, so receivers built for
/// Alertmanager (chat bridges, incident tools) take the guard's alerts as they are.
pub fn alertmanager_payload(ev: &DriftEvent) -> serde_json::Value {
    let firing = ev.event == "drift_raised";
    let status = if firing { "firing" } else { "resolved" };
    let labels = serde_json::json!({
        "alertname": "IngestGuardDrift",
        "severity": "warning",
        "topic": ev.topic,
        "partition": ev.partition.to_string(),
        "feature": ev.feature,
        "schema_id": ev.schema_id,
        "group": ev.group,
        "instance": ev.instance,
    });
    let annotations = serde_json::json!({
        "summary": format!("drift on {}/{} feature {}", ev.topic, ev.partition, ev.feature),
        "description": format!(
            "{} ({}): KS {:.3}, PSI {:.3}, variance ratio {:.2} over {} rows, offsets {}..={}",
            ev.event,
            if ev.tests.is_empty() { "quiet windows".to_owned() } else { ev.tests.join(", ") },
            ev.drift.ks,
            ev.drift.psi,
            ev.drift.var_ratio,
            ev.window_records,
            ev.first_offset,
            ev.last_offset
        ),
    });
    let at = guard_core::rfc3339(ev.at_ms);
    let fingerprint = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{}/{}/{}/{}", ev.group, ev.topic, ev.partition, ev.feature));
        h.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    };
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"IngestGuardDrift\", topic=\"{}\", feature=\"{}\"}}", ev.topic, ev.feature),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "ingest-guard",
        "groupLabels": { "alertname": "IngestGuardDrift", "topic": ev.topic, "feature": ev.feature },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": at,
            "endsAt": if firing { "0001-01-01T00:00:00Z".to_owned() } else { at.clone() },
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use guard_stats::FeatureDrift;

    #[test]
    fn alertmanager_payload_has_the_v4_shape() {
        let ev = DriftEvent {
            event: "drift_raised".into(),
            topic: "t".into(),
            partition: 3,
            feature: "f1".into(),
            tests: vec!["variance".into()],
            drift: FeatureDrift {
                ks: 0.1,
                ks_p: 0.01,
                psi: 0.2,
                chi2_p: 0.0,
                js: 0.1,
                wasserstein: 1.0,
                var_ratio: 9.0,
                var_p: 0.0,
            },
            window_records: 1000,
            first_offset: 10,
            last_offset: 1009,
            schema_id: "s-v1".into(),
            baseline_sha256: "00".into(),
            group: "g".into(),
            instance: "i".into(),
            at_ms: 0,
        };
        let p = alertmanager_payload(&ev);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["labels"]["feature"], "f1");
        assert_eq!(p["alerts"][0]["labels"]["partition"], "3");
        assert_eq!(p["alerts"][0]["startsAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        let cleared = alertmanager_payload(&DriftEvent {
            event: "drift_cleared".into(),
            ..ev
        });
        assert_eq!(cleared["status"], "resolved");
        assert_eq!(cleared["alerts"][0]["fingerprint"], p["alerts"][0]["fingerprint"]);
    }
}
