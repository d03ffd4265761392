//! Where drift state leaves the process, off the record path (wiring only: the Kafka side
//! topics are `guard_kafka::keyed`, webhook delivery is `guard_server::webhook`, the payload
//! shape is `guard_drift::alertmanager_payload`):
//!
//! * drift events → the events topic (JSON, keyed `topic/feature`) and an Alertmanager-style
//!   webhook (the hub only ever `try_send`s, so a slow or dead receiver never blocks judging);
//! * partition views and source blocks → their compacted topics, and back (`guard_kafka::side`).

use guard_config::Config;
use guard_drift::DriftEvent;
use guard_kafka::keyed::KeyedPublisher;
use guard_server::webhook::Webhook;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

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
