//! Where drift state leaves the process, off the record path:
//!
//! * drift events → the events topic (JSON, keyed `topic/feature`) and an Alertmanager-style
//!   webhook, from a bounded queue with retry and back-off (the hub only ever `try_send`s, so
//!   a slow or dead receiver never blocks judging; what does not fit is counted and dropped);
//! * partition views → the compacted profiles topic (keyed `group/topic/partition`), and back
//!   from it into the hub for `GET /api/stats?scope=group`.

use guard_config::Config;
use guard_drift::{DriftEvent, DriftHub, PartitionView};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Longest back-off between webhook attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Create the events and profiles topics when missing (profiles compacted). Topics made by
/// operators are left as they are; a failure is logged, not fatal (the produce will tell).
pub async fn ensure_topics(cfg: &Config) {
    let d = &cfg.drift;
    let mut topics = Vec::new();
    if let Some(t) = &d.events_topic {
        topics.push(NewTopic::new(t, 1, TopicReplication::Fixed(1)));
    }
    if let Some(t) = &d.profiles_topic {
        topics.push(NewTopic::new(t, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"));
    }
    if topics.is_empty() {
        return;
    }
    match guard_kafka::create_topics(&guard_kafka::admin_config(cfg), &topics).await {
        Ok(results) => {
            for (topic, r) in results {
                match r {
                    Ok(true) => info!(topic, "drift topic created"),
                    Ok(false) => {}
                    Err(error) => warn!(topic, error, "cannot create drift topic"),
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot create drift topics"),
    }
}

/// Fan drift events out to the events topic and the webhook queue.
pub async fn dispatch(cfg: Config, mut rx: mpsc::Receiver<DriftEvent>) {
    let d = &cfg.drift;
    let producer: Option<(FutureProducer, String)> =
        d.events_topic.as_ref().and_then(
            |t| match guard_kafka::producer_config(&cfg).create::<FutureProducer>() {
                Ok(p) => Some((p, t.clone())),
                Err(e) => {
                    warn!(error = %e, "cannot create the drift events producer; events go to the log only");
                    None
                }
            },
        );
    let webhook = d.webhook_url.clone().map(|url| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(d.webhook_queue.max(1));
        tokio::spawn(webhook_loop(
            url,
            rx,
            d.webhook_queue.max(1),
            Duration::from_millis(d.webhook_timeout_ms),
            Duration::from_millis(d.webhook_backoff_ms.max(1)),
        ));
        tx
    });
    while let Some(ev) = rx.recv().await {
        if let Some(tx) = &webhook {
            match serde_json::to_vec(&alertmanager_payload(&ev)) {
                Ok(body) => {
                    if tx.try_send(body).is_err() {
                        metrics::counter!("guard_stats_webhook_dropped_total").increment(1);
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode webhook payload"),
            }
        }
        if let Some((p, topic)) = &producer {
            let (Ok(body), key) = (serde_json::to_vec(&ev), format!("{}/{}", ev.topic, ev.feature)) else {
                continue;
            };
            // librdkafka retries inside its message timeout; a failure after that is counted.
            match p
                .send(FutureRecord::to(topic).key(&key).payload(&body), Duration::from_secs(5))
                .await
            {
                Ok(_) => metrics::counter!("guard_stats_events_sent_total", "to" => "kafka").increment(1),
                Err((e, _)) => {
                    warn!(error = %e, topic, "drift event not delivered to the events topic");
                    metrics::counter!("guard_stats_events_failed_total", "to" => "kafka").increment(1);
                }
            }
        }
    }
}

/// Deliver webhook payloads in order, retrying each with doubling back-off; keep at most
/// `capacity` waiting (oldest dropped and counted).
async fn webhook_loop(
    url: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    capacity: usize,
    timeout: Duration,
    backoff: Duration,
) {
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut wait = backoff;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(b) => queue.push_back(b),
                None => return,
            }
        }
        while let Ok(b) = rx.try_recv() {
            queue.push_back(b);
        }
        while queue.len() > capacity {
            queue.pop_front();
            metrics::counter!("guard_stats_webhook_dropped_total").increment(1);
        }
        metrics::gauge!("guard_stats_webhook_queue").set(queue.len() as f64);
        let Some(body) = queue.front() else { continue };
        match crate::http::request("POST", &url, Some(body.clone()), timeout).await {
            Ok((status, _)) if (200..300).contains(&status) => {
                queue.pop_front();
                wait = backoff;
                metrics::counter!("guard_stats_events_sent_total", "to" => "webhook").increment(1);
            }
            other => {
                let why = match other {
                    Ok((status, _)) => format!("status {status}"),
                    Err(e) => format!("{e:#}"),
                };
                warn!(%url, why, retry_in = ?wait, queued = queue.len(), "webhook delivery failed");
                metrics::counter!("guard_stats_events_failed_total", "to" => "webhook").increment(1);
                // Keep accepting new payloads while backing off.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        b = rx.recv() => match b {
                            Some(b) => queue.push_back(b),
                            None => break,
                        },
                    }
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
}

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
    let at = crate::http::rfc3339(ev.at_ms);
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

/// Publish changed partition views to the profiles topic every `interval`, and once more
/// when `stop` is set.
pub async fn publish_profiles(cfg: Config, hub: Arc<DriftHub>, stop: Arc<AtomicBool>) {
    let Some(topic) = cfg.drift.profiles_topic.clone() else {
        return;
    };
    let producer: FutureProducer = match guard_kafka::producer_config(&cfg).create() {
        Ok(p) => p,
        Err(e) => return warn!(error = %e, "cannot create the profiles producer; group scope is off"),
    };
    let interval = Duration::from_millis(cfg.drift.profiles_interval_ms.max(100));
    loop {
        let last = stop.load(Ordering::Relaxed);
        for view in hub.take_dirty() {
            let Ok(body) = serde_json::to_vec(&view) else { continue };
            let key = view.key();
            match producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&body),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(_) => {
                    debug!(key, bytes = body.len(), "partition view published");
                    metrics::counter!("guard_stats_profiles_published_total").increment(1);
                }
                Err((e, _)) => warn!(error = %e, key, "partition view not published"),
            }
        }
        if last {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Read the profiles topic from the beginning into the hub until `stop` (own thread).
pub fn read_profiles(cfg: &Config, hub: Arc<DriftHub>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let Some(topic) = cfg.drift.profiles_topic.clone() else {
        return Ok(());
    };
    let mut c: ClientConfig = guard_kafka::admin_config(cfg);
    c.set("group.id", format!("{}.profiles-reader", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = c.create()?;
    std::thread::Builder::new()
        .name("guard-profiles".into())
        .spawn(move || {
            let mut assigned = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if assigned == 0 {
                    match consumer.fetch_metadata(Some(&topic), Duration::from_secs(2)) {
                        Ok(md) => {
                            let parts: Vec<i32> = md
                                .topics()
                                .iter()
                                .filter(|t| t.name() == topic && t.error().is_none())
                                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                                .collect();
                            let mut tpl = TopicPartitionList::new();
                            for p in &parts {
                                let _ = tpl.add_partition_offset(&topic, *p, Offset::Beginning);
                            }
                            if !parts.is_empty() && consumer.assign(&tpl).is_ok() {
                                assigned = parts.len();
                                info!(topic, partitions = assigned, "reading group profiles");
                            }
                        }
                        Err(e) => debug!(error = %e, "profiles topic metadata"),
                    }
                    if assigned == 0 {
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                            continue;
                        };
                        let view = match m.payload() {
                            None => None,
                            Some(p) => match serde_json::from_slice::<PartitionView>(p) {
                                Ok(v) => Some(v),
                                Err(e) => {
                                    warn!(key, error = %e, "unreadable partition view skipped");
                                    metrics::counter!("guard_stats_profiles_unreadable_total").increment(1);
                                    continue;
                                }
                            },
                        };
                        hub.put_remote(key.to_owned(), view);
                    }
                    Some(Err(e)) => debug!(error = %e, "profiles poll"),
                    None => {}
                }
            }
        })?;
    Ok(())
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
