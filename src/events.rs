//! Where drift state leaves the process, off the record path (wiring only: the Kafka side
//! topics are `guard_kafka::keyed`, webhook delivery is `guard_server::webhook`, the payload
//! shape is `guard_drift::alertmanager_payload`):
//!
//! * drift events → the events topic (JSON, keyed `topic/feature`) and an Alertmanager-style
//!   webhook (the hub only ever `try_send`s, so a slow or dead receiver never blocks judging);
//! * partition views → the compacted profiles topic (keyed `group/topic/partition`), and back
//!   from it into the hub for `GET /api/stats?scope=group`.

use guard_config::Config;
use guard_drift::{DriftEvent, DriftHub, PartitionView};
use guard_kafka::keyed::{ensure_side_topics, follow_compacted, KeyedPublisher};
use guard_server::webhook::Webhook;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Create the events and profiles topics when missing (profiles compacted).
pub async fn ensure_topics(cfg: &Config) {
    let d = &cfg.drift;
    ensure_side_topics(cfg, d.events_topic.as_deref(), d.profiles_topic.as_deref()).await;
}

/// Fan drift events out to the events topic and the webhook queue.
pub async fn dispatch(cfg: Config, mut rx: mpsc::Receiver<DriftEvent>) {
    let d = &cfg.drift;
    let publisher = d
        .events_topic
        .as_ref()
        .and_then(|t| match KeyedPublisher::new(&cfg, t) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "cannot create the drift events producer; events go to the log only");
                None
            }
        });
    let webhook = d.webhook_url.clone().map(|url| {
        Webhook {
            url,
            capacity: d.webhook_queue,
            timeout: Duration::from_millis(d.webhook_timeout_ms),
            backoff: Duration::from_millis(d.webhook_backoff_ms),
        }
        .spawn()
    });
    while let Some(ev) = rx.recv().await {
        if let Some(tx) = &webhook {
            match serde_json::to_vec(&guard_drift::alertmanager_payload(&ev)) {
                Ok(body) => {
                    if tx.try_send(body).is_err() {
                        metrics::counter!("guard_stats_webhook_dropped_total").increment(1);
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode webhook payload"),
            }
        }
        if let (Some(p), Ok(body)) = (&publisher, serde_json::to_vec(&ev)) {
            match p.send(&format!("{}/{}", ev.topic, ev.feature), &body).await {
                Ok(()) => metrics::counter!("guard_stats_events_sent_total", "to" => "kafka").increment(1),
                Err(e) => {
                    warn!(error = %e, topic = p.topic(), "drift event not delivered to the events topic");
                    metrics::counter!("guard_stats_events_failed_total", "to" => "kafka").increment(1);
                }
            }
        }
    }
}

/// Publish changed partition views to the profiles topic every `interval`, and once more
/// when `stop` is set.
pub async fn publish_profiles(cfg: Config, hub: Arc<DriftHub>, stop: Arc<AtomicBool>) {
    let Some(topic) = cfg.drift.profiles_topic.clone() else {
        return;
    };
    let publisher = match KeyedPublisher::new(&cfg, &topic) {
        Ok(p) => p,
        Err(e) => return warn!(error = %e, "cannot create the profiles producer; group scope is off"),
    };
    let interval = Duration::from_millis(cfg.drift.profiles_interval_ms.max(100));
    loop {
        let last = stop.load(Ordering::Relaxed);
        for view in hub.take_dirty() {
            let Ok(body) = serde_json::to_vec(&view) else { continue };
            match publisher.send(&view.key(), &body).await {
                Ok(()) => metrics::counter!("guard_stats_profiles_published_total").increment(1),
                Err(e) => warn!(error = %e, key = view.key(), "partition view not published"),
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
    follow_compacted(cfg, &topic, "profiles-reader", stop, move |key, payload| {
        let view = match payload.map(serde_json::from_slice::<PartitionView>) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                warn!(key, error = %e, "unreadable partition view skipped");
                metrics::counter!("guard_stats_profiles_unreadable_total").increment(1);
                return;
            }
        };
        hub.put_remote(key.to_owned(), view);
    })?;
    Ok(())
}
